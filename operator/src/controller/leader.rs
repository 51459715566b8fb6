//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder runs the
//! controllers. The decision (acquire, renew or wait) is the pure [`decide`]; every write
//! carries the resourceVersion it was decided on, so of two replicas racing for an expired
//! Lease only one write succeeds (the other gets 409 and waits).

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;
use tokio::time::Instant;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A leader that could not renew for this long stops. Measured from the start of its last
/// successful renewal (no later than the `renewTime` it wrote), so the time the request took
/// is inside it.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Each Lease request (read and write together) is cut off after this long at most, and
/// never runs past [`RENEW_DEADLINE`]: a hanging API server cannot keep a leader acting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A renewal is not started with less time than this before the deadline.
pub const MIN_REQUEST: Duration = Duration::from_millis(500);
/// Between the deadline and the Lease's expiry: room for the process to stop and for clocks
/// of replicas that disagree by this much.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(3);

// The leader stops, with room to spare, before a standby may see the Lease expired.
const _: () = assert!(
    RENEW_DEADLINE.as_millis() + SAFETY_MARGIN.as_millis() <= LEASE_DURATION.as_millis()
        && REQUEST_TIMEOUT.as_millis() < RENEW_DEADLINE.as_millis()
        && RENEW_EVERY.as_millis() + REQUEST_TIMEOUT.as_millis() < RENEW_DEADLINE.as_millis()
);

/// The time a renewal may take, `since` after the start of the last successful one; `None`:
/// too close to the deadline, stop.
pub fn request_budget(since: Duration) -> Option<Duration> {
    let left = RENEW_DEADLINE.checked_sub(since)?;
    (left >= MIN_REQUEST).then(|| left.min(REQUEST_TIMEOUT))
}

/// What the holder does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepStep {
    Sleep(Duration),
    Renew {
        timeout: Duration,
    },
    /// Not renewed in time: stop acting now, before a standby may acquire.
    Stop,
}

/// The holder's next step, `since` the start of its last successful renewal and
/// `since_attempt` the end of its last attempt, which `failed` or not: renew every
/// [`RENEW_EVERY`] (after a failure every [`RETRY_EVERY`]), never sleep past the deadline, and
/// give every request only the time left before it.
pub fn keep_step(since: Duration, since_attempt: Duration, failed: bool) -> KeepStep {
    let every = if failed { RETRY_EVERY } else { RENEW_EVERY };
    let pause = every
        .saturating_sub(since_attempt)
        .min(RENEW_DEADLINE.saturating_sub(since));
    if !pause.is_zero() {
        return KeepStep::Sleep(pause);
    }
    match request_budget(since) {
        Some(timeout) => KeepStep::Renew { timeout },
        None => KeepStep::Stop,
    }
}

/// The parts of a Lease the decision reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Free, released or expired: take it (a new holder).
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds a live Lease.
    Wait { holder: String },
}

pub fn decide(lease: Option<&LeaseRecord>, now: Timestamp, me: &str) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    let holder = match lease.holder.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) => h,
    };
    if holder == me {
        return Decision::Renew;
    }
    let duration = lease.duration.unwrap_or(LEASE_DURATION);
    let expired = match lease.renew_time {
        Some(renewed) => {
            let age = now.duration_since(renewed);
            age.is_positive() && age.unsigned_abs() > duration
        }
        // Never renewed: treat as expired.
        None => true,
    };
    if expired {
        Decision::Acquire
    } else {
        Decision::Wait {
            holder: holder.to_string(),
        }
    }
}

fn record(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0),
        duration: spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
    }
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Holding,
    HeldBy(String),
    /// Lost a race (409): look again.
    Conflict,
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    pub identity: String,
    /// When the last attempt that left us holding the Lease started.
    renewed: std::sync::Mutex<Option<Instant>>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            renewed: std::sync::Mutex::new(None),
        }
    }

    /// One attempt, cut off after `timeout`.
    async fn attempt_within(&self, timeout: Duration) -> anyhow::Result<Attempt> {
        let started = Instant::now();
        let attempt = tokio::time::timeout(timeout, self.attempt())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the Lease API did not answer within {}ms",
                    timeout.as_millis()
                )
            })??;
        if attempt == Attempt::Holding {
            *crate::locks::lock(&self.renewed) = Some(started);
        }
        Ok(attempt)
    }

    /// One acquire-or-renew round.
    pub async fn attempt(&self) -> anyhow::Result<Attempt> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .with_context(|| format!("reading Lease {}", self.name))?;
        let decision = decide(existing.as_ref().map(record).as_ref(), now, &self.identity);
        let mut lease = match (decision, existing) {
            (Decision::Wait { holder }, _) => return Ok(Attempt::HeldBy(holder)),
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Holding),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
                    Err(e) => Err(e).context("creating the Lease"),
                };
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
                lease
            }
            (Decision::Acquire, Some(mut lease)) => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                lease.spec = Some(self.spec(now, lease.spec.clone(), transitions + 1));
                lease
            }
        };
        // `replace` sends the resourceVersion read above: a concurrent write makes this a 409.
        lease.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e).context("updating the Lease"),
        }
    }

    fn spec(&self, now: Timestamp, previous: Option<LeaseSpec>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            lease_transitions: Some(transitions),
            ..previous.unwrap_or_default()
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.attempt_within(REQUEST_TIMEOUT).await {
                Ok(Attempt::Holding) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "acquired the leader lease; starting the controllers");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, %holder, "standby: waiting for the leader lease");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "leader election"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews the Lease while it is held; returns when it is lost (taken by another replica,
    /// or not renewed within [`RENEW_DEADLINE`], which is before a standby may take it).
    pub async fn keep(&self) -> String {
        let mut last_attempt = Instant::now();
        let mut failed = false;
        loop {
            let renewed = (*crate::locks::lock(&self.renewed)).unwrap_or(last_attempt);
            match keep_step(renewed.elapsed(), last_attempt.elapsed(), failed) {
                KeepStep::Sleep(pause) => tokio::time::sleep(pause).await,
                KeepStep::Stop => {
                    return format!("not renewed for {}ms", renewed.elapsed().as_millis());
                }
                KeepStep::Renew { timeout } => {
                    let result = self.attempt_within(timeout).await;
                    last_attempt = Instant::now();
                    failed = true;
                    match result {
                        Ok(Attempt::Holding) => failed = false,
                        Ok(Attempt::HeldBy(holder)) => {
                            return format!("the Lease is held by {holder}");
                        }
                        Ok(Attempt::Conflict) => {}
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "renewing the leader lease")
                        }
                    }
                }
            }
        }
    }

    /// Gives the Lease up (holder cleared) so that a standby takes over without waiting for
    /// it to expire.
    pub async fn release(&self) -> anyhow::Result<()> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.release_now())
            .await
            .map_err(|_| anyhow::anyhow!("the Lease API did not answer in time"))?
    }

    async fn release_now(&self) -> anyhow::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lease.metadata.managed_fields = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .context("releasing the Lease")?;
        tracing::info!(lease = %self.name, "released the leader lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn held(holder: &str, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(at(renewed)),
            duration: Some(Duration::from_secs(15)),
        }
    }

    #[test]
    fn lease_decisions() {
        let wait = |h: &str| Decision::Wait { holder: h.into() };
        let cases: Vec<(&str, Option<LeaseRecord>, i64, Decision)> = vec![
            ("no lease yet", None, 0, Decision::Acquire),
            (
                "released (empty holder)",
                Some(LeaseRecord {
                    holder: Some(String::new()),
                    ..held("x", 0)
                }),
                1,
                Decision::Acquire,
            ),
            (
                "released (no holder)",
                Some(LeaseRecord {
                    holder: None,
                    ..held("x", 0)
                }),
                1,
                Decision::Acquire,
            ),
            ("ours", Some(held("me", 0)), 3, Decision::Renew),
            (
                "ours even when expired",
                Some(held("me", 0)),
                60,
                Decision::Renew,
            ),
            ("other, fresh", Some(held("other", 0)), 5, wait("other")),
            (
                "other, at the edge",
                Some(held("other", 0)),
                15,
                wait("other"),
            ),
            (
                "other, expired",
                Some(held("other", 0)),
                16,
                Decision::Acquire,
            ),
            (
                "other, renewed in our future (skew)",
                Some(held("other", 30)),
                0,
                wait("other"),
            ),
            (
                "other, never renewed",
                Some(LeaseRecord {
                    renew_time: None,
                    ..held("other", 0)
                }),
                0,
                Decision::Acquire,
            ),
            (
                "other, longer lease",
                Some(LeaseRecord {
                    duration: Some(Duration::from_secs(60)),
                    ..held("other", 0)
                }),
                30,
                wait("other"),
            ),
            (
                "other, no duration: the default 15 s",
                Some(LeaseRecord {
                    duration: None,
                    ..held("other", 0)
                }),
                20,
                Decision::Acquire,
            ),
        ];
        for (what, lease, now, want) in cases {
            assert_eq!(decide(lease.as_ref(), at(now), "me"), want, "{what}");
        }
    }

    #[test]
    fn a_renewal_never_runs_past_the_deadline() {
        assert_eq!(request_budget(Duration::ZERO), Some(REQUEST_TIMEOUT));
        assert_eq!(
            request_budget(RENEW_DEADLINE - Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(request_budget(RENEW_DEADLINE - MIN_REQUEST / 2), None);
        assert_eq!(request_budget(RENEW_DEADLINE), None);
        assert_eq!(request_budget(LEASE_DURATION * 10), None);
        // The deadline, and the margin for stopping and skew, fit inside the lease.
        assert!(RENEW_DEADLINE + SAFETY_MARGIN <= LEASE_DURATION);
    }

    #[test]
    fn the_holder_renews_on_time_and_sleeps_no_longer_than_the_deadline() {
        let s = Duration::from_secs;
        assert_eq!(keep_step(s(0), s(0), false), KeepStep::Sleep(RENEW_EVERY));
        assert_eq!(
            keep_step(s(5), s(5), false),
            KeepStep::Renew {
                timeout: REQUEST_TIMEOUT
            }
        );
        assert_eq!(keep_step(s(7), s(0), true), KeepStep::Sleep(RETRY_EVERY));
        // Two seconds left: the pause ends at the deadline, then it stops.
        assert_eq!(keep_step(s(8), s(0), false), KeepStep::Sleep(s(2)));
        assert_eq!(keep_step(s(10), s(0), false), KeepStep::Stop);
        assert_eq!(
            keep_step(s(9), s(9), true),
            KeepStep::Renew { timeout: s(1) }
        );
    }

    /// Drives [`keep_step`] on a virtual clock where every renewal hangs (or fails at once)
    /// from `t = 0`, the start of the last good renewal (whose renewTime a standby reads).
    /// Returns when the holder stops and the latest moment one of its requests could still
    /// have been in flight.
    fn stop_time(hang: bool) -> (Duration, Duration) {
        let (mut now, mut last_attempt, mut failed) = (Duration::ZERO, Duration::ZERO, false);
        let mut in_flight_until = Duration::ZERO;
        for _ in 0..1000 {
            match keep_step(now, now - last_attempt, failed) {
                KeepStep::Sleep(d) => {
                    assert!(!d.is_zero());
                    now += d;
                }
                KeepStep::Renew { timeout } => {
                    if hang {
                        now += timeout;
                    }
                    in_flight_until = in_flight_until.max(now);
                    last_attempt = now;
                    failed = true;
                }
                KeepStep::Stop => return (now, in_flight_until),
            }
        }
        panic!("the holder never stopped");
    }

    #[test]
    fn a_holder_whose_renewals_fail_stops_before_a_standby_may_acquire() {
        for hang in [true, false] {
            let (stopped, in_flight) = stop_time(hang);
            assert!(
                stopped <= RENEW_DEADLINE,
                "stopped at {stopped:?} (hang {hang})"
            );
            assert!(
                in_flight <= RENEW_DEADLINE,
                "request in flight at {in_flight:?}"
            );
            // What a standby decides at that moment (even with its clock SAFETY_MARGIN ahead),
            // and once the Lease has expired.
            let lease = held("leader", 0);
            let seen_at = |d: Duration| at(0) + d;
            assert_eq!(
                decide(Some(&lease), seen_at(stopped + SAFETY_MARGIN), "standby"),
                Decision::Wait {
                    holder: "leader".into()
                }
            );
            assert_eq!(
                decide(
                    Some(&lease),
                    seen_at(LEASE_DURATION + Duration::from_secs(1)),
                    "standby"
                ),
                Decision::Acquire
            );
        }
    }
}

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

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A leader that could not renew for this long stops: by then a standby may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

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
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
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
            match self.attempt().await {
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
    /// or not renewed within [`RENEW_DEADLINE`]).
    pub async fn keep(&self) -> String {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.attempt().await {
                Ok(Attempt::Holding) => renewed = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(holder)) => return format!("the Lease is held by {holder}"),
                Ok(Attempt::Conflict) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "renewing the leader lease"),
            }
            if renewed.elapsed() > RENEW_DEADLINE {
                return format!("not renewed for {}s", renewed.elapsed().as_secs());
            }
        }
    }

    /// Gives the Lease up (holder cleared) so that a standby takes over without waiting for
    /// it to expire.
    pub async fn release(&self) -> anyhow::Result<()> {
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
}

//! The rules of [`plan`], one table row each, on real certificates and a fixed clock.

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// 2027-01-15T08:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn names() -> ServingNames {
    ServingNames::new(
        &["soci-webhook.soci-system.svc".to_string()],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap()
}

fn other_names() -> ServingNames {
    ServingNames::new(&["elsewhere.example".to_string()], &[]).unwrap()
}

fn ca(at: SystemTime, validity: Duration) -> IssuedPair {
    issue_ca(at, validity).unwrap()
}

fn leaf(ca: &IssuedPair, names: &ServingNames, at: SystemTime, validity: Duration) -> IssuedPair {
    issue_leaf(ca, names, at, at + validity).unwrap()
}

/// Secret data from PEM texts; `None` leaves the key out.
fn data(
    ca_crt: Option<String>,
    ca_key: Option<&str>,
    tls: Option<(&str, &str)>,
) -> BTreeMap<String, ByteString> {
    let mut d = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    if let Some(v) = ca_crt {
        put(CA_CRT, &v);
    }
    if let Some(v) = ca_key {
        put(CA_KEY, v);
    }
    if let Some((c, k)) = tls {
        put(TLS_CRT, c);
        put(TLS_KEY, k);
    }
    d
}

/// A settled Secret: one CA issued at `t0`, a leaf from it issued at `leaf_at`.
fn settled(leaf_at: SystemTime) -> (IssuedPair, IssuedPair, BTreeMap<String, ByteString>) {
    let ca = ca(t0(), Settings::DEFAULT_CA_VALIDITY);
    let leaf = leaf(&ca, &names(), leaf_at, YEAR);
    let d = data(
        Some(ca.cert_pem.clone()),
        Some(&ca.key_pem),
        Some((&leaf.cert_pem, &leaf.key_pem)),
    );
    (ca, leaf, d)
}

struct Row {
    name: &'static str,
    data: BTreeMap<String, ByteString>,
    now: SystemTime,
    new_ca: Option<NewCaReason>,
    leaf: LeafAction,
    pruned: usize,
    writes: bool,
}

fn rows() -> Vec<Row> {
    let settings = Settings::default();
    let delay = settings.publish_delay();
    let mut rows = vec![];

    rows.push(Row {
        name: "an empty Secret gets a CA and a leaf",
        data: BTreeMap::new(),
        now: t0(),
        new_ca: Some(NewCaReason::NoValidCa),
        leaf: LeafAction::Issue(LeafReason::Missing),
        pruned: 0,
        writes: true,
    });

    let (_, _, d) = settled(t0());
    rows.push(Row {
        name: "a settled Secret is left alone",
        data: d,
        now: t0() + 30 * DAY,
        new_ca: None,
        leaf: LeafAction::Keep,
        pruned: 0,
        writes: false,
    });

    let (_, _, d) = settled(t0());
    rows.push(Row {
        name: "a leaf with more than renew_before left is kept (a day before the window)",
        data: d,
        now: t0() + YEAR - 91 * DAY,
        new_ca: None,
        leaf: LeafAction::Keep,
        pruned: 0,
        writes: false,
    });

    let (_, _, d) = settled(t0());
    rows.push(Row {
        name: "a leaf within renew_before of expiry is reissued",
        data: d,
        now: t0() + YEAR - 89 * DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Expiring),
        pruned: 0,
        writes: true,
    });

    let (_, _, d) = settled(t0());
    rows.push(Row {
        name: "an expired leaf is reissued",
        data: d,
        now: t0() + YEAR + DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Expiring),
        pruned: 0,
        writes: true,
    });

    let (ca1, _, _) = settled(t0());
    let renamed = leaf(&ca1, &other_names(), t0(), YEAR);
    rows.push(Row {
        name: "a leaf whose names differ is reissued",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((&renamed.cert_pem, &renamed.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::NamesChanged),
        pruned: 0,
        writes: true,
    });

    let (ca1, good, _) = settled(t0());
    rows.push(Row {
        name: "an unparsable leaf is reissued",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &good.key_pem,
            )),
        ),
        now: t0() + DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Unparsable),
        pruned: 0,
        writes: true,
    });

    let (ca1, good, _) = settled(t0());
    let stranger = leaf(&ca1, &names(), t0(), YEAR);
    rows.push(Row {
        name: "a leaf whose key is another's is reissued",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((&good.cert_pem, &stranger.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Unparsable),
        pruned: 0,
        writes: true,
    });

    let (ca1, _, _) = settled(t0());
    let foreign_ca = ca(t0(), Settings::DEFAULT_CA_VALIDITY);
    let foreign = leaf(&foreign_ca, &names(), t0(), YEAR);
    rows.push(Row {
        name: "a leaf that chains to no CA of the bundle is reissued at once",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((&foreign.cert_pem, &foreign.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Untrusted),
        pruned: 0,
        writes: true,
    });

    // The CA enters its renewal window: a new CA is appended, the leaf waits for it.
    let ca_end = t0() + Settings::DEFAULT_CA_VALIDITY;
    let now = ca_end - 89 * DAY;
    let ca1 = ca(t0(), Settings::DEFAULT_CA_VALIDITY);
    let recent = leaf(&ca1, &names(), now - DAY, YEAR);
    rows.push(Row {
        name: "no CA with more than renew_before left: a CA is appended, the leaf waits",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((&recent.cert_pem, &recent.key_pem)),
        ),
        now,
        new_ca: Some(NewCaReason::AllExpiring),
        leaf: LeafAction::WaitForPublication {
            reason: LeafReason::Superseded,
            until: now + delay,
        },
        pruned: 0,
        writes: true,
    });

    // Step two: the bundle holds the old and the new CA, the leaf is the old CA's.
    let appended_at = now;
    let ca2 = ca(appended_at, Settings::DEFAULT_CA_VALIDITY);
    let two = format!("{}{}", ca1.cert_pem, ca2.cert_pem);
    for (name, at, leaf_action, writes) in [
        (
            "the newest CA not yet published long enough: the old CA's leaf stays",
            appended_at + delay - Duration::from_secs(1),
            LeafAction::WaitForPublication {
                reason: LeafReason::Superseded,
                until: appended_at + delay,
            },
            false,
        ),
        (
            "the newest CA published for publish_delay: the leaf switches to it",
            appended_at + delay,
            LeafAction::Issue(LeafReason::Superseded),
            true,
        ),
    ] {
        rows.push(Row {
            name,
            data: data(
                Some(two.clone()),
                Some(&ca2.key_pem),
                Some((&recent.cert_pem, &recent.key_pem)),
            ),
            now: at,
            new_ca: None,
            leaf: leaf_action,
            pruned: 0,
            writes,
        });
    }

    // An expiring leaf whose successor would need an unpublished CA waits too.
    let expiring = leaf(&ca1, &names(), now - 300 * DAY, YEAR);
    rows.push(Row {
        name: "an expiring (still valid) leaf waits for the new CA's publication",
        data: data(
            Some(two.clone()),
            Some(&ca2.key_pem),
            Some((&expiring.cert_pem, &expiring.key_pem)),
        ),
        now: appended_at + Duration::from_secs(5),
        new_ca: None,
        leaf: LeafAction::WaitForPublication {
            reason: LeafReason::Expiring,
            until: appended_at + delay,
        },
        pruned: 0,
        writes: false,
    });

    // The old CA expires: it is pruned; the leaf (from the new CA) stays.
    let later = ca_end + DAY;
    let from_new = leaf(&ca2, &names(), later - 10 * DAY, YEAR);
    rows.push(Row {
        name: "a CA past not_after is pruned",
        data: data(
            Some(two.clone()),
            Some(&ca2.key_pem),
            Some((&from_new.cert_pem, &from_new.key_pem)),
        ),
        now: later,
        new_ca: None,
        leaf: LeafAction::Keep,
        pruned: 1,
        writes: true,
    });

    // A leaf still valid but signed by a CA that has expired and been pruned: untrusted.
    let orphan = leaf(&ca1, &names(), later - 10 * DAY, YEAR);
    rows.push(Row {
        name: "a leaf of a pruned CA is reissued by the newest",
        data: data(
            Some(two.clone()),
            Some(&ca2.key_pem),
            Some((&orphan.cert_pem, &orphan.key_pem)),
        ),
        now: later,
        new_ca: None,
        leaf: LeafAction::Issue(LeafReason::Untrusted),
        pruned: 1,
        writes: true,
    });

    let (ca1, l, _) = settled(t0());
    rows.push(Row {
        name: "every CA expired: a new CA, and the expired leaf is reissued at once",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&ca1.key_pem),
            Some((&l.cert_pem, &l.key_pem)),
        ),
        now: ca_end + DAY,
        new_ca: Some(NewCaReason::NoValidCa),
        leaf: LeafAction::Issue(LeafReason::Expiring),
        pruned: 1,
        writes: true,
    });

    let (ca1, l, _) = settled(t0());
    rows.push(Row {
        name: "ca.key missing: a new CA, the working leaf waits for it",
        data: data(
            Some(ca1.cert_pem.clone()),
            None,
            Some((&l.cert_pem, &l.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: Some(NewCaReason::KeyUnusable),
        leaf: LeafAction::WaitForPublication {
            reason: LeafReason::Superseded,
            until: t0() + DAY + delay,
        },
        pruned: 0,
        writes: true,
    });

    let (ca1, l, _) = settled(t0());
    let not_its_key = ca(t0(), YEAR);
    rows.push(Row {
        name: "ca.key of another CA: a new CA",
        data: data(
            Some(ca1.cert_pem.clone()),
            Some(&not_its_key.key_pem),
            Some((&l.cert_pem, &l.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: Some(NewCaReason::KeyUnusable),
        leaf: LeafAction::WaitForPublication {
            reason: LeafReason::Superseded,
            until: t0() + DAY + delay,
        },
        pruned: 0,
        writes: true,
    });

    let (ca1, l, _) = settled(t0());
    rows.push(Row {
        name: "a bundle entry that is not a CA is dropped",
        data: data(
            Some(format!("{}{}", ca1.cert_pem, l.cert_pem)),
            Some(&ca1.key_pem),
            Some((&l.cert_pem, &l.key_pem)),
        ),
        now: t0() + DAY,
        new_ca: None,
        leaf: LeafAction::Keep,
        pruned: 0,
        writes: true,
    });

    rows
}

#[test]
fn plan_follows_every_rule() {
    let settings = Settings::default();
    let mut failures = vec![];
    for row in rows() {
        let state = State::from_secret_data(&row.data);
        let plan = plan(&state, &names(), row.now, &settings);
        let got = (plan.new_ca, plan.leaf, plan.pruned_cas, plan.writes());
        let want = (row.new_ca, row.leaf, row.pruned, row.writes);
        if got != want {
            failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", row.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Executing a plan gives a Secret whose plan writes nothing: every rule reaches a fixed point.
#[test]
fn every_executed_plan_settles() {
    let settings = Settings::default();
    for row in rows() {
        let state = State::from_secret_data(&row.data);
        let first = plan(&state, &names(), row.now, &settings);
        let Some(written) = execute(&state, &first, &names(), row.now, &settings).unwrap() else {
            assert!(!first.writes(), "{}", row.name);
            continue;
        };
        let again = State::from_secret_data(&written.to_data());
        let second = plan(&again, &names(), row.now, &settings);
        assert!(
            !second.writes(),
            "{}: the second plan still writes: {second:?}",
            row.name
        );
        if let LeafAction::Issue(_) = first.leaf {
            let LeafState::Present(leaf) = &again.leaf else {
                panic!("{}: no leaf written", row.name);
            };
            assert_eq!(leaf.names, names(), "{}", row.name);
        }
    }
}

/// The whole rotation over a CA's lifetime, with e2e-like short settings: at every tick the
/// leaf in the Secret is signed by a CA in the bundle that was published at least
/// `publish_delay` earlier, or is the very first one.
#[test]
fn a_full_rotation_never_serves_an_unpublished_ca() {
    let s = Duration::from_secs;
    let settings = Settings::new(s(600), s(180), s(120), s(10), s(10)).unwrap();
    let mut data = BTreeMap::new();
    let mut now = t0();
    let mut cas_seen = 0;
    let mut leaves_issued = 0;
    let mut first_leaf = true;
    while now < t0() + s(1900) {
        let state = State::from_secret_data(&data);
        let p = plan(&state, &names(), now, &settings);
        if p.new_ca.is_some() {
            cas_seen += 1;
        }
        if let LeafAction::Issue(_) = p.leaf {
            leaves_issued += 1;
        }
        if let Some(written) = execute(&state, &p, &names(), now, &settings).unwrap() {
            data = written.to_data();
        }
        let state = State::from_secret_data(&data);
        let LeafState::Present(leaf) = &state.leaf else {
            panic!("no leaf at {now:?}");
        };
        assert!(leaf.not_after > now, "an expired leaf is served");
        let issuer = leaf.signed_by.first().map(|&i| &state.cas[i]);
        let Some(issuer) = issuer else {
            panic!("the leaf chains to no CA of the bundle at {now:?}");
        };
        if !first_leaf {
            assert!(
                issuer.not_before + settings.publish_delay() <= now,
                "the leaf switched to a CA published {:?} ago",
                now.duration_since(issuer.not_before)
            );
        }
        first_leaf = false;
        now += settings.check_interval();
    }
    assert!(cas_seen >= 3, "{cas_seen} CAs in 1900 s of 600 s CAs");
    assert!(leaves_issued >= 10, "{leaves_issued} leaves");
}

#[test]
fn recheck_wakes_at_publication_and_at_the_renewal_window() {
    let settings = Settings::default();
    let (_, _, d) = settled(t0());
    let state = State::from_secret_data(&d);
    // Settled: the check interval.
    let p = plan(&state, &names(), t0() + DAY, &settings);
    assert_eq!(p.recheck_after, settings.check_interval());
    // Two hours before the leaf's renewal window: two hours.
    let p = plan(
        &state,
        &names(),
        t0() + YEAR - 90 * DAY - 2 * 3600 * Duration::from_secs(1),
        &settings,
    );
    assert_eq!(p.recheck_after, Duration::from_secs(2 * 3600));
    // A new CA is appended and the working leaf waits for it: wake at its publication.
    let now = t0() + Settings::DEFAULT_CA_VALIDITY - 89 * DAY;
    let authority = ca(t0(), Settings::DEFAULT_CA_VALIDITY);
    let recent = leaf(&authority, &names(), now - DAY, YEAR);
    let state = State::from_secret_data(&data(
        Some(authority.cert_pem.clone()),
        Some(&authority.key_pem),
        Some((&recent.cert_pem, &recent.key_pem)),
    ));
    let p = plan(&state, &names(), now, &settings);
    assert_eq!(p.new_ca, Some(NewCaReason::AllExpiring));
    assert_eq!(p.recheck_after, settings.publish_delay());
}

#[test]
fn issued_certificates_have_the_promised_shape() {
    let authority = ca(t0(), YEAR);
    let served = leaf(&authority, &names(), t0(), DAY);
    let state = State::from_secret_data(&data(
        Some(authority.cert_pem.clone()),
        Some(&authority.key_pem),
        Some((&served.cert_pem, &served.key_pem)),
    ));
    assert_eq!(state.ca_key, CaKeyState::Of(0));
    assert_eq!(state.cas[0].not_before, t0());
    assert_eq!(state.cas[0].not_after, t0() + YEAR);
    let LeafState::Present(l) = &state.leaf else {
        panic!("{:?}", state.leaf);
    };
    assert_eq!(l.signed_by, vec![0]);
    assert_eq!(l.names, names());
    let (_, der) = x509_parser::pem::parse_x509_pem(served.cert_pem.as_bytes()).unwrap();
    let cert = der.parse_x509().unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && !eku.value.client_auth);
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let (_, der) = x509_parser::pem::parse_x509_pem(authority.cert_pem.as_bytes()).unwrap();
    let ca_cert = der.parse_x509().unwrap();
    assert!(ca_cert.is_ca());
    assert_eq!(
        ca_cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        CA_COMMON_NAME
    );
}

#[test]
fn settings_refuse_nonsense() {
    let s = Duration::from_secs;
    let ok = |c, l, r, i, p| Settings::new(s(c), s(l), s(r), s(i), s(p));
    assert!(ok(600, 180, 120, 10, 10).is_ok(), "the e2e settings");
    assert_eq!(
        Settings::new(
            Settings::DEFAULT_CA_VALIDITY,
            Settings::DEFAULT_LEAF_VALIDITY,
            Settings::DEFAULT_RENEW_BEFORE,
            Settings::DEFAULT_CHECK_INTERVAL,
            Settings::DEFAULT_PUBLISH_DELAY
        ),
        Ok(Settings::default())
    );
    assert_eq!(
        ok(600, 0, 120, 10, 10),
        Err(SettingsError::Zero("leaf_validity"))
    );
    assert_eq!(
        ok(600, 180, 120, 0, 10),
        Err(SettingsError::Zero("check_interval"))
    );
    assert_eq!(
        ok(600, 180, 120, 10, 0),
        Err(SettingsError::Zero("publish_delay"))
    );
    assert!(matches!(
        ok(600, 120, 120, 10, 10),
        Err(SettingsError::RenewWindowTooLong {
            what: "leaf_validity",
            ..
        })
    ));
    assert!(matches!(
        ok(100, 100, 120, 10, 10),
        Err(SettingsError::RenewWindowTooLong { .. })
    ));
    assert!(matches!(
        ok(600, 700, 120, 10, 10),
        Err(SettingsError::LeafOutlivesCa { .. })
    ));
    assert!(matches!(
        ok(600, 180, 120, 110, 10),
        Err(SettingsError::RenewalCanBeMissed { .. })
    ));
    assert_eq!(
        ok(200 * 365 * 86400, 180, 120, 10, 10),
        Err(SettingsError::TooLong("ca_validity"))
    );
}

#[test]
fn serving_names_compare_as_sets_and_refuse_bad_dns_names() {
    let a = ServingNames::new(
        &["B.example".into(), "a.example".into(), "a.example".into()],
        &["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let b = ServingNames::new(
        &["a.example".into(), "b.example".into()],
        &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(ServingNames::new(&[], &[]), Err(NamesError::Empty));
    assert_eq!(
        ServingNames::new(&["not a name".into()], &[]),
        Err(NamesError::InvalidDnsName("not a name".into()))
    );
    // An IP-only leaf (the proving ground's API server calls by URL on loopback).
    assert!(ServingNames::new(&[], &["127.0.0.1".parse().unwrap()]).is_ok());
}

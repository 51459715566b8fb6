//! The webhook's serving certificates, pure: no I/O, no async, the clock passed in.
//!
//! The Secret holds `ca.crt` (a PEM bundle of CAs, what the webhook configuration's `caBundle`
//! carries), `ca.key` (the newest CA's key), `tls.crt` and `tls.key` (the serving leaf).
//! [`plan`] decides what to change, [`execute`] issues what it decided. A rotation takes two
//! steps so that no admission request fails: first the bundle gains a new CA (the API server
//! trusts both), and only once the new CA has been in the bundle for
//! [`Settings::publish_delay`] does the leaf switch to it. Expired CAs are pruned.

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The common name of every CA this module issues.
pub const CA_COMMON_NAME: &str = "soci-operator-webhook-ca";
/// The Secret's keys.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
/// A leaf starts this long before it was issued: a replica or API server whose clock is a little
/// behind still accepts it. (A CA is not backdated: its `not_before` is its publication time.)
pub const LEAF_BACKDATE: Duration = Duration::from_secs(60);
/// The shortest wait [`plan`] asks for: never a hot loop on a clock edge.
pub const MIN_RECHECK: Duration = Duration::from_secs(1);

/// No setting is longer (keeps every time sum far from overflow and within X.509 dates).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("webhook certificates: {0} must be longer than zero")]
    Zero(&'static str),
    #[error("webhook certificates: {0} may not exceed 100 years")]
    TooLong(&'static str),
    #[error(
        "webhook certificates: renew_before ({renew_before:?}) must be shorter than {what} ({validity:?})"
    )]
    RenewWindowTooLong {
        renew_before: Duration,
        what: &'static str,
        validity: Duration,
    },
    #[error(
        "webhook certificates: the leaf validity ({leaf:?}) may not exceed the CA validity ({ca:?})"
    )]
    LeafOutlivesCa { leaf: Duration, ca: Duration },
    #[error(
        "webhook certificates: check_interval + publish_delay ({sum:?}) must be shorter than renew_before ({renew_before:?}), or a renewal can be missed"
    )]
    RenewalCanBeMissed {
        sum: Duration,
        renew_before: Duration,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamesError {
    #[error("webhook certificates: at least one DNS name or IP address is needed")]
    Empty,
    #[error("webhook certificates: {0:?} is not a valid DNS name")]
    InvalidDnsName(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the plan needs a CA key the Secret does not hold")]
    NoSigner,
    #[error("the plan was made from another state")]
    PlanMismatch,
    #[error("a time out of the certificate range: {0}")]
    Time(String),
}

/// How long certificates live and when they are renewed. Build with [`Settings::new`] (bounded)
/// or take the [`Default`] (cert-controller's numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    ca_validity: Duration,
    leaf_validity: Duration,
    renew_before: Duration,
    check_interval: Duration,
    publish_delay: Duration,
}

impl Settings {
    pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
    pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
    pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);
    pub const DEFAULT_PUBLISH_DELAY: Duration = Duration::from_secs(60);

    /// Refuses zero durations, a renewal window as long as a validity, a leaf that outlives its
    /// CA, and a renewal window the check loop could step over.
    pub fn new(
        ca_validity: Duration,
        leaf_validity: Duration,
        renew_before: Duration,
        check_interval: Duration,
        publish_delay: Duration,
    ) -> Result<Self, SettingsError> {
        for (name, value) in [
            ("ca_validity", ca_validity),
            ("leaf_validity", leaf_validity),
            ("renew_before", renew_before),
            ("check_interval", check_interval),
            ("publish_delay", publish_delay),
        ] {
            if value.is_zero() {
                return Err(SettingsError::Zero(name));
            }
            if value > MAX_DURATION {
                return Err(SettingsError::TooLong(name));
            }
        }
        for (what, validity) in [
            ("leaf_validity", leaf_validity),
            ("ca_validity", ca_validity),
        ] {
            if renew_before >= validity {
                return Err(SettingsError::RenewWindowTooLong {
                    renew_before,
                    what,
                    validity,
                });
            }
        }
        if leaf_validity > ca_validity {
            return Err(SettingsError::LeafOutlivesCa {
                leaf: leaf_validity,
                ca: ca_validity,
            });
        }
        let sum = check_interval.saturating_add(publish_delay);
        if sum >= renew_before {
            return Err(SettingsError::RenewalCanBeMissed { sum, renew_before });
        }
        Ok(Self {
            ca_validity,
            leaf_validity,
            renew_before,
            check_interval,
            publish_delay,
        })
    }

    pub fn ca_validity(&self) -> Duration {
        self.ca_validity
    }
    pub fn leaf_validity(&self) -> Duration {
        self.leaf_validity
    }
    pub fn renew_before(&self) -> Duration {
        self.renew_before
    }
    pub fn check_interval(&self) -> Duration {
        self.check_interval
    }
    pub fn publish_delay(&self) -> Duration {
        self.publish_delay
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ca_validity: Self::DEFAULT_CA_VALIDITY,
            leaf_validity: Self::DEFAULT_LEAF_VALIDITY,
            renew_before: Self::DEFAULT_RENEW_BEFORE,
            check_interval: Self::DEFAULT_CHECK_INTERVAL,
            publish_delay: Self::DEFAULT_PUBLISH_DELAY,
        }
    }
}

/// The names the serving leaf must carry, sorted and deduplicated (DNS names lowercased), so
/// two lists compare as sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingNames {
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
}

impl ServingNames {
    pub fn new(dns_names: &[String], ip_addresses: &[IpAddr]) -> Result<Self, NamesError> {
        let mut dns: Vec<String> = dns_names.iter().map(|n| n.to_ascii_lowercase()).collect();
        for name in &dns {
            if rustls::pki_types::DnsName::try_from(name.as_str()).is_err() {
                return Err(NamesError::InvalidDnsName(name.clone()));
            }
        }
        dns.sort();
        dns.dedup();
        let mut ips = ip_addresses.to_vec();
        ips.sort();
        ips.dedup();
        if dns.is_empty() && ips.is_empty() {
            return Err(NamesError::Empty);
        }
        Ok(Self {
            dns_names: dns,
            ip_addresses: ips,
        })
    }

    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ip_addresses
    }

    /// The names as a leaf carries them (invalid DNS names dropped: such a leaf differs anyway).
    fn from_leaf(dns: Vec<String>, ips: Vec<IpAddr>) -> Self {
        let mut dns: Vec<String> = dns
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| rustls::pki_types::DnsName::try_from(n.as_str()).is_ok())
            .collect();
        dns.sort();
        dns.dedup();
        let mut ips = ips;
        ips.sort();
        ips.dedup();
        Self {
            dns_names: dns,
            ip_addresses: ips,
        }
    }
}

/// A certificate and its key, in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, CertError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CertError::Time(e.to_string()))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|e| CertError::Time(e.to_string()))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| CertError::Time(e.to_string()))
}

fn system_time(unix_seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0))
}

fn new_key() -> Result<KeyPair, CertError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// A self-signed CA named [`CA_COMMON_NAME`], valid from `not_before` (its publication time)
/// for `validity`, that may sign leaves only (path length 0).
pub fn issue_ca(not_before: SystemTime, validity: Duration) -> Result<IssuedPair, CertError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset_time(not_before)?;
    params.not_after = offset_time(not_before + validity)?;
    let cert = params.self_signed(&key)?;
    Ok(IssuedPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving leaf for `names` (ExtKeyUsage ServerAuth), signed by the CA `ca`, valid from
/// `not_before` to `not_after`.
pub fn issue_leaf(
    ca: &IssuedPair,
    names: &ServingNames,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<IssuedPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    let common_name = match names.dns_names.first() {
        Some(dns) => dns.clone(),
        None => "soci-operator-webhook".to_string(),
    };
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.subject_alt_names = names
        .dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
        .chain(
            names
                .ip_addresses
                .iter()
                .map(|ip| Ok(SanType::IpAddress(*ip))),
        )
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset_time(not_before)?;
    params.not_after = offset_time(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// One CA of the bundle.
#[derive(Clone, Debug)]
pub struct CaCert {
    pub pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    spki: Vec<u8>,
}

/// The serving leaf as found.
#[derive(Clone, Debug)]
pub enum LeafState {
    Missing,
    /// The certificate or key does not parse, or the key is not the certificate's.
    Unparsable(String),
    Present(LeafCert),
}

#[derive(Clone, Debug)]
pub struct LeafCert {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub names: ServingNames,
    /// The CAs of the bundle (indexes into [`State::cas`]) whose key signed it.
    pub signed_by: Vec<usize>,
    cert_pem: String,
    key_pem: String,
}

/// What `ca.key` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaKeyState {
    Missing,
    Unparsable,
    /// The key of this CA of the bundle (index into [`State::cas`]).
    Of(usize),
    /// A key of no CA in the bundle.
    Foreign,
}

/// A Secret's data, parsed.
#[derive(Clone, Debug)]
pub struct State {
    pub cas: Vec<CaCert>,
    /// Blocks of `ca.crt` that are not certificates of a CA (they are dropped at the next write).
    pub unparsable_cas: usize,
    pub ca_key: CaKeyState,
    pub leaf: LeafState,
    ca_key_pem: Option<String>,
}

impl State {
    /// An empty Secret (or none yet).
    pub fn empty() -> Self {
        Self::from_secret_data(&BTreeMap::new())
    }

    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Self {
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| std::str::from_utf8(&v.0).ok())
                .map(str::to_string)
        };
        let (cas, unparsable_cas) = match data.get(CA_CRT) {
            Some(bundle) => parse_bundle(&bundle.0),
            None => (vec![], 0),
        };
        let ca_key_pem = text(CA_KEY);
        let ca_key = match ca_key_pem.as_deref().map(KeyPair::from_pem) {
            None => CaKeyState::Missing,
            Some(Err(_)) => CaKeyState::Unparsable,
            Some(Ok(key)) => {
                let spki = key.subject_public_key_info();
                match cas.iter().rposition(|ca| ca.spki == spki) {
                    Some(index) => CaKeyState::Of(index),
                    None => CaKeyState::Foreign,
                }
            }
        };
        let leaf = match (text(TLS_CRT), text(TLS_KEY)) {
            (None, _) | (_, None) => LeafState::Missing,
            (Some(cert), Some(key)) => parse_leaf(cert, key, &cas),
        };
        Self {
            cas,
            unparsable_cas,
            ca_key,
            leaf,
            ca_key_pem,
        }
    }
}

/// The CA certificates of a PEM bundle, and how many blocks were not one.
fn parse_bundle(bundle: &[u8]) -> (Vec<CaCert>, usize) {
    let mut cas = vec![];
    let mut unparsable = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(bundle) {
        let Ok(block) = block else {
            unparsable += 1;
            // The iterator cannot resynchronise after a broken block.
            break;
        };
        let parsed = match block.parse_x509() {
            Ok(cert) if cert.is_ca() => Some(CaCert {
                pem: pem_of(&block.contents),
                not_before: system_time(cert.validity().not_before.timestamp()),
                not_after: system_time(cert.validity().not_after.timestamp()),
                spki: cert.public_key().raw.to_vec(),
            }),
            _ => None,
        };
        match parsed {
            Some(ca) => cas.push(ca),
            None => unparsable += 1,
        }
    }
    (cas, unparsable)
}

/// A DER certificate as one PEM block (64-column base64, as openssl writes it).
fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn parse_leaf(cert_pem: String, key_pem: String, cas: &[CaCert]) -> LeafState {
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes()).collect();
    let Some(Ok(block)) = blocks.into_iter().next() else {
        return LeafState::Unparsable("tls.crt holds no PEM certificate".into());
    };
    let cert = match block.parse_x509() {
        Ok(cert) => cert,
        Err(e) => return LeafState::Unparsable(format!("tls.crt: {e}")),
    };
    let key = match KeyPair::from_pem(&key_pem) {
        Ok(key) => key,
        Err(e) => return LeafState::Unparsable(format!("tls.key: {e}")),
    };
    if key.subject_public_key_info() != cert.public_key().raw {
        return LeafState::Unparsable("tls.key is not the key of tls.crt".into());
    }
    let (mut dns, mut ips) = (vec![], vec![]);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => dns.push(n.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(raw) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*raw) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*raw) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    let signed_by = cas
        .iter()
        .enumerate()
        .filter(|(_, ca)| signed_by(&cert, ca))
        .map(|(index, _)| index)
        .collect();
    LeafState::Present(LeafCert {
        not_before: system_time(cert.validity().not_before.timestamp()),
        not_after: system_time(cert.validity().not_after.timestamp()),
        names: ServingNames::from_leaf(dns, ips),
        signed_by,
        cert_pem,
        key_pem,
    })
}

fn signed_by(leaf: &x509_parser::certificate::X509Certificate<'_>, ca: &CaCert) -> bool {
    let Ok((_, spki)) =
        <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
            x509_parser::error::X509Error,
        >>::from_der(&ca.spki)
    else {
        return false;
    };
    leaf.verify_signature(Some(&spki)).is_ok()
}

/// Why a CA is added to the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewCaReason {
    /// No CA, or every CA has expired.
    NoValidCa,
    /// Every CA has at most `renew_before` left.
    AllExpiring,
    /// `ca.key` is missing, does not parse, or is not the newest CA's key.
    KeyUnusable,
}

/// Why the leaf is (or will be) issued again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafReason {
    Missing,
    Unparsable,
    /// Expired, or at most `renew_before` left.
    Expiring,
    /// Its names are not the wanted ones.
    NamesChanged,
    /// No CA of the bundle signed it.
    Untrusted,
    /// An older CA signed it and the newest CA has been published.
    Superseded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafAction {
    Keep,
    Issue(LeafReason),
    /// The leaf still works, and its successor must come from a CA that is not yet published:
    /// it is issued once the bundle has carried that CA for `publish_delay`.
    WaitForPublication {
        reason: LeafReason,
        until: SystemTime,
    },
}

/// What to change in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The CAs of [`State::cas`] kept, in bundle order (the others have expired).
    pub kept_cas: Vec<usize>,
    pub pruned_cas: usize,
    /// Blocks of `ca.crt` that were no CA certificate, dropped.
    pub dropped_unparsable: usize,
    pub new_ca: Option<NewCaReason>,
    pub leaf: LeafAction,
    /// When to look again if nothing else happens.
    pub recheck_after: Duration,
}

impl Plan {
    /// Whether the Secret must be written.
    pub fn writes(&self) -> bool {
        self.new_ca.is_some()
            || self.pruned_cas > 0
            || self.dropped_unparsable > 0
            || matches!(self.leaf, LeafAction::Issue(_))
    }
}

/// The newest of the kept CAs: the latest `not_before`, the later in the bundle on a tie.
fn newest(state: &State, kept: &[usize]) -> Option<usize> {
    kept.iter()
        .filter_map(|&i| Some((state.cas.get(i)?.not_before, i)))
        .max()
        .map(|(_, i)| i)
}

fn remaining(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Decides what to write; see the module documentation for the rules.
pub fn plan(state: &State, wanted: &ServingNames, now: SystemTime, settings: &Settings) -> Plan {
    let renew_before = settings.renew_before;
    let kept_cas: Vec<usize> = (0..state.cas.len())
        .filter(|&i| state.cas[i].not_after > now)
        .collect();
    let pruned_cas = state.cas.len() - kept_cas.len();
    let newest_kept = newest(state, &kept_cas);
    let new_ca = match newest_kept {
        None => Some(NewCaReason::NoValidCa),
        Some(_)
            if kept_cas
                .iter()
                .all(|&i| remaining(state.cas[i].not_after, now) <= renew_before) =>
        {
            Some(NewCaReason::AllExpiring)
        }
        Some(n) if state.ca_key != CaKeyState::Of(n) => Some(NewCaReason::KeyUnusable),
        Some(_) => None,
    };
    // The CA that signs the next leaf and when the API server can be expected to trust it.
    let (signer, published_at) = match (new_ca, newest_kept) {
        (None, Some(n)) => (Some(n), state.cas[n].not_before + settings.publish_delay),
        _ => (None, now + settings.publish_delay),
    };
    let published = now >= published_at;

    let mut wake = vec![settings.check_interval];
    let leaf = match &state.leaf {
        LeafState::Missing => LeafAction::Issue(LeafReason::Missing),
        LeafState::Unparsable(_) => LeafAction::Issue(LeafReason::Unparsable),
        LeafState::Present(leaf) if leaf.not_after <= now => {
            LeafAction::Issue(LeafReason::Expiring)
        }
        LeafState::Present(leaf) => {
            let trusted_by: Vec<usize> = leaf
                .signed_by
                .iter()
                .copied()
                .filter(|i| kept_cas.contains(i))
                .collect();
            let renew_at = leaf.not_after.checked_sub(renew_before).unwrap_or(now);
            let reason = if trusted_by.is_empty() {
                Some(LeafReason::Untrusted)
            } else if renew_at <= now {
                Some(LeafReason::Expiring)
            } else if leaf.names != *wanted {
                Some(LeafReason::NamesChanged)
            } else if signer.is_none_or(|s| !trusted_by.contains(&s)) {
                Some(LeafReason::Superseded)
            } else {
                wake.push(remaining(renew_at, now));
                None
            };
            match reason {
                None => LeafAction::Keep,
                // Nothing trusts it now: the new CA is no worse.
                Some(LeafReason::Untrusted) => LeafAction::Issue(LeafReason::Untrusted),
                Some(reason) if published => LeafAction::Issue(reason),
                Some(reason) => {
                    wake.push(remaining(published_at, now));
                    LeafAction::WaitForPublication {
                        reason,
                        until: published_at,
                    }
                }
            }
        }
    };
    // Wake when a CA enters its renewal window or expires.
    for &i in &kept_cas {
        let ca = &state.cas[i];
        wake.push(remaining(ca.not_after, now));
        if let Some(renew_at) = ca.not_after.checked_sub(renew_before)
            && renew_at > now
        {
            wake.push(remaining(renew_at, now));
        }
    }
    let recheck_after = wake
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(settings.check_interval)
        .max(MIN_RECHECK);
    Plan {
        kept_cas,
        pruned_cas,
        dropped_unparsable: state.unparsable_cas,
        new_ca,
        leaf,
        recheck_after,
    }
}

/// The four keys the Secret is written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretData {
    pub tls_crt: String,
    pub tls_key: String,
    /// The CA bundle, also the webhook configuration's `caBundle`.
    pub ca_crt: String,
    pub ca_key: String,
}

impl SecretData {
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (TLS_CRT, &self.tls_crt),
            (TLS_KEY, &self.tls_key),
            (CA_CRT, &self.ca_crt),
            (CA_KEY, &self.ca_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }
}

/// Issues what `plan` decided; `None` when it writes nothing.
pub fn execute(
    state: &State,
    plan: &Plan,
    wanted: &ServingNames,
    now: SystemTime,
    settings: &Settings,
) -> Result<Option<SecretData>, CertError> {
    if !plan.writes() {
        return Ok(None);
    }
    // A plan made from another state is refused rather than indexed out of bounds.
    let mut bundle: Vec<&CaCert> = plan
        .kept_cas
        .iter()
        .map(|&i| state.cas.get(i).ok_or(CertError::PlanMismatch))
        .collect::<Result<_, _>>()?;
    let added;
    let (signer, signer_not_after) = match plan.new_ca {
        Some(_) => {
            added = issue_ca(now, settings.ca_validity)?;
            (added.clone(), now + settings.ca_validity)
        }
        None => {
            let newest = newest(state, &plan.kept_cas).ok_or(CertError::NoSigner)?;
            let key = state.ca_key_pem.clone().ok_or(CertError::NoSigner)?;
            let ca = state.cas.get(newest).ok_or(CertError::PlanMismatch)?;
            (
                IssuedPair {
                    cert_pem: ca.pem.clone(),
                    key_pem: key,
                },
                ca.not_after,
            )
        }
    };
    let mut ca_crt: String = bundle.drain(..).map(|ca| ca.pem.as_str()).collect();
    if plan.new_ca.is_some() {
        ca_crt.push_str(&signer.cert_pem);
    }
    let leaf = match (&plan.leaf, &state.leaf) {
        (LeafAction::Issue(_), _) => {
            // A leaf never outlives its CA.
            let not_after = (now + settings.leaf_validity).min(signer_not_after);
            issue_leaf(
                &signer,
                wanted,
                now.checked_sub(LEAF_BACKDATE).unwrap_or(now),
                not_after,
            )?
        }
        (_, LeafState::Present(leaf)) => IssuedPair {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: leaf.key_pem.clone(),
        },
        // `plan` issues a leaf whenever there is none.
        _ => return Err(CertError::NoSigner),
    };
    Ok(Some(SecretData {
        tls_crt: leaf.cert_pem,
        tls_key: leaf.key_pem,
        ca_crt,
        ca_key: signer.key_pem,
    }))
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;

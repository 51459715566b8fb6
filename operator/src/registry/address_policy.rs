//! Which hosts the operator may contact. Registry names come from tenants and token realms,
//! redirects, `Link` pages and upload `Location`s from registries, so each of them is checked
//! before a connection is made:
//!
//! - Always refused: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
//!   fd00:ec2::254, 100.100.100.200, and the same addresses inside IPv4-mapped, IPv4-compatible,
//!   NAT64 and 6to4 IPv6 forms) and the metadata host names (`metadata.google.internal`,
//!   `instance-data`, ...). Loopback and private ranges stay allowed: in-cluster and test
//!   registries live there.
//! - `--denied-registries` globs: refused as registry and as any other host contacted.
//! - `--allowed-registries` globs (when given): the only registries a reference may name. Hosts
//!   a registry sends us to (its token realm, blob storage behind a redirect) are not in this
//!   list (Docker Hub's realm is `auth.docker.io`); only the rules above apply to them.
//!
//! The literal host is checked here before a request is sent; [`FilteringResolver`] checks every
//! address a name resolves to, so a name pointing at 169.254.169.254 is refused as well.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Host names of cloud metadata services (compared without a trailing dot, case-insensitively).
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
];

/// Why a host may not be contacted. Carried as the source of transport errors so that a
/// refusal inside the resolver or the redirect policy can be told from a network failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub host: String,
    pub why: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not an allowed registry address: {}",
            self.host, self.why
        )
    }
}

impl std::error::Error for Refused {}

/// A host glob: `registry.local:5000`, `*.example.com`, `10.1.2.3`. `*` stands for any run
/// of characters other than `:`, so `*.example.com` does not swallow a port and does not
/// match `example.com` itself. Without a port the glob matches every port of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob {
    host: String,
    port: Option<String>,
}

impl HostGlob {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty registry pattern".into());
        }
        if lower.contains("://") || lower.contains('/') {
            return Err(format!(
                "{text:?}: a registry pattern is host[:port], without scheme or path"
            ));
        }
        let (host, port) = split_host_port(&lower);
        let host = host.trim_end_matches('.').to_string();
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_' | ':'));
        if !valid_host {
            return Err(format!("{text:?}: not a host glob"));
        }
        if let Some(p) = port
            && !(p == "*" || p.parse::<u16>().is_ok())
        {
            return Err(format!("{text:?}: bad port {p:?}"));
        }
        Ok(Self {
            host,
            port: port.map(str::to_string),
        })
    }

    /// `host` is a lower-case host (no brackets for IPv6), `port` the explicit port if any.
    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let port_ok = match (&self.port, port) {
            (None, _) => true,
            (Some(p), _) if p == "*" => true,
            (Some(p), Some(actual)) => p.parse::<u16>() == Ok(actual),
            (Some(_), None) => false,
        };
        port_ok && glob_match(self.host.as_bytes(), host.as_bytes())
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// `*` matches any run of bytes except `:`; everything else literally. Iterative with one
/// backtrack point, so a pattern of many stars costs O(pattern × text), never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star
            && text[st] != b':'
        {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `host[:port]`, `[v6]:port`, or a bare IPv6 address, split into host and port text.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match authority.matches(':').count() {
        1 => {
            let (h, p) = authority.split_once(':').unwrap_or((authority, ""));
            (h, Some(p))
        }
        _ => (authority, None),
    }
}

/// What the admin allows, plus the rules that always hold.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<HostGlob>,
    denied: Vec<HostGlob>,
}

impl AddressPolicy {
    pub fn new(allowed: &[String], denied: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|s| HostGlob::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allowed: parse(allowed)?,
            denied: parse(denied)?,
        })
    }

    /// A registry named by a reference (`docker.io`, `127.0.0.1:5000`), before anything is
    /// sent to it.
    pub fn check_registry(&self, registry: &str) -> Result<(), Refused> {
        let (host, port) = canonical_authority(registry).map_err(|why| Refused {
            host: registry.into(),
            why,
        })?;
        self.check_canonical(registry, &host, port)?;
        if !self.allowed.is_empty() && !self.allowed.iter().any(|g| g.matches(&host, port)) {
            return Err(Refused {
                host: registry.into(),
                why: "not in --allowed-registries".into(),
            });
        }
        Ok(())
    }

    /// Any URL about to be requested: a registry API URL, a token realm, a redirect target,
    /// a `Link` page or an upload `Location`.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let shown = url_authority(url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused {
                host: shown,
                why: format!("scheme {:?} is not http or https", url.scheme()),
            });
        }
        let Some(host) = url.host_str() else {
            return Err(Refused {
                host: shown,
                why: "no host".into(),
            });
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.check_canonical(&shown, &host, url.port())
    }

    fn check_canonical(&self, shown: &str, host: &str, port: Option<u16>) -> Result<(), Refused> {
        let refuse = |why: String| Refused {
            host: shown.into(),
            why,
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            if let Some(why) = refused_ip(ip) {
                return Err(refuse(why.into()));
            }
        } else if is_metadata_name(host) {
            return Err(refuse("a cloud metadata host name".into()));
        }
        if let Some(g) = self.denied.iter().find(|g| g.matches(host, port)) {
            return Err(refuse(format!("matches --denied-registries {g}")));
        }
        Ok(())
    }
}

fn url_authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => url.as_str().chars().take(100).collect(),
    }
}

/// The host as a URL parser sees it (so `0xa9fea9fe`, `2852039166` and `169.254.169.254.`
/// are all 169.254.169.254, as they would be when connecting), lower case, without brackets,
/// and the explicit port.
pub fn canonical_authority(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '\\']) {
        return Err("not a host[:port]".into());
    }
    let url = Url::parse(&format!("https://{authority}/")).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    // `https://host:443/` drops the default port; keep what was written.
    let port = split_host_port(authority)
        .1
        .and_then(|p| p.parse::<u16>().ok())
        .or(url.port());
    Ok((host, port))
}

fn is_metadata_name(host: &str) -> bool {
    let name = host.trim_end_matches('.');
    METADATA_NAMES.iter().any(|m| name.eq_ignore_ascii_case(m))
}

/// Why an address is never contacted, if it is not: link-local and cloud metadata
/// addresses, also when an IPv6 address carries them as an embedded IPv4 address.
pub fn refused_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return refused_v4(v4).map(|_| "an IPv6 form of a link-local or metadata address");
            }
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("the AWS metadata address")
            } else if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else {
                None
            }
        }
    }
}

fn refused_v4(v4: Ipv4Addr) -> Option<&'static str> {
    if v4.is_link_local() {
        Some("a link-local address (169.254.0.0/16, cloud metadata)")
    } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
        Some("the Alibaba Cloud metadata address")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// The addresses that remain after dropping refused ones; an error naming the host when
/// none remains.
pub fn filter_resolved(
    name: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, Refused> {
    let mut kept = Vec::new();
    let mut dropped = None;
    for a in addrs {
        match refused_ip(a.ip()) {
            Some(why) => dropped = Some((a.ip(), why)),
            None => kept.push(a),
        }
    }
    match (kept.is_empty(), dropped) {
        (true, Some((ip, why))) => Err(Refused {
            host: name.into(),
            why: format!("resolves to {ip}, {why}"),
        }),
        _ => Ok(kept),
    }
}

/// reqwest's resolver for every registry connection: resolves with `inner` (the system
/// resolver by default) and drops refused addresses, so reqwest never connects to them.
/// IP literals never reach a resolver; [`AddressPolicy::check_url`] covers those.
#[derive(Clone)]
pub struct FilteringResolver {
    inner: Arc<dyn Resolve>,
}

impl FilteringResolver {
    pub fn system() -> Self {
        Self::over(Arc::new(SystemResolver))
    }

    pub fn over(inner: Arc<dyn Resolve>) -> Self {
        Self { inner }
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        if is_metadata_name(&host) {
            let refused = Refused {
                host,
                why: "a cloud metadata host name".into(),
            };
            return Box::pin(async move { Err(refused.into()) });
        }
        let inner = self.inner.resolve(name);
        Box::pin(async move {
            let addrs = inner.await?;
            let kept = filter_resolved(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// getaddrinfo on tokio's blocking pool (what reqwest does by default).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs =
                tokio::task::spawn_blocking(move || (host.as_str(), 0).to_socket_addrs()).await??;
            Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as Addrs)
        })
    }
}

/// The `Refused` somewhere in an error's source chain (a resolver or redirect refusal
/// wrapped by reqwest and hyper).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], denied: &[&str]) -> AddressPolicy {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AddressPolicy::new(&own(allowed), &own(denied)).unwrap()
    }

    #[test]
    fn metadata_and_link_local_addresses_are_refused_in_every_spelling() {
        let p = AddressPolicy::default();
        for host in [
            "169.254.169.254",
            "169.254.169.254:80",
            "169.254.170.2",
            "169.254.0.1:5000",
            "0xa9fea9fe",
            "2852039166",
            "0251.0376.0251.0376",
            "169.254.169.254.",
            "[fd00:ec2::254]",
            "[fd00:ec2::254]:443",
            "[::ffff:169.254.169.254]",
            "[::ffff:a9fe:a9fe]:5000",
            "[::169.254.169.254]",
            "[64:ff9b::169.254.169.254]",
            "[2002:a9fe:a9fe::1]",
            "[fe80::1]",
            "100.100.100.200",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "metadata:80",
            "instance-data",
            "metadata.goog",
        ] {
            let e = p.check_registry(host).expect_err(host);
            assert_eq!(e.host, host);
        }
    }

    #[test]
    fn ordinary_registries_loopback_and_private_addresses_are_allowed() {
        let p = AddressPolicy::default();
        for host in [
            "docker.io",
            "registry-1.docker.io",
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "10.0.0.5:5000",
            "192.168.1.10",
            "169.255.0.1",
            "[fd00:ec2::253]",
            "metadata.example.com",
            "my-metadata",
        ] {
            assert_eq!(p.check_registry(host), Ok(()), "{host}");
        }
    }

    #[test]
    fn urls_are_checked_on_their_parsed_host() {
        let p = AddressPolicy::default();
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        assert!(check("http://169.254.169.254/latest/meta-data").is_err());
        assert!(check("http://0xa9fea9fe/").is_err());
        assert!(check("https://[::ffff:169.254.169.254]/token").is_err());
        assert!(check("https://metadata.google.internal/computeMetadata/v1/").is_err());
        assert!(check("ftp://registry.example.com/x").is_err());
        assert!(check("file:///etc/passwd").is_err());
        assert_eq!(check("https://auth.docker.io/token?service=x"), Ok(()));
        assert_eq!(check("http://127.0.0.1:5000/v2/"), Ok(()));
    }

    #[test]
    fn globs_match_hosts_and_ports() {
        let g = |s: &str| HostGlob::parse(s).unwrap();
        assert!(g("*.example.com").matches("a.example.com", None));
        assert!(g("*.example.com").matches("a.b.example.com", Some(5000)));
        assert!(!g("*.example.com").matches("example.com", None));
        assert!(!g("*.example.com").matches("evil-example.com", None));
        assert!(!g("*.example.com").matches("a.example.com.evil.net", None));
        assert!(g("registry.local:5000").matches("registry.local", Some(5000)));
        assert!(!g("registry.local:5000").matches("registry.local", Some(5001)));
        assert!(!g("registry.local:5000").matches("registry.local", None));
        assert!(g("registry.local").matches("registry.local", Some(443)));
        assert!(g("Registry.Local:*").matches("registry.local", Some(1)));
        assert!(g("10.0.*.*").matches("10.0.3.4", Some(5000)));
        assert!(g("[fd00::*]:5000").matches("fd00::1", Some(5000)));
        assert!(g("*").matches("anything.at.all", None));
        // Many stars against a long near-miss: linear-ish, not exponential.
        let stars = "*a".repeat(30);
        assert!(!g(&stars).matches(&"a".repeat(29), None));
    }

    #[test]
    fn bad_globs_are_rejected() {
        for bad in [
            "",
            "  ",
            "https://registry.example.com",
            "registry.example.com/path",
            "host:port",
            "host:99999",
            "bad host",
            "ho$t",
        ] {
            assert!(HostGlob::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AddressPolicy::new(&["ok.example".into(), "".into()], &[]).is_err());
    }

    #[test]
    fn allowed_and_denied_lists() {
        let p = policy(&["*.corp.example", "127.0.0.1:5000"], &["bad.corp.example"]);
        assert_eq!(p.check_registry("r.corp.example"), Ok(()));
        assert_eq!(p.check_registry("127.0.0.1:5000"), Ok(()));
        let e = p.check_registry("127.0.0.1:5001").unwrap_err();
        assert!(e.why.contains("--allowed-registries"), "{e}");
        assert!(p.check_registry("docker.io").is_err());
        let e = p.check_registry("bad.corp.example").unwrap_err();
        assert!(
            e.why.contains("--denied-registries bad.corp.example"),
            "{e}"
        );
        // Allowed does not lift the built-in rules.
        let p = policy(&["*"], &[]);
        assert!(p.check_registry("169.254.169.254").is_err());
        // Denied applies to every URL; allowed only to registry names (realms live elsewhere).
        let p = policy(&["docker.io"], &["*.evil.example"]);
        assert_eq!(
            p.check_url(&Url::parse("https://auth.docker.io/token").unwrap()),
            Ok(())
        );
        assert!(
            p.check_url(&Url::parse("https://x.evil.example/token").unwrap())
                .is_err()
        );
        assert!(p.check_registry("x.evil.example:5000").is_err());
    }

    #[test]
    fn malformed_registry_names_are_refused() {
        let p = AddressPolicy::default();
        for bad in ["", "user@host", "host/path", "host?x", "[::1", "a b"] {
            assert!(p.check_registry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let e = filter_resolved("evil.test", [a("169.254.169.254:0")]).unwrap_err();
        assert!(e.to_string().contains("evil.test"), "{e}");
        assert!(e.to_string().contains("169.254.169.254"), "{e}");
        assert!(filter_resolved("evil6.test", [a("[fd00:ec2::254]:0")]).is_err());
        assert!(filter_resolved("mapped.test", [a("[::ffff:169.254.169.254]:0")]).is_err());
        assert_eq!(
            filter_resolved("mixed.test", [a("169.254.169.254:0"), a("127.0.0.2:0")]).unwrap(),
            vec![a("127.0.0.2:0")]
        );
        assert_eq!(
            filter_resolved("ok.test", [a("127.0.0.1:0")]).unwrap(),
            vec![a("127.0.0.1:0")]
        );
        // A name that resolves to nothing is the resolver's error, not ours.
        assert_eq!(filter_resolved("none.test", []).unwrap(), vec![]);
    }
}

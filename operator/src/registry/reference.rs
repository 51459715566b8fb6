//! Registry image references: `host[:port]/repository[:tag][@digest]`, normalised like
//! containerd and docker (`busybox` is `docker.io/library/busybox:latest`). The grammar and the
//! docker.io rules are oci-spec's (`oci_spec::distribution::Reference`); this type adds what
//! we need around them: the API host, plain-HTTP decisions and a stable display form.

use anyhow::{Result, bail};
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// As written after normalisation (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RegistryRef {
    pub fn parse(s: &str) -> Result<Self> {
        let text = s.strip_prefix("docker://").unwrap_or(s);
        let parsed: oci_spec::distribution::Reference = match text.parse() {
            Ok(r) => r,
            Err(e) => bail!("{s:?}: not an image reference: {e}"),
        };
        // Docker and containerd refuse upper-case repository names; so do registries.
        if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
            bail!("{s:?}: repository name must be lowercase");
        }
        let digest = parsed.digest().map(str::to_string);
        if let Some(d) = &digest {
            crate::image::layout::blob_relative_path(d)?;
        }
        // oci-spec adds `latest` only when neither tag nor digest is given, as containerd does.
        Ok(Self {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: parsed.tag().map(str::to_string),
            digest,
        })
    }

    /// Where the distribution API lives (`docker.io` is served by `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The manifest reference to resolve: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository, another tag or digest.
    pub fn with_reference(&self, reference: &str) -> Self {
        let mut r = self.clone();
        if reference.contains(':') {
            r.tag = None;
            r.digest = Some(reference.to_string());
        } else {
            r.tag = Some(reference.to_string());
            r.digest = None;
        }
        r
    }

    pub fn repository_display(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port: spoken to over plain HTTP, as
/// docker and containerd do for loopback registries.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        RegistryRef::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let b = r("busybox");
        assert_eq!(b.registry, "docker.io");
        assert_eq!(b.repository, "library/busybox");
        assert_eq!(b.tag.as_deref(), Some("latest"));
        assert_eq!(b.api_host(), "registry-1.docker.io");
        assert_eq!(b.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r("docker.io/foo/bar:1").repository, "foo/bar");
        assert_eq!(r("index.docker.io/foo/bar:1").registry, "docker.io");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!("127.0.0.1:5000/team/app:v1@{d}"));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "team/app");
        assert_eq!(x.tag.as_deref(), Some("v1"));
        assert_eq!(x.digest.as_deref(), Some(d.as_str()));
        assert_eq!(x.manifest_reference(), d);
        let y = r(&format!("localhost:5000/app@{d}"));
        assert_eq!(y.tag, None);
        assert_eq!(r("localhost/app").registry, "localhost");
        assert_eq!(r("docker://quay.io/a/b:c").registry, "quay.io");
        assert!(RegistryRef::parse("UPPER/case").is_err());
        assert!(RegistryRef::parse("host:5000/app@sha256:abc").is_err());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.3.2.1"));
        assert!(is_loopback_host("localhost:80"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(is_loopback_host("::1"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
        assert!(!is_loopback_host("registry.example.com"));
        assert!(!is_loopback_host("localhost.example.com"));
    }
}

//! Digests and tags before they go into a URL. Every digest we put in a request path or query
//! comes from somewhere we do not trust (a registry's manifest, a `Docker-Content-Digest`
//! header, an annotation, a status written earlier), so the URL builders here check it:
//! `sha256:` + 64 lowercase hex or `sha512:` + 128, as the OCI image spec registers them. A
//! "digest" that is a tag, carries `/`, `..`, `?` or upper-case hex is refused, permanently.

use super::client::RegistryClient;
use super::error::{PermanentCause, RegistryError, RegistryResult};
use super::reference::RegistryRef;

/// Whether `digest` is `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
pub fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `tag` follows the distribution spec's tag grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    tag.len() <= 128
        && (first.is_ascii_alphanumeric() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The permanent error for a digest that is not one (what it is shown shortened and quoted).
fn invalid(what: &str, digest: &str, expected: &str) -> RegistryError {
    let shown: String = digest.chars().take(160).collect();
    RegistryError::permanent(
        PermanentCause::Invalid,
        what,
        format!("{shown:?} is not a valid {expected}"),
    )
}

const DIGEST_FORM: &str = "digest (sha256: and 64 lowercase hex digits, or sha512: and 128)";

/// `Ok` for a valid digest, else a permanent error naming it.
pub fn check_digest(what: &str, digest: &str) -> RegistryResult<()> {
    if is_valid_digest(digest) {
        Ok(())
    } else {
        Err(invalid(what, digest, DIGEST_FORM))
    }
}

/// A manifest reference: a digest when it has a `:`, else a tag.
pub fn check_reference(what: &str, reference: &str) -> RegistryResult<()> {
    if reference.contains(':') {
        check_digest(what, reference)
    } else if is_valid_tag(reference) {
        Ok(())
    } else {
        Err(invalid(
            what,
            reference,
            "tag ([A-Za-z0-9_][A-Za-z0-9._-], at most 128) or digest",
        ))
    }
}

impl RegistryClient {
    /// `…/v2/<repository>/manifests/<reference>`, the reference checked.
    pub fn manifest_url(
        &self,
        what: &str,
        repo: &RegistryRef,
        reference: &str,
    ) -> RegistryResult<String> {
        check_reference(what, reference)?;
        Ok(self.url(repo, &format!("manifests/{reference}")))
    }

    /// `…/v2/<repository>/blobs/<digest>`, the digest checked.
    pub fn blob_url(&self, what: &str, repo: &RegistryRef, digest: &str) -> RegistryResult<String> {
        check_digest(what, digest)?;
        Ok(self.url(repo, &format!("blobs/{digest}")))
    }

    /// `…/v2/<repository>/referrers/<digest>`, the digest checked.
    pub fn referrers_url(
        &self,
        what: &str,
        repo: &RegistryRef,
        subject: &str,
    ) -> RegistryResult<String> {
        check_digest(what, subject)?;
        Ok(self.url(repo, &format!("referrers/{subject}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_registered_algorithms_with_lowercase_hex_of_their_length_are_digests() {
        assert!(is_valid_digest(&format!("sha256:{HEX64}")));
        assert!(is_valid_digest(&format!("sha512:{HEX64}{HEX64}")));
        for bad in [
            String::new(),
            "latest".into(),
            "sha256:".into(),
            format!("sha256:{}", HEX64.to_uppercase()),
            format!("sha256:{}", &HEX64[1..]),
            format!("sha256:{HEX64}0"),
            format!("sha512:{HEX64}"),
            format!("sha384:{HEX64}"),
            format!("SHA256:{HEX64}"),
            format!("sha256:../../{}", &HEX64[6..]),
            format!("sha256:{}/x", &HEX64[2..]),
            format!("sha256:{}?a", &HEX64[2..]),
            format!("sha256:{}zz", &HEX64[2..]),
            format!(" sha256:{HEX64}"),
        ] {
            assert!(!is_valid_digest(&bad), "{bad:?}");
        }
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["latest", "v1.2.3", "_x", "sha256-abc", &"a".repeat(128)] {
            assert!(is_valid_tag(good), "{good:?}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "v1?x",
            "v1#x",
            "ü",
            &"a".repeat(129),
        ] {
            assert!(!is_valid_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn references_with_a_colon_must_be_digests() {
        assert!(check_reference("x", "v1").is_ok());
        assert!(check_reference("x", &format!("sha256:{HEX64}")).is_ok());
        let e = check_reference("GET manifest r/a", "sha256:../../etc").unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("is not a valid digest"), "{e}");
        let e = check_reference("GET manifest r/a", "../v1").unwrap_err();
        assert!(e.to_string().contains("is not a valid tag"), "{e}");
    }
}

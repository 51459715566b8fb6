//! Registry failures, classified the way the controller acts on them: a transient failure may
//! succeed if retried later (exit code 3), a permanent one will fail again on the same input
//! (exit code 1).

use super::limits::{MESSAGE_CHARS, REGISTRY_TEXT_CHARS, sanitize};
use std::fmt;
use std::time::Duration;

/// Transient: 5xx, 429, 408, connection refused or reset, timeouts, truncated bodies.
/// Permanent: 401/403, 404, digest or size mismatch, malformed content, other 4xx.
pub use crate::reason::FailureClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentCause {
    Unauthorized,
    NotFound,
    DigestMismatch,
    Invalid,
    /// The registry refuses the operation itself (a DELETE where deletes are disabled).
    Unsupported,
    /// A manifest, config, referrers list, tag page or zTOC larger than the operator's cap
    /// (`registry/limits.rs`).
    TooLarge,
    /// Our address policy refuses the host (`--allowed-registries`, `--denied-registries`,
    /// link-local and metadata addresses, plain-HTTP token realms).
    NotAllowed,
}

/// One failed registry operation. `what` names the operation and object (for example
/// "GET manifest 127.0.0.1:5000/app:v1"); `cause` says what went wrong.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub class: FailureClass,
    pub permanent_cause: Option<PermanentCause>,
    pub what: String,
    pub cause: String,
    /// What the server asked for with `Retry-After`, when it did.
    pub retry_after: Option<Duration>,
}

impl RegistryError {
    pub fn transient(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            permanent_cause: None,
            what: what.into(),
            cause: cause.into(),
            retry_after: None,
        }
    }

    pub fn permanent(
        cause_kind: PermanentCause,
        what: impl Into<String>,
        cause: impl Into<String>,
    ) -> Self {
        Self {
            class: FailureClass::Permanent,
            permanent_cause: Some(cause_kind),
            what: what.into(),
            cause: cause.into(),
            retry_after: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == FailureClass::Transient
    }

    /// Classifies an HTTP status that the caller did not expect. The body (an OCI error
    /// envelope, usually) goes into the message, shortened.
    pub fn from_status(
        what: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> Self {
        // Enough bytes for the kept characters even when each takes four.
        let head = &body[..body.len().min(4 * REGISTRY_TEXT_CHARS)];
        let text = sanitize(String::from_utf8_lossy(head).trim(), REGISTRY_TEXT_CHARS);
        let cause = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        };
        let mut error = match status {
            408 | 429 | 500..=599 => Self::transient(what, cause),
            401 | 403 => Self::permanent(PermanentCause::Unauthorized, what, cause),
            404 => Self::permanent(PermanentCause::NotFound, what, cause),
            _ => Self::permanent(PermanentCause::Invalid, what, cause),
        };
        error.retry_after = retry_after;
        error
    }

    /// Network-level failures: everything that did not produce a status is worth retrying
    /// (refused, reset, timed out, body cut short), except a request we could not even build
    /// or a TLS certificate the server will keep presenting.
    pub fn from_reqwest(what: &str, error: &reqwest::Error) -> Self {
        let chain = error_chain(error);
        // reqwest names the URL, which for a redirected blob read is a pre-signed one.
        let mut cause = sanitize(&chain, REGISTRY_TEXT_CHARS);
        if error.is_timeout() {
            cause = format!("timed out (request deadline or read timeout): {cause}");
        }
        if error.is_builder()
            || chain.contains("certificate")
            || chain.contains("InvalidCertificate")
        {
            Self::permanent(PermanentCause::Invalid, what, cause)
        } else {
            Self::transient(what, cause)
        }
    }
}

/// reqwest's top-level message is vague ("error sending request"); the sources say why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match (self.class, self.permanent_cause) {
            (FailureClass::Transient, _) => "transient",
            (_, Some(PermanentCause::Unauthorized)) => "permanent: unauthorized",
            (_, Some(PermanentCause::NotFound)) => "permanent: not found",
            (_, Some(PermanentCause::DigestMismatch)) => "permanent: content mismatch",
            (_, Some(PermanentCause::Unsupported)) => "permanent: unsupported",
            (_, Some(PermanentCause::NotAllowed)) => "permanent: not allowed",
            (_, Some(PermanentCause::TooLarge)) => "permanent: too large",
            _ => "permanent",
        };
        // Whatever was put in `cause` (registry text included) reaches statuses and Events
        // through here: no URL queries, bounded length.
        let what = sanitize(&self.what, MESSAGE_CHARS / 4);
        let cause = sanitize(&self.cause, MESSAGE_CHARS);
        write!(f, "{what}: {cause} ({class})")
    }
}

impl std::error::Error for RegistryError {}

pub type RegistryResult<T> = Result<T, RegistryError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let class = |s| RegistryError::from_status("x", s, b"", None).class;
        assert_eq!(class(500), FailureClass::Transient);
        assert_eq!(class(503), FailureClass::Transient);
        assert_eq!(class(429), FailureClass::Transient);
        assert_eq!(class(408), FailureClass::Transient);
        assert_eq!(class(401), FailureClass::Permanent);
        assert_eq!(class(403), FailureClass::Permanent);
        assert_eq!(class(404), FailureClass::Permanent);
        assert_eq!(class(400), FailureClass::Permanent);
        assert!(
            RegistryError::from_status("x", 404, b"", None)
                .to_string()
                .ends_with("(permanent: not found)")
        );
        let e = RegistryError::from_status("GET blob", 401, br#"{"errors":[]}"#, None);
        assert_eq!(
            e.to_string(),
            r#"GET blob: HTTP 401: {"errors":[]} (permanent: unauthorized)"#
        );
    }

    #[test]
    fn registry_text_is_cut_and_loses_url_queries() {
        let mut body =
            br#"{"errors":[{"message":"see https://s3.example/blob?X-Amz-Signature=s3cr3t"}]}"#
                .to_vec();
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        let e = RegistryError::from_status("GET blob", 403, &body, None);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("https://s3.example/blob?…"), "{text}");
        assert!(text.len() < 700, "{} bytes", text.len());
        // Text put in by hand (a token server's reason) is cleaned on display too.
        let e = RegistryError::permanent(
            PermanentCause::Unauthorized,
            "authenticating",
            format!(
                "token refused at https://auth/token?secret=1 {}",
                "y".repeat(10_000)
            ),
        );
        let text = e.to_string();
        assert!(!text.contains("secret=1"), "{text}");
        assert!(text.len() < MESSAGE_CHARS + 200, "{} bytes", text.len());
    }
}

//! The one failure vocabulary: every reason an image or an object can stand for, with its
//! class (transient or permanent), the exit code a command fails with for it, and the text
//! it has as a condition reason, an Event reason and a metric label. The worker's result,
//! the plan, the status, Events and metrics all speak it; registry and format errors become a
//! [`Reason`] in one place ([`failure_of`]).

use crate::registry::RegistryError;
use crate::registry::error::PermanentCause;
use std::fmt;

/// Whether retrying the same input may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retrying later may succeed: back off and retry.
    Transient,
    /// Retrying the same input fails again: stall until the spec changes.
    Permanent,
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal, $class:expr;)*) => {
        /// A reason of `LazyLoadReady` (and of `Ready`/`Stalled` when an image holds it back),
        /// of an object outside the per-image plan, or of a failed reconcile.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in the order of the docs.
            pub const ALL: &[Reason] = &[$(Reason::$name),*];

            /// Its text: a condition reason, an Event reason, a metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => $text,)*
                }
            }

            /// What a failure with this reason usually is; `None` for what is not a failure.
            pub const fn class(self) -> Option<FailureClass> {
                match self {
                    $(Reason::$name => $class,)*
                }
            }
        }
    };
}

const T: Option<FailureClass> = Some(FailureClass::Transient);
const P: Option<FailureClass> = Some(FailureClass::Permanent);

reasons! {
    /// The target is bound to a verified SOCI index.
    Verified = "Verified", None;
    /// A worker Job is building the target.
    Building = "Building", None;
    /// The target was bound once and is not any more: it is rebuilt.
    TargetDrifted = "TargetDrifted", None;
    /// A build is due but `--max-concurrent-jobs`, `--max-jobs-per-registry` or
    /// `--max-jobs-per-namespace` is reached.
    Queued = "Queued", None;
    /// The object is being reconciled (a new generation, images in progress).
    Progressing = "Progressing", None;
    /// `spec.suspend` is set.
    Suspended = "Suspended", None;
    /// The build failed (a bad image, a worker that died without a result).
    BuildFailed = "BuildFailed", P;
    /// The worker says done, the registry says the target is not a valid binding.
    VerificationFailed = "VerificationFailed", P;
    /// No such repository, tag or digest.
    ImageNotFound = "ImageNotFound", P;
    /// The registry refused the credentials (401/403).
    Unauthorized = "Unauthorized", P;
    /// No layer is large enough for a zTOC (`spec.minLayerSize`).
    NoIndexableLayers = "NoIndexableLayers", P;
    /// The image reference or the target tag it makes is not valid.
    InvalidReference = "InvalidReference", P;
    /// The registry kept failing (5xx, 429, resets, timeouts) after every retry.
    RegistryUnavailable = "RegistryUnavailable", T;
    /// The registry is outside `--allowed-registries` or inside `--denied-registries`, or
    /// resolves to an address the operator never calls.
    RegistryNotAllowed = "RegistryNotAllowed", P;
    /// The registry sent a body larger than the operator accepts (4 MiB for a manifest, config,
    /// referrers list or tag page, 48 MiB for a zTOC).
    ContentTooLarge = "ContentTooLarge", P;
    /// The worker Job ran past `spec.job.activeDeadlineSeconds`.
    DeadlineExceeded = "DeadlineExceeded", P;
    /// Another namespace's SociIndex names the same target first and builds something else.
    TargetConflict = "TargetConflict", P;
    /// The spec asks for a worker Pod the operator's configuration does not allow
    /// (`--allow-spec-service-account`, `--allow-spec-scheduling`).
    SpecNotAllowed = "SpecNotAllowed", P;
    /// The spec is outside the bounds the CRD states (an object that bypassed them).
    InvalidSpec = "InvalidSpec", P;
    /// A bug in soci-operator (a reconcile panicked, an object without a uid): retried with
    /// backoff.
    InternalError = "InternalError", P;
    /// The reconcile ran past `--reconcile-timeout`; it is retried.
    ReconcileTimeout = "ReconcileTimeout", T;
    /// A Kubernetes API call failed (a reconcile is retried with backoff; not a condition).
    KubernetesApi = "KubernetesAPI", T;
}

impl Reason {
    /// The reason a text names, if any (a condition written by an older version may hold any).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    /// A build's failure that retrying the same input would repeat: it holds until the spec
    /// changes or a reconcile is requested.
    pub fn is_permanent_build_failure(text: &str) -> bool {
        use Reason::*;
        matches!(
            Self::parse(text),
            Some(
                BuildFailed
                    | VerificationFailed
                    | ImageNotFound
                    | Unauthorized
                    | NoIndexableLayers
                    | InvalidReference
                    | ContentTooLarge
                    | DeadlineExceeded
            )
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition's reason text against the vocabulary.
impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Exit codes of every command (documented in `--help`).
pub mod exit {
    /// Retrying the same input fails again.
    pub const PERMANENT_FAILURE: u8 = 1;
    /// A flag or argument is unusable.
    pub const USAGE: u8 = 2;
    /// The registry kept failing after every retry; retrying later may succeed.
    pub const TRANSIENT_FAILURE: u8 = 3;
    /// A worker killed by a signal (SIGKILL: out of memory, evicted): 128 + 9.
    pub const KILLED: i32 = 137;

    /// An argument that is well-formed for clap but unusable (exit code 2).
    #[derive(Debug)]
    pub struct UsageError(pub String);

    impl std::fmt::Display for UsageError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for UsageError {}

    /// The exit code for a failure: a usage error, else its class ([`super::failure_of`]):
    /// transient only when a registry failure that exhausted its retries is the cause.
    pub fn code_for(error: &anyhow::Error) -> u8 {
        if error.chain().any(|c| c.is::<UsageError>()) {
            return USAGE;
        }
        super::failure_of(error).class.exit_code()
    }
}

impl FailureClass {
    /// The exit code of a command that fails this way.
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Transient => exit::TRANSIENT_FAILURE,
            Self::Permanent => exit::PERMANENT_FAILURE,
        }
    }

    /// How a worker's result spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }

    /// The class a worker's exit code says (`None` for success and usage errors).
    pub fn of_exit_code(code: i32) -> Self {
        if code == i32::from(exit::TRANSIENT_FAILURE) || code == exit::KILLED {
            Self::Transient
        } else {
            Self::Permanent
        }
    }
}

/// A failure the controller or a worker observed: its class, its reason, and a message for
/// the status and Events.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn permanent(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            reason,
            message: message.into(),
        }
    }

    pub fn transient(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            reason,
            message: message.into(),
        }
    }
}

/// The failure an error stands for: the registry's own classification when a registry error
/// is the cause (not found, unauthorized, not allowed, or transient), else a permanent
/// `BuildFailed`; an image with nothing to index is `NoIndexableLayers`. The message goes into
/// a status and Events: no URL query strings (pre-signed URLs), bounded length.
pub fn failure_of(error: &anyhow::Error) -> Failure {
    use crate::registry::limits;
    let message = limits::sanitize(&format!("{error:#}"), limits::MESSAGE_CHARS);
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<RegistryError>() {
            if e.is_transient() {
                return Failure::transient(Reason::RegistryUnavailable, message);
            }
            let reason = match e.permanent_cause {
                Some(PermanentCause::NotFound) => Reason::ImageNotFound,
                Some(PermanentCause::Unauthorized) => Reason::Unauthorized,
                Some(PermanentCause::NotAllowed) => Reason::RegistryNotAllowed,
                Some(PermanentCause::TooLarge) => Reason::ContentTooLarge,
                _ => Reason::BuildFailed,
            };
            return Failure::permanent(reason, message);
        }
        if let Some(soci_format::conversion_plan::ConvertError::EmptyIndex) = cause.downcast_ref() {
            return Failure::permanent(Reason::NoIndexableLayers, message);
        }
    }
    Failure::permanent(Reason::BuildFailed, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::PermanentCause;
    use crate::registry::limits;

    #[test]
    fn every_reason_has_its_own_text_and_parses_back() {
        let mut texts: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            assert!(
                crate::api::condition::is_reason(reason.as_str()),
                "{reason} is not a valid condition reason"
            );
        }
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), Reason::ALL.len());
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }

    #[test]
    fn classes_and_exit_codes_agree() {
        assert_eq!(
            Reason::RegistryUnavailable.class(),
            Some(FailureClass::Transient)
        );
        assert_eq!(Reason::ImageNotFound.class(), Some(FailureClass::Permanent));
        assert_eq!(Reason::Verified.class(), None);
        assert_eq!(FailureClass::Transient.exit_code(), 3);
        assert_eq!(FailureClass::Permanent.exit_code(), 1);
        assert_eq!(FailureClass::of_exit_code(3), FailureClass::Transient);
        assert_eq!(FailureClass::of_exit_code(137), FailureClass::Transient);
        assert_eq!(FailureClass::of_exit_code(1), FailureClass::Permanent);
        assert!(Reason::is_permanent_build_failure("ImageNotFound"));
        assert!(!Reason::is_permanent_build_failure("RegistryUnavailable"));
        assert!(!Reason::is_permanent_build_failure("Garbage"));
    }

    #[test]
    fn failure_messages_lose_url_queries_and_are_bounded() {
        let error: anyhow::Error = RegistryError::transient(
            "GET blob sha256:x in r/a",
            "error sending request for url (https://bucket.s3.example/x?X-Amz-Signature=abc&X-Amz-Security-Token=tok)",
        )
        .into();
        let error = error.context(format!("reading layer, then {}", "z".repeat(100_000)));
        let failure = failure_of(&error);
        assert!(!failure.message.contains("X-Amz"), "{}", failure.message);
        assert!(!failure.message.contains("tok"), "{}", failure.message);
        assert!(failure.message.chars().count() <= limits::MESSAGE_CHARS + 10);
        assert_eq!(failure.class, FailureClass::Transient);
    }

    #[test]
    fn registry_errors_map_to_reasons_and_classes() {
        let not_found: anyhow::Error =
            RegistryError::permanent(PermanentCause::NotFound, "GET x", "404").into();
        assert_eq!(failure_of(&not_found).reason, Reason::ImageNotFound);
        let denied: anyhow::Error =
            RegistryError::permanent(PermanentCause::Unauthorized, "GET x", "401").into();
        assert_eq!(failure_of(&denied).reason, Reason::Unauthorized);
        let flaky: anyhow::Error = RegistryError::transient("GET x", "503").into();
        let f = failure_of(&flaky);
        assert_eq!(f.class, FailureClass::Transient);
    }
}

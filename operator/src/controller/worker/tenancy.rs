//! What a tenant's spec may decide: the namespaces the admin's flags name, and [`admit`], which
//! refuses a spec asking for more.

use crate::api::SociIndexSpec;
use crate::controller::plan::Failure;
use crate::reason::Reason;

/// Namespaces named by a flag: none (the default), some, or every one (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceSet {
    #[default]
    None,
    Some(std::collections::BTreeSet<String>),
    All,
}

impl NamespaceSet {
    /// The flag's values: namespace names, or `*` for every namespace.
    pub fn from_values(values: &[String]) -> Self {
        if values.iter().any(|v| v == "*") {
            return Self::All;
        }
        let names: std::collections::BTreeSet<String> = values
            .iter()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if names.is_empty() {
            Self::None
        } else {
            Self::Some(names)
        }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::None => false,
            Self::Some(names) => names.contains(namespace),
            Self::All => true,
        }
    }
}

/// What the admin lets a tenant's spec decide. Creating a SociIndex must give no more power
/// than the tenant had: a spec-given ServiceAccount would run the worker with that account's
/// rights and token, node selectors and tolerations would place it on nodes kept for others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `--allow-spec-service-account`: where `spec.credentials.serviceAccountName` is honoured.
    pub service_account: NamespaceSet,
    /// `--allow-spec-scheduling`: where `spec.job.nodeSelector` and `spec.job.tolerations` are.
    pub scheduling: NamespaceSet,
    /// `--operator-credentials-namespaces`: where a SociIndex without `secretRefs` uses the
    /// operator's own `--registry-config` (elsewhere it is anonymous).
    pub operator_credentials: NamespaceSet,
}

/// Whether the spec asks only for what the admin allows in `namespace`; otherwise every image
/// stalls with `SpecNotAllowed` (nothing is looked up, no Job is made).
pub fn admit(namespace: &str, spec: &SociIndexSpec, policy: &TenantPolicy) -> Result<(), Failure> {
    let refused = |field: &str, flag: &str, value: &str| {
        Failure::permanent(
            Reason::SpecNotAllowed,
            format!(
                "{field} {value} is not allowed in namespace {namespace}: the operator honours it only in the namespaces {flag} names; remove it, or ask the cluster admin"
            ),
        )
    };
    if let Some(account) = spec
        .credentials
        .as_ref()
        .and_then(|c| c.service_account_name.as_deref())
        && !policy.service_account.contains(namespace)
    {
        return Err(refused(
            "spec.credentials.serviceAccountName",
            "--allow-spec-service-account",
            &format!("{account:?}"),
        ));
    }
    if let Some(job) = &spec.job
        && !policy.scheduling.contains(namespace)
    {
        if !job.node_selector.is_empty() {
            let keys: Vec<&str> = job.node_selector.keys().map(String::as_str).collect();
            return Err(refused(
                "spec.job.nodeSelector",
                "--allow-spec-scheduling",
                &format!("({})", keys.join(", ")),
            ));
        }
        if !job.tolerations.is_empty() {
            return Err(refused(
                "spec.job.tolerations",
                "--allow-spec-scheduling",
                &format!("({} given)", job.tolerations.len()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SociIndex;
    use crate::controller::plan::FailureClass;
    use crate::controller::worker::test_support::{owner, with_scheduling, with_service_account};

    #[test]
    fn spec_fields_that_change_what_a_worker_pod_can_be_need_the_admins_leave() {
        let deny = TenantPolicy::default();
        type Case = (&'static str, fn(&mut SociIndex), &'static str);
        let cases: Vec<Case> = vec![
            (
                "serviceAccountName",
                with_service_account,
                "--allow-spec-service-account",
            ),
            (
                "nodeSelector",
                |o| with_scheduling(o, true, false),
                "--allow-spec-scheduling",
            ),
            (
                "tolerations",
                |o| with_scheduling(o, false, true),
                "--allow-spec-scheduling",
            ),
        ];
        for (what, set, flag) in cases {
            let mut o = owner();
            set(&mut o);
            let refused = admit("team", &o.spec, &deny).expect_err(what);
            assert_eq!(
                (refused.class, refused.reason),
                (FailureClass::Permanent, Reason::SpecNotAllowed),
                "{what}"
            );
            assert!(refused.message.contains(what), "{}", refused.message);
            assert!(refused.message.contains(flag), "{}", refused.message);
            assert!(
                refused.message.contains("namespace team"),
                "{}",
                refused.message
            );
            // Allowed for this namespace, or for every one.
            let allow = |names: &[&str]| {
                let set = NamespaceSet::from_values(
                    &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                );
                TenantPolicy {
                    service_account: set.clone(),
                    scheduling: set,
                    ..Default::default()
                }
            };
            assert!(admit("team", &o.spec, &allow(&["team"])).is_ok(), "{what}");
            assert!(admit("team", &o.spec, &allow(&["*"])).is_ok(), "{what}");
            assert!(
                admit("team", &o.spec, &allow(&["other"])).is_err(),
                "{what}"
            );
        }
        // Resources and deadlines are the tenant's own quota's business: always accepted.
        assert!(admit("team", &owner().spec, &deny).is_ok());
    }

    #[test]
    fn namespace_sets_from_flag_values() {
        assert_eq!(NamespaceSet::from_values(&[]), NamespaceSet::None);
        assert!(!NamespaceSet::None.contains("team"));
        let some = NamespaceSet::from_values(&["a".into(), " b ".into(), "".into()]);
        assert!(some.contains("a") && some.contains("b") && !some.contains("c"));
        assert_eq!(
            NamespaceSet::from_values(&["a".into(), "*".into()]),
            NamespaceSet::All
        );
        assert!(NamespaceSet::All.contains("anything"));
    }
}

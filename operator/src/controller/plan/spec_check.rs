//! The spec against the bounds the CRD states, for an object that bypassed them.

use crate::api::condition::quote;
use crate::api::{SociIndexSpec, limits};
use crate::controller::durations::bounded_interval;
use std::collections::HashSet;

/// `spec` against the bounds the CRD states ([`limits`]), for an object that bypassed them (an
/// older CRD, a schema that was edited): the first problem found, for an `InvalidSpec` stall.
/// What could otherwise happen is worse than a rejected apply: a panic, a worker that cannot run,
/// a Job the API server refuses on every retry, a status too large to write.
pub fn check_spec(spec: &SociIndexSpec) -> Result<(), String> {
    use limits::*;
    let count = spec.images.len();
    if count == 0 || count > MAX_IMAGES {
        return Err(format!(
            "spec.images has {count} entries: 1 to {MAX_IMAGES} are allowed"
        ));
    }
    let mut names = HashSet::new();
    for image in &spec.images {
        let name = quote(&image.name);
        if !is_dns_label(&image.name, MAX_IMAGE_NAME) {
            return Err(format!(
                "spec.images name {name} is not a DNS label (a-z, 0-9 and '-', at most {MAX_IMAGE_NAME})"
            ));
        }
        if !names.insert(image.name.as_str()) {
            return Err(format!("spec.images has two entries named {name}"));
        }
        check_length(
            &format!("spec.images[{}].image", image.name),
            &image.image,
            1,
            MAX_IMAGE_REFERENCE,
        )?;
    }
    if spec.platforms.len() > MAX_PLATFORMS {
        return Err(format!(
            "spec.platforms has {} entries: at most {MAX_PLATFORMS} are allowed",
            spec.platforms.len()
        ));
    }
    for platform in &spec.platforms {
        check_length("a spec.platforms entry", platform, 1, MAX_PLATFORM)?;
    }
    check_range(
        "spec.minLayerSize",
        spec.min_layer_size,
        0,
        MAX_MIN_LAYER_SIZE,
    )?;
    check_range(
        "spec.spanSize",
        spec.span_size,
        MIN_SPAN_SIZE,
        MAX_SPAN_SIZE,
    )?;
    if let Some(text) = &spec.interval {
        bounded_interval(text).map_err(|why| format!("spec.interval {why}"))?;
    }
    if let Some(target) = &spec.target {
        if let Some(suffix) = &target.tag_suffix {
            check_length("spec.target.tagSuffix", suffix, 1, MAX_TAG_SUFFIX)?;
        }
        if let Some(template) = &target.tag_template {
            check_length("spec.target.tagTemplate", template, 1, MAX_TAG_TEMPLATE)?;
        }
        let ways = usize::from(target.tag_suffix.is_some())
            + usize::from(target.tag_template.is_some())
            + usize::from(target.in_place == Some(true));
        if ways > 1 {
            return Err(
                "spec.target: set at most one of tagSuffix, tagTemplate and inPlace".into(),
            );
        }
    }
    if let Some(credentials) = &spec.credentials {
        if credentials.secret_refs.len() > MAX_SECRET_REFS {
            return Err(format!(
                "spec.credentials.secretRefs has {} entries: at most {MAX_SECRET_REFS} are allowed",
                credentials.secret_refs.len()
            ));
        }
        for secret in &credentials.secret_refs {
            check_object_name("spec.credentials.secretRefs name", &secret.name)?;
        }
        if let Some(account) = &credentials.service_account_name {
            check_object_name("spec.credentials.serviceAccountName", account)?;
        }
    }
    if let Some(job) = &spec.job {
        check_job(job)?;
    }
    Ok(())
}

fn check_job(job: &crate::api::JobSettings) -> Result<(), String> {
    use limits::*;
    if job.node_selector.len() > MAX_NODE_SELECTOR {
        return Err(format!(
            "spec.job.nodeSelector has {} entries: at most {MAX_NODE_SELECTOR} are allowed",
            job.node_selector.len()
        ));
    }
    for (key, value) in &job.node_selector {
        check_length("a spec.job.nodeSelector key", key, 1, MAX_LABEL_KEY)?;
        check_length("a spec.job.nodeSelector value", value, 0, MAX_LABEL_VALUE)?;
    }
    if job.tolerations.len() > MAX_TOLERATIONS {
        return Err(format!(
            "spec.job.tolerations has {} entries: at most {MAX_TOLERATIONS} are allowed",
            job.tolerations.len()
        ));
    }
    for toleration in &job.tolerations {
        if let Some(key) = &toleration.key {
            check_length("a spec.job.tolerations key", key, 0, MAX_LABEL_KEY)?;
        }
        if let Some(value) = &toleration.value {
            check_length("a spec.job.tolerations value", value, 0, MAX_LABEL_VALUE)?;
        }
        if let Some(operator) = &toleration.operator {
            check_length("a spec.job.tolerations operator", operator, 0, 16)?;
        }
        if let Some(effect) = &toleration.effect {
            check_length("a spec.job.tolerations effect", effect, 0, 32)?;
        }
    }
    if let Some(resources) = &job.resources {
        let entries = [
            ("limits", resources.limits.as_ref().map_or(0, |m| m.len())),
            (
                "requests",
                resources.requests.as_ref().map_or(0, |m| m.len()),
            ),
            ("claims", resources.claims.as_ref().map_or(0, |c| c.len())),
        ];
        for (what, n) in entries {
            if n > MAX_RESOURCE_ENTRIES {
                return Err(format!(
                    "spec.job.resources.{what} has {n} entries: at most {MAX_RESOURCE_ENTRIES} are allowed"
                ));
            }
        }
        let quantities = [&resources.limits, &resources.requests]
            .into_iter()
            .flatten()
            .flat_map(|m| m.values());
        for quantity in quantities {
            check_length("a spec.job.resources quantity", &quantity.0, 1, 64)?;
        }
        for claim in resources.claims.iter().flatten() {
            check_length("a spec.job.resources.claims name", &claim.name, 1, 63)?;
        }
    }
    check_range(
        "spec.job.activeDeadlineSeconds",
        job.active_deadline_seconds,
        MIN_ACTIVE_DEADLINE_SECONDS,
        MAX_ACTIVE_DEADLINE_SECONDS,
    )?;
    check_range(
        "spec.job.backoffLimit",
        job.backoff_limit.map(i64::from),
        0,
        i64::from(MAX_BACKOFF_LIMIT),
    )
}

fn check_length(what: &str, text: &str, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&text.len()) {
        return Ok(());
    }
    Err(format!(
        "{what} {} is {} bytes long: {min} to {max} are allowed",
        quote(text),
        text.len()
    ))
}

fn check_range(what: &str, value: Option<i64>, min: i64, max: i64) -> Result<(), String> {
    match value {
        Some(v) if !(min..=max).contains(&v) => {
            Err(format!("{what} is {v}: {min} to {max} are allowed"))
        }
        _ => Ok(()),
    }
}

/// A Secret or ServiceAccount name: a DNS subdomain.
fn check_object_name(what: &str, name: &str) -> Result<(), String> {
    let valid = name.len() <= limits::MAX_OBJECT_NAME
        && name.split('.').all(|label| is_dns_label(label, 63));
    if valid {
        return Ok(());
    }
    Err(format!(
        "{what} {} is not a DNS subdomain (a-z, 0-9, '-' and '.', at most {})",
        quote(name),
        limits::MAX_OBJECT_NAME
    ))
}

fn is_dns_label(label: &str, max: usize) -> bool {
    let b = label.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !b.is_empty() && b.len() <= max && b.iter().all(inner) && b[0] != b'-' && b[b.len() - 1] != b'-'
}

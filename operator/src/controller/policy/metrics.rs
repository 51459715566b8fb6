//! The policies' metrics, registered next to the controller's.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct PolicyMetrics {
    /// Images a policy selects (before the cap), by policy.
    pub selected_images: IntGaugeVec,
    /// Its children, by readiness.
    pub children: IntGaugeVec,
    /// Source listings, by source kind and outcome.
    pub listings: IntCounterVec,
}

impl PolicyMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let selected_images = IntGaugeVec::new(
            Opts::new(
                "soci_operator_policy_selected_images",
                "Images a policy selects (before maxImages)",
            ),
            &["kind", "policy"],
        )?;
        let children = IntGaugeVec::new(
            Opts::new(
                "soci_operator_policy_children",
                "Child SociIndexes of a policy, by readiness",
            ),
            &["kind", "policy", "ready"],
        )?;
        let listings = IntCounterVec::new(
            Opts::new(
                "soci_operator_policy_listings_total",
                "Source listings of the policies (workloads, repository), by outcome",
            ),
            &["source", "outcome"],
        )?;
        registry.register(Box::new(selected_images.clone()))?;
        registry.register(Box::new(children.clone()))?;
        registry.register(Box::new(listings.clone()))?;
        Ok(Self {
            selected_images,
            children,
            listings,
        })
    }

    /// Records a policy's gauges (`policy`: `namespace/name`, or the name of a cluster policy).
    pub fn record(&self, kind: &str, policy: &str, selected: i64, ready: i64, total: i64) {
        self.selected_images
            .with_label_values(&[kind, policy])
            .set(selected);
        let children = &self.children;
        children
            .with_label_values(&[kind, policy, "true"])
            .set(ready);
        children
            .with_label_values(&[kind, policy, "false"])
            .set(total - ready);
    }

    /// Drops a deleted policy's gauges.
    pub fn forget(&self, kind: &str, policy: &str) {
        let _ = self.selected_images.remove_label_values(&[kind, policy]);
        for ready in ["true", "false"] {
            let _ = self.children.remove_label_values(&[kind, policy, ready]);
        }
    }
}

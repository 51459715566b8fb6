//! The controller's Prometheus metrics (served at `/metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub duration: HistogramVec,
    pub jobs_created: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_panics: IntCounter,
    pub jobs: IntGaugeVec,
    pub job_slots_waiting: IntGauge,
    pub build_duration: Histogram,
    pub indexed_bytes: IntCounter,
    pub images: IntGaugeVec,
    pub leader: IntGauge,
    pub image_checks: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("soci_operator_reconciles_total", "Reconciles by result"),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "soci_operator_reconcile_duration_seconds",
                "Time one reconcile took",
            ),
            &["result"],
        )?;
        let jobs_created = IntCounterVec::new(
            Opts::new("soci_operator_jobs_total", "Worker Jobs by action"),
            &["action"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "soci_operator_reconcile_errors_total",
                "Failed reconciles (KubernetesAPI, InternalError, ReconcileTimeout) and new build/stall failures, by reason",
            ),
            &["reason"],
        )?;
        let reconcile_panics = IntCounter::new(
            "soci_operator_reconcile_panics_total",
            "Reconciles that panicked (caught: the object goes Stalled with reason InternalError)",
        )?;
        let jobs = IntGaugeVec::new(
            Opts::new("soci_operator_jobs", "Worker Jobs that exist now, by state"),
            &["state"],
        )?;
        let job_slots_waiting = IntGauge::new(
            "soci_operator_job_slots_waiting",
            "Builds waiting for a worker Job slot (--max-concurrent-jobs, --max-jobs-per-registry)",
        )?;
        let build_duration = Histogram::with_opts(
            HistogramOpts::new(
                "soci_operator_build_duration_seconds",
                "Worker Job run time, start to finish",
            )
            .buckets(vec![
                5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
            ]),
        )?;
        let indexed_bytes = IntCounter::new(
            "soci_operator_indexed_bytes_total",
            "Compressed layer bytes indexed by finished builds",
        )?;
        let images = IntGaugeVec::new(
            Opts::new(
                "soci_operator_images",
                "Images by their LazyLoadReady reason",
            ),
            &["reason"],
        )?;
        let image_checks = IntCounterVec::new(
            Opts::new(
                "soci_operator_image_checks_total",
                "Registry checks of an image: settled (one HEAD per tag) or full (manifests, SOCI index, zTOCs)",
            ),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "soci_operator_leader",
            "1 on the replica that holds the leader Lease (or runs without leader election)",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(jobs_created.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_panics.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_slots_waiting.clone()))?;
        registry.register(Box::new(build_duration.clone()))?;
        registry.register(Box::new(indexed_bytes.clone()))?;
        registry.register(Box::new(images.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(crate::registry::client::REQUESTS.clone()))?;
        registry.register(Box::new(image_checks.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            duration,
            jobs_created,
            reconcile_errors,
            reconcile_panics,
            jobs,
            job_slots_waiting,
            build_duration,
            indexed_bytes,
            images,
            leader,
            image_checks,
        })
    }
}

//! The agent's own metrics (`metrics_listen` in its configuration): jobs,
//! bytes, durations and dedup of its backups, and the usage of the
//! filesystems holding its sources' data — with a warning in the log when
//! one is 75% full or more.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use trireme_proto::v1::{JobResult, JobSummary, VolumeUsage};

use crate::sources::SourceConfig;

/// Buckets of `trireme_agent_job_duration_seconds`: 1 s to 12 h.
pub const JOB_SECONDS_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
];

/// Buckets of `trireme_agent_backup_read_bytes`: 1 MiB to 4 TiB, ×4.
pub fn backup_bytes_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1_048_576.0, 4.0, 12).expect("valid buckets")
}

/// Used share of a filesystem at which the agent warns.
pub const VOLUME_WARN_RATIO: f64 = 0.75;

/// The agent's counters and gauges.
pub struct AgentMetrics {
    registry: Registry,
    jobs: IntCounterVec,
    running: IntGauge,
    bytes_read: IntCounterVec,
    bytes_uploaded: IntCounterVec,
    duration: GaugeVec,
    dedup: GaugeVec,
    last_success: IntGaugeVec,
    volume_ratio: GaugeVec,
    volume_bytes: IntGaugeVec,
    job_seconds: HistogramVec,
    backup_read_bytes: Histogram,
    /// Sources over the warning level (to warn once per crossing).
    full: Mutex<BTreeSet<String>>,
    /// This agent's name: the `source` label is `agent/name`, as on the
    /// controller, so one query matches both.
    agent: String,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let cv = |n: &str, h: &str, l: &[&str]| {
            reg(&r, IntCounterVec::new(Opts::new(n, h), l).expect("valid"))
        };
        let gv = |n: &str, h: &str, l: &[&str]| {
            reg(&r, GaugeVec::new(Opts::new(n, h), l).expect("valid"))
        };
        let igv = |n: &str, h: &str, l: &[&str]| {
            reg(&r, IntGaugeVec::new(Opts::new(n, h), l).expect("valid"))
        };
        AgentMetrics {
            jobs: cv(
                "trireme_agent_jobs_total",
                "Jobs finished by this agent, by kind and outcome",
                &["kind", "outcome"],
            ),
            running: reg(
                &r,
                IntGauge::new("trireme_agent_jobs_running", "Jobs held by this agent now")
                    .expect("valid"),
            ),
            bytes_read: cv(
                "trireme_agent_backup_bytes_read_total",
                "Bytes read from the source by successful backups",
                &["source"],
            ),
            bytes_uploaded: cv(
                "trireme_agent_backup_bytes_uploaded_total",
                "Bytes uploaded (compressed, encrypted packs) by successful backups",
                &["source"],
            ),
            duration: gv(
                "trireme_agent_backup_duration_seconds",
                "How long the source's last successful backup took",
                &["source"],
            ),
            dedup: gv(
                "trireme_agent_backup_dedup_ratio",
                "Share of the last backup's bytes already in the repository (0..1)",
                &["source"],
            ),
            last_success: igv(
                "trireme_agent_backup_last_success_timestamp_seconds",
                "When the source's last successful backup finished",
                &["source"],
            ),
            volume_ratio: gv(
                "trireme_agent_source_volume_used_ratio",
                "Used share of the filesystem holding the source's data (0..1)",
                &["source"],
            ),
            volume_bytes: igv(
                "trireme_agent_source_volume_bytes",
                "Size and use of the filesystem holding the source's data",
                &["source", "kind"],
            ),
            job_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "trireme_agent_job_duration_seconds",
                        "How long this agent's jobs took, from assignment (a wait for a free job slot included) to result, by kind and outcome",
                    )
                    .buckets(JOB_SECONDS_BUCKETS.to_vec()),
                    &["kind", "outcome"],
                )
                .expect("valid"),
            ),
            backup_read_bytes: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "trireme_agent_backup_read_bytes",
                        "Bytes each successful backup read from its source",
                    )
                    .buckets(backup_bytes_buckets()),
                )
                .expect("valid"),
            ),
            full: Mutex::default(),
            agent: String::new(),
            registry: {
                let build = igv(
                    "trireme_agent_build_info",
                    "Always 1; the agent's version in the label",
                    &["version"],
                );
                build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                #[cfg(target_os = "linux")]
                r.register(Box::new(
                    prometheus::process_collector::ProcessCollector::for_self(),
                ))
                .expect("registered once");
                r
            },
        }
    }
}

impl AgentMetrics {
    /// Metrics of the agent called `agent`.
    pub fn for_agent(agent: &str) -> Self {
        AgentMetrics {
            agent: agent.to_string(),
            ..Self::default()
        }
    }

    /// The `source` label of a source of this agent: `agent/name`.
    fn source_label(&self, name: &str) -> String {
        if self.agent.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.agent)
        }
    }

    /// Count a finished job that took `took`.
    pub fn job_finished(&self, kind: &str, source: &str, r: &JobResult, took: Duration) {
        let outcome = if r.ok { "succeeded" } else { "failed" };
        self.jobs.with_label_values(&[kind, outcome]).inc();
        self.job_seconds
            .with_label_values(&[kind, outcome])
            .observe(took.as_secs_f64());
        if let (true, "backup", Some(s)) = (r.ok, kind, r.summary.as_ref()) {
            self.backup_done(source, s);
        }
    }

    fn backup_done(&self, source: &str, s: &JobSummary) {
        let label = self.source_label(source);
        let l = [label.as_str()];
        self.bytes_read.with_label_values(&l).inc_by(s.bytes_read);
        self.backup_read_bytes.observe(s.bytes_read as f64);
        self.bytes_uploaded
            .with_label_values(&l)
            .inc_by(s.uploaded_bytes);
        self.duration.with_label_values(&l).set(s.duration_secs);
        if s.bytes_read > 0 {
            let dup = 1.0 - (s.new_bytes as f64 / s.bytes_read as f64).min(1.0);
            self.dedup.with_label_values(&l).set(dup);
        }
        self.last_success.with_label_values(&l).set(chrono_now());
    }

    /// Jobs held now.
    pub fn set_running(&self, n: usize) {
        self.running.set(n as i64);
    }

    /// Measure the filesystems holding the sources' data; warn (once per
    /// crossing) about those at 75% or more.
    pub fn volumes(&self, sources: &[SourceConfig]) -> Vec<VolumeUsage> {
        let mut out = Vec::new();
        let mut full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        for s in sources {
            let Some(path) = s.spec.data_path() else {
                continue;
            };
            let Ok(st) = rustix::fs::statvfs(path) else {
                continue;
            };
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let used = st
                .f_blocks
                .saturating_sub(st.f_bfree)
                .saturating_mul(st.f_frsize);
            if total == 0 {
                continue;
            }
            let ratio = used as f64 / total as f64;
            let label = self.source_label(&s.name);
            let l = [label.as_str()];
            self.volume_ratio.with_label_values(&l).set(ratio);
            self.volume_bytes
                .with_label_values(&[label.as_str(), "total"])
                .set(total as i64);
            self.volume_bytes
                .with_label_values(&[label.as_str(), "used"])
                .set(used as i64);
            if ratio >= VOLUME_WARN_RATIO {
                if full.insert(s.name.clone()) {
                    tracing::warn!(source = %s.name, path = %path.display(), used_pct = format!("{:.0}", ratio * 100.0),
                        "the filesystem holding this source's data is 75% full or more");
                }
            } else {
                full.remove(&s.name);
            }
            out.push(VolumeUsage {
                source: s.name.clone(),
                path: path.display().to_string(),
                total_bytes: total,
                used_bytes: used,
            });
        }
        out
    }

    /// The metrics text, with when the agent's certificate and the CA
    /// certificate expire (read from `files` now, so a renewed certificate
    /// shows at the next scrape).
    pub fn render_with_certificates(&self, files: &trireme_net::tls::TlsFiles) -> String {
        let expiry = IntGaugeVec::new(
            Opts::new(
                "trireme_agent_tls_certificate_expiry_timestamp_seconds",
                "When the agent's own certificate (kind=cert) and the CA certificate (kind=ca) expire",
            ),
            &["kind", "name"],
        )
        .expect("valid");
        for (kind, name, t) in files.expiry() {
            expiry.with_label_values(&[kind, name.as_str()]).set(t);
        }
        let mut families = self.registry.gather();
        families.extend(prometheus::core::Collector::collect(&expiry));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The metrics text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

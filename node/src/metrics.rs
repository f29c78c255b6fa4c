//! Counters and gauges for `GET /metrics`, in the Prometheus text format. Each metric is
//! named after the event it counts; labelled families use the names of the message or
//! reason enums.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the API latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Most distinct label values kept per labelled family; further values are counted under `other`.
pub const MAX_LABELS: usize = 64;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter family with one label.
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    /// Add `n` under `label`.
    pub fn add(&self, label: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if m.contains_key(label) || m.len() < MAX_LABELS { label } else { "other" };
        *m.entry(key.to_owned()).or_default() += n;
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Every metric the node exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records ingested through the API (new ones, not duplicates).
    pub records_ingested: Counter,
    /// Ingested records that were already held.
    pub records_duplicate: Counter,
    /// Ingest requests refused as invalid.
    pub ingest_refused: Counter,
    /// Projections sent to peers.
    pub projections_sent: Counter,
    /// Projections acknowledged by a signed receipt.
    pub projections_delivered: Counter,
    /// Projections received and stored.
    pub projections_received: Counter,
    /// Projections or messages refused, by reason.
    pub rejected: Labelled,
    /// Sends withheld by policy, by reason.
    pub withheld: Labelled,
    /// API requests by route.
    pub api_requests: Labelled,
    /// API calls refused for authorisation.
    pub api_refused: Counter,
    /// Audit entries appended.
    pub audit_entries: Counter,
    /// Write groups committed (one flush each).
    pub write_groups: Counter,
    /// Audit entries, receipt sets and peer checkpoints dropped after write groups kept
    /// failing (each also audited, as `entries_lost`, once a group commits).
    pub audit_lost: Counter,
    /// Peers connected now.
    pub peers_connected: AtomicU64,
    /// API latency.
    pub api_latency: Histogram,
}

impl Metrics {
    /// Render in the Prometheus text exposition format. `records_stored` is read from the store.
    pub fn render(&self, records_stored: u64) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ =
                writeln!(out, "# HELP tamga_{name} {help}\n# TYPE tamga_{name} counter\ntamga_{name} {v}");
        };
        counter("records_ingested_total", "Records ingested through the API.", self.records_ingested.get());
        counter("records_duplicate_total", "Ingested records already held.", self.records_duplicate.get());
        counter("ingest_refused_total", "Ingest requests refused as invalid.", self.ingest_refused.get());
        counter("projections_sent_total", "Projections sent to peers.", self.projections_sent.get());
        counter(
            "projections_delivered_total",
            "Projections acknowledged by receipt.",
            self.projections_delivered.get(),
        );
        counter(
            "projections_received_total",
            "Projections received and stored.",
            self.projections_received.get(),
        );
        counter("api_refused_total", "API calls refused for authorisation.", self.api_refused.get());
        counter("audit_entries_total", "Audit entries appended.", self.audit_entries.get());
        counter("write_groups_total", "Write groups committed with one flush.", self.write_groups.get());
        counter(
            "audit_lost_total",
            "Audit events, receipt sets and peer checkpoints dropped while write groups failed.",
            self.audit_lost.get(),
        );
        let _ = writeln!(
            out,
            "# HELP tamga_records_stored Records held.\n# TYPE tamga_records_stored gauge\ntamga_records_stored {records_stored}"
        );
        let _ = writeln!(
            out,
            "# HELP tamga_peers_connected Roster peers connected.\n# TYPE tamga_peers_connected gauge\ntamga_peers_connected {}",
            self.peers_connected.load(Ordering::Relaxed)
        );
        for (name, help, label, fam) in [
            ("rejected_total", "Inbound items refused, by reason.", "reason", &self.rejected),
            ("withheld_total", "Sends withheld by policy, by reason.", "reason", &self.withheld),
            ("api_requests_total", "API requests, by route.", "route", &self.api_requests),
        ] {
            let _ = writeln!(out, "# HELP tamga_{name} {help}\n# TYPE tamga_{name} counter");
            for (k, v) in fam.snapshot() {
                let k = k.replace(['\\', '"', '\n'], "_");
                let _ = writeln!(out, "tamga_{name}{{{label}=\"{k}\"}} {v}");
            }
        }
        let h = &self.api_latency;
        let _ = writeln!(
            out,
            "# HELP tamga_api_latency_seconds API request latency.\n# TYPE tamga_api_latency_seconds histogram"
        );
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "tamga_api_latency_seconds_bucket{{le=\"{b}\"}} {}",
                h.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "tamga_api_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "tamga_api_latency_seconds_sum {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "tamga_api_latency_seconds_count {count}");
        out
    }
}

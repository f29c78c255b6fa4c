//! `tamga bench`'s audit section: build a log of N entries (1,000,000 by default) in a
//! scratch store through the same append path the writer uses (entry, hash, head, index
//! keys, in batches), then time on it a filtered query by peer and day, a query by
//! record, a count by day, and `audit verify`, without and with `--indexes`.
//!
//! The log is synthetic but shaped like a busy node's: entries spread evenly over
//! [`DAYS`] days, a quarter each ingested / sent / delivered / received, the last three
//! with one of nine peers, five categories, four agreements.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tamga_protocol::{Digest, MemberCode};

use crate::audit::{Action, AuditEvent, Filter, Outcome, GENESIS};
use crate::bench::{Figure, Report};
use crate::store::{Store, WriteBatch};

/// Days the synthetic log spans.
pub const DAYS: i64 = 30;
/// Entries per committed batch while building the log.
pub const BUILD_BATCH: usize = 1_000;
/// Times each query is run; the median is reported.
pub const QUERY_RUNS: usize = 5;
/// First entry time: 2026-11-01T00:00:00Z.
pub const START_MS: i64 = 1_793_491_200_000;

const PEERS: [&str; 9] = ["CN", "KZ", "KG", "TJ", "UZ", "IN", "PK", "IR", "BY"];
const CATEGORIES: [&str; 5] =
    ["rms.method", "ipr.protected_mark", "ipr.infringement", "energy.transfer", "enforcement.alert"];
const AGREEMENTS: [&str; 4] = ["sco-ipr-2012", "sco-rms-2013", "sco-energy-2008", "ru-kz-enforcement"];

fn event(i: u64) -> AuditEvent {
    let pick = |n: usize| (i as usize / 4) % n;
    let action = match i % 4 {
        0 => Action::Ingested,
        1 => Action::Sent,
        2 => Action::Delivered,
        _ => Action::Received,
    };
    let id = Digest::of(&i.to_be_bytes());
    let category = CATEGORIES[pick(CATEGORIES.len())].parse().expect("a valid category");
    let mut ev = AuditEvent::new(action, Outcome::Ok).record(id, category);
    if action != Action::Ingested {
        let peer: MemberCode = PEERS[pick(PEERS.len())].parse().expect("a valid member");
        ev = ev
            .peer(peer)
            .agreement(AGREEMENTS[pick(AGREEMENTS.len())].parse().expect("a valid agreement"))
            .projection("RU".parse().expect("a valid member"), i / 4 + 1)
            .reason(format!("projection #{} to {peer}", i / 4 + 1));
    }
    ev
}

fn time_of(i: u64, n: u64) -> i64 {
    START_MS + (i as i128 * (DAYS * 86_400_000) as i128 / n.max(1) as i128) as i64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed<T>(mut f: impl FnMut() -> Result<T>) -> Result<(Duration, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        let out = f()?;
        times.push(t.elapsed());
        last = Some(out);
    }
    Ok((median(times), last.context("ran at least once")?))
}

fn add(report: &mut Report, name: String, value: f64, unit: &'static str) {
    report.figures.push(Figure { name, value, unit });
}

/// Build a log of `entries` entries in a scratch store under `dir` and measure it.
pub fn run(report: &mut Report, entries: u64, dir: &std::path::Path) -> Result<()> {
    let store = Store::open(&dir.join("audit"))?;
    let policy = Digest([7; 32]);
    let mut head = (0u64, GENESIS);
    let start = Instant::now();
    let mut i = 0u64;
    while i < entries {
        let mut batch = WriteBatch::default();
        for _ in 0..BUILD_BATCH.min((entries - i) as usize) {
            crate::audit_index::append(&mut batch, &mut head, event(i), time_of(i, entries), policy);
            i += 1;
        }
        store.commit(batch)?;
    }
    let build = start.elapsed();
    store.flush_blocking()?;
    let label = |what: &str| format!("audit {}k: {what}", entries / 1000);
    add(report, label("append entry+hash+indexes"), entries as f64 / build.as_secs_f64(), "entries/s");
    add(report, label("disk bytes per entry"), store.size_on_disk() as f64 / entries as f64, "bytes");

    // A filtered query by peer and day: KZ on day 10.
    let day = START_MS + 10 * 86_400_000;
    let f = Filter {
        peer: Some("KZ".parse().expect("valid")),
        since_ms: Some(day),
        until_ms: Some(day + 86_399_999),
        limit: usize::MAX,
        ..Filter::default()
    };
    let (t, (n, stats)) = timed(|| {
        let mut n = 0u64;
        let stats = crate::audit_index::for_each_match(&store, &f, |_, _, _| {
            n += 1;
            true
        })?;
        Ok((n, stats))
    })?;
    ensure!(n > 0 && stats.indexes == 1 && stats.entries_read == n, "the peer+day query used no index");
    add(report, label(&format!("query peer+day ({n} hits)")), t.as_secs_f64() * 1000.0, "ms");

    // Every entry about one record.
    let rec = Digest::of(&(entries / 2).to_be_bytes());
    let (t, n) = timed(|| Ok(crate::audit_index::trace(&store, rec)?.len()))?;
    ensure!(n >= 1, "the record query found nothing");
    add(report, label("trace one record"), t.as_secs_f64() * 1e6, "µs");

    // A count by day of one action over the whole log (reads every matching entry).
    let f = Filter { action: Some(Action::Delivered), limit: usize::MAX, ..Filter::default() };
    let t = Instant::now();
    let c = crate::audit_index::count(&store, &f, Some(crate::audit_index::GroupBy::Day))?;
    ensure!(c.total == entries / 4 + u64::from(entries % 4 > 2), "count by day is wrong: {}", c.total);
    add(
        report,
        label(&format!("count delivered by day ({})", c.total)),
        t.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );

    // Verify the whole chain.
    let t = Instant::now();
    let v = crate::audit::verify_store(&store);
    let secs = t.elapsed().as_secs_f64();
    ensure!(v.ok && v.entries == entries, "the bench log does not verify: {:?}", v.error);
    add(report, label("verify"), entries as f64 / secs, "entries/s");

    // The same, and the indexes checked against the entries (`audit verify --indexes`).
    let t = Instant::now();
    let v = crate::audit::verify_store_and_indexes(&store, &crate::audit::VerifyOptions::default());
    let secs = t.elapsed().as_secs_f64();
    let checked = v.indexes.as_ref().filter(|i| i.ok).map_or(0, |i| i.through);
    ensure!(v.ok && checked == entries, "the bench log's indexes do not verify: {:?}", v.error);
    add(report, label("verify --indexes"), entries as f64 / secs, "entries/s");
    Ok(())
}

/// [`run`] in a temporary directory, removed afterwards; nothing when `entries` is 0.
pub fn measure(report: &mut Report, entries: u64) -> Result<()> {
    if entries == 0 {
        return Ok(());
    }
    let dir = tempfile::tempdir().context("a temporary directory")?;
    run(report, entries, dir.path())
}

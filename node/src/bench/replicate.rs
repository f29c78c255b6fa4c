//! The product's dissemination figures on a [`BenchFederation`]: replication from one
//! origin to every other node, end-to-end latency at a steady offered rate, and the
//! catch-up of a node that was offline while the origin stored records, with that
//! node's resident memory and disk use once it holds them all.
//!
//! The origin and the peers run in this process; the catch-up node is restarted as a
//! child `tamga run` process so that its resident memory is its own. Its progress is
//! read from its `/metrics` (which counts the store's records on each scrape), polled at
//! an interval of at least [`POLL_COST_FACTOR`] times what the previous scrape took, so
//! the polling costs the node under test at most a small share of its time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::fed::{BenchFederation, Child};
use crate::client::Client;

/// Concurrent API clients feeding the origin during replication and catch-up.
pub const FEEDERS: usize = 4;
/// Records per API batch during replication and catch-up.
pub const BATCH: usize = 100;
/// Longest wait for every peer to hold every record.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// The steady offered rate: [`STEADY_PER_TICK`] records every [`STEADY_TICK`] (1,000/s).
pub const STEADY_TICK: Duration = Duration::from_millis(10);
/// Records per tick at the steady rate.
pub const STEADY_PER_TICK: usize = 10;
/// The catch-up node's `/metrics` is scraped no more often than this many times the
/// previous scrape's duration.
pub const POLL_COST_FACTOR: u32 = 5;
/// Shortest interval between two scrapes of the catch-up node.
pub const POLL_MIN: Duration = Duration::from_millis(50);

/// The body of the `i`-th bench record (a public RMS method description, which every
/// bench policy shares and accepts).
pub fn body(i: usize) -> serde_json::Value {
    json!({
        "category": "rms.method", "classification": "public", "created": "2026-11-28T09:00:00Z",
        "body": { "title": format!("Replicated method {i}"), "method_type": "selectivity", "summary": "x".repeat(300) },
    })
}

/// Ingest `n` records numbered from `first` at the origin, in batches of [`BATCH`] from
/// [`FEEDERS`] concurrent clients, as fast as the API acknowledges them.
pub async fn feed(client: &Arc<Client>, first: usize, n: usize) -> Result<()> {
    let batches: Vec<(usize, usize)> = (0..n).step_by(BATCH).map(|s| (first + s, BATCH.min(n - s))).collect();
    let mut tasks = Vec::new();
    for c in 0..FEEDERS {
        let client = client.clone();
        let mine: Vec<(usize, usize)> = batches.iter().copied().skip(c).step_by(FEEDERS).collect();
        tasks.push(tokio::spawn(async move {
            for (from, len) in mine {
                let doc = json!({ "records": (from..from + len).map(body).collect::<Vec<_>>() });
                client.post("/v1/records", &doc).await?;
            }
            Ok::<(), crate::client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await.context("a feeder task")??;
    }
    Ok(())
}

fn received(node: &crate::daemon::Node) -> u64 {
    node.shared().metrics.projections_received.get()
}

/// Wait until every running peer has received `want[i]` projections.
async fn wait_received(peers: &[&crate::daemon::Node], want: &[u64], what: &str) -> Result<()> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while peers.iter().zip(want).any(|(p, w)| received(p) < *w) {
        ensure!(Instant::now() < deadline, "{what} did not reach every peer within {DELIVERY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What [`measure`] found.
#[derive(Debug, Clone, Default)]
pub struct Replication {
    /// Records/s from the first ingest call until every peer held every record.
    pub records_per_sec: f64,
    /// Cores this process (every in-process node, and the client feeding the origin)
    /// used on average meanwhile.
    pub cores_used: f64,
    /// Ack → stored on every peer at the steady rate, p50/p95/p99 (ms); `None` if skipped.
    pub latency_ms: Option<[f64; 3]>,
    /// Records the origin disseminated (bulk + steady).
    pub disseminated: u64,
    /// The origin's store bytes per record it holds.
    pub origin_disk_per_record: f64,
    /// Resident memory of this process (every in-process node and the bench) at the end.
    pub process_rss: u64,
    /// The catch-up, if measured.
    pub catch_up: Option<CatchUp>,
}

/// How long the caught-up node, started again, is left idle before its memory is read
/// (it connects and exchanges summaries with its peers meanwhile).
pub const AT_REST: Duration = Duration::from_secs(2);

/// A node's catch-up after being offline.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// Records it missed.
    pub missed: u64,
    /// Records/s from its process start until it held all it missed.
    pub records_per_sec: f64,
    /// Cores its process used on average meanwhile.
    pub cores_used: f64,
    /// Cores the bench process (the peers answering its pulls) used on average meanwhile.
    pub peers_cores_used: f64,
    /// Seconds from its process start until its API answered (store opened, node started):
    /// the part of the catch-up time spent before any pull.
    pub startup_secs: f64,
    /// Records it held at the end.
    pub held: u64,
    /// Its resident memory at the end (its own process).
    pub rss_bytes: u64,
    /// Its resident memory once stopped, started again and left idle for [`AT_REST`]:
    /// what holding the records costs, without the pages a catch-up's writes touched.
    pub rss_at_rest_bytes: u64,
    /// Its store's bytes on disk per record held.
    pub disk_per_record: f64,
    /// The part of them in the values files (the rest is the sled tree).
    pub values_per_record: f64,
}

/// Measure on a fresh federation of `nodes` under `dir`: replication of `records`,
/// latency at the steady rate over `steady` records (0: skip), then catch-up of the last
/// member after `catch_up` records stored while it was offline (0: skip).
pub async fn measure(
    dir: &std::path::Path,
    nodes: usize,
    records: usize,
    steady: usize,
    catch_up: usize,
) -> Result<Replication> {
    let mut f = BenchFederation::start(dir, nodes).await?;
    let result = run(&mut f, records, steady, catch_up).await;
    f.fed.stop_all().await;
    result
}

async fn run(f: &mut BenchFederation, records: usize, steady: usize, catch_up: usize) -> Result<Replication> {
    let client = Arc::new(f.client(f.origin)?);
    let mut out = Replication::default();
    let mut next = 0usize;
    {
        let peers = f.peers();
        let base: Vec<u64> = peers.iter().map(|p| received(p)).collect();
        let start = super::fed::CpuMark::now();
        feed(&client, next, records).await?;
        let want: Vec<u64> = base.iter().map(|b| b + records as u64).collect();
        wait_received(&peers, &want, "replication").await?;
        out.records_per_sec = records as f64 / start.at.elapsed().as_secs_f64();
        out.cores_used = start.cores_used();
        next += records;
    }
    if steady > 0 {
        out.latency_ms = Some(latency(f, &client, next, steady).await?);
        next += steady;
    }
    out.disseminated = next as u64;
    let origin = f.fed.nodes.get(&f.origin).and_then(|n| n.node.as_ref()).context("the origin runs")?;
    out.origin_disk_per_record = origin.shared().store.size_on_disk() as f64 / next.max(1) as f64;
    out.process_rss = super::fed::rss_of(std::process::id());
    if catch_up > 0 {
        out.catch_up = Some(catch_up_of(f, &client, next, catch_up).await?);
    }
    Ok(out)
}

/// Latency at the steady rate: `n` records, [`STEADY_PER_TICK`] every [`STEADY_TICK`],
/// each from the origin's store time to the last peer's. Both are read from the nodes'
/// own clock at the same point of the write path (the write group's start, before its
/// flush), so the figure does not depend on when the client task, sharing the cores with
/// the nodes, gets to read the answer (a starved client can read it after every peer has
/// stored).
async fn latency(f: &BenchFederation, client: &Client, first: usize, n: usize) -> Result<[f64; 3]> {
    let peers = f.peers();
    let base: Vec<u64> = peers.iter().map(|p| received(p)).collect();
    let origin = f.fed.nodes.get(&f.origin).and_then(|n| n.node.as_ref()).context("the origin runs")?;
    let mut acks: Vec<tamga_protocol::RecordId> = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(STEADY_TICK);
    for k in (0..n).step_by(STEADY_PER_TICK) {
        tick.tick().await;
        let len = STEADY_PER_TICK.min(n - k);
        let doc = json!({ "records": (first + k..first + k + len).map(body).collect::<Vec<_>>() });
        let v = client.post("/v1/records", &doc).await?;
        for id in v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str()) {
            acks.push(id.parse().context("a record id")?);
        }
    }
    ensure!(acks.len() == n, "the origin acknowledged {} of {n} steady-rate records", acks.len());
    let want: Vec<u64> = base.iter().map(|b| b + n as u64).collect();
    wait_received(&peers, &want, "the steady-rate records").await?;
    let mut lat: Vec<f64> = Vec::with_capacity(acks.len());
    for id in &acks {
        let at =
            origin.shared().store.record(id)?.context("the origin lacks a record it acknowledged")?.stored_ms;
        let mut last = at;
        for p in &peers {
            let r = p.shared().store.record(id)?.context("a peer lacks a steady-rate record")?;
            last = last.max(r.stored_ms);
        }
        lat.push((last - at) as f64);
    }
    Ok(super::percentiles(&mut lat))
}

/// Take the last member offline, store `n` records at the origin (delivered to every
/// other peer), restart the member as a child process and time until it holds them.
async fn catch_up_of(
    f: &mut BenchFederation,
    client: &Arc<Client>,
    first: usize,
    n: usize,
) -> Result<CatchUp> {
    let laggard = f.laggard();
    ensure!(laggard != f.origin, "catch-up needs a peer");
    let held_before = {
        let node = f.fed.nodes.get(&laggard).and_then(|n| n.node.as_ref()).context("the laggard runs")?;
        node.shared().store.record_count()
    };
    if let Some(n) = f.fed.nodes.get_mut(&laggard) {
        n.stop().await;
    }
    {
        let peers = f.peers();
        let base: Vec<u64> = peers.iter().map(|p| received(p)).collect();
        feed(client, first, n).await?;
        let want: Vec<u64> = base.iter().map(|b| b + n as u64).collect();
        wait_received(&peers, &want, "the catch-up records").await?;
    }
    let node_client = f.client(laggard)?;
    let peers_cpu = super::fed::CpuMark::now();
    let start = peers_cpu.at;
    let mut child = Child::spawn(&f.config_path(laggard)?, node_client)?;
    child.wait_up().await?;
    let startup_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let scrape = Instant::now();
        let got = child.metric("tamga_projections_received_total").await;
        if got >= n as u64 {
            break;
        }
        ensure!(Instant::now() < deadline, "the restarted node held {got} of {n} after {DELIVERY_TIMEOUT:?}");
        tokio::time::sleep((scrape.elapsed() * POLL_COST_FACTOR).max(POLL_MIN)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (cores_used, peers_cores_used) = (child.cpu_secs() / secs, peers_cpu.cores_used());
    let rss_bytes = child.rss_bytes();
    let status = child.client.get("/v1/status", &[]).await?;
    let held = status["records"].as_u64().context("status has records")?;
    let disk = status["disk_bytes"].as_u64().context("status has disk_bytes")?;
    let values = status["disk_values_bytes"].as_u64().context("status has disk_values_bytes")?;
    child.stop().await?;
    let mut again = Child::spawn(&f.config_path(laggard)?, f.client(laggard)?)?;
    again.wait_up().await?;
    tokio::time::sleep(AT_REST).await;
    let rss_at_rest_bytes = again.rss_bytes();
    again.kill().await?;
    ensure!(
        held >= held_before + n as u64,
        "the restarted node holds {held} records, not the {} it should",
        held_before + n as u64
    );
    Ok(CatchUp {
        missed: n as u64,
        records_per_sec: n as f64 / secs,
        cores_used,
        peers_cores_used,
        startup_secs,
        held,
        rss_bytes,
        rss_at_rest_bytes,
        disk_per_record: disk as f64 / held.max(1) as f64,
        values_per_record: values as f64 / held.max(1) as f64,
    })
}

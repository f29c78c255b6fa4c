//! `tamga bench`: measured figures next to the limits that bound them, from one run on one
//! machine. Each product figure is measured on real nodes (real sled, real HTTP API,
//! durability on, real libp2p connections on loopback); each baseline is measured in the
//! same run on the same data, so that the ratios hold even on a busy machine whose
//! absolute figures do not.
//!
//! # What is measured
//!
//! - **Baselines** (the limits): ed25519 sign and verify, the projection's encode+hash,
//!   salt+sign and verify (alone and in batches, as receivers verify), raw sled insert
//!   with a flush per 100 records, and a bare libp2p request-response echo
//!   ([`echo`]) on the product's transport, of one projection and of a push batch.
//! - **The product**: ingest through the API (batches of 1 and 100), replication from one
//!   origin to the N-1 other nodes of a [`fed::BenchFederation`] until all hold all,
//!   latency origin store → stored on every peer at a steady 1,000 records/s, catch-up
//!   of a node restarted after missing N records, its resident memory and disk per
//!   record ([`replicate`]), and policy reload latency ([`crate::reload::latency`]).
//! - **The peer baseline**: the same signed projections over libp2p gossipsub to the same
//!   number of subscribers, which verify them ([`gossip`]), throughput and latency side by
//!   side with tamga's push.
//! - **Cores used** on average during ingest (batches of 100), replication and catch-up
//!   (the restarted node's process, and the bench process whose nodes answer its pulls),
//!   from the CPU times in /proc: a figure close to the cores there are is bound by the
//!   CPU, one well below them by waiting (on a disk sync, a reply, one busy thread).
//! - **Ratios**: each product figure over the limit that bounds it (below).
//! - **Growth** (`--sweep`): replication and catch-up over a grid of records × nodes.
//!
//! # The limits, as formulas
//!
//! With `c` cores, `N` nodes, `v` the projection batch-verify rate on one core
//! (`verify_many`, what receivers use), `e` the echo rate of a push batch of
//! [`ECHO_BATCH`] projections (messages/s), `s` the projection salt+sign rate on one core
//! and `i` the raw sled insert rate:
//!
//! - ingest ≤ min(i, s): every record is written (sled) and projected and signed once;
//! - replication ≤ min(v·c / (N-1), e·[`ECHO_BATCH`] / (N-1)): in one process all N-1
//!   receivers verify every projection on the same `c` cores, and the origin's link
//!   capacity is shared by N-1 peers;
//! - catch-up ≤ min(v·c, e·[`ECHO_BATCH`]): one receiver, one link.
//!
//! The echo sends the payload both ways where a push returns only receipts, so the
//! request-response limit is conservative.

pub mod echo;
pub mod fed;
pub mod gossip;
pub mod replicate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use serde_json::json;
use tamga_protocol::{
    Classification, Envelope, Projection, Record, RecordHeader, SaltKey, SaltedRecord, SigningKey, Value,
};

use crate::client::Client;
use crate::identity::Role;

/// How long each micro-measurement (sign, verify, hash) runs.
pub const MICRO_DURATION: Duration = Duration::from_millis(700);
/// Concurrent API clients for single-record ingest (group commit needs concurrency).
pub const CLIENTS_BATCH_1: usize = 64;
/// Concurrent API clients for batches of 100.
pub const CLIENTS_BATCH_100: usize = 8;
/// Projections per batch in the batch-verify figure (what a push of that size costs).
pub const VERIFY_BATCH: usize = 64;
/// Projections per message in the echo of a push batch.
pub const ECHO_BATCH: usize = 64;
/// Fewest records a run accepts (replication feeds batches of 100 from 4 clients).
pub const MIN_RECORDS: usize = 1_000;
/// The sweep's default record counts.
pub const SWEEP_RECORDS: [usize; 3] = [10_000, 100_000, 1_000_000];
/// The sweep's default node counts.
pub const SWEEP_NODES: [usize; 3] = [3, 6, 10];

/// What to run: `tamga bench`'s arguments, checked by [`Options::check`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per ingest, replication and catch-up measurement.
    pub records: usize,
    /// Nodes of the replication federation (2 to [`fed::MAX_NODES`]).
    pub nodes: usize,
    /// An extra echo payload in bytes (the limits use echoes of projection size).
    pub payload: Option<usize>,
    /// Also run the growth sweep.
    pub sweep: bool,
    /// The sweep's record counts.
    pub sweep_records: Vec<usize>,
    /// The sweep's node counts.
    pub sweep_nodes: Vec<usize>,
}

impl Options {
    /// Refuse what cannot run, with one clear line, before anything is measured.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.records >= MIN_RECORDS,
            "--records must be at least {MIN_RECORDS}, not {}",
            self.records
        );
        let nodes_ok = |n: usize| (2..=fed::MAX_NODES).contains(&n);
        ensure!(nodes_ok(self.nodes), "--nodes must be from 2 to {}, not {}", fed::MAX_NODES, self.nodes);
        if let Some(p) = self.payload {
            ensure!(
                (1..=echo::MAX_ECHO_BYTES).contains(&p),
                "--payload must be from 1 to {} bytes, not {p}",
                echo::MAX_ECHO_BYTES
            );
        }
        if self.sweep {
            ensure!(
                !self.sweep_records.is_empty() && !self.sweep_nodes.is_empty(),
                "the sweep lists are empty"
            );
            for r in &self.sweep_records {
                ensure!(*r >= MIN_RECORDS, "--sweep-records values must be at least {MIN_RECORDS}, not {r}");
            }
            for n in &self.sweep_nodes {
                ensure!(nodes_ok(*n), "--sweep-nodes values must be from 2 to {}, not {n}", fed::MAX_NODES);
            }
        }
        Ok(())
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
}

/// One point of the growth sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Nodes of the federation.
    pub nodes: usize,
    /// Records replicated, and then missed by the catch-up node.
    pub records: usize,
    /// Replication 1 origin → nodes-1 peers, records/s.
    pub replication_records_per_sec: f64,
    /// Catch-up of the restarted node, records/s.
    pub catch_up_records_per_sec: f64,
    /// Records the catch-up node held at the end.
    pub held: u64,
    /// The catch-up node's resident memory at the end, bytes.
    pub rss_bytes: u64,
    /// The catch-up node's resident memory started again and idle, bytes.
    pub rss_at_rest_bytes: u64,
    /// The catch-up node's store bytes per record held.
    pub disk_bytes_per_record: f64,
    /// The origin's store bytes per record.
    pub origin_disk_bytes_per_record: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records per ingest measurement.
    pub records: usize,
    /// Nodes of the replication federation.
    pub nodes: usize,
    /// CPU cores seen.
    pub cores: usize,
    /// Memory in bytes, from /proc/meminfo.
    pub memory_bytes: u64,
    /// Bytes of one projection as it crosses the wire (a push of one).
    pub projection_bytes: usize,
    /// The `--payload` echo's bytes (the projection's size when not given).
    pub payload_bytes: usize,
    /// The figures.
    pub figures: Vec<Figure>,
    /// How each limit and ratio was computed.
    pub notes: Vec<String>,
    /// The growth sweep (empty unless `--sweep`).
    pub sweep: Vec<SweepPoint>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push(Figure { name: name.to_owned(), value, unit });
    }

    /// The value of the figure called `name` (0 if absent).
    pub fn get(&self, name: &str) -> f64 {
        self.figures.iter().find(|f| f.name == name).map_or(0.0, |f| f.value)
    }

    fn ratio(&mut self, name: &str, num: &str, den: &str) {
        let r = self.get(num) / self.get(den).max(f64::MIN_POSITIVE);
        self.add(name, r, "ratio");
    }

    /// A plain table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "tamga bench: {} records, {} nodes, {} cores, {:.1} GiB, projection {} bytes\n\
             {:<60} {:>14}  unit\n",
            self.records,
            self.nodes,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.projection_bytes,
            "figure",
            "value"
        );
        for f in &self.figures {
            let prec = if f.unit == "ratio" { 3 } else { 1 };
            out.push_str(&format!("{:<60} {:>14.prec$}  {}\n", f.name, f.value, f.unit));
        }
        if !self.sweep.is_empty() {
            out.push_str(&format!(
                "\ngrowth sweep\n{:>5} {:>9} {:>14} {:>14} {:>10} {:>9} {:>9} {:>13} {:>13}\n",
                "nodes",
                "records",
                "repl rec/s",
                "catch-up rec/s",
                "held",
                "RSS MiB",
                "rest MiB",
                "disk B/rec",
                "origin B/rec"
            ));
            for p in &self.sweep {
                out.push_str(&format!(
                    "{:>5} {:>9} {:>14.1} {:>14.1} {:>10} {:>9.1} {:>9.1} {:>13.1} {:>13.1}\n",
                    p.nodes,
                    p.records,
                    p.replication_records_per_sec,
                    p.catch_up_records_per_sec,
                    p.held,
                    p.rss_bytes as f64 / (1u64 << 20) as f64,
                    p.rss_at_rest_bytes as f64 / (1u64 << 20) as f64,
                    p.disk_bytes_per_record,
                    p.origin_disk_bytes_per_record
                ));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// p50, p95 and p99 of `v` (sorted in place); zeros when empty.
pub fn percentiles(v: &mut [f64]) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let pct = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    [pct(0.5), pct(0.95), pct(0.99)]
}

fn per_second(duration: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The `i`-th bench record, with the fields [`replicate::body`] sends through the API.
fn sample_record(i: usize) -> Record {
    let mut body = std::collections::BTreeMap::new();
    body.insert("title".to_owned(), Value::Text(format!("Replicated method {i}")));
    body.insert("method_type".to_owned(), Value::Text("selectivity".into()));
    body.insert("summary".to_owned(), Value::Text("x".repeat(300)));
    Record {
        header: RecordHeader {
            category: "rms.method".parse().expect("a valid category"),
            classification: Classification::Public,
            origin: "RU".parse().expect("a valid member"),
            created_ms: 1_780_000_000_000 + i as i64,
            supersedes: None,
            expires_ms: None,
        },
        body,
    }
}

fn envelope(seq: u64, audience: usize) -> Envelope {
    Envelope {
        kind: tamga_protocol::EntryKind::Share,
        agreement: "sco-rms-2013".parse().expect("a valid agreement"),
        audience: fed::MEMBERS
            .iter()
            .skip(1)
            .take(audience.max(1))
            .map(|c| c.parse().expect("valid member codes"))
            .collect(),
        seq,
        expires_ms: 1_900_000_000_000,
    }
}

fn project(i: usize, seq: u64, audience: usize, key: &SigningKey, salt_key: &SaltKey) -> Result<Projection> {
    SaltedRecord::new(sample_record(i), salt_key)
        .project(|n| n == "author_name", envelope(seq, audience), key)
        .map_err(|e| anyhow::anyhow!("projecting a bench record: {e}"))
}

/// Bytes of `p` as one push on the wire.
fn wire_bytes(p: &Projection) -> Result<usize> {
    let push = tamga_protocol::Request::Push(tamga_protocol::Push { projections: vec![p.clone()] });
    Ok(tamga_protocol::codec::encode_request(&push).context("encodes a push")?.len())
}

fn micro(report: &mut Report) -> Result<()> {
    let key = SigningKey::from_bytes(&[7; 32]);
    let vk = key.verifying_key();
    let salt_key = SaltKey::from_bytes([3; 32]);
    let audience = report.nodes - 1;
    let p = project(1, 1, audience, &key, &salt_key)?;
    report.projection_bytes = wire_bytes(&p)?;
    report.add("projection on the wire (push of one)", report.projection_bytes as f64, "bytes");
    let msg = [0u8; 96];
    report.add(
        "baseline: ed25519 sign (1 core)",
        per_second(MICRO_DURATION, || {
            std::hint::black_box(ed25519_dalek::Signer::sign(&key, &msg));
        }),
        "ops/s",
    );
    let sig = ed25519_dalek::Signer::sign(&key, &msg);
    report.add(
        "baseline: ed25519 verify (1 core)",
        per_second(MICRO_DURATION, || {
            let _ = std::hint::black_box(vk.verify_strict(&msg, &sig));
        }),
        "ops/s",
    );
    report.add(
        "baseline: projection encode+hash",
        per_second(MICRO_DURATION, || {
            let _ = std::hint::black_box(p.record_id());
        }),
        "ops/s",
    );
    report.add(
        "projection salt+sign (1 core)",
        per_second(MICRO_DURATION, || {
            let _ = std::hint::black_box(project(2, 1, audience, &key, &salt_key));
        }),
        "ops/s",
    );
    report.add(
        "projection verify (1 core)",
        per_second(MICRO_DURATION, || {
            let _ = std::hint::black_box(p.verify(&vk));
        }),
        "ops/s",
    );
    let batch: Vec<Projection> = (0..VERIFY_BATCH)
        .map(|i| project(10 + i, 1 + i as u64, audience, &key, &salt_key))
        .collect::<Result<_>>()?;
    let items: Vec<(&Projection, &tamga_protocol::VerifyingKey)> = batch.iter().map(|p| (p, &vk)).collect();
    ensure!(tamga_protocol::verify_many(&items).iter().all(|r| r.is_ok()), "the batch verifies");
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < MICRO_DURATION {
        std::hint::black_box(tamga_protocol::verify_many(&items));
        n += VERIFY_BATCH;
    }
    report.add(
        "baseline: projection batch verify of 64 (1 core)",
        n as f64 / start.elapsed().as_secs_f64(),
        "projections/s",
    );
    Ok(())
}

async fn raw_sled(report: &mut Report, records: usize, dir: &std::path::Path) -> Result<()> {
    let store = crate::store::Store::open(&dir.join("raw"))?;
    let value = tamga_protocol::codec::encode_stored(&sample_record(0)).context("encodes")?;
    let start = Instant::now();
    let mut i = 0u64;
    while (i as usize) < records {
        let batch: Vec<(Vec<u8>, Vec<u8>)> =
            (0..100).map(|j| ((i + j).to_be_bytes().to_vec(), value.clone())).collect();
        store.raw_insert(batch)?;
        store.flush().await?;
        i += 100;
    }
    report.add("baseline: sled insert, flush per 100", i as f64 / start.elapsed().as_secs_f64(), "records/s");
    Ok(())
}

async fn ingest(report: &mut Report, records: usize, dir: &std::path::Path) -> Result<()> {
    let fed = dir.join("federation");
    std::fs::create_dir_all(&fed)?;
    crate::example::write_to(&fed)?;
    let data = dir.join("node");
    crate::cli::create_node(&crate::cli::InitArgs {
        member: "RU".into(),
        data_dir: data.clone(),
        listen: "/ip4/127.0.0.1/tcp/0".into(),
        api: "127.0.0.1:0".into(),
        federation: Some(fed),
        demo_identity: true,
        json: true,
    })?;
    let config =
        tamga_config::NodeConfig::load(&data.join("node.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokens = crate::identity::Tokens::load(&config.tokens)?;
    let node = crate::daemon::Node::start(config).await?;
    let client =
        Arc::new(Client::with_token(format!("http://{}", node.api_addr()), tokens.token(Role::Operator)));
    let body = |i: usize| {
        json!({
            "category": "rms.method",
            "classification": "public",
            "created": "2026-11-28T09:00:00Z",
            "body": { "title": format!("Selectivity method {i}"), "method_type": "selectivity", "summary": "x".repeat(300) },
        })
    };
    let mut next = 0usize;
    for (batch, clients, name) in [
        (1usize, CLIENTS_BATCH_1, "ingest via API, batch 1"),
        (100, CLIENTS_BATCH_100, "ingest via API, batch 100"),
    ] {
        let total = if batch == 1 { records.min(20_000) } else { records };
        let per_client = total / clients / batch;
        let start = fed::CpuMark::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = client.clone();
            let base = next + c * per_client * batch;
            tasks.push(tokio::spawn(async move {
                for k in 0..per_client {
                    let from = base + k * batch;
                    let doc = if batch == 1 {
                        body(from)
                    } else {
                        json!({ "records": (from..from + batch).map(body).collect::<Vec<_>>() })
                    };
                    client.post("/v1/records", &doc).await?;
                }
                Ok::<(), crate::client::ClientError>(())
            }));
        }
        for t in tasks {
            t.await.context("client task")??;
        }
        let done = per_client * batch * clients;
        next += done;
        report.add(name, done as f64 / start.at.elapsed().as_secs_f64(), "records/s");
        if batch == 100 {
            report.add("ingest, batch 100: cores used (node and clients)", start.cores_used(), "cores");
        }
    }
    let disk = node.shared().store.size_on_disk();
    report.add("disk bytes per stored record", disk as f64 / next.max(1) as f64, "bytes");
    node.shutdown().await;
    Ok(())
}

async fn echo_baselines(report: &mut Report, payload: Option<usize>) -> Result<()> {
    let size = report.projection_bytes;
    let one = echo::measure(size).await?;
    report.add("baseline: libp2p req-resp echo, 1 projection", one.messages_per_sec, "messages/s");
    report.add("baseline: libp2p req-resp echo, 1 projection (MB/s)", one.mb_per_sec, "MB/s");
    let batch = echo::measure(size * ECHO_BATCH).await?;
    report.add("baseline: libp2p req-resp echo, 64 projections", batch.messages_per_sec, "messages/s");
    report.add("baseline: libp2p req-resp echo, 64 projections (MB/s)", batch.mb_per_sec, "MB/s");
    report.add(
        "baseline: libp2p req-resp echo, 64 projections (projections/s)",
        batch.messages_per_sec * ECHO_BATCH as f64,
        "projections/s",
    );
    if let Some(p) = payload {
        let f = echo::measure(p).await?;
        report.add("baseline: libp2p req-resp echo, --payload", f.messages_per_sec, "messages/s");
        report.add("baseline: libp2p req-resp echo, --payload (MB/s)", f.mb_per_sec, "MB/s");
    }
    Ok(())
}

async fn gossip_baseline(report: &Report, records: usize, steady: usize) -> Result<gossip::GossipFigures> {
    let key = SigningKey::from_bytes(&[7; 32]);
    let salt_key = SaltKey::from_bytes([3; 32]);
    let audience = report.nodes - 1;
    let encode = |i: usize| -> Result<Vec<u8>> {
        let p = project(1_000_000_000 + i, i as u64 + 1, audience, &key, &salt_key)?;
        tamga_protocol::codec::encode_stored(&p).context("encodes a projection")
    };
    let bulk: Vec<Vec<u8>> = (0..records).map(encode).collect::<Result<_>>()?;
    let steady: Vec<Vec<u8>> = (records..records + steady).map(encode).collect::<Result<_>>()?;
    gossip::measure(
        audience,
        key.verifying_key(),
        bulk,
        steady,
        replicate::STEADY_PER_TICK,
        replicate::STEADY_TICK,
    )
    .await
}

/// tamga's push and the gossipsub baseline side by side, then the catch-up node.
fn add_dissemination(
    report: &mut Report,
    r: &replicate::Replication,
    g: &gossip::GossipFigures,
) -> Result<()> {
    report.add("replication 1 origin -> N-1 peers", r.records_per_sec, "records/s");
    report.add("replication: cores used (every node, one process)", r.cores_used, "cores");
    report.add("gossipsub 1 -> N-1 subscribers (batch verify, no store)", g.records_per_sec, "records/s");
    let l = r.latency_ms.context("the latency was measured")?;
    for ((q, t), p) in ["p50", "p95", "p99"].iter().zip(l).zip(g.latency_ms) {
        report.add(&format!("latency ack -> stored on all peers {q} @1000/s"), t, "ms");
        report.add(&format!("gossipsub latency publish -> all verified {q} @1000/s"), p, "ms");
    }
    report.add("origin disk bytes per record", r.origin_disk_per_record, "bytes");
    report.add("RSS of the bench process (all in-process nodes)", mib(r.process_rss), "MiB");
    let c = r.catch_up.as_ref().context("the catch-up was measured")?;
    report.add("catch-up of a restarted node", c.records_per_sec, "records/s");
    report.add("catch-up node: cores used (own process)", c.cores_used, "cores");
    report.add("catch-up: cores used by the peers answering (bench process)", c.peers_cores_used, "cores");
    report.add("catch-up node: start-up until its API answers", c.startup_secs * 1000.0, "ms");
    report.add("catch-up node: records held", c.held as f64, "records");
    report.add("catch-up node: RSS (own process)", mib(c.rss_bytes), "MiB");
    report.add("catch-up node: RSS started again, at rest", mib(c.rss_at_rest_bytes), "MiB");
    report.add("catch-up node: disk bytes per record held", c.disk_per_record, "bytes");
    report.add("catch-up node: of them in the values files", c.values_per_record, "bytes");
    Ok(())
}

/// The limits and ratios of the module docs.
fn ratios(report: &mut Report) {
    let cores = report.cores as f64;
    let peers = (report.nodes - 1) as f64;
    let ingest_limit =
        report.get("baseline: sled insert, flush per 100").min(report.get("projection salt+sign (1 core)"));
    report.add("limit: ingest = min(sled insert, salt+sign 1 core)", ingest_limit, "records/s");
    let verify = report.get("baseline: projection batch verify of 64 (1 core)");
    let echo = report.get("baseline: libp2p req-resp echo, 64 projections (projections/s)");
    report.add("limit: replication, verify-bound = v*c/(N-1)", verify * cores / peers, "records/s");
    report.add("limit: replication, req-resp-bound = e64*64/(N-1)", echo / peers, "records/s");
    let repl_limit = (verify * cores).min(echo) / peers;
    report.add("limit: replication = min of both", repl_limit, "records/s");
    report.add("limit: catch-up = min(v*c, e64*64)", (verify * cores).min(echo), "records/s");
    report.ratio(
        "ratio: ingest batch 100 / ingest limit",
        "ingest via API, batch 100",
        "limit: ingest = min(sled insert, salt+sign 1 core)",
    );
    report.ratio(
        "ratio: ingest batch 100 / sled insert",
        "ingest via API, batch 100",
        "baseline: sled insert, flush per 100",
    );
    report.ratio(
        "ratio: replication / verify-bound limit (target >= 0.5)",
        "replication 1 origin -> N-1 peers",
        "limit: replication, verify-bound = v*c/(N-1)",
    );
    report.ratio(
        "ratio: replication / replication limit",
        "replication 1 origin -> N-1 peers",
        "limit: replication = min of both",
    );
    report.ratio(
        "ratio: replication / gossipsub",
        "replication 1 origin -> N-1 peers",
        "gossipsub 1 -> N-1 subscribers (batch verify, no store)",
    );
    report.ratio(
        "ratio: latency p99 / gossipsub p99",
        "latency ack -> stored on all peers p99 @1000/s",
        "gossipsub latency publish -> all verified p99 @1000/s",
    );
    report.ratio(
        "ratio: catch-up / catch-up limit",
        "catch-up of a restarted node",
        "limit: catch-up = min(v*c, e64*64)",
    );
    report.ratio(
        "ratio: disk per record held / projection bytes (target <= 3)",
        "catch-up node: disk bytes per record held",
        "projection on the wire (push of one)",
    );
    report.notes.extend([
        format!("c = {} cores, N = {} nodes; v = projection batch verify of 64 on 1 core; e64 = echo messages/s of 64 projections", report.cores, report.nodes),
        "replication: all N-1 receivers run in this process and verify every projection on the same c cores, so the verify-bound limit is v*c/(N-1); the origin's links share the request-response capacity, e64*64/(N-1)".into(),
        "the echo returns the payload (a push returns only receipts), so the request-response limits are conservative".into(),
        format!("catch-up: from the restarted node's process start (open, connect, anti-entropy round) until it held every record it missed; it runs as its own process, whose RSS is the per-node figure, read at the end of the catch-up and again once it is stopped (SIGTERM), started again and idle for {} s (at rest)", replicate::AT_REST.as_secs()),
        "gossipsub: pre-signed projections, no libp2p message signing, subscribers decode and batch-verify each projection, nothing stored, no receipts, no policy".into(),
        "latency (tamga): from the origin's store time to the last peer's, each taken as its write group starts (the origin acknowledges after that group's flush), read from the nodes, not the client; (gossipsub): from publish to verified at the last subscriber".into(),
    ]);
}

async fn sweep(report: &mut Report, opts: &Options, dir: &std::path::Path) -> Result<()> {
    for &nodes in &opts.sweep_nodes {
        for &records in &opts.sweep_records {
            let d = dir.join(format!("sweep-{nodes}-{records}"));
            let r = replicate::measure(&d, nodes, records, 0, records).await?;
            let c = r.catch_up.context("the sweep measures catch-up")?;
            report.sweep.push(SweepPoint {
                nodes,
                records,
                replication_records_per_sec: r.records_per_sec,
                catch_up_records_per_sec: c.records_per_sec,
                held: c.held,
                rss_bytes: c.rss_bytes,
                rss_at_rest_bytes: c.rss_at_rest_bytes,
                disk_bytes_per_record: c.disk_per_record,
                origin_disk_bytes_per_record: r.origin_disk_per_record,
            });
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    Ok(())
}

/// Run every measurement.
pub async fn run(opts: &Options) -> Result<Report> {
    opts.check()?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let records = opts.records;
    let mut report = Report {
        records,
        nodes: opts.nodes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: memory_bytes(),
        projection_bytes: 0,
        payload_bytes: 0,
        figures: Vec::new(),
        notes: Vec::new(),
        sweep: Vec::new(),
    };
    micro(&mut report)?;
    report.payload_bytes = opts.payload.unwrap_or(report.projection_bytes);
    echo_baselines(&mut report, opts.payload).await?;
    raw_sled(&mut report, records, dir.path()).await?;
    ingest(&mut report, records, dir.path()).await?;
    let steady = records.clamp(1000, 5000);
    let r = replicate::measure(&dir.path().join("replication"), opts.nodes, records, steady, records).await?;
    let g = gossip_baseline(&report, records, steady).await?;
    add_dissemination(&mut report, &r, &g)?;
    for (name, value, unit) in crate::reload::latency::measure(dir.path()).await? {
        report.add(name, value, unit);
    }
    ratios(&mut report);
    if opts.sweep {
        sweep(&mut report, opts, dir.path()).await?;
    }
    Ok(report)
}

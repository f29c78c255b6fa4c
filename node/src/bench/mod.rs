//! `tamga bench`: measured figures next to the limits that bound them, from one run on one
//! machine. Each product figure is measured on a real node (real sled, real HTTP API,
//! durability on) started in-process on loopback with the example federation; each
//! baseline is measured in the same run on the same data.
//!
//! Figures so far: ed25519 sign and verify (one core), projection encode+hash, raw sled
//! insert with a flush per batch of 100 (the bound of durable ingest), ingest through
//! the API with batches of 1 and of 100, replication from one origin to every other node
//! of a local federation, end-to-end latency at a steady 1,000 records/s, and policy
//! reload latency (file change to new policy in force; [`crate::reload::latency`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tamga_protocol::{
    Classification, Envelope, Record, RecordHeader, SaltKey, SaltedRecord, SigningKey, Value,
};

use crate::client::Client;
use crate::identity::Role;

/// How long each micro-measurement (sign, verify, hash) runs.
pub const MICRO_DURATION: Duration = Duration::from_millis(700);
/// Concurrent API clients for single-record ingest (group commit needs concurrency).
pub const CLIENTS_BATCH_1: usize = 64;
/// Concurrent API clients for batches of 100.
pub const CLIENTS_BATCH_100: usize = 8;

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

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records per ingest measurement.
    pub records: usize,
    /// CPU cores seen.
    pub cores: usize,
    /// Memory in bytes, from /proc/meminfo.
    pub memory_bytes: u64,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push(Figure { name: name.to_owned(), value, unit });
    }

    fn get(&self, name: &str) -> f64 {
        self.figures.iter().find(|f| f.name == name).map_or(0.0, |f| f.value)
    }

    /// A plain table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "tamga bench: {} records, {} cores, {:.1} GiB\n{:<44} {:>14}  unit\n",
            self.records,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            "figure",
            "value"
        );
        for f in &self.figures {
            out.push_str(&format!("{:<44} {:>14.1}  {}\n", f.name, f.value, f.unit));
        }
        out
    }
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

fn sample_record(i: usize) -> Record {
    let mut body = std::collections::BTreeMap::new();
    body.insert("title".to_owned(), Value::Text(format!("Selectivity method {i}")));
    body.insert("summary".to_owned(), Value::Text("x".repeat(300)));
    body.insert("author_name".to_owned(), Value::Text("A. Analyst".into()));
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

fn micro(report: &mut Report) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let vk = key.verifying_key();
    let salt_key = SaltKey::from_bytes([3; 32]);
    let salted = SaltedRecord::new(sample_record(1), &salt_key);
    let envelope = Envelope {
        kind: tamga_protocol::EntryKind::Share,
        agreement: "sco-rms-2013".parse().expect("a valid agreement"),
        audience: ["CN", "KG", "KZ", "TJ", "UZ"].iter().map(|c| c.parse().expect("valid")).collect(),
        seq: 1,
        expires_ms: 1_900_000_000_000,
    };
    let p = salted.project(|n| n == "author_name", envelope.clone(), &key).expect("public projects");
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
            let s = SaltedRecord::new(sample_record(2), &salt_key);
            let _ = std::hint::black_box(s.project(|n| n == "author_name", envelope.clone(), &key));
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
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = client.clone();
            let base = next + c * per_client * batch;
            let bodies: Vec<Vec<serde_json::Value>> =
                (0..per_client).map(|k| (0..batch).map(|j| body(base + k * batch + j)).collect()).collect();
            tasks.push(tokio::spawn(async move {
                for b in bodies {
                    let doc = if b.len() == 1 { b[0].clone() } else { json!({ "records": b }) };
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
        report.add(name, done as f64 / start.elapsed().as_secs_f64(), "records/s");
    }
    let disk = node.shared().store.size_on_disk();
    report.add("disk bytes per stored record", disk as f64 / next.max(1) as f64, "bytes");
    node.shutdown().await;
    Ok(())
}

/// The local federation for replication measurements: `nodes` members of the example.
async fn federation(dir: &std::path::Path, nodes: usize) -> Result<crate::localfed::LocalFederation> {
    let members: Vec<tamga_protocol::MemberCode> = crate::localfed::EXAMPLE_MEMBERS
        .iter()
        .map(|m| m.parse().expect("example members are valid codes"))
        .filter(|m: &tamga_protocol::MemberCode| m.as_str() != "XS")
        .take(nodes.clamp(2, 6))
        .collect();
    let mut f = crate::localfed::LocalFederation::create(&dir.join("fed"), &members, 2)?;
    f.start_all().await?;
    f.wait_connected(Duration::from_secs(60)).await?;
    Ok(f)
}

fn received(node: &crate::daemon::Node) -> u64 {
    node.shared().metrics.projections_received.get()
}

/// Replication from RU to every other member (public RMS method descriptions, which every
/// example policy shares and accepts), and end-to-end latency at a steady offered rate.
async fn replication(report: &mut Report, records: usize, nodes: usize, dir: &std::path::Path) -> Result<()> {
    let mut f = federation(dir, nodes).await?;
    let ru: tamga_protocol::MemberCode = "RU".parse().expect("valid");
    let origin = f.nodes.get(&ru).and_then(|n| n.node.as_ref()).context("RU runs")?;
    let token = f.nodes[&ru].tokens.token(Role::Operator).to_owned();
    let client = Arc::new(Client::with_token(format!("http://{}", origin.api_addr()), token));
    let peers: Vec<&crate::daemon::Node> =
        f.nodes.iter().filter(|(m, _)| **m != ru).filter_map(|(_, n)| n.node.as_ref()).collect();
    let body = |i: usize| {
        json!({
            "category": "rms.method", "classification": "public", "created": "2026-11-28T09:00:00Z",
            "body": { "title": format!("Replicated method {i}"), "method_type": "selectivity", "summary": "x".repeat(300) },
        })
    };
    // Throughput: ingest as fast as the API takes it, until every peer holds every record.
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = records / 4 / 100;
    for c in 0..4 {
        let client = client.clone();
        let docs: Vec<serde_json::Value> =
            (0..per).map(|k| json!({ "records": (0..100).map(|j| body(c * 10_000_000 + k * 100 + j)).collect::<Vec<_>>() })).collect();
        tasks.push(tokio::spawn(async move {
            for d in docs {
                client.post("/v1/records", &d).await?;
            }
            Ok::<(), crate::client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await.context("client task")??;
    }
    let total = (per * 400) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while peers.iter().any(|p| received(p) < total) {
        anyhow::ensure!(Instant::now() < deadline, "replication did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    report.add(&format!("replication 1 origin -> {} peers", peers.len()), total as f64 / secs, "records/s");

    // Latency at a steady 1,000 records/s: 10 records every 10 ms.
    let n = records.clamp(1000, 5000) / 10;
    let mut acks: Vec<(String, i64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for k in 0..n {
        tick.tick().await;
        let v = client
            .post(
                "/v1/records",
                &json!({ "records": (0..10).map(|j| body(900_000_000 + k * 10 + j)).collect::<Vec<_>>() }),
            )
            .await?;
        let at = crate::writer::now_ms();
        for id in v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str()) {
            acks.push((id.to_owned(), at));
        }
    }
    let want = total + acks.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while peers.iter().any(|p| received(p) < want) {
        anyhow::ensure!(Instant::now() < deadline, "the steady-rate records did not all arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<f64> = Vec::with_capacity(acks.len());
    for (id, at) in &acks {
        let id: tamga_protocol::RecordId = id.parse().context("an id")?;
        let mut last = *at;
        for p in &peers {
            if let Some(r) = p.shared().store.record(&id)? {
                last = last.max(r.stored_ms);
            }
        }
        lat.push((last - at) as f64);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0.0);
    report.add("latency ack -> all peers p50 @1000/s", pct(0.5), "ms");
    report.add("latency ack -> all peers p95 @1000/s", pct(0.95), "ms");
    report.add("latency ack -> all peers p99 @1000/s", pct(0.99), "ms");
    f.stop_all().await;
    Ok(())
}

/// Run every measurement.
pub async fn run(records: usize, nodes: usize) -> Result<Report> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let mut report = Report {
        records,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: memory_bytes(),
        figures: Vec::new(),
    };
    micro(&mut report);
    raw_sled(&mut report, records, dir.path()).await?;
    ingest(&mut report, records, dir.path()).await?;
    replication(&mut report, records, nodes, dir.path()).await?;
    for (name, value, unit) in crate::reload::latency::measure(dir.path()).await? {
        report.add(name, value, unit);
    }
    let ratio =
        report.get("ingest via API, batch 100") / report.get("baseline: sled insert, flush per 100").max(1.0);
    report.add("ratio: ingest batch 100 / sled insert", ratio, "ratio");
    Ok(report)
}

//! Acknowledged means durable (invariant 7): a real `tamga run` child process ingests
//! through its API, is killed with SIGKILL right after acknowledging, and on restart every
//! acknowledged record is there and the audit log verifies.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};

use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tamga_node::writer::now_ms;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    l.local_addr().expect("addr").port()
}

fn spawn(config: &Path) -> Child {
    tamga()
        .args(["run", "--config"])
        .arg(config)
        .env("TAMGA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tamga run starts")
}

async fn wait_ready(base: &str, token: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/v1/status")).bearer_auth(token).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node at {base} did not come up");
}

fn record(i: usize) -> serde_json::Value {
    json!({
        "category": "rms.method",
        "classification": "public",
        // The hour before this one: the same record for every call within an hour.
        "created": tamga_node::audit::rfc3339(now_ms() - now_ms() % 3_600_000 - 3_600_000),
        "body": body(i),
    })
}

/// A valid rms.method body, built from the example catalog.
fn body(i: usize) -> serde_json::Value {
    static CATALOG: std::sync::OnceLock<tamga_config::Catalog> = std::sync::OnceLock::new();
    let cat = CATALOG.get_or_init(catalog);
    let c = cat.category(&"rms.method".parse().expect("valid")).expect("exists");
    build(c, i)
}

fn catalog() -> tamga_config::Catalog {
    tamga_config::Federation::load_files(
        &example().join("roster.toml"),
        &example().join("catalog.toml"),
        &example().join("agreements"),
        &example().join("policies/RU.toml"),
        "RU".parse().expect("valid"),
    )
    .expect("loads")
    .catalog
}

fn build(c: &tamga_config::Category, i: usize) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, f) in &c.fields {
        use tamga_config::FieldType::*;
        let v = match f.ty {
            Text => json!(format!("{name} {i}")),
            Integer => json!(i),
            Decimal => json!("1.5"),
            Bool => json!(true),
            Date => json!("2026-01-01"),
            Timestamp => json!("2026-01-01T00:00:00Z"),
            Enum => json!(f.values.first().cloned().unwrap_or_default()),
            TextList => json!([format!("t{i}")]),
        };
        m.insert(name.clone(), v);
    }
    serde_json::Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledgement_loses_nothing() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = tamga()
        .args(["init", "--member", "RU", "--demo-identity", "--json", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--federation")
        .arg(example())
        .output()
        .expect("init runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("node.toml");
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokens.json")).expect("tokens"))
            .expect("json");
    let token = tokens["operator"].as_str().expect("token").to_owned();
    let base = format!("http://127.0.0.1:{port}");

    let mut child = spawn(&config);
    wait_ready(&base, &token).await;

    // Four clients ingest batches of 20 as fast as they can; every acknowledged id is kept.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, base, token, acked) = (http.clone(), base.clone(), token.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for b in 0.. {
                let recs: Vec<_> = (0..20).map(|j| record(c * 1_000_000 + b * 20 + j)).collect();
                let resp = http
                    .post(format!("{base}/v1/records"))
                    .bearer_auth(&token)
                    .json(&json!({ "records": recs }))
                    .send()
                    .await;
                let Ok(resp) = resp else { break };
                let Ok(v) = resp.json::<serde_json::Value>().await else { break };
                let ids: Vec<String> = v["ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
                acked.lock().expect("lock").extend(ids);
            }
        }));
    }
    // Kill as soon as a good number of acknowledgements are in, while writes are in flight.
    for _ in 0..600 {
        if acked.lock().expect("lock").len() >= 2_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 100, "only {} acknowledged before the kill", acked.len());

    let mut child = spawn(&config);
    wait_ready(&base, &token).await;
    let list: serde_json::Value = http
        .get(format!("{base}/v1/records"))
        .query(&[("limit", "10000")])
        .bearer_auth(&token)
        .send()
        .await
        .expect("lists")
        .json()
        .await
        .expect("json");
    let held: std::collections::HashSet<&str> =
        list["records"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !held.contains(id.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged records lost", lost.len(), acked.len());
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let out = tamga()
        .args(["audit", "verify", "--offline", "--config"])
        .arg(&config)
        .output()
        .expect("verify runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The audit log lost nothing the record path acknowledged: every acknowledged record
    // has its `ingested` entry (written in the same atomic batch as the record).
    let out = tamga()
        .args([
            "audit",
            "query",
            "--offline",
            "--action",
            "ingested",
            "--json",
            "--limit",
            "100000",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("query runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audited: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["entry"]["record"].as_str().map(String::from))
        .collect();
    let unaudited = acked.iter().filter(|id| !audited.contains(id.as_str())).count();
    assert_eq!(unaudited, 0, "{unaudited} of {} acknowledged records have no ingested entry", acked.len());
}

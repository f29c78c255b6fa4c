//! A backup taken while records are ingested restores to a node holding a
//! prefix-consistent set of them, with a verifying audit log.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tamga_node::identity::Role;
use tamga_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_a_consistent_prefix() {
    let node = TestNode::start("UZ").await.expect("starts");
    let cat = example_catalog();
    let op = node.client(Role::Operator);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = {
        let (op, stop, acked) = (op.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let recs: Vec<_> =
                    (0..10).map(|j| record_json(&cat, "rms.method", "public", &format!("{i}-{j}"))).collect();
                let v = op.post("/v1/records", &json!({ "records": recs })).await.expect("ingests");
                let ids =
                    v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from));
                acked.lock().expect("lock").extend(ids);
                i += 1;
            }
        })
    };
    while acked.lock().expect("lock").len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let bytes = node.client(Role::Admin).get_bytes("/v1/backup").await.expect("backs up");
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer ends");
    let all: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();

    // Restore into a fresh data directory of the same member, then start from it.
    let mut restored = TestNode::init("UZ", |_| {}).expect("inits");
    let file = restored.dir.path().join("uz.backup");
    std::fs::write(&file, &bytes).expect("writes");
    let data_dir = restored.config().expect("config").data_dir;
    tamga_node::cli::restore_file(&data_dir, &file).expect("restores");
    restored.restart().await.expect("the restored node starts");

    let op2 = restored.client(Role::Operator);
    let list = op2.get("/v1/records", &[("limit", "10000".into())]).await.expect("lists");
    let held: HashSet<String> = list["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    assert!(before.is_subset(&held), "every record acknowledged before the backup is in it");
    assert!(held.is_subset(&all), "nothing that was never acknowledged");
    let auditor = restored.client(Role::Auditor);
    let report = auditor.get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(report["ok"], true, "{report:#}");
    let ingested = auditor.get("/v1/audit", &[("action", "ingested".into())]).await.expect("queries");
    assert_eq!(
        ingested.as_array().map(Vec::len),
        Some(held.len()),
        "one ingest entry per restored record, no more"
    );
}

//! Faults: real `tamga run` processes killed with SIGKILL at the worst moments (during
//! ingest, a push, a catch-up, a burst of audit appends) and restarted on the same data
//! directory; a store on a tmpfs that fills up or turns read-only; a clock that jumps back
//! and forth under libfaketime.
//!
//! After every fault: no acknowledged record lost, no duplicate, every stream's sequence
//! numbers consistent with the records (checked on the store itself, offline), the audit
//! chain verifies, and a federation converges to what the files allow. Each test prints
//! its figures (`cargo test -p tamga-tests --test faults -- --nocapture`); sizes grow with
//! `TAMGA_FAULT_SCALE` (default 1).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tamga_config::Federation;
use tamga_node::client::{Client, ClientError};
use tamga_node::identity::Role;
use tamga_node::store::{RecordFilter, Source, Store};
use tamga_protocol::{Classification, EntryKind, MemberCode, RecordHeader, StreamKey};
use tamga_tests::child::{self, ChildNode};
use tamga_tests::*;

/// Longest any single API call may take here: a hang is a failure, not a slow test.
const CALL: Duration = Duration::from_secs(20);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tamga-child"))
}

/// `TAMGA_FAULT_SCALE`: a factor on every size and every number of kill cycles.
fn scale() -> usize {
    std::env::var("TAMGA_FAULT_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

/// A few pseudo-random milliseconds in `lo..hi` (where in the load a kill lands).
fn jitter_ms(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    lo + u64::from(nanos) % (hi - lo).max(1)
}

async fn call<T>(what: &str, f: impl std::future::Future<Output = Result<T, ClientError>>) -> T {
    match tokio::time::timeout(CALL, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {CALL:?}"),
    }
}

/// A record of `category` with a body tagged `tag`, created at a fixed time (so that a
/// retry is the same record).
fn rec(category: &str, classification: &str, tag: &str) -> Value {
    record_json(&example_catalog(), category, classification, tag)
}

/// Every record a node lists, by id, with how many times each id was listed.
async fn listing(node: &ChildNode) -> (BTreeMap<String, Value>, usize) {
    let v =
        call("list records", node.client(Role::Operator).get("/v1/records", &[("limit", "10000".into())]))
            .await;
    let all = v["records"].as_array().cloned().unwrap_or_default();
    let n = all.len();
    let by_id: BTreeMap<String, Value> =
        all.into_iter().filter_map(|r| Some((r["id"].as_str()?.to_owned(), r))).collect();
    (by_id, n)
}

/// Live record ids a node holds; fails on an id listed twice.
async fn live_ids(node: &ChildNode) -> BTreeSet<String> {
    let (by_id, n) = listing(node).await;
    assert_eq!(by_id.len(), n, "{}: a record is listed twice", node.api);
    by_id.iter().filter(|(_, r)| r["state"] == "live").map(|(id, _)| id.clone()).collect()
}

/// The audit verify API: the chain and every checkpoint verify.
async fn audit_verifies(node: &ChildNode, what: &str) -> u64 {
    let v = call("audit verify", node.client(Role::Auditor).get("/v1/audit/verify", &[])).await;
    assert_eq!(v["ok"], true, "{what}: the audit log of {} does not verify: {v:#}", node.api);
    v["entries"].as_u64().unwrap_or(0)
}

/// What the offline check of a store found.
#[derive(Debug, Default)]
struct StoreFigures {
    records: usize,
    projections: usize,
    audit_entries: u64,
}

/// Open a stopped node's store and check it: every record once in the time index, every
/// own stream without a hole or a reused sequence number, every projection index entry
/// pointing at that record's projection, every received projection's record held, and
/// the audit chain verifying.
fn check_store(node: &ChildNode, what: &str) -> StoreFigures {
    assert!(node.child.is_none(), "{what}: check_store needs the node stopped");
    let store = Store::open(&node.store_dir()).expect("the store opens after the fault");
    let me: MemberCode = node.files.config().expect("config").member;
    let records = store.records(&RecordFilter::default(), usize::MAX).expect("records");
    let ids: BTreeSet<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), records.len(), "{what}: a record is indexed twice");
    let mut projections = 0;
    for r in &records {
        for &(ref agreement, seq) in &r.shares {
            let stream = StreamKey { origin: r.header.origin, agreement: agreement.clone() };
            if store.is_gone(&stream, seq).expect("gone") {
                continue;
            }
            let p = store.projection(&stream, seq).expect("projection").unwrap_or_else(|| {
                panic!(
                    "{what}: record {} indexed at {}/{agreement} #{seq}, nothing there",
                    r.id, stream.origin
                )
            });
            assert_eq!(
                p.record_id().expect("a projection's record id"),
                r.id,
                "{what}: {}/{agreement} #{seq} holds another record's projection than {}",
                stream.origin,
                r.id
            );
        }
    }
    for (stream, head) in store.streams().expect("streams") {
        let held = store.projections(&stream, 1, u64::MAX, usize::MAX).expect("stream");
        let mut seen = BTreeSet::new();
        for p in &held {
            assert!(seen.insert(p.envelope.seq), "{what}: {stream:?} #{} twice", p.envelope.seq);
            let id = p.record_id().expect("record id");
            assert!(ids.contains(&id), "{what}: {stream:?} #{} of a record not held", p.envelope.seq);
            if p.envelope.kind == EntryKind::Share && stream.origin != me {
                let r = records.iter().find(|r| r.id == id).expect("held");
                assert!(matches!(r.source, Source::Received { .. }), "{what}: a peer's record stored as own");
            }
        }
        projections += held.len();
        if stream.origin == me {
            // Own stream: every number up to the head assigned exactly once, none beyond it.
            for seq in 1..=head {
                assert!(
                    seen.contains(&seq) || store.is_gone(&stream, seq).expect("gone"),
                    "{what}: own stream {stream:?} has a hole at #{seq} (head {head})"
                );
            }
            assert!(seen.iter().all(|s| *s <= head), "{what}: {stream:?} holds entries past its head {head}");
        }
    }
    let report = tamga_node::audit::verify_store(&store);
    assert!(report.ok, "{what}: the audit log does not verify offline: {report:?}");
    StoreFigures { records: records.len(), projections, audit_entries: report.entries }
}

/// Start a node, with its log shown if it does not come up.
async fn start(node: &mut ChildNode) {
    if let Err(e) = node.start().await {
        panic!("{} did not start: {e}\n{}", node.api, node.log_tail(30));
    }
}

/// Wait until `a` and `b` say they are connected to each other.
async fn wait_connected(nodes: &BTreeMap<String, ChildNode>) {
    for (m, n) in nodes {
        let others: Vec<&String> = nodes.keys().filter(|o| *o != m).collect();
        let c = n.client(Role::Operator);
        wait_for(&format!("{m} connected to {others:?}"), || async {
            let Ok(Ok(v)) = tokio::time::timeout(CALL, c.get("/v1/peers", &[])).await else { return false };
            others.iter().all(|o| {
                v["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["member"] == o.as_str() && p["connected"] == true)
            })
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Concurrent ingest load.
// ---------------------------------------------------------------------------------------

/// What a load of concurrent API clients did before the node died.
#[derive(Debug, Default)]
struct Load {
    /// Every batch sent, acknowledged or not.
    sent: Vec<Vec<Value>>,
    /// Ids the node acknowledged.
    acked: BTreeSet<String>,
}

/// `clients` concurrent clients each post batches of `batch` records (categories and
/// classifications cycling through `kinds`) until the node stops answering.
fn spawn_load(
    node: &ChildNode,
    clients: usize,
    batch: usize,
    prefix: &str,
    kinds: &'static [(&'static str, &'static str)],
) -> (Arc<Mutex<Load>>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Mutex::new(Load::default()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = node.client(Role::Operator);
        let load = load.clone();
        let prefix = format!("{prefix}-c{c}");
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let recs: Vec<Value> = (0..batch)
                    .map(|j| {
                        let (cat, class) = kinds[(i * batch + j) % kinds.len()];
                        rec(cat, class, &format!("{prefix}-{i}-{j}"))
                    })
                    .collect();
                load.lock().expect("load").sent.push(recs.clone());
                let r =
                    tokio::time::timeout(CALL, client.post("/v1/records", &json!({ "records": recs }))).await;
                match r {
                    Ok(Ok(v)) => {
                        let ids = v["ids"].as_array().cloned().unwrap_or_default();
                        assert_eq!(ids.len(), batch, "an acknowledgement names every record");
                        let mut l = load.lock().expect("load");
                        l.acked.extend(ids.iter().filter_map(|x| x.as_str().map(String::from)));
                    }
                    // Refused or unreachable: the node is dying or gone.
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }));
    }
    (load, tasks)
}

/// Re-send every batch of a load (idempotent ingest): returns (new, duplicates, ids).
async fn resend(node: &ChildNode, load: &Load) -> (u64, u64, BTreeSet<String>) {
    let (mut new, mut dups, mut ids) = (0, 0, BTreeSet::new());
    let c = node.client(Role::Operator);
    for recs in &load.sent {
        let v = call("re-send", c.post("/v1/records", &json!({ "records": recs }))).await;
        new += v["new"].as_u64().unwrap_or(0);
        dups += v["duplicates"].as_u64().unwrap_or(0);
        ids.extend(v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)));
    }
    (new, dups, ids)
}

const MIXED: &[(&str, &str)] = &[
    ("rms.method", "public"),
    ("ipr.infringement", "non_confidential"),
    ("enforcement.alert", "non_confidential"),
    ("rms.event", "confidential"),
    ("energy.transfer", "public"),
];

const SHARED_RU_KZ: &[(&str, &str)] = &[
    ("rms.method", "public"),
    ("ipr.infringement", "public"),
    ("enforcement.alert", "non_confidential"),
    ("rms.event", "confidential"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_ingest_loses_no_acknowledged_record() {
    let mut nodes = child::federation(bin(), &["RU"], |_, _| {}).expect("init");
    let ru = nodes.get_mut("RU").expect("RU");
    start(ru).await;
    let cycles = 2 * scale();
    let mut all = Load::default();
    let (mut acked_total, mut lost_total) = (0usize, 0usize);
    for cycle in 0..cycles {
        let (load, tasks) = spawn_load(ru, 4, 5, &format!("k{cycle}"), MIXED);
        tokio::time::sleep(Duration::from_millis(jitter_ms(800, 1600))).await;
        ru.kill9();
        for t in tasks {
            t.await.expect("a load task");
        }
        let load = std::mem::take(&mut *load.lock().expect("load"));
        let figures = check_store(ru, &format!("after kill {cycle}"));
        start(ru).await;
        let held = live_ids(ru).await;
        let lost: Vec<_> = load.acked.difference(&held).collect();
        println!(
            "ingest kill {cycle}: {} batches sent, {} records acknowledged, {} lost, store {} records / {} projections / {} audit entries",
            load.sent.len(),
            load.acked.len(),
            lost.len(),
            figures.records,
            figures.projections,
            figures.audit_entries
        );
        assert!(lost.is_empty(), "acknowledged records lost after kill -9: {lost:?}");
        acked_total += load.acked.len();
        lost_total += lost.len();
        all.sent.extend(load.sent);
        all.acked.extend(load.acked);
        audit_verifies(ru, "after a kill during ingest").await;
    }
    assert!(acked_total > 0, "the load acknowledged nothing before the kills");
    // Every batch again: acknowledged ones are duplicates, the rest are stored once now.
    let before = live_ids(ru).await;
    let (new, dups, ids) = resend(ru, &all).await;
    let after = live_ids(ru).await;
    let sent: usize = all.sent.iter().map(Vec::len).sum();
    assert_eq!(ids.len(), sent, "every record sent has one id");
    assert_eq!(after, ids, "the node holds exactly the records sent, once each");
    assert!(all.acked.iter().all(|id| before.contains(id)), "an acknowledged record missing");
    assert_eq!(
        new as usize,
        ids.difference(&before).count(),
        "re-sent records counted new only when not held"
    );
    assert_eq!((new + dups) as usize, sent);
    ru.stop().expect("stops");
    let figures = check_store(ru, "at the end");
    println!(
        "kill -9 during ingest: {cycles} kills, {acked_total} records acknowledged, lost = {lost_total}, duplicates = 0, \
         {} unacknowledged records had been stored anyway, {} re-sent as new; final store {} records, {} audit entries verified",
        sent as u64 - new - acked_total as u64,
        new,
        figures.records,
        figures.audit_entries
    );
}

// ---------------------------------------------------------------------------------------
// Federations: who should hold what, from the files alone.
// ---------------------------------------------------------------------------------------

fn header_of(r: &Value) -> RecordHeader {
    RecordHeader {
        category: r["category"].as_str().expect("category").parse().expect("valid"),
        classification: serde_json::from_value::<Classification>(r["classification"].clone()).expect("valid"),
        origin: r["origin"].as_str().expect("origin").parse().expect("valid"),
        created_ms: tamga_node::api::parse_since(r["created"].as_str().expect("created"), 0).expect("time"),
        supersedes: None,
        expires_ms: r["expires"].as_str().map(|e| tamga_node::api::parse_since(e, 0).expect("time")),
    }
}

/// Who should hold each record its origin holds, from every node's files.
async fn oracle(nodes: &BTreeMap<String, ChildNode>) -> BTreeMap<String, BTreeSet<String>> {
    let feds: BTreeMap<MemberCode, Federation> = nodes
        .iter()
        .map(|(m, n)| (m.parse().expect("member"), n.federation().expect("the federation loads")))
        .collect();
    let now = tamga_node::writer::now_ms();
    let mut want: BTreeMap<String, BTreeSet<String>> =
        nodes.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (m, n) in nodes {
        for (id, r) in listing(n).await.0 {
            if r["origin"] != m.as_str() || r["state"] != "live" {
                continue;
            }
            for holder in tamga_node::localfed::expected_holders(&header_of(&r), &feds, now) {
                if let Some(set) = want.get_mut(holder.as_str()) {
                    set.insert(id.clone());
                }
            }
        }
    }
    want
}

/// Wait until every node holds exactly what the oracle says (never one record more on
/// the way); returns how long it took.
async fn converge(nodes: &BTreeMap<String, ChildNode>, what: &str) -> Duration {
    let started = Instant::now();
    let want = oracle(nodes).await;
    let deadline = started + Duration::from_secs(60);
    let mut last = BTreeMap::new();
    while Instant::now() < deadline {
        last.clear();
        for (m, n) in nodes {
            last.insert(m.clone(), live_ids(n).await);
        }
        for (m, held) in &last {
            let extra: Vec<_> = held.difference(&want[m]).collect();
            assert!(extra.is_empty(), "{what}: {m} holds records the policies do not allow: {extra:?}");
        }
        if last.iter().all(|(m, held)| want[m] == *held) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let diff: Vec<String> =
        last.iter().map(|(m, held)| format!("{m}: holds {} of {}", held.len(), want[m].len())).collect();
    panic!("{what}: no convergence within 60 s: {diff:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_origin_and_of_receiver_during_a_push() {
    let mut nodes = child::federation(bin(), &["KZ", "RU"], |_, _| {}).expect("init");
    for n in nodes.values_mut() {
        start(n).await;
    }
    wait_connected(&nodes).await;
    let mut acked = 0;
    for (victim, cycle) in [("RU", 0), ("KZ", 1)] {
        let ru = &nodes["RU"];
        let (load, tasks) = spawn_load(ru, 3, 10, &format!("push{cycle}"), SHARED_RU_KZ);
        // Let pushes get going (KZ receiving), then kill in the middle of them.
        let kz = &nodes["KZ"];
        wait_for("KZ receiving RU's pushes", || async { live_ids(kz).await.len() > 10 * (cycle + 1) }).await;
        tokio::time::sleep(Duration::from_millis(jitter_ms(100, 600))).await;
        nodes.get_mut(victim).expect("victim").kill9();
        if victim == "KZ" {
            // The origin keeps ingesting while the receiver is down.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for t in tasks {
            if victim == "KZ" {
                t.abort();
            }
            let _ = t.await;
        }
        let load = std::mem::take(&mut *load.lock().expect("load"));
        let v = nodes.get_mut(victim).expect("victim");
        let figures = check_store(v, &format!("{victim} after its kill during a push"));
        let restarted = Instant::now();
        start(v).await;
        let took = converge(&nodes, &format!("after {victim}'s kill during a push")).await;
        let held_ru = live_ids(&nodes["RU"]).await;
        let lost: Vec<_> = load.acked.difference(&held_ru).collect();
        assert!(lost.is_empty(), "RU lost acknowledged records: {lost:?}");
        acked += load.acked.len();
        println!(
            "kill -9 of {victim} during a push: {} records acknowledged, lost = 0, duplicates = 0, {victim}'s store {} records / {} \
             projections; converged {:.2} s after the restart (total {:.2} s)",
            load.acked.len(),
            figures.records,
            figures.projections,
            took.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
        for n in nodes.values() {
            audit_verifies(n, &format!("after {victim}'s kill")).await;
        }
    }
    assert!(acked > 0);
    // Both sides checked offline, stopped cleanly.
    for (m, n) in nodes.iter_mut() {
        n.stop().expect("stops");
        check_store(n, &format!("{m} at the end"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_catch_up_then_converges() {
    let mut nodes = child::federation(bin(), &["KZ", "RU"], |_, _| {}).expect("init");
    for n in nodes.values_mut() {
        start(n).await;
    }
    wait_connected(&nodes).await;
    nodes.get_mut("KZ").expect("KZ").kill9();
    // RU stores records while KZ is offline.
    let total = 1500 * scale();
    let ru = nodes["RU"].client(Role::Operator);
    for b in 0..total / 100 {
        let recs: Vec<Value> =
            (0..100).map(|i| rec("rms.method", "public", &format!("offline-{b}-{i}"))).collect();
        call("ingest", ru.post("/v1/records", &json!({ "records": recs }))).await;
    }
    let started = Instant::now();
    let kz = nodes.get_mut("KZ").expect("KZ");
    start(kz).await;
    // Kill KZ as soon as it holds some of them but not all.
    let mut partial = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        partial = live_ids(kz).await.len();
        if partial > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(partial > 0, "KZ took in nothing of RU's records within a minute");
    tokio::time::sleep(Duration::from_millis(jitter_ms(0, 200))).await;
    kz.kill9();
    let figures = check_store(kz, "KZ killed during its catch-up");
    println!(
        "catch-up: KZ held {partial} (store {} records) of {total} when killed, {:.2} s into it",
        figures.records,
        started.elapsed().as_secs_f64()
    );
    start(kz).await;
    let took = converge(&nodes, "after a kill during catch-up").await;
    let held = live_ids(&nodes["KZ"]).await.len();
    println!(
        "kill -9 during catch-up: {total} records to catch up, KZ holds {held}, lost = 0, duplicates = 0; converged \
         {:.2} s after the restart",
        took.as_secs_f64()
    );
    assert!(held >= total, "KZ holds all of RU's public methods");
    for n in nodes.values() {
        audit_verifies(n, "after the catch-up").await;
    }
    for (m, n) in nodes.iter_mut() {
        n.stop().expect("stops");
        check_store(n, &format!("{m} at the end"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_audit_appends_keeps_the_chain_verifiable() {
    // Every refused call audited one by one, however many.
    let one_by_one =
        |_: &str, t: &mut String| *t = t.replace("[api]\n", "[api]\nrefusals_per_min = 1000000\n");
    let mut nodes = child::federation(bin(), &["RU"], one_by_one).expect("init");
    let ru = nodes.get_mut("RU").expect("RU");
    start(ru).await;
    let (mut entries, mut refused_total) = (0, 0u64);
    for cycle in 0..2 * scale() {
        // Refused calls (each one audited) from many clients, and ingests among them.
        let mut tasks = Vec::new();
        for c in 0..6 {
            let bad = Client::with_token(ru.base(), format!("wrong-token-{c}"));
            let auditor_on_records = ru.client(Role::Auditor);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let r = if n.is_multiple_of(2) {
                        tokio::time::timeout(CALL, bad.get("/v1/records", &[])).await
                    } else {
                        tokio::time::timeout(CALL, auditor_on_records.get("/v1/records", &[])).await
                    };
                    match r {
                        Ok(Err(ClientError::Api { status, .. })) if status.is_client_error() => n += 1,
                        _ => return n,
                    }
                }
            }));
        }
        let (load, ingest) = spawn_load(ru, 1, 3, &format!("audit{cycle}"), MIXED);
        tokio::time::sleep(Duration::from_millis(jitter_ms(700, 1400))).await;
        ru.kill9();
        let mut refused = 0;
        for t in tasks {
            refused += t.await.expect("a refused-call task");
        }
        for t in ingest {
            t.await.expect("an ingest task");
        }
        let figures = check_store(ru, "after a kill during audit appends");
        start(ru).await;
        entries = audit_verifies(ru, "after a kill during audit appends").await;
        let held = live_ids(ru).await;
        let acked = load.lock().expect("load").acked.clone();
        assert!(acked.is_subset(&held), "acknowledged records lost");
        let logged = call(
            "count refusals",
            ru.client(Role::Auditor).get("/v1/audit/count", &[("action", "api_refused".into())]),
        )
        .await["total"]
            .as_u64()
            .unwrap_or(0);
        refused_total += refused;
        // A refusal is answered only once its entry is durable: every answered one is logged.
        assert!(
            logged >= refused_total,
            "{refused_total} refusals answered, {logged} in the log after kill -9"
        );
        println!(
            "kill -9 during audit appends {cycle}: {refused} refused calls answered before the kill ({refused_total} in all, \
             {logged} refusal entries in the log after the restart), {} records acknowledged, lost = 0; chain of {} \
             entries verifies offline and {entries} after the restart",
            acked.len(),
            figures.audit_entries
        );
    }
    // The chain continues from where it was: more entries, still verifying.
    let bad = Client::with_token(ru.base(), "wrong");
    for _ in 0..20 {
        let e = tokio::time::timeout(CALL, bad.get("/v1/status", &[])).await.expect("answers");
        assert!(e.is_err());
    }
    let after = audit_verifies(ru, "after more appends").await;
    assert!(after >= entries + 20, "the refusals after the restart are audited ({entries} -> {after})");
    ru.stop().expect("stops");
    check_store(ru, "at the end");
}

// ---------------------------------------------------------------------------------------
// A store on a small tmpfs: disk full, read-only.
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted for one test, lazily unmounted when dropped.
#[derive(Debug)]
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` at `path`, or say why not (and the test skips).
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { path: path.to_owned() })
    }

    fn remount(&self, opts: &str) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A node for `member` whose store lives on its own tmpfs of `size` (the store directory
/// is a symbolic link into the mount, so that a filler file can sit beside it); `None`
/// when this machine does not allow mounting (the reason is printed).
fn node_on_tmpfs(member: &str, size: &str) -> Option<(BTreeMap<String, ChildNode>, Tmpfs)> {
    let nodes = child::federation(bin(), &[member], |_, _| {}).expect("init");
    let n = &nodes[member];
    let vol = n.data_dir().join("vol");
    let fs = match Tmpfs::mount(&vol, size) {
        Ok(fs) => fs,
        Err(why) => {
            println!(
                "skipped: this test needs to mount a tmpfs (root, or a container allowed to mount): {why}"
            );
            return None;
        }
    };
    std::fs::create_dir(vol.join("store")).expect("store dir");
    std::os::unix::fs::symlink(vol.join("store"), n.store_dir()).expect("symlink");
    Some((nodes, fs))
}

/// Fill the filesystem at `dir` with a file until it refuses; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full_refuses_writes_clearly_and_loses_nothing() {
    let Some((mut nodes, fs)) = node_on_tmpfs("RU", "24m") else { return };
    let ru = nodes.get_mut("RU").expect("RU");
    start(ru).await;
    let c = ru.client(Role::Operator);
    let batch = |tag: &str| -> Vec<Value> {
        (0..50).map(|i| rec("rms.method", "public", &format!("{tag}-{i}"))).collect()
    };
    let mut acked = BTreeSet::new();
    let v = call("ingest before", c.post("/v1/records", &json!({ "records": batch("before") }))).await;
    acked.extend(v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)));

    let filled = fill(&fs.path);
    // Ingest until the node refuses; each call must answer (no hang) with a clear 5xx.
    let mut refused: Vec<Vec<Value>> = Vec::new();
    let mut first_error = None;
    let started = Instant::now();
    for i in 0..400 {
        let recs = batch(&format!("full-{i}"));
        match tokio::time::timeout(CALL, c.post("/v1/records", &json!({ "records": recs }))).await {
            Ok(Ok(v)) => acked.extend(
                v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)),
            ),
            Ok(Err(ClientError::Api { status, message, .. })) => {
                assert!(
                    status.is_server_error(),
                    "a full disk is the node's problem, not the client's: {status} {message}"
                );
                assert!(!message.is_empty());
                assert!(!message.contains("storage: storage"), "the cause is said once: {message}");
                first_error.get_or_insert((status, message, i));
                refused.push(recs);
                if refused.len() >= 3 {
                    break;
                }
            }
            Ok(Err(e)) => panic!("the node did not answer on a full disk: {e}\n{}", ru.log_tail(20)),
            Err(_) => panic!("an ingest hung on a full disk\n{}", ru.log_tail(20)),
        }
    }
    let (status, message, at) = first_error.expect("a full disk refuses writes");
    println!(
        "disk full: filler {} KiB; {} records acknowledged; writes refused after {at} more batches, in {:.2} s: {status} {message:?}",
        filled / 1024,
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(ru.exited().is_none(), "the node died on a full disk:\n{}", ru.log_tail(20));
    // sled stops at its first I/O error (it keeps it as a global error until reopened), so
    // reads may fail too; the node answers every call, with the error.
    let status = tokio::time::timeout(CALL, ru.client(Role::Auditor).get("/v1/status", &[]))
        .await
        .expect("status answers on a full disk");
    println!("disk full: status while full: {}", status.map_or_else(|e| e.to_string(), |_| "ok".into()));

    // A reload while full: its `policy_loaded` entry cannot be stored, so the new policy is
    // not put in force (the file watcher may try first; it fails the same way).
    let admin = ru.client(Role::Admin);
    let policy = ru.files.federation.as_ref().expect("own copy").path().join("policies/RU.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    let lifted = text.replace("except = [\"TJ\"]\n", "");
    assert_ne!(text, lifted, "the example RU policy pauses TJ's energy data");
    let in_force =
        || async { call("the policy in force", admin.get("/v1/policy", &[])).await["digest"].clone() };
    let before = in_force().await;
    std::fs::write(&policy, &lifted).expect("writes");
    match tokio::time::timeout(CALL, admin.post("/v1/policy/reload", &json!({}))).await {
        Ok(Err(ClientError::Api { status, message, .. })) => {
            assert_eq!(status.as_u16(), 503, "{message}");
            assert!(message.contains("could not be audited"), "{message}");
        }
        other => panic!("a reload that cannot be audited: {other:?}"),
    }
    assert_eq!(in_force().await, before, "the policy in force stays");
    std::fs::write(&policy, &text).expect("writes");

    // Space returns.
    std::fs::remove_file(fs.path.join("filler")).expect("remove filler");
    let again =
        tokio::time::timeout(CALL, c.post("/v1/records", &json!({ "records": batch("space-back") }))).await;
    let recovered_live = matches!(again, Ok(Ok(_)));
    if let Ok(Ok(v)) = &again {
        acked.extend(v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)));
    }
    println!(
        "disk full: after space returned the running node {}",
        if recovered_live {
            "accepts writes again without a restart"
        } else {
            "still refuses writes until restarted"
        }
    );
    ru.kill9();
    let figures = check_store(ru, "after a full disk");
    start(ru).await;
    let held = live_ids(ru).await;
    let lost: Vec<_> = acked.difference(&held).collect();
    assert!(lost.is_empty(), "acknowledged records lost after a full disk: {lost:?}");
    // A refused batch is stored whole or not at all.
    for recs in &refused {
        let v = call("re-send a refused batch", c.post("/v1/records", &json!({ "records": recs }))).await;
        let new = v["new"].as_u64().unwrap_or(0);
        assert!(
            new == 0 || new == recs.len() as u64,
            "a refused batch was half written: {new} of {}",
            recs.len()
        );
    }
    let entries = audit_verifies(ru, "after a full disk").await;
    println!(
        "disk full: {} records acknowledged, lost = 0, no half-written batch, store {} records after restart, audit {entries} entries verify",
        acked.len(),
        figures.records
    );
    ru.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_store_is_refused_with_a_clear_error_and_recovers() {
    let Some((mut nodes, fs)) = node_on_tmpfs("RU", "16m") else { return };
    let ru = nodes.get_mut("RU").expect("RU");
    start(ru).await;
    let c = ru.client(Role::Operator);
    let recs: Vec<Value> = (0..20).map(|i| rec("rms.method", "public", &format!("ro-{i}"))).collect();
    let v = call("ingest", c.post("/v1/records", &json!({ "records": recs }))).await;
    let acked: BTreeSet<String> =
        v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
    // A live remount read-only is refused by the kernel while the store has files open
    // for writing; say so and test the node starting on a read-only store.
    match fs.remount("ro") {
        Ok(()) => {
            let r = tokio::time::timeout(
                CALL,
                c.post("/v1/records", &json!(rec("rms.method", "public", "ro-live"))),
            )
            .await
            .expect("answers on a read-only store");
            let e = r.expect_err("a read-only store refuses writes");
            println!("read-only (live remount): ingest refused: {e}");
            fs.remount("rw").expect("rw again");
        }
        Err(why) => println!(
            "read-only: live remount refused by the kernel ({why}); testing a start on a read-only store"
        ),
    }
    ru.kill9();
    fs.remount("ro").expect("remount read-only with the node stopped");
    let err = ru.start().await.expect_err("a node does not start on a read-only store");
    ru.kill9();
    let log = ru.log_tail(5);
    println!("read-only: start refused: {err}; the node says: {log}");
    assert!(
        log.contains("store") && (log.contains("ead-only") || log.contains("ermission")),
        "the error names the store and why: {log}"
    );
    fs.remount("rw").expect("remount read-write");
    let figures = check_store(ru, "after a read-only start");
    start(ru).await;
    let held = live_ids(ru).await;
    assert!(acked.is_subset(&held), "records lost on a read-only store");
    call("ingest after", c.post("/v1/records", &json!(rec("rms.method", "public", "ro-after")))).await;
    let entries = audit_verifies(ru, "after a read-only store").await;
    println!(
        "read-only store: {} records acknowledged, lost = 0, store {} records intact, writes accepted again, audit {entries} entries verify",
        acked.len(),
        figures.records
    );
    ru.kill9();
}

// ---------------------------------------------------------------------------------------
// A clock that jumps: libfaketime with an offset file read at run time.
// ---------------------------------------------------------------------------------------

/// The libfaketime library, if installed (Debian package `faketime`).
fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

async fn record_state(node: &ChildNode, id: &str) -> Option<String> {
    let r =
        tokio::time::timeout(CALL, node.client(Role::Operator).get(&format!("/v1/records/{id}"), &[])).await;
    match r {
        Ok(Ok(v)) => v["record"]["state"].as_str().map(String::from),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_jumping_back_and_forth_keeps_expiry_sane() {
    let Some(lib) = libfaketime() else {
        println!("skipped: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let mut nodes = child::federation(bin(), &["KZ", "RU"], |_, _| {}).expect("init");
    // KZ's clock is the one that jumps: an offset read from a file at most once a second.
    let clock = nodes["KZ"].data_dir().join("faketime");
    let set_clock = |offset: &str| std::fs::write(&clock, offset).expect("write the clock offset");
    set_clock("+0");
    {
        let kz = nodes.get_mut("KZ").expect("KZ");
        kz.env.push(("LD_PRELOAD".into(), lib.display().to_string()));
        kz.env.push(("FAKETIME_TIMESTAMP_FILE".into(), clock.display().to_string()));
        kz.env.push(("FAKETIME_CACHE_DURATION".into(), "1".into()));
        kz.env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
        kz.env.push(("FAKETIME_DONT_RESET".into(), "1".into()));
    }
    for n in nodes.values_mut() {
        start(n).await;
    }
    wait_connected(&nodes).await;
    let ru = nodes["RU"].client(Role::Operator);
    let now = tamga_node::writer::now_ms();
    const HOUR: i64 = 3_600_000;
    let ingest = |tag: &'static str, expires_in: i64| {
        let ru = ru.clone();
        async move {
            let now = tamga_node::writer::now_ms();
            let mut r = rec("rms.method", "public", tag);
            r["created"] = json!(tamga_node::audit::rfc3339(now - 60_000));
            r["expires"] = json!(tamga_node::audit::rfc3339(now + expires_in));
            let v = call("ingest", ru.post("/v1/records", &r)).await;
            v["ids"][0].as_str().expect("id").to_owned()
        }
    };
    let kz = &nodes["KZ"];
    let wait_state = |id: String, want: &'static str, what: &'static str| async move {
        wait_for(what, || async { record_state(kz, &id).await.as_deref() == Some(want) }).await;
    };
    // A expires in 2 h, B in 2 days.
    let a = ingest("clock-a", 2 * HOUR).await;
    let b = ingest("clock-b", 48 * HOUR).await;
    wait_state(a.clone(), "live", "KZ holds A").await;
    wait_state(b.clone(), "live", "KZ holds B").await;

    // Back one day: nothing expires, KZ still receives and audits.
    set_clock("-1d");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = ingest("clock-c", 48 * HOUR).await;
    wait_state(c.clone(), "live", "KZ receives C with its clock a day behind").await;
    for id in [&a, &b] {
        assert_eq!(record_state(kz, id).await.as_deref(), Some("live"), "purged with the clock behind");
    }
    audit_verifies(kz, "clock a day behind").await;

    // Forward three hours: A is past its expiry by this clock and goes; B and C stay.
    set_clock("+3h");
    wait_state(a.clone(), "expired", "KZ purges A with its clock 3 h ahead").await;
    for id in [&b, &c] {
        assert_eq!(record_state(kz, id).await.as_deref(), Some("live"), "purged early (clock +3 h)");
    }

    // Back to the true time: D, expiring in 1 h, arrives and is not purged because the
    // clock was ahead a moment ago; A stays purged (never pulled back).
    set_clock("+0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = ingest("clock-d", HOUR).await;
    wait_state(d.clone(), "live", "KZ receives D").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in [&b, &c, &d] {
        assert_eq!(
            record_state(kz, id).await.as_deref(),
            Some("live"),
            "purged early: the clock is back at the true time and {id} is not expired"
        );
    }
    assert_eq!(record_state(kz, &a).await.as_deref(), Some("expired"), "A came back");

    // Really past D's expiry: it goes, B and C stay.
    set_clock("+90m");
    wait_state(d.clone(), "expired", "KZ purges D once its clock is past D's expiry").await;
    for id in [&b, &c] {
        assert_eq!(record_state(kz, id).await.as_deref(), Some("live"));
    }
    set_clock("+0");
    for (m, n) in nodes.iter_mut() {
        assert!(n.exited().is_none(), "{m} died while the clock jumped:\n{}", n.log_tail(20));
    }
    let entries = audit_verifies(&nodes["KZ"], "after the clock jumps").await;
    audit_verifies(&nodes["RU"], "after the clock jumps").await;
    println!(
        "clock jumps on KZ (+0, -1 d, +3 h, +0, +90 min): no crash, nothing purged early, A purged at +3 h and D at +90 min, \
         purged records not pulled back; {entries} audit entries verify ({} s since the start)",
        (tamga_node::writer::now_ms() - now) / 1000
    );
    for (m, n) in nodes.iter_mut() {
        n.stop().expect("stops");
        check_store(n, &format!("{m} after the clock jumps"));
    }
}

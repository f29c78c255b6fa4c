//! The audit log of real nodes started in-process: signed checkpoints by count and by
//! time, checkpoints kept from peers, the audit routes (auditor only, paged exports, bad
//! parameters), and the chain carried across a restart.

use std::time::Duration;

use serde_json::Value;
use tamga_node::client::ClientError;
use tamga_node::identity::Role;
use tamga_protocol::{Checkpoint, Digest, MemberCode};
use tamga_tests::*;

const CAT: &str = "rms.method";

fn audit_settings(every: u64, secs: u64) -> impl FnOnce(&mut String) {
    move |t: &mut String| {
        t.push_str(&format!("\n[audit]\ncheckpoint_every = {every}\ncheckpoint_secs = {secs}\n"))
    }
}

async fn ingest(n: &TestNode, tag: &str) -> String {
    let rec = record_json(&example_catalog(), CAT, "public", tag);
    let v = n.client(Role::Operator).post("/v1/records", &rec).await.expect("ingests");
    v["ids"][0].as_str().expect("an id").to_owned()
}

fn ru() -> MemberCode {
    "RU".parse().expect("valid")
}

fn status_of(e: ClientError) -> u16 {
    match e {
        ClientError::Api { status, .. } => status.as_u16(),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_every_n_entries_are_signed_with_the_roster_key_and_survive_a_restart() {
    let mut n = TestNode::start_with("RU", audit_settings(10, 3600)).await.expect("starts");
    for i in 0..30 {
        ingest(&n, &format!("r{i}")).await;
    }
    let fed = n.node().shared().fed();
    let keys = fed.roster.verifying_keys(ru()).to_vec();
    let store = n.node().shared().store.clone();
    let cps = store.checkpoints().expect("reads");
    assert!(cps.len() >= 3, "one at start, then one per ten entries: {cps:?}");
    for w in cps.windows(2) {
        assert!(w[1].seq - w[0].seq >= 10, "not more often than every ten entries: {cps:?}");
    }
    for cp in &cps {
        assert_eq!(cp.member, ru());
        assert!(keys.iter().any(|k| cp.verify(k).is_ok()), "signed with RU's roster key");
        // The checkpoint entry follows the entry it covers and carries it.
        let (_, raw) = store.audit_entry(cp.seq + 1).expect("reads").expect("present");
        let e: tamga_node::audit::AuditEntry = serde_json::from_slice(&raw).expect("an entry");
        assert_eq!((e.action.as_str(), e.checkpoint.as_ref()), ("checkpoint", Some(cp)));
        let (head, _) = store.audit_entry(cp.seq).expect("reads").expect("present");
        assert_eq!(head, cp.head, "it signs the hash of the entry it covers");
    }
    assert_eq!(store.latest_checkpoint().expect("reads").as_ref(), cps.last());

    let auditor = n.client(Role::Auditor);
    let r = auditor.get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(
        (r["ok"].clone(), r["checkpoints"].as_u64()),
        (Value::Bool(true), Some(cps.len() as u64)),
        "{r}"
    );

    // A restart: the stop signs the last head, the chain goes on, and still verifies.
    drop(store);
    n.restart().await.expect("restarts");
    let store = n.node().shared().store.clone();
    let after = store.checkpoints().expect("reads");
    assert!(after.len() > cps.len(), "the clean stop signed a checkpoint");
    ingest(&n, "after").await;
    let r = n.client(Role::Auditor).get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_fall_due_by_time_only_when_something_was_appended() {
    let n = TestNode::start_with("RU", audit_settings(1000, 1)).await.expect("starts");
    let store = n.node().shared().store.clone();
    wait_for("the first checkpoint", || {
        let s = store.clone();
        async move { s.latest_checkpoint().ok().flatten().is_some() }
    })
    .await;
    ingest(&n, "one").await;
    let head = store.audit_head().expect("reads").expect("a head").0;
    wait_for("a checkpoint covering the ingest", || {
        let s = store.clone();
        async move { s.latest_checkpoint().ok().flatten().is_some_and(|c| c.seq >= head) }
    })
    .await;
    // Idle: nothing appended since the checkpoint entry, so no further checkpoint.
    let count = store.checkpoints().expect("reads").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(store.checkpoints().expect("reads").len(), count, "an idle log is not re-signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_peers_show_are_kept_even_two_different_heads_for_one_number() {
    let n = TestNode::start("KZ").await.expect("starts");
    let key = tamga_node::identity::Identity::from_secret(tamga_config::demo::demo_secret(ru())).signing;
    let cn: MemberCode = "CN".parse().expect("valid");
    let cn_key = tamga_node::identity::Identity::from_secret(tamga_config::demo::demo_secret(cn)).signing;
    let shown = [
        Checkpoint::sign(ru(), 5, Digest([1; 32]), 1, &key),
        Checkpoint::sign(ru(), 5, Digest([2; 32]), 2, &key),
        Checkpoint::sign(ru(), 9, Digest([3; 32]), 3, &key),
        Checkpoint::sign(cn, 3, Digest([4; 32]), 4, &cn_key),
    ];
    for cp in &shown {
        n.node().shared().writer.peer_checkpoint(cp.clone()).await;
    }
    let store = n.node().shared().store.clone();
    wait_for("four kept", || {
        let s = store.clone();
        async move { s.peer_checkpoints(None).map(|v| v.len()).unwrap_or(0) == 4 }
    })
    .await;
    let of_ru = store.peer_checkpoints(Some(ru())).expect("reads");
    assert_eq!(of_ru, shown[..3].to_vec(), "by sequence number, both heads of entry 5 kept");
    let v = n
        .client(Role::Auditor)
        .get("/v1/audit/checkpoints", &[("member", "RU".into())])
        .await
        .expect("lists");
    assert_eq!(v["checkpoints"].as_array().map(Vec::len), Some(3));
    let own = n.client(Role::Auditor).get("/v1/audit/checkpoints", &[]).await.expect("lists");
    assert!(own["checkpoints"].as_array().is_some_and(|c| c.iter().all(|c| c["member"] == "KZ")), "{own}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_routes_are_for_auditors_page_exports_and_refuse_bad_parameters() {
    let n = TestNode::start("RU").await.expect("starts");
    let id = ingest(&n, "traced").await;
    for i in 0..20 {
        ingest(&n, &format!("r{i}")).await;
    }
    let op = n.client(Role::Operator);
    let auditor = n.client(Role::Auditor);
    for path in
        ["/v1/audit/count", "/v1/audit/export", "/v1/audit/checkpoints", &format!("/v1/audit/trace/{id}")]
    {
        assert_eq!(status_of(op.get(path, &[]).await.expect_err("refused")), 403, "{path}");
    }
    let post = op.post("/v1/audit/verify", &serde_json::json!({ "witness": [] })).await;
    assert_eq!(status_of(post.expect_err("refused")), 403);
    // Each refusal is audited (appended by the writer just after the answer).
    wait_for("five refusals audited", || {
        let a = auditor.clone();
        async move {
            let c = a.get("/v1/audit/count", &[("action", "api_refused".into())]).await.expect("counts");
            c["total"] == 5
        }
    })
    .await;

    // A trace is the record's entries; a count by action adds up to the whole log.
    let trace = auditor.get(&format!("/v1/audit/trace/{id}"), &[]).await.expect("traces");
    let trace = trace.as_array().expect("entries");
    assert!(!trace.is_empty() && trace.iter().all(|e| e["entry"]["record"] == id.as_str()), "{trace:?}");
    assert_eq!(trace[0]["entry"]["action"], "ingested");
    let counts = auditor.get("/v1/audit/count", &[("by", "action".into())]).await.expect("counts");
    let head = n.node().shared().store.audit_head().expect("reads").expect("a head").0;
    let sum: u64 =
        counts["groups"].as_array().expect("groups").iter().map(|g| g["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counts["total"].as_u64(), Some(sum));
    assert!(
        sum <= head && sum + 2 >= head,
        "every entry counted once ({sum} of {head}, racing the last appends)"
    );

    // A limit is the most entries answered: 0 is none, as it is for records. An answer cut
    // short says more match (21 records were ingested); one that holds them all does not.
    for (limit, answered, more) in
        [(0, 0, true), (1, 1, true), (3, 3, true), (21, 21, false), (50, 21, false)]
    {
        let q = [("action", "ingested".to_owned()), ("limit", limit.to_string())];
        let (got, said_more) = auditor.get_entries("/v1/audit", &q).await.expect("queries");
        assert_eq!(got.as_array().map(Vec::len), Some(answered), "limit={limit}: {got}");
        assert_eq!(said_more, more, "limit={limit}");
    }
    let (_, more) = auditor.get_entries(&format!("/v1/audit/trace/{id}"), &[]).await.expect("traces");
    assert!(!more, "a trace of a few entries is whole");
    let none = op.get("/v1/records", &[("limit", "0".into())]).await.expect("lists");
    assert_eq!(none["records"].as_array().map(Vec::len), Some(0), "{none}");

    // Exports come in pages that chain: `next` continues where a page stopped.
    let mut seqs = Vec::new();
    let mut from = 1u64;
    loop {
        let page = auditor
            .get(
                "/v1/audit/export",
                &[("from", from.to_string()), ("limit", "7".into()), ("to", "25".into())],
            )
            .await
            .expect("exports");
        for e in page["entries"].as_array().expect("entries") {
            let raw = e["entry"].as_str().expect("the stored text");
            assert_eq!(Digest::of(raw.as_bytes()).to_hex(), e["hash"].as_str().expect("a hash"));
            seqs.push(e["seq"].as_u64().expect("a seq"));
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seqs, (1..=25).collect::<Vec<u64>>());

    // Bad parameters: a 400 naming the parameter; nothing else happens.
    for (path, q, needle) in [
        ("/v1/audit/count", vec![("by", "weekday")], "cannot group by"),
        ("/v1/audit/count", vec![("limit", "5")], "`limit` does not apply to a count"),
        ("/v1/audit", vec![("action", "exploded")], "unknown action"),
        ("/v1/audit", vec![("since", "yesterday")], "since"),
        ("/v1/audit", vec![("colour", "red")], "colour"),
        ("/v1/audit/export", vec![("from", "x")], "from"),
        ("/v1/audit/checkpoints", vec![("member", "ru1")], "member"),
    ] {
        let q: Vec<(&str, String)> = q.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        match auditor.get(path, &q).await.expect_err("refused") {
            ClientError::Api { status, message, .. } => {
                assert_eq!(status.as_u16(), 400, "{path} {q:?}");
                assert!(message.contains(needle), "{path} {q:?}: {message}");
            }
            other => panic!("{other}"),
        }
    }
    let bad = auditor.get("/v1/audit/trace/xyz", &[]).await.expect_err("refused");
    assert_eq!(status_of(bad), 400);
    let bad =
        auditor.post("/v1/audit/verify", &serde_json::json!({ "witness": "no" })).await.expect_err("refused");
    assert_eq!(status_of(bad), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_follows_a_record_to_a_peer_with_the_peers_signed_receipt() {
    let mut fed = TestFederation::start(&["RU", "KZ"]).await.expect("starts");
    let (ru_node, kz_node) = (fed.node("RU"), fed.node("KZ"));
    // Connected first, so that the record is pushed (and receipted) rather than pulled.
    let op = ru_node.client(Role::Operator);
    wait_for("RU and KZ connected", || {
        let op = op.clone();
        async move {
            let v = op.get("/v1/peers", &[]).await.expect("peers");
            v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["member"] == "KZ" && p["connected"] == true))
        }
    })
    .await;
    let id = ingest(ru_node, "shared with KZ").await;
    let auditor = ru_node.client(Role::Auditor);
    let path = format!("/v1/audit/trace/{id}");
    wait_for("a delivered entry on RU", || {
        let (a, p) = (auditor.clone(), path.clone());
        async move {
            let t = a.get(&p, &[]).await.expect("traces");
            t.as_array().is_some_and(|t| t.iter().any(|e| e["entry"]["action"] == "delivered"))
        }
    })
    .await;
    let trace = auditor.get(&path, &[]).await.expect("traces");
    let trace: Vec<tamga_node::audit::ExportedEntry> = serde_json::from_value(trace).expect("entries");
    assert_eq!(trace[0].entry.action.as_str(), "ingested", "{trace:?}");
    let kz: MemberCode = "KZ".parse().expect("valid");
    let delivered = trace.iter().find(|e| e.entry.action.as_str() == "delivered").expect("delivered");
    assert_eq!(delivered.entry.peer, Some(kz));
    let receipt = delivered
        .entry
        .receipts_for(id.parse().expect("an id"))
        .next()
        .expect("the entry carries its receipt");
    assert_eq!((receipt.receiver, receipt.origin), (kz, ru()));
    let key = tamga_node::identity::Identity::from_secret(tamga_config::demo::demo_secret(kz)).signing;
    assert!(receipt.verify(&key.verifying_key()).is_ok(), "signed by KZ");
    // The record's view on RU lists the receipt, read back from that entry.
    let shown = ru_node.client(Role::Operator).get(&format!("/v1/records/{id}"), &[]).await.expect("shows");
    let listed = shown["receipts"].as_array().expect("receipts");
    assert_eq!(listed.len(), 1, "{shown}");
    assert_eq!(
        (&listed[0]["for"], &listed[0]["receiver"], &listed[0]["seq"]),
        (&serde_json::json!("delivered"), &serde_json::json!("KZ"), &serde_json::json!(receipt.seq)),
        "{shown}"
    );
    // KZ's own log has the other end: received from RU, under the same agreement.
    let theirs = kz_node.client(Role::Auditor).get(&path, &[]).await.expect("traces");
    let theirs: Vec<tamga_node::audit::ExportedEntry> = serde_json::from_value(theirs).expect("entries");
    let received = theirs.iter().find(|e| e.entry.action.as_str() == "received").expect("received");
    assert_eq!(
        (received.entry.peer, received.entry.agreement.as_ref()),
        (Some(ru()), Some(&receipt.agreement))
    );
    fed.stop().await;
}

// A record pulled by a peer that was away when it was made: the origin's trace of it shows
// it leaving for that peer, in the `sent` entry of the pull (a pull brings back no receipt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_follows_a_record_a_peer_pulled() {
    let mut fed = TestFederation::start(&["RU", "KZ"]).await.expect("starts");
    fed.nodes.get_mut("KZ").expect("KZ").stop().await;
    let id = ingest(fed.node("RU"), "made while KZ was away").await;
    fed.nodes.get_mut("KZ").expect("KZ").restart().await.expect("KZ starts");
    let path = format!("/v1/audit/trace/{id}");
    let kz_auditor = fed.node("KZ").client(Role::Auditor);
    wait_for("KZ receives the record", || {
        let (a, p) = (kz_auditor.clone(), path.clone());
        async move {
            let t = a.get(&p, &[]).await.expect("traces");
            t.as_array().is_some_and(|t| t.iter().any(|e| e["entry"]["action"] == "received"))
        }
    })
    .await;
    let trace = fed.node("RU").client(Role::Auditor).get(&path, &[]).await.expect("traces");
    let trace: Vec<tamga_node::audit::ExportedEntry> = serde_json::from_value(trace).expect("entries");
    let sent =
        trace.iter().find(|e| e.entry.action.as_str() == "sent").unwrap_or_else(|| panic!("{trace:#?}"));
    assert_eq!(sent.entry.peer, Some("KZ".parse().expect("valid")));
    assert!(sent.entry.reason.as_deref().is_some_and(|r| r.starts_with("pulled: ")), "{sent:?}");
    fed.stop().await;
}

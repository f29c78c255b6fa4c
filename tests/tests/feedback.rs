//! Feedback between real nodes: what a receiver gives on a record while the record's
//! origin is away waits in the receiver's outbox, each piece on its own, and reaches the
//! origin once it is back — in rounds, and even if the origin purged the record meanwhile.

use serde_json::{json, Value};
use tamga_node::identity::Role;
use tamga_tests::*;

/// RU ingests one public enforcement alert; once KZ holds it, its id.
async fn alert_held_by_kz(f: &TestFederation) -> String {
    let rec = record_json(&example_catalog(), "enforcement.alert", "public", "feedback");
    let v = f.node("RU").client(Role::Operator).post("/v1/records", &rec).await.expect("ingests");
    let id = v["ids"][0].as_str().expect("an id").to_owned();
    let kz = f.node("KZ").client(Role::Operator);
    wait_for("KZ holds RU's alert", || async {
        kz.get(&format!("/v1/records/{id}"), &[]).await.is_ok_and(|r| r["record"]["state"] == "live")
    })
    .await;
    id
}

/// KZ gives feedback on `id`.
async fn give(f: &TestFederation, id: &str, outcome: &str, note: &str) {
    let v = f
        .node("KZ")
        .client(Role::Operator)
        .post(&format!("/v1/records/{id}/feedback"), &json!({ "outcome": outcome, "note": note }))
        .await
        .expect("gives feedback");
    assert_eq!(v["origin"], "RU");
}

/// The feedback RU holds on `id`, as (from, outcome, note), sorted.
async fn held_by_ru(f: &TestFederation, id: &str) -> Vec<(String, String, String)> {
    let r = f.node("RU").client(Role::Operator).get(&format!("/v1/records/{id}"), &[]).await.expect("shows");
    let s = |x: &Value, k: &str| x[k].as_str().unwrap_or_default().to_owned();
    let mut out: Vec<_> = r["feedback"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (s(x, "from"), s(x, "outcome"), s(x, "note")))
        .collect();
    out.sort();
    out
}

/// The pieces of feedback KZ's outbox holds for RU and for CN, as `/v1/peers` shows them.
async fn waiting(f: &TestFederation) -> (Option<u64>, Option<u64>) {
    let v = f.node("KZ").client(Role::Operator).get("/v1/peers", &[]).await.expect("peers");
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    let count =
        |m: &str| peers.iter().find(|p| p["member"] == m).and_then(|p| p["feedback_waiting"].as_u64());
    (count("RU"), count("CN"))
}

fn kz(outcome: &str, note: &str) -> (String, String, String) {
    ("KZ".to_owned(), outcome.to_owned(), note.to_owned())
}

// Two pieces of feedback on one record, given while its origin is stopped, are two outbox
// entries: both reach the origin when it is back, and KZ records each as delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_feedbacks_given_while_the_origin_is_stopped_both_reach_it() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let id = alert_held_by_kz(&f).await;
    f.nodes.get_mut("RU").expect("RU").stop().await;
    give(&f, &id, "no_finding", "first look: nothing").await;
    give(&f, &id, "seized", "second look: 40 boxes at Troitsk").await;
    f.nodes.get_mut("RU").expect("RU").restart().await.expect("restarts");
    let want =
        vec![kz("no_finding", "first look: nothing"), kz("seized", "second look: 40 boxes at Troitsk")];
    wait_for("RU holds both pieces of KZ's feedback", || async { held_by_ru(&f, &id).await == want }).await;
    let auditor = f.node("KZ").client(Role::Auditor);
    wait_for("KZ records both as delivered", || async {
        let v = auditor.get("/v1/audit", &[("action", "feedback".into())]).await.expect("queries");
        let delivered = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with("delivered: ")))
            .count();
        delivered == 2
    })
    .await;
    f.stop().await;
}

// More feedback than one outbox round holds, given while the origin is stopped: the round
// on connecting sends the first [`OUTBOX_ROUND`], and the anti-entropy ticks the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_beyond_one_round_goes_on_the_next_ticks() {
    use tamga_node::sync::OUTBOX_ROUND;
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let id = alert_held_by_kz(&f).await;
    f.nodes.get_mut("RU").expect("RU").stop().await;
    let mut want = Vec::new();
    for i in 0..=OUTBOX_ROUND {
        let note = format!("look {i:03}");
        give(&f, &id, "no_finding", &note).await;
        want.push(kz("no_finding", &note));
    }
    // What waits is shown per origin in `tamga peers` (`FEEDBACK`).
    assert_eq!(waiting(&f).await, (Some(OUTBOX_ROUND as u64 + 1), Some(0)));
    f.nodes.get_mut("RU").expect("RU").restart().await.expect("restarts");
    wait_for("RU holds every piece of KZ's feedback", || async { held_by_ru(&f, &id).await == want }).await;
    wait_for("KZ's outbox empty", || async { waiting(&f).await == (Some(0), Some(0)) }).await;
    f.stop().await;
}

// Feedback that reaches the origin only after the origin revoked the record (and so purged
// its share) is still taken: the origin checks it against the audience its purge mark
// kept, rather than refusing it on every round for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_reaching_the_origin_after_it_revoked_the_record_is_taken() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let id = alert_held_by_kz(&f).await;
    f.nodes.get_mut("RU").expect("RU").stop().await;
    give(&f, &id, "seized", "before the revocation").await;
    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    f.nodes.get_mut("RU").expect("RU").restart().await.expect("restarts");
    let ru = f.node("RU").client(Role::Operator);
    ru.post(&format!("/v1/records/{id}/revoke"), &json!({})).await.expect("revokes");
    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");
    let want = vec![kz("seized", "before the revocation")];
    wait_for("RU holds KZ's feedback", || async { held_by_ru(&f, &id).await == want }).await;
    let v = f
        .node("RU")
        .client(Role::Auditor)
        .get("/v1/audit", &[("action", "rejected".into()), ("peer", "KZ".into())])
        .await
        .expect("queries");
    let refused: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.contains("not shared")))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    f.stop().await;
}

//! Hot reload under load: RU ingests energy records continuously and pushes them to KZ
//! while its policy is reloaded again and again — pausing KZ, lifting the pause, changing
//! only a comment, and three invalid edits. The audit log is then held to what reload
//! promises (see `tamga_tests::reload`): every entry under one complete policy, each
//! ingest under the policy in force when it was made, one `policy_loaded` per change with
//! the new digest, refusals that change nothing, and KZ never receiving a record ingested
//! while it was paused. And the file watcher alone puts an edit in force, and a field the
//! catalog in force no longer lists does not leave with a projection stored before.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tamga_node::identity::Role;
use tamga_tests::reload::*;
use tamga_tests::*;

const ENERGY: &str = "sco-energy-2008";

/// RU's policy as the example has it, and variants.
fn variants(base: &str) -> Vec<(&'static str, String)> {
    let paused = base.replace("except = [\"TJ\"]", "except = [\"TJ\", \"KZ\"]");
    let comment = format!("{base}\n# reviewed by the administrator\n");
    let secret = base.replace("classifications = [\"public\"]", "classifications = [\"secret\"]");
    let typo = base.replace("note = \"TJ", "nota = \"TJ");
    let unknown = base.replace("agreement = \"sco-rms-2013\"", "agreement = \"sco-rms-2031\"");
    assert!(paused != base && secret != base && typo != base && unknown != base);
    vec![
        ("pause KZ", paused.clone()),
        ("invalid: secret", secret),
        ("lift the pause", base.to_owned()),
        ("comment only", comment),
        ("pause KZ again", paused),
        ("invalid: unknown key", typo),
        ("lift the pause again", base.to_owned()),
        ("invalid: unknown agreement", unknown),
        ("pause KZ a third time", base.replace("except = [\"TJ\"]", "except = [\"KZ\", \"TJ\"]")),
    ]
}

/// Replace a file atomically (write aside, rename), as careful editors do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.edit");
    std::fs::write(&tmp, text).expect("writes");
    std::fs::rename(&tmp, path).expect("renames");
}

async fn digest(n: &TestNode) -> String {
    let s = n.client(Role::Operator).get("/v1/status", &[]).await.expect("status");
    s["policy_digest"].as_str().expect("a digest").to_owned()
}

/// What one run of the scenario saw.
struct Run {
    initial: String,
    start_ms: i64,
    reloads: Vec<ReloadMark>,
    ingests: Vec<IngestMark>,
    /// RU's log.
    entries: Vec<Value>,
    /// KZ's log.
    at_kz: Vec<Value>,
}

/// RU and KZ; RU ingests continuously while its policy is reloaded [`variants`] times.
async fn scenario() -> Run {
    let mut f = TestFederation::start(&["RU", "KZ"]).await.expect("starts");
    let ru = f.node("RU");
    let policy = ru.federation.as_ref().expect("its own files").path().join("policies/RU.toml");
    let base = std::fs::read_to_string(&policy).expect("reads");
    let cat = example_catalog();
    let op = ru.client(Role::Operator);
    let admin = ru.client(Role::Admin);

    // Warm up: KZ is connected and receives RU's energy records.
    wait_for("RU connected to KZ", || {
        let entries = audit_entries(ru.node());
        async move { entries.iter().any(|e| e["action"] == "peer_connected" && e["peer"] == "KZ") }
    })
    .await;
    let first = op
        .post("/v1/records", &record_json(&cat, "energy.transfer", "public", "warm-up"))
        .await
        .expect("ingests");
    let first = first["ids"][0].as_str().expect("an id").to_owned();
    let kz = f.node("KZ");
    wait_for("the first record at KZ", || {
        let entries = audit_entries(kz.node());
        let first = first.clone();
        async move { entries.iter().any(|e| received_records(e).contains(&first.as_str())) }
    })
    .await;
    let initial = digest(ru).await;
    let start_ms = wall_ms();

    // Load: two clients ingesting batches of four energy records until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for c in 0..2 {
        let (op, cat, stop) = (op.clone(), cat.clone(), stop.clone());
        loaders.push(tokio::spawn(async move {
            let mut marks = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let recs: Vec<Value> = (0..4)
                    .map(|j| {
                        record_json(&cat, "energy.transfer", "non_confidential", &format!("c{c}-{n}-{j}"))
                    })
                    .collect();
                let started_ms = wall_ms();
                let v =
                    op.post("/v1/records", &json!({ "records": recs })).await.expect("ingests under reload");
                let ended_ms = wall_ms();
                let ids = v["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_str().expect("id").to_owned())
                    .collect();
                marks.push(IngestMark { started_ms, ended_ms, ids });
                n += 1;
            }
            marks
        }));
    }

    // The reloads.
    let mut reloads: Vec<ReloadMark> = Vec::new();
    let mut in_force = initial.clone();
    for (what, text) in variants(&base) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let changed_ms = wall_ms();
        replace(&policy, &text);
        let answer = admin.post("/v1/policy/reload", &json!({})).await;
        let returned_ms = wall_ms();
        let refused = answer.is_err();
        if let Err(e) = &answer {
            assert!(e.to_string().contains("stays"), "{what}: {e}");
        }
        let now = digest(ru).await;
        if refused {
            assert_eq!(now, in_force, "{what}: a refused reload leaves the policy in force");
        } else {
            assert_ne!(now, in_force, "{what}: a valid edit changes the digest");
        }
        let pauses_kz =
            text.contains("except = [\"TJ\", \"KZ\"]") || text.contains("except = [\"KZ\", \"TJ\"]");
        let paused = match (refused, reloads.last()) {
            (true, Some(prev)) => prev.paused.clone(),
            (true, None) => Vec::new(),
            (false, _) if pauses_kz => vec![("KZ".to_owned(), ENERGY.to_owned())],
            (false, _) => Vec::new(),
        };
        reloads.push(ReloadMark {
            changed_ms,
            returned_ms,
            digest: now.clone(),
            refused,
            changed: now != in_force,
            paused,
        });
        in_force = now;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ingests = Vec::new();
    for l in loaders {
        ingests.extend(l.await.expect("the loader ran"));
    }
    // Let the last pushes and their audit entries land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let entries = audit_entries(ru.node());
    let at_kz = audit_entries(f.node("KZ").node());
    let report = tamga_node::audit::verify_store(&ru.node().shared().store);
    assert!(report.ok, "{report:?}");
    f.stop().await;
    Run { initial, start_ms, reloads, ingests, entries, at_kz }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load() {
    let Run { initial, start_ms, reloads, ingests, entries, at_kz } = scenario().await;
    let records: usize = ingests.iter().map(|i| i.ids.len()).sum();
    assert!(records >= 100, "load while reloading: {records} records");
    check_entries_carry_complete_policies(&initial, &reloads, &entries);
    let checked = check_ingests_follow_reloads(&initial, start_ms, &reloads, &ingests, &entries);
    assert!(checked >= records / 2, "most records fall wholly between reloads: {checked} of {records}");
    check_reload_entries(&initial, &reloads, &entries);
    // No entry is made under a set before the entry saying it was loaded: that one is
    // durable before the set is in force.
    let mut loaded: std::collections::HashSet<&str> = [initial.as_str()].into();
    for e in &entries {
        let policy = e["policy"].as_str().expect("a digest");
        if e["action"] == "policy_loaded" {
            loaded.insert(policy);
        }
        assert!(loaded.contains(policy), "an entry under {policy} before its policy_loaded: {e}");
    }
    let paused_records = check_not_received_while_paused(&reloads, &ingests, &at_kz, "KZ", ENERGY);
    assert!(paused_records > 0, "some records were ingested while KZ was paused");
    // And while not paused, KZ did receive: the pause is what stopped it.
    let received: usize =
        at_kz.iter().filter(|e| e["agreement"] == ENERGY).map(|e| received_records(e).len()).sum();
    assert!(received > 1, "KZ received records while not paused");
    eprintln!(
        "reload under load: {records} records, {} reloads ({} refused), {checked} checked against their policy, {paused_records} ingested while KZ was paused, {received} received by KZ",
        reloads.len(),
        reloads.iter().filter(|r| r.refused).count()
    );
}

/// The stronger send check (see `tamga_tests::reload`): every `sent` entry carries the
/// digest of the policy its decision was made under, and none to KZ carries one that
/// pauses KZ (sync decides again right before a push leaves and tags the entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_sends_follow_their_deciding_policy() {
    let Run { reloads, entries, .. } = scenario().await;
    check_sent_under_deciding_policy(&reloads, &entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watcher_alone_puts_an_edit_in_force_and_refuses_a_bad_one() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let policy = ru.federation.as_ref().expect("its own files").path().join("policies/RU.toml");
    let base = std::fs::read_to_string(&policy).expect("reads");
    let mut watch = ru.node().shared().reloader.subscribe();
    let d0 = digest(ru).await;
    // A half-written edit (invalid), quickly completed: the debounce sees only the result.
    std::fs::write(&policy, &base[..base.len() / 2]).expect("writes");
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&policy, base.replace("except = [\"TJ\"]", "except = [\"TJ\", \"UZ\"]")).expect("writes");
    tokio::time::timeout(WAIT, watch.changed()).await.expect("a new policy in time").expect("the node runs");
    let fed = watch.borrow_and_update().clone();
    assert_ne!(fed.policy_digest.to_hex(), d0);
    assert_eq!(digest(ru).await, fed.policy_digest.to_hex());
    let entries = audit_entries(ru.node());
    assert!(
        entries.iter().all(|e| e["action"] != "policy_refused"),
        "the half-written file was never loaded"
    );
    // A bad edit: refused and audited, the policy in force stays.
    let bad = base.replace("classifications = [\"public\"]", "classifications = [\"confidential\"]");
    replace(&policy, &bad);
    wait_for("the refusal", || {
        let entries = audit_entries(ru.node());
        async move { entries.iter().any(|e| e["action"] == "policy_refused") }
    })
    .await;
    assert_eq!(digest(ru).await, fed.policy_digest.to_hex());
    let refused: Vec<Value> =
        audit_entries(ru.node()).into_iter().filter(|e| e["action"] == "policy_refused").collect();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("a policy may not share confidential records")),
        "{}",
        refused[0]
    );
    f.stop().await;
}

/// An agreement past its end date shares nothing: RU's enforcement alerts stay home, the
/// refusal is audited, and KZ receives nothing under it — while the other agreements go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreement_past_its_end_shares_nothing() {
    let ended = |_: &str, dir: &Path| {
        let p = dir.join("agreements/ru-kz-enforcement.toml");
        let text = std::fs::read_to_string(&p).expect("reads");
        let text = text.replace(
            "effective_from = 2012-07-01\n",
            "effective_from = 2012-07-01\neffective_until = 2020-06-30\n",
        );
        std::fs::write(p, text).expect("writes");
    };
    let mut f = TestFederation::start_with(&["RU", "KZ"], ended).await.expect("starts");
    let (ru, kz) = (f.node("RU"), f.node("KZ"));
    wait_for("RU connected to KZ", || {
        let entries = audit_entries(ru.node());
        async move { entries.iter().any(|e| e["action"] == "peer_connected" && e["peer"] == "KZ") }
    })
    .await;
    let cat = example_catalog();
    let op = ru.client(Role::Operator);
    let alert = op
        .post("/v1/records", &record_json(&cat, "enforcement.alert", "non_confidential", "late"))
        .await
        .expect("ingests");
    let alert = alert["ids"][0].as_str().expect("an id").to_owned();
    let energy = op
        .post("/v1/records", &record_json(&cat, "energy.transfer", "public", "still"))
        .await
        .expect("ingests");
    let energy = energy["ids"][0].as_str().expect("an id").to_owned();
    // The energy record arrives: the link works.
    wait_for("the energy record at KZ", || {
        let entries = audit_entries(kz.node());
        let energy = energy.clone();
        async move { entries.iter().any(|e| received_records(e).contains(&energy.as_str())) }
    })
    .await;
    let at_ru = audit_entries(ru.node());
    let withheld: Vec<&Value> =
        at_ru.iter().filter(|e| e["action"] == "withheld" && e["record"] == alert.as_str()).collect();
    assert!(!withheld.is_empty(), "the alert's refusal is audited");
    assert!(
        withheld.iter().all(|e| e["reason"].as_str().is_some_and(|r| r.contains("not in force"))),
        "{withheld:?}"
    );
    let at_kz = audit_entries(kz.node());
    assert!(
        at_kz.iter().all(|e| e["record"] != alert.as_str() && !received_records(e).contains(&alert.as_str())),
        "KZ never hears of the alert"
    );
    f.stop().await;
}

/// Reloads never overlap: eight asked at once after one edit put it in force once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_put_a_change_in_force_once() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let policy = ru.federation.as_ref().expect("its own files").path().join("policies/RU.toml");
    let base = std::fs::read_to_string(&policy).expect("reads");
    replace(&policy, &format!("{base}\n# one change\n"));
    let reloader = ru.node().shared().reloader.clone();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let r = reloader.clone();
            tokio::spawn(async move { r.reload(tamga_node::reload::Trigger::Api).await })
        })
        .collect();
    let mut changed = 0;
    for c in calls {
        if c.await.expect("the call ran").expect("valid files").changed {
            changed += 1;
        }
    }
    // The watcher may have been first; then none of the calls changed anything.
    wait_for("the policy_loaded entry", || {
        let entries = audit_entries(ru.node());
        async move { entries.iter().any(|e| e["action"] == "policy_loaded") }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded: Vec<Value> =
        audit_entries(ru.node()).into_iter().filter(|e| e["action"] == "policy_loaded").collect();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert!(changed <= 1);
    f.stop().await;
}

/// A roster that no longer lists this node's PeerId for its member is refused on reload,
/// as `tamga run` would refuse it at the next start: the policy in force stays, and the
/// refusal, naming the roster and the PeerId, is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_that_drops_this_node_is_refused() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let roster = ru.federation.as_ref().expect("its own files").path().join("roster.toml");
    let own = ru.node().shared().identity.peer_id().to_string();
    let other = tamga_node::identity::Identity::generate().peer_id().to_string();
    let text = std::fs::read_to_string(&roster).expect("reads");
    assert!(text.contains(&own), "the example roster lists RU's demo identity");
    let d0 = digest(ru).await;
    replace(&roster, &text.replace(&own, &other));
    let err = ru
        .client(Role::Admin)
        .post("/v1/policy/reload", &json!({}))
        .await
        .expect_err("a roster without this node is refused");
    let tamga_node::client::ClientError::Api { status, message, details } = err else {
        panic!("an API error: {err}")
    };
    assert_eq!(status.as_u16(), 422);
    assert!(message.contains("stays"), "{message}");
    let details = details.map(|d| d.to_string()).unwrap_or_default();
    assert!(
        details.contains(&own) && details.contains("roster.toml"),
        "names the PeerId and the roster: {details}"
    );
    assert_eq!(digest(ru).await, d0, "the policy in force stays");
    let refused: Vec<Value> =
        audit_entries(ru.node()).into_iter().filter(|e| e["action"] == "policy_refused").collect();
    assert!(!refused.is_empty(), "the refusal is audited");
    assert!(
        refused
            .iter()
            .all(|e| e["reason"].as_str().is_some_and(|r| r.contains(&own) && r.contains("roster.toml"))),
        "{refused:?}"
    );
    assert!(audit_entries(ru.node()).iter().all(|e| e["action"] != "policy_loaded"));
    f.stop().await;
}

/// A field the catalog in force no longer lists has no tags left to decide on: RU's
/// projection stored before the catalog renamed the field reaches KZ, which was away,
/// without it. (Both take the new catalog: it is part of the agreement's terms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_the_catalog_no_longer_lists_does_not_leave() {
    let mut f = TestFederation::start(&["RU", "KZ"]).await.expect("starts");
    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    let cat = example_catalog();
    let ru = f.node("RU");
    let mut record = record_json(&cat, "rms.method", "public", "renamed");
    record["body"]["summary"] = json!("Routes are scored.");
    let id = ru.client(Role::Operator).post("/v1/records", &record).await.expect("ingests")["ids"][0]
        .as_str()
        .expect("an id")
        .to_owned();
    let catalog = ru.federation.as_ref().expect("own federation copy").path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).expect("reads");
    let (old, new) =
        ("[category.\"rms.method\".fields.summary]", "[category.\"rms.method\".fields.synopsis]");
    assert_eq!(text.matches(old).count(), 1);
    replace(&catalog, &text.replace(old, new));
    let v = ru.client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    assert_eq!(v["outcome"], "loaded", "{v}");
    let kz_catalog =
        f.node("KZ").federation.as_ref().expect("own federation copy").path().join("catalog.toml");
    replace(&kz_catalog, &text.replace(old, new));

    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");
    let kz = f.node("KZ");
    let path = format!("/v1/records/{id}");
    wait_for("RU's record at KZ", || {
        let c = kz.client(Role::Operator);
        let path = path.clone();
        async move { c.get(&path, &[]).await.is_ok() }
    })
    .await;
    let held = kz.client(Role::Operator).get(&path, &[]).await.expect("shows");
    let body = &held["record"]["body"];
    assert!(body["title"].is_string(), "{held:#}");
    assert!(body.get("summary").is_none(), "a field RU's catalog no longer lists left it: {held:#}");
    f.stop().await;
}

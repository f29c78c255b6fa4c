//! Federations of real nodes on loopback: every node ends up holding exactly what the
//! agreements and policies allow it — computed here from the files — and not one record
//! more; redacted fields never arrive; bilateral records stay bilateral; a stopped node
//! catches up; a cut link heals through a relay; a changed agreement stops only itself;
//! the same holds over QUIC, and between members on TCP and members on QUIC; what a
//! member's accept policy declines does not hold its streams back.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tamga_config::Federation;
use tamga_node::identity::Role;
use tamga_protocol::{Classification, MemberCode, RecordHeader};
use tamga_tests::*;

const ALL: [&str; 7] = ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"];

fn fed_of(node: &TestNode) -> Federation {
    Federation::load(&node.config().expect("config")).expect("the federation loads")
}

/// Ingest one record of every category and classification at `member`; returns ids.
async fn ingest_mix(f: &TestFederation, member: &str, tag: &str) -> Vec<String> {
    ingest(f, member, tag, &example_categories()).await
}

/// Ingest one record of each of `categories` in every classification at `member`.
async fn ingest<S: AsRef<str>>(f: &TestFederation, member: &str, tag: &str, categories: &[S]) -> Vec<String> {
    let recs = record_mix(member, tag, categories);
    let v = f
        .node(member)
        .client(Role::Operator)
        .post("/v1/records", &json!({ "records": recs }))
        .await
        .expect("ingests");
    v["ids"].as_array().expect("ids").iter().map(|x| x.as_str().expect("id").to_owned()).collect()
}

async fn records(node: &TestNode) -> Vec<Value> {
    let v =
        node.client(Role::Operator).get("/v1/records", &[("limit", "10000".into())]).await.expect("lists");
    v["records"].as_array().cloned().unwrap_or_default()
}

fn header_of(r: &Value) -> RecordHeader {
    RecordHeader {
        category: r["category"].as_str().expect("category").parse().expect("valid"),
        classification: serde_json::from_value::<Classification>(r["classification"].clone()).expect("valid"),
        origin: r["origin"].as_str().expect("origin").parse().expect("valid"),
        created_ms: chrono_ms(r["created"].as_str().expect("created")),
        supersedes: None,
        expires_ms: None,
    }
}

fn chrono_ms(s: &str) -> i64 {
    tamga_node::api::parse_since(s, 0).expect("an RFC 3339 time")
}

/// Who should hold what, for every record ingested anywhere.
async fn oracle(f: &TestFederation) -> BTreeMap<String, BTreeSet<String>> {
    let feds: BTreeMap<MemberCode, Federation> =
        f.nodes.iter().map(|(m, n)| (m.parse().expect("a member code"), fed_of(n))).collect();
    let now = tamga_node::writer::now_ms();
    let mut want: BTreeMap<String, BTreeSet<String>> =
        f.nodes.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (m, n) in &f.nodes {
        for r in records(n).await {
            if r["origin"] != m.as_str() {
                continue;
            }
            let id = r["id"].as_str().expect("id").to_owned();
            for holder in tamga_node::localfed::expected_holders(&header_of(&r), &feds, now) {
                if let Some(set) = want.get_mut(holder.as_str()) {
                    set.insert(id.clone());
                }
            }
        }
    }
    want
}

async fn holdings(f: &TestFederation) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (m, n) in &f.nodes {
        if n.node.is_none() {
            continue;
        }
        let ids = records(n)
            .await
            .iter()
            .filter(|r| r["state"] == "live")
            .filter_map(|r| r["id"].as_str().map(String::from))
            .collect();
        out.insert(m.clone(), ids);
    }
    out
}

async fn converge(f: &TestFederation, what: &str) {
    let want = oracle(f).await;
    let mut last = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        last = holdings(f).await;
        let done = last.iter().all(|(m, held)| want.get(m) == Some(held));
        if done {
            return;
        }
        // Never one record more, even on the way.
        for (m, held) in &last {
            let extra: Vec<_> = held.difference(&want[m]).collect();
            assert!(extra.is_empty(), "{what}: {m} holds records the policies do not allow: {extra:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let diff: Vec<String> = last
        .iter()
        .map(|(m, held)| {
            format!(
                "{m}: holds {} want {} missing {:?}",
                held.len(),
                want[m].len(),
                want[m].difference(held).count()
            )
        })
        .collect();
    panic!("{what}: no convergence: {diff:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federation_holds_exactly_what_policies_allow() {
    let mut f = TestFederation::start(&ALL).await.expect("starts");
    for m in ALL {
        ingest_mix(&f, m, "a").await;
    }
    converge(&f, "six members and an observer").await;

    // Redacted fields never arrive: every received record lacks its agreement's withheld fields.
    let feds: BTreeMap<String, Federation> = f.nodes.iter().map(|(m, n)| (m.clone(), fed_of(n))).collect();
    for (m, n) in &f.nodes {
        for r in records(n).await {
            if r["source"]["kind"] != "received" {
                assert_eq!(r["origin"], m.as_str());
                continue;
            }
            assert_ne!(r["classification"], "confidential", "{m} received a confidential record");
            // What is withheld is the origin's decision (its agreement text and its policy).
            let fed = &feds[r["origin"].as_str().expect("origin")];
            let a = fed
                .agreement(&r["source"]["agreement"].as_str().expect("agreement").parse().expect("valid"))
                .expect("known");
            let category = r["category"].as_str().expect("category").parse().expect("valid");
            let withheld = tamga_config::withheld(a, &category).expect("covered");
            for field in withheld.iter() {
                assert!(r["body"].get(field).is_none(), "{m} received withheld field {field} of {}", r["id"]);
            }
            assert_eq!(r["withheld_fields"].as_u64(), Some(withheld.len() as u64));
        }
    }

    // Bilateral: RU's enforcement alerts reach KZ and nobody else, relays included.
    for (m, n) in &f.nodes {
        for r in records(n).await {
            if r["category"] == "enforcement.alert" && r["origin"] == "RU" {
                assert!(m == "RU" || m == "KZ", "{m} holds an RU–KZ alert");
            }
        }
    }
    let kz_alerts = records(f.node("KZ"))
        .await
        .iter()
        .filter(|r| r["category"] == "enforcement.alert" && r["origin"] == "RU")
        .count();
    assert!(kz_alerts > 0, "KZ received RU's alerts");

    // Deliveries are acknowledged with signed receipts and audited.
    let auditor = f.node("RU").client(Role::Auditor);
    wait_for("RU's delivered entries", || async {
        let v = auditor.get("/v1/audit", &[("action", "delivered".into())]).await.expect("queries");
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let peers = f.node("RU").client(Role::Operator).get("/v1/peers", &[]).await.expect("peers");
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(6));
    assert!(peers["peers"].as_array().expect("peers").iter().all(|p| p["connected"] == true));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_node_catches_up_and_cut_link_heals_through_a_relay() {
    let mut f = TestFederation::start(&["CN", "KZ", "RU", "UZ"]).await.expect("starts");
    ingest_mix(&f, "RU", "before").await;
    converge(&f, "first round").await;

    // UZ stops; RU ingests; UZ restarts and catches up without RU resending everything.
    f.nodes.get_mut("UZ").expect("UZ").stop().await;
    ingest_mix(&f, "RU", "while-down").await;
    f.nodes.get_mut("UZ").expect("UZ").restart().await.expect("restarts");
    converge(&f, "after UZ's restart").await;
    // UZ signed a checkpoint of its log when it stopped; its hello hands it to RU, which
    // keeps it as a witness.
    let ru_auditor = f.node("RU").client(Role::Auditor);
    wait_for("RU keeps UZ's checkpoint", || async {
        let v = ru_auditor.get("/v1/audit/checkpoints", &[("member", "UZ".into())]).await.expect("lists");
        v["checkpoints"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;

    // Cut the RU–CN link (both sides refuse each other; both nodes keep running).
    let ru_peers: Vec<_> = tamga_node::daemon::peer_entries(&fed_of(f.node("RU")))
        .into_iter()
        .filter(|p| p.member.as_str() != "CN")
        .collect();
    let cn_peers: Vec<_> = tamga_node::daemon::peer_entries(&fed_of(f.node("CN")))
        .into_iter()
        .filter(|p| p.member.as_str() != "RU")
        .collect();
    f.node("RU").node().shared().net.set_peers(ru_peers).await.expect("cuts");
    f.node("CN").node().shared().net.set_peers(cn_peers).await.expect("cuts");
    let cn: MemberCode = "CN".parse().expect("valid");
    wait_for("RU–CN link down", || async {
        let c = f.node("RU").node().shared().net.connected().await.unwrap_or_default();
        !c.iter().any(|(m, _)| *m == cn)
    })
    .await;
    // Only IPR records: the IPR memorandum allows relaying, so CN gets them from KZ or UZ.
    ingest(&f, "RU", "cut", &["ipr.protected_mark", "ipr.infringement"]).await;
    converge(&f, "through a relay").await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_agreement_stops_sharing_under_it_only() {
    ipr_terms_differ_at_kz("agreements/sco-ipr-2012.toml", |text| {
        format!("{text}\n# KZ's copy differs by this line.\n")
    })
    .await;
}

// Invariant 3 between parties: KZ's catalog does not tag the IPR right holder's name
// `personal`, so KZ would send it under the memorandum that redacts personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_defining_a_covered_category_otherwise_stops_sharing_under_that_agreement_only() {
    ipr_terms_differ_at_kz("catalog.toml", |text| {
        let field = "[category.\"ipr.protected_mark\".fields.right_holder_name]";
        let at = text.find(field).expect("the example catalog has the field");
        let (head, tail) = text.split_at(at);
        let tail = tail.replacen("tags = [\"personal\"]\n", "", 1);
        assert_ne!(tail, &text[at..], "the field was tagged");
        format!("{head}{tail}")
    })
    .await;
}

/// KZ's copy of `file` is edited by `edit`: nothing flows between RU and KZ under the IPR
/// memorandum, the rest still does, and the mismatch is audited and shown in `peers`.
async fn ipr_terms_differ_at_kz(file: &'static str, edit: fn(&str) -> String) {
    let mut f = TestFederation::start_with(&["KZ", "RU"], move |member, dir| {
        if member == "KZ" {
            let p = dir.join(file);
            let text = std::fs::read_to_string(&p).expect("reads");
            std::fs::write(&p, edit(&text)).expect("writes");
        }
    })
    .await
    .expect("starts");
    ingest_mix(&f, "RU", "x").await;
    ingest_mix(&f, "KZ", "y").await;
    converge(&f, "with the IPR memorandum's terms differing").await;
    let ru = records(f.node("RU")).await;
    assert!(
        ru.iter().all(|r| r["origin"] != "KZ" || !r["category"].as_str().unwrap_or("").starts_with("ipr.")),
        "nothing under IPR from KZ"
    );
    assert!(ru.iter().any(|r| r["origin"] == "KZ" && r["category"] == "rms.method"), "RMS still flows");
    let kz = records(f.node("KZ")).await;
    assert!(
        kz.iter().all(|r| r["origin"] != "RU" || !r["category"].as_str().unwrap_or("").starts_with("ipr.")),
        "nothing under IPR from RU"
    );
    assert!(kz.iter().any(|r| r["origin"] == "RU" && r["category"] == "rms.method"), "RMS still flows");
    let auditor = f.node("RU").client(Role::Auditor);
    let v = auditor.get("/v1/audit", &[("action", "digest_mismatch".into())]).await.expect("queries");
    assert!(
        v.as_array().is_some_and(|a| a.iter().any(|e| e["entry"]["agreement"] == "sco-ipr-2012")),
        "{v:#}"
    );
    let peers = f.node("RU").client(Role::Operator).get("/v1/peers", &[]).await.expect("peers");
    let kzp =
        peers["peers"].as_array().expect("peers").iter().find(|p| p["member"] == "KZ").expect("KZ").clone();
    let ipr = kzp["agreements"]
        .as_array()
        .expect("agreements")
        .iter()
        .find(|a| a["agreement"] == "sco-ipr-2012")
        .expect("ipr")
        .clone();
    assert_eq!(ipr["digest"], "mismatch");
    f.stop().await;
}

async fn record_on(node: &TestNode, id: &str) -> Option<Value> {
    node.client(Role::Operator).get(&format!("/v1/records/{id}"), &[]).await.ok().map(|v| v["record"].clone())
}

// The energy protocol allows no relaying. UZ, away while RU revoked a record, comes back
// cut off from RU and pulls RU's stream from KZ: KZ does not relay the revocation, and
// UZ, which would have refused it for coming from a relay, still asks RU for it once
// they meet, and purges the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_missed_under_an_agreement_without_relaying_is_taken_from_its_origin() {
    let mut f = TestFederation::start(&["KZ", "RU", "UZ"]).await.expect("starts");
    let ids = ingest(&f, "RU", "e", &["energy.transfer"]).await;
    converge(&f, "before the revocation").await;
    let id = ids[0].clone();
    for m in ["KZ", "UZ"] {
        assert_eq!(record_on(f.node(m), &id).await.expect("held")["state"], "live", "{m}");
    }
    f.nodes.get_mut("UZ").expect("UZ").stop().await;
    f.node("RU")
        .client(Role::Operator)
        .post(&format!("/v1/records/{id}/revoke"), &json!({}))
        .await
        .expect("revokes");
    let kz = f.node("KZ");
    wait_for("KZ purges the revoked record", || async {
        record_on(kz, &id).await.is_some_and(|r| r["state"] == "revoked")
    })
    .await;
    // RU refuses UZ while UZ comes back: UZ meets KZ only.
    let all_peers = tamga_node::daemon::peer_entries(&fed_of(f.node("RU")));
    let without_uz: Vec<_> = all_peers.iter().filter(|p| p.member.as_str() != "UZ").cloned().collect();
    f.node("RU").node().shared().net.set_peers(without_uz).await.expect("cuts");
    f.nodes.get_mut("UZ").expect("UZ").restart().await.expect("restarts");
    let uz = f.node("UZ");
    let kz_code: MemberCode = "KZ".parse().expect("valid");
    wait_for("UZ meets KZ", || async {
        let c = uz.node().shared().net.connected().await.unwrap_or_default();
        c.iter().any(|(m, _)| *m == kz_code)
    })
    .await;
    // A few anti-entropy rounds with KZ alone.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        record_on(uz, &id).await.expect("held")["state"],
        "live",
        "nothing relayed under the protocol"
    );
    f.node("RU").node().shared().net.set_peers(all_peers).await.expect("heals");
    wait_for("UZ takes the revocation from RU", || async {
        record_on(uz, &id).await.is_some_and(|r| r["state"] == "revoked")
    })
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_purges_everywhere_with_receipts_and_is_not_pulled_back() {
    let mut f = TestFederation::start(&["CN", "KZ", "RU", "UZ"]).await.expect("starts");
    let ids = ingest(&f, "RU", "r", &["ipr.infringement"]).await;
    converge(&f, "before the revocation").await;
    // The public infringement record is held by the other three.
    let id = ids[0].clone();
    for m in ["CN", "KZ", "UZ"] {
        let r = record_on(f.node(m), &id).await.expect("held");
        assert_eq!(r["state"], "live");
        assert!(r["body"].as_object().is_some_and(|b| !b.is_empty()));
    }
    f.nodes.get_mut("UZ").expect("UZ").stop().await;
    let v = f
        .node("RU")
        .client(Role::Operator)
        .post(&format!("/v1/records/{id}/revoke"), &json!({}))
        .await
        .expect("revokes");
    assert!(v["revocations"].as_u64().is_some_and(|n| n >= 1));
    for m in ["CN", "KZ"] {
        let node = f.node(m);
        wait_for(&format!("{m} purges the revoked record"), || async {
            record_on(node, &id).await.is_some_and(|r| {
                r["state"] == "revoked" && r["body"].as_object().is_some_and(|b| b.is_empty())
            })
        })
        .await;
    }
    let auditor = f.node("RU").client(Role::Auditor);
    wait_for("purge receipts from CN and KZ", || async {
        let v = auditor.get("/v1/audit", &[("action", "purged".into())]).await.expect("queries");
        let peers: BTreeSet<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["entry"]["record"] == id.as_str())
            .filter_map(|e| e["entry"]["peer"].as_str().map(String::from))
            .collect();
        peers.contains("CN") && peers.contains("KZ")
    })
    .await;
    // The origin's view of the record lists each holder's purge receipt (beside the share
    // receipt of a push; a record that reached it by pull has none).
    let shown =
        f.node("RU").client(Role::Operator).get(&format!("/v1/records/{id}"), &[]).await.expect("shows");
    for m in ["CN", "KZ"] {
        let kinds: BTreeSet<&str> = shown["receipts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["receiver"] == m)
            .filter_map(|r| r["for"].as_str())
            .collect();
        assert!(kinds.contains("purged"), "{m}: {shown}");
    }
    // UZ was down: it learns of the revocation when it comes back, from anyone.
    f.nodes.get_mut("UZ").expect("UZ").restart().await.expect("restarts");
    let uz = f.node("UZ");
    wait_for("UZ purges after its restart", || async {
        record_on(uz, &id)
            .await
            .is_some_and(|r| r["state"] == "revoked" && r["body"].as_object().is_some_and(|b| b.is_empty()))
    })
    .await;
    // Several anti-entropy rounds later the body has not come back anywhere.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for m in ["CN", "KZ", "UZ"] {
        let r = record_on(f.node(m), &id).await.expect("tombstone kept");
        assert_eq!(r["state"], "revoked", "{m}");
        assert!(r["body"].as_object().is_some_and(|b| b.is_empty()), "{m} took the body back");
    }
    f.stop().await;
}

/// A share rule that redacts one more field holds for what was ingested before it too: a
/// member that was down pulls the older records with today's redaction, not the one they
/// were stored under.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tighter_redaction_holds_for_records_ingested_before_it() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let body_on = |node: &TestNode, id: String| {
        let c = node.client(Role::Operator);
        async move {
            let r = c.get(&format!("/v1/records/{id}"), &[]).await.ok()?;
            (r["record"]["state"] == "live").then(|| r["record"]["body"].clone())
        }
    };
    let early = ingest(&f, "RU", "early", &["ipr.infringement"]).await.remove(0);
    wait_for("KZ holds the early record", || async { body_on(f.node("KZ"), early.clone()).await.is_some() })
        .await;
    let shown = body_on(f.node("KZ"), early.clone()).await.expect("held");
    assert!(shown.get("hs_code").is_some(), "shared in clear before the change: {shown}");

    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    let late = ingest(&f, "RU", "late", &["ipr.infringement"]).await.remove(0);
    let ru = f.node("RU");
    let policy = ru.federation.as_ref().expect("its own files").path().join("policies/RU.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    let rule = "[[share]]\nagreement = \"sco-ipr-2012\"\n";
    assert!(text.contains(rule));
    let tighter = text.replace(rule, &format!("{rule}redact_fields = [\"hs_code\"]\n"));
    std::fs::write(&policy, tighter).expect("writes");
    ru.client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");

    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");
    wait_for("KZ pulls the late record", || async { body_on(f.node("KZ"), late.clone()).await.is_some() })
        .await;
    let shown = body_on(f.node("KZ"), late.clone()).await.expect("held");
    assert!(shown.get("hs_code").is_none(), "redacted since its ingest: {shown}");
    assert!(shown.get("mark_name").is_some(), "the rest is shared: {shown}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_projections_are_purged_on_every_node() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let cat = example_catalog();
    let mut rec = record_json(&cat, "rms.method", "public", "soon");
    let expires = tamga_node::audit::rfc3339(tamga_node::writer::now_ms() + 10_000);
    rec["expires"] = json!(expires);
    let v = f.node("RU").client(Role::Operator).post("/v1/records", &rec).await.expect("ingests");
    let id = v["ids"][0].as_str().expect("id").to_owned();
    let kz = f.node("KZ");
    wait_for("KZ receives it", || async { record_on(kz, &id).await.is_some_and(|r| r["state"] == "live") })
        .await;
    wait_for("KZ purges it after expiry", || async {
        record_on(kz, &id)
            .await
            .is_some_and(|r| r["state"] == "expired" && r["body"].as_object().is_some_and(|b| b.is_empty()))
    })
    .await;
    // Each node purges on its own tick: the origin's may come a moment after KZ's.
    for m in ["KZ", "RU"] {
        let auditor = f.node(m).client(Role::Auditor);
        wait_for(&format!("{m}'s purged entry"), || async {
            let v = auditor.get("/v1/audit", &[("action", "purged".into())]).await.expect("queries");
            v.as_array().is_some_and(|a| a.iter().any(|e| e["entry"]["record"] == id.as_str()))
        })
        .await;
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_flows_back_to_the_origin_only() {
    let mut f = TestFederation::start(&["CN", "KZ", "RU"]).await.expect("starts");
    let ids = ingest(&f, "RU", "fb", &["enforcement.alert", "ipr.infringement"]).await;
    converge(&f, "before feedback").await;
    let alert = ids[0].clone();
    let kz = f.node("KZ").client(Role::Operator);
    let v = kz
        .post(
            &format!("/v1/records/{alert}/feedback"),
            &json!({ "outcome": "seized", "note": "40 boxes at Troitsk" }),
        )
        .await
        .expect("gives feedback");
    assert_eq!(v["origin"], "RU");
    let ru = f.node("RU").client(Role::Operator);
    wait_for("RU holds KZ's feedback", || async {
        let r = ru.get(&format!("/v1/records/{alert}"), &[]).await.expect("shows");
        r["feedback"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["from"] == "KZ" && x["outcome"] == "seized"))
    })
    .await;
    // Nobody else hears of it.
    let cn = f.node("CN").client(Role::Auditor);
    let v = cn.get("/v1/audit", &[("action", "feedback".into())]).await.expect("queries");
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v:#}");
    // Bad feedback is refused with a clear error and changes nothing.
    let bad = kz
        .post(&format!("/v1/records/{alert}/feedback"), &json!({ "outcome": "maybe" }))
        .await
        .expect_err("refused");
    assert!(bad.to_string().contains("seized"), "{bad}");
    let own = ru
        .post(&format!("/v1/records/{alert}/feedback"), &json!({ "outcome": "seized" }))
        .await
        .expect_err("own");
    assert!(own.to_string().contains("own"), "{own}");
    f.stop().await;
}

/// Drop XS from the roster and from the RMS memorandum in a federation directory.
fn without_xs(dir: &std::path::Path) {
    let roster = dir.join("roster.toml");
    let text = std::fs::read_to_string(&roster).expect("reads");
    let start = text.find("code = \"XS\"").and_then(|i| text[..i].rfind("[[member]]")).expect("XS listed");
    let end = text[start..]
        .find("addrs")
        .map(|i| start + i)
        .and_then(|i| text[i..].find('\n').map(|j| i + j + 1))
        .expect("end");
    std::fs::write(&roster, format!("{}{}", &text[..start], &text[end..])).expect("writes");
    let rms = dir.join("agreements/sco-rms-2013.toml");
    let text = std::fs::read_to_string(&rms).expect("reads").replace(", \"XS\"]", "]");
    std::fs::write(&rms, text).expect("writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_is_disconnected_at_once_and_receives_nothing_new() {
    let mut f = TestFederation::start(&["KZ", "RU", "XS"]).await.expect("starts");
    let before = ingest(&f, "RU", "before", &["rms.method"]).await;
    converge(&f, "before the change").await;
    let xs_held = |recs: Vec<Value>, id: &str| recs.iter().any(|r| r["id"] == id);
    assert!(xs_held(records(f.node("XS")).await, &before[0]), "XS had RU's public method");

    // RU and KZ take the new roster and agreement text; XS keeps its old files.
    for m in ["KZ", "RU"] {
        let dir = f.node(m).federation.as_ref().expect("own copy").path().to_owned();
        without_xs(&dir);
        let v = f.node(m).client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
        assert!(v.to_string().contains("loaded") || v["ok"] == true || v["digest"].is_string(), "{v}");
    }
    let xs: MemberCode = "XS".parse().expect("valid");
    for m in ["KZ", "RU"] {
        let node = f.node(m);
        wait_for(&format!("{m} drops XS"), || async {
            let c = node.node().shared().net.connected().await.unwrap_or_default();
            !c.iter().any(|(p, _)| *p == xs)
        })
        .await;
    }
    let after = ingest(&f, "RU", "after", &["rms.method"]).await;
    let kz = f.node("KZ");
    wait_for("KZ gets RU's new method", || async {
        records(kz).await.iter().any(|r| r["id"] == after[0].as_str())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!xs_held(records(f.node("XS")).await, &after[0]), "XS received a record after its removal");
    let auditor = f.node("RU").client(Role::Auditor);
    let v = auditor.get("/v1/audit", &[("action", "peer_disconnected".into())]).await.expect("queries");
    assert!(v.as_array().is_some_and(|a| a.iter().any(|e| e["entry"]["peer"] == "XS")), "{v:#}");
    f.stop().await;
}

/// Each peer's connection addresses as `member`'s `/v1/peers` reports them.
async fn peer_addrs(node: &TestNode) -> BTreeMap<String, Vec<String>> {
    let v = node.client(Role::Operator).get("/v1/peers", &[]).await.expect("peers");
    v["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            let addrs =
                p["addrs"].as_array().expect("addrs").iter().map(|a| a.as_str().expect("str").to_owned());
            (p["member"].as_str().expect("member").to_owned(), addrs.collect())
        })
        .collect()
}

/// Wait until every running node has a ready connection to every other; their addresses.
async fn all_linked(f: &TestFederation) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let members: BTreeSet<&String> = f.nodes.keys().collect();
    wait_for("every link up", || async {
        for (m, n) in &f.nodes {
            let addrs = peer_addrs(n).await;
            if members.iter().any(|o| *o != m && addrs.get(*o).is_none_or(Vec::is_empty)) {
                return false;
            }
        }
        true
    })
    .await;
    let mut out = BTreeMap::new();
    for (m, n) in &f.nodes {
        let mut addrs = peer_addrs(n).await;
        addrs.retain(|o, _| members.contains(o));
        out.insert(m.clone(), addrs);
    }
    out
}

fn is_quic(addr: &str) -> bool {
    addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/quic-v1")
}

fn is_tcp(addr: &str) -> bool {
    addr.starts_with("/ip4/127.0.0.1/tcp/")
}

/// Three members listening on QUIC only, their rosters pointing at each other's QUIC
/// addresses: every link is QUIC, and every node holds exactly what the files allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_on_quic_only_holds_exactly_what_policies_allow() {
    let members = ["CN", "KZ", "RU"];
    let mut f = TestFederation::start_on(&members, |_| Transport::Quic, |_, _| {}).await.expect("starts");
    for (m, n) in &f.nodes {
        let listen: Vec<String> =
            n.config().expect("config").network.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(listen, [format!("/ip4/127.0.0.1/udp/{}/quic-v1", f.quic_ports[m])]);
    }
    for (m, peers) in all_linked(&f).await {
        for (other, addrs) in peers {
            assert!(addrs.iter().all(|a| is_quic(a)), "{m} reaches {other} not over QUIC: {addrs:?}");
        }
    }
    for m in members {
        ingest_mix(&f, m, "quic").await;
    }
    converge(&f, "over QUIC").await;
    // Bilateral: RU's enforcement alerts reach KZ, never CN.
    let ru_alerts = |rs: Vec<Value>| {
        rs.iter().filter(|r| r["category"] == "enforcement.alert" && r["origin"] == "RU").count()
    };
    assert!(ru_alerts(records(f.node("KZ")).await) > 0, "KZ received RU's alerts");
    assert_eq!(ru_alerts(records(f.node("CN")).await), 0, "CN holds an RU–KZ alert");
    f.stop().await;
}

/// KZ listens on TCP only, RU on TCP and QUIC (the roster gives its QUIC address), CN on
/// QUIC only: each dials the others on the transport of their roster address (KZ dials
/// QUIC without listening on it), the RU–CN link is QUIC, and sharing is as the files say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_and_quic_members_share_with_each_other() {
    let members = ["CN", "KZ", "RU"];
    let transport = |m: &str| match m {
        "KZ" => Transport::Tcp,
        "RU" => Transport::Both,
        _ => Transport::Quic,
    };
    let mut f = TestFederation::start_on(&members, transport, |_, _| {}).await.expect("starts");
    let links = all_linked(&f).await;
    for (m, peers) in &links {
        for (other, addrs) in peers {
            assert!(addrs.iter().all(|a| is_quic(a) || is_tcp(a)), "{m} to {other}: {addrs:?}");
        }
    }
    assert!(links["RU"]["CN"].iter().all(|a| is_quic(a)), "{links:?}");
    assert!(links["CN"]["RU"].iter().all(|a| is_quic(a)), "{links:?}");
    for m in members {
        ingest_mix(&f, m, "mixed").await;
    }
    converge(&f, "between TCP and QUIC members").await;
    f.stop().await;
}

// A member the origin's policy paused (RU's `except = ["TJ"]` on energy data) is left out of
// the audience of what is made meanwhile. Once the pause is lifted it receives those records
// as well: RU projects them again, for TJ alone, and nobody gets one record more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_resumed_by_the_policy_receives_what_was_made_while_it_was_paused() {
    let mut f = TestFederation::start(&["KZ", "RU", "TJ"]).await.expect("starts");
    let ids = ingest(&f, "RU", "paused", &["energy.transfer"]).await;
    converge(&f, "while TJ is paused").await;
    let held = |recs: Vec<Value>| recs.iter().filter(|r| ids.iter().any(|id| r["id"] == id.as_str())).count();
    assert_eq!(held(records(f.node("TJ")).await), 0, "paused");

    let dir = f.node("RU").federation.as_ref().expect("own copy").path().to_owned();
    let policy = dir.join("policies/RU.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    let lifted = text.replace("except = [\"TJ\"]\n", "");
    assert_ne!(text, lifted, "the example RU policy pauses TJ's energy data");
    std::fs::write(&policy, lifted).expect("writes");
    f.node("RU").client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    converge(&f, "after the pause is lifted").await;
    assert_eq!(held(records(f.node("TJ")).await), 2, "the public and the non-confidential record");

    let shown = f.node("RU").client(Role::Operator).get(&format!("/v1/records/{}", ids[0]), &[]).await;
    let shown = shown.expect("shows");
    let energy: Vec<&Value> = shown["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .filter(|p| p["agreement"] == "sco-energy-2008")
        .collect();
    assert_eq!(energy.len(), 2, "projected again, once: {shown:#}");
    f.stop().await;
}

/// RU shares its energy records with KZ, whose accept policy takes them only from CN: KZ
/// declines each, and marks its number withheld on its own word, so that its head of RU's
/// stream passes it (a number it neither holds nor knows withheld would be asked for at
/// every exchange, and hold the head back for good). Once KZ's policy takes them from RU,
/// KZ asks RU for those numbers again and holds the records, and audits no one for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_number_declined_by_the_accept_policy_is_passed_until_the_policy_takes_it() {
    let mut f = TestFederation::start_with(&["KZ", "RU"], kz_accepts_only_from_cn("sco-energy-2008"))
        .await
        .expect("starts");
    let ids = ingest(&f, "RU", "declined", &["energy.transfer"]).await;
    let (ru, kz) = (f.node("RU"), f.node("KZ"));
    let stream = tamga_protocol::StreamKey {
        origin: "RU".parse().expect("valid"),
        agreement: "sco-energy-2008".parse().expect("valid"),
    };
    let head = ru.node().shared().store.stream_head(&stream).expect("reads");
    assert!(head >= 2, "RU shared its energy records: {head}");
    wait_for("KZ's head of RU's energy stream passes what it declined", || {
        let at_kz = kz.node().shared().store.stream_head(&stream).expect("reads");
        async move { at_kz == head }
    })
    .await;
    converge(&f, "while KZ declines RU's energy records").await;
    let held = |recs: Vec<Value>| recs.iter().filter(|r| ids.iter().any(|id| r["id"] == id.as_str())).count();
    assert_eq!(held(records(kz).await), 0, "declined");
    // And not asked for again while KZ's files stay as they are: RU serves no pull of them
    // in the anti-entropy rounds (one a second here) that follow.
    let pulled_by_kz = || async {
        let auditor = ru.client(Role::Auditor);
        let query = [("action", "sent".into()), ("peer", "KZ".into())];
        let v = auditor.get("/v1/audit", &query).await.expect("audit");
        let pulled = |e: &&Value| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with("pulled"));
        v.as_array().map_or(0, |a| a.iter().filter(pulled).count())
    };
    let before = pulled_by_kz().await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(pulled_by_kz().await, before, "KZ asked RU again for what it declined");

    let policy = kz.federation.as_ref().expect("own copy").path().join("policies/KZ.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    std::fs::write(&policy, text.replace("from = [\"CN\"]\n", "")).expect("writes");
    let v = kz.client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    assert_eq!(v["outcome"], "loaded", "{v}");
    converge(&f, "once KZ takes RU's energy records").await;
    assert_eq!(held(records(kz).await), 2, "the public and the non-confidential record");
    let against_itself = kz
        .client(Role::Auditor)
        .get("/v1/audit", &[("action", "rejected".into()), ("peer", "KZ".into())])
        .await
        .expect("audit");
    assert_eq!(against_itself.as_array().map(Vec::len), Some(0), "{against_itself:#}");
    f.stop().await;
}

/// A number the origin will not serve at pull time (its policy stopped sharing that
/// record with the asker) is neither held nor withheld: the asker's head stays below it.
/// A number above it that the asker declined, and takes once its own policy changes, is
/// still asked of the origin again, and held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_number_above_a_gap_the_origin_denies_is_asked_again_once_taken() {
    const SHARE: &str = "agreement = \"sco-energy-2008\"\nexcept = [\"TJ\"]\n";
    let mut f = TestFederation::start_with(&["KZ", "RU"], kz_accepts_only_from_cn("sco-energy-2008"))
        .await
        .expect("starts");
    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    // #1 non-confidential, #2 public, both numbered for KZ.
    let cat = example_catalog();
    let op = f.node("RU").client(Role::Operator);
    let mut ids = Vec::new();
    for class in ["non_confidential", "public"] {
        let v = op
            .post("/v1/records", &record_json(&cat, "energy.transfer", class, "gap"))
            .await
            .expect("ingests");
        ids.push(v["ids"][0].as_str().expect("an id").to_owned());
    }
    // RU then shares public energy records only: #1 is no longer served to KZ.
    let ru = f.node("RU");
    let policy = ru.federation.as_ref().expect("own copy").path().join("policies/RU.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    assert_eq!(text.matches(SHARE).count(), 1);
    std::fs::write(&policy, text.replace(SHARE, &format!("{SHARE}classifications = [\"public\"]\n")))
        .expect("writes");
    let v = ru.client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    assert_eq!(v["outcome"], "loaded", "{v}");

    // KZ comes back: #1 is denied it, #2 it declines itself; its head stays at 0.
    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");
    let kz = f.node("KZ");
    let stream = tamga_protocol::StreamKey {
        origin: "RU".parse().expect("valid"),
        agreement: "sco-energy-2008".parse().expect("valid"),
    };
    wait_for("KZ declines #2", || {
        let declined = kz.node().shared().store.declined(&stream, 10).expect("reads");
        async move { declined == [2] }
    })
    .await;
    assert_eq!(kz.node().shared().store.stream_head(&stream).expect("reads"), 0);

    // KZ takes RU's energy records from now on: #2 is asked of RU again, and held.
    let policy = kz.federation.as_ref().expect("own copy").path().join("policies/KZ.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    std::fs::write(&policy, text.replace("from = [\"CN\"]\n", "")).expect("writes");
    let v = kz.client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    assert_eq!(v["outcome"], "loaded", "{v}");
    let public = ids[1].clone();
    wait_for("KZ holds the public record", || {
        let public = public.clone();
        async move { records(kz).await.iter().any(|r| r["id"] == public.as_str()) }
    })
    .await;
    assert!(!records(kz).await.iter().any(|r| r["id"] == ids[0].as_str()), "the one RU no longer shares");
    f.stop().await;
}

/// `member`'s state as `node`'s `/v1/peers` and `/v1/status` report it: connected, and
/// how many members the node counts connected.
async fn connected_state(node: &TestNode, member: &str) -> (bool, u64) {
    let c = node.client(Role::Operator);
    let peers = c.get("/v1/peers", &[]).await.expect("peers");
    let p = peers["peers"].as_array().expect("peers").iter().find(|p| p["member"] == member).cloned();
    let status = c.get("/v1/status", &[]).await.expect("status");
    (p.expect("listed")["connected"] == true, status["peers_connected"].as_u64().expect("a count"))
}

/// A member may list two nodes (a key rotation); it is offline only once both are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_two_nodes_stays_connected_until_both_are_gone() {
    let code = |c: &str| -> MemberCode { c.parse().expect("valid") };
    let kz1 = tamga_config::demo::demo_peer_id(code("KZ")).to_string();
    // KZ's second node uses a key no other member has.
    let kz2_secret = tamga_config::demo::demo_secret(code("TM"));
    let kz2 = tamga_config::demo::demo_peer_id(code("TM")).to_string();
    let list = |dir: &std::path::Path, ids: &str| {
        let roster = dir.join("roster.toml");
        let text = std::fs::read_to_string(&roster).expect("reads");
        let from = format!("peer_ids = [\"{kz1}\"]");
        assert_eq!(text.matches(&from).count(), 1, "KZ's entry");
        std::fs::write(&roster, text.replace(&from, &format!("peer_ids = [{ids}]"))).expect("writes");
    };
    // RU lists both of KZ's nodes; each KZ node knows only itself.
    let mut f = TestFederation::start_with(&["KZ", "RU"], |m, dir| {
        if m == "RU" {
            list(dir, &format!("\"{kz1}\", \"{kz2}\""));
        }
    })
    .await
    .expect("starts");
    let fed_dir = tempfile::tempdir().expect("tempdir");
    tamga_node::localfed::write_federation(fed_dir.path(), &f.ports).expect("writes");
    list(fed_dir.path(), &format!("\"{kz2}\""));
    let mut second = TestNode::init_in("KZ", fed_dir.path(), "/ip4/127.0.0.1/tcp/0", |_| {}).expect("inits");
    let key = second.dir.path().join("identity.key");
    std::fs::remove_file(&key).expect("removes");
    tamga_node::identity::Identity::from_secret(kz2_secret).create(&key).expect("writes the key");
    second.restart().await.expect("starts");

    let mut first = f.nodes.remove("KZ").expect("KZ");
    let ru = f.node("RU");
    let nodes_of_kz = || async {
        let c = ru.node().shared().net.connected().await.unwrap_or_default();
        c.iter().filter(|(m, _)| *m == code("KZ")).count()
    };
    wait_for("RU connected to both of KZ's nodes", || async { nodes_of_kz().await == 2 }).await;
    wait_for("RU's sync saw both", || async {
        let v = ru.client(Role::Auditor).get("/v1/audit", &[("action", "peer_connected".into())]).await;
        v.is_ok_and(|v| {
            v.as_array().is_some_and(|a| a.iter().filter(|e| e["entry"]["peer"] == "KZ").count() >= 2)
        })
    })
    .await;
    assert_eq!(connected_state(ru, "KZ").await, (true, 1), "one member connected, through two nodes");

    let disconnected = || async {
        let v = ru.client(Role::Auditor).get("/v1/audit", &[("action", "peer_disconnected".into())]).await;
        v.map_or(0, |v| v.as_array().map_or(0, |a| a.iter().filter(|e| e["entry"]["peer"] == "KZ").count()))
    };
    second.stop().await;
    wait_for("RU's sync saw KZ's second node go", || async { disconnected().await == 1 }).await;
    assert_eq!(connected_state(ru, "KZ").await, (true, 1), "KZ's first node is still connected");

    first.stop().await;
    wait_for("RU's sync saw KZ's first node go", || async { disconnected().await == 2 }).await;
    assert_eq!(connected_state(ru, "KZ").await, (false, 0), "neither of KZ's nodes is connected");
    f.stop().await;
}

/// A pull is decided again as it is answered: RU made energy records for KZ while KZ was
/// down, then paused KZ. KZ's pulls get none of them, and RU's log says it withheld them
/// at pull time, under the policy that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_answered_under_a_pause_withholds_and_audits_it() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    let ids = ingest(&f, "RU", "paused-later", &["energy.transfer"]).await;
    let dir = f.node("RU").federation.as_ref().expect("own copy").path().to_owned();
    let policy = dir.join("policies/RU.toml");
    let text = std::fs::read_to_string(&policy).expect("reads");
    let paused = text.replace("except = [\"TJ\"]\n", "except = [\"TJ\", \"KZ\"]\n");
    assert_ne!(text, paused, "the example RU policy pauses TJ's energy data");
    std::fs::write(&policy, paused).expect("writes");
    f.node("RU").client(Role::Admin).post("/v1/policy/reload", &json!({})).await.expect("reloads");
    let status = f.node("RU").client(Role::Operator).get("/v1/status", &[]).await.expect("status");
    let digest = status["policy_digest"].as_str().expect("a digest").to_owned();
    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");

    let ru = f.node("RU").client(Role::Auditor);
    let at_pull = || async {
        let v = ru.get("/v1/audit", &[("action", "withheld".into())]).await.expect("queries");
        v.as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["entry"]["peer"] == "KZ")
            .filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with("at pull time")))
            .cloned()
            .collect::<Vec<Value>>()
    };
    wait_for("RU audits what it withheld from KZ's pull", || async { !at_pull().await.is_empty() }).await;
    let entries = at_pull().await;
    assert!(entries.iter().all(|e| e["entry"]["policy"] == digest.as_str()), "{entries:#?}");
    let held = records(f.node("KZ")).await;
    assert!(!held.iter().any(|r| ids.iter().any(|id| r["id"] == id.as_str())), "KZ got a paused record");
    f.stop().await;
}

/// Projections large enough that a pull's 256 of them pass a frame's 8 MiB: RU's methods
/// carry four long texts here (about 64 KB each). KZ, down while RU made 300 of them,
/// catches up: a pull reply is cut where its frame is full, and KZ asks for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projections_too_large_for_one_pull_reply_still_converge() {
    const SUMMARY: &str =
        "[category.\"rms.method\".fields.summary]\ntype = \"text\"\nrequired = true\nmax_len = 4000\n";
    let annexes = |_: &str, dir: &std::path::Path| {
        let catalog = dir.join("catalog.toml");
        let text = std::fs::read_to_string(&catalog).expect("reads");
        assert_eq!(text.matches(SUMMARY).count(), 1);
        let more: String = ["a", "b", "c"]
            .iter()
            .map(|x| {
                format!("\n[category.\"rms.method\".fields.annex_{x}]\ntype = \"text\"\nmax_len = 4000\n")
            })
            .collect();
        std::fs::write(&catalog, text.replace(SUMMARY, &format!("{SUMMARY}{more}"))).expect("writes");
    };
    let mut f = TestFederation::start_with(&["KZ", "RU"], annexes).await.expect("starts");
    f.nodes.get_mut("KZ").expect("KZ").stop().await;
    let catalog = f.node("RU").node().shared().fed().catalog.clone();
    // 4,000 characters of four bytes each: 16,000 bytes, within a value's 16 KiB.
    let long = "\u{1d538}".repeat(4000);
    let ru = f.node("RU").client(Role::Operator);
    for batch in 0..25 {
        let recs: Vec<Value> = (0..12)
            .map(|i| {
                let mut r = record_json(&catalog, "rms.method", "public", &format!("big-{batch}-{i}"));
                for field in ["summary", "annex_a", "annex_b", "annex_c"] {
                    r["body"][field] =
                        json!(format!("{batch}-{i} {long}").chars().take(4000).collect::<String>());
                }
                r
            })
            .collect();
        ru.post("/v1/records", &json!({ "records": recs })).await.expect("ingests");
    }
    let stream = tamga_protocol::StreamKey {
        origin: "RU".parse().expect("valid"),
        agreement: "sco-rms-2013".parse().expect("valid"),
    };
    let head = f.node("RU").node().shared().store.stream_head(&stream).expect("reads");
    assert!(head >= 300, "RU shared its methods: {head}");
    f.nodes.get_mut("KZ").expect("KZ").restart().await.expect("restarts");
    let kz = f.node("KZ");
    wait_for("KZ catches up on RU's large methods", || {
        let at_kz = kz.node().shared().store.stream_head(&stream).expect("reads");
        async move { at_kz == head }
    })
    .await;
    // Held, not only passed (the 300, some 19 MB, came in replies cut at a frame's 8 MiB).
    let query = [("origin", "RU".into()), ("category", "rms.method".into()), ("limit", "1000".into())];
    let held = kz.client(Role::Operator).get("/v1/records", &query).await.expect("lists");
    assert_eq!(held["records"].as_array().map(Vec::len), Some(300));
    f.stop().await;
}

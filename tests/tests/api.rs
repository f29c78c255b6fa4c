//! The local HTTP API of a real node: ingest, list, show, idempotence, roles, bad input.

use serde_json::{json, Value};
use tamga_node::client::ClientError;
use tamga_node::identity::Role;
use tamga_tests::*;

const CAT: &str = "ipr.infringement";

async fn count(n: &TestNode) -> u64 {
    let s = n.client(Role::Operator).get("/v1/status", &[]).await.expect("status");
    s["records"].as_u64().expect("a count")
}

fn status_of(e: ClientError) -> u16 {
    match e {
        ClientError::Api { status, .. } => status.as_u16(),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_list_show_and_idempotence() {
    let node = TestNode::start("RU").await.expect("starts");
    let cat = example_catalog();
    let op = node.client(Role::Operator);
    let rec = record_json(&cat, CAT, "non_confidential", "one");
    let a = op.post("/v1/records", &rec).await.expect("ingests");
    assert_eq!(a["new"], 1);
    let id = a["ids"][0].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 64);
    // Same record again: same id, stored once.
    let b = op.post("/v1/records", &rec).await.expect("ingests");
    assert_eq!(b["ids"][0], id.as_str());
    assert_eq!(b["new"], 0);
    assert_eq!(b["duplicates"], 1);
    assert_eq!(count(&node).await, 1);
    // A batch, including the same record once more.
    let batch = json!({ "records": [
        record_json(&cat, CAT, "public", "two"),
        record_json(&cat, "rms.method", "confidential", "three"),
        rec.clone(),
    ]});
    let c = op.post("/v1/records", &batch).await.expect("ingests a batch");
    assert_eq!(c["new"], 2);
    assert_eq!(c["duplicates"], 1);
    assert_eq!(count(&node).await, 3);

    let list = op.get("/v1/records", &[]).await.expect("lists");
    assert_eq!(list["records"].as_array().map(Vec::len), Some(3));
    let filtered = op.get("/v1/records", &[("category", "rms.method".into())]).await.expect("lists");
    assert_eq!(filtered["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(filtered["records"][0]["classification"], "confidential");
    let none = op.get("/v1/records", &[("origin", "KZ".into())]).await.expect("lists");
    assert_eq!(none["records"].as_array().map(Vec::len), Some(0));
    let recent = op.get("/v1/records", &[("since", "2026-11-28T08:00:00Z".into())]).await.expect("lists");
    assert_eq!(recent["records"].as_array().map(Vec::len), Some(3));
    // Page by page: a full page says where the next starts; the last is not full.
    let mut paged = Vec::new();
    let mut q = vec![("limit", "2".to_owned())];
    loop {
        let page = op.get("/v1/records", &q).await.expect("lists");
        paged.extend(page["records"].as_array().expect("records").iter().map(|r| r["id"].clone()));
        let Some(next) = page["next"].as_str() else { break };
        q = vec![("limit", "2".to_owned()), ("after", next.to_owned())];
    }
    let ids: Vec<_> = list["records"].as_array().expect("records").iter().map(|r| r["id"].clone()).collect();
    assert_eq!(paged, ids, "the pages list the whole listing, once each, in order");
    assert!(list.get("next").is_none(), "{list}");
    let bad = op.get("/v1/records", &[("after", "zz".into())]).await.expect_err("400");
    assert!(
        matches!(&bad, ClientError::Api { status, message, .. }
        if status.as_u16() == 400 && message.starts_with("after: ")),
        "{bad}"
    );

    let shown = op.get(&format!("/v1/records/{id}"), &[]).await.expect("shows");
    assert_eq!(shown["record"]["id"], id.as_str());
    assert_eq!(shown["record"]["origin"], "RU");
    assert_eq!(shown["record"]["body"], rec["body"]);
    let missing = op.get(&format!("/v1/records/{}", "0".repeat(64)), &[]).await.expect_err("404");
    assert_eq!(status_of(missing), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_refusals_audited() {
    let node = TestNode::start("KZ").await.expect("starts");
    let cat = example_catalog();
    let rec = record_json(&cat, CAT, "public", "r");
    let op = node.client(Role::Operator);
    let admin = node.client(Role::Admin);
    let auditor = node.client(Role::Auditor);
    let nobody = tamga_node::client::Client::with_token(node.base(), "not-a-token-at-all-not-a-token-at-all");

    op.post("/v1/records", &rec).await.expect("operator ingests");
    admin.post("/v1/records", &rec).await.expect("admin ingests");
    assert_eq!(status_of(auditor.post("/v1/records", &rec).await.expect_err("refused")), 403);
    assert_eq!(status_of(auditor.get("/v1/records", &[]).await.expect_err("refused")), 403);
    assert_eq!(status_of(nobody.get("/v1/records", &[]).await.expect_err("refused")), 401);
    assert_eq!(status_of(nobody.get("/v1/status", &[]).await.expect_err("refused")), 401);
    let no_token = reqwest::get(format!("{}/v1/status", node.base())).await.expect("answers");
    assert_eq!(no_token.status().as_u16(), 401);
    // The scheme's name is case-insensitive (RFC 9110): `bearer` is `Bearer`.
    let lower = reqwest::Client::new()
        .get(format!("{}/v1/status", node.base()))
        .header("authorization", format!("bearer {}", node.tokens.token(Role::Auditor)))
        .send()
        .await
        .expect("answers");
    assert_eq!(lower.status().as_u16(), 200);

    for c in [&op, &admin, &auditor] {
        c.get("/v1/status", &[]).await.expect("every role reads status");
    }
    assert_eq!(status_of(op.get("/v1/audit", &[]).await.expect_err("refused")), 403);
    assert_eq!(status_of(op.get_bytes("/v1/backup").await.expect_err("refused")), 403);
    admin.get_bytes("/v1/backup").await.expect("admin backs up");

    let refused = auditor.get("/v1/audit", &[("action", "api_refused".into())]).await.expect("auditor reads");
    let n = refused.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(n, 7, "each refused call is audited once: {refused:#}");
    let ingested = auditor.get("/v1/audit", &[("action", "ingested".into())]).await.expect("reads");
    assert_eq!(ingested.as_array().map(Vec::len), Some(1), "the second ingest was a duplicate");
    // The backup taken is audited, once; the refused one only as a refusal.
    let backups = auditor.get("/v1/audit", &[("action", "backup_taken".into())]).await.expect("reads");
    let backups = backups.as_array().expect("entries");
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0]["entry"]["reason"].as_str().is_some_and(|r| r.contains("bytes")), "{}", backups[0]);

    let metrics =
        reqwest::get(format!("{}/metrics", node.base())).await.expect("scrapes").text().await.expect("text");
    assert!(metrics.contains("tamga_records_stored 1"), "{metrics}");
    assert!(metrics.contains("tamga_api_refused_total 7"), "{metrics}");
    // Every entry appended is counted, whatever appended it (a revocation's among them):
    // on this new node, as many as the log's head says.
    let id = op.get("/v1/records", &[]).await.expect("lists")["records"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    op.post(&format!("/v1/records/{id}/revoke"), &json!({})).await.expect("revokes");
    let head = || async {
        let v = op.get("/v1/status", &[]).await.expect("status");
        v["audit_head"]["seq"].as_u64().expect("a head")
    };
    let counted = || async {
        let m = reqwest::get(format!("{}/metrics", node.base())).await.expect("scrapes");
        let m = m.text().await.expect("text");
        let n = m.lines().find_map(|l| l.strip_prefix("tamga_audit_entries_total ")).map(str::to_owned);
        n.and_then(|v| v.trim().parse::<u64>().ok()).expect("the counter")
    };
    // The counter moves once a group is durable, the head once it is applied: read until
    // they agree (a checkpoint may be on its way).
    let mut seen = Vec::new();
    loop {
        let (h1, n, h2) = (head().await, counted().await, head().await);
        if h1 == h2 && n == h1 {
            break;
        }
        seen.push((h1, n, h2));
        assert!(seen.len() < 50, "the counter never said every entry of the log: {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

// A client without a token cannot grow the log without bound: past `[api]
// refusals_per_min` its calls are answered 429 and counted, in one entry written when the
// minute ends (here, when the node stops). Requests cannot add metric labels either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_past_the_minutes_limit_are_answered_429_and_counted() {
    let mut node = TestNode::start_with("RU", |t| *t = t.replace("[api]\n", "[api]\nrefusals_per_min = 5\n"))
        .await
        .expect("starts");
    let nobody = tamga_node::client::Client::with_token(node.base(), "not-a-token-at-all-not-a-token-at-all");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let junk = format!("/v1/junk-{i}-{}", "x".repeat(1000));
        statuses.push(status_of(nobody.get(&junk, &[]).await.expect_err("refused")));
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let auditor = node.client(Role::Auditor);
    let refused = auditor.get("/v1/audit", &[("action", "api_refused".into())]).await.expect("reads");
    let refused = refused.as_array().expect("entries").clone();
    assert_eq!(refused.len(), 5, "the first five, one by one");
    let reason = refused[0]["entry"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("from 127.0.0.1") && reason.len() < 400, "{reason}");
    // A valid token is not held back by the refusals.
    auditor.get("/v1/status", &[]).await.expect("an auditor still reads");
    let metrics =
        reqwest::get(format!("{}/metrics", node.base())).await.expect("scrapes").text().await.expect("text");
    let labels: Vec<&str> = metrics.lines().filter(|l| l.starts_with("tamga_api_requests_total{")).collect();
    assert!(labels.iter().any(|l| l.contains("route=\"unmatched\"} 40")), "{labels:?}");
    assert!(labels.len() <= 8 && !metrics.contains("junk"), "{labels:?}");

    node.stop().await;
    node.restart().await.expect("restarts");
    let auditor = node.client(Role::Auditor);
    let refused = auditor.get("/v1/audit", &[("action", "api_refused".into())]).await.expect("reads");
    let last = refused.as_array().and_then(|a| a.last()).expect("entries")["entry"]["reason"].clone();
    assert!(
        last.as_str().is_some_and(|r| r.starts_with("35 more calls from 127.0.0.1 refused")),
        "the rest counted in one entry as the node stopped: {refused:#}"
    );
    node.stop().await;
}

// The API over HTTPS: the client the CLI uses trusts the chain node.toml names, and only
// it (here the node's certificate for 127.0.0.1 and the authority that issued it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_to_clients_trusting_its_certificate_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("an authority");
    let key = rcgen::KeyPair::generate().expect("a key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("issued");
    let (cert, key_file) = (dir.path().join("api.pem"), dir.path().join("api.key"));
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).expect("writes");
    std::fs::write(&key_file, key.serialize_pem()).expect("writes");
    let tls = format!("[api]\ntls_cert = {:?}\ntls_key = {:?}\n", cert.display(), key_file.display());
    // A key others may read stops the node at start, naming it, as the identity would.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = TestNode::start_with("RU", |t| *t = t.replace("[api]\n", &tls)).await.map(|_| ());
    let e = format!("{:#}", loose.expect_err("refused"));
    assert!(e.contains("api.key") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut node = TestNode::start_with("RU", |t| *t = t.replace("[api]\n", &tls)).await.expect("starts");
    let mut config = node.config().expect("config");
    config.api.listen = node.node().api_addr();
    let op = tamga_node::client::Client::new(&config, Role::Operator).expect("a client");
    let status = op.get("/v1/status", &[]).await.expect("answers over HTTPS");
    assert_eq!(status["member"], "RU");
    let plain = reqwest::get(format!("http://{}/v1/status", node.node().api_addr())).await;
    assert!(plain.is_err(), "plain HTTP is not answered: {plain:?}");
    // A client trusting another certificate refuses this one.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other.cert.pem()).expect("writes");
    config.api.tls_cert = Some(other_file);
    let wary = tamga_node::client::Client::new(&config, Role::Operator).expect("a client");
    wary.get("/v1/status", &[]).await.expect_err("an unknown certificate is refused");
    node.stop().await;
}

/// A tokens file that gives two roles one token stops the node at start, naming the file:
/// the token would otherwise grant only the first of its roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shared_by_two_roles_stops_the_node_at_start() {
    let mut n = TestNode::init("KZ", |_| {}).expect("inits");
    let path = n.config().expect("config").tokens;
    let shared = tamga_node::identity::Tokens { admin: n.tokens.operator.clone(), ..n.tokens.clone() };
    std::fs::remove_file(&path).expect("removes");
    shared.create(&path).expect("writes");
    let err = n.restart().await.expect_err("the node refuses to start").to_string();
    assert!(err.contains("tokens.json") && err.contains("operator and admin tokens are the same"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let node = TestNode::start_with("CN", |t| t.push_str("max_body_bytes = 4096\n")).await.expect("starts");
    let cat = example_catalog();
    let op = node.client(Role::Operator);
    let good = record_json(&cat, CAT, "public", "g");
    let category = cat.category(&CAT.parse().expect("valid")).expect("exists");
    let required = category.fields.values().find(|f| f.required).expect("a required field").name.clone();
    let text_field = category
        .fields
        .values()
        .find(|f| f.ty == tamga_config::FieldType::Text)
        .expect("a text field")
        .name
        .clone();

    let mut unknown_category = good.clone();
    unknown_category["category"] = json!("ipr.nothing");
    let mut missing = good.clone();
    missing["body"].as_object_mut().expect("object").remove(&required);
    let mut wrong_type = good.clone();
    wrong_type["body"][&text_field] = json!(12);
    let mut unknown_field = good.clone();
    unknown_field["body"]["no_such_field"] = json!("x");
    let mut bad_class = good.clone();
    bad_class["classification"] = json!("top_secret");
    let mut no_class = good.clone();
    no_class.as_object_mut().expect("object").remove("classification");
    let mut unknown_top = good.clone();
    unknown_top["colour"] = json!("red");
    let mut big = good.clone();
    big["body"][&text_field] = json!("x".repeat(8000));
    let mixed_batch = json!({ "records": [good.clone(), unknown_field.clone()] });
    // A batch is `records` and nothing else: a key beside it is not dropped silently.
    let batch_extra_key = json!({ "records": [good.clone()], "classification": "secret" });
    let batch_not_a_list = json!({ "records": good.clone() });
    let mut ahead = good.clone();
    ahead["created"] = json!(tamga_node::audit::rfc3339(tamga_node::writer::now_ms() + 86_400_000));
    // Offsets that carry a time out of the four-digit years of UTC.
    let mut expires_10000 = good.clone();
    expires_10000["expires"] = json!("9999-12-31T23:59:59-23:59");
    let mut created_minus_1 = good.clone();
    created_minus_1["created"] = json!("0000-01-01T00:00:00+00:01");

    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown category", unknown_category, "ipr.nothing"),
        ("missing required field", missing, &required),
        ("wrong field type", wrong_type, &text_field),
        ("unknown field", unknown_field, "no_such_field"),
        ("invalid classification", bad_class, "top_secret"),
        ("missing classification", no_class, "classification"),
        ("unknown top-level key", unknown_top, "colour"),
        ("batch with one bad record", mixed_batch, "no_such_field"),
        ("batch with a key besides records", batch_extra_key, "unknown key `classification`"),
        ("batch whose records are no list", batch_not_a_list, "`records` is"),
        ("created a day ahead", ahead, "more than 10 minutes ahead"),
        ("expires in year 10000", expires_10000, "`expires`: \"9999-12-31T23:59:59-23:59\" falls outside"),
        ("created in year -1", created_minus_1, "`created`: \"0000-01-01T00:00:00+00:01\" falls outside"),
    ];
    for (what, body, needle) in cases {
        let e = op.post("/v1/records", &body).await.expect_err(what);
        match e {
            ClientError::Api { status, message, details } => {
                assert!(status.is_client_error(), "{what}: {status}");
                let all = format!("{message} {}", details.unwrap_or(Value::Null));
                assert!(all.contains(needle), "{what}: {all:?} does not name {needle:?}");
            }
            other => panic!("{what}: {other}"),
        }
    }
    // Malformed JSON and an oversized body, sent raw.
    let http = reqwest::Client::new();
    let raw = |body: Vec<u8>| {
        http.post(format!("{}/v1/records", node.base()))
            .bearer_auth(node.tokens.token(Role::Operator))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw(b"{\"category\": ".to_vec()).await.expect("answers");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.expect("text").contains("malformed JSON"));
    let r = raw(serde_json::to_vec(&big).expect("json")).await.expect("answers");
    assert_eq!(r.status().as_u16(), 413, "the 4096-byte limit of node.toml applies");
    let answer: Value = r.json().await.expect("a JSON error, like every other");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("limit of 4096 bytes")), "{answer}");

    assert_eq!(count(&node).await, 0, "nothing was stored");
    op.post("/v1/records", &good).await.expect("a good record still goes in");
    assert_eq!(count(&node).await, 1);
}

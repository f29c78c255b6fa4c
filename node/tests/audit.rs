//! The auditor's commands, exactly as the README gives them, on real nodes: RU is a
//! `tamga run` child process, KZ a node started in-process (so that the test can hand it
//! RU's checkpoints as a hello would). Then the tamper tests: each changes a copy of the
//! stopped RU node's real sled store through the store's tamper hooks, and `tamga audit
//! verify --offline` must name the first bad entry; those of the indexes change only
//! postings, which plain verify does not see and `verify --indexes` must name.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tamga_node::audit::{AuditEntry, GENESIS};
use tamga_node::store::{Store, WriteBatch};
use tamga_protocol::{Checkpoint, Digest};

/// How long any wait in this test may take.
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port()
}

/// A copy of the example federation in `root/federation` whose roster addresses lead
/// nowhere, so that the test's nodes meet no other node on this machine.
fn federation(root: &Path) -> PathBuf {
    let dir = root.join("federation");
    ok(&std::process::Command::new("cp").arg("-a").arg(example()).arg(&dir).output().expect("cp runs"));
    let roster = dir.join("roster.toml");
    let text = std::fs::read_to_string(&roster)
        .expect("reads")
        .replace("/ip4/127.0.0.1/tcp/710", "/ip4/127.0.0.1/tcp/9");
    std::fs::write(&roster, text).expect("writes");
    dir
}

/// `tamga init` a node of the test's federation in `root/<member lowercase>`, signing a
/// checkpoint every 3 entries; its node.toml.
fn init(root: &Path, member: &str) -> PathBuf {
    let data = root.join(member.to_lowercase());
    let api = format!("127.0.0.1:{}", free_port());
    ok(&tamga()
        .args([
            "init",
            "--member",
            member,
            "--demo-identity",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            &api,
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--federation")
        .arg(root.join("federation"))
        .output()
        .expect("init runs"));
    let config = data.join("node.toml");
    let mut text = std::fs::read_to_string(&config).expect("reads");
    text.push_str("\n[audit]\ncheckpoint_every = 3\n");
    std::fs::write(&config, text).expect("writes");
    config
}

fn run_in(root: &Path, args: &[&str]) -> Output {
    tamga().current_dir(root).args(args).output().expect("tamga runs")
}

fn start(root: &Path, config: &Path) -> Running {
    let child = tamga()
        .current_dir(root)
        .args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let r = Running(child);
    let deadline = Instant::now() + WAIT;
    while !status_ok(root, config) {
        assert!(Instant::now() < deadline, "the node did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

fn status_ok(root: &Path, config: &Path) -> bool {
    tamga()
        .current_dir(root)
        .args(["status", "--config"])
        .arg(config)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Stop a `tamga run` with SIGTERM (a clean stop: it signs a last checkpoint).
fn stop(mut r: Running) {
    let pid = r.0.id().to_string();
    ok(&std::process::Command::new("kill").args(["-TERM", &pid]).output().expect("kill runs"));
    let deadline = Instant::now() + WAIT;
    while r.0.try_wait().expect("waits").is_none() {
        assert!(Instant::now() < deadline, "the node did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's `sh` blocks, and in them the lines that start with `prefix`.
fn readme_lines(prefix: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("the README");
    let section = readme.split("## For auditors").nth(1).expect("an auditors section");
    let section = section.split("\n## ").next().expect("its text");
    section.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

/// The README's Python chain check (the heredoc).
fn readme_python() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("the README");
    let start = readme.find("python3 - ru-audit.jsonl <<'EOF'\n").expect("the python check");
    let body = &readme[start..];
    let end = body.find("\nEOF\n").expect("its end");
    format!("{}\nEOF\n", &body[..end])
}

/// Run one README `tamga …` line in `root`, with the example record id and date replaced.
fn readme(root: &Path, line: &str, record: &str, today: &str) -> Output {
    let line = line.replace("9c1f…", record).replace("2026-11-28", today);
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    run_in(root, &args)
}

fn sh(root: &Path, script: &str) -> Output {
    std::process::Command::new("sh").current_dir(root).args(["-c", script]).output().expect("sh runs")
}

/// The output of the README line containing `needle`.
fn out<'a>(outputs: &'a BTreeMap<String, String>, needle: &str) -> &'a str {
    outputs
        .iter()
        .find(|(l, _)| l.contains(needle))
        .map(|(_, o)| o.as_str())
        .unwrap_or_else(|| panic!("{needle}"))
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_commands_from_the_readme_and_tampering() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    federation(root);
    let ru = init(root, "RU");
    let kz = init(root, "KZ");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();

    // RU runs, takes twelve records, and refuses one API call.
    let node = start(root, &ru);
    let jsonl: String = (0..12)
        .map(|i| {
            format!(
                "{{\"category\":\"rms.method\",\"classification\":\"public\",\"body\":{{\"title\":\"Method {i}\",\"method_type\":\"training\",\"summary\":\"s\"}}}}\n"
            )
        })
        .collect();
    std::fs::write(root.join("methods.jsonl"), jsonl).expect("writes");
    ok(&run_in(root, &["records", "import", "--config", "./ru/node.toml", "--batch", "2", "methods.jsonl"]));
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("ru/tokens.json")).expect("tokens"))
            .expect("json");
    let api = tamga_config::NodeConfig::load(&ru).expect("loads").api.listen;
    let refused = reqwest::Client::new()
        .get(format!("http://{api}/v1/audit"))
        .bearer_auth(tokens["operator"].as_str().expect("a token"))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 403);
    let listed =
        ok(&run_in(root, &["records", "list", "--config", "./ru/node.toml", "--json", "--limit", "1"]));
    let v: Value = serde_json::from_str(&listed).expect("json");
    let record = v["records"][0]["id"].as_str().expect("an id").to_owned();

    // Every `tamga audit` line of the README, against the running node.
    let lines = readme_lines("tamga audit");
    assert!(lines.len() >= 12, "{lines:?}");
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    for line in
        lines.iter().filter(|l| !l.contains("--offline") && !l.contains("./kz/") && !l.contains("--witness"))
    {
        outputs.insert(line.clone(), ok(&readme(root, line, &record, &today)));
    }

    assert_eq!(out(&outputs, "--action ingested").lines().count(), 13, "a header and twelve entries");
    let refused = json_lines(out(&outputs, "--outcome refused --json"));
    assert!(refused.iter().all(|e| e["entry"]["outcome"] == "refused"));
    assert!(refused.iter().any(|e| e["entry"]["action"] == "api_refused"), "{refused:?}");
    assert!(out(&outputs, "--peer KZ").starts_with("    SEQ"), "a table, empty on a node alone");
    assert!(out(&outputs, "--csv").starts_with("seq,time,action,"));
    let counts = out(&outputs, "--count --by action");
    assert!(
        counts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ingested", "12"]),
        "{counts}"
    );
    assert!(counts.lines().any(|l| l.starts_with("checkpoint")), "checkpoints every 3 entries: {counts}");
    let trace = out(&outputs, "audit trace");
    assert!(trace.contains(&record) && trace.contains("ingested"), "{trace}");
    assert!(out(&outputs, "audit verify --config ./ru/node.toml").starts_with("ok:"));
    let indexed = out(&outputs, "audit verify --config ./ru/node.toml --indexes");
    assert!(indexed.starts_with("ok:") && indexed.contains("the indexes hold exactly the"), "{indexed}");
    assert!(std::fs::metadata(root.join("ru-audit.csv")).is_ok_and(|m| m.len() > 0));
    // The flags the README names in prose: an export by sequence numbers, a query by
    // record and by agreement.
    let range =
        ok(&run_in(root, &["audit", "export", "--config", "./ru/node.toml", "--from", "2", "--to", "4"]));
    let seqs: Vec<u64> = json_lines(&range).iter().filter_map(|l| l["entry"]["seq"].as_u64()).collect();
    assert_eq!(seqs, [2, 3, 4], "{range}");
    let by_record = json_lines(&ok(&run_in(
        root,
        &["audit", "query", "--config", "./ru/node.toml", "--record", &record, "--json"],
    )));
    assert!(
        !by_record.is_empty() && by_record.iter().all(|e| e["entry"]["record"] == record.as_str()),
        "{by_record:?}"
    );
    let by_agreement = ok(&run_in(
        root,
        &["audit", "query", "--config", "./ru/node.toml", "--agreement", "sco-rms-2013", "--json"],
    ));
    assert!(
        json_lines(&by_agreement).iter().all(|e| e["entry"]["agreement"] == "sco-rms-2013"),
        "{by_agreement}"
    );

    // The API takes `indexes` in the body of a verify, and names it when it is no boolean.
    let post = |body: Value| {
        reqwest::Client::new()
            .post(format!("http://{api}/v1/audit/verify"))
            .bearer_auth(tokens["auditor"].as_str().expect("a token"))
            .json(&body)
            .send()
    };
    let r = post(serde_json::json!({ "indexes": true })).await.expect("answers");
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.expect("a report");
    assert_eq!(
        (report["ok"].clone(), report["indexes"]["ok"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    assert!(report["indexes"]["expected"].as_u64().is_some_and(|n| n > 0), "{report}");
    let r = post(serde_json::json!({})).await.expect("answers");
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.expect("a report");
    assert!(report["ok"] == true && report.get("indexes").is_none(), "not checked unless asked: {report}");
    for bad in [serde_json::json!({ "indexes": "yes" }), serde_json::json!({ "witness": [], "indexes": 1 })] {
        let r = post(bad.clone()).await.expect("answers");
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.expect("an error");
        assert!(e["error"].as_str().is_some_and(|e| e.starts_with("indexes: ")), "{bad}: {e}");
    }

    // The exported chain checks out with coreutils and with the README's Python.
    let cut = ok(&sh(root, &readme_lines("head -1 ru-audit.jsonl").join("\n")));
    let halves: Vec<&str> = cut.lines().collect();
    assert_eq!(halves.len(), 2, "{cut}");
    assert_eq!(halves[1].split_whitespace().next(), Some(halves[0]), "sha256sum gives the exported hash");
    let python = ok(&sh(root, &readme_python()));
    let exported = std::fs::read_to_string(root.join("ru-audit.jsonl")).expect("exported");
    assert!(python.starts_with(&format!("ok: {} entries", exported.lines().count())), "{python}");
    // …and fails on a changed byte.
    std::fs::write(root.join("ru-audit.jsonl"), exported.replacen("\"ingested\"", "\"ingestex\"", 1))
        .expect("writes");
    assert!(!sh(root, &readme_python()).status.success(), "a changed entry fails the Python check");
    std::fs::write(root.join("ru-audit.jsonl"), &exported).expect("writes");
    let csv = std::fs::read_to_string(root.join("ru-audit.csv")).expect("csv");
    assert_eq!(csv.lines().count(), exported.lines().count() + 1, "a header and the same entries");

    // KZ meets RU: it keeps RU's checkpoints (what a hello hands it). The README's witness
    // commands then run against both running nodes.
    let kz_node = tamga_node::daemon::Node::start(tamga_config::NodeConfig::load(&kz).expect("loads"))
        .await
        .expect("KZ starts");
    let ru_cps: Vec<Checkpoint> =
        json_lines(&ok(&run_in(root, &["audit", "checkpoints", "--config", "./ru/node.toml", "--json"])))
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("a checkpoint"))
            .collect();
    assert!(ru_cps.len() >= 2, "{ru_cps:?}");
    for cp in &ru_cps {
        kz_node.shared().writer.peer_checkpoint(cp.clone()).await;
    }
    let deadline = Instant::now() + WAIT;
    while kz_node.shared().store.peer_checkpoints(Some("RU".parse().expect("valid"))).expect("reads").len()
        < ru_cps.len()
    {
        assert!(Instant::now() < deadline, "KZ did not keep RU's checkpoints");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in lines.iter().filter(|l| l.contains("./kz/") || l.contains("--witness")) {
        outputs.insert(line.clone(), ok(&readme(root, line, &record, &today)));
    }
    assert!(out(&outputs, "--member RU --out").contains(&format!("{} checkpoints written", ru_cps.len())));
    let witnessed = out(&outputs, "--witness ru-seen-by-kz.jsonl");
    assert!(witnessed.contains(&format!("{} witnessed checkpoints match", ru_cps.len())), "{witnessed}");
    kz_node.shutdown().await;
    stop(node);

    // Offline, read-only, on the stopped node: the README's lines, and the same export.
    for line in lines.iter().filter(|l| l.contains("--offline")) {
        outputs.insert(line.clone(), ok(&readme(root, line, &record, &today)));
    }
    let by_day = out(&outputs, "--offline --count --by day");
    assert!(by_day.contains(&today), "{by_day}");
    assert!(out(&outputs, "audit verify --config ./ru/node.toml --offline").starts_with("ok:"));
    let indexed = out(&outputs, "audit verify --config ./ru/node.toml --offline --indexes");
    assert!(indexed.starts_with("ok:") && indexed.contains("the indexes hold exactly the"), "{indexed}");
    let offline = ok(&run_in(root, &["audit", "export", "--config", "./ru/node.toml", "--offline"]));
    assert!(offline.starts_with(&exported), "the stored bytes, online or offline");
    let last: AuditEntry =
        serde_json::from_value(json_lines(&offline).last().expect("entries")["entry"].clone())
            .expect("an entry");
    assert_eq!(last.action.as_str(), "checkpoint", "a clean stop ends the log with a checkpoint");
    let verified = ok(&run_in(
        root,
        &["audit", "verify", "--config", "./ru/node.toml", "--offline", "--witness", "ru-seen-by-kz.jsonl"],
    ));
    assert!(verified.starts_with("ok:"), "{verified}");

    tamper_tests(root, &ru_cps);
    index_tamper_tests(root);
}

/// A copy of the stopped RU node's data directory, its store opened for tampering.
fn copy(root: &Path, name: &str) -> (PathBuf, Store) {
    let dir = root.join(name);
    ok(&std::process::Command::new("cp").arg("-a").arg(root.join("ru")).arg(&dir).output().expect("cp runs"));
    let store = Store::open(&dir.join("store")).expect("opens");
    (dir.join("node.toml"), store)
}

/// `tamga audit verify --offline --json` on a copy: the report.
fn verify(root: &Path, config: &Path, witness: Option<&str>) -> Value {
    let mut args = vec!["audit", "verify", "--offline", "--json", "--config"];
    let config = config.to_str().expect("utf-8");
    args.push(config);
    if let Some(w) = witness {
        args.extend(["--witness", w]);
    }
    let out = run_in(root, &args);
    let report: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(out.status.success(), report["ok"] == true, "the exit status follows the report");
    report
}

fn first_bad(r: &Value) -> u64 {
    assert_eq!(r["ok"], false, "detected: {r}");
    r["first_bad"].as_u64().unwrap_or_else(|| panic!("names the first bad entry: {r}"))
}

fn raw(store: &Store, seq: u64) -> Vec<u8> {
    store.tamper_audit_raw(seq).expect("reads").expect("present")
}

fn tamper_tests(root: &Path, witnessed: &[Checkpoint]) {
    let (config, store) = copy(root, "intact");
    let n = store.audit_head().expect("reads").expect("a head").0;
    assert!(n >= 20, "{n} entries");
    drop(store);
    assert_eq!(verify(root, &config, None)["entries"], n);
    let mid = n / 2;

    // One byte changed, in the first, a middle and the last entry, in its text or in its
    // stored hash.
    for (name, seq, at) in [
        ("byte-first", 1, 40),
        ("byte-mid", mid, 60),
        ("byte-last", n, 50),
        ("hash-mid", mid, 3),
        ("hash-last", n, 0),
    ] {
        let (config, store) = copy(root, name);
        let mut v = raw(&store, seq);
        v[at] ^= 0x01;
        store.tamper_audit_set(seq, Some(v)).expect("tampers");
        drop(store);
        assert_eq!(first_bad(&verify(root, &config, None)), seq, "{name}");
    }

    // An entry deleted.
    let (config, store) = copy(root, "deleted");
    store.tamper_audit_set(mid, None).expect("tampers");
    drop(store);
    assert_eq!(first_bad(&verify(root, &config, None)), mid);

    // Two entries swapped.
    let (config, store) = copy(root, "reordered");
    let (a, b) = (raw(&store, mid), raw(&store, mid + 1));
    store.tamper_audit_set(mid, Some(b)).expect("tampers");
    store.tamper_audit_set(mid + 1, Some(a)).expect("tampers");
    drop(store);
    assert_eq!(first_bad(&verify(root, &config, None)), mid);

    // The tail cut: the recorded head names entries that are gone…
    let (config, store) = copy(root, "truncated");
    for seq in n - 2..=n {
        store.tamper_audit_set(seq, None).expect("tampers");
    }
    drop(store);
    assert_eq!(first_bad(&verify(root, &config, None)), n - 2);
    // …and with the head rewritten too, the last checkpoint names them.
    let (config, store) = copy(root, "truncated-head");
    for seq in n - 2..=n {
        store.tamper_audit_set(seq, None).expect("tampers");
    }
    let (hash, bytes) = store.audit_entry(n - 3).expect("reads").expect("present");
    let mut batch = WriteBatch::default();
    batch.put_audit(n - 3, &bytes, &hash);
    store.commit(batch).expect("commits");
    store.flush_blocking().expect("flushes");
    drop(store);
    let r = verify(root, &config, None);
    assert_eq!(first_bad(&r), n - 2, "{r}");

    // A torn last entry: cut in the middle of its text, or shorter than its hash.
    for (name, keep) in [("torn", 32 + 100), ("torn-short", 20)] {
        let (config, store) = copy(root, name);
        let v = raw(&store, n);
        store.tamper_audit_set(n, Some(v[..keep].to_vec())).expect("tampers");
        drop(store);
        let r = verify(root, &config, None);
        assert_eq!(first_bad(&r), n, "{name}");
        assert!(r["error"].as_str().is_some_and(|e| e.contains("unreadable")), "{name}: {r}");
    }

    // A byte changed in the store's values file itself, where the entries' bytes lie,
    // without the tamper hook: its checksum tells it, and the report names the entry.
    let (config, store) = copy(root, "values-file");
    let v = raw(&store, mid);
    drop(store);
    let dir = config.parent().expect("a directory").join("store").join("values");
    let files = std::fs::read_dir(&dir).expect("lists the values files").map(|e| e.expect("an entry").path());
    let (path, mut bytes, at) = files
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("a-")))
        .find_map(|p| {
            let bytes = std::fs::read(&p).expect("reads a values file");
            let at = bytes.windows(v.len()).position(|w| w == v.as_slice())?;
            Some((p, bytes, at))
        })
        .expect("the entry's bytes are in an audit values file");
    bytes[at + 40] ^= 0x01;
    std::fs::write(&path, bytes).expect("writes");
    let r = verify(root, &config, None);
    assert_eq!(first_bad(&r), mid, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("unreadable") && e.contains("checksum")), "{r}");

    // A forgery by someone holding RU's key: entry k rewritten, everything after it
    // re-chained, every checkpoint re-signed. Alone, the log verifies; against the
    // checkpoints KZ holds, it does not, and the report names the first entry after the
    // last checkpoint KZ saw that still matches.
    let mut seqs: Vec<u64> = witnessed.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    let k = seqs[seqs.len() - 2] + 2;
    assert!(k <= *seqs.last().expect("one") && k <= n, "k {k} lies before the last witnessed checkpoint");
    let (config, store) = copy(root, "forged");
    forge(&store, k, &ru_key());
    drop(store);
    assert_eq!(
        verify(root, &config, None)["ok"],
        true,
        "without a witness a re-signed forgery is consistent"
    );
    let r = verify(root, &config, Some("ru-seen-by-kz.jsonl"));
    assert_eq!(first_bad(&r), seqs[seqs.len() - 2] + 1, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("witnessed")), "{r}");

    // The same forgery by someone without RU's key: its checkpoints do not verify, and
    // the first entry after the last checkpoint RU really signed is named.
    let own: Vec<u64> = {
        let (_, store) = copy(root, "own-checkpoints");
        store.checkpoints().expect("reads").iter().map(|c| c.seq).collect()
    };
    let (config, store) = copy(root, "forged-without-key");
    forge(&store, k, &tamga_protocol::SigningKey::from_bytes(&[7; 32]));
    drop(store);
    let r = verify(root, &config, None);
    let vouched = own.iter().copied().filter(|s| *s < k).max().unwrap_or(0);
    assert_eq!(first_bad(&r), vouched + 1, "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("not signed by RU")), "{r}");

    // A witness file that RU did not sign proves nothing either way.
    let mut bad = witnessed.to_vec();
    bad[0].head = Digest([9; 32]);
    let text: String = bad.iter().map(|c| serde_json::to_string(c).expect("json") + "\n").collect();
    std::fs::write(root.join("bad-witness.jsonl"), text).expect("writes");
    let r = verify(root, &root.join("intact/node.toml"), Some("bad-witness.jsonl"));
    assert_eq!((r["ok"].clone(), r["first_bad"].clone()), (Value::Bool(false), Value::Null), "{r}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains("not signed")), "{r}");
}

/// RU's signing key (the demo identity).
fn ru_key() -> tamga_protocol::SigningKey {
    tamga_node::identity::Identity::from_secret(tamga_config::demo::demo_secret("RU".parse().expect("valid")))
        .signing
}

/// Rewrite entry `from` and re-chain and re-sign everything after it with `key`, as
/// someone holding RU's key could (or someone without it, signing with another).
fn forge(store: &Store, from: u64, key: &tamga_protocol::SigningKey) {
    let n = store.audit_head().expect("reads").expect("a head").0;
    let mut prev =
        if from == 1 { GENESIS } else { store.audit_entry(from - 1).expect("reads").expect("present").0 };
    let mut batch = WriteBatch::default();
    for seq in from..=n {
        let (_, bytes) = store.audit_entry(seq).expect("reads").expect("present");
        let mut e: AuditEntry = serde_json::from_slice(&bytes).expect("an entry");
        if seq == from {
            e.reason = Some("nothing happened here".into());
        }
        if let Some(cp) = e.checkpoint.take() {
            let forged = Checkpoint::sign(cp.member, cp.seq, prev, cp.time_ms, key);
            batch.put_checkpoint(&forged).expect("encodes");
            e.checkpoint = Some(forged);
        }
        e.prev = prev;
        let bytes = e.to_bytes();
        prev = Digest::of(&bytes);
        batch.put_audit(seq, &bytes, &prev);
    }
    store.commit(batch).expect("commits");
    store.flush_blocking().expect("flushes");
}

/// `tamga audit verify --offline --indexes --json` on a copy: the report.
fn verify_indexes(root: &Path, config: &Path) -> Value {
    let config = config.to_str().expect("utf-8");
    let out = run_in(root, &["audit", "verify", "--offline", "--indexes", "--json", "--config", config]);
    let report: Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(out.status.success(), report["ok"] == true, "the exit status follows the report");
    report
}

/// Every posting key of a store's audit indexes: kind, value, the entry the key names,
/// the entries it lists.
fn posting_lists(store: &Store) -> Vec<(u8, Vec<u8>, u64, Vec<u64>)> {
    let mut out = Vec::new();
    store.for_each_audit_posting_list(&[], None, |l| {
        let l = l.expect("reads");
        out.push((l.kind, l.value.to_vec(), l.first, l.seqs.to_vec()));
        true
    });
    out
}

/// Index postings changed on copies of the stopped RU node's store, bypassing the
/// writer: through the store's raw insert (a posting key rewritten, the key laid out as
/// `I`, kind, value, 0, first seq) or a batch of one posting. The entries are untouched,
/// so `audit verify` alone still says ok; `--indexes` fails and names the difference.
fn index_tamper_tests(root: &Path) {
    let (config, store) = copy(root, "indexes-intact");
    let n = store.audit_head().expect("reads").expect("a head").0;
    let lists = posting_lists(&store);
    drop(store);
    let r = verify_indexes(root, &config);
    assert_eq!(r["indexes"]["ok"], true, "{r}");
    let postings: usize = lists.iter().map(|l| l.3.len()).sum();
    assert_eq!(r["indexes"]["expected"], postings as u64, "{r}");
    assert_eq!(r["indexes"]["through"], n, "{r}");

    // A list of several entries whose last can move one entry on, to one it does not hold.
    let (kind, value, first, seqs) = lists
        .iter()
        .find(|(k, v, _, seqs)| {
            let last = *seqs.last().expect("a posting");
            seqs.len() > 1
                && last < n
                && !lists.iter().any(|(k2, v2, _, s2)| k2 == k && v2 == v && s2.contains(&(last + 1)))
        })
        .cloned()
        .expect("a list of several entries");
    let last = *seqs.last().expect("a posting");
    let text = |seq: u64| {
        let value = match kind {
            b'r' => value.iter().map(|b| format!("{b:02x}")).collect(),
            _ => String::from_utf8(value.clone()).expect("text"),
        };
        format!("kind {} value {value} seq {seq}", char::from(kind))
    };
    let rewrite = |store: &Store, seqs: &[u64]| {
        let key = [b"I", &[kind][..], &value, &[0], &first.to_be_bytes()].concat();
        store.raw_insert(vec![(key, seqs.iter().flat_map(|s| s.to_be_bytes()).collect())]).expect("tampers");
        store.flush_blocking().expect("flushes");
    };
    let add = |store: &Store, kind: u8, value: &[u8], seq: u64| {
        let mut batch = WriteBatch::default();
        batch.put_audit_index(kind, value, seq);
        store.commit(batch).expect("commits");
        store.flush_blocking().expect("flushes");
    };
    let fails = |name: &str, tamper: &dyn Fn(&Store), named: &[String]| {
        let (config, store) = copy(root, name);
        tamper(&store);
        drop(store);
        assert_eq!(verify(root, &config, None)["ok"], true, "{name}: the entries are sound");
        let r = verify_indexes(root, &config);
        assert_eq!(
            (r["ok"].clone(), r["first_bad"].clone()),
            (Value::Bool(false), Value::Null),
            "{name}: {r}"
        );
        let error = r["error"].as_str().expect("an error");
        assert!(error.starts_with("the indexes disagree with the entries: "), "{name}: {error}");
        assert!(error.contains(&named[0]), "{name}: {error}");
        let differences: Vec<&str> = r["indexes"]["differences"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for d in named {
            assert!(differences.contains(&d.as_str()), "{name}: {d} in {differences:?}");
        }
        config
    };

    // A posting deleted.
    let config = fails(
        "index-deleted",
        &|s| rewrite(s, &seqs[..seqs.len() - 1]),
        &[format!("posting missing: {}", text(last))],
    );
    // …said plainly without --json, and the exit status is a failure.
    let out = run_in(
        root,
        &["audit", "verify", "--offline", "--indexes", "--config", config.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out).starts_with("FAILED: the indexes disagree with the entries: posting missing: "),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("indexes disagree with its entries"), "{}", stderr(&out));

    // A posting added, for an entry that does not name it (entry 1: the node started).
    fails(
        "index-added",
        &|s| add(s, b'p', b"KZ", 1),
        &["posting with no entry: kind p value KZ seq 1".to_owned()],
    );

    // A posting's seq changed: moved to the next entry.
    let mut moved = seqs.clone();
    *moved.last_mut().expect("a posting") = last + 1;
    fails(
        "index-moved",
        &|s| rewrite(s, &moved),
        &[format!("posting missing: {}", text(last)), format!("posting with no entry: {}", text(last + 1))],
    );

    // A posting beyond the entries the indexes cover.
    fails(
        "index-beyond",
        &|s| add(s, b'a', b"ingested", n + 7),
        &[format!(
            "posting beyond the indexed range: kind a value ingested seq {} (the indexes cover entries through {n})",
            n + 7
        )],
    );
}

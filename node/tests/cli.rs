//! The `tamga` command as an operator and an auditor use it (the README's commands): a
//! real `tamga run` child process driven by the other subcommands.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::*;
use std::time::Duration;

fn run(args: &[&str], config: &Path) -> Output {
    tamga().args(args).arg("--config").arg(config).output().expect("tamga runs")
}

fn start(config: &Path) -> Running {
    let child = tamga()
        .args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let r = Running(child);
    for _ in 0..300 {
        if run(&["status"], config).status.success() {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node did not come up");
}

#[test]
fn operator_and_auditor_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("ru");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    let api = format!("127.0.0.1:{port}");
    let init = |extra: &[&str]| {
        tamga()
            .args([
                "init",
                "--member",
                "RU",
                "--demo-identity",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api",
                &api,
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .arg("--federation")
            .arg(example())
            .output()
            .expect("init runs")
    };
    let out = ok(&init(&["--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("init --json prints JSON");
    assert_eq!(v["member"], "RU");
    assert!(v["peer_id"].as_str().is_some_and(|p| p.starts_with("12D3")));
    let again = init(&[]);
    assert!(!again.status.success(), "init refuses to overwrite");
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory is its owner's alone");
    // Nor over a store another node left, or through a symlink at node.toml's name; and
    // what a refused init began is not left behind.
    for (what, make) in [
        (
            "store",
            Box::new(|d: &Path| std::fs::create_dir_all(d.join("store")).expect("mkdir"))
                as Box<dyn Fn(&Path)>,
        ),
        (
            "node.toml",
            Box::new(|d: &Path| {
                std::os::unix::fs::symlink(d.join("nowhere"), d.join("node.toml")).expect("links")
            }),
        ),
    ] {
        let other = dir.path().join(format!("other-{what}"));
        std::fs::create_dir_all(&other).expect("mkdir");
        make(&other);
        let out = tamga()
            .args(["init", "--member", "RU", "--demo-identity", "--data-dir"])
            .arg(&other)
            .arg("--federation")
            .arg(example())
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what) && err.contains("refusing to overwrite"), "{err}");
        assert!(!other.join("identity.key").exists() && !other.join("nowhere").exists(), "{what}");
    }
    // As the README and the systemd unit's notes give it: a fresh key, the default addresses.
    let fresh = dir.path().join("kz");
    let out = ok(&tamga()
        .args(["init", "--member", "KZ", "--data-dir"])
        .arg(&fresh)
        .arg("--federation")
        .arg(example())
        .output()
        .expect("runs"));
    assert!(out.contains("KZ") && out.contains("12D3KooW"), "{out}");
    let text = std::fs::read_to_string(fresh.join("node.toml")).expect("reads");
    assert!(text.contains("\"/ip4/0.0.0.0/tcp/7100\"") && text.contains("\"127.0.0.1:7180\""), "{text}");
    let kz_peer = tamga_config::demo::demo_peer_id("KZ".parse().expect("code")).to_string();
    assert!(!out.contains(&kz_peer), "a fresh key, not the demo's");
    let config = data.join("node.toml");

    // Not running yet: one clear line naming the address.
    let down = run(&["status"], &config);
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains(&api) && err.lines().count() <= 2, "{err}");
    assert!(!err.contains("panicked"));

    let _node = start(&config);
    let status = ok(&run(&["status", "--json"], &config));
    assert!(status.contains("\"member\": \"RU\""), "{status}");

    let body =
        r#"{"title":"Risk profiling by route","method_type":"selectivity","summary":"Routes are scored."}"#;
    let added = ok(&tamga()
        .args(["records", "add", "--category", "rms.method", "--classification", "public", "--body", body])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs"));
    let id = added.split_whitespace().next().expect("an id").to_owned();
    assert_eq!(id.len(), 64);

    let bad = tamga()
        .args([
            "records",
            "add",
            "--category",
            "rms.method",
            "--classification",
            "public",
            "--body",
            r#"{"title":"x"}"#,
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing required field"));

    let jsonl = dir.path().join("methods.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{}\n{}\nnot json\n{}\n",
            r#"{"category":"rms.method","classification":"public","body":{"title":"A","method_type":"training","summary":"s"}}"#,
            r#"{"category":"rms.method","classification":"public","body":{"title":"B","method_type":"training","summary":"s","colour":"red"}}"#,
            r#"{"category":"rms.method","classification":"confidential","body":{"title":"C","method_type":"other","summary":"s"}}"#,
        ),
    )
    .expect("writes");
    // A line that is not UTF-8, with CRLF line ends around it: refused on its own.
    let mut bytes = std::fs::read(&jsonl).expect("reads");
    bytes.extend_from_slice(b"{\"title\":\"\xff\xfe\"}\r\n\r\n");
    std::fs::write(&jsonl, bytes).expect("writes");
    let imported =
        tamga().args(["records", "import"]).arg(&jsonl).arg("--config").arg(&config).output().expect("runs");
    assert!(!imported.status.success(), "refused lines make the import fail");
    let summary = String::from_utf8_lossy(&imported.stdout);
    assert!(summary.contains("2 accepted"), "{summary}");
    assert!(summary.contains(":2:") && summary.contains("colour"), "{summary}");
    assert!(summary.contains(":3:") && summary.contains("not JSON"), "{summary}");
    assert!(summary.contains(":5:") && summary.contains("not UTF-8"), "{summary}");
    assert!(summary.contains("3 refused"), "{summary}");

    let table = ok(&run(&["records", "list", "--category", "rms.method", "--since", "24h"], &config));
    assert_eq!(table.lines().count(), 4, "header and three records:\n{table}");
    let listed = ok(&run(&["records", "list", "--json", "--since", "24h"], &config));
    let v: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(3));
    // Page after page, as a listing longer than one call's 10,000 is.
    let ids = |args: &[&str]| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&ok(&run(args, &config))).expect("JSON");
        v["records"].as_array().expect("records").iter().map(|r| r["id"].clone()).collect()
    };
    let all = ids(&["records", "list", "--json"]);
    assert_eq!(all.len(), 3);
    assert_eq!(ids(&["records", "list", "--json", "--all", "--page-size", "1"]), all);
    assert_eq!(ids(&["records", "list", "--all", "--json"]), all);
    assert_eq!(ids(&["records", "list", "--json", "--limit", "2", "--page-size", "1"]), all[..2]);
    assert_eq!(ids(&["records", "list", "--json", "--limit", "0"]), Vec::<serde_json::Value>::new());
    let paged = ok(&run(&["records", "list", "--all", "--page-size", "2"], &config));
    assert_eq!(paged, ok(&run(&["records", "list"], &config)), "the table, paged or not");
    let shown = ok(&tamga().args(["records", "show", &id, "--config"]).arg(&config).output().expect("runs"));
    assert!(shown.contains("Risk profiling by route"), "{shown}");
    // A record id is checked before it becomes part of a path: this one would have been
    // sent as `POST /v1/records/<id>/revoke` (what follows `#` is dropped).
    let mangled = run(&["records", "feedback", &format!("{id}/revoke#"), "--outcome", "seized"], &config);
    let said = String::from_utf8_lossy(&mangled.stderr);
    assert!(!mangled.status.success() && said.contains("64 hexadecimal characters"), "{mangled:?}");
    let revoked = ok(&run(&["audit", "query", "--action", "revoked", "--json"], &config));
    assert_eq!(revoked, "", "nothing was revoked");

    let q = ok(&run(&["audit", "query", "--action", "ingested", "--json"], &config));
    assert_eq!(q.lines().count(), 3, "{q}");
    let q = ok(&run(&["audit", "query", "--since", "24h", "--action", "ingested"], &config));
    assert_eq!(q.lines().count(), 4, "header and three entries:\n{q}");
    let q = ok(&run(&["audit", "query", "--outcome", "refused", "--json"], &config));
    assert!(q.lines().count() >= 1, "the confidential record was withheld from every party:\n{q}");
    assert!(q.lines().all(|l| l.contains("\"withheld\"")), "only policy withholdings were refused:\n{q}");
    let csv = ok(&run(&["audit", "query", "--csv"], &config));
    assert!(csv.starts_with("seq,time,action"), "{csv}");
    let verified = ok(&run(&["audit", "verify"], &config));
    assert!(verified.starts_with("ok:"), "{verified}");
    // An auditor given only the auditor's token, in a file of their own.
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("tokens.json")).expect("reads"))
            .expect("JSON");
    let token_file = dir.path().join("auditor.token");
    std::fs::write(&token_file, format!("{}\n", tokens["auditor"].as_str().expect("a token")))
        .expect("writes");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tf = token_file.to_str().expect("a path");
    let verified = ok(&run(&["audit", "verify", "--token-file", tf], &config));
    assert!(verified.starts_with("ok:"), "{verified}");
    let listed = run(&["records", "list", "--token-file", tf], &config);
    assert!(
        !listed.status.success() && String::from_utf8_lossy(&listed.stderr).contains("403"),
        "{listed:?}"
    );
    // The policy commands that call the node take one too: the auditor's may not reload,
    // the admin's may.
    let reload = run(&["policy", "reload", "--token-file", tf], &config);
    assert!(
        !reload.status.success() && String::from_utf8_lossy(&reload.stderr).contains("403"),
        "{reload:?}"
    );
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&admin_file, tokens["admin"].as_str().expect("a token")).expect("writes");
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let reloaded =
        ok(&run(&["policy", "reload", "--token-file", admin_file.to_str().expect("a path")], &config));
    assert!(reloaded.starts_with("unchanged"), "{reloaded}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = run(&["audit", "verify", "--token-file", tf], &config);
    let err = String::from_utf8_lossy(&loose.stderr);
    assert!(!loose.status.success() && err.contains("auditor.token"), "{err}");

    // A failed export leaves an earlier export as it was; a good one replaces it whole.
    let export = dir.path().join("ru-audit.jsonl");
    let partial = dir.path().join("ru-audit.jsonl.partial");
    std::fs::write(&export, "an earlier export\n").expect("writes");
    let export_to = |since: &str| {
        tamga()
            .args(["audit", "export", "--since", since, "--out"])
            .arg(&export)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs")
    };
    let failed = export_to("yesterday");
    assert!(!failed.status.success(), "a bad --since fails");
    assert!(stderr(&failed).contains("\"yesterday\" is neither"), "{}", stderr(&failed));
    assert_eq!(std::fs::read_to_string(&export).expect("reads"), "an earlier export\n");
    assert!(!partial.exists(), "the partial file is removed");
    ok(&export_to("24h"));
    let exported = std::fs::read_to_string(&export).expect("reads");
    assert!(exported.lines().count() >= 3 && exported.starts_with("{\"hash\":"), "{exported}");
    assert!(!partial.exists());

    let backup = dir.path().join("ru.backup");
    ok(&tamga().args(["backup", "--out"]).arg(&backup).arg("--config").arg(&config).output().expect("runs"));
    assert_eq!(
        (mode(&backup), mode(&export)),
        (0o600, 0o600),
        "a backup and an export are their owner's alone"
    );
    drop(_node);
    let verified = ok(&run(&["audit", "verify", "--offline"], &config));
    assert!(verified.starts_with("ok:"), "{verified}");
    let restored = dir.path().join("restored");
    let out =
        ok(&tamga().args(["restore", "--data-dir"]).arg(&restored).arg(&backup).output().expect("runs"));
    assert!(out.contains("3 records, audit log verified"), "{out}");
    // A backup whose audit log does not verify restores nothing: no store is left that
    // `tamga run` would open, and the same directory takes a good backup afterwards.
    let mut snap = tamga_node::backup::decode(&std::fs::read(&backup).expect("reads")).expect("decodes");
    let entry = snap.iter_mut().find(|(k, _)| k.first() == Some(&b'A')).expect("an audit entry");
    let last = entry.1.len() - 2;
    entry.1[last] ^= 1;
    let tampered = dir.path().join("tampered.backup");
    std::fs::write(&tampered, tamga_node::backup::encode(&snap)).expect("writes");
    let again = dir.path().join("again");
    let refused = tamga().args(["restore", "--data-dir"]).arg(&again).arg(&tampered).output().expect("runs");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("not restored: the audit log does not verify"), "{}", stderr(&refused));
    assert!(!again.exists(), "nothing is left, not even the data directory the restore made");
    ok(&tamga().args(["restore", "--data-dir"]).arg(&again).arg(&backup).output().expect("runs"));

    let comp = tamga().args(["completions", "bash"]).output().expect("runs");
    assert!(comp.status.success() && String::from_utf8_lossy(&comp.stdout).contains("tamga"));
}

/// `records import` against a node whose request bodies are limited to 2 KiB: a batch over
/// the limit is split and sent again, a line too large on its own is refused by its line
/// number, and everything else is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_splits_batches_over_the_body_limit() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("ru");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    ok(&tamga()
        .args(["init", "--member", "RU", "--demo-identity", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--federation")
        .arg(example())
        .output()
        .expect("init runs"));
    let config = data.join("node.toml");
    let text = std::fs::read_to_string(&config).expect("reads");
    std::fs::write(&config, text.replace("[api]\n", "[api]\nmax_body_bytes = 2048\n")).expect("writes");
    let node = tamga_node::daemon::Node::start(tamga_config::NodeConfig::load(&config).expect("loads"))
        .await
        .expect("starts");

    // 20 records of about 200 bytes: the default batch (500) is far over 2 KiB.
    let line = |i: usize, summary: &str| {
        format!(
            r#"{{"category":"rms.method","classification":"public","body":{{"title":"Method {i}","method_type":"training","summary":"{summary}"}}}}"#
        )
    };
    let mut lines: Vec<String> = (1..=20).map(|i| line(i, &"s".repeat(100))).collect();
    lines[6] = line(7, &"x".repeat(3000));
    let file = dir.path().join("methods.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("writes");
    let imported = {
        let (file, config) = (file.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            tamga().args(["records", "import", "--json"]).arg(&file).arg("--config").arg(&config).output()
        })
        .await
        .expect("joins")
        .expect("runs")
    };
    assert!(!imported.status.success(), "a refused line makes the import fail");
    assert!(!stderr(&imported).contains("Payload Too Large"), "{}", stderr(&imported));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&imported)).expect("a JSON summary");
    assert_eq!(summary["accepted"], 19, "{summary}");
    let refused = summary["refused"].as_array().expect("refused lines");
    assert_eq!(refused.len(), 1, "{summary}");
    assert_eq!(refused[0]["line"], 7);
    assert!(refused[0]["error"].as_str().is_some_and(|e| e.contains("2048 bytes")), "{summary}");
    assert_eq!(node.shared().store.record_count(), 19);
    node.shutdown().await;
}

/// Every figure `tamga bench --json` prints without `--sweep`, by name.
const BENCH_FIGURES: &[&str] = &[
    "projection on the wire (push of one)",
    "baseline: ed25519 sign (1 core)",
    "baseline: ed25519 verify (1 core)",
    "baseline: projection encode+hash",
    "projection salt+sign (1 core)",
    "projection verify (1 core)",
    "baseline: projection batch verify of 64 (1 core)",
    "baseline: libp2p req-resp echo, 1 projection",
    "baseline: libp2p req-resp echo, 1 projection (MB/s)",
    "baseline: libp2p req-resp echo, 64 projections",
    "baseline: libp2p req-resp echo, 64 projections (MB/s)",
    "baseline: libp2p req-resp echo, 64 projections (projections/s)",
    "baseline: sled insert, flush per 100",
    "ingest via API, batch 1",
    "ingest via API, batch 100",
    "ingest, batch 100: cores used (node and clients)",
    "disk bytes per stored record",
    "replication 1 origin -> N-1 peers",
    "replication: cores used (every node, one process)",
    "latency ack -> stored on all peers p50 @1000/s",
    "latency ack -> stored on all peers p95 @1000/s",
    "latency ack -> stored on all peers p99 @1000/s",
    "origin disk bytes per record",
    "RSS of the bench process (all in-process nodes)",
    "catch-up of a restarted node",
    "catch-up node: cores used (own process)",
    "catch-up: cores used by the peers answering (bench process)",
    "catch-up node: start-up until its API answers",
    "catch-up node: records held",
    "catch-up node: RSS (own process)",
    "catch-up node: RSS started again, at rest",
    "catch-up node: disk bytes per record held",
    "gossipsub 1 -> N-1 subscribers (batch verify, no store)",
    "gossipsub latency publish -> all verified p50 @1000/s",
    "gossipsub latency publish -> all verified p95 @1000/s",
    "gossipsub latency publish -> all verified p99 @1000/s",
    "reload: file change -> in force, median",
    "limit: ingest = min(sled insert, salt+sign 1 core)",
    "limit: replication, verify-bound = v*c/(N-1)",
    "limit: replication, req-resp-bound = e64*64/(N-1)",
    "limit: replication = min of both",
    "limit: catch-up = min(v*c, e64*64)",
    "ratio: ingest batch 100 / ingest limit",
    "ratio: ingest batch 100 / sled insert",
    "ratio: replication / verify-bound limit (target >= 0.5)",
    "ratio: replication / replication limit",
    "ratio: replication / gossipsub",
    "ratio: latency p99 / gossipsub p99",
    "ratio: catch-up / catch-up limit",
    "ratio: disk per record held / projection bytes (target <= 3)",
];

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = tamga().arg("bench").args(args).arg("--json").output().expect("runs");
    let text = ok(&out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn positive(v: &serde_json::Value) -> bool {
    v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)
}

/// `tamga bench` at a tiny size: every figure present, with a unit and a positive finite
/// value (shape, not speed).
#[test]
fn bench_smoke() {
    let v = bench_json(&["--records", "1000", "--nodes", "3", "--audit-entries", "20000"]);
    let figures = v["figures"].as_array().expect("figures");
    for name in BENCH_FIGURES {
        let f = figures.iter().find(|f| f["name"] == *name).unwrap_or_else(|| panic!("{name} missing: {v}"));
        assert!(positive(&f["value"]), "{name}: {f}");
        assert!(f["unit"].as_str().is_some_and(|u| !u.is_empty()), "{name}: {f}");
    }
    assert!(figures.iter().all(|f| positive(&f["value"])), "every figure is positive: {v}");
    for k in ["records", "nodes", "cores", "memory_bytes", "projection_bytes", "payload_bytes"] {
        assert!(positive(&v[k]), "{k}: {v}");
    }
    assert_eq!(v["nodes"], 3);
    assert!(v["notes"].as_array().is_some_and(|n| !n.is_empty()), "{v}");
    assert_eq!(v["sweep"].as_array().map(Vec::len), Some(0), "no sweep unless asked");
    // The catch-up node holds the replicated, steady-rate and missed records.
    let held = figures.iter().find(|f| f["name"] == "catch-up node: records held").expect("held");
    assert!(held["value"].as_f64().is_some_and(|h| h >= 3000.0), "{held}");
    // The audit section: the append rate, a peer+day query, a trace, a count, verify.
    let audit: Vec<&serde_json::Value> =
        figures.iter().filter(|f| f["name"].as_str().is_some_and(|n| n.starts_with("audit "))).collect();
    assert_eq!(audit.len(), 7, "{v}");
}

/// `tamga bench --sweep` on a tiny grid: one point per (nodes, records), each positive.
#[test]
fn bench_sweep_smoke() {
    let v = bench_json(&[
        "--records",
        "1000",
        "--nodes",
        "2",
        "--audit-entries",
        "0",
        "--payload",
        "256",
        "--sweep",
        "--sweep-records",
        "1000",
        "--sweep-nodes",
        "2,3",
    ]);
    assert_eq!(v["payload_bytes"], 256);
    let figures = v["figures"].as_array().expect("figures");
    for name in
        ["baseline: libp2p req-resp echo, --payload", "baseline: libp2p req-resp echo, --payload (MB/s)"]
    {
        let f = figures.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("{name} missing: {v}"));
        assert!(positive(&f["value"]), "{name}: {f}");
    }
    let sweep = v["sweep"].as_array().expect("sweep");
    assert_eq!(sweep.len(), 2, "{v}");
    for (p, nodes) in sweep.iter().zip([2, 3]) {
        assert_eq!(p["nodes"], nodes);
        assert_eq!(p["records"], 1000);
        for k in [
            "replication_records_per_sec",
            "catch_up_records_per_sec",
            "held",
            "rss_bytes",
            "rss_at_rest_bytes",
            "disk_bytes_per_record",
            "origin_disk_bytes_per_record",
        ] {
            assert!(positive(&p[k]), "{k}: {p}");
        }
    }
}

/// Arguments the bench cannot run with are refused with one clear line, before any work.
#[test]
fn bench_refuses_bad_arguments() {
    for (args, says) in [
        (&["--records", "10"][..], "--records must be at least"),
        (&["--nodes", "11"][..], "--nodes must be from 2 to 10"),
        (&["--payload", "0"][..], "--payload must be from 1"),
        (&["--sweep", "--sweep-nodes", "1"][..], "--sweep-nodes values must be from 2 to 10"),
        (&["--sweep", "--sweep-records", "5"][..], "--sweep-records values must be at least"),
    ] {
        let out = tamga().arg("bench").args(args).output().expect("runs");
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `tamga init --listen` checks the address as node.toml's `network.listen` is checked: a
/// QUIC v1 address is accepted and the node it writes runs on it; other UDP forms are
/// refused with one line naming the accepted forms, before anything is created.
#[test]
fn init_listen_takes_quic_v1_and_refuses_other_udp_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    let init = |data: &Path, listen: &str| {
        tamga()
            .args(["init", "--member", "RU", "--demo-identity", "--json", "--listen", listen])
            .args(["--api", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--federation")
            .arg(example())
            .output()
            .expect("init runs")
    };
    for (listen, says) in
        [("/ip4/127.0.0.1/udp/7100", "plain UDP"), ("/ip4/127.0.0.1/udp/7100/quic", "draft-29")]
    {
        let data = dir.path().join("refused");
        let out = init(&data, listen);
        assert!(!out.status.success(), "{listen} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains(says) && err.contains("/udp/PORT/quic-v1") && err.contains("/tcp/PORT"),
            "{err}"
        );
        assert!(!err.contains("panicked") && err.lines().count() <= 2, "{err}");
        assert!(!data.exists(), "nothing is created for a refused address");
    }

    let data = dir.path().join("ru");
    let v: serde_json::Value = serde_json::from_str(&ok(&init(&data, "/ip4/127.0.0.1/udp/0/quic-v1")))
        .expect("init --json prints JSON");
    assert_eq!(v["listen"], "/ip4/127.0.0.1/udp/0/quic-v1");
    let config = data.join("node.toml");
    let _node = start(&config);
    let status = ok(&run(&["status", "--json"], &config));
    assert!(status.contains("\"member\": \"RU\""), "{status}");
}

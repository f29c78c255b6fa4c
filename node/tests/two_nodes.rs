//! The README's "two nodes by hand": `tamga init` two members of the example federation on
//! the roster's ports, `tamga run` both, add a record at one, see it at the other, and see
//! each in the other's `tamga peers`.

mod common;

use std::process::Stdio;

use common::*;
use std::time::Duration;

#[test]
fn two_nodes_by_hand() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The example roster lists KZ at 127.0.0.1:7103 and RU at 127.0.0.1:7104.
    for (m, p2p, api) in [("RU", 7104, 7184), ("KZ", 7103, 7183)] {
        ok(&tamga()
            .current_dir(dir.path())
            .args(["init", "--member", m, "--data-dir", &m.to_lowercase(), "--demo-identity"])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{p2p}"), "--api", &format!("127.0.0.1:{api}")])
            .arg("--federation")
            .arg(example())
            .output()
            .expect("init runs"));
    }
    let run = |m: &str| {
        Running(
            tamga()
                .current_dir(dir.path())
                .args(["run", "--config", &format!("{m}/node.toml")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starts"),
        )
    };
    let _ru = run("ru");
    let _kz = run("kz");
    let cli = |args: &[&str]| tamga().current_dir(dir.path()).args(args).output().expect("runs");
    let mut connected = false;
    for _ in 0..300 {
        let out = cli(&["peers", "--config", "ru/node.toml", "--json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            connected = v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["member"] == "KZ" && x["connected"] == true));
            if connected {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connected, "RU sees KZ connected");
    let table = ok(&cli(&["peers", "--config", "ru/node.toml"]));
    assert!(table.lines().any(|l| l.starts_with("KZ") && l.contains("connected")), "{table}");
    let head: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert!(head.ends_with(&["BEHIND", "UNRECEIPTED", "FEEDBACK", "AGREEMENTS"]), "{table}");

    let body = r#"{"alert_kind":"smuggling","summary":"Undeclared cigarettes in a timber load","detected_at":"2026-11-27T06:40:00Z","customs_office":"Troitsk"}"#;
    let out = cli(&[
        "records",
        "add",
        "--config",
        "ru/node.toml",
        "--category",
        "enforcement.alert",
        "--classification",
        "non_confidential",
        "--body",
        body,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The example catalog decides which fields an alert needs; show them if this body misses one.
    assert!(out.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("an id").to_owned();
    let mut seen = false;
    for _ in 0..300 {
        let list = ok(&cli(&["records", "list", "--config", "kz/node.toml", "--origin", "RU", "--json"]));
        if list.contains(&id) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "KZ received RU's alert");
    // Pushed while connected, so KZ's signed receipt comes back: nothing left unreceipted.
    let mut receipted = serde_json::Value::Null;
    for _ in 0..300 {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&cli(&["peers", "--config", "ru/node.toml", "--json"]))).expect("JSON");
        receipted = v["peers"].as_array().into_iter().flatten().find(|p| p["member"] == "KZ").expect("KZ")
            ["receipts"]
            .clone();
        if receipted["receipted"].as_u64() >= Some(1) && receipted["outstanding"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receipted["outstanding"], 0, "{receipted}");
    assert!(receipted["pushed"].as_u64() >= Some(1), "{receipted}");

    // KZ answers with feedback, which reaches RU; RU revokes, KZ purges.
    ok(&cli(&[
        "records",
        "feedback",
        "--config",
        "kz/node.toml",
        &id,
        "--outcome",
        "seized",
        "--note",
        "40 boxes at Troitsk",
    ]));
    let mut fed_back = false;
    for _ in 0..300 {
        if ok(&cli(&["records", "show", "--config", "ru/node.toml", &id])).contains("seized from KZ") {
            fed_back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fed_back, "RU shows KZ's feedback");
    ok(&cli(&["records", "revoke", "--config", "ru/node.toml", &id]));
    let mut purged = false;
    for _ in 0..300 {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&cli(&["records", "show", "--config", "kz/node.toml", &id, "--json"])))
                .expect("JSON");
        if v["record"]["state"] == "revoked" {
            purged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(purged, "KZ purged the revoked alert");
}

//! `tamga demo` as a newcomer runs it: the real binary, its exit status, its final matrix
//! checked against facts read off the example files by hand (independently of the
//! oracle the demo itself uses), and every command a `--keep` run prints, run as printed.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Records of `category` that `member` holds from `origin`.
fn held(v: &Value, member: &str, category: &str, origin: &str) -> u64 {
    v["matrix"][member][category]["by_origin"][origin].as_u64().unwrap_or(0)
}

const SIX: [&str; 6] = ["CN", "KG", "KZ", "RU", "TJ", "UZ"];

#[test]
fn demo_holds_exactly_what_the_policies_allow() {
    let o = tamga().args(["demo", "--json"]).output().expect("tamga runs");
    assert!(o.status.success(), "tamga demo failed:\n{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON summary");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["members"], serde_json::json!(SIX));
    assert_eq!(v["holdings"]["ok"], true, "{:#}", v["holdings"]);
    assert_eq!(v["holdings"]["checked"], v["holdings"]["expected"]);
    for m in SIX {
        assert_eq!(v["verify"][m]["ok"], true, "audit verify at {m}: {:#}", v["verify"][m]);
    }
    // The live view went to stderr, one line per flow.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("RU → KZ        ru-kz-enforcement"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "no colour codes off a terminal");

    // Confidential and secret records never leave their node.
    assert!(v["confidential"]["ingested"].as_u64() >= Some(SIX.len() as u64));
    assert_eq!(v["confidential"]["held_elsewhere"], 0);

    // RU–KZ alerts: each party holds the other's, and no third member holds any.
    assert!(held(&v, "KZ", "enforcement.alert", "RU") > 0, "KZ holds RU's alerts");
    assert!(held(&v, "RU", "enforcement.alert", "KZ") > 0, "RU holds KZ's alerts");
    for m in ["CN", "KG", "TJ", "UZ"] {
        let cell = &v["matrix"][m]["enforcement.alert"];
        assert_eq!((cell["own"].as_u64(), cell["received"].as_u64()), (Some(0), Some(0)), "{m}: {cell}");
    }

    // IPR seizures go to every party (TJ's too: its policy shares seizures).
    for m in SIX {
        for origin in SIX.iter().filter(|o| **o != m) {
            assert!(held(&v, m, "ipr.infringement", origin) > 0, "{m} holds {origin}'s seizures");
        }
    }
    // TJ does not share its register: nobody else holds TJ's marks; TJ holds everyone's.
    for m in SIX.iter().filter(|m| **m != "TJ") {
        assert_eq!(held(&v, m, "ipr.protected_mark", "TJ"), 0, "{m} holds a TJ mark");
        assert!(held(&v, "TJ", "ipr.protected_mark", m) > 0, "TJ holds {m}'s marks");
    }
    // Energy: RU pauses TJ; KG sends to its neighbours only, not to RU.
    assert_eq!(held(&v, "TJ", "energy.transfer", "RU"), 0);
    assert!(held(&v, "KZ", "energy.transfer", "RU") > 0);
    assert_eq!(held(&v, "RU", "energy.transfer", "KG"), 0);
    assert!(held(&v, "KZ", "energy.transfer", "KG") > 0);
    // RMS: TJ shares none; KG shares seminars but not methods.
    for m in SIX.iter().filter(|m| **m != "TJ") {
        assert_eq!(held(&v, m, "rms.event", "TJ") + held(&v, m, "rms.method", "TJ"), 0);
    }
    for m in SIX.iter().filter(|m| **m != "KG") {
        assert_eq!(held(&v, m, "rms.method", "KG"), 0);
    }
    assert!(held(&v, "RU", "rms.event", "KG") > 0);

    // The events say why: the pause, and personal data withheld under the IPR memorandum.
    let events = v["events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["kind"] == "withheld"
        && e["at"] == "RU"
        && e["peer"] == "TJ"
        && e["agreement"] == "sco-energy-2008"
        && e["reason"].as_str().is_some_and(|r| r.contains("paused"))));
    let ipr: Vec<&Value> =
        events.iter().filter(|e| e["kind"] == "received" && e["agreement"] == "sco-ipr-2012").collect();
    assert!(!ipr.is_empty());
    for e in ipr {
        assert!(e["withheld_fields"].as_array().is_some_and(|f| !f.is_empty()), "{e}");
    }
}

#[test]
fn kept_nodes_answer_every_printed_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = dir.path().join("demo");
    let o = tamga().args(["demo", "--keep"]).arg(&keep).output().expect("tamga runs");
    assert!(o.status.success(), "tamga demo --keep failed:\n{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("holdings: ok"), "{stdout}");
    let commands: Vec<Vec<String>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  tamga "))
        .map(|l| {
            assert!(!l.contains('\''), "a path needs quoting; split it properly: {l}");
            l.split_whitespace().map(str::to_owned).collect()
        })
        .collect();
    assert!(commands.iter().any(|c| c[0] == "run"), "a `tamga run` is printed:\n{stdout}");
    assert!(commands.len() >= 6, "{stdout}");

    let mut node: Option<Running> = None;
    for c in &commands {
        let config = c.iter().skip_while(|a| *a != "--config").nth(1).expect("every command names its node");
        assert!(Path::new(config).starts_with(std::fs::canonicalize(&keep).expect("exists")), "{config}");
        if c[0] == "run" {
            let child = tamga().args(c).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starts");
            node = Some(Running(child));
            let up = (0..300).any(|_| {
                let s = tamga().args(["status", "--config", config]).output().expect("runs");
                s.status.success() || {
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            });
            assert!(up, "the kept node did not come up with `tamga {}`", c.join(" "));
            continue;
        }
        let o = tamga().args(c).output().expect("runs");
        assert!(o.status.success(), "`tamga {}` failed:\n{}", c.join(" "), text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        if c.contains(&"enforcement.alert".to_owned()) {
            let rows = out.lines().filter(|l| l.contains(" RU ") && l.contains("enforcement.alert")).count();
            assert_eq!(rows, 2, "KZ holds RU's two alerts:\n{out}");
        }
    }
    assert!(node.is_some());
}

#[test]
fn a_subset_with_the_secretariat() {
    let o = tamga().args(["demo", "--members", "KZ,RU,XS", "--json"]).output().expect("tamga runs");
    assert!(o.status.success(), "tamga demo failed:\n{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON summary");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["members"], serde_json::json!(["KZ", "RU", "XS"]));
    // The Secretariat is a party to the RMS memorandum only.
    for c in ["ipr.protected_mark", "ipr.infringement", "energy.transfer", "enforcement.alert"] {
        assert_eq!(v["matrix"]["XS"][c]["received"], 0, "XS holds {c}");
    }
    assert!(held(&v, "XS", "rms.method", "RU") > 0);
    assert!(held(&v, "RU", "rms.event", "XS") > 0 && held(&v, "KZ", "rms.event", "XS") > 0);
    assert!(held(&v, "KZ", "enforcement.alert", "RU") > 0);
}

#[test]
fn bad_arguments_are_refused_with_one_clear_line() {
    let o = tamga().args(["demo", "--members", "RU,FR"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("FR is not a member"), "{}", text(&o));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("something"), "x").expect("writes");
    let o = tamga().args(["demo", "--keep"]).arg(dir.path()).output().expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"), "{}", text(&o));
}

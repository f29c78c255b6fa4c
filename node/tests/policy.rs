//! `tamga policy check|diff|explain|reload` as an administrator uses them: the real
//! binary on copies of the example federation, and a real `tamga run` child process for
//! the commands that ask the running node. One test per error kind and per warning kind
//! of `check`, each on a copy of the example broken in one place.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {}\n{}", stdout(o), stderr(o));
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
    stdout(o)
}

/// A copy of the example federation (roster, catalog, agreements, policies).
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["roster.toml", "catalog.toml"] {
        std::fs::copy(example().join(f), dir.path().join(f)).expect("copies");
    }
    for sub in ["agreements", "policies"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(example().join(sub)).expect("lists") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, dir.path().join(sub).join(p.file_name().expect("a name"))).expect("copies");
        }
    }
    dir
}

/// Replace the first `from` in `file` by `to`.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).expect("reads");
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).expect("writes");
}

/// 1-based line and column (in characters) of the first `needle` in `file`.
fn pos(dir: &Path, file: &str, needle: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join(file)).expect("reads");
    let at = text.find(needle).unwrap_or_else(|| panic!("{file} has no {needle:?}"));
    let line = text[..at].matches('\n').count() + 1;
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    (line as u64, text[start..at].chars().count() as u64 + 1)
}

fn check_json(args: &[&str], dir: &Path) -> (Value, Output) {
    let out = tamga().args(["policy", "check"]).arg(dir).args(args).arg("--json").output().expect("runs");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    (v, out)
}

/// `policy check DIR --member RU` on a copy broken by `f` reports exactly one error, of
/// `kind`, in `file`, at the position of `needle` (`None`: the whole file), naming
/// `words`; the text output shows it as `path:line:col: error: …` and exits 1.
fn one_error(
    f: impl FnOnce(&Path),
    kind: &str,
    file: &str,
    needle: Option<&str>,
    words: &str,
) -> (tempfile::TempDir, Value) {
    let d = copy();
    f(d.path());
    let (v, out) = check_json(&["--member", "RU"], d.path());
    fails(&out);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let e = &errors[0];
    assert_eq!(e["kind"], kind, "{e}");
    assert_eq!(e["path"].as_str().map(PathBuf::from), Some(d.path().join(file)), "{e}");
    let at = needle.map_or((0, 0), |n| pos(d.path(), file, n));
    assert_eq!((e["line"].as_u64(), e["col"].as_u64()), (Some(at.0), Some(at.1)), "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains(words)), "{e}");
    assert_eq!(v["ok"], false);
    // The same as text: path:line:col: error: message, then the hint; exit 1.
    let text =
        tamga().args(["policy", "check"]).arg(d.path()).args(["--member", "RU"]).output().expect("runs");
    let printed = fails(&text);
    let path = d.path().join(file).display().to_string();
    let head =
        if at.0 == 0 { format!("{path}: error: ") } else { format!("{path}:{}:{}: error: ", at.0, at.1) };
    assert!(printed.starts_with(&head), "{printed}");
    if let Some(h) = e["hint"].as_str() {
        assert!(printed.contains(&format!("\n  hint: {h}\n")), "{printed}");
    }
    assert!(printed.ends_with("1 error, 0 warnings\n"), "{printed}");
    assert!(stderr(&text).starts_with("error: the files are invalid"), "{}", stderr(&text));
    (d, v)
}

// ---- check: the example, and one test per error kind ---------------------------------

#[test]
fn check_the_example_federation() {
    let out = ok(&tamga().args(["policy", "check"]).arg(example()).output().expect("runs"));
    for m in ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"] {
        assert!(out.contains(&format!("{m}: ")), "{out}");
    }
    assert!(out.ends_with("0 errors, 0 warnings\n"), "{out}");
    let (v, o) = check_json(&["--member", "KZ", "--deny-warnings"], &example());
    ok(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["checked"][0]["member"], "KZ");
    assert_eq!(v["checked"][0]["digest"].as_str().map(str::len), Some(64));
}

#[test]
fn error_io() {
    one_error(
        |d| std::fs::remove_file(d.join("catalog.toml")).expect("removes"),
        "io",
        "catalog.toml",
        None,
        "cannot read",
    );
}

#[test]
fn error_syntax() {
    one_error(
        |d| edit(d, "agreements/sco-rms-2013.toml", "relay = true", "relay = yes"),
        "syntax",
        "agreements/sco-rms-2013.toml",
        Some("yes"),
        "",
    );
}

#[test]
fn error_unknown_key() {
    let (_d, v) = one_error(
        |d| edit(d, "policies/RU.toml", "note = \"TJ", "nota = \"TJ"),
        "unknown_key",
        "policies/RU.toml",
        Some("nota"),
        "unknown key `nota`",
    );
    assert!(v["errors"][0]["hint"].as_str().is_some_and(|h| h.contains("note")), "{v}");
}

#[test]
fn error_missing_key() {
    one_error(
        |d| edit(d, "agreements/sco-energy-2008.toml", "retention_days = 730\n", ""),
        "missing_key",
        "agreements/sco-energy-2008.toml",
        Some("# Protocol"),
        "missing key `retention_days`",
    );
}

#[test]
fn error_invalid() {
    one_error(
        |d| edit(d, "agreements/sco-energy-2008.toml", "retention_days = 730", "retention_days = -5"),
        "invalid",
        "agreements/sco-energy-2008.toml",
        Some("-5"),
        "retention_days -5 is outside",
    );
}

#[test]
fn error_duplicate() {
    one_error(
        |d| edit(d, "agreements/sco-energy-2008.toml", "\"TJ\", \"UZ\"]", "\"TJ\", \"UZ\", \"KZ\"]"),
        "duplicate",
        "agreements/sco-energy-2008.toml",
        Some("\"KZ\"]"),
        "party KZ is listed twice",
    );
}

#[test]
fn error_unknown_member() {
    one_error(
        |d| edit(d, "agreements/sco-energy-2008.toml", "\"TJ\", \"UZ\"]", "\"TJ\", \"UZ\", \"MN\"]"),
        "unknown_member",
        "agreements/sco-energy-2008.toml",
        Some("\"MN\""),
        "member MN is not in the roster",
    );
}

#[test]
fn error_unknown_category() {
    one_error(
        |d| {
            edit(
                d,
                "agreements/sco-energy-2008.toml",
                "[\"energy.transfer\"]",
                "[\"energy.transfer\", \"energy.price\"]",
            )
        },
        "unknown_category",
        "agreements/sco-energy-2008.toml",
        Some("\"energy.price\""),
        "category energy.price is not in the catalog",
    );
}

#[test]
fn error_unknown_field() {
    one_error(
        |d| {
            edit(
                d,
                "policies/RU.toml",
                "except = [\"TJ\"]",
                "except = [\"TJ\"]\nredact_fields = [\"pipeline\"]",
            )
        },
        "unknown_field",
        "policies/RU.toml",
        Some("\"pipeline\""),
        "no category of this rule has a field `pipeline`",
    );
}

#[test]
fn error_unknown_tag() {
    one_error(
        |d| edit(d, "agreements/sco-energy-2008.toml", "[\"commercial\"]", "[\"comercial\"]"),
        "unknown_tag",
        "agreements/sco-energy-2008.toml",
        Some("\"comercial\""),
        "no field of the catalog is tagged `comercial`",
    );
}

#[test]
fn error_date_order() {
    one_error(
        |d| {
            edit(
                d,
                "agreements/sco-ipr-2012.toml",
                "effective_from = 2012-12-05",
                "effective_from = 2012-12-01",
            )
        },
        "date_order",
        "agreements/sco-ipr-2012.toml",
        Some("2012-12-01"),
        "effective_from 2012-12-01 is before the signature date 2012-12-05",
    );
}

#[test]
fn error_too_few_parties() {
    one_error(
        |d| edit(d, "agreements/ru-kz-enforcement.toml", "parties = [\"KZ\", \"RU\"]", "parties = [\"RU\"]"),
        "too_few_parties",
        "agreements/ru-kz-enforcement.toml",
        Some("[\"RU\"]"),
        "at least two parties",
    );
}

#[test]
fn error_classified() {
    let (_d, v) = one_error(
        |d| edit(d, "policies/RU.toml", "classifications = [\"public\"]", "classifications = [\"secret\"]"),
        "classified",
        "policies/RU.toml",
        Some("\"secret\""),
        "a policy may not share secret records",
    );
    assert!(v["errors"][0]["hint"].as_str().is_some_and(|h| h.contains("invariant 2")), "{v}");
}

#[test]
fn error_weak_key() {
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&weak).expect("decodes");
    let weak_peer = libp2p::identity::PublicKey::from(key).to_peer_id().to_string();
    let cn = tamga_config::demo::demo_peer_id("CN".parse().expect("code")).to_string();
    one_error(
        |d| edit(d, "roster.toml", &cn, &weak_peer),
        "weak_key",
        "roster.toml",
        Some(&format!("\"{weak_peer}")),
        "weak",
    );
}

#[test]
fn error_not_ed25519() {
    let mut bytes = vec![0x12, 0x20];
    bytes.extend([7u8; 32]);
    let hashed = libp2p::PeerId::from_bytes(&bytes).expect("sha256 peer id").to_string();
    let kz = tamga_config::demo::demo_peer_id("KZ".parse().expect("code")).to_string();
    one_error(
        |d| edit(d, "roster.toml", &kz, &hashed),
        "not_ed25519",
        "roster.toml",
        Some(&format!("\"{hashed}")),
        "not an ed25519 PeerId",
    );
}

#[test]
fn error_member_mismatch() {
    one_error(
        |d| edit(d, "policies/RU.toml", "member = \"RU\"", "member = \"KZ\""),
        "member_mismatch",
        "policies/RU.toml",
        Some("\"KZ\""),
        "KZ",
    );
}

#[test]
fn error_too_many() {
    let long = "x".repeat(300);
    one_error(
        |d| {
            edit(
                d,
                "agreements/sco-rms-2013.toml",
                "title = \"Memorandum on cooperation in the development",
                &format!("title = \"{long} Memorandum on cooperation in the development"),
            )
        },
        "too_many",
        "agreements/sco-rms-2013.toml",
        Some(&format!("\"{long}")),
        "more than the limit of 256",
    );
}

#[test]
fn errors_are_all_reported_at_once_and_node_toml_is_checked() {
    let d = copy();
    edit(d.path(), "policies/RU.toml", "note = \"TJ", "nota = \"TJ");
    edit(d.path(), "agreements/sco-energy-2008.toml", "[\"commercial\"]", "[\"comercial\"]");
    let (v, out) = check_json(&["--member", "RU"], d.path());
    fails(&out);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(2), "{v}");
    // A node.toml: its own errors, then (when it loads) its files and its identity.
    let nodes = tempfile::tempdir().expect("tempdir");
    let data = nodes.path().join("ru");
    ok(&tamga()
        .args([
            "init",
            "--member",
            "RU",
            "--demo-identity",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--federation")
        .arg(d.path())
        .output()
        .expect("runs"));
    let config = data.join("node.toml");
    let o = tamga().args(["policy", "check", "--config"]).arg(&config).output().expect("runs");
    let printed = fails(&o);
    assert!(printed.contains("unknown key `nota`") && printed.contains("`comercial`"), "{printed}");
    edit(d.path(), "policies/RU.toml", "nota = \"TJ", "note = \"TJ");
    edit(d.path(), "agreements/sco-energy-2008.toml", "[\"comercial\"]", "[\"commercial\"]");
    let printed = ok(&tamga().args(["policy", "check"]).arg(&config).output().expect("runs"));
    assert!(printed.contains("RU: ") && printed.ends_with("0 errors, 0 warnings\n"), "{printed}");
    // The node's identity is checked against the roster too.
    let other = tamga_config::demo::demo_peer_id("CN".parse().expect("code")).to_string();
    let ru = tamga_config::demo::demo_peer_id("RU".parse().expect("code")).to_string();
    edit(d.path(), "roster.toml", &ru, &other.replace("12D3KooW", "12D3KooX"));
    let printed = fails(&tamga().args(["policy", "check"]).arg(&config).output().expect("runs"));
    assert!(printed.contains("roster.toml:"), "{printed}");
    std::fs::write(
        d.path().join("roster.toml"),
        std::fs::read(example().join("roster.toml")).expect("reads"),
    )
    .expect("writes");
    edit(
        d.path(),
        "roster.toml",
        &ru,
        &tamga_config::demo::demo_peer_id("MN".parse().expect("code")).to_string(),
    );
    let printed = fails(&tamga().args(["policy", "check"]).arg(&config).output().expect("runs"));
    assert!(printed.contains("is not listed for RU in the roster"), "{printed}");
    std::fs::write(&config, std::fs::read_to_string(&config).expect("reads") + "\nbogus = 1\n")
        .expect("writes");
    let printed = fails(&tamga().args(["policy", "check", "--config"]).arg(&config).output().expect("runs"));
    assert!(printed.contains("node.toml:") && printed.contains("unknown key `bogus`"), "{printed}");
    // The same as JSON (the README's `policy check --config … --json`).
    let out =
        tamga().args(["policy", "check", "--config"]).arg(&config).arg("--json").output().expect("runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(!out.status.success() && v["ok"] == false, "{v}");
    let errors = v["errors"].as_array().expect("errors");
    assert!(errors.iter().any(|e| e.to_string().contains("bogus")), "{v}");
}

// ---- check: one test per warning kind ------------------------------------------------

/// `policy check DIR [ARGS]` on a copy edited by `f`: no error, exactly one warning of
/// `kind` in `file` at the position of `needle`, shown as `path:line:col: warning: …`;
/// exit 0 (and 1 with --deny-warnings).
fn one_warning(f: impl FnOnce(&Path), args: &[&str], kind: &str, file: &str, needle: &str, words: &str) {
    let d = copy();
    f(d.path());
    let (v, out) = check_json(args, d.path());
    ok(&out);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
    let w = v["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{v}");
    let w = &w[0];
    assert_eq!(w["kind"], kind);
    assert_eq!(w["path"].as_str().map(PathBuf::from), Some(d.path().join(file)));
    let (line, col) = pos(d.path(), file, needle);
    assert_eq!((w["line"].as_u64(), w["col"].as_u64()), (Some(line), Some(col)), "{w}");
    assert!(w["message"].as_str().is_some_and(|m| m.contains(words)), "{w}");
    let printed = ok(&tamga().args(["policy", "check"]).arg(d.path()).args(args).output().expect("runs"));
    let head = format!("{}:{line}:{col}: warning: ", d.path().join(file).display());
    assert!(printed.starts_with(&head), "{printed}");
    assert!(printed.contains("\n  hint: "), "{printed}");
    assert!(printed.ends_with("0 errors, 1 warning\n"), "{printed}");
    let strict =
        tamga().args(["policy", "check", "--deny-warnings"]).arg(d.path()).args(args).output().expect("runs");
    fails(&strict);
}

#[test]
fn warning_category_in_no_agreement() {
    one_warning(
        |d| {
            let p = d.join("catalog.toml");
            let text = std::fs::read_to_string(&p).expect("reads")
                + "\n[category.\"customs.statistics\"]\n[category.\"customs.statistics\".fields.total]\ntype = \"integer\"\n";
            std::fs::write(p, text).expect("writes");
        },
        &[],
        "category_in_no_agreement",
        "catalog.toml",
        "[category.\"customs.statistics\"]",
        "customs.statistics is covered by no agreement",
    );
}

#[test]
fn warning_agreement_ended() {
    one_warning(
        |d| {
            edit(
                d,
                "agreements/ru-kz-enforcement.toml",
                "effective_from = 2012-07-01\n",
                "effective_from = 2012-07-01\neffective_until = 2020-06-30\n",
            )
        },
        &["--member", "RU"],
        "agreement_ended",
        "agreements/ru-kz-enforcement.toml",
        "2020-06-30",
        "ru-kz-enforcement ended on 2020-06-30",
    );
}

#[test]
fn warning_member_in_no_agreement() {
    let mn = tamga_config::demo::demo_peer_id("MN".parse().expect("code"));
    one_warning(
        |d| {
            let p = d.join("roster.toml");
            let text = std::fs::read_to_string(&p).expect("reads")
                + &format!("\n[[member]]\ncode = \"MN\"\nname = \"Mongolia\"\nrole = \"observer\"\npeer_ids = [\"{mn}\"]\n");
            std::fs::write(p, text).expect("writes");
        },
        &["--member", "RU"],
        "member_in_no_agreement",
        "roster.toml",
        "[[member]]\ncode = \"MN\"",
        "member MN is a party to no agreement",
    );
}

#[test]
fn warning_not_in_roster() {
    one_warning(
        |d| std::fs::write(d.join("policies/MN.toml"), "member = \"MN\"\n").expect("writes"),
        &[],
        "not_in_roster",
        "policies/MN.toml",
        "\"MN\"",
        "policy for MN, a member the roster does not list",
    );
}

#[test]
fn warning_rule_never_matches() {
    one_warning(
        |d| {
            edit(
                d,
                "policies/RU.toml",
                "[[accept]]\nagreement = \"sco-ipr-2012\"",
                "[[share]]\nagreement = \"sco-energy-2008\"\nto = [\"TJ\"]\n\n[[accept]]\nagreement = \"sco-ipr-2012\"",
            )
        },
        &["--member", "RU"],
        "rule_never_matches",
        "policies/RU.toml",
        "[[share]]\nagreement = \"sco-energy-2008\"\nto = [\"TJ\"]",
        "every member it shares to (TJ) is paused",
    );
}

#[test]
fn warning_rule_never_matches_under_an_agreement_no_file_defines() {
    one_warning(
        |d| {
            let p = d.join("policies/RU.toml");
            let text =
                std::fs::read_to_string(&p).expect("reads") + "\n[[share]]\nagreement = \"sco-rms-2031\"\n";
            std::fs::write(p, text).expect("writes");
        },
        &["--member", "RU"],
        "rule_never_matches",
        "policies/RU.toml",
        "[[share]]\nagreement = \"sco-rms-2031\"",
        "no agreement file defines sco-rms-2031",
    );
}

#[test]
fn warning_outside_agreement() {
    one_warning(
        |d| edit(d, "policies/RU.toml", "to = [\"KZ\"]", "to = [\"CN\"]"),
        &["--member", "RU"],
        "outside_agreement",
        "policies/RU.toml",
        "[[share]]\nagreement = \"ru-kz-enforcement\"",
        "names CN, not a party to ru-kz-enforcement",
    );
}

// ---- diff and explain, offline -------------------------------------------------------

#[test]
fn diff_two_directories() {
    let d = copy();
    edit(
        d.path(),
        "policies/RU.toml",
        "except = [\"TJ\"]",
        "except = [\"TJ\", \"KZ\"]\nredact_fields = [\"line_or_pipeline\"]",
    );
    let out = ok(&tamga()
        .args(["policy", "diff"])
        .arg(example())
        .arg(d.path())
        .args(["--member", "RU"])
        .output()
        .expect("runs"));
    assert!(out.starts_with("policy of RU: "), "{out}");
    assert!(out.contains("  file policy: changed ("), "{out}");
    assert!(out.contains("what RU shares:\n  to CN ("), "{out}");
    assert!(
        out.contains(
            "    energy.transfer under sco-energy-2008: still shared; now also withheld: line_or_pipeline"
        ),
        "{out}"
    );
    assert!(out.contains("  to KZ (Customs Control Committee of the Republic of Kazakhstan):\n    energy.transfer under sco-energy-2008: no longer shared — KZ is paused"), "{out}");
    assert!(!out.contains("to TJ"), "TJ was paused before and after: {out}");
    // JSON, and without --member: every member's policy in NEW.
    let out =
        ok(&tamga().args(["policy", "diff", "--json"]).arg(example()).arg(d.path()).output().expect("runs"));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let diffs = v["diffs"].as_array().expect("diffs");
    assert_eq!(diffs.len(), 7);
    let ru = diffs.iter().find(|x| x["member"] == "RU").expect("RU");
    let kz: Vec<&Value> =
        ru["share"].as_array().expect("share").iter().filter(|c| c["peer"] == "KZ").collect();
    assert_eq!(kz.len(), 1);
    assert_eq!(kz[0]["after"]["classifications"].as_array().map(Vec::len), Some(0));
    assert_eq!(kz[0]["before"]["classifications"][1], "non_confidential");
    let cn = diffs.iter().find(|x| x["member"] == "CN").expect("CN");
    assert_eq!(cn["share"].as_array().map(Vec::len), Some(0), "CN's policy did not change");
    // An invalid side: its errors, exit 1.
    edit(d.path(), "policies/RU.toml", "note = \"TJ", "nota = \"TJ");
    let o = tamga()
        .args(["policy", "diff"])
        .arg(example())
        .arg(d.path())
        .args(["--member", "RU"])
        .output()
        .expect("runs");
    assert!(fails(&o).contains("unknown key `nota`"));
}

#[test]
fn explain_a_category_offline() {
    let out = ok(&tamga()
        .args([
            "policy",
            "explain",
            "--category",
            "energy.transfer",
            "--peer",
            "TJ",
            "--classification",
            "public",
            "--member",
            "RU",
            "--dir",
        ])
        .arg(example())
        .output()
        .expect("runs"));
    let policy = example().join("policies/RU.toml").display().to_string();
    assert!(out.contains("under sco-energy-2008 ("), "{out}");
    assert!(out.contains(": deny: the peer is paused by a share rule\n"), "{out}");
    assert!(out.contains(&format!("FAIL TJ is paused: a pause in any rule for sco-energy-2008 / energy.transfer stops everything ({policy}:10)")), "{out}");
    assert!(out.contains("TJ paused pending reconciliation of 2013 volumes"), "{out}");
    let out = ok(&tamga()
        .args([
            "policy",
            "explain",
            "--category",
            "ipr.infringement",
            "--peer",
            "KZ",
            "--member",
            "RU",
            "--json",
            "--dir",
        ])
        .arg(example())
        .output()
        .expect("runs"));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let ex = v["explanations"].as_array().expect("explanations");
    assert_eq!(ex.len(), 2, "public and non_confidential: {v}");
    for e in ex {
        assert_eq!(e["decision"], "allow");
        assert_eq!(e["agreement"], "sco-ipr-2012");
        assert!(e["withheld"].as_array().is_some_and(|w| w.iter().any(|f| f == "declarant_name")), "{e}");
        assert!(
            e["steps"].as_array().is_some_and(|s| s
                .iter()
                .any(|s| s["at"].as_str().is_some_and(|a| a.ends_with("policies/RU.toml:5")))),
            "{e}"
        );
    }
    // A category no agreement of RU's shares to CN.
    let out = ok(&tamga()
        .args([
            "policy",
            "explain",
            "--category",
            "enforcement.alert",
            "--peer",
            "CN",
            "--member",
            "RU",
            "--classification",
            "public",
            "--dir",
        ])
        .arg(example())
        .output()
        .expect("runs"));
    assert!(out.contains("deny: the peer is not a party to the agreement"), "{out}");
}

// ---- with a running node -------------------------------------------------------------

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node of `member` initialised over the federation copy `fed`, running.
fn start(dir: &Path, fed: &Path, member: &str) -> (PathBuf, Running) {
    start_with(dir, fed, member, "")
}

/// [`start`], with `more` appended to the node's `node.toml`.
fn start_with(dir: &Path, fed: &Path, member: &str, more: &str) -> (PathBuf, Running) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
    let data = dir.join(member);
    ok(&tamga()
        .args(["init", "--member", member, "--demo-identity", "--listen", "/ip4/127.0.0.1/tcp/0", "--api"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--federation")
        .arg(fed)
        .output()
        .expect("init runs"));
    let config = data.join("node.toml");
    let text = std::fs::read_to_string(&config).expect("reads node.toml");
    std::fs::write(&config, text + more).expect("writes node.toml");
    let child = tamga()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let r = Running(child);
    for _ in 0..300 {
        if tamga().args(["status", "--config"]).arg(&config).output().expect("runs").status.success() {
            return (config, r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node did not come up");
}

fn status_digest(config: &Path) -> String {
    let out = ok(&tamga().args(["status", "--json", "--config"]).arg(config).output().expect("runs"));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    v["policy_digest"].as_str().expect("a digest").to_owned()
}

fn audit(config: &Path, action: &str) -> Vec<Value> {
    let out = ok(&tamga()
        .args(["audit", "query", "--json", "--action", action, "--config"])
        .arg(config)
        .output()
        .expect("runs"));
    out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Wait (at most 20 s) until the node's digest differs from `old`.
fn wait_for_new_digest(config: &Path, old: &str) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let d = status_digest(config);
        if d != old {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the policy did not change");
}

#[test]
fn reload_diff_and_explain_against_the_running_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = copy();
    let (config, _node) = start(dir.path(), fed.path(), "RU");
    let d0 = status_digest(&config);

    // Nothing changed yet.
    let out = ok(&tamga().args(["policy", "reload", "--config"]).arg(&config).output().expect("runs"));
    assert_eq!(out, format!("unchanged: the files give the policy already in force ({d0})\n"));

    // An edited copy elsewhere, compared with the policy in force.
    let edited = copy();
    edit(
        edited.path(),
        "policies/RU.toml",
        "agreement = \"sco-ipr-2012\"\n",
        "agreement = \"sco-ipr-2012\"\nexcept = [\"KZ\"]\n",
    );
    let out = ok(&tamga()
        .args(["policy", "diff", "--config"])
        .arg(&config)
        .arg(edited.path())
        .output()
        .expect("runs"));
    assert!(out.starts_with(&format!("policy of RU: {} -> ", &d0[..16])), "{out}");
    assert!(
        out.contains("    ipr.protected_mark under sco-ipr-2012: no longer shared — KZ is paused"),
        "{out}"
    );

    // An invalid edit of the node's own files: reload prints every error, exits 1, and
    // the policy in force stays (and the watcher refuses it too).
    edit(fed.path(), "policies/RU.toml", "classifications = [\"public\"]", "classifications = [\"secret\"]");
    let o = tamga().args(["policy", "reload", "--config"]).arg(&config).output().expect("runs");
    let printed = fails(&o);
    let policy = fed.path().join("policies/RU.toml").display().to_string();
    assert!(printed.starts_with(&format!("{policy}:")), "{printed}");
    assert!(printed.contains(": error: a policy may not share secret records\n  hint: "), "{printed}");
    assert!(stderr(&o).contains("the policy in force") && stderr(&o).contains("stays"), "{}", stderr(&o));
    assert_eq!(status_digest(&config), d0);
    let refused = audit(&config, "policy_refused");
    assert!(!refused.is_empty());
    let e = &refused[0]["entry"];
    assert_eq!(e["outcome"], "refused");
    assert_eq!(e["policy"], d0.as_str(), "refused under the policy still in force");
    assert!(e["reason"].as_str().is_some_and(|r| r.contains("may not share secret records")), "{e}");

    // A valid edit: the pause. Reload puts it in force and says so.
    edit(fed.path(), "policies/RU.toml", "classifications = [\"secret\"]", "classifications = [\"public\"]");
    edit(
        fed.path(),
        "policies/RU.toml",
        "agreement = \"sco-ipr-2012\"\n",
        "agreement = \"sco-ipr-2012\"\nexcept = [\"KZ\"]\n",
    );
    let out = ok(&tamga().args(["policy", "reload", "--config"]).arg(&config).output().expect("runs"));
    let d1 = status_digest(&config);
    assert_ne!(d1, d0);
    // (The watcher may have been first; then the files give the policy already in force.)
    assert!(
        out == format!(
            "loaded: policy {d1} is in force from the next decision (was {d0}); changed: {policy}\n"
        ) || out == format!("unchanged: the files give the policy already in force ({d1})\n"),
        "{out}"
    );
    let loaded = audit(&config, "policy_loaded");
    let last = &loaded.last().expect("an entry")["entry"];
    assert_eq!(last["policy"], d1.as_str(), "the entry carries the new digest");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains(&d0)), "{last}");

    // explain --record: the header from the node, the decision under the policy in force.
    let body = r#"{"mark_name":"ACME","register_number":"RU-1","mark_kind":"word","protected_from":"2020-01-01","status":"active","right_holder_name":"ACME Ltd"}"#;
    let added = ok(&tamga()
        .args([
            "records",
            "add",
            "--category",
            "ipr.protected_mark",
            "--classification",
            "public",
            "--body",
            body,
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("runs"));
    let id = added.split_whitespace().next().expect("an id").to_owned();
    let out = ok(&tamga()
        .args(["policy", "explain", "--record", &id, "--peer", "KZ", "--config"])
        .arg(&config)
        .output()
        .expect("runs"));
    assert!(out.starts_with(&format!("record {id}: public ipr.protected_mark, origin RU")), "{out}");
    assert!(out.contains(&format!("policy {} of RU", &d1[..16])), "{out}");
    assert!(out.contains("deny: the peer is paused by a share rule"), "{out}");
    assert!(out.contains(&format!("FAIL KZ is paused: a pause in any rule for sco-ipr-2012 / ipr.protected_mark stops everything ({policy}:")), "{out}");
    let out = ok(&tamga()
        .args(["policy", "explain", "--record", &id, "--peer", "CN", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("runs"));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["record"], id.as_str());
    assert_eq!(v["explanations"][0]["decision"], "allow");
    assert_eq!(v["policy_digest"], d1.as_str());
}

#[test]
fn file_changes_reload_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = copy();
    let (config, _node) = start(dir.path(), fed.path(), "RU");
    let d0 = status_digest(&config);

    // A file change alone: the watcher reloads (debounced), nothing else to do.
    edit(fed.path(), "policies/RU.toml", "except = [\"TJ\"]", "except = [\"TJ\", \"UZ\"]");
    let d1 = wait_for_new_digest(&config, &d0);
    let loaded = audit(&config, "policy_loaded");
    assert!(
        loaded.iter().any(|e| e["entry"]["policy"] == d1.as_str()
            && e["entry"]["reason"].as_str().is_some_and(|r| r.contains("a change of the files"))),
        "{loaded:?}"
    );

    // An invalid change: refused by the watcher, the policy in force stays.
    edit(fed.path(), "agreements/sco-energy-2008.toml", "retention_days = 730", "retention_days = -1");
    let start = Instant::now();
    while audit(&config, "policy_refused").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no refusal audited");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_digest(&config), d1);
    edit(fed.path(), "agreements/sco-energy-2008.toml", "retention_days = -1", "retention_days = 730");
    // Back to valid: the same policy as before, so nothing new is put in force.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_digest(&config), d1);

    // A write that keeps the file's size and modification time: its change time moves.
    let policy = fed.path().join("policies/RU.toml");
    let mtime = std::fs::metadata(&policy).expect("stat").modified().expect("mtime");
    edit(fed.path(), "policies/RU.toml", "\"TJ\", \"UZ\"]", "\"TJ\", \"KG\"]");
    std::fs::File::options()
        .write(true)
        .open(&policy)
        .expect("opens")
        .set_modified(mtime)
        .expect("sets mtime");
    wait_for_new_digest(&config, &d1);
}

#[test]
fn with_the_watcher_off_only_sighup_or_reload_puts_an_edit_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = copy();
    let (config, node) = start_with(dir.path(), fed.path(), "RU", "\n[reload]\nwatch_files = false\n");
    let d1 = status_digest(&config);
    edit(fed.path(), "policies/RU.toml", "except = [\"TJ\"]", "except = [\"TJ\", \"KG\"]");
    // Three polls and the quiet period: the watcher would have put it in force.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_digest(&config), d1, "the edit waits");
    let pid = node.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill runs").success());
    let d2 = wait_for_new_digest(&config, &d1);
    let loaded = audit(&config, "policy_loaded");
    assert!(
        loaded.iter().any(|e| e["entry"]["policy"] == d2.as_str()
            && e["entry"]["reason"].as_str().is_some_and(|r| r.contains("SIGHUP"))),
        "{loaded:?}"
    );
    // The node is still running after SIGHUP.
    assert!(tamga().args(["status", "--config"]).arg(&config).output().expect("runs").status.success());
    // And the command does it too.
    edit(fed.path(), "policies/RU.toml", "\"TJ\", \"KG\"]", "\"TJ\", \"KG\", \"UZ\"]");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_digest(&config), d2, "the edit waits");
    ok(&tamga().args(["policy", "reload", "--config"]).arg(&config).output().expect("runs"));
    assert_ne!(status_digest(&config), d2);
}

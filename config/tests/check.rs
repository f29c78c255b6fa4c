//! Warnings (`tamga policy check`): the example federation has none, and each kind is
//! raised by one edit of a copy of it, at the exact file, line and column.

use std::path::{Path, PathBuf};

use tamga_config::check::{check_dir, Report};
use tamga_config::{demo, ErrorKind, WarningKind};
use tamga_protocol::MemberCode;

/// 2026-11-28T00:00:00Z.
const NOW: i64 = 1_795_824_000_000;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example")
}

fn code(s: &str) -> MemberCode {
    s.parse().expect("test member code")
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

fn edit(dir: &Path, file: &str, f: impl FnOnce(String) -> String) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).expect("reads");
    std::fs::write(&p, f(text)).expect("writes");
}

fn append(dir: &Path, file: &str, more: &str) {
    edit(dir, file, |t| t + more);
}

/// 1-based line of the first line of `file` that starts with `prefix`.
fn line_of(dir: &Path, file: &str, prefix: &str) -> usize {
    let text = std::fs::read_to_string(dir.join(file)).expect("reads");
    text.lines().position(|l| l.starts_with(prefix)).map(|i| i + 1).expect("the line is there")
}

/// The only warning of the report, which must have no error.
fn only_warning(r: &Report) -> &tamga_config::Warning {
    assert!(r.ok(), "errors: {:?}", r.errors);
    assert_eq!(r.warnings.len(), 1, "{:#?}", r.warnings);
    &r.warnings[0]
}

#[test]
fn the_example_federation_has_no_error_and_no_warning() {
    let r = check_dir(&example(), None, NOW);
    assert!(r.ok(), "{:?}", r.errors);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let members: Vec<String> = r.checked.iter().map(|c| c.member.to_string()).collect();
    assert_eq!(members, ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"]);
    assert!(r.checked.iter().all(|c| c.digest.is_some()));
    let one = check_dir(&example(), Some(code("RU")), NOW);
    assert!(one.ok() && one.warnings.is_empty());
    assert_eq!(one.checked.len(), 1);
    assert!(one.checked[0].policy.ends_with("policies/RU.toml"));
}

#[test]
fn warning_category_in_no_agreement() {
    let d = copy();
    append(
        d.path(),
        "catalog.toml",
        "\n[category.\"customs.statistics\"]\n[category.\"customs.statistics\".fields.total]\ntype = \"integer\"\n",
    );
    let w = check_dir(d.path(), None, NOW);
    let w = only_warning(&w);
    assert_eq!(w.kind, WarningKind::CategoryInNoAgreement);
    assert_eq!(w.path, d.path().join("catalog.toml"));
    assert_eq!((w.line, w.col), (line_of(d.path(), "catalog.toml", "[category.\"customs.statistics\"]"), 1));
    assert!(w.message.contains("customs.statistics"), "{w}");
    assert!(
        w.to_string().contains(": warning: category customs.statistics is covered by no agreement"),
        "{w}"
    );
    assert!(w.hint.is_some());
}

#[test]
fn warning_agreement_ended() {
    let d = copy();
    let f = "agreements/sco-energy-2008.toml";
    edit(d.path(), f, |t| {
        t.replace(
            "effective_from = 2008-10-30\n",
            "effective_from = 2008-10-30\neffective_until = 2013-12-31\n",
        )
    });
    let r = check_dir(d.path(), Some(code("RU")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::AgreementEnded);
    assert_eq!(w.path, d.path().join(f));
    assert_eq!((w.line, w.col), (line_of(d.path(), f, "effective_until"), 19));
    assert!(w.message.contains("sco-energy-2008 ended on 2013-12-31"), "{w}");
    // The hint names RU's rule under it.
    assert!(w.hint.as_deref().is_some_and(|h| h.contains("policies/RU.toml:")), "{w}");
    // Not yet ended: no warning.
    assert!(check_dir(d.path(), Some(code("RU")), 1_380_000_000_000).warnings.is_empty());
}

#[test]
fn warning_member_in_no_agreement() {
    let d = copy();
    let peer = demo::demo_peer_id(code("MN"));
    append(
        d.path(),
        "roster.toml",
        &format!("\n[[member]]\ncode = \"MN\"\nname = \"Mongolia (observer state)\"\nrole = \"observer\"\npeer_ids = [\"{peer}\"]\n"),
    );
    let r = check_dir(d.path(), Some(code("KZ")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::MemberInNoAgreement);
    assert_eq!(w.path, d.path().join("roster.toml"));
    let members: Vec<usize> = std::fs::read_to_string(d.path().join("roster.toml"))
        .expect("reads")
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("[[member]]"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!((w.line, w.col), (*members.last().expect("members"), 1));
    assert!(w.message.contains("member MN is a party to no agreement"), "{w}");
}

#[test]
fn warning_not_in_roster_when_checking_the_whole_directory() {
    let d = copy();
    std::fs::write(d.path().join("policies/MN.toml"), "# Mongolia\n\nmember = \"MN\"\n").expect("writes");
    let r = check_dir(d.path(), None, NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::NotInRoster);
    assert_eq!(w.path, d.path().join("policies/MN.toml"));
    assert_eq!((w.line, w.col), (3, 10));
    assert!(w.message.contains("policy for MN, a member the roster does not list"), "{w}");
    // Checked as that member's node would load it, it is an error.
    let r = check_dir(d.path(), Some(code("MN")), NOW);
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::UnknownMember), "{:?}", r.errors);
}

#[test]
fn warning_share_rule_to_self_only() {
    let d = copy();
    let f = "policies/RU.toml";
    append(d.path(), f, "\n[[share]]\nagreement = \"sco-ipr-2012\"\nto = [\"RU\"]\n");
    let r = check_dir(d.path(), Some(code("RU")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::RuleNeverMatches);
    let text = std::fs::read_to_string(d.path().join(f)).expect("reads");
    let last_share = text.lines().enumerate().filter(|(_, l)| *l == "[[share]]").map(|(i, _)| i + 1).last();
    assert_eq!((Some(w.line), w.col), (last_share, 1));
    assert!(w.message.contains("shares only to RU itself"), "{w}");
}

#[test]
fn warning_share_rule_whose_audience_is_all_paused() {
    let d = copy();
    let f = "policies/RU.toml";
    // RU's energy rule pauses TJ; a second rule sharing energy to TJ alone never sends.
    append(d.path(), f, "\n[[share]]\nagreement = \"sco-energy-2008\"\nto = [\"TJ\"]\n");
    let r = check_dir(d.path(), Some(code("RU")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::RuleNeverMatches);
    let pause = line_of(d.path(), f, "agreement = \"sco-energy-2008\"") - 1;
    assert!(w.message.contains("every member it shares to (TJ) is paused"), "{w}");
    assert!(w.message.ends_with(&format!("in the rule at line {pause}")), "{w}");
}

#[test]
fn warning_accept_rule_from_self_only() {
    let d = copy();
    append(d.path(), "policies/KZ.toml", "\n[[accept]]\nagreement = \"sco-rms-2013\"\nfrom = [\"KZ\"]\n");
    let r = check_dir(d.path(), Some(code("KZ")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::RuleNeverMatches);
    assert!(w.message.contains("takes only KZ's own records"), "{w}");
}

#[test]
fn warning_rule_names_a_member_outside_its_agreement() {
    let d = copy();
    // TJ leaves the IPR agreement while RU's rule still shares to it by name: the new
    // text loads, and the rule's mention of TJ is a warning.
    let f = "agreements/sco-ipr-2012.toml";
    edit(d.path(), f, |t| t.replace(", \"TJ\"", ""));
    append(
        d.path(),
        "policies/RU.toml",
        "\n[[share]]\nagreement = \"sco-ipr-2012\"\nto = [\"KZ\", \"TJ\"]\n",
    );
    let r = check_dir(d.path(), Some(code("RU")), NOW);
    let w = only_warning(&r);
    assert_eq!(w.kind, WarningKind::OutsideAgreement);
    assert!(w.message.contains("names TJ, not a party to sco-ipr-2012"), "{w}");
}

#[test]
fn every_warning_kind_is_tested_here() {
    // A reminder: a new WarningKind needs its own test above.
    assert_eq!(WarningKind::ALL.len(), 6);
}

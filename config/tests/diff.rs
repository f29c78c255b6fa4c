//! `tamga policy diff`: each kind of edit of the example federation shows as the change
//! it makes in practice, in words and as data.

use std::path::{Path, PathBuf};

use tamga_config::{diff, Federation};
use tamga_protocol::{Classification, MemberCode};

/// 2026-11-28T00:00:00Z.
const NOW: i64 = 1_795_824_000_000;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example")
}

fn code(s: &str) -> MemberCode {
    s.parse().expect("test member code")
}

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

fn load(dir: &Path, member: &str) -> Federation {
    Federation::load_files(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join("policies").join(format!("{member}.toml")),
        code(member),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).expect("reads");
    assert!(text.contains(from), "{file} has {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).expect("writes");
}

#[test]
fn the_same_files_change_nothing() {
    let d = diff(&load(&example(), "RU"), &load(copy().path(), "RU"), NOW);
    assert!(d.is_empty(), "{d}");
    assert!(d.files.is_empty(), "same bytes: {:?}", d.files);
    assert_eq!(d.old_digest, d.new_digest);
    assert!(d.to_string().contains("no change in what RU shares or accepts"), "{d}");
}

#[test]
fn a_pause_stops_sharing_with_that_member_only() {
    let d = copy();
    edit(
        d.path(),
        "policies/RU.toml",
        "agreement = \"sco-ipr-2012\"\n",
        "agreement = \"sco-ipr-2012\"\nexcept = [\"KZ\"]\n",
    );
    let x = diff(&load(&example(), "RU"), &load(d.path(), "RU"), NOW);
    assert_ne!(x.old_digest, x.new_digest);
    assert_eq!(x.files.len(), 1);
    assert_eq!((x.files[0].file.as_str(), x.files[0].change), ("policy", "changed"));
    let changes: Vec<(String, String)> =
        x.share.iter().map(|c| (c.peer.to_string(), c.category.to_string())).collect();
    assert_eq!(
        changes,
        [
            ("KZ".to_owned(), "ipr.infringement".to_owned()),
            ("KZ".to_owned(), "ipr.protected_mark".to_owned())
        ]
    );
    for c in &x.share {
        assert_eq!(c.before.classifications, [Classification::Public, Classification::NonConfidential]);
        assert!(c.after.classifications.is_empty());
        assert!(c.describe().starts_with("no longer shared — KZ is paused"), "{}", c.describe());
        assert!(c.after.at.as_deref().is_some_and(|a| a.ends_with("policies/RU.toml:5")), "{:?}", c.after.at);
    }
    assert!(x.accept.is_empty());
    let text = x.to_string();
    assert!(text.contains("what RU shares:\n  to KZ ("), "{text}");
    assert!(
        text.contains("    ipr.infringement under sco-ipr-2012: no longer shared — KZ is paused"),
        "{text}"
    );
}

#[test]
fn lifting_a_pause_and_adding_a_redaction() {
    let d = copy();
    edit(d.path(), "policies/RU.toml", "except = [\"TJ\"]\n", "redact_fields = [\"line_or_pipeline\"]\n");
    let x = diff(&load(&example(), "RU"), &load(d.path(), "RU"), NOW);
    let tj: Vec<_> = x.share.iter().filter(|c| c.peer == code("TJ")).collect();
    assert_eq!(tj.len(), 1);
    assert!(tj[0].describe().starts_with("now shared (public and non_confidential records), withholding "));
    assert!(tj[0].after.withheld.contains(&"line_or_pipeline".to_owned()));
    // Every other party of the energy protocol keeps receiving, with one more field withheld.
    let others: Vec<String> =
        x.share.iter().filter(|c| c.peer != code("TJ")).map(|c| c.peer.to_string()).collect();
    assert_eq!(others, ["CN", "KG", "KZ", "UZ"]);
    for c in x.share.iter().filter(|c| c.peer != code("TJ")) {
        assert_eq!(c.redactions_added, ["line_or_pipeline"]);
        assert!(c.redactions_removed.is_empty());
        assert_eq!(c.describe(), "still shared; now also withheld: line_or_pipeline");
    }
}

#[test]
fn an_agreement_that_ends_shares_nothing_and_accepts_nothing() {
    let d = copy();
    edit(
        d.path(),
        "agreements/sco-energy-2008.toml",
        "effective_from = 2008-10-30\n",
        "effective_from = 2008-10-30\neffective_until = 2025-12-31\n",
    );
    let x = diff(&load(&example(), "RU"), &load(d.path(), "RU"), NOW);
    assert_eq!(x.agreements.len(), 1);
    let words = x.agreements[0].changes.join("; ");
    assert!(words.contains("text changed"), "{words}");
    assert!(words.contains("now ends on 2025-12-31 (was: no end date)"), "{words}");
    assert!(words.contains("no longer in force now"), "{words}");
    // RU shared energy with CN, KG, KZ, UZ (TJ was paused): all stop.
    let peers: Vec<String> = x.share.iter().map(|c| c.peer.to_string()).collect();
    assert_eq!(peers, ["CN", "KG", "KZ", "UZ"]);
    for c in &x.share {
        assert!(c.describe().contains("is not in force"), "{}", c.describe());
    }
    // And accepted energy from every other party: no more.
    let origins: Vec<String> = x.accept.iter().map(|c| c.origin.to_string()).collect();
    assert_eq!(origins, ["CN", "KG", "KZ", "TJ", "UZ"]);
    assert!(x.accept.iter().all(|c| c.before && !c.after));
    // The JSON form carries the same.
    let v = serde_json::to_value(&x).expect("serializes");
    assert_eq!(v["share"][0]["peer"], "CN");
    assert_eq!(v["share"][0]["before"]["classifications"][0], "public");
    assert_eq!(v["share"][0]["after"]["classifications"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_classification_narrowed() {
    let d = copy();
    edit(
        d.path(),
        "policies/RU.toml",
        "categories = [\"rms.event\"]\n",
        "categories = [\"rms.event\"]\nclassifications = [\"public\"]\n",
    );
    let x = diff(&load(&example(), "RU"), &load(d.path(), "RU"), NOW);
    assert_eq!(x.share.len(), 6, "every RMS party but RU: {x}");
    for c in &x.share {
        assert_eq!(c.category.to_string(), "rms.event");
        assert_eq!(c.after.classifications, [Classification::Public]);
        assert!(c
            .describe()
            .starts_with("still shared; now public records only (was public and non_confidential)"));
    }
}

// A catalog edit to a category an agreement covers changes that agreement's terms: the
// diff says so, under that agreement only, though its text is the same.
#[test]
fn a_catalog_edit_to_a_covered_category_changes_that_agreements_terms() {
    let d = copy();
    edit(d.path(), "catalog.toml", "tags = [\"personal\"]\n", "tags = [\"personal\", \"contact\"]\n");
    let x = diff(&load(&example(), "RU"), &load(d.path(), "RU"), NOW);
    let changed: Vec<(String, String)> =
        x.agreements.iter().map(|a| (a.agreement.to_string(), a.changes.join("; "))).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].0, "sco-ipr-2012");
    assert!(changed[0].1.starts_with("terms changed"), "{changed:?}");
}

//! Shared parts of tamga's fuzz targets: the example federation of `deploy/example`
//! (compiled in, so that a target reads no file), its demo keys, and the invariants that
//! more than one target checks.
//!
//! The targets themselves live in `fuzz_targets/`, one per entry point family:
//!
//! | target              | entry points                                                        |
//! |---------------------|---------------------------------------------------------------------|
//! | `codec`             | `decode_request`, `decode_response`, `decode_stored` of every stored protocol type, `parse_header` |
//! | `projection_verify` | `decode_stored::<Projection>`, `Projection::{record_id, verify}`, `verify_many` |
//! | `projection_sign`   | structured: `SaltedRecord::new`, `project`, `revocation`, `verify`  |
//! | `config_files`      | `NodeConfig::from_source`, `Federation::from_sources` with the input as roster, catalog, agreement and policy |
//! | `ingest_json`       | the API's ingest body, `Catalog::validate_body` of the example catalog |
//!
//! Nothing here is used by the node: this crate exists only for `cargo fuzz`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use tamga_config::{ConfigErrors, Federation, SourceFile, Sources};
use tamga_protocol::{MemberCode, SigningKey, VerifyingKey};

/// 2014-06-01T00:00:00Z: every agreement of the example federation is in force.
pub const NOW_MS: i64 = 1_401_580_800_000;

/// The example federation's files, as text.
pub mod example {
    /// `roster.toml`.
    pub const ROSTER: &str = include_str!("../../deploy/example/roster.toml");
    /// `catalog.toml`.
    pub const CATALOG: &str = include_str!("../../deploy/example/catalog.toml");
    /// The agreement files, by file name.
    pub const AGREEMENTS: [(&str, &str); 4] = [
        ("ru-kz-enforcement.toml", include_str!("../../deploy/example/agreements/ru-kz-enforcement.toml")),
        ("sco-energy-2008.toml", include_str!("../../deploy/example/agreements/sco-energy-2008.toml")),
        ("sco-ipr-2012.toml", include_str!("../../deploy/example/agreements/sco-ipr-2012.toml")),
        ("sco-rms-2013.toml", include_str!("../../deploy/example/agreements/sco-rms-2013.toml")),
    ];
    /// Every member's policy file, by member code.
    pub const POLICIES: [(&str, &str); 7] = [
        ("CN", include_str!("../../deploy/example/policies/CN.toml")),
        ("KG", include_str!("../../deploy/example/policies/KG.toml")),
        ("KZ", include_str!("../../deploy/example/policies/KZ.toml")),
        ("RU", include_str!("../../deploy/example/policies/RU.toml")),
        ("TJ", include_str!("../../deploy/example/policies/TJ.toml")),
        ("UZ", include_str!("../../deploy/example/policies/UZ.toml")),
        ("XS", include_str!("../../deploy/example/policies/XS.toml")),
    ];
    /// Every member's `node.toml`, by member code.
    pub const NODES: [(&str, &str); 7] = [
        ("CN", include_str!("../../deploy/example/nodes/CN.toml")),
        ("KG", include_str!("../../deploy/example/nodes/KG.toml")),
        ("KZ", include_str!("../../deploy/example/nodes/KZ.toml")),
        ("RU", include_str!("../../deploy/example/nodes/RU.toml")),
        ("TJ", include_str!("../../deploy/example/nodes/TJ.toml")),
        ("UZ", include_str!("../../deploy/example/nodes/UZ.toml")),
        ("XS", include_str!("../../deploy/example/nodes/XS.toml")),
    ];
    /// The members of the example roster.
    pub const MEMBERS: [&str; 7] = ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"];
}

/// A member code of the example roster (or any two capitals).
pub fn code(s: &str) -> MemberCode {
    s.parse().expect("member codes of the example are two capitals")
}

/// The example roster's members.
pub fn members() -> Vec<MemberCode> {
    example::MEMBERS.iter().map(|m| code(m)).collect()
}

/// **Demo** signing key of a member (the key the example roster lists).
pub fn signing_key(m: MemberCode) -> SigningKey {
    tamga_config::demo::demo_signing_key(m)
}

/// **Demo** verifying key of a member.
pub fn verifying_key(m: MemberCode) -> VerifyingKey {
    signing_key(m).verifying_key()
}

/// The example policy of `member`, or KZ's for a member without one.
pub fn policy_of(member: MemberCode) -> &'static str {
    example::POLICIES
        .iter()
        .find(|(m, _)| *m == member.as_str())
        .or_else(|| example::POLICIES.iter().find(|(m, _)| *m == "KZ"))
        .map(|(_, text)| *text)
        .expect("the example has a KZ policy")
}

/// The example federation's files for `member`, with the paths they have under
/// `deploy/example`.
pub fn sources(member: MemberCode) -> Sources {
    Sources {
        roster: SourceFile::new("roster.toml", example::ROSTER),
        catalog: SourceFile::new("catalog.toml", example::CATALOG),
        agreements: example::AGREEMENTS
            .iter()
            .map(|(name, text)| SourceFile::new(format!("agreements/{name}"), *text))
            .collect(),
        policy: SourceFile::new(format!("policies/{member}.toml"), policy_of(member)),
    }
}

/// The example federation as KZ sees it, loaded once.
pub fn example_federation() -> &'static Federation {
    static FED: OnceLock<Federation> = OnceLock::new();
    FED.get_or_init(|| {
        Federation::from_sources(&sources(code("KZ")), code("KZ"))
            .unwrap_or_else(|e| panic!("the example federation loads:\n{e}"))
    })
}

/// Every file of a set of sources.
pub fn files(s: &Sources) -> Vec<&SourceFile> {
    let mut out = vec![&s.roster, &s.catalog, &s.policy];
    out.extend(s.agreements.iter());
    out
}

/// The invariant of every file error: it names one of the files given, and its position
/// is inside that file's text (line from 1 to the number of lines, column from 1 to one
/// past the line's last character), or it has no position (line and column 0) and then
/// concerns the whole file. No error is the "could not be loaded" fallback, which only a
/// file that could not be read may cause.
pub fn check_error_positions(errors: &ConfigErrors, files: &[&SourceFile]) {
    assert!(!errors.is_empty(), "a failed load reports at least one error");
    for e in errors.iter() {
        assert!(
            !e.message.contains("could not be loaded"),
            "text in memory failed to load without saying why: {e}"
        );
        let Some(src) = files.iter().find(|f| f.path() == e.path) else {
            let known: BTreeSet<_> = files.iter().map(|f| f.path().display().to_string()).collect();
            panic!("error names a file that was not given ({known:?}): {e}");
        };
        assert!(!e.message.is_empty(), "an error without a message at {}:{}", e.line, e.col);
        if e.line == 0 {
            assert_eq!(e.col, 0, "a whole-file error has no column: {e}");
            continue;
        }
        let lines: Vec<&str> = src.text().split('\n').collect();
        let Some(line) = lines.get(e.line - 1) else {
            panic!("error on line {} of a {}-line file: {e}", e.line, lines.len());
        };
        let chars = line.chars().count();
        assert!(
            e.col >= 1 && e.col <= chars + 1,
            "error at column {} of a {chars}-character line: {e}",
            e.col
        );
    }
}

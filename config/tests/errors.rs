//! One test per kind of problem in the files: each checks the kind, the file, the exact
//! line and column, and that the message names the item. Fixtures are small files in a
//! temporary directory; each test breaks one line of a valid federation.

use std::path::{Path, PathBuf};

use tamga_config::{demo, ConfigError, ConfigErrors, ErrorKind, Federation, NodeConfig};
use tamga_protocol::MemberCode;

fn code(s: &str) -> MemberCode {
    s.parse().expect("test member code")
}

fn peer(s: &str) -> String {
    demo::demo_peer_id(code(s)).to_string()
}

fn roster() -> String {
    format!(
        r#"[[member]]
code = "RU"
name = "Russia"
peer_ids = ["{ru}"]
addrs = ["/ip4/127.0.0.1/tcp/7104"]

[[member]]
code = "KZ"
name = "Kazakhstan"
peer_ids = ["{kz}"]

[[member]]
code = "CN"
name = "China"
role = "member"
peer_ids = ["{cn}"]
"#,
        ru = peer("RU"),
        kz = peer("KZ"),
        cn = peer("CN")
    )
}

const CATALOG: &str = r#"[category."ipr.mark"]
title = "Mark"

[category."ipr.mark".fields.name]
type = "text"
required = true
max_len = 10

[category."ipr.mark".fields.holder]
type = "text"
tags = ["personal"]

[category."ipr.mark".fields.kind]
type = "enum"
values = ["word", "figurative"]

[category."energy.flow"]
[category."energy.flow".fields.volume]
type = "decimal"
required = true
"#;

const IPR: &str = r#"id = "ipr"
title = "IPR"
signed = 2012-12-05
effective_from = 2013-01-01
parties = ["RU", "KZ", "CN"]
categories = ["ipr.mark"]
redact_tags = ["personal"]
relay = true
retention_days = 365
"#;

const ENERGY: &str = r#"id = "energy"
title = "Energy"
signed = 2008-10-30
effective_from = 2008-10-30
parties = ["RU", "KZ"]
categories = ["energy.flow"]
relay = false
retention_days = 365
"#;

const POLICY: &str = r#"member = "RU"

[[share]]
agreement = "ipr"
to = ["KZ", "CN"]
except = ["CN"]
redact_fields = ["kind"]

[[accept]]
agreement = "energy"
from = ["KZ"]
"#;

/// A federation's files in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    roster: String,
    catalog: String,
    agreements: Vec<(&'static str, String)>,
    policy: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            roster: roster(),
            catalog: CATALOG.to_owned(),
            agreements: vec![("ipr.toml", IPR.to_owned()), ("energy.toml", ENERGY.to_owned())],
            policy: POLICY.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self) {
        let w = |name: &str, text: &str| std::fs::write(self.path(name), text).expect("write fixture");
        w("roster.toml", &self.roster);
        w("catalog.toml", &self.catalog);
        w("policy.toml", &self.policy);
        std::fs::create_dir_all(self.path("agreements")).expect("mkdir");
        for (name, text) in &self.agreements {
            w(&format!("agreements/{name}"), text);
        }
    }

    fn load(&self) -> Result<Federation, ConfigErrors> {
        self.write();
        Federation::load_files(
            &self.path("roster.toml"),
            &self.path("catalog.toml"),
            &self.path("agreements"),
            &self.path("policy.toml"),
            code("RU"),
        )
    }

    fn errors(&self) -> ConfigErrors {
        match self.load() {
            Ok(_) => panic!("the fixture loaded, but an error was expected"),
            Err(e) => e,
        }
    }

    /// The single error, checked: kind, file, line, column, and words in the message.
    fn one_error(&self, kind: ErrorKind, file: &str, line: usize, col: usize, words: &[&str]) -> ConfigError {
        let errs = self.errors();
        assert_eq!(errs.len(), 1, "expected one error, got:\n{errs}");
        let e = errs.0.into_iter().next().expect("one error");
        check(&e, kind, &self.path(file), line, col, words);
        e
    }

    fn set_agreement(&mut self, name: &str, text: String) {
        match self.agreements.iter_mut().find(|(n, _)| *n == name) {
            Some(a) => a.1 = text,
            None => panic!("no agreement {name}"),
        }
    }
}

fn check(e: &ConfigError, kind: ErrorKind, path: &Path, line: usize, col: usize, words: &[&str]) {
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.path, path, "{e}");
    assert_eq!((e.line, e.col), (line, col), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:{line}:{col}: ", path.display())),
        "display does not start with path:line:col: {shown}"
    );
    for w in words {
        assert!(shown.contains(w), "{shown:?} does not mention {w:?}");
    }
}

#[test]
fn the_fixture_is_valid() {
    let fed = Fixture::new().load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fed.agreements.len(), 2);
}

#[test]
fn toml_syntax_error() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("agreement = \"ipr\"", "agreement = \"ipr");
    f.one_error(ErrorKind::Syntax, "policy.toml", 4, 17, &[]);
}

#[test]
fn wrong_toml_type() {
    let mut f = Fixture::new();
    f.set_agreement("ipr.toml", IPR.replace("relay = true", "relay = \"yes\""));
    f.one_error(ErrorKind::Syntax, "agreements/ipr.toml", 8, 9, &["boolean"]);
}

#[test]
fn unknown_key_lists_the_allowed_keys() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("to = [", "too = [");
    let e = f.one_error(ErrorKind::UnknownKey, "policy.toml", 5, 1, &["unknown key `too`"]);
    let hint = e.hint.expect("hint");
    assert!(
        hint.contains("agreement") && hint.contains("except") && hint.contains("classifications"),
        "{hint}"
    );
}

#[test]
fn missing_key() {
    let mut f = Fixture::new();
    f.set_agreement("energy.toml", ENERGY.replace("relay = false\n", ""));
    f.one_error(ErrorKind::MissingKey, "agreements/energy.toml", 1, 1, &["`relay`"]);
}

#[test]
fn malformed_member_code() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("to = [\"KZ\", \"CN\"]", "to = [\"KZ\", \"cn\"]");
    f.one_error(ErrorKind::Invalid, "policy.toml", 5, 13, &["\"cn\""]);
}

#[test]
fn duplicate_member_code() {
    let mut f = Fixture::new();
    f.roster = format!(
        "{}\n[[member]]\ncode = \"RU\"\nname = \"Russia again\"\npeer_ids = [\"{}\"]\n",
        roster(),
        peer("UZ")
    );
    f.one_error(ErrorKind::Duplicate, "roster.toml", 19, 8, &["RU", "line 1"]);
}

#[test]
fn duplicate_peer_id_across_members() {
    let mut f = Fixture::new();
    f.roster = roster().replace(&peer("CN"), &peer("KZ"));
    f.one_error(ErrorKind::Duplicate, "roster.toml", 16, 13, &[&peer("KZ"), "line 10", "KZ"]);
}

#[test]
fn weak_key_is_refused() {
    // The identity point: a valid encoding of a small-order key.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&weak).expect("decodes");
    let weak_peer = libp2p_identity::PublicKey::from(key).to_peer_id().to_string();
    let mut f = Fixture::new();
    f.roster = roster().replace(&peer("CN"), &weak_peer);
    f.one_error(ErrorKind::WeakKey, "roster.toml", 16, 13, &["weak"]);
}

#[test]
fn non_ed25519_peer_id_is_refused() {
    // A PeerId that is a SHA-256 multihash (as for RSA keys): no inlined ed25519 key.
    let mut bytes = vec![0x12, 0x20];
    bytes.extend([7u8; 32]);
    let hashed = libp2p_identity::PeerId::from_bytes(&bytes).expect("sha256 peer id").to_string();
    assert!(hashed.starts_with("Qm"));
    let mut f = Fixture::new();
    f.roster = roster().replace(&peer("KZ"), &hashed);
    let e = f.one_error(ErrorKind::NotEd25519, "roster.toml", 10, 13, &["not an ed25519 PeerId"]);
    assert!(e.hint.is_some());
}

/// A PeerId carrying `member`'s demo key with its protobuf's two fields swapped (key,
/// then type): it decodes to the same key, yet is not the PeerId of that key's node.
fn reencoded_peer(member: &str) -> String {
    let key = demo::demo_signing_key(code(member)).verifying_key().to_bytes();
    // Identity multihash (code 0x00) of 36 bytes: field 2 (the key, 32 bytes), field 1 (type ed25519).
    let mut bytes = vec![0x00, 0x24, 0x12, 0x20];
    bytes.extend(key);
    bytes.extend([0x08, 0x01]);
    let reencoded = libp2p_identity::PeerId::from_bytes(&bytes).expect("an inline identity multihash");
    assert_ne!(reencoded.to_string(), peer(member));
    reencoded.to_string()
}

#[test]
fn reencoded_peer_id_of_another_members_key_is_refused() {
    // CN listing KZ's key under another PeerId would let KZ's node sign as CN.
    let mut f = Fixture::new();
    let forged = reencoded_peer("KZ");
    f.roster = roster().replace(&peer("CN"), &forged);
    let e = f.one_error(
        ErrorKind::Invalid,
        "roster.toml",
        16,
        13,
        &[&forged, "not the PeerId of the ed25519 key", &peer("KZ"), "line 10, for KZ"],
    );
    assert!(e.hint.is_some());
    let refused = tamga_config::roster::parse_peer_id(&forged);
    assert!(matches!(refused, Err(tamga_config::PeerIdError::NotCanonical { .. })), "{refused:?}");
}

#[test]
fn the_same_key_under_two_peer_ids_is_refused() {
    // Refused where it is re-encoded, and again where the key comes back: each key once.
    let mut f = Fixture::new();
    let reencoded = reencoded_peer("CN");
    f.roster = roster().replace(&peer("KZ"), &reencoded);
    let errs = f.errors();
    assert_eq!(errs.len(), 2, "expected two errors, got:\n{errs}");
    let path = f.path("roster.toml");
    check(&errs.0[0], ErrorKind::Invalid, &path, 10, 13, &[&reencoded, "not the PeerId", &peer("CN")]);
    check(
        &errs.0[1],
        ErrorKind::Duplicate,
        &path,
        16,
        13,
        &[&peer("CN"), "same ed25519 key", &reencoded, "line 10, for KZ"],
    );
}

#[test]
fn malformed_multiaddr() {
    let mut f = Fixture::new();
    f.roster = roster().replace("/ip4/127.0.0.1/tcp/7104", "127.0.0.1:7104");
    f.one_error(ErrorKind::Invalid, "roster.toml", 5, 10, &["127.0.0.1:7104"]);
}

#[test]
fn roster_quic_addresses_load_beside_tcp_ones() {
    let mut f = Fixture::new();
    let quic = format!("/ip4/127.0.0.1/udp/7104/quic-v1/p2p/{}", peer("RU"));
    f.roster = roster().replace(
        "addrs = [\"/ip4/127.0.0.1/tcp/7104\"]",
        &format!("addrs = [\"/ip4/127.0.0.1/tcp/7104\", \"{quic}\", \"/ip6/::1/udp/7104/quic-v1\"]"),
    );
    let fed = f.load().unwrap_or_else(|e| panic!("{e}"));
    let ru = fed.roster.member(code("RU")).expect("RU is in the roster");
    let addrs: Vec<String> = ru.addrs.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["/ip4/127.0.0.1/tcp/7104", quic.as_str(), "/ip6/::1/udp/7104/quic-v1"]);
}

#[test]
fn roster_udp_addresses_other_than_quic_v1_are_refused() {
    for (addr, word) in
        [("/ip4/127.0.0.1/udp/7104", "plain UDP"), ("/ip4/127.0.0.1/udp/7104/quic", "draft-29")]
    {
        let mut f = Fixture::new();
        f.roster = roster().replace("/ip4/127.0.0.1/tcp/7104", addr);
        f.one_error(
            ErrorKind::Invalid,
            "roster.toml",
            5,
            10,
            &[addr, word, "/udp/PORT/quic-v1[/p2p/PEERID]"],
        );
    }
}

#[test]
fn roster_quic_address_naming_another_peer_is_refused() {
    let mut f = Fixture::new();
    let other = format!("/ip4/127.0.0.1/udp/7104/quic-v1/p2p/{}", peer("KZ"));
    f.roster = roster().replace("/ip4/127.0.0.1/tcp/7104", &other);
    f.one_error(ErrorKind::Invalid, "roster.toml", 5, 10, &["/p2p/", "peer_ids"]);
}

#[test]
fn agreement_party_not_in_roster() {
    let mut f = Fixture::new();
    f.set_agreement("ipr.toml", IPR.replace("\"CN\"]", "\"UZ\"]"));
    f.policy = POLICY.replace("to = [\"KZ\", \"CN\"]\nexcept = [\"CN\"]", "to = [\"KZ\"]");
    let e = f.one_error(ErrorKind::UnknownMember, "agreements/ipr.toml", 5, 24, &["UZ", "not in the roster"]);
    assert!(e.hint.is_some_and(|h| h.contains("CN, KZ, RU")));
}

#[test]
fn agreement_category_not_in_catalog() {
    let mut f = Fixture::new();
    f.set_agreement(
        "energy.toml",
        ENERGY.replace("[\"energy.flow\"]", "[\"energy.flow\", \"energy.flows\"]"),
    );
    f.one_error(ErrorKind::UnknownCategory, "agreements/energy.toml", 6, 30, &["energy.flows", "catalog"]);
}

#[test]
fn agreement_redact_tag_unknown() {
    let mut f = Fixture::new();
    f.set_agreement("ipr.toml", IPR.replace("[\"personal\"]", "[\"persnal\"]"));
    let e = f.one_error(ErrorKind::UnknownTag, "agreements/ipr.toml", 7, 16, &["persnal"]);
    assert!(e.hint.is_some_and(|h| h.contains("personal")));
}

#[test]
fn effective_before_signed() {
    let mut f = Fixture::new();
    f.set_agreement("ipr.toml", IPR.replace("effective_from = 2013-01-01", "effective_from = 2012-01-01"));
    f.one_error(ErrorKind::DateOrder, "agreements/ipr.toml", 4, 18, &["2012-01-01", "2012-12-05"]);
}

#[test]
fn until_before_from() {
    let mut f = Fixture::new();
    f.set_agreement(
        "ipr.toml",
        IPR.replace(
            "effective_from = 2013-01-01\n",
            "effective_from = 2013-01-01\neffective_until = \"2012-12-31\"\n",
        ),
    );
    f.one_error(ErrorKind::DateOrder, "agreements/ipr.toml", 5, 19, &["2012-12-31", "2013-01-01"]);
}

#[test]
fn not_a_date() {
    let mut f = Fixture::new();
    f.set_agreement("ipr.toml", IPR.replace("signed = 2012-12-05", "signed = \"5 December 2012\""));
    f.one_error(ErrorKind::Invalid, "agreements/ipr.toml", 3, 10, &["signed", "YYYY-MM-DD"]);
}

#[test]
fn fewer_than_two_parties() {
    let mut f = Fixture::new();
    f.set_agreement("energy.toml", ENERGY.replace("[\"RU\", \"KZ\"]", "[\"RU\", \"RU\"]"));
    f.policy = POLICY.replace("[[accept]]\nagreement = \"energy\"\nfrom = [\"KZ\"]\n", "");
    let errs = f.errors();
    assert_eq!(errs.len(), 2, "{errs}");
    check(
        &errs.0[0],
        ErrorKind::TooFewParties,
        &f.path("agreements/energy.toml"),
        5,
        11,
        &["at least two parties"],
    );
    check(&errs.0[1], ErrorKind::Duplicate, &f.path("agreements/energy.toml"), 5, 18, &["RU", "twice"]);
}

#[test]
fn duplicate_agreement_id_names_both_files() {
    let mut f = Fixture::new();
    f.agreements.push(("zz-copy.toml", IPR.replace("title = \"IPR\"", "title = \"IPR copy\"")));
    let e = f.one_error(ErrorKind::Duplicate, "agreements/zz-copy.toml", 1, 6, &["ipr"]);
    assert!(e.message.contains(&format!("{}:1", f.path("agreements/ipr.toml").display())), "{e}");
}

/// That a fixture loads, and warns `kind` at `line` of its policy with a message
/// containing `words`.
fn warns(f: &Fixture, kind: tamga_config::WarningKind, line: usize, words: &str) {
    let fed = f.load().unwrap_or_else(|e| panic!("loads: {e}"));
    let w: Vec<_> = tamga_config::check::warnings(&fed, 1_795_824_000_000)
        .into_iter()
        .map(|w| (w.kind, w.line, w.message))
        .collect();
    assert!(w.iter().any(|(k, l, m)| *k == kind && *l == line && m.contains(words)), "{w:?}");
}

// A rule may name what its agreement does not: an agreement no file defines, one this
// member is not a party to, a member not its party, a category it does not cover. Each
// only narrows what is shared, so the files load (an agreement's text that drops a party,
// a category or itself comes into force while a rule still names it) and a warning says
// so at the rule.
#[test]
fn policy_agreement_unknown_is_a_warning() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("agreement = \"energy\"", "agreement = \"enrgy\"");
    warns(&f, tamga_config::WarningKind::RuleNeverMatches, 9, "no agreement file defines enrgy");
}

#[test]
fn policy_for_an_agreement_this_member_is_not_party_to_is_a_warning() {
    let mut f = Fixture::new();
    f.agreements.push((
        "kz-cn.toml",
        ENERGY.replace("\"energy\"", "\"kz-cn\"").replace("[\"RU\", \"KZ\"]", "[\"KZ\", \"CN\"]"),
    ));
    f.policy = format!("{POLICY}\n[[share]]\nagreement = \"kz-cn\"\n");
    warns(&f, tamga_config::WarningKind::RuleNeverMatches, 13, "RU is not a party to kz-cn");
}

#[test]
fn policy_member_not_a_party_is_a_warning() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("from = [\"KZ\"]", "from = [\"KZ\", \"CN\"]");
    warns(&f, tamga_config::WarningKind::OutsideAgreement, 9, "names CN, not a party to energy");
}

#[test]
fn policy_member_not_in_roster() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("except = [\"CN\"]", "except = [\"TJ\"]");
    f.one_error(ErrorKind::UnknownMember, "policy.toml", 6, 11, &["TJ"]);
}

#[test]
fn policy_category_outside_agreement_is_a_warning() {
    let mut f = Fixture::new();
    f.policy =
        POLICY.replace("agreement = \"ipr\"\n", "agreement = \"ipr\"\ncategories = [\"energy.flow\"]\n");
    f.policy = f.policy.replace("redact_fields = [\"kind\"]\n", "");
    warns(
        &f,
        tamga_config::WarningKind::OutsideAgreement,
        3,
        "names category energy.flow, which ipr does not cover",
    );
}

// A policy's category that no catalog defines is an error, not a narrowing: the pause and
// the redaction of this rule would otherwise silently do nothing.
#[test]
fn policy_category_not_in_the_catalog_is_an_error() {
    let mut f = Fixture::new();
    f.policy =
        POLICY.replace("agreement = \"ipr\"\n", "agreement = \"ipr\"\ncategories = [\"energy.flwo\"]\n");
    f.policy = f.policy.replace("redact_fields = [\"kind\"]\n", "");
    let e = f.one_error(ErrorKind::UnknownCategory, "policy.toml", 5, 15, &["energy.flwo", "catalog"]);
    assert!(e.hint.is_some_and(|h| h.contains("energy.flow")));
}

// A rule naming a category its agreement no longer covers may redact that category's
// fields: the agreement's text that dropped the category comes into force with a warning.
#[test]
fn policy_redacting_fields_of_a_category_outside_its_agreement_is_a_warning() {
    let mut f = Fixture::new();
    f.policy =
        POLICY.replace("agreement = \"ipr\"\n", "agreement = \"ipr\"\ncategories = [\"energy.flow\"]\n");
    f.policy = f.policy.replace("redact_fields = [\"kind\"]", "redact_fields = [\"volume\"]");
    warns(
        &f,
        tamga_config::WarningKind::OutsideAgreement,
        3,
        "names category energy.flow, which ipr does not cover",
    );
}

#[test]
fn policy_redacts_an_unknown_field() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("[\"kind\"]", "[\"kind\", \"holdr\"]");
    let e = f.one_error(ErrorKind::UnknownField, "policy.toml", 7, 26, &["holdr"]);
    assert!(e.hint.is_some_and(|h| h.contains("holder, kind, name")));
}

#[test]
fn policy_redacts_an_unknown_tag() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("redact_fields = [\"kind\"]", "redact_tags = [\"secretish\"]");
    f.one_error(ErrorKind::UnknownTag, "policy.toml", 7, 16, &["secretish"]);
}

#[test]
fn policy_sharing_confidential_is_rejected() {
    let mut f = Fixture::new();
    f.policy = POLICY
        .replace("to = [\"KZ\", \"CN\"]", "to = [\"KZ\", \"CN\"]\nclassifications = [\"confidential\"]");
    let e = f.one_error(ErrorKind::Classified, "policy.toml", 6, 20, &["confidential"]);
    assert!(e.hint.is_some_and(|h| h.contains("never leave")));
    f.policy = POLICY.replace(
        "to = [\"KZ\", \"CN\"]",
        "to = [\"KZ\", \"CN\"]\nclassifications = [\"public\", \"secret\"]",
    );
    f.one_error(ErrorKind::Classified, "policy.toml", 6, 30, &["secret"]);
}

#[test]
fn policy_for_another_member() {
    let mut f = Fixture::new();
    f.policy = POLICY.replace("member = \"RU\"", "member = \"KZ\"");
    f.one_error(ErrorKind::MemberMismatch, "policy.toml", 1, 10, &["for KZ", "this node is RU"]);
}

#[test]
fn catalog_unknown_field_type() {
    let mut f = Fixture::new();
    f.catalog = CATALOG.replace("type = \"decimal\"", "type = \"money\"");
    let e = f.one_error(ErrorKind::Invalid, "catalog.toml", 19, 8, &["money"]);
    assert!(e.hint.is_some_and(|h| h.contains("text_list")));
}

#[test]
fn catalog_enum_without_values() {
    let mut f = Fixture::new();
    f.catalog = CATALOG.replace("values = [\"word\", \"figurative\"]\n", "");
    f.one_error(ErrorKind::MissingKey, "catalog.toml", 13, 29, &["kind", "values"]);
}

#[test]
fn catalog_max_len_on_a_number() {
    let mut f = Fixture::new();
    f.catalog = CATALOG.replace("type = \"decimal\"\n", "type = \"decimal\"\nmax_len = 3\n");
    f.one_error(ErrorKind::Invalid, "catalog.toml", 20, 11, &["max_len", "decimal"]);
}

#[test]
fn unreadable_file_has_no_position() {
    let f = Fixture::new();
    f.write();
    let errs = Federation::load_files(
        &f.path("roster.toml"),
        &f.path("catalog.toml"),
        &f.path("agreements"),
        &f.path("missing-policy.toml"),
        code("RU"),
    )
    .expect_err("missing policy");
    assert_eq!(errs.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!((e.kind, e.line, e.col), (ErrorKind::Io, 0, 0));
    assert!(e.to_string().starts_with(&format!("{}: cannot read", f.path("missing-policy.toml").display())));
}

#[test]
fn several_errors_across_files_at_once() {
    let mut f = Fixture::new();
    f.roster = roster().replace("role = \"member\"", "role = \"boss\"");
    f.set_agreement("ipr.toml", IPR.replace("effective_from = 2013-01-01", "effective_from = 2011-01-01"));
    f.set_agreement("energy.toml", ENERGY.replace("retention_days = 365", "retention_days = 0"));
    f.policy =
        POLICY.replace("to = [\"KZ\", \"CN\"]", "to = [\"KZ\", \"CN\"]\nclassifications = [\"secret\"]");
    f.policy = f.policy.replace("from = [\"KZ\"]", "from = [\"KZ\", \"UZ\"]");
    let errs = f.errors();
    let got: Vec<(ErrorKind, PathBuf, usize, usize)> =
        errs.iter().map(|e| (e.kind, e.path.clone(), e.line, e.col)).collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::Invalid, f.path("agreements/energy.toml"), 8, 18),
            (ErrorKind::DateOrder, f.path("agreements/ipr.toml"), 4, 18),
            (ErrorKind::Classified, f.path("policy.toml"), 6, 20),
            (ErrorKind::UnknownMember, f.path("policy.toml"), 12, 15),
            (ErrorKind::Invalid, f.path("roster.toml"), 15, 8),
        ],
        "{errs}"
    );
    // Display: one error per line plus hint lines.
    let text = errs.to_string();
    assert!(text.lines().any(|l| l.starts_with("  hint: ")), "{text}");
}

#[test]
fn a_broken_file_does_not_cascade() {
    // The energy agreement does not parse: the policy's rule for it is not reported as
    // naming an unknown agreement.
    let mut f = Fixture::new();
    f.set_agreement("energy.toml", ENERGY.replace("relay = false", "relay = "));
    let errs = f.errors();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.0[0].kind, ErrorKind::Syntax);
}

// ---- node.toml -----------------------------------------------------------------------

const NODE: &str = r#"member = "RU"
data_dir = "data"
identity = "keys/node.key"
tokens = "tokens.toml"
roster = "roster.toml"
catalog = "catalog.toml"
agreements = "agreements"
policy = "policy.toml"

[network]
listen = ["/ip4/0.0.0.0/tcp/7104"]

[api]
listen = "127.0.0.1:7184"
"#;

fn load_node(text: &str) -> (tempfile::TempDir, Result<NodeConfig, ConfigErrors>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).expect("write node.toml");
    let r = NodeConfig::load(&path);
    (dir, r)
}

#[test]
fn node_toml_defaults_and_paths() {
    let (dir, cfg) = load_node(NODE);
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.policy, dir.path().join("policy.toml"));
    assert_eq!(cfg.identity, dir.path().join("keys/node.key"));
    assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7184");
    assert_eq!(cfg.api.max_body_bytes, 1024 * 1024);
    assert_eq!(cfg.network.push_batch, tamga_config::node::default_push_batch());
    assert_eq!(cfg.network.listen[0].to_string(), "/ip4/0.0.0.0/tcp/7104");
    assert!(cfg.api.tls().is_none());

    let (_dir, cfg) = load_node(&NODE.replace(
        "\n[network]\nlisten = [\"/ip4/0.0.0.0/tcp/7104\"]\n\n[api]\nlisten = \"127.0.0.1:7184\"\n",
        "",
    ));
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7180");
}

#[test]
fn node_toml_errors_are_all_reported() {
    let text = NODE.replace("/ip4/0.0.0.0/tcp/7104", "/ip4/0.0.0.0/udp/7104").replace(
        "listen = \"127.0.0.1:7184\"",
        "listen = \"localhost\"\ntls_cert = \"cert.pem\"\nmax_body_bytes = 10",
    );
    let (dir, r) = load_node(&text);
    let errs = r.expect_err("invalid");
    let path = dir.path().join("node.toml");
    let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::Invalid, 11, 11),
            (ErrorKind::Invalid, 14, 10),
            (ErrorKind::Invalid, 15, 12),
            (ErrorKind::Invalid, 16, 18)
        ],
        "{errs}"
    );
    assert!(errs.iter().all(|e| e.path == path));
    assert!(errs.0[2].message.contains("tls_key"), "{errs}");
}

#[test]
fn node_toml_sets_the_links_liveness_check_within_bounds() {
    let (_dir, cfg) = load_node(NODE);
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (cfg.network.ping_interval_secs, cfg.network.ping_timeout_secs, cfg.network.ping_max_failures),
        (15, 20, 3)
    );

    let set = |keys: &str| NODE.replace("[network]\n", &format!("[network]\n{keys}\n"));
    let (_dir, cfg) = load_node(&set("ping_interval_secs = 2\nping_timeout_secs = 3\nping_max_failures = 2"));
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (cfg.network.ping_interval_secs, cfg.network.ping_timeout_secs, cfg.network.ping_max_failures),
        (2, 3, 2)
    );

    let (dir, r) = load_node(&set("ping_interval_secs = 0\nping_timeout_secs = -1\nping_max_failures = 101"));
    let errs = r.expect_err("out of bounds");
    let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
    assert_eq!(
        got,
        vec![(ErrorKind::Invalid, 11, 22), (ErrorKind::Invalid, 12, 21), (ErrorKind::Invalid, 13, 21)],
        "{errs}"
    );
    assert!(errs.iter().all(|e| e.path == dir.path().join("node.toml")));
    assert!(errs.0[0].message.contains("`network.ping_interval_secs` is 0, outside 1..=86400"), "{errs}");
    assert!(errs.0[2].message.contains("`network.ping_max_failures` is 101, outside 1..=100"), "{errs}");
}

#[test]
fn node_toml_listens_on_quic_and_tcp() {
    let text = NODE.replace(
        "listen = [\"/ip4/0.0.0.0/tcp/7104\"]",
        "listen = [\"/ip4/0.0.0.0/tcp/7104\", \"/ip4/0.0.0.0/udp/7104/quic-v1\", \"/ip6/::/udp/0/quic-v1\"]",
    );
    let (_dir, cfg) = load_node(&text);
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    let listen: Vec<String> = cfg.network.listen.iter().map(ToString::to_string).collect();
    assert_eq!(listen, ["/ip4/0.0.0.0/tcp/7104", "/ip4/0.0.0.0/udp/7104/quic-v1", "/ip6/::/udp/0/quic-v1"]);
}

#[test]
fn node_toml_refuses_draft_quic_and_a_peer_id_on_a_listen_address() {
    let bad = [
        ("/ip4/0.0.0.0/udp/7104/quic", "draft-29"),
        (
            "/ip4/0.0.0.0/udp/7104/quic-v1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
            "listen address",
        ),
    ];
    for (addr, word) in bad {
        let (dir, r) = load_node(&NODE.replace("/ip4/0.0.0.0/tcp/7104", addr));
        let errs = r.expect_err("invalid listen address");
        assert_eq!(errs.len(), 1, "{errs}");
        let words = [addr, word, "/ip4|ip6/ADDR/tcp/PORT", "/ip4|ip6/ADDR/udp/PORT/quic-v1"];
        check(&errs.0[0], ErrorKind::Invalid, &dir.path().join("node.toml"), 11, 11, &words);
    }
}

#[test]
fn parse_listen_checks_as_node_toml_does() {
    use tamga_config::node::parse_listen;
    assert_eq!(
        parse_listen("/ip4/127.0.0.1/udp/0/quic-v1").map(|a| a.to_string()).as_deref(),
        Ok("/ip4/127.0.0.1/udp/0/quic-v1")
    );
    assert!(parse_listen("/ip4/127.0.0.1/tcp/0").is_ok());
    let e = parse_listen("/ip4/127.0.0.1/udp/0").expect_err("plain UDP");
    assert!(e.contains("plain UDP") && e.contains("/udp/PORT/quic-v1"), "{e}");
}

#[test]
fn node_toml_unknown_key() {
    let (_dir, r) = load_node(&NODE.replace("[api]\n", "[api]\nport = 7184\n"));
    let errs = r.expect_err("unknown key");
    assert_eq!(errs.len(), 1);
    check(&errs.0[0], ErrorKind::UnknownKey, &errs.0[0].path.clone(), 14, 1, &["`port`"]);
    assert!(errs.0[0].hint.as_ref().is_some_and(|h| h.contains("max_body_bytes")));
}

#[test]
fn too_many_peer_ids() {
    let ids: Vec<String> = ["AA", "AB", "AC", "AD", "AE", "AF", "AG", "AH", "AI"]
        .iter()
        .map(|c| format!("\"{}\"", peer(c)))
        .collect();
    let mut f = Fixture::new();
    f.roster = roster().replace(&format!("[\"{}\"]", peer("CN")), &format!("[{}]", ids.join(", ")));
    f.one_error(ErrorKind::TooMany, "roster.toml", 16, 12, &["9 PeerIds", "limit of 8"]);
}

#[test]
fn node_toml_limits_defaults_values_and_errors() {
    let (_dir, cfg) = load_node(NODE);
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits, tamga_config::LimitsConfig::default());
    assert_eq!(cfg.limits.messages_per_sec, tamga_config::node::default_messages_per_sec());

    let set = "\n[limits]\nmessages_per_sec = 50\nbytes_per_sec = 65536\nopen_streams = 8\n\
               pending_pulls = 2\nstream_read_secs = 5\nreport_secs = 10\n";
    let (_dir, cfg) = load_node(&format!("{NODE}{set}"));
    let l = cfg.unwrap_or_else(|e| panic!("{e}")).limits;
    assert_eq!(
        (
            l.messages_per_sec,
            l.bytes_per_sec,
            l.open_streams,
            l.pending_pulls,
            l.stream_read_secs,
            l.report_secs
        ),
        (50, 65536, 8, 2, 5, 10)
    );

    // `[limits]` is line 16: every bad value reported at its own line and column.
    let bad = "\n[limits]\nmessages_per_sec = 0\nbytes_per_sec = 1000\nopen_streams = 4\n\
               pending_pulls = 9\nstream_read_secs = 31\nreport_secs = -1\n";
    let (dir, r) = load_node(&format!("{NODE}{bad}"));
    let errs = r.expect_err("invalid limits");
    let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::Invalid, 17, 20),
            (ErrorKind::Invalid, 18, 17),
            (ErrorKind::Invalid, 20, 17),
            (ErrorKind::Invalid, 21, 20),
            (ErrorKind::Invalid, 22, 15),
        ],
        "{errs}"
    );
    assert!(errs.iter().all(|e| e.path == dir.path().join("node.toml")));
    assert!(errs.0[0].message.contains("limits.messages_per_sec"), "{errs}");
    assert!(errs.0[2].message.contains("open_streams"), "{errs}");
    assert!(errs.0[2].hint.is_some(), "{errs}");

    // The rule holds whether pending_pulls is written or its default (8): `[limits]` is
    // line 16, open_streams line 17.
    let (_dir, r) = load_node(&format!("{NODE}\n[limits]\nopen_streams = 4\n"));
    let errs = r.expect_err("open_streams below the default pending_pulls");
    let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
    assert_eq!(got, vec![(ErrorKind::Invalid, 17, 16)], "{errs}");
    assert!(
        errs.0[0].message.contains("open_streams` is 4") && errs.0[0].message.contains("(8, its default)")
    );
    let (_dir, r) = load_node(&format!("{NODE}\n[limits]\nopen_streams = 8\n"));
    assert_eq!(r.unwrap_or_else(|e| panic!("{e}")).limits.open_streams, 8, "equal is allowed");
    // Below the two pulls a peer catching up keeps on the wire.
    let (_dir, r) = load_node(&format!("{NODE}\n[limits]\npending_pulls = 1\n"));
    let errs = r.expect_err("pending_pulls below 2");
    let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
    assert_eq!(got, vec![(ErrorKind::Invalid, 17, 17)], "{errs}");
    assert!(errs.0[0].message.contains("limits.pending_pulls"), "{errs}");

    let (_dir, r) = load_node(&format!("{NODE}\n[limits]\nflood = 1\n"));
    let errs = r.expect_err("unknown key");
    assert_eq!(errs.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![ErrorKind::UnknownKey], "{errs}");
}

#[test]
fn node_toml_store_cache() {
    let (_dir, cfg) = load_node(NODE);
    assert_eq!(cfg.unwrap_or_else(|e| panic!("{e}")).store.cache_mb, tamga_config::node::default_cache_mb());

    let (_dir, cfg) = load_node(&format!("{NODE}\n[store]\ncache_mb = 512\n"));
    assert_eq!(cfg.unwrap_or_else(|e| panic!("{e}")).store.cache_mb, 512);

    // `[store]` is line 16; both bounds refused at the value, with the key named.
    for bad in ["0", "3", "65537", "-64"] {
        let (_dir, r) = load_node(&format!("{NODE}\n[store]\ncache_mb = {bad}\n"));
        let errs = r.expect_err("out of range");
        let got: Vec<(ErrorKind, usize, usize)> = errs.iter().map(|e| (e.kind, e.line, e.col)).collect();
        assert_eq!(got, vec![(ErrorKind::Invalid, 17, 12)], "{bad}: {errs}");
        assert!(errs.0[0].message.contains("store.cache_mb"), "{errs}");
    }
    let (_dir, r) = load_node(&format!("{NODE}\n[store]\ncache = 64\n"));
    let errs = r.expect_err("unknown key");
    assert_eq!(errs.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![ErrorKind::UnknownKey], "{errs}");
}

#[test]
fn node_toml_reload_watch_files() {
    let (_dir, cfg) = load_node(NODE);
    assert!(cfg.unwrap_or_else(|e| panic!("{e}")).reload.watch_files, "on by default");
    let (_dir, cfg) = load_node(&format!("{NODE}\n[reload]\nwatch_files = false\n"));
    assert!(!cfg.unwrap_or_else(|e| panic!("{e}")).reload.watch_files);
    // Not a boolean: refused at the value.
    let (_dir, r) = load_node(&format!("{NODE}\n[reload]\nwatch_files = \"no\"\n"));
    let errs = r.expect_err("not a boolean");
    let got: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(got, vec![(17, 15)], "{errs}");
    let (_dir, r) = load_node(&format!("{NODE}\n[reload]\nwatch = false\n"));
    let errs = r.expect_err("unknown key");
    assert_eq!(errs.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![ErrorKind::UnknownKey], "{errs}");
}

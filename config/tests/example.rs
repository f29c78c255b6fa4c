//! The example federation in `deploy/example/` loads cleanly for every member, its
//! roster holds the demo keys, and its policies decide as their comments say.

use std::path::{Path, PathBuf};

use tamga_config::{audience, decide, decide_accept, demo, Decision, DenyReason, Federation, NodeConfig};
use tamga_protocol::{Classification, MemberCode, RecordHeader};

const MEMBERS: [&str; 7] = ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"];

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example")
}

fn code(s: &str) -> MemberCode {
    s.parse().expect("test member code")
}

fn load(member: &str) -> Federation {
    let cfg = NodeConfig::load(&example().join("nodes").join(format!("{member}.toml")))
        .unwrap_or_else(|e| panic!("nodes/{member}.toml:\n{e}"));
    assert_eq!(cfg.member, code(member));
    Federation::load(&cfg).unwrap_or_else(|e| panic!("federation for {member}:\n{e}"))
}

/// 2014-06-01T00:00:00Z: every example agreement is in force.
const NOW: i64 = 1_401_580_800_000;

fn header(category: &str, origin: &str, class: Classification) -> RecordHeader {
    RecordHeader {
        category: category.parse().expect("category"),
        classification: class,
        origin: code(origin),
        created_ms: NOW - 1000,
        supersedes: None,
        expires_ms: None,
    }
}

#[test]
fn example_loads_for_every_member() {
    for m in MEMBERS {
        let fed = load(m);
        assert_eq!(fed.me, code(m));
        assert_eq!(fed.roster.len(), 7);
        assert_eq!(fed.agreements.len(), 4);
        assert_eq!(fed.catalog.categories().count(), 6);
        // roster, catalog, four agreements, one policy
        assert_eq!(fed.file_digests.len(), 7);
    }
    // Same files but another policy: the digests of what is in force differ.
    assert_ne!(load("RU").policy_digest, load("KZ").policy_digest);
}

#[test]
fn load_files_without_node_toml() {
    let dir = example();
    let fed = Federation::load_files(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join("policies/RU.toml"),
        code("RU"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fed.policy_digest, load("RU").policy_digest);
}

#[test]
fn demo_keys_match_roster() {
    let fed = load("RU");
    for m in MEMBERS {
        let member = fed.roster.member(code(m)).expect("member in roster");
        assert_eq!(member.peer_ids, vec![demo::demo_peer_id(code(m))], "{m}");
        let signing = demo::demo_signing_key(code(m));
        assert_eq!(fed.roster.verifying_key(code(m)), Some(&signing.verifying_key()), "{m}");
        let by_peer = fed.roster.member_by_peer(&member.peer_ids[0]).expect("lookup by PeerId");
        assert_eq!(by_peer.code, code(m));
    }
}

#[test]
fn example_policies_decide_as_their_comments_say() {
    let ru = load("RU");
    let ipr = ru.agreement(&"sco-ipr-2012".parse().expect("id")).expect("ipr");
    let h = header("ipr.infringement", "RU", Classification::Public);
    assert_eq!(audience(&h, ipr, &ru, NOW), ["CN", "KG", "KZ", "TJ", "UZ"].map(code));
    let withheld = decide(&h, ipr, code("KZ"), &ru, NOW);
    let Decision::Allow { withheld } = withheld else { panic!("{withheld:?}") };
    assert!(withheld.contains("declarant_name") && withheld.contains("driver_name"));
    assert!(!withheld.contains("goods_description"));

    // RU pauses TJ under the energy protocol.
    let energy = ru.agreement(&"sco-energy-2008".parse().expect("id")).expect("energy");
    let h = header("energy.transfer", "RU", Classification::NonConfidential);
    assert_eq!(decide(&h, energy, code("TJ"), &ru, NOW), Decision::Deny(DenyReason::PeerPaused));
    assert_eq!(audience(&h, energy, &ru, NOW), ["CN", "KG", "KZ", "UZ"].map(code));
    let withheld = decide(&h, energy, code("KZ"), &ru, NOW);
    assert!(withheld.withheld().is_some_and(|w| w.contains("contract_price")));

    // RMS methods: public only, and to the observer too.
    let rms = ru.agreement(&"sco-rms-2013".parse().expect("id")).expect("rms");
    let h = header("rms.method", "RU", Classification::Public);
    assert!(decide(&h, rms, code("XS"), &ru, NOW).is_allow());
    let h = header("rms.method", "RU", Classification::NonConfidential);
    assert_eq!(decide(&h, rms, code("XS"), &ru, NOW), Decision::Deny(DenyReason::ClassificationNotShared));

    // The bilateral agreement: KZ only, never CN; confidential never.
    let enf = ru.agreement(&"ru-kz-enforcement".parse().expect("id")).expect("enforcement");
    let h = header("enforcement.alert", "RU", Classification::NonConfidential);
    assert_eq!(audience(&h, enf, &ru, NOW), [code("KZ")]);
    assert_eq!(decide(&h, enf, code("CN"), &ru, NOW), Decision::Deny(DenyReason::PeerNotParty));
    let h = header("enforcement.alert", "RU", Classification::Confidential);
    assert_eq!(
        decide(&h, enf, code("KZ"), &ru, NOW),
        Decision::Deny(DenyReason::Classified(Classification::Confidential))
    );

    // KZ withholds suspect_document on top of the agreement (which redacts nothing).
    let kz = load("KZ");
    let enf = kz.agreement(&"ru-kz-enforcement".parse().expect("id")).expect("enforcement");
    let h = header("enforcement.alert", "KZ", Classification::NonConfidential);
    let d = decide(&h, enf, code("RU"), &kz, NOW);
    assert_eq!(d.withheld().map(|w| w.iter().collect::<Vec<_>>()), Some(vec!["suspect_document"]));
    // and accepts alerts from RU
    let h = header("enforcement.alert", "RU", Classification::NonConfidential);
    assert_eq!(decide_accept(&h, enf, code("RU"), &kz, NOW), Ok(()));

    // The observer shares events under the RMS memorandum and is party to nothing else.
    let xs = load("XS");
    assert_eq!(xs.my_agreements().count(), 1);
    let rms = xs.agreement(&"sco-rms-2013".parse().expect("id")).expect("rms");
    let h = header("rms.event", "XS", Classification::Public);
    assert_eq!(audience(&h, rms, &xs, NOW).len(), 6);
}

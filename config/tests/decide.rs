//! The decisions on a small federation written inline: the order of the checks, dates,
//! backfill, inbound and relay decisions, and explanations that name file and line.

use tamga_config::{
    agreement_withheld, audience, decide, decide_accept, decide_accept_revocation, decide_relay, demo,
    explain, explain_accept, Decision, DenyReason, Federation, SourceFile, Sources, StepOutcome,
    MAX_CREATED_AHEAD_MS,
};
use tamga_protocol::{Classification, MemberCode, RecordHeader};

fn code(s: &str) -> MemberCode {
    s.parse().expect("code")
}

fn roster() -> String {
    ["RU", "KZ", "CN", "UZ"]
        .iter()
        .map(|m| {
            format!(
                "[[member]]\ncode = \"{m}\"\nname = \"{m} customs\"\npeer_ids = [\"{}\"]\n\n",
                demo::demo_peer_id(code(m))
            )
        })
        .collect()
}

const CATALOG: &str = r#"
[category."a.one".fields.name]
type = "text"
[category."a.one".fields.person]
type = "text"
tags = ["personal"]
[category."a.one".fields.price]
type = "decimal"
tags = ["commercial"]

[category."a.two".fields.name]
type = "text"
"#;

const MULTI: &str = r#"id = "multi"
title = "Multilateral"
signed = 2013-01-01
effective_from = 2013-06-01
effective_until = 2020-12-31
parties = ["RU", "KZ", "CN", "UZ"]
categories = ["a.one", "a.two"]
redact_tags = ["personal"]
relay = true
retention_days = 30
"#;

const BILATERAL: &str = r#"id = "bilateral"
title = "Bilateral"
signed = 2013-01-01
effective_from = 2013-01-01
parties = ["KZ", "CN"]
categories = ["a.one"]
relay = false
retention_days = 30
backfill = true
"#;

const POLICY: &str = r#"member = "RU"

[[share]]
agreement = "multi"
categories = ["a.one"]
to = ["KZ", "CN"]
redact_tags = ["commercial"]

[[share]]
agreement = "multi"
categories = ["a.one"]
to = ["UZ"]
classifications = ["public"]
note = "UZ gets public records only"

[[share]]
agreement = "multi"
categories = ["a.two"]
except = ["CN"]

[[accept]]
agreement = "multi"
categories = ["a.one"]
from = ["KZ"]
"#;

fn fed(member: &str, policy: &str) -> Federation {
    fed_with(member, policy, CATALOG)
}

fn fed_with(member: &str, policy: &str, catalog: &str) -> Federation {
    let sources = Sources {
        roster: SourceFile::new("roster.toml", roster()),
        catalog: SourceFile::new("catalog.toml", catalog),
        agreements: vec![
            SourceFile::new("agreements/multi.toml", MULTI),
            SourceFile::new("agreements/bilateral.toml", BILATERAL),
        ],
        policy: SourceFile::new("policy.toml", policy),
    };
    Federation::from_sources(&sources, code(member)).unwrap_or_else(|e| panic!("{e}"))
}

const DAY: i64 = 86_400_000;
/// 2014-01-01T00:00:00Z
const NOW: i64 = 1_388_534_400_000;

fn header(cat: &str, class: Classification, origin: &str) -> RecordHeader {
    RecordHeader {
        category: cat.parse().expect("cat"),
        classification: class,
        origin: code(origin),
        created_ms: NOW - DAY,
        supersedes: None,
        expires_ms: None,
    }
}

use Classification::{Confidential, NonConfidential, Public, Secret};

#[test]
fn classification_is_checked_before_anything_else() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    for class in [Confidential, Secret] {
        // Even for a peer that is not a party, in a category not covered, after expiry.
        let mut h = header("a.zzz", class, "KZ");
        h.expires_ms = Some(0);
        assert_eq!(decide(&h, a, code("TJ"), &f, NOW), Decision::Deny(DenyReason::Classified(class)));
        assert_eq!(decide_accept(&h, a, code("KZ"), &f, NOW), Err(DenyReason::Classified(class)));
        assert!(audience(&header("a.one", class, "RU"), a, &f, NOW).is_empty());
    }
}

#[test]
fn rules_combine_as_documented() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let public = header("a.one", Public, "RU");
    let nonconf = header("a.one", NonConfidential, "RU");
    assert_eq!(audience(&public, a, &f, NOW), [code("CN"), code("KZ"), code("UZ")]);
    assert_eq!(audience(&nonconf, a, &f, NOW), [code("CN"), code("KZ")]);
    assert_eq!(decide(&nonconf, a, code("UZ"), &f, NOW), Decision::Deny(DenyReason::PeerNotInRuleAudience));
    assert_eq!(decide(&nonconf, a, code("RU"), &f, NOW), Decision::Deny(DenyReason::PeerIsSelf));
    assert_eq!(decide(&nonconf, a, code("TJ"), &f, NOW), Decision::Deny(DenyReason::PeerNotParty));
    // Withheld: the agreement's personal tag plus the first rule's commercial tag, for
    // every peer alike (one projection per record and agreement).
    for peer in ["CN", "KZ", "UZ"] {
        let d = decide(&public, a, code(peer), &f, NOW);
        let w: Vec<&str> = d.withheld().expect("allowed").iter().collect();
        assert_eq!(w, ["person", "price"], "{peer}");
    }
    // a.two: to everyone but the paused CN.
    let two = header("a.two", NonConfidential, "RU");
    assert_eq!(audience(&two, a, &f, NOW), [code("KZ"), code("UZ")]);
    assert_eq!(decide(&two, a, code("CN"), &f, NOW), Decision::Deny(DenyReason::PeerPaused));
    assert!(decide(&two, a, code("KZ"), &f, NOW).withheld().is_some_and(|w| w.is_empty()));
}

#[test]
fn a_pause_in_any_rule_wins() {
    let policy =
        format!("{POLICY}\n[[share]]\nagreement = \"multi\"\ncategories = [\"a.one\"]\nexcept = [\"KZ\"]\n");
    let f = fed("RU", &policy);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let h = header("a.one", Public, "RU");
    assert_eq!(decide(&h, a, code("KZ"), &f, NOW), Decision::Deny(DenyReason::PeerPaused));
    assert_eq!(audience(&h, a, &f, NOW), [code("CN"), code("UZ")]);
}

#[test]
fn default_deny_without_rules() {
    let f = fed("RU", "member = \"RU\"\n");
    let a = &f.agreements[&"multi".parse().expect("id")];
    let h = header("a.one", Public, "RU");
    assert_eq!(decide(&h, a, code("KZ"), &f, NOW), Decision::Deny(DenyReason::NoShareRule));
    assert!(audience(&h, a, &f, NOW).is_empty());
    let inbound = header("a.one", Public, "KZ");
    assert_eq!(decide_accept(&inbound, a, code("KZ"), &f, NOW), Err(DenyReason::NoAcceptRule));
}

#[test]
fn dates_retention_and_backfill() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let mut h = header("a.one", Public, "RU");
    let from = 1_370_044_800_000; // 2013-06-01T00:00:00Z
    let until_end = 1_609_459_200_000; // 2021-01-01T00:00:00Z: 2020-12-31 is the last day
    assert_eq!(a.effective_from_ms(), from);
    assert_eq!(a.effective_until_ms(), Some(until_end));
    h.created_ms = from;
    assert!(decide(&h, a, code("KZ"), &f, from).is_allow());
    assert_eq!(decide(&h, a, code("KZ"), &f, from - 1), Decision::Deny(DenyReason::AgreementNotInForce));
    h.created_ms = until_end - DAY;
    assert!(decide(&h, a, code("KZ"), &f, until_end - 1).is_allow());
    assert_eq!(decide(&h, a, code("KZ"), &f, until_end), Decision::Deny(DenyReason::AgreementNotInForce));
    // Retention of 30 days from creation, or the record's own earlier expiry.
    h.created_ms = NOW - 30 * DAY;
    assert_eq!(decide(&h, a, code("KZ"), &f, NOW), Decision::Deny(DenyReason::Expired));
    h.created_ms = NOW - DAY;
    h.expires_ms = Some(NOW);
    assert_eq!(decide(&h, a, code("KZ"), &f, NOW), Decision::Deny(DenyReason::Expired));
    assert_eq!(a.purge_at_ms(&h), NOW);
    // Created before the agreement came into force, without backfill.
    h.expires_ms = None;
    h.created_ms = from - 1;
    assert_eq!(decide(&h, a, code("KZ"), &f, from + DAY), Decision::Deny(DenyReason::BeforeAgreement));
    // A relay passes it on, and a receiver takes it, no more than its origin shares it.
    let theirs = RecordHeader { created_ms: from - 1, ..header("a.one", Public, "KZ") };
    let audience = [code("KZ"), code("RU"), code("CN")];
    assert_eq!(
        decide_relay(&theirs, a, &audience, code("CN"), &f, from + DAY),
        Err(DenyReason::BeforeAgreement)
    );
    assert_eq!(decide_accept(&theirs, a, code("KZ"), &f, from + DAY), Err(DenyReason::BeforeAgreement));
    let e = explain_accept(&theirs, a, code("KZ"), &f, from + DAY);
    assert_eq!(e.decision, Decision::Deny(DenyReason::BeforeAgreement));
    // Dated ahead of this node's clock: a little (clocks differ), or too far to be shared
    // or accepted (its retention would run from a time not yet come).
    h.created_ms = NOW + MAX_CREATED_AHEAD_MS;
    assert!(decide(&h, a, code("KZ"), &f, NOW).is_allow());
    h.created_ms = NOW + MAX_CREATED_AHEAD_MS + 1;
    assert_eq!(decide(&h, a, code("KZ"), &f, NOW), Decision::Deny(DenyReason::CreatedInFuture));
    let e = explain(&h, a, code("KZ"), &f, NOW);
    assert_eq!(e.decision, Decision::Deny(DenyReason::CreatedInFuture));
    let inbound = RecordHeader { created_ms: NOW + 365 * DAY, ..header("a.one", Public, "KZ") };
    assert_eq!(decide_accept(&inbound, a, code("KZ"), &f, NOW), Err(DenyReason::CreatedInFuture));
}

#[test]
fn only_own_records_and_only_agreements_we_are_party_to() {
    let f = fed("RU", POLICY);
    let multi = &f.agreements[&"multi".parse().expect("id")];
    let h = header("a.one", Public, "KZ");
    assert_eq!(
        decide(&h, multi, code("CN"), &f, NOW),
        Decision::Deny(DenyReason::NotOurs { origin: code("KZ") })
    );
    let bilateral = &f.agreements[&"bilateral".parse().expect("id")];
    let h = header("a.one", Public, "RU");
    assert_eq!(decide(&h, bilateral, code("KZ"), &f, NOW), Decision::Deny(DenyReason::SelfNotParty));
    assert_eq!(f.my_agreements().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["multi"]);
    assert_eq!(f.agreements_for(&"a.one".parse().expect("cat")).count(), 2);
    assert_eq!(f.agreement_terms().len(), 1);
    let h = header("a.two", Public, "RU");
    assert_eq!(decide(&h, bilateral, code("KZ"), &f, NOW), Decision::Deny(DenyReason::SelfNotParty));
    let kz = fed("KZ", "member = \"KZ\"\n[[share]]\nagreement = \"bilateral\"\n");
    let bilateral = &kz.agreements[&"bilateral".parse().expect("id")];
    let h = header("a.two", Public, "KZ");
    assert_eq!(
        decide(&h, bilateral, code("CN"), &kz, NOW),
        Decision::Deny(DenyReason::CategoryNotInAgreement)
    );
}

#[test]
fn inbound_decisions() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let from_kz = header("a.one", NonConfidential, "KZ");
    assert_eq!(decide_accept(&from_kz, a, code("KZ"), &f, NOW), Ok(()));
    // relayed by CN: the agreement allows relaying
    assert_eq!(decide_accept(&from_kz, a, code("CN"), &f, NOW), Ok(()));
    assert_eq!(decide_accept(&from_kz, a, code("TJ"), &f, NOW), Err(DenyReason::SenderNotParty));
    let from_cn = header("a.one", Public, "CN");
    assert_eq!(decide_accept(&from_cn, a, code("CN"), &f, NOW), Err(DenyReason::OriginNotAccepted));
    let ours = header("a.one", Public, "RU");
    assert_eq!(decide_accept(&ours, a, code("KZ"), &f, NOW), Err(DenyReason::OriginIsSelf));
    let two = header("a.two", Public, "KZ");
    assert_eq!(decide_accept(&two, a, code("KZ"), &f, NOW), Err(DenyReason::NoAcceptRule));

    let cn = fed("CN", "member = \"CN\"\n[[accept]]\nagreement = \"bilateral\"\n");
    let b = &cn.agreements[&"bilateral".parse().expect("id")];
    let h = header("a.one", Public, "KZ");
    assert_eq!(decide_accept(&h, b, code("KZ"), &cn, NOW), Ok(()));
    let ru = header("a.one", Public, "RU");
    assert_eq!(decide_accept(&ru, b, code("KZ"), &cn, NOW), Err(DenyReason::OriginNotParty));
}

#[test]
fn revocations_come_only_from_whom_a_share_could() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    // Neither the accept rules nor the dates stop a revocation: what was taken while they
    // allowed it must still be purged.
    let from_cn = header("a.one", Public, "CN");
    assert_eq!(decide_accept(&from_cn, a, code("CN"), &f, NOW), Err(DenyReason::OriginNotAccepted));
    assert_eq!(decide_accept_revocation(&from_cn, a, code("CN"), &f), Ok(()));
    let old = RecordHeader { created_ms: NOW - 40 * DAY, ..header("a.one", Public, "KZ") };
    assert_eq!(decide_accept(&old, a, code("KZ"), &f, NOW), Err(DenyReason::Expired));
    assert_eq!(decide_accept_revocation(&old, a, code("KZ"), &f), Ok(()));
    assert_eq!(decide_accept_revocation(&old, a, code("CN"), &f), Ok(()), "relayed: multi allows it");
    // The parties, relaying and the category do.
    let from_kz = header("a.one", Public, "KZ");
    assert_eq!(decide_accept_revocation(&from_kz, a, code("TJ"), &f), Err(DenyReason::SenderNotParty));
    let ours = header("a.one", Public, "RU");
    assert_eq!(decide_accept_revocation(&ours, a, code("KZ"), &f), Err(DenyReason::OriginIsSelf));
    let b = &f.agreements[&"bilateral".parse().expect("id")];
    assert_eq!(decide_accept_revocation(&from_kz, b, code("KZ"), &f), Err(DenyReason::SelfNotParty));
    let cn = fed("CN", "member = \"CN\"\n");
    let b = &cn.agreements[&"bilateral".parse().expect("id")];
    assert_eq!(decide_accept_revocation(&from_kz, b, code("KZ"), &cn), Ok(()));
    assert_eq!(decide_accept_revocation(&from_kz, b, code("UZ"), &cn), Err(DenyReason::SenderNotParty));
    let from_uz = header("a.one", Public, "UZ");
    assert_eq!(decide_accept_revocation(&from_uz, b, code("KZ"), &cn), Err(DenyReason::OriginNotParty));
    let two = header("a.two", Public, "KZ");
    assert_eq!(decide_accept_revocation(&two, b, code("KZ"), &cn), Err(DenyReason::CategoryNotInAgreement));
}

#[test]
fn relay_decisions() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let h = header("a.one", Public, "KZ");
    let aud = [code("CN"), code("RU"), code("UZ")];
    // A relay withholds what the agreement redacts (`personal`), not what its own share
    // rules add to its own records (`commercial`).
    let relayed = decide_relay(&h, a, &aud, code("CN"), &f, NOW).expect("relays");
    assert_eq!(relayed.iter().collect::<Vec<_>>(), ["person"]);
    assert_eq!(agreement_withheld(a, &h.category, &f.catalog), relayed);
    let own = decide(&header("a.one", Public, "RU"), a, code("KZ"), &f, NOW);
    assert_eq!(own.withheld().map(|w| w.iter().collect::<Vec<_>>()), Some(vec!["person", "price"]));
    assert_eq!(decide_relay(&h, a, &aud, code("KZ"), &f, NOW), Err(DenyReason::PeerIsOrigin));
    assert_eq!(decide_relay(&h, a, &aud[..1], code("UZ"), &f, NOW), Err(DenyReason::PeerNotInAudience));
    assert_eq!(decide_relay(&h, a, &aud, code("RU"), &f, NOW), Err(DenyReason::PeerIsSelf));
    let kz = fed("KZ", "member = \"KZ\"\n");
    let b = &kz.agreements[&"bilateral".parse().expect("id")];
    let h = header("a.one", Public, "CN");
    assert_eq!(decide_relay(&h, b, &[code("KZ")], code("CN"), &kz, NOW), Err(DenyReason::RelayNotAllowed));
    let inbound = header("a.one", Public, "CN");
    let kz = fed("KZ", "member = \"KZ\"\n[[accept]]\nagreement = \"bilateral\"\n");
    let b = &kz.agreements[&"bilateral".parse().expect("id")];
    assert_eq!(decide_accept(&inbound, b, code("CN"), &kz, NOW), Ok(()));
}

#[test]
fn explanations_name_the_rules_and_agree_with_decide() {
    let f = fed("RU", POLICY);
    let a = &f.agreements[&"multi".parse().expect("id")];
    let h = header("a.one", NonConfidential, "RU");
    let e = explain(&h, a, code("UZ"), &f, NOW);
    assert_eq!(e.decision, decide(&h, a, code("UZ"), &f, NOW));
    let rule_lines: Vec<usize> = e
        .steps
        .iter()
        .filter_map(|s| s.at.as_ref().filter(|(p, _)| p.ends_with("policy.toml")).map(|(_, l)| *l))
        .collect();
    // The three share rules for `multi` (lines 3, 9, 16), then the failing check.
    assert_eq!(&rule_lines[..3], [3, 9, 16]);
    let text = e.to_string();
    assert!(text.starts_with("deny: no share rule covering the record names the peer in `to`"), "{text}");
    assert!(text.contains("(policy.toml:9)") && text.contains("UZ gets public records only"), "{text}");
    assert!(text.contains("(agreements/multi.toml:1)"), "{text}");
    assert_eq!(e.steps.last().map(|s| s.outcome), Some(StepOutcome::Fail));

    let h = header("a.one", Public, "RU");
    let e = explain(&h, a, code("UZ"), &f, NOW);
    assert!(e.decision.is_allow());
    assert!(e.to_string().contains("withheld: person, price"), "{e}");

    let h = header("a.one", Secret, "RU");
    let e = explain(&h, a, code("UZ"), &f, NOW);
    assert_eq!(e.steps.len(), 1);
    assert!(e.to_string().contains("never leave the node"));

    let inbound = header("a.one", Public, "CN");
    let e = explain_accept(&inbound, a, code("CN"), &f, NOW);
    assert_eq!(e.decision, Decision::Deny(DenyReason::OriginNotAccepted));
    assert!(e.to_string().contains("(policy.toml:21)"), "{e}");
}

#[test]
fn deny_reasons_have_stable_names() {
    assert_eq!(DenyReason::PeerPaused.as_str(), "peer_paused");
    assert_eq!(DenyReason::Classified(Secret).to_string(), "a secret record never leaves the node");
}

// Invariant 3 across parties: what the catalog tags and types is part of the terms that
// peers compare, so two parties whose catalogs differ on a covered category share
// nothing under the agreement, while a difference that means nothing to it changes
// nothing.
#[test]
fn agreement_terms_cover_the_catalog_definition_of_its_categories() {
    let terms = |catalog: &str| -> (String, String, String) {
        let f = fed_with("KZ", "member = \"KZ\"\n", catalog);
        let t = |id: &str| f.agreements[&id.parse().expect("id")].terms.to_hex();
        let multi = &f.agreements[&"multi".parse().expect("id")];
        (t("multi"), t("bilateral"), multi.digest.to_hex())
    };
    let base = terms(CATALOG);
    assert_ne!(base.0, base.1);
    assert_ne!(base.0, base.2, "the terms are more than the text's digest");

    // A tag added to a field of a.one, which both agreements cover.
    let tagged = CATALOG.replacen("tags = [\"personal\"]", "tags = [\"personal\", \"identity\"]", 1);
    let t = terms(&tagged);
    assert!(t.0 != base.0 && t.1 != base.1, "{t:?}");
    assert_eq!(t.2, base.2, "the text is the same");
    // A field added to a.two, which only the multilateral one covers.
    let t = terms(&format!("{CATALOG}[category.\"a.two\".fields.port]\ntype = \"text\"\n"));
    assert!(t.0 != base.0 && t.1 == base.1, "{t:?}");
    // A type, a requirement, a length bound changed.
    for changed in [
        CATALOG.replacen("type = \"decimal\"", "type = \"text\"", 1),
        CATALOG.replacen(
            "[category.\"a.one\".fields.name]\n",
            "[category.\"a.one\".fields.name]\nrequired = true\n",
            1,
        ),
        CATALOG.replacen(
            "[category.\"a.one\".fields.name]\n",
            "[category.\"a.one\".fields.name]\nmax_len = 40\n",
            1,
        ),
    ] {
        let t = terms(&changed);
        assert!(t.0 != base.0 && t.1 != base.1, "{changed}");
    }
    // A category neither covers, a title, a comment, another order of the fields: the same.
    for same in [
        format!("{CATALOG}[category.\"a.three\".fields.name]\ntype = \"text\"\n"),
        format!("[category.\"a.one\"]\ntitle = \"One\"\n{CATALOG}"),
        format!("# the federation's categories\n{CATALOG}"),
        CATALOG.replacen("[category.\"a.one\".fields.name]\ntype = \"text\"\n", "", 1)
            + "[category.\"a.one\".fields.name]\ntype = \"text\"\n",
    ] {
        assert_eq!(terms(&same), base, "{same}");
    }
}

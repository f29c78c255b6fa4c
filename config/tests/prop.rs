//! Property tests over random federations (rosters, agreements, policies) and random
//! records: the decision never allows what the invariants forbid, `audience` is exactly
//! the allowed parties, `explain` always agrees with `decide`, and a policy that lists
//! `confidential` or `secret` never loads.
//!
//! The model below is generated as plain data, written out as TOML, loaded through the
//! same code as real files, and then used as the oracle.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tamga_config::{
    audience, decide, decide_accept, demo, explain, Decision, ErrorKind, Federation, SourceFile, Sources,
};
use tamga_protocol::{Classification, MemberCode, RecordHeader};

const POOL: [&str; 8] = ["CN", "IN", "KG", "KZ", "PK", "RU", "TJ", "UZ"];
const CATEGORIES: [&str; 4] = ["c.alpha", "c.beta", "c.gamma", "c.delta"];
const FIELDS: [&str; 3] = ["plain", "person", "money"];
const TAGS: [&str; 2] = ["personal", "commercial"];
const CLASSES: [Classification; 4] = [
    Classification::Public,
    Classification::NonConfidential,
    Classification::Confidential,
    Classification::Secret,
];
const YEAR_MS: i64 = 31_556_952_000;
/// 2000-01-01T00:00:00Z
const Y2000: i64 = 946_684_800_000;

fn code(s: &str) -> MemberCode {
    s.parse().expect("code")
}

fn bits<T: Copy>(mask: u32, items: &[T]) -> Vec<T> {
    items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, x)| *x).collect()
}

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

#[derive(Debug, Clone)]
struct AgreementM {
    parties: Vec<&'static str>,
    categories: Vec<&'static str>,
    redact_tags: Vec<&'static str>,
    relay: bool,
    backfill: bool,
    from_year: i32,
    until_year: Option<i32>,
    retention_days: u32,
}

#[derive(Debug, Clone)]
struct ShareM {
    agreement: usize,
    categories: Option<Vec<&'static str>>,
    to: Option<Vec<&'static str>>,
    except: Vec<&'static str>,
    classes: Vec<&'static str>,
    redact_fields: Vec<&'static str>,
    redact_tags: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct AcceptM {
    agreement: usize,
    categories: Option<Vec<&'static str>>,
    from: Option<Vec<&'static str>>,
}

#[derive(Debug, Clone)]
struct Model {
    roster: Vec<&'static str>,
    me: &'static str,
    agreements: Vec<AgreementM>,
    share: Vec<ShareM>,
    accept: Vec<AcceptM>,
}

/// Raw numbers that are turned into a valid model (subsets are masks, fixed up so that
/// every reference stays valid).
type RawAgreement = (u32, u32, u32, bool, bool, i32, Option<i32>, u32);
type RawShare = (usize, Option<u32>, Option<u32>, u32, u32, u32, u32);
type RawAccept = (usize, Option<u32>, Option<u32>);

fn model_strategy() -> impl Strategy<Value = Model> {
    (
        any::<u32>(),
        any::<usize>(),
        prop::collection::vec(
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<bool>(),
                any::<bool>(),
                0i32..40,
                prop::option::of(0i32..30),
                1u32..4000,
            ),
            1..4,
        ),
        prop::collection::vec(
            (
                any::<usize>(),
                prop::option::of(any::<u32>()),
                prop::option::of(any::<u32>()),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
            ),
            0..6,
        ),
        prop::collection::vec(
            (any::<usize>(), prop::option::of(any::<u32>()), prop::option::of(any::<u32>())),
            0..4,
        ),
    )
        .prop_map(|(roster_mask, me_pick, raw_agreements, raw_share, raw_accept)| {
            build_model(roster_mask, me_pick, &raw_agreements, &raw_share, &raw_accept)
        })
}

fn build_model(
    roster_mask: u32,
    me_pick: usize,
    ags: &[RawAgreement],
    shares: &[RawShare],
    accepts: &[RawAccept],
) -> Model {
    let mut roster = bits(roster_mask, &POOL);
    for m in POOL {
        if roster.len() >= 2 {
            break;
        }
        if !roster.contains(&m) {
            roster.push(m);
        }
    }
    roster.sort_unstable();
    let me = roster[me_pick % roster.len()];
    let agreements: Vec<AgreementM> = ags
        .iter()
        .map(|&(pm, cm, tm, relay, backfill, from, until, retention_days)| {
            let mut parties = bits(pm, &roster);
            for m in &roster {
                if parties.len() >= 2 {
                    break;
                }
                if !parties.contains(m) {
                    parties.push(m);
                }
            }
            parties.sort_unstable();
            let mut categories = bits(cm, &CATEGORIES);
            if categories.is_empty() {
                categories.push(CATEGORIES[(cm as usize >> 8) % CATEGORIES.len()]);
            }
            AgreementM {
                parties,
                categories,
                redact_tags: bits(tm, &TAGS),
                relay,
                backfill,
                from_year: 2000 + from,
                until_year: until.map(|u| 2000 + from + u),
                retention_days,
            }
        })
        .collect();
    let mine: Vec<usize> = (0..agreements.len()).filter(|&i| agreements[i].parties.contains(&me)).collect();
    let mut share = Vec::new();
    let mut accept = Vec::new();
    if !mine.is_empty() {
        for &(pick, cats, to, except, classes, rf, rt) in shares {
            let agreement = mine[pick % mine.len()];
            let a = &agreements[agreement];
            let categories = cats.map(|m| bits(m, &a.categories)).filter(|c| !c.is_empty());
            let to = to.map(|m| bits(m, &a.parties)).filter(|t| !t.is_empty());
            let mut classes = bits(classes, &["public", "non_confidential"]);
            if classes.is_empty() {
                classes.push("public");
            }
            share.push(ShareM {
                agreement,
                categories,
                to,
                except: bits(except, &a.parties),
                classes,
                redact_fields: bits(rf, &FIELDS),
                redact_tags: bits(rt, &TAGS),
            });
        }
        for &(pick, cats, from) in accepts {
            let agreement = mine[pick % mine.len()];
            let a = &agreements[agreement];
            accept.push(AcceptM {
                agreement,
                categories: cats.map(|m| bits(m, &a.categories)).filter(|c| !c.is_empty()),
                from: from.map(|m| bits(m, &a.parties)).filter(|f| !f.is_empty()),
            });
        }
    }
    Model { roster, me, agreements, share, accept }
}

fn agreement_id(i: usize) -> String {
    format!("agreement-{i}")
}

fn sources(m: &Model, extra_policy: &str) -> Sources {
    let roster: String = m
        .roster
        .iter()
        .map(|c| {
            format!(
                "[[member]]\ncode = \"{c}\"\nname = \"{c}\"\npeer_ids = [\"{}\"]\n\n",
                demo::demo_peer_id(code(c))
            )
        })
        .collect();
    let mut catalog = String::new();
    for c in CATEGORIES {
        catalog.push_str(&format!(
            "[category.\"{c}\".fields.plain]\ntype = \"text\"\n\
             [category.\"{c}\".fields.person]\ntype = \"text\"\ntags = [\"personal\"]\n\
             [category.\"{c}\".fields.money]\ntype = \"decimal\"\ntags = [\"commercial\"]\n\n"
        ));
    }
    let agreements = m
        .agreements
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let until = a.until_year.map(|u| format!("effective_until = {u}-12-31\n")).unwrap_or_default();
            SourceFile::new(
                format!("agreements/{i}.toml"),
                format!(
                    "id = \"{}\"\ntitle = \"A{i}\"\nsigned = {y}-01-01\neffective_from = {y}-01-01\n{until}\
                     parties = {}\ncategories = {}\nredact_tags = {}\nrelay = {}\nbackfill = {}\nretention_days = {}\n",
                    agreement_id(i),
                    list(&a.parties),
                    list(&a.categories),
                    list(&a.redact_tags),
                    a.relay,
                    a.backfill,
                    a.retention_days,
                    y = a.from_year,
                ),
            )
        })
        .collect();
    let mut policy = format!("member = \"{}\"\n", m.me);
    for r in &m.share {
        policy.push_str(&format!("\n[[share]]\nagreement = \"{}\"\n", agreement_id(r.agreement)));
        if let Some(c) = &r.categories {
            policy.push_str(&format!("categories = {}\n", list(c)));
        }
        if let Some(t) = &r.to {
            policy.push_str(&format!("to = {}\n", list(t)));
        }
        policy.push_str(&format!(
            "except = {}\nclassifications = {}\nredact_fields = {}\nredact_tags = {}\n",
            list(&r.except),
            list(&r.classes),
            list(&r.redact_fields),
            list(&r.redact_tags)
        ));
    }
    for r in &m.accept {
        policy.push_str(&format!("\n[[accept]]\nagreement = \"{}\"\n", agreement_id(r.agreement)));
        if let Some(c) = &r.categories {
            policy.push_str(&format!("categories = {}\n", list(c)));
        }
        if let Some(f) = &r.from {
            policy.push_str(&format!("from = {}\n", list(f)));
        }
    }
    policy.push_str(extra_policy);
    Sources {
        roster: SourceFile::new("roster.toml", roster),
        catalog: SourceFile::new("catalog.toml", catalog),
        agreements,
        policy: SourceFile::new("policy.toml", policy),
    }
}

fn share_covers(r: &ShareM, agreement: usize, category: &str) -> bool {
    r.agreement == agreement && r.categories.as_ref().is_none_or(|c| c.contains(&category))
}

fn accept_covers(r: &AcceptM, agreement: usize, category: &str) -> bool {
    r.agreement == agreement && r.categories.as_ref().is_none_or(|c| c.contains(&category))
}

#[derive(Debug, Clone)]
struct RecordM {
    category: &'static str,
    class: Classification,
    origin_is_me: bool,
    origin_pick: usize,
    created_offset: i64,
    expires_offset: Option<i64>,
    now_offset: i64,
}

fn record_strategy() -> impl Strategy<Value = RecordM> {
    (
        prop::sample::select(vec!["c.alpha", "c.beta", "c.gamma", "c.delta", "c.other"]),
        prop::sample::select(CLASSES.to_vec()),
        any::<bool>(),
        any::<usize>(),
        0i64..(3 * YEAR_MS),
        prop::option::of(-YEAR_MS..(3 * YEAR_MS)),
        0i64..(55 * YEAR_MS),
    )
        .prop_map(
            |(category, class, origin_is_me, origin_pick, created_offset, expires_offset, now_offset)| {
                RecordM {
                    category,
                    class,
                    origin_is_me,
                    origin_pick,
                    created_offset,
                    expires_offset,
                    now_offset,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn decisions_respect_the_invariants(model in model_strategy(), records in prop::collection::vec(record_strategy(), 1..8)) {
        let me = code(model.me);
        let fed = Federation::from_sources(&sources(&model, ""), me)
            .unwrap_or_else(|e| panic!("generated federation does not load:\n{e}\n{model:#?}"));
        for r in &records {
            let now = Y2000 + r.now_offset;
            let origin = if r.origin_is_me { model.me } else { POOL[r.origin_pick % POOL.len()] };
            let header = RecordHeader {
                category: r.category.parse().expect("category"),
                classification: r.class,
                origin: code(origin),
                created_ms: now - r.created_offset,
                supersedes: None,
                expires_ms: r.expires_offset.map(|e| now + e),
            };
            for (ai, am) in model.agreements.iter().enumerate() {
                let agreement = fed.agreement(&agreement_id(ai).parse().expect("id")).expect("agreement loaded");
                let aud = audience(&header, agreement, &fed, now);
                prop_assert!(aud.windows(2).all(|w| w[0] < w[1]), "audience sorted and unique");
                prop_assert!(!aud.contains(&me), "audience never includes this node");
                for &peer_s in &POOL {
                    let peer = code(peer_s);
                    let d = decide(&header, agreement, peer, &fed, now);
                    // explain walks the rules one by one and must reach the same decision.
                    prop_assert_eq!(&explain(&header, agreement, peer, &fed, now).decision, &d);
                    prop_assert_eq!(aud.contains(&peer), d.is_allow(), "audience is exactly the allowed parties");
                    if let Decision::Allow { withheld } = &d {
                        prop_assert!(r.class.may_leave_node(), "classified record allowed");
                        prop_assert!(am.parties.contains(&peer_s), "peer outside the agreement");
                        prop_assert!(peer != me, "allowed to self");
                        prop_assert!(origin == model.me, "someone else's record shared");
                        prop_assert!(am.categories.contains(&r.category), "category outside the agreement");
                        let covering: Vec<&ShareM> =
                            model.share.iter().filter(|s| share_covers(s, ai, r.category)).collect();
                        prop_assert!(
                            covering.iter().any(|s| s.classes.contains(&r.class.as_str())
                                && s.to.as_ref().is_none_or(|t| t.contains(&peer_s))),
                            "no rule names the peer in `to` for this classification"
                        );
                        prop_assert!(!covering.iter().any(|s| s.except.contains(&peer_s)), "paused peer allowed");
                        // Redaction: every field the agreement or a covering rule redacts.
                        let mut must: BTreeSet<&str> = BTreeSet::new();
                        for (field, tag) in [("person", "personal"), ("money", "commercial")] {
                            if am.redact_tags.contains(&tag) || covering.iter().any(|s| s.redact_tags.contains(&tag)) {
                                must.insert(field);
                            }
                        }
                        for s in &covering {
                            must.extend(s.redact_fields.iter().copied());
                        }
                        prop_assert_eq!(withheld.iter().collect::<BTreeSet<_>>(), must);
                    }
                    if decide_accept(&header, agreement, peer, &fed, now).is_ok() {
                        prop_assert!(r.class.may_leave_node());
                        prop_assert!(am.parties.contains(&peer_s) && am.parties.contains(&origin) && am.parties.contains(&model.me));
                        prop_assert!(origin != model.me);
                        prop_assert!(am.relay || peer_s == origin);
                        prop_assert!(am.categories.contains(&r.category));
                        prop_assert!(model.accept.iter().any(|a| accept_covers(a, ai, r.category)
                            && a.from.as_ref().is_none_or(|f| f.contains(&origin))));
                    }
                }
            }
        }
    }

    #[test]
    fn a_policy_sharing_classified_records_never_loads(model in model_strategy(), level in prop::sample::select(vec!["confidential", "secret"]), with_public in any::<bool>()) {
        let me = code(model.me);
        let Some(ai) = model.agreements.iter().position(|a| a.parties.contains(&model.me)) else {
            return Ok(());
        };
        let classes = if with_public { format!("[\"public\", \"{level}\"]") } else { format!("[\"{level}\"]") };
        let extra = format!("\n[[share]]\nagreement = \"{}\"\nclassifications = {classes}\n", agreement_id(ai));
        let errs = Federation::from_sources(&sources(&model, &extra), me).expect_err("must be refused");
        prop_assert!(errs.iter().any(|e| e.kind == ErrorKind::Classified), "{}", errs);
    }
}

/// The generator is not vacuous: over a fixed sample it reaches allows and the main
/// denial reasons, so the properties above are exercised on every path.
#[test]
fn the_generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    for _ in 0..300 {
        let model = model_strategy().new_tree(&mut runner).expect("model").current();
        let record = record_strategy().new_tree(&mut runner).expect("record").current();
        let fed = Federation::from_sources(&sources(&model, ""), code(model.me)).expect("loads");
        let now = Y2000 + record.now_offset;
        let header = RecordHeader {
            category: record.category.parse().expect("category"),
            classification: record.class,
            origin: code(if record.origin_is_me { model.me } else { POOL[record.origin_pick % POOL.len()] }),
            created_ms: now - record.created_offset,
            supersedes: None,
            expires_ms: record.expires_offset.map(|e| now + e),
        };
        for a in fed.agreements.values() {
            for peer in POOL {
                let d = decide(&header, a, code(peer), &fed, now);
                seen.insert(d.reason().map_or("allow", |r| r.as_str()));
            }
        }
    }
    for want in [
        "allow",
        "classified",
        "expired",
        "agreement_not_in_force",
        "not_ours",
        "peer_is_self",
        "peer_not_party",
        "category_not_in_agreement",
        "no_share_rule",
        "peer_paused",
        "peer_not_in_rule_audience",
    ] {
        assert!(seen.contains(want), "never reached {want}; reached {seen:?}");
    }
}

//! The leak check: random federations, generated from scratch and run as real nodes on
//! loopback, whose every holding is compared with an oracle computed from the files alone.
//!
//! Each case draws, from one seed, a roster of 3 to 6 members (demo identities), 2 to 5
//! agreements over random subsets of the example catalog's categories with random parties
//! (some bilateral), relay allowed or forbidden, redacted tags, retention, effective dates
//! (some ended, some not yet in force), backfill, and now and then one party holding a
//! copy of an agreement whose bytes differ; a policy per member sharing random subsets
//! (some rules pausing a party, some agreements not shared or not accepted at all, extra
//! redactions, classifications); and records at every member in random categories,
//! classifications (confidential and secret included), ages, expiries and optional
//! fields. It writes the files (each member its own copy) and runs the federation as
//! in-process nodes (`tamga init` with the demo identity, anti-entropy every second),
//! ingesting through the HTTP API, in three phases:
//!
//! 1. every member but one starts and ingests;
//! 2. one origin stops, the last member starts and ingests: it catches up by pulls, and
//!    gets the stopped origin's records only through relays, only under agreements that
//!    allow relaying;
//! 3. the stopped origin restarts.
//!
//! At the end of each phase it waits until every running node's holdings match the
//! oracle and stay unchanged for a few anti-entropy rounds. At every poll it checks:
//!
//! - no node holds a record the oracle does not give it, nor one field more than the
//!   agreement it holds the record under reveals, nor a value that differs from the
//!   origin's;
//! - no node holds a record under an agreement it is not party to, nor one relayed under an
//!   agreement that forbids relaying; bilateral agreements reach no third member;
//! - confidential and secret records never leave their origin;
//! - every record the oracle gives a node arrives (convergence), and once quiet, every
//!   projection a node keeps is under an agreement that gives it the record.
//!
//! The oracle is written here from the generated structures the files were written from,
//! with the catalog read with `toml`: it never calls `tamga_config`'s decisions. Its
//! rules are those of the design (invariants 1 to 4 and 8) and of the decision order
//! documented in `tamga_config::decide`.
//!
//! `TAMGA_LEAK_SEED=<n>` reruns one case; `TAMGA_LEAK_CASES=<n>` runs more cases (seeds
//! from the clock, each printed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tamga_node::identity::Role;
use tamga_tests::{example_dir, TestNode};

/// Member codes a roster is drawn from (each has a demo identity).
const CODES: [&str; 7] = ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"];
/// Tags of the example catalog that agreements and policies may redact.
const TAGS: [&str; 2] = ["personal", "commercial"];
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Cases run when `TAMGA_LEAK_CASES` is not set: small enough for CI on two cores.
const DEFAULT_CASES: u64 = 5;
/// How long holdings must stay unchanged, once they match, to count as quiescent: more
/// than two anti-entropy rounds, so that a late extra record would show.
const SETTLE: Duration = Duration::from_millis(2500);
/// Longest wait for a federation to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for every node to connect to every other.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

// ---- the catalog, read from the file ---------------------------------------------------

/// One field of a category, as the catalog file states it.
#[derive(Debug, Clone)]
struct FieldSpec {
    name: String,
    ty: String,
    required: bool,
    values: Vec<String>,
    max_len: Option<usize>,
    tags: BTreeSet<String>,
}

/// The example catalog, read with `toml`: category → fields.
#[derive(Debug)]
struct CatalogModel {
    categories: BTreeMap<String, Vec<FieldSpec>>,
}

impl CatalogModel {
    fn load() -> CatalogModel {
        let text = std::fs::read_to_string(example_dir().join("catalog.toml")).expect("reads the catalog");
        let v: toml::Table = text.parse().expect("the catalog is TOML");
        let mut categories = BTreeMap::new();
        for (cat, t) in v["category"].as_table().expect("a category table") {
            let mut fields = Vec::new();
            for (name, f) in t["fields"].as_table().expect("fields") {
                let strings = |key: &str| -> Vec<String> {
                    f.get(key)
                        .and_then(|x| x.as_array())
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                        .unwrap_or_default()
                };
                fields.push(FieldSpec {
                    name: name.clone(),
                    ty: f["type"].as_str().expect("a type").to_owned(),
                    required: f.get("required").and_then(|r| r.as_bool()).unwrap_or(false),
                    values: strings("values"),
                    max_len: f.get("max_len").and_then(|m| m.as_integer()).map(|m| m as usize),
                    tags: strings("tags").into_iter().collect(),
                });
            }
            categories.insert(cat.clone(), fields);
        }
        CatalogModel { categories }
    }

    fn names(&self) -> Vec<&str> {
        self.categories.keys().map(String::as_str).collect()
    }

    fn fields(&self, category: &str) -> &[FieldSpec] {
        &self.categories[category]
    }
}

// ---- the generated federation -----------------------------------------------------------

/// An agreement as its file states it.
#[derive(Debug, Clone)]
struct AgreementSpec {
    id: String,
    parties: Vec<String>,
    categories: Vec<String>,
    redact_tags: Vec<String>,
    relay: bool,
    retention_days: i64,
    backfill: bool,
    signed: NaiveDate,
    from: NaiveDate,
    until: Option<NaiveDate>,
    /// The party whose copy of the file differs from everyone else's, if any.
    altered_at: Option<String>,
}

impl AgreementSpec {
    fn is_party(&self, m: &str) -> bool {
        self.parties.iter().any(|p| p == m)
    }

    fn covers(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == category)
    }

    fn starts_ms(&self) -> i64 {
        day_ms(self.from)
    }

    /// The first instant no longer in force: the day after `until`, 00:00 UTC.
    fn until_ms(&self) -> Option<i64> {
        self.until.map(|u| day_ms(u) + DAY_MS)
    }

    /// Whether `a` and `b` hold the same bytes of this agreement.
    fn same_text(&self, a: &str, b: &str) -> bool {
        self.altered_at.as_deref() != Some(a) && self.altered_at.as_deref() != Some(b)
    }

    fn bilateral(&self) -> bool {
        self.parties.len() == 2
    }

    fn text(&self, holder: &str) -> String {
        let list = |xs: &[String]| xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
        let mut t = String::new();
        if self.altered_at.as_deref() == Some(holder) {
            t.push_str("# This party's copy differs from the others' by this line.\n");
        }
        let _ = writeln!(t, "id = {:?}", self.id);
        let _ = writeln!(t, "title = \"Leak-check agreement {}\"", self.id);
        let _ = writeln!(t, "signed = {}", self.signed);
        let _ = writeln!(t, "effective_from = {}", self.from);
        if let Some(u) = self.until {
            let _ = writeln!(t, "effective_until = {u}");
        }
        let _ = writeln!(t, "parties = [{}]", list(&self.parties));
        let _ = writeln!(t, "categories = [{}]", list(&self.categories));
        if !self.redact_tags.is_empty() {
            let _ = writeln!(t, "redact_tags = [{}]", list(&self.redact_tags));
        }
        let _ = writeln!(t, "relay = {}", self.relay);
        let _ = writeln!(t, "retention_days = {}", self.retention_days);
        let _ = writeln!(t, "backfill = {}", self.backfill);
        t
    }
}

/// Members a rule names: every party, or some.
#[derive(Debug, Clone)]
enum Who {
    All,
    Only(Vec<String>),
}

impl Who {
    fn contains(&self, m: &str) -> bool {
        match self {
            Who::All => true,
            Who::Only(list) => list.iter().any(|x| x == m),
        }
    }
}

/// A `[[share]]` rule.
#[derive(Debug, Clone)]
struct ShareSpec {
    agreement: String,
    categories: Option<Vec<String>>,
    to: Option<Who>,
    except: Vec<String>,
    redact_fields: Vec<String>,
    redact_tags: Vec<String>,
    classifications: Option<Vec<String>>,
}

impl ShareSpec {
    fn covers(&self, agreement: &str, category: &str) -> bool {
        self.agreement == agreement
            && self.categories.as_ref().is_none_or(|cs| cs.iter().any(|c| c == category))
    }

    fn shares_class(&self, class: &str) -> bool {
        match &self.classifications {
            None => class == "public" || class == "non_confidential",
            Some(cs) => cs.iter().any(|c| c == class),
        }
    }

    fn sends_to(&self, m: &str) -> bool {
        self.to.as_ref().is_none_or(|w| w.contains(m))
    }
}

/// An `[[accept]]` rule.
#[derive(Debug, Clone)]
struct AcceptSpec {
    agreement: String,
    categories: Option<Vec<String>>,
    from: Option<Who>,
}

impl AcceptSpec {
    fn covers(&self, agreement: &str, category: &str) -> bool {
        self.agreement == agreement
            && self.categories.as_ref().is_none_or(|cs| cs.iter().any(|c| c == category))
    }
}

/// One member's policy file.
#[derive(Debug, Clone, Default)]
struct PolicySpec {
    share: Vec<ShareSpec>,
    accept: Vec<AcceptSpec>,
}

impl PolicySpec {
    fn text(&self, member: &str) -> String {
        let list = |xs: &[String]| xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
        let who = |w: &Who| match w {
            Who::All => "[\"*\"]".to_owned(),
            Who::Only(xs) => format!("[{}]", list(xs)),
        };
        let mut t = format!("member = {member:?}\n");
        for s in &self.share {
            let _ = writeln!(t, "\n[[share]]\nagreement = {:?}", s.agreement);
            if let Some(c) = &s.categories {
                let _ = writeln!(t, "categories = [{}]", list(c));
            }
            if let Some(w) = &s.to {
                let _ = writeln!(t, "to = {}", who(w));
            }
            if !s.except.is_empty() {
                let _ = writeln!(t, "except = [{}]", list(&s.except));
            }
            if !s.redact_fields.is_empty() {
                let _ = writeln!(t, "redact_fields = [{}]", list(&s.redact_fields));
            }
            if !s.redact_tags.is_empty() {
                let _ = writeln!(t, "redact_tags = [{}]", list(&s.redact_tags));
            }
            if let Some(c) = &s.classifications {
                let _ = writeln!(t, "classifications = [{}]", list(c));
            }
        }
        for a in &self.accept {
            let _ = writeln!(t, "\n[[accept]]\nagreement = {:?}", a.agreement);
            if let Some(c) = &a.categories {
                let _ = writeln!(t, "categories = [{}]", list(c));
            }
            if let Some(w) = &a.from {
                let _ = writeln!(t, "from = {}", who(w));
            }
        }
        t
    }
}

/// One record to ingest.
#[derive(Debug, Clone)]
struct RecordSpec {
    origin: String,
    category: String,
    classification: &'static str,
    created_ms: i64,
    expires_ms: Option<i64>,
    body: Map<String, Value>,
}

impl RecordSpec {
    fn json(&self) -> Value {
        let mut r = json!({
            "category": self.category,
            "classification": self.classification,
            "body": self.body,
            "created": rfc3339(self.created_ms),
        });
        if let Some(e) = self.expires_ms {
            r["expires"] = json!(rfc3339(e));
        }
        r
    }

    fn leaves_node(&self) -> bool {
        self.classification == "public" || self.classification == "non_confidential"
    }
}

/// A whole generated federation.
#[derive(Debug)]
struct FedSpec {
    seed: u64,
    members: Vec<String>,
    agreements: Vec<AgreementSpec>,
    policies: BTreeMap<String, PolicySpec>,
    records: Vec<RecordSpec>,
    /// The member started last, after the others have ingested: it catches up by
    /// anti-entropy, from relays where the origin is down.
    late: String,
    /// A member stopped while the late one catches up, then restarted.
    down: Option<String>,
}

fn day_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A random non-empty subset of `items`, in their order.
fn subset<T: Clone>(rng: &mut StdRng, items: &[T], min: usize) -> Vec<T> {
    let n = rng.gen_range(min.min(items.len())..=items.len());
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.shuffle(rng);
    let mut keep: Vec<usize> = idx.into_iter().take(n).collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| items[i].clone()).collect()
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("a non-empty choice")
}

fn gen_federation(seed: u64, catalog: &CatalogModel, now_ms: i64) -> FedSpec {
    let mut rng = StdRng::seed_from_u64(seed);
    let today = Utc.timestamp_millis_opt(now_ms).single().expect("now").date_naive();
    let days = |n: i64| today + chrono::Duration::days(n);
    let n_members = rng.gen_range(3..=6);
    let mut members: Vec<String> = CODES.iter().map(|c| (*c).to_owned()).collect();
    members.shuffle(&mut rng);
    members.truncate(n_members);
    members.sort();

    let categories: Vec<String> = catalog.names().into_iter().map(String::from).collect();
    let mut agreements = Vec::new();
    for i in 0..rng.gen_range(2..=5) {
        // About a quarter bilateral.
        let mut parties = if rng.gen_bool(0.25) {
            let mut p = members.clone();
            p.shuffle(&mut rng);
            p.truncate(2);
            p
        } else {
            subset(&mut rng, &members, 3)
        };
        parties.sort();
        let mut cats = categories.clone();
        cats.shuffle(&mut rng);
        cats.truncate(rng.gen_range(1..=3));
        cats.sort();
        let redact_tags: Vec<String> =
            TAGS.iter().filter(|_| rng.gen_bool(0.5)).map(|t| (*t).to_owned()).collect();
        let from = match rng.gen_range(0..100) {
            0..50 => days(-3000),
            50..90 => days(-100),
            _ => days(200),
        };
        let until = match rng.gen_range(0..100) {
            0..10 if from < today => Some(days(-10)),
            10..25 => Some(days(1000)),
            _ => None,
        };
        let altered_at = rng.gen_bool(0.15).then(|| pick(&mut rng, &parties).clone());
        agreements.push(AgreementSpec {
            id: format!("leak-{i}"),
            parties,
            categories: cats,
            redact_tags,
            relay: rng.gen_bool(0.5),
            retention_days: *pick(&mut rng, &[30, 365, 3650, 3650]),
            backfill: rng.gen_bool(0.5),
            signed: from - chrono::Duration::days(7),
            from,
            until,
            altered_at,
        });
    }

    let mut policies = BTreeMap::new();
    for m in &members {
        let mut p = PolicySpec::default();
        for a in agreements.iter().filter(|a| a.is_party(m)) {
            let others: Vec<String> = a.parties.iter().filter(|x| *x != m).cloned().collect();
            // Share: not at all (default deny), or one or two rules.
            let n_share = match rng.gen_range(0..100) {
                0..25 => 0,
                25..75 => 1,
                _ => 2,
            };
            for _ in 0..n_share {
                let cats = rng.gen_bool(0.5).then(|| subset(&mut rng, &a.categories, 1));
                let to = match rng.gen_range(0..100) {
                    0..40 => None,
                    40..60 => Some(Who::All),
                    _ => Some(Who::Only(subset(&mut rng, &others, 1))),
                };
                let except =
                    if rng.gen_bool(0.2) { vec![pick(&mut rng, &others).clone()] } else { Vec::new() };
                let rule_cats = cats.clone().unwrap_or_else(|| a.categories.clone());
                let fields: BTreeSet<String> =
                    rule_cats.iter().flat_map(|c| catalog.fields(c).iter().map(|f| f.name.clone())).collect();
                let fields: Vec<String> = fields.into_iter().collect();
                let redact_fields = if rng.gen_bool(0.3) {
                    let mut f = fields.clone();
                    f.shuffle(&mut rng);
                    f.truncate(rng.gen_range(1..=2));
                    f.sort();
                    f
                } else {
                    Vec::new()
                };
                let redact_tags =
                    if rng.gen_bool(0.2) { vec![(*pick(&mut rng, &TAGS)).to_owned()] } else { Vec::new() };
                let classifications = match rng.gen_range(0..100) {
                    0..50 => None,
                    50..65 => Some(vec!["public".to_owned()]),
                    65..80 => Some(vec!["non_confidential".to_owned()]),
                    _ => Some(vec!["public".to_owned(), "non_confidential".to_owned()]),
                };
                p.share.push(ShareSpec {
                    agreement: a.id.clone(),
                    categories: cats,
                    to,
                    except,
                    redact_fields,
                    redact_tags,
                    classifications,
                });
            }
            // Accept: nothing (default deny), or one or two rules.
            let n_accept = match rng.gen_range(0..100) {
                0..20 => 0,
                20..80 => 1,
                _ => 2,
            };
            for _ in 0..n_accept {
                let cats = rng.gen_bool(0.4).then(|| subset(&mut rng, &a.categories, 1));
                let from = match rng.gen_range(0..100) {
                    0..50 => None,
                    50..65 => Some(Who::All),
                    _ => Some(Who::Only(subset(&mut rng, &others, 1))),
                };
                p.accept.push(AcceptSpec { agreement: a.id.clone(), categories: cats, from });
            }
        }
        policies.insert(m.clone(), p);
    }

    let mut records = Vec::new();
    for m in &members {
        // Mostly categories that the origin shares under some agreement, so that much is.
        let shared: BTreeSet<&str> = policies[m].share.iter().map(|s| s.agreement.as_str()).collect();
        let covered: Vec<String> = agreements
            .iter()
            .filter(|a| shared.contains(a.id.as_str()))
            .flat_map(|a| a.categories.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for i in 0..rng.gen_range(4..=10) {
            let category = if !covered.is_empty() && rng.gen_bool(0.85) {
                pick(&mut rng, &covered).clone()
            } else {
                pick(&mut rng, &categories).clone()
            };
            let classification = match rng.gen_range(0..100) {
                0..38 => "public",
                38..75 => "non_confidential",
                75..92 => "confidential",
                _ => "secret",
            };
            // Ages in whole days, apart from every retention (30, 365, 3650) and every
            // agreement start (100, 3000 days ago) by days, so no decision is on an edge.
            let age_days = *pick(&mut rng, &[0, 0, 0, 0, 0, 50, 200, 400]);
            let created_ms = now_ms - age_days * DAY_MS - rng.gen_range(60..3600) * 1000;
            let created_ms = created_ms - created_ms % 1000;
            // Some records expire in 20 days; some old ones expired yesterday.
            let expires_ms = match rng.gen_range(0..100) {
                0..12 => Some(now_ms + 20 * DAY_MS),
                12..18 if age_days > 0 => Some(now_ms - DAY_MS),
                _ => None,
            }
            .map(|e| e - e % 1000);
            let tag = format!("{m}{i}s{seed}");
            let mut body = Map::new();
            for f in catalog.fields(&category) {
                if f.required || rng.gen_bool(0.6) {
                    body.insert(f.name.clone(), value_for(&mut rng, f, &tag));
                }
            }
            records.push(RecordSpec {
                origin: m.clone(),
                category,
                classification,
                created_ms,
                expires_ms,
                body,
            });
        }
    }
    let late = pick(&mut rng, &members).clone();
    let others: Vec<String> = members.iter().filter(|m| **m != late).cloned().collect();
    // Preferably an origin whose records could reach the late member through a relay.
    let via_relay: Vec<String> = others
        .iter()
        .filter(|o| {
            agreements.iter().any(|a| a.relay && a.parties.len() > 2 && a.is_party(o) && a.is_party(&late))
        })
        .cloned()
        .collect();
    let candidates = if via_relay.is_empty() { &others } else { &via_relay };
    let down = rng.gen_bool(0.75).then(|| pick(&mut rng, candidates).clone());
    FedSpec { seed, members, agreements, policies, records, late, down }
}

/// A valid random value for a field.
fn value_for(rng: &mut StdRng, f: &FieldSpec, tag: &str) -> Value {
    let cut = |s: String| -> String { f.max_len.map_or(s.clone(), |m| s.chars().take(m).collect()) };
    match f.ty.as_str() {
        "text" => json!(cut(format!("{} {tag} {}", f.name, rng.gen_range(0..1_000_000)))),
        "integer" => json!(rng.gen_range(1..100_000)),
        "decimal" => json!(format!("{}.{}", rng.gen_range(1..100_000), rng.gen_range(1..100))),
        "bool" => json!(rng.gen_bool(0.5)),
        "date" => json!(format!("2026-{:02}-{:02}", rng.gen_range(1..=12), rng.gen_range(1..=28))),
        "timestamp" => {
            json!(format!("2026-{:02}-{:02}T10:00:00Z", rng.gen_range(1..=12), rng.gen_range(1..=28)))
        }
        "enum" => json!(pick(rng, &f.values)),
        "text_list" => {
            let n = rng.gen_range(1..=3);
            json!((0..n).map(|i| cut(format!("{tag}-{i}"))).collect::<Vec<_>>())
        }
        other => panic!("the catalog has a field type the leak check does not know: {other}"),
    }
}

// ---- the oracle ----------------------------------------------------------------------------

/// Why a record does not go to a member under an agreement (for failure messages).
type Why = &'static str;

impl FedSpec {
    fn agreement(&self, id: &str) -> Option<&AgreementSpec> {
        self.agreements.iter().find(|a| a.id == id)
    }

    /// May the origin send `r` to `peer` under `a` at `now`? The design's outbound rules.
    fn may_share(&self, r: &RecordSpec, a: &AgreementSpec, peer: &str, now: i64) -> Result<(), Why> {
        if !r.leaves_node() {
            return Err("classified: never leaves its origin");
        }
        let purge = (r.created_ms + a.retention_days * DAY_MS).min(r.expires_ms.unwrap_or(i64::MAX));
        if now >= purge {
            return Err("expired (own expiry or the agreement's retention)");
        }
        if now < a.starts_ms() || a.until_ms().is_some_and(|u| now >= u) {
            return Err("agreement not in force");
        }
        if !a.backfill && r.created_ms < a.starts_ms() {
            return Err("record predates the agreement, no backfill");
        }
        if !a.is_party(&r.origin) {
            return Err("origin not a party");
        }
        if peer == r.origin || !a.is_party(peer) {
            return Err("peer not a party (or the origin)");
        }
        if !a.covers(&r.category) {
            return Err("category not in the agreement");
        }
        let covering: Vec<&ShareSpec> =
            self.policies[&r.origin].share.iter().filter(|s| s.covers(&a.id, &r.category)).collect();
        if covering.is_empty() {
            return Err("no share rule at the origin");
        }
        let matching: Vec<&&ShareSpec> =
            covering.iter().filter(|s| s.shares_class(r.classification)).collect();
        if matching.is_empty() {
            return Err("no share rule for the classification");
        }
        if covering.iter().any(|s| s.except.iter().any(|x| x == peer)) {
            return Err("peer paused by a share rule");
        }
        if !matching.iter().any(|s| s.sends_to(peer)) {
            return Err("no share rule names the peer");
        }
        Ok(())
    }

    /// May `holder` accept `r` under `a` from its origin? The design's inbound rules, the
    /// same agreement text at both ends included. (What relays change while an origin is
    /// down is [`while_down`]'s.)
    fn may_accept(&self, r: &RecordSpec, a: &AgreementSpec, holder: &str) -> Result<(), Why> {
        if !a.same_text(&r.origin, holder) {
            return Err("the two copies of the agreement differ");
        }
        let accepting: Vec<&AcceptSpec> =
            self.policies[holder].accept.iter().filter(|s| s.covers(&a.id, &r.category)).collect();
        if accepting.is_empty() {
            return Err("no accept rule at the receiver");
        }
        if !accepting.iter().any(|s| s.from.as_ref().is_none_or(|w| w.contains(&r.origin))) {
            return Err("no accept rule names the origin");
        }
        Ok(())
    }

    /// The fields of `r`'s body withheld under `a`: the agreement's redacted tags, and
    /// the tags and fields of every origin share rule for the agreement and category.
    fn withheld(&self, r: &RecordSpec, a: &AgreementSpec, catalog: &CatalogModel) -> BTreeSet<String> {
        let mut tags: BTreeSet<&str> = a.redact_tags.iter().map(String::as_str).collect();
        let mut out = BTreeSet::new();
        let fields = catalog.fields(&r.category);
        for s in self.policies[&r.origin].share.iter().filter(|s| s.covers(&a.id, &r.category)) {
            tags.extend(s.redact_tags.iter().map(String::as_str));
            out.extend(s.redact_fields.iter().filter(|f| fields.iter().any(|x| &x.name == *f)).cloned());
        }
        out.extend(
            fields
                .iter()
                .filter(|f| f.tags.iter().any(|t| tags.contains(t.as_str())))
                .map(|f| f.name.clone()),
        );
        out.retain(|f| r.body.contains_key(f));
        out
    }

    /// For a member other than the origin: the agreements it may hold `r` under, each
    /// with the body fields it then holds, or why under each covering agreement it may not.
    fn allowed(
        &self,
        r: &RecordSpec,
        holder: &str,
        now: i64,
        catalog: &CatalogModel,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, Vec<String>> {
        let mut ok = BTreeMap::new();
        let mut why = Vec::new();
        for a in self.agreements.iter().filter(|a| a.covers(&r.category)) {
            match self.may_share(r, a, holder, now).and_then(|()| self.may_accept(r, a, holder)) {
                Ok(()) => {
                    let withheld = self.withheld(r, a, catalog);
                    ok.insert(
                        a.id.clone(),
                        r.body.keys().filter(|k| !withheld.contains(*k)).cloned().collect(),
                    );
                }
                Err(w) => why.push(format!("{}: {w}", a.id)),
            }
        }
        if ok.is_empty() {
            Err(why)
        } else {
            Ok(ok)
        }
    }

    fn describe(&self) -> String {
        let mut t = format!(
            "members {}; {} joins late{}\n",
            self.members.join(" "),
            self.late,
            self.down.as_ref().map(|d| format!(", {d} is down while it catches up")).unwrap_or_default()
        );
        for a in &self.agreements {
            let _ = writeln!(
                t,
                "  {} parties [{}] categories [{}] redact [{}] relay {} retention {} backfill {} from {} until {:?}{}",
                a.id,
                a.parties.join(" "),
                a.categories.join(" "),
                a.redact_tags.join(" "),
                a.relay,
                a.retention_days,
                a.backfill,
                a.from,
                a.until,
                a.altered_at.as_ref().map(|m| format!(" (copy altered at {m})")).unwrap_or_default(),
            );
        }
        t
    }
}

// ---- running a federation ---------------------------------------------------------------

/// One running case: the nodes, each ingested record by id, and its body as its origin
/// shows it (values normalised by the origin's node).
struct Running {
    nodes: BTreeMap<String, TestNode>,
    /// Record id → index into `FedSpec::records`.
    ids: BTreeMap<String, usize>,
    /// Record id → body at its origin.
    bodies: BTreeMap<String, Value>,
}

impl Running {
    fn running(&self) -> impl Iterator<Item = (&String, &TestNode)> {
        self.nodes.iter().filter(|(_, n)| n.node.is_some())
    }
}

fn write_files(spec: &FedSpec, member: &str, dir: &Path, ports: &BTreeMap<String, u16>) {
    let mut roster = String::from("# A random federation of the leak check. DEMO identities only.\n");
    for m in &spec.members {
        let code: tamga_protocol::MemberCode = m.parse().expect("a member code");
        let _ = write!(
            roster,
            "\n[[member]]\ncode = {m:?}\nname = \"Leak-check member {m}\"\nrole = {:?}\npeer_ids = [\"{}\"]\naddrs = [\"/ip4/127.0.0.1/tcp/{}\"]\n",
            if m == "XS" { "observer" } else { "member" },
            tamga_config::demo::demo_peer_id(code),
            ports[m],
        );
    }
    std::fs::write(dir.join("roster.toml"), roster).expect("writes the roster");
    std::fs::copy(example_dir().join("catalog.toml"), dir.join("catalog.toml")).expect("copies the catalog");
    std::fs::create_dir_all(dir.join("agreements")).expect("creates agreements/");
    for a in &spec.agreements {
        std::fs::write(dir.join("agreements").join(format!("{}.toml", a.id)), a.text(member))
            .expect("writes an agreement");
    }
    std::fs::create_dir_all(dir.join("policies")).expect("creates policies/");
    std::fs::write(dir.join("policies").join(format!("{member}.toml")), spec.policies[member].text(member))
        .expect("writes the policy");
}

/// `tamga init` every member's node; start all but the late one.
async fn start(spec: &FedSpec) -> BTreeMap<String, TestNode> {
    let listeners: Vec<(String, std::net::TcpListener)> = spec
        .members
        .iter()
        .map(|m| (m.clone(), std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port")))
        .collect();
    let ports: BTreeMap<String, u16> =
        listeners.iter().map(|(m, l)| (m.clone(), l.local_addr().expect("an address").port())).collect();
    drop(listeners);
    let mut nodes = BTreeMap::new();
    for m in &spec.members {
        let fed_dir = tempfile::tempdir().expect("a temp dir");
        write_files(spec, m, fed_dir.path(), &ports);
        let listen = format!("/ip4/127.0.0.1/tcp/{}", ports[m]);
        let mut n = TestNode::init_in(m, fed_dir.path(), &listen, |t| {
            *t = t.replace("[network]\n", "[network]\nanti_entropy_secs = 1\n");
        })
        .unwrap_or_else(|e| panic!("seed {}: init of {m} fails: {e:#}\n{}", spec.seed, spec.describe()));
        n.federation = Some(fed_dir);
        nodes.insert(m.clone(), n);
    }
    for (m, n) in nodes.iter_mut().filter(|(m, _)| **m != spec.late) {
        start_node(spec, m, n).await;
    }
    nodes
}

async fn start_node(spec: &FedSpec, m: &str, n: &mut TestNode) {
    n.restart()
        .await
        .unwrap_or_else(|e| panic!("seed {}: {m} does not start: {e:#}\n{}", spec.seed, spec.describe()));
}

/// Wait until every running node is connected to every other running one.
async fn wait_connected(spec: &FedSpec, run: &Running) {
    let want = run.running().count() - 1;
    let deadline = Instant::now() + CONNECT_WITHIN;
    loop {
        let mut all = true;
        for (_, n) in run.running() {
            all &= n.node().shared().net.connected().await.map(|c| c.len()).unwrap_or(0) >= want;
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "seed {}: the running nodes did not all connect", spec.seed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ingest `m`'s records through its API, one batch; note their ids and bodies.
async fn ingest(spec: &FedSpec, run: &mut Running, m: &str) {
    let mine: Vec<usize> = (0..spec.records.len()).filter(|i| spec.records[*i].origin == m).collect();
    let body = json!({ "records": mine.iter().map(|i| spec.records[*i].json()).collect::<Vec<_>>() });
    let client = run.nodes[m].client(Role::Operator);
    let v = client
        .post("/v1/records", &body)
        .await
        .unwrap_or_else(|e| panic!("seed {}: {m} refuses its records: {e}", spec.seed));
    let got = v["ids"].as_array().expect("ids");
    assert_eq!(got.len(), mine.len(), "seed {}: one id per record", spec.seed);
    for (i, id) in mine.iter().zip(got) {
        let id = id.as_str().expect("an id").to_owned();
        let shown = client
            .get(&format!("/v1/records/{id}"), &[])
            .await
            .unwrap_or_else(|e| panic!("seed {}: {m} shows its record {id}: {e}", spec.seed));
        run.bodies.insert(id.clone(), shown["record"]["body"].clone());
        let prev = run.ids.insert(id, *i);
        assert!(prev.is_none(), "seed {}: two generated records share an id", spec.seed);
    }
}

/// Every running node's holdings: member → record id → the record as the API shows it.
async fn holdings(run: &Running) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (m, n) in run.running() {
        let v = n
            .client(Role::Operator)
            .get("/v1/records", &[("limit", "10000".into())])
            .await
            .unwrap_or_else(|e| panic!("{m} lists its records: {e}"));
        let held = v["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| (r["id"].as_str().expect("an id").to_owned(), r.clone()))
            .collect();
        out.insert(m.clone(), held);
    }
    out
}

/// What each member should hold: member → record id → agreement → fields (for the
/// origin, its own records under the pseudo-agreement `local`, with every field).
type Expected = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeSet<String>>>>;

fn expected(spec: &FedSpec, run: &Running, now: i64, catalog: &CatalogModel) -> Expected {
    let mut out: Expected = spec.members.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (id, &i) in &run.ids {
        let r = &spec.records[i];
        for m in &spec.members {
            if *m == r.origin {
                let all = r.body.keys().cloned().collect();
                out.get_mut(m)
                    .expect("a member")
                    .insert(id.clone(), BTreeMap::from([("local".to_owned(), all)]));
            } else if let Ok(ok) = spec.allowed(r, m, now, catalog) {
                out.get_mut(m).expect("a member").insert(id.clone(), ok);
            }
        }
    }
    out
}

/// Counts of what one check looked at.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    copies: usize,
    relayed: usize,
    bilateral: usize,
    fields: usize,
}

/// Check every holding against the oracle; a leak of any kind panics with a precise
/// message. Returns what was checked.
#[allow(clippy::too_many_arguments)]
fn check_no_leak(
    spec: &FedSpec,
    run: &Running,
    held: &BTreeMap<String, BTreeMap<String, Value>>,
    want: &Expected,
    now: i64,
    catalog: &CatalogModel,
) -> Tally {
    let seed = spec.seed;
    let mut tally = Tally::default();
    for (m, records) in held {
        for (id, got) in records {
            let ctx = || format!("seed {seed}: node {m}, record {id}");
            let Some(&i) = run.ids.get(id) else {
                panic!("{}: a record nobody ingested: {got}", ctx());
            };
            let r = &spec.records[i];
            let source = &got["source"];
            if *m == r.origin {
                assert_eq!(
                    source["kind"],
                    "local",
                    "{}: the origin's own record is not local: {source}",
                    ctx()
                );
                continue;
            }
            assert!(
                r.leaves_node(),
                "{}: LEAK: a {} record of {} left its origin (source {source})",
                ctx(),
                r.classification,
                r.origin
            );
            assert_eq!(
                source["kind"],
                "received",
                "{}: another member's record, not received: {source}",
                ctx()
            );
            let agreement = source["agreement"].as_str().unwrap_or_default();
            let from = source["from"].as_str().unwrap_or_default();
            let Some(a) = spec.agreement(agreement) else {
                panic!("{}: LEAK: held under an unknown agreement {agreement:?}", ctx());
            };
            assert!(
                a.is_party(m),
                "{}: LEAK: held under agreement {agreement} ({}), to which {m} is not a party (parties {:?})",
                ctx(),
                if a.bilateral() { "bilateral" } else { "multilateral" },
                a.parties
            );
            assert!(
                a.is_party(&r.origin) && a.covers(&r.category),
                "{}: held under agreement {agreement}, which does not cover origin {} and category {}",
                ctx(),
                r.origin,
                r.category
            );
            if from != r.origin {
                assert!(
                    a.relay,
                    "{}: LEAK: relayed by {from} under agreement {agreement}, which forbids relaying",
                    ctx()
                );
                assert!(a.is_party(from), "{}: relayed by {from}, not a party to {agreement}", ctx());
            }
            let Some(allowed) = want[m].get(id) else {
                let why = spec.allowed(r, m, now, catalog).err().unwrap_or_default();
                panic!(
                    "{}: LEAK: extra record ({} {} of {}, held under agreement {agreement} from {from}); \
                     the files allow it under no agreement: {}\n{}",
                    ctx(),
                    r.classification,
                    r.category,
                    r.origin,
                    why.join("; "),
                    spec.describe()
                );
            };
            let Some(fields) = allowed.get(agreement) else {
                panic!(
                    "{}: LEAK: held under agreement {agreement}, which does not give it to {m}; the files allow only {:?}\n{}",
                    ctx(),
                    allowed.keys().collect::<Vec<_>>(),
                    spec.describe()
                );
            };
            let body = got["body"].as_object().cloned().unwrap_or_default();
            let keys: BTreeSet<String> = body.keys().cloned().collect();
            let extra: Vec<&String> = keys.difference(fields).collect();
            assert!(
                extra.is_empty(),
                "{}: LEAK: fields {extra:?} held, which agreement {agreement} withholds ({} {} of {})\n{}",
                ctx(),
                r.classification,
                r.category,
                r.origin,
                spec.describe()
            );
            if got["state"] == "live" {
                let missing: Vec<&String> = fields.difference(&keys).collect();
                assert!(
                    missing.is_empty(),
                    "{}: fields {missing:?} revealed under agreement {agreement} are missing",
                    ctx()
                );
                let withheld = r.body.len() - fields.len();
                assert_eq!(
                    got["withheld_fields"].as_u64(),
                    Some(withheld as u64),
                    "{}: the count of withheld fields",
                    ctx()
                );
            }
            // Every value held is the origin's.
            let origin_view = &run.bodies[id];
            for (k, v) in &body {
                assert_eq!(
                    Some(v),
                    origin_view.get(k),
                    "{}: field {k} differs from the origin's value",
                    ctx()
                );
            }
            tally.copies += 1;
            tally.relayed += usize::from(from != r.origin);
            tally.bilateral += usize::from(a.bilateral());
            tally.fields += keys.len();
        }
    }
    tally
}

/// Member → record id → state and field names: what must stop changing.
type Shape = BTreeMap<String, BTreeMap<String, String>>;

/// Every projection a node keeps of another member's record is under an agreement the
/// oracle gives it the record under: a second projection, under an agreement that does
/// not reach the holder, would be a leak the body alone does not show.
async fn check_projections(
    spec: &FedSpec,
    run: &Running,
    held: &BTreeMap<String, BTreeMap<String, Value>>,
    want: &Expected,
) {
    for (m, records) in held {
        let client = run.nodes[m].client(Role::Operator);
        for id in records.keys() {
            let r = &spec.records[run.ids[id]];
            if *m == r.origin {
                continue;
            }
            let shown = client
                .get(&format!("/v1/records/{id}"), &[])
                .await
                .unwrap_or_else(|e| panic!("seed {}: {m} shows {id}: {e}", spec.seed));
            for p in shown["projections"].as_array().into_iter().flatten() {
                let a = p["agreement"].as_str().unwrap_or_default();
                assert!(
                    want[m].get(id).is_some_and(|ok| ok.contains_key(a)),
                    "seed {}: node {m}, record {id}: LEAK: keeps a projection under agreement {a}, which does \
                     not give it the record ({} {} of {})\n{}",
                    spec.seed,
                    r.classification,
                    r.category,
                    r.origin,
                    spec.describe()
                );
            }
        }
    }
}

/// Ids, states and field names of every holding, to tell when nothing changes any more.
fn shape(held: &BTreeMap<String, BTreeMap<String, Value>>) -> Shape {
    held.iter()
        .map(|(m, rs)| {
            let v = rs
                .iter()
                .map(|(id, r)| {
                    let keys: Vec<&String> =
                        r["body"].as_object().map(|b| b.keys().collect()).unwrap_or_default();
                    (id.clone(), format!("{} {:?}", r["state"], keys))
                })
                .collect();
            (m.clone(), v)
        })
        .collect()
}

/// Running members still missing records the oracle gives them.
fn missing(
    spec: &FedSpec,
    run: &Running,
    held: &BTreeMap<String, BTreeMap<String, Value>>,
    want: &Expected,
) -> Vec<String> {
    let mut out = Vec::new();
    for (m, ids) in want {
        let Some(h) = held.get(m) else { continue };
        for (id, agreements) in ids {
            if !h.contains_key(id) {
                let r = &spec.records[run.ids[id]];
                out.push(format!(
                    "{m} lacks {id} ({} {} of {}, under {:?})",
                    r.classification,
                    r.category,
                    r.origin,
                    agreements.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    out
}

/// What the late member can hold while `down` is stopped: of `down`'s records, only
/// those a running third member holds under an agreement that allows relaying, reaches
/// the late member, and whose text the two share; and only under such agreements.
fn while_down(
    spec: &FedSpec,
    run: &Running,
    want: &mut Expected,
    down: &str,
    now: i64,
    catalog: &CatalogModel,
) {
    let late = spec.late.as_str();
    let relays: Vec<&String> = spec.members.iter().filter(|m| *m != down && *m != late).collect();
    let Some(held) = want.get_mut(late) else { return };
    held.retain(|id, agreements| {
        let r = &spec.records[run.ids[id]];
        if r.origin != down {
            return true;
        }
        agreements.retain(|a, _| {
            let Some(spec_a) = spec.agreement(a) else { return false };
            spec_a.relay
                && relays.iter().any(|x| {
                    spec_a.same_text(x, late)
                        && spec.allowed(r, x, now, catalog).is_ok_and(|ok| ok.contains_key(a))
                })
        });
        !agreements.is_empty()
    });
}

/// Poll every running node until its holdings stay unchanged for [`SETTLE`], checking
/// for leaks at every poll, and until nothing the oracle gives a running node is
/// missing (with `down` stopped: see [`while_down`]). Returns what the last check looked
/// at and how long after `t0` the holdings reached their final state.
async fn settle(
    spec: &FedSpec,
    run: &Running,
    catalog: &CatalogModel,
    down: Option<&str>,
    phase: &str,
    t0: Instant,
) -> (Tally, Duration) {
    let seed = spec.seed;
    let now = tamga_node::writer::now_ms();
    let mut want = expected(spec, run, now, catalog);
    if let Some(d) = down {
        while_down(spec, run, &mut want, d, now, catalog);
    }
    let mut stable: Option<(Instant, Shape)> = None;
    loop {
        let held = holdings(run).await;
        let tally = check_no_leak(spec, run, &held, &want, now, catalog);
        let lacking = missing(spec, run, &held, &want);
        if lacking.is_empty() {
            let s = shape(&held);
            match &stable {
                Some((since, prev)) if *prev == s => {
                    if since.elapsed() >= SETTLE {
                        check_projections(spec, run, &held, &want).await;
                        return (tally, since.duration_since(t0));
                    }
                }
                _ => stable = Some((Instant::now(), s)),
            }
        } else {
            stable = None;
        }
        assert!(
            t0.elapsed() < CONVERGE_WITHIN + CONNECT_WITHIN,
            "seed {seed}: {phase}: no quiescence within {CONVERGE_WITHIN:?}; {} records missing:\n  {}\n{}",
            lacking.len(),
            lacking.join("\n  "),
            spec.describe()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one case showed.
#[derive(Debug, Default)]
struct CaseFigures {
    members: usize,
    records: usize,
    classified: usize,
    copies: usize,
    relayed: usize,
    bilateral: usize,
    fields: usize,
    phases: usize,
    converge: Duration,
    /// The oracle's verdict for every (record, other member, agreement covering the
    /// record's category), by outcome: what the case exercised.
    verdicts: BTreeMap<&'static str, usize>,
}

impl CaseFigures {
    fn add(&mut self, o: &CaseFigures) {
        self.members += o.members;
        self.records += o.records;
        self.classified += o.classified;
        self.copies += o.copies;
        self.relayed += o.relayed;
        self.bilateral += o.bilateral;
        self.fields += o.fields;
        self.phases += o.phases;
        self.converge = self.converge.max(o.converge);
        for (k, v) in &o.verdicts {
            *self.verdicts.entry(k).or_default() += v;
        }
    }

    fn line(&self) -> String {
        format!(
            "{} nodes, {} records ({} confidential or secret), {} received copies ({} through a relay, {} under \
             a bilateral agreement) and {} fields checked in {} phases; extra records 0, extra fields 0; slowest \
             convergence after a (re)start {:.1} s",
            self.members,
            self.records,
            self.classified,
            self.copies,
            self.relayed,
            self.bilateral,
            self.fields,
            self.phases,
            self.converge.as_secs_f64()
        )
    }
}

/// The oracle's verdicts for every record, other member and agreement covering it.
fn verdicts(spec: &FedSpec, now: i64) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in &spec.records {
        for m in spec.members.iter().filter(|m| **m != r.origin) {
            let covering: Vec<&AgreementSpec> =
                spec.agreements.iter().filter(|a| a.covers(&r.category)).collect();
            if covering.is_empty() {
                *out.entry("no agreement covers the category").or_default() += 1;
            }
            for a in covering {
                let v = spec.may_share(r, a, m, now).and_then(|()| spec.may_accept(r, a, m));
                *out.entry(v.err().unwrap_or("allowed")).or_default() += 1;
            }
        }
    }
    out
}

/// One case: every member but the late one starts and ingests; once quiet, the `down`
/// member stops and the late one starts and ingests (it catches up from whoever holds
/// what it may hold, relays included); once quiet, the `down` member restarts and
/// everything converges. Every poll of every phase checks for leaks.
async fn run_case(seed: u64, catalog: &CatalogModel) -> CaseFigures {
    let now = tamga_node::writer::now_ms();
    let spec = gen_federation(seed, catalog, now);
    println!("leak seed {seed}: {}", spec.describe().trim_end());
    let t0 = Instant::now();
    let nodes = start(&spec).await;
    let mut run = Running { nodes, ids: BTreeMap::new(), bodies: BTreeMap::new() };
    wait_connected(&spec, &run).await;
    for m in spec.members.iter().filter(|m| **m != spec.late) {
        ingest(&spec, &mut run, m).await;
    }
    let (_, first) = settle(&spec, &run, catalog, None, "before the late member joins", t0).await;
    let mut phases = 1;

    if let Some(d) = &spec.down {
        run.nodes.get_mut(d).expect("a member").stop().await;
    }
    let late = spec.late.clone();
    let t1 = Instant::now();
    start_node(&spec, &late, run.nodes.get_mut(&late).expect("a member")).await;
    wait_connected(&spec, &run).await;
    ingest(&spec, &mut run, &late).await;
    let mut last_start = t1;
    if let Some(d) = spec.down.clone() {
        let phase = format!("{late} catching up while {d} is down");
        settle(&spec, &run, catalog, Some(&d), &phase, t1).await;
        phases += 1;
        last_start = Instant::now();
        start_node(&spec, &d, run.nodes.get_mut(&d).expect("a member")).await;
        wait_connected(&spec, &run).await;
    }
    let (tally, last) = settle(&spec, &run, catalog, None, "all members up", last_start).await;
    phases += 1;
    for n in run.nodes.values_mut() {
        n.stop().await;
    }
    let figures = CaseFigures {
        members: spec.members.len(),
        records: spec.records.len(),
        classified: spec.records.iter().filter(|r| !r.leaves_node()).count(),
        copies: tally.copies,
        relayed: tally.relayed,
        bilateral: tally.bilateral,
        fields: tally.fields,
        phases,
        converge: first.max(last),
        verdicts: verdicts(&spec, now),
    };
    println!("leak seed {seed}: {}", figures.line());
    figures
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Random federations hold exactly what their files allow: no extra record, no extra
/// field, no classified record off its origin, nothing under an agreement a holder is not
/// party to, and everything allowed arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_federations_hold_exactly_what_their_files_allow() {
    let catalog = CatalogModel::load();
    let seeds: Vec<u64> = match env_u64("TAMGA_LEAK_SEED") {
        Some(s) => vec![s],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch")
                .as_secs()
                % 1_000_000;
            (0..env_u64("TAMGA_LEAK_CASES").unwrap_or(DEFAULT_CASES)).map(|i| base * 100 + i).collect()
        }
    };
    println!("leak seeds {seeds:?} (rerun one with TAMGA_LEAK_SEED=<seed>)");
    let started = Instant::now();
    let mut total = CaseFigures::default();
    for seed in &seeds {
        total.add(&run_case(*seed, &catalog).await);
    }
    println!("leak: {} federations, {}; {:.1} s", seeds.len(), total.line(), started.elapsed().as_secs_f64());
    let v: Vec<String> = total.verdicts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("leak: the oracle's verdicts (record, member, agreement): {}", v.join("; "));
}

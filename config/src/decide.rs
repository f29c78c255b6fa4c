//! The sharing decision: may this record go to this peer under this agreement, and with
//! which fields withheld? And its inbound and relay counterparts.
//!
//! This module owns the decision functions ([`decide`], [`audience`], [`decide_accept`],
//! [`decide_relay`]), the reasons for a denial ([`DenyReason`]), the compiled form of
//! the local policy that makes a decision cost a few tens of nanoseconds (`Compiled`,
//! built once per load), and [`explain`], which walks the policy rule by rule, naming
//! file and line, and must always reach the same decision. Every function here is pure:
//! no I/O, no clock (the caller passes `now_ms`), no state; the node only applies them.
//!
//! Order of the checks for an outbound record ([`decide`]):
//!
//! 1. classification: `confidential` and `secret` are always denied (invariant 2),
//!    whatever the policy says;
//! 2. dates: the record has not expired (its own expiry and the agreement's retention),
//!    the agreement is in force, and the record is not older than the agreement unless
//!    the agreement allows backfill;
//! 3. parties: the record is this node's own, this node's member is a party, the peer is
//!    not this node, the peer is a party;
//! 4. the agreement covers the category;
//! 5. the share rules for this agreement and category (default deny): some rule must
//!    cover the record's classification; a member paused (`except`) in any of them gets
//!    nothing; the peer must be in the `to` of a rule that covers the classification.
//!
//! Withheld fields do not depend on the peer, because one signed projection goes to the
//! whole audience: they are the fields whose tags the agreement redacts, plus the fields
//! and tags that *any* share rule for the agreement and category redacts (the most
//! restrictive wins).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tamga_protocol::{CategoryId, Classification, MemberCode, RecordHeader};

use crate::agreement::Agreement;
use crate::catalog::Catalog;
use crate::federation::Federation;
use crate::policy::{Policy, ShareRule};

/// How far past this node's clock a record's creation time may be for the record to be
/// shared or accepted: 2 days. Members' clocks differ, and a node whose clock is a day
/// off still exchanges records with the rest (what it declines meanwhile it asks for
/// again); a record dated further ahead would have its retention run from a time not yet
/// come, so dating ahead stretches a record's retention by 2 days at most. (The API holds
/// its own ingest to a tighter bound.)
pub const MAX_CREATED_AHEAD_MS: i64 = 2 * 86_400_000;

/// Why a record is not sent to (or not accepted from) a peer. The names
/// ([`DenyReason::as_str`]) are stable and serve as metric and audit labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DenyReason {
    /// The record is `confidential` or `secret`: it never leaves the node.
    #[error("a {0} record never leaves the node")]
    Classified(Classification),
    /// The record says it was created later than [`MAX_CREATED_AHEAD_MS`] past this
    /// node's clock: its retention would run from a time not yet come.
    #[error("the record's creation time is more than 2 days ahead of this node's clock")]
    CreatedInFuture,
    /// The record has expired, or the agreement's retention period is over.
    #[error("the record has expired (its own expiry or the agreement's retention)")]
    Expired,
    /// Now is outside the agreement's effective dates.
    #[error("the agreement is not in force")]
    AgreementNotInForce,
    /// The record was created before the agreement came into force, and the agreement
    /// does not allow backfill.
    #[error("the record predates the agreement, which does not allow backfill")]
    BeforeAgreement,
    /// The record's origin is another member: only a member's own records are shared
    /// under its policy (others' are relayed, see [`decide_relay`]).
    #[error("the record's origin is {origin}, not this node's member")]
    NotOurs {
        /// The record's origin.
        origin: MemberCode,
    },
    /// This node's member is not a party to the agreement.
    #[error("this node's member is not a party to the agreement")]
    SelfNotParty,
    /// The peer is this node's own member.
    #[error("the peer is this node's own member")]
    PeerIsSelf,
    /// The peer is not a party to the agreement (or not in the roster).
    #[error("the peer is not a party to the agreement")]
    PeerNotParty,
    /// The agreement does not cover the record's category.
    #[error("the agreement does not cover the record's category")]
    CategoryNotInAgreement,
    /// No `[[share]]` rule covers this agreement and category (default deny).
    #[error("no share rule covers this agreement and category")]
    NoShareRule,
    /// Share rules cover the agreement and category, but none the record's
    /// classification.
    #[error("no share rule covers the record's classification")]
    ClassificationNotShared,
    /// A share rule pauses the peer (`except`).
    #[error("the peer is paused by a share rule")]
    PeerPaused,
    /// No share rule covering the record names the peer in `to`.
    #[error("no share rule covering the record names the peer in `to`")]
    PeerNotInRuleAudience,
    /// Inbound: the sender is not a party to the agreement.
    #[error("the sender is not a party to the agreement")]
    SenderNotParty,
    /// Inbound or relay: the record's origin is not a party to the agreement.
    #[error("the record's origin is not a party to the agreement")]
    OriginNotParty,
    /// Inbound: the record is this node's own.
    #[error("the record is this node's own")]
    OriginIsSelf,
    /// Inbound or relay: the record would come from (or go through) a party other than
    /// its origin, and the agreement does not allow relaying.
    #[error("the agreement does not allow relaying")]
    RelayNotAllowed,
    /// Inbound: no `[[accept]]` rule covers this agreement and category (default deny).
    #[error("no accept rule covers this agreement and category")]
    NoAcceptRule,
    /// Inbound: accept rules cover the agreement and category, but none names the
    /// record's origin in `from`.
    #[error("no accept rule names the record's origin in `from`")]
    OriginNotAccepted,
    /// Relay: the peer is not in the audience the origin chose.
    #[error("the peer is not in the projection's audience")]
    PeerNotInAudience,
    /// Relay: the peer is the record's origin.
    #[error("the peer is the record's origin")]
    PeerIsOrigin,
}

impl DenyReason {
    /// A stable snake_case name, for metric labels and audit entries.
    pub fn as_str(&self) -> &'static str {
        match self {
            DenyReason::Classified(_) => "classified",
            DenyReason::CreatedInFuture => "created_in_future",
            DenyReason::Expired => "expired",
            DenyReason::AgreementNotInForce => "agreement_not_in_force",
            DenyReason::BeforeAgreement => "before_agreement",
            DenyReason::NotOurs { .. } => "not_ours",
            DenyReason::SelfNotParty => "self_not_party",
            DenyReason::PeerIsSelf => "peer_is_self",
            DenyReason::PeerNotParty => "peer_not_party",
            DenyReason::CategoryNotInAgreement => "category_not_in_agreement",
            DenyReason::NoShareRule => "no_share_rule",
            DenyReason::ClassificationNotShared => "classification_not_shared",
            DenyReason::PeerPaused => "peer_paused",
            DenyReason::PeerNotInRuleAudience => "peer_not_in_rule_audience",
            DenyReason::SenderNotParty => "sender_not_party",
            DenyReason::OriginNotParty => "origin_not_party",
            DenyReason::OriginIsSelf => "origin_is_self",
            DenyReason::RelayNotAllowed => "relay_not_allowed",
            DenyReason::NoAcceptRule => "no_accept_rule",
            DenyReason::OriginNotAccepted => "origin_not_accepted",
            DenyReason::PeerNotInAudience => "peer_not_in_audience",
            DenyReason::PeerIsOrigin => "peer_is_origin",
        }
    }
}

/// The fields withheld from a projection, by name. Cheap to clone (shared).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Withheld(Arc<BTreeSet<String>>);

impl Withheld {
    /// Whether the field is withheld.
    pub fn contains(&self, field: &str) -> bool {
        self.0.contains(field)
    }

    /// The withheld field names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The set.
    pub fn as_set(&self) -> &BTreeSet<String> {
        &self.0
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is withheld.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These fields withheld, and `more` besides.
    pub fn and(&self, more: impl IntoIterator<Item = String>) -> Withheld {
        let mut all = (*self.0).clone();
        all.extend(more);
        Withheld(Arc::new(all))
    }
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&self.iter().collect::<Vec<_>>().join(", "))
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the record's projection to the peer, withholding these fields.
    Allow {
        /// Fields replaced by their digests.
        withheld: Withheld,
    },
    /// Do not send it.
    Deny(DenyReason),
}

impl Decision {
    /// Whether the decision allows sending.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The withheld fields, when allowed.
    pub fn withheld(&self) -> Option<&Withheld> {
        match self {
            Decision::Allow { withheld } => Some(withheld),
            Decision::Deny(_) => None,
        }
    }

    /// The reason, when denied.
    pub fn reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny(r) => Some(*r),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { withheld } => write!(f, "allow, withholding {withheld}"),
            Decision::Deny(r) => write!(f, "deny: {r}"),
        }
    }
}

// ---- the compiled policy -------------------------------------------------------------

/// One agreement's local policy, compiled: for each of the agreement's categories (in
/// the agreement's sorted order), the withheld fields, the share outcome per shareable
/// classification and party, and the accept outcome per origin party (in the
/// agreement's sorted party order). An agreement that was never compiled denies
/// everything ([`DenyReason::NoShareRule`], [`DenyReason::NoAcceptRule`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Compiled {
    categories: Vec<CompiledCategory>,
}

#[derive(Debug, Clone)]
struct CompiledCategory {
    withheld: Withheld,
    /// What the agreement alone withholds (its redacted tags), whoever's the record.
    redacted: Withheld,
    /// `[public, non_confidential]`, each indexed by party.
    share: [Box<[Option<DenyReason>]>; 2],
    /// Indexed by origin party: `None` accepts.
    accept: Box<[Option<DenyReason>]>,
}

/// Index of a shareable classification in the compiled tables.
fn class_index(c: Classification) -> Option<usize> {
    match c {
        Classification::Public => Some(0),
        Classification::NonConfidential => Some(1),
        Classification::Confidential | Classification::Secret => None,
    }
}

/// The fields withheld under an agreement for a category: the agreement's redacted tags
/// and every covering share rule's redacted tags and fields.
pub(crate) fn withheld_fields<'a>(
    agreement: &Agreement,
    category: &CategoryId,
    covering: impl Iterator<Item = &'a ShareRule>,
    catalog: &Catalog,
) -> BTreeSet<String> {
    let mut tags: BTreeSet<&str> = agreement.redact_tags.iter().map(String::as_str).collect();
    let mut fields: BTreeSet<String> = BTreeSet::new();
    for rule in covering {
        tags.extend(rule.redact_tags.iter().map(String::as_str));
        fields.extend(rule.redact_fields.iter().filter(|f| catalog.lists(category, f)).cloned());
    }
    fields.extend(catalog.fields_with_tags(category, tags));
    fields
}

/// Compile the local policy for one agreement.
pub(crate) fn compile(agreement: &Agreement, me: MemberCode, policy: &Policy, catalog: &Catalog) -> Compiled {
    let categories = agreement
        .categories
        .iter()
        .map(|cat| {
            let covering: Vec<&ShareRule> =
                policy.share.iter().filter(|r| r.covers(&agreement.id, cat)).collect();
            let withheld =
                Withheld(Arc::new(withheld_fields(agreement, cat, covering.iter().copied(), catalog)));
            let redacted = Withheld(Arc::new(withheld_fields(agreement, cat, std::iter::empty(), catalog)));
            let share = [Classification::Public, Classification::NonConfidential].map(|class| {
                agreement
                    .parties
                    .iter()
                    .map(|&peer| {
                        if peer == me {
                            return Some(DenyReason::PeerIsSelf);
                        }
                        if covering.is_empty() {
                            return Some(DenyReason::NoShareRule);
                        }
                        let matching: Vec<&&ShareRule> =
                            covering.iter().filter(|r| r.classifications.contains(&class)).collect();
                        if matching.is_empty() {
                            return Some(DenyReason::ClassificationNotShared);
                        }
                        if covering.iter().any(|r| r.except.contains(&peer)) {
                            return Some(DenyReason::PeerPaused);
                        }
                        if matching.iter().any(|r| r.to.contains(peer)) {
                            None
                        } else {
                            Some(DenyReason::PeerNotInRuleAudience)
                        }
                    })
                    .collect::<Box<[_]>>()
            });
            let accepting: Vec<_> = policy.accept.iter().filter(|r| r.covers(&agreement.id, cat)).collect();
            let accept = agreement
                .parties
                .iter()
                .map(|&origin| {
                    if accepting.is_empty() {
                        Some(DenyReason::NoAcceptRule)
                    } else if accepting.iter().any(|r| r.from.contains(origin)) {
                        None
                    } else {
                        Some(DenyReason::OriginNotAccepted)
                    }
                })
                .collect();
            CompiledCategory { withheld, redacted, share, accept }
        })
        .collect();
    Compiled { categories }
}

// ---- the decisions -------------------------------------------------------------------

fn party_index(agreement: &Agreement, m: MemberCode) -> Option<usize> {
    agreement.parties.binary_search(&m).ok()
}

fn category_index(agreement: &Agreement, c: &CategoryId) -> Option<usize> {
    agreement.categories.binary_search_by(|x| x.as_str().cmp(c.as_str())).ok()
}

/// Checks 1 and 2 (classification, dates), common to every direction.
#[inline]
fn record_checks(header: &RecordHeader, agreement: &Agreement, now_ms: i64) -> Result<usize, DenyReason> {
    let Some(class) = class_index(header.classification) else {
        return Err(DenyReason::Classified(header.classification));
    };
    if header.created_ms > now_ms.saturating_add(MAX_CREATED_AHEAD_MS) {
        return Err(DenyReason::CreatedInFuture);
    }
    if now_ms >= agreement.purge_at_ms(header) {
        return Err(DenyReason::Expired);
    }
    if !agreement.in_force(now_ms) {
        return Err(DenyReason::AgreementNotInForce);
    }
    // Relayed or received alike: what its origin may not share under the agreement
    // (since a change of its text, say) no relay passes on and no receiver takes.
    if !agreement.backfill && header.created_ms < agreement.from_ms {
        return Err(DenyReason::BeforeAgreement);
    }
    Ok(class)
}

/// The outbound checks that do not depend on the peer.
#[inline]
fn outbound_checks(
    header: &RecordHeader,
    agreement: &Agreement,
    fed: &Federation,
    now_ms: i64,
) -> Result<usize, DenyReason> {
    let class = record_checks(header, agreement, now_ms)?;
    if header.origin != fed.me {
        return Err(DenyReason::NotOurs { origin: header.origin });
    }
    if party_index(agreement, fed.me).is_none() {
        return Err(DenyReason::SelfNotParty);
    }
    Ok(class)
}

/// May this node send its record `header` to `peer` under `agreement` at `now_ms`, and
/// with which fields withheld? See the module documentation for the order of checks.
/// `agreement` must come from `fed`.
pub fn decide(
    header: &RecordHeader,
    agreement: &Agreement,
    peer: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Decision {
    let class = match outbound_checks(header, agreement, fed, now_ms) {
        Ok(c) => c,
        Err(r) => return Decision::Deny(r),
    };
    if peer == fed.me {
        return Decision::Deny(DenyReason::PeerIsSelf);
    }
    let Some(p) = party_index(agreement, peer) else {
        return Decision::Deny(DenyReason::PeerNotParty);
    };
    let Some(c) = category_index(agreement, &header.category) else {
        return Decision::Deny(DenyReason::CategoryNotInAgreement);
    };
    let Some(cat) = agreement.compiled.categories.get(c) else {
        return Decision::Deny(DenyReason::NoShareRule);
    };
    match cat.share.get(class).and_then(|row| row.get(p)) {
        Some(None) => Decision::Allow { withheld: cat.withheld.clone() },
        Some(Some(reason)) => Decision::Deny(*reason),
        None => Decision::Deny(DenyReason::NoShareRule),
    }
}

/// Every party that [`decide`] allows for this record under this agreement, sorted,
/// never this node's member. Empty when the record may go to no one.
pub fn audience(
    header: &RecordHeader,
    agreement: &Agreement,
    fed: &Federation,
    now_ms: i64,
) -> Vec<MemberCode> {
    let Ok(class) = outbound_checks(header, agreement, fed, now_ms) else {
        return Vec::new();
    };
    let Some(cat) =
        category_index(agreement, &header.category).and_then(|c| agreement.compiled.categories.get(c))
    else {
        return Vec::new();
    };
    let Some(row) = cat.share.get(class) else {
        return Vec::new();
    };
    agreement
        .parties
        .iter()
        .zip(row.iter())
        .filter(|(&m, outcome)| outcome.is_none() && m != fed.me)
        .map(|(&m, _)| m)
        .collect()
}

/// The withheld fields for records of `category` under `agreement` (what [`decide`]
/// returns when it allows).
pub fn withheld(agreement: &Agreement, category: &CategoryId) -> Option<Withheld> {
    category_index(agreement, category)
        .and_then(|c| agreement.compiled.categories.get(c))
        .map(|cat| cat.withheld.clone())
}

/// May this node accept a record `header` that `sender` pushed under `agreement`?
/// Checks: classification, dates, this node's member, the sender and the origin are
/// parties, the record is not this node's own, a sender other than the origin needs an
/// agreement that allows relaying, the category is covered, and an accept rule covers
/// the agreement and category and names the origin in `from`. The caller still checks
/// the signature and that this node is in the projection's audience.
pub fn decide_accept(
    header: &RecordHeader,
    agreement: &Agreement,
    sender: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Result<(), DenyReason> {
    record_checks(header, agreement, now_ms)?;
    let (o, c) = accept_parties(header, agreement, sender, fed)?;
    match agreement.compiled.categories.get(c).and_then(|cat| cat.accept.get(o)) {
        Some(None) => Ok(()),
        Some(Some(reason)) => Err(*reason),
        None => Err(DenyReason::NoAcceptRule),
    }
}

/// May this node take from `sender` a revocation of a record `header` describes, under
/// `agreement`? Only from whom a share of it could come ([`decide_accept`]'s parties,
/// relaying and category), but whatever the dates and the accept rules say now: a
/// revocation only makes holders purge, and a record taken while they allowed it must
/// still be purged once they no longer do.
pub fn decide_accept_revocation(
    header: &RecordHeader,
    agreement: &Agreement,
    sender: MemberCode,
    fed: &Federation,
) -> Result<(), DenyReason> {
    accept_parties(header, agreement, sender, fed).map(|_| ())
}

/// The checks of who sends what under `agreement` that shares and revocations have in
/// common: the origin's index among the parties and the category's in the agreement.
fn accept_parties(
    header: &RecordHeader,
    agreement: &Agreement,
    sender: MemberCode,
    fed: &Federation,
) -> Result<(usize, usize), DenyReason> {
    if party_index(agreement, fed.me).is_none() {
        return Err(DenyReason::SelfNotParty);
    }
    if party_index(agreement, sender).is_none() {
        return Err(DenyReason::SenderNotParty);
    }
    let Some(o) = party_index(agreement, header.origin) else {
        return Err(DenyReason::OriginNotParty);
    };
    if header.origin == fed.me {
        return Err(DenyReason::OriginIsSelf);
    }
    if sender != header.origin && !agreement.relay {
        return Err(DenyReason::RelayNotAllowed);
    }
    let Some(c) = category_index(agreement, &header.category) else {
        return Err(DenyReason::CategoryNotInAgreement);
    };
    Ok((o, c))
}

/// The fields the agreement itself withholds for records of `category` (its redacted
/// tags), whoever's the record: what a relay withholds of a projection it forwards, and
/// what no projection received under the agreement may reveal. An origin's share rules
/// may withhold more ([`decide`]); those only the origin knows.
pub fn agreement_withheld(agreement: &Agreement, category: &CategoryId, catalog: &Catalog) -> Withheld {
    match category_index(agreement, category).and_then(|c| agreement.compiled.categories.get(c)) {
        Some(cat) => cat.redacted.clone(),
        None => Withheld(Arc::new(withheld_fields(agreement, category, std::iter::empty(), catalog))),
    }
}

/// May this node forward another member's projection (`header`, with the `audience` its
/// origin signed) to `peer`? Only under an agreement that allows relaying, only to a
/// party in the audience other than the origin and this node. When it may, the answer is
/// the fields to withhold ([`agreement_withheld`]): a projection made before the
/// agreement redacted more leaves with today's redactions.
pub fn decide_relay(
    header: &RecordHeader,
    agreement: &Agreement,
    audience: &[MemberCode],
    peer: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Result<Withheld, DenyReason> {
    record_checks(header, agreement, now_ms)?;
    if !agreement.relay {
        return Err(DenyReason::RelayNotAllowed);
    }
    if party_index(agreement, fed.me).is_none() {
        return Err(DenyReason::SelfNotParty);
    }
    if peer == fed.me {
        return Err(DenyReason::PeerIsSelf);
    }
    if peer == header.origin {
        return Err(DenyReason::PeerIsOrigin);
    }
    if party_index(agreement, peer).is_none() {
        return Err(DenyReason::PeerNotParty);
    }
    if party_index(agreement, header.origin).is_none() {
        return Err(DenyReason::OriginNotParty);
    }
    if category_index(agreement, &header.category).is_none() {
        return Err(DenyReason::CategoryNotInAgreement);
    }
    if !audience.contains(&peer) {
        return Err(DenyReason::PeerNotInAudience);
    }
    Ok(agreement_withheld(agreement, &header.category, &fed.catalog))
}

// ---- explanations --------------------------------------------------------------------

/// How one step of an explanation came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The check passed.
    Pass,
    /// The check failed: this is the decision's reason.
    Fail,
    /// A rule that does not apply to this record.
    Skip,
    /// Information (what is withheld, which rule allowed).
    Note,
}

/// One step of an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How it came out.
    pub outcome: StepOutcome,
    /// What was checked, in words.
    pub text: String,
    /// The file and line of the rule or agreement concerned.
    pub at: Option<(PathBuf, usize)>,
}

/// A decision with the steps that led to it, for `tamga policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision (always the same as [`decide`]'s or [`decide_accept`]'s).
    pub decision: Decision,
    /// The steps, in the order they were checked.
    pub steps: Vec<Step>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.decision)?;
        for s in &self.steps {
            let mark = match s.outcome {
                StepOutcome::Pass => "ok  ",
                StepOutcome::Fail => "FAIL",
                StepOutcome::Skip => "skip",
                StepOutcome::Note => "    ",
            };
            write!(f, "  {mark} {}", s.text)?;
            if let Some((path, line)) = &s.at {
                write!(f, " ({}:{line})", path.display())?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

struct Steps {
    steps: Vec<Step>,
}

impl Steps {
    fn push(&mut self, outcome: StepOutcome, text: impl Into<String>, at: Option<(PathBuf, usize)>) {
        self.steps.push(Step { outcome, text: text.into(), at });
    }

    /// Record a check; `Err` stops the explanation with that reason.
    fn check(
        &mut self,
        ok: bool,
        pass: String,
        fail: String,
        at: Option<(PathBuf, usize)>,
        reason: DenyReason,
    ) -> Result<(), DenyReason> {
        if ok {
            self.push(StepOutcome::Pass, pass, at);
            Ok(())
        } else {
            self.push(StepOutcome::Fail, fail, at);
            Err(reason)
        }
    }
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn explain_record(
    s: &mut Steps,
    header: &RecordHeader,
    agreement: &Agreement,
    now_ms: i64,
) -> Result<(), DenyReason> {
    let at = Some((agreement.path.clone(), agreement.line));
    let c = header.classification;
    s.check(
        c.may_leave_node(),
        format!("the record is {c}: it may leave the node"),
        format!("the record is {c}: confidential and secret records never leave the node, whatever the policy says"),
        None,
        DenyReason::Classified(c),
    )?;
    s.check(
        header.created_ms <= now_ms.saturating_add(MAX_CREATED_AHEAD_MS),
        format!(
            "the record was created at {}, not more than 2 days ahead of this node's clock",
            fmt_ms(header.created_ms)
        ),
        format!(
            "the record says it was created at {}, more than 2 days after this node's clock ({})",
            fmt_ms(header.created_ms),
            fmt_ms(now_ms)
        ),
        None,
        DenyReason::CreatedInFuture,
    )?;
    let purge = agreement.purge_at_ms(header);
    s.check(
        now_ms < purge,
        format!(
            "the record is current until {} (retention {} days)",
            fmt_ms(purge),
            agreement.retention_days
        ),
        format!(
            "the record expired at {} (its own expiry or {} days of retention)",
            fmt_ms(purge),
            agreement.retention_days
        ),
        at.clone(),
        DenyReason::Expired,
    )?;
    let until =
        agreement.effective_until.map_or_else(|| "with no end date".to_owned(), |u| format!("until {u}"));
    s.check(
        agreement.in_force(now_ms),
        format!("agreement {} is in force (from {} {until})", agreement.id, agreement.effective_from),
        format!(
            "agreement {} is not in force at {} (from {} {until})",
            agreement.id,
            fmt_ms(now_ms),
            agreement.effective_from
        ),
        at.clone(),
        DenyReason::AgreementNotInForce,
    )?;
    s.check(
        agreement.backfill || header.created_ms >= agreement.from_ms,
        if agreement.backfill {
            "the agreement allows backfill of older records".to_owned()
        } else {
            "the record was created after the agreement came into force".to_owned()
        },
        format!(
            "the record was created on {}, before the agreement came into force, and the agreement does not allow backfill",
            fmt_ms(header.created_ms)
        ),
        at,
        DenyReason::BeforeAgreement,
    )
}

/// Why [`decide`] decides what it does for this record and peer: every check, and every
/// share rule for the agreement with its file and line.
pub fn explain(
    header: &RecordHeader,
    agreement: &Agreement,
    peer: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Explanation {
    let mut s = Steps { steps: Vec::new() };
    let decision = match explain_share(&mut s, header, agreement, peer, fed, now_ms) {
        Ok(withheld) => Decision::Allow { withheld },
        Err(r) => Decision::Deny(r),
    };
    Explanation { decision, steps: s.steps }
}

fn explain_share(
    s: &mut Steps,
    header: &RecordHeader,
    agreement: &Agreement,
    peer: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Result<Withheld, DenyReason> {
    let at = Some((agreement.path.clone(), agreement.line));
    explain_record(s, header, agreement, now_ms)?;
    let me = fed.me;
    s.check(
        header.origin == me,
        format!("the record is {me}'s own"),
        format!(
            "the record's origin is {}, not {me}: only relayed, never shared under {me}'s policy",
            header.origin
        ),
        None,
        DenyReason::NotOurs { origin: header.origin },
    )?;
    s.check(
        agreement.parties.contains(&me),
        format!("{me} is a party to {}", agreement.id),
        format!("{me} is not a party to {}", agreement.id),
        at.clone(),
        DenyReason::SelfNotParty,
    )?;
    s.check(
        peer != me,
        format!("{peer} is another member"),
        format!("{peer} is {me} itself"),
        None,
        DenyReason::PeerIsSelf,
    )?;
    s.check(
        agreement.parties.contains(&peer),
        format!("{peer} is a party to {}", agreement.id),
        format!("{peer} is not a party to {}", agreement.id),
        at.clone(),
        DenyReason::PeerNotParty,
    )?;
    let cat = &header.category;
    s.check(
        agreement.categories.contains(cat),
        format!("{} covers {cat}", agreement.id),
        format!("{} does not cover {cat}", agreement.id),
        at,
        DenyReason::CategoryNotInAgreement,
    )?;

    let policy = &fed.policy;
    let class = header.classification;
    let mut covering = false;
    let mut class_covered = false;
    let mut paused_by: Option<usize> = None;
    let mut allowed_by: Option<usize> = None;
    for rule in policy.share.iter().filter(|r| r.agreement == agreement.id) {
        let at = Some((policy.path.clone(), rule.line));
        if !rule.covers(&agreement.id, cat) {
            s.push(StepOutcome::Skip, format!("share rule does not cover {cat}"), at);
            continue;
        }
        covering = true;
        let has_class = rule.classifications.contains(&class);
        class_covered |= has_class;
        let paused = rule.except.contains(&peer);
        let names = rule.to.contains(peer);
        let text = match (paused, has_class, names) {
            (true, _, _) => format!("share rule pauses {peer} (except)"),
            (false, false, _) => format!("share rule does not cover {class} records"),
            (false, true, false) => {
                format!("share rule covers {cat} ({class}) but shares only to {}", rule.to)
            }
            (false, true, true) => {
                format!("share rule shares {cat} ({class}) to {}: includes {peer}", rule.to)
            }
        };
        let note = rule.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default();
        s.push(StepOutcome::Note, format!("{text}{note}"), at);
        if paused && paused_by.is_none() {
            paused_by = Some(rule.line);
        }
        if has_class && names && allowed_by.is_none() {
            allowed_by = Some(rule.line);
        }
    }
    let rule_at = |line: Option<usize>| line.map(|l| (policy.path.clone(), l));
    s.check(
        covering,
        format!("share rules cover {} / {cat}", agreement.id),
        format!("no share rule covers {} / {cat}: nothing is shared without a rule", agreement.id),
        Some((policy.path.clone(), 1)),
        DenyReason::NoShareRule,
    )?;
    s.check(
        class_covered,
        format!("a share rule covers {class} records"),
        format!("no share rule covers {class} records of {cat}"),
        None,
        DenyReason::ClassificationNotShared,
    )?;
    s.check(
        paused_by.is_none(),
        format!("{peer} is not paused"),
        format!("{peer} is paused: a pause in any rule for {} / {cat} stops everything", agreement.id),
        rule_at(paused_by),
        DenyReason::PeerPaused,
    )?;
    s.check(
        allowed_by.is_some(),
        format!("{peer} is in the audience of a share rule"),
        format!("no share rule covering {class} {cat} names {peer}"),
        rule_at(allowed_by),
        DenyReason::PeerNotInRuleAudience,
    )?;
    let fields = withheld_fields(
        agreement,
        cat,
        policy.share.iter().filter(|r| r.covers(&agreement.id, cat)),
        &fed.catalog,
    );
    let withheld = Withheld(Arc::new(fields));
    let tags: Vec<&str> = agreement.redact_tags.iter().map(String::as_str).collect();
    s.push(
        StepOutcome::Note,
        format!(
            "withheld: {withheld} (the agreement redacts tags [{}]; the share rules add their redact_fields and redact_tags)",
            tags.join(", ")
        ),
        None,
    );
    Ok(withheld)
}

/// Why [`decide_accept`] decides what it does for this inbound record: every check and
/// every accept rule for the agreement, with file and line. The decision is
/// `Allow` with nothing withheld when the record is accepted.
pub fn explain_accept(
    header: &RecordHeader,
    agreement: &Agreement,
    sender: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Explanation {
    let mut s = Steps { steps: Vec::new() };
    let decision = match explain_accept_steps(&mut s, header, agreement, sender, fed, now_ms) {
        Ok(()) => Decision::Allow { withheld: Withheld::default() },
        Err(r) => Decision::Deny(r),
    };
    Explanation { decision, steps: s.steps }
}

fn explain_accept_steps(
    s: &mut Steps,
    header: &RecordHeader,
    agreement: &Agreement,
    sender: MemberCode,
    fed: &Federation,
    now_ms: i64,
) -> Result<(), DenyReason> {
    let at = Some((agreement.path.clone(), agreement.line));
    explain_record(s, header, agreement, now_ms)?;
    let me = fed.me;
    let id = &agreement.id;
    let origin = header.origin;
    let party = |m: MemberCode| agreement.parties.contains(&m);
    s.check(
        party(me),
        format!("{me} is a party to {id}"),
        format!("{me} is not a party to {id}"),
        at.clone(),
        DenyReason::SelfNotParty,
    )?;
    s.check(
        party(sender),
        format!("the sender {sender} is a party to {id}"),
        format!("the sender {sender} is not a party to {id}"),
        at.clone(),
        DenyReason::SenderNotParty,
    )?;
    s.check(
        party(origin),
        format!("the origin {origin} is a party to {id}"),
        format!("the origin {origin} is not a party to {id}"),
        at.clone(),
        DenyReason::OriginNotParty,
    )?;
    s.check(
        origin != me,
        format!("the record is {origin}'s, not {me}'s own"),
        format!("the record is {me}'s own"),
        None,
        DenyReason::OriginIsSelf,
    )?;
    s.check(
        sender == origin || agreement.relay,
        if sender == origin {
            format!("sent by its origin {origin}")
        } else {
            format!("relayed by {sender}, and {id} allows relaying")
        },
        format!("relayed by {sender}, but {id} does not allow relaying"),
        at.clone(),
        DenyReason::RelayNotAllowed,
    )?;
    let cat = &header.category;
    s.check(
        agreement.categories.contains(cat),
        format!("{id} covers {cat}"),
        format!("{id} does not cover {cat}"),
        at,
        DenyReason::CategoryNotInAgreement,
    )?;
    let policy = &fed.policy;
    let mut covering = false;
    let mut accepted_by = None;
    for rule in policy.accept.iter().filter(|r| &r.agreement == id) {
        let at = Some((policy.path.clone(), rule.line));
        if !rule.covers(id, cat) {
            s.push(StepOutcome::Skip, format!("accept rule does not cover {cat}"), at);
            continue;
        }
        covering = true;
        let names = rule.from.contains(origin);
        s.push(
            StepOutcome::Note,
            format!(
                "accept rule takes {cat} from {}{}",
                rule.from,
                if names { "" } else { " (not the origin)" }
            ),
            at,
        );
        if names && accepted_by.is_none() {
            accepted_by = Some(rule.line);
        }
    }
    s.check(
        covering,
        format!("accept rules cover {id} / {cat}"),
        format!("no accept rule covers {id} / {cat}: nothing is accepted without a rule"),
        None,
        DenyReason::NoAcceptRule,
    )?;
    s.check(
        accepted_by.is_some(),
        format!("an accept rule takes {cat} from {origin}"),
        format!("no accept rule for {cat} names {origin} in `from`"),
        accepted_by.map(|l| (policy.path.clone(), l)),
        DenyReason::OriginNotAccepted,
    )
}

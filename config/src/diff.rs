//! `tamga policy diff`: what replacing one set of files by another would change in
//! practice, for one node — to whom each category goes (and at which classifications),
//! which fields are withheld, what is accepted from whom — in words an administrator
//! understands, and as data for `--json`.
//!
//! The comparison is made by asking [`decide()`] and [`decide_accept`] the same questions
//! of both federations, for a record of each category and shareable classification
//! created at `now_ms`, for every member of either roster and every agreement of either
//! set, so that it cannot disagree with what the node would do. A reason for "not shared"
//! comes from [`explain`], with the file and line of the rule or agreement concerned.
//! Changes of text that change nothing in practice (comments, a note) show only in the
//! list of files changed. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use tamga_protocol::{AgreementId, CategoryId, Classification, Digest, MemberCode, RecordHeader};

use crate::agreement::Agreement;
use crate::decide::{decide, decide_accept, explain, explain_accept, StepOutcome};
use crate::federation::Federation;

/// The classifications a policy can share (the others never leave a node).
const SHAREABLE: [Classification; 2] = [Classification::Public, Classification::NonConfidential];

/// What one node would share, accept and hold differently under a new set of files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    /// The node's member.
    pub member: MemberCode,
    /// The policy digest before.
    pub old_digest: Digest,
    /// The policy digest after.
    pub new_digest: Digest,
    /// Files whose bytes differ.
    pub files: Vec<FileChange>,
    /// Changes to the roster's members.
    pub members: Vec<String>,
    /// Changes to agreements, in words, by agreement.
    pub agreements: Vec<AgreementChange>,
    /// What this node sends out differently, by peer, category and agreement.
    pub share: Vec<ShareChange>,
    /// What this node accepts differently, by origin, category and agreement.
    pub accept: Vec<AcceptChange>,
}

/// A file whose bytes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Which file: `roster`, `catalog`, `policy`, or `agreement ID`.
    pub file: String,
    /// `changed`, `added` or `removed`.
    pub change: &'static str,
    /// Its path before.
    pub old: Option<PathBuf>,
    /// Its path after.
    pub new: Option<PathBuf>,
}

/// The changes of one agreement, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgreementChange {
    /// The agreement.
    pub agreement: AgreementId,
    /// What changed.
    pub changes: Vec<String>,
}

/// How one category goes to one peer under one agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Share {
    /// The classifications shared (empty: nothing is shared).
    pub classifications: Vec<Classification>,
    /// The fields withheld, when something is shared.
    pub withheld: Vec<String>,
    /// Why nothing is shared (or why a classification is not), in words.
    pub why_not: Option<String>,
    /// The file and line of the rule or agreement behind `why_not`.
    pub at: Option<String>,
}

impl Share {
    fn none(why: String, at: Option<String>) -> Share {
        Share { classifications: Vec::new(), withheld: Vec::new(), why_not: Some(why), at }
    }

    /// Whether anything is shared.
    pub fn shared(&self) -> bool {
        !self.classifications.is_empty()
    }
}

/// A change in what goes to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareChange {
    /// The receiving member.
    pub peer: MemberCode,
    /// Its name in the roster.
    pub peer_name: Option<String>,
    /// The category.
    pub category: CategoryId,
    /// The agreement.
    pub agreement: AgreementId,
    /// Before.
    pub before: Share,
    /// After.
    pub after: Share,
    /// Fields withheld after but not before (when shared both times).
    pub redactions_added: Vec<String>,
    /// Fields withheld before but not after (when shared both times).
    pub redactions_removed: Vec<String>,
}

/// A change in what is accepted from one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptChange {
    /// The origin member.
    pub origin: MemberCode,
    /// The category.
    pub category: CategoryId,
    /// The agreement.
    pub agreement: AgreementId,
    /// Accepted before.
    pub before: bool,
    /// Accepted after.
    pub after: bool,
    /// Why not, when no longer accepted.
    pub why_not: Option<String>,
}

impl PolicyDiff {
    /// Whether nothing changes in practice (files may still differ).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.agreements.is_empty()
            && self.share.is_empty()
            && self.accept.is_empty()
    }
}

fn fmt_at(path: &std::path::Path, line: usize) -> String {
    format!("{}:{line}", path.display())
}

fn header(me: MemberCode, category: &CategoryId, class: Classification, now_ms: i64) -> RecordHeader {
    RecordHeader {
        category: category.clone(),
        classification: class,
        origin: me,
        created_ms: now_ms,
        supersedes: None,
        expires_ms: None,
    }
}

fn share_state(fed: &Federation, id: &AgreementId, cat: &CategoryId, peer: MemberCode, now_ms: i64) -> Share {
    let Some(a) = fed.agreement(id) else {
        return Share::none(format!("agreement {id} is not in this set of files"), None);
    };
    if !a.covers(cat) {
        return Share::none(format!("{id} does not cover {cat}"), Some(fmt_at(&a.path, a.line)));
    }
    let mut out = Share { classifications: Vec::new(), withheld: Vec::new(), why_not: None, at: None };
    for class in SHAREABLE {
        let h = header(fed.me, cat, class, now_ms);
        match decide(&h, a, peer, fed, now_ms) {
            crate::Decision::Allow { withheld } => {
                out.classifications.push(class);
                out.withheld = withheld.iter().map(str::to_owned).collect();
            }
            crate::Decision::Deny(_) if out.why_not.is_none() => {
                let e = explain(&h, a, peer, fed, now_ms);
                let fail = e.steps.iter().rev().find(|s| s.outcome == StepOutcome::Fail);
                out.why_not = Some(match fail {
                    Some(s) if class == Classification::Public => s.text.clone(),
                    Some(s) => format!("{class} records: {}", s.text),
                    None => e.decision.to_string(),
                });
                out.at = fail.and_then(|s| s.at.as_ref()).map(|(p, l)| fmt_at(p, *l));
            }
            crate::Decision::Deny(_) => {}
        }
    }
    if out.classifications.len() == SHAREABLE.len() {
        out.why_not = None;
        out.at = None;
    }
    out
}

fn accept_state(
    fed: &Federation,
    id: &AgreementId,
    cat: &CategoryId,
    origin: MemberCode,
    now_ms: i64,
) -> (bool, Option<String>) {
    let Some(a) = fed.agreement(id) else {
        return (false, Some(format!("agreement {id} is not in this set of files")));
    };
    let mut h = header(origin, cat, Classification::Public, now_ms);
    h.origin = origin;
    match decide_accept(&h, a, origin, fed, now_ms) {
        Ok(()) => (true, None),
        Err(_) => {
            let e = explain_accept(&h, a, origin, fed, now_ms);
            let fail = e.steps.iter().rev().find(|s| s.outcome == StepOutcome::Fail);
            let text = fail.map_or_else(
                || e.decision.to_string(),
                |s| match &s.at {
                    Some((p, l)) => format!("{} ({})", s.text, fmt_at(p, *l)),
                    None => s.text.clone(),
                },
            );
            (false, Some(text))
        }
    }
}

fn set_words<T: Ord + fmt::Display + Clone>(what: &str, old: &[T], new: &[T]) -> Option<String> {
    let old: BTreeSet<T> = old.iter().cloned().collect();
    let new: BTreeSet<T> = new.iter().cloned().collect();
    let added: Vec<String> = new.difference(&old).map(|x| x.to_string()).collect();
    let removed: Vec<String> = old.difference(&new).map(|x| x.to_string()).collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("{what} added: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("{what} removed: {}", removed.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn until_words(a: &Agreement) -> String {
    a.effective_until.map_or_else(|| "no end date".to_owned(), |u| format!("ends on {u}"))
}

fn agreement_changes(old: Option<&Agreement>, new: Option<&Agreement>, now_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => out.push(format!(
            "added ({}; parties {}; {})",
            n.title,
            n.parties.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
            if n.in_force(now_ms) { "in force" } else { "not in force now" }
        )),
        (Some(_), None) => out.push("removed: nothing is shared or accepted under it any more".to_owned()),
        (Some(o), Some(n)) => {
            if o.digest != n.digest {
                out.push(
                    "text changed: every party must hold the same new file, or nothing is shared under it with a party whose copy differs"
                        .to_owned(),
                );
            } else if o.terms != n.terms {
                out.push(
                    "terms changed: the catalog's definition of a category it covers differs; every party must hold the same new catalog, or nothing is shared under it with a party whose catalog differs"
                        .to_owned(),
                );
            }
            if o.effective_from != n.effective_from {
                out.push(format!("in force from {} (was {})", n.effective_from, o.effective_from));
            }
            if o.effective_until != n.effective_until {
                out.push(format!("now {} (was: {})", until_words(n), until_words(o)));
            }
            match (o.in_force(now_ms), n.in_force(now_ms)) {
                (true, false) => out.push("no longer in force now: nothing is shared under it".to_owned()),
                (false, true) => out.push("now in force".to_owned()),
                _ => {}
            }
            out.extend(set_words("parties", &o.parties, &n.parties));
            out.extend(set_words("categories", &o.categories, &n.categories));
            let ot: Vec<&String> = o.redact_tags.iter().collect();
            let nt: Vec<&String> = n.redact_tags.iter().collect();
            out.extend(set_words("redacted tags", &ot, &nt));
            if o.relay != n.relay {
                out.push(
                    if n.relay { "relaying now allowed" } else { "relaying no longer allowed" }.to_owned(),
                );
            }
            if o.retention_days != n.retention_days {
                out.push(format!("retention {} days (was {})", n.retention_days, o.retention_days));
            }
            if o.backfill != n.backfill {
                out.push(
                    if n.backfill {
                        "records older than the agreement are now shared (backfill)"
                    } else {
                        "records older than the agreement are no longer shared (no backfill)"
                    }
                    .to_owned(),
                );
            }
        }
    }
    out
}

fn file_changes(old: &Federation, new: &Federation) -> Vec<FileChange> {
    let mut out = Vec::new();
    let mut push = |file: String, o: Option<(PathBuf, Digest)>, n: Option<(PathBuf, Digest)>| {
        let change = match (&o, &n) {
            (Some((_, a)), Some((_, b))) if a == b => return,
            (Some(_), Some(_)) => "changed",
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (None, None) => return,
        };
        out.push(FileChange { file, change, old: o.map(|x| x.0), new: n.map(|x| x.0) });
    };
    push(
        "roster".into(),
        Some((old.roster.path().to_path_buf(), old.roster.digest())),
        Some((new.roster.path().to_path_buf(), new.roster.digest())),
    );
    push(
        "catalog".into(),
        Some((old.catalog.path().to_path_buf(), old.catalog.digest())),
        Some((new.catalog.path().to_path_buf(), new.catalog.digest())),
    );
    let ids: BTreeSet<&AgreementId> = old.agreements.keys().chain(new.agreements.keys()).collect();
    for id in ids {
        let get = |f: &Federation| f.agreement(id).map(|a| (a.path.clone(), a.digest));
        push(format!("agreement {id}"), get(old), get(new));
    }
    push(
        "policy".into(),
        Some((old.policy.path.clone(), old.policy.digest)),
        Some((new.policy.path.clone(), new.policy.digest)),
    );
    out
}

fn member_changes(old: &Federation, new: &Federation) -> Vec<String> {
    let mut out = Vec::new();
    let codes: BTreeSet<MemberCode> = old.roster.codes().chain(new.roster.codes()).collect();
    for code in codes {
        match (old.roster.member(code), new.roster.member(code)) {
            (None, Some(m)) => out.push(format!("{code} ({}) joins the roster", m.name)),
            (Some(m), None) => {
                out.push(format!("{code} ({}) leaves the roster: its nodes may no longer connect", m.name))
            }
            (Some(o), Some(n)) => {
                if o.peer_ids != n.peer_ids {
                    out.push(format!(
                        "{code}: node identities (PeerIds) changed: only the new ones may connect"
                    ));
                }
                if o.addrs != n.addrs {
                    out.push(format!("{code}: addresses changed"));
                }
                if o.role != n.role {
                    out.push(format!("{code}: now {} (was {})", n.role, o.role));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// What replacing `old` by `new` changes in practice for the node of `new.me`, for
/// records created at `now_ms`.
pub fn diff(old: &Federation, new: &Federation, now_ms: i64) -> PolicyDiff {
    let me = new.me;
    let ids: BTreeSet<&AgreementId> = old.agreements.keys().chain(new.agreements.keys()).collect();
    let mut agreements = Vec::new();
    let mut share = Vec::new();
    let mut accept = Vec::new();
    for id in ids {
        let (o, n) = (old.agreement(id), new.agreement(id));
        let changes = agreement_changes(o, n, now_ms);
        if !changes.is_empty() {
            agreements.push(AgreementChange { agreement: id.clone(), changes });
        }
        let cats: BTreeSet<&CategoryId> = o.into_iter().chain(n).flat_map(|a| a.categories.iter()).collect();
        let members: BTreeSet<MemberCode> =
            o.into_iter().chain(n).flat_map(|a| a.parties.iter().copied()).filter(|&m| m != me).collect();
        for &cat in &cats {
            for &peer in &members {
                let before = share_state(old, id, cat, peer, now_ms);
                let after = share_state(new, id, cat, peer, now_ms);
                let practical = before.classifications != after.classifications
                    || (before.shared() && after.shared() && before.withheld != after.withheld);
                if practical {
                    let (added, removed) = if before.shared() && after.shared() {
                        let b: BTreeSet<&String> = before.withheld.iter().collect();
                        let a: BTreeSet<&String> = after.withheld.iter().collect();
                        (
                            a.difference(&b).map(|s| (*s).clone()).collect(),
                            b.difference(&a).map(|s| (*s).clone()).collect(),
                        )
                    } else {
                        (Vec::new(), Vec::new())
                    };
                    let name = new.roster.member(peer).or_else(|| old.roster.member(peer));
                    share.push(ShareChange {
                        peer,
                        peer_name: name.map(|m| m.name.clone()),
                        category: cat.clone(),
                        agreement: id.clone(),
                        before,
                        after,
                        redactions_added: added,
                        redactions_removed: removed,
                    });
                }
                let (b, _) = accept_state(old, id, cat, peer, now_ms);
                let (a, why_not) = accept_state(new, id, cat, peer, now_ms);
                if a != b {
                    accept.push(AcceptChange {
                        origin: peer,
                        category: cat.clone(),
                        agreement: id.clone(),
                        before: b,
                        after: a,
                        why_not: if a { None } else { why_not },
                    });
                }
            }
        }
    }
    share.sort_by(|x, y| (x.peer, &x.category, &x.agreement).cmp(&(y.peer, &y.category, &y.agreement)));
    accept.sort_by(|x, y| (x.origin, &x.category, &x.agreement).cmp(&(y.origin, &y.category, &y.agreement)));
    PolicyDiff {
        member: me,
        old_digest: old.policy_digest,
        new_digest: new.policy_digest,
        files: file_changes(old, new),
        members: member_changes(old, new),
        agreements,
        share,
        accept,
    }
}

fn classes(c: &[Classification]) -> String {
    c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" and ")
}

fn fields(f: &[String]) -> String {
    if f.is_empty() {
        "nothing".to_owned()
    } else {
        f.join(", ")
    }
}

impl ShareChange {
    /// The change in one line of words.
    pub fn describe(&self) -> String {
        let (b, a) = (&self.before, &self.after);
        let why = |s: &Share| match (&s.why_not, &s.at) {
            (Some(w), Some(at)) => format!(" — {w} ({at})"),
            (Some(w), None) => format!(" — {w}"),
            _ => String::new(),
        };
        match (b.shared(), a.shared()) {
            (false, true) => format!(
                "now shared ({} records), withholding {}",
                classes(&a.classifications),
                fields(&a.withheld)
            ),
            (true, false) => format!("no longer shared{}", why(a)),
            (true, true) => {
                let mut parts = Vec::new();
                if b.classifications != a.classifications {
                    parts.push(format!(
                        "now {} records only (was {}){}",
                        classes(&a.classifications),
                        classes(&b.classifications),
                        why(a)
                    ));
                }
                if !self.redactions_added.is_empty() {
                    parts.push(format!("now also withheld: {}", self.redactions_added.join(", ")));
                }
                if !self.redactions_removed.is_empty() {
                    parts.push(format!("no longer withheld: {}", self.redactions_removed.join(", ")));
                }
                format!("still shared; {}", parts.join("; "))
            }
            (false, false) => "not shared before or after".to_owned(),
        }
    }
}

fn short(d: &Digest) -> String {
    d.to_hex().chars().take(16).collect()
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let me = self.member;
        if self.old_digest == self.new_digest {
            writeln!(f, "policy of {me}: {} (the same files)", short(&self.new_digest))?;
        } else {
            writeln!(f, "policy of {me}: {} -> {}", short(&self.old_digest), short(&self.new_digest))?;
        }
        for c in &self.files {
            let path = c.new.as_ref().or(c.old.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
            writeln!(f, "  file {}: {} ({path})", c.file, c.change)?;
        }
        for m in &self.members {
            writeln!(f, "  roster: {m}")?;
        }
        for a in &self.agreements {
            writeln!(f, "  agreement {}: {}", a.agreement, a.changes.join("; "))?;
        }
        if self.share.is_empty() && self.accept.is_empty() {
            writeln!(f, "no change in what {me} shares or accepts")?;
            return Ok(());
        }
        if !self.share.is_empty() {
            writeln!(f, "what {me} shares:")?;
            let mut by_peer: BTreeMap<MemberCode, Vec<&ShareChange>> = BTreeMap::new();
            for c in &self.share {
                by_peer.entry(c.peer).or_default().push(c);
            }
            for (peer, changes) in by_peer {
                match changes.first().and_then(|c| c.peer_name.as_ref()) {
                    Some(name) => writeln!(f, "  to {peer} ({name}):")?,
                    None => writeln!(f, "  to {peer}:")?,
                }
                for c in changes {
                    writeln!(f, "    {} under {}: {}", c.category, c.agreement, c.describe())?;
                }
            }
        }
        if !self.accept.is_empty() {
            writeln!(f, "what {me} accepts:")?;
            for c in &self.accept {
                let what = if c.after { "now accepted".to_owned() } else { "no longer accepted".to_owned() };
                let why = c.why_not.as_ref().map(|w| format!(" — {w}")).unwrap_or_default();
                writeln!(f, "  {} from {} under {}: {what}{why}", c.category, c.origin, c.agreement)?;
            }
        }
        Ok(())
    }
}

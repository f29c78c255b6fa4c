//! The audit log's entries and its hash chain.
//!
//! Each entry is stored as the exact JSON bytes that were hashed. The chain:
//!
//! ```text
//! entry_n.prev = hash_{n-1}            (64 zeros for the first entry)
//! hash_n       = SHA-256(the stored JSON bytes of entry n)
//! ```
//!
//! Each entry is stored with its hash beside it, so a changed entry is named exactly (its
//! bytes no longer give its hash) and a changed hash is caught by the next entry's `prev`.
//! An auditor can recompute the chain with `sha256sum` over each exported entry. The writer
//! task is the only place that appends (it holds the head); [`verify_entries`] recomputes
//! the chain and names the first bad sequence number.

use serde::{Deserialize, Serialize};
use tamga_protocol::{AgreementId, CategoryId, Digest, MemberCode, RecordId};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The node started with a policy in force.
    NodeStarted,
    /// The node stopped cleanly.
    NodeStopped,
    /// A record was ingested through the local API.
    Ingested,
    /// A projection was built and queued for a peer.
    Sent,
    /// A peer acknowledged a projection with a signed receipt.
    Delivered,
    /// A projection from a peer was verified and stored.
    Received,
    /// Something a peer sent was refused.
    Rejected,
    /// Policy said no to sending a record to a peer.
    Withheld,
    /// An expired or revoked projection was purged.
    Purged,
    /// The origin revoked a record.
    Revoked,
    /// Feedback on a record was sent or received.
    Feedback,
    /// A roster peer connected.
    PeerConnected,
    /// A roster peer disconnected.
    PeerDisconnected,
    /// A connection from a peer outside the roster was refused.
    PeerRefused,
    /// A peer holds a different text of an agreement.
    DigestMismatch,
    /// A policy set was loaded and put in force.
    PolicyLoaded,
    /// A policy set was refused; the old one stays in force.
    PolicyRefused,
    /// An API call was refused (missing or wrong token, or a role that may not).
    ApiRefused,
    /// A signed checkpoint of this log.
    Checkpoint,
}

impl Action {
    /// The name used in files, queries and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NodeStarted => "node_started",
            Action::NodeStopped => "node_stopped",
            Action::Ingested => "ingested",
            Action::Sent => "sent",
            Action::Delivered => "delivered",
            Action::Received => "received",
            Action::Rejected => "rejected",
            Action::Withheld => "withheld",
            Action::Purged => "purged",
            Action::Revoked => "revoked",
            Action::Feedback => "feedback",
            Action::PeerConnected => "peer_connected",
            Action::PeerDisconnected => "peer_disconnected",
            Action::PeerRefused => "peer_refused",
            Action::DigestMismatch => "digest_mismatch",
            Action::PolicyLoaded => "policy_loaded",
            Action::PolicyRefused => "policy_refused",
            Action::ApiRefused => "api_refused",
            Action::Checkpoint => "checkpoint",
        }
    }
}

/// Whether what happened succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened as asked.
    Ok,
    /// It was refused (by policy, verification or authorisation).
    Refused,
    /// It failed.
    Failed,
}

/// An event to append: what the rest of the node hands the writer.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// What happened.
    pub action: Action,
    /// The peer concerned, if any.
    pub peer: Option<MemberCode>,
    /// A peer that is not a roster member (its PeerId), if any.
    pub peer_id: Option<String>,
    /// The record concerned, if any.
    pub record: Option<RecordId>,
    /// Its category.
    pub category: Option<CategoryId>,
    /// The agreement concerned.
    pub agreement: Option<AgreementId>,
    /// The policy digest the decision was made under (the writer fills the one in force when absent).
    pub policy: Option<Digest>,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: Option<String>,
}

impl AuditEvent {
    /// An event with only an action and an outcome.
    pub fn new(action: Action, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            action,
            peer: None,
            peer_id: None,
            record: None,
            category: None,
            agreement: None,
            policy: None,
            outcome,
            reason: None,
        }
    }

    /// Set the peer.
    pub fn peer(mut self, p: MemberCode) -> Self {
        self.peer = Some(p);
        self
    }

    /// Set the record and its category.
    pub fn record(mut self, id: RecordId, category: CategoryId) -> Self {
        self.record = Some(id);
        self.category = Some(category);
        self
    }

    /// Set the agreement.
    pub fn agreement(mut self, a: AgreementId) -> Self {
        self.agreement = Some(a);
        self
    }

    /// Set the reason.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }

    /// Set the policy digest the decision was made under.
    pub fn policy(mut self, d: Digest) -> Self {
        self.policy = Some(d);
        self
    }
}

/// One stored entry. Field order is the JSON order, and so part of the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Milliseconds since the epoch (the same instant, for range queries).
    pub time_ms: i64,
    /// What happened.
    pub action: Action,
    /// The peer concerned.
    pub peer: Option<MemberCode>,
    /// A non-roster peer's PeerId.
    pub peer_id: Option<String>,
    /// The record concerned.
    pub record: Option<RecordId>,
    /// Its category.
    pub category: Option<CategoryId>,
    /// The agreement concerned.
    pub agreement: Option<AgreementId>,
    /// Digest of the policy set in force.
    pub policy: Digest,
    /// The outcome.
    pub outcome: Outcome,
    /// Why.
    pub reason: Option<String>,
    /// Hash of the previous entry.
    pub prev: Digest,
}

/// Longest reason kept in an entry, in bytes; longer ones are cut (at a char boundary).
pub const MAX_REASON_BYTES: usize = 2048;

/// The first entry's `prev`.
pub const GENESIS: Digest = Digest([0; 32]);

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl AuditEntry {
    /// Build the entry that follows `prev` for an event.
    pub fn build(seq: u64, time_ms: i64, ev: AuditEvent, policy: Digest, prev: Digest) -> AuditEntry {
        let reason = ev.reason.map(|mut r| {
            if r.len() > MAX_REASON_BYTES {
                let mut cut = MAX_REASON_BYTES;
                while !r.is_char_boundary(cut) {
                    cut -= 1;
                }
                r.truncate(cut);
            }
            r
        });
        AuditEntry {
            seq,
            time: rfc3339(time_ms),
            time_ms,
            action: ev.action,
            peer: ev.peer,
            peer_id: ev.peer_id,
            record: ev.record,
            category: ev.category,
            agreement: ev.agreement,
            policy: ev.policy.unwrap_or(policy),
            outcome: ev.outcome,
            reason,
            prev,
        }
    }

    /// The bytes stored and hashed.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and enums to JSON cannot fail.
        serde_json::to_vec(self).expect("audit entries serialize")
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry's bytes are not a valid entry.
    #[error("entry {seq}: unreadable ({why})")]
    Unreadable {
        /// Where.
        seq: u64,
        /// Why.
        why: String,
    },
    /// Sequence numbers skip or repeat (an entry was deleted or reordered).
    #[error("entry {seq}: expected sequence number {seq}, found {found}")]
    Sequence {
        /// The expected number.
        seq: u64,
        /// The number found.
        found: u64,
    },
    /// An entry's bytes do not give the hash stored beside it (the entry was changed).
    #[error("entry {seq}: its contents do not match its hash (the entry was changed)")]
    Hash {
        /// Where.
        seq: u64,
    },
    /// An entry's `prev` is not the hash of the entry before it (a hash was rewritten).
    #[error("entry {seq}: its prev hash does not match entry {}", seq - 1)]
    Link {
        /// Where.
        seq: u64,
    },
    /// The head recorded by the node does not match the last entry (the tail was cut).
    #[error("the log ends at entry {last} but its recorded head is entry {head}")]
    Head {
        /// The last entry present.
        last: u64,
        /// The head the node recorded.
        head: u64,
    },
}

impl ChainError {
    /// The first bad sequence number.
    pub fn first_bad(&self) -> u64 {
        match self {
            ChainError::Unreadable { seq, .. }
            | ChainError::Sequence { seq, .. }
            | ChainError::Hash { seq }
            | ChainError::Link { seq } => *seq,
            ChainError::Head { last, .. } => last + 1,
        }
    }
}

/// Incremental chain verification: feed entries in order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next: u64,
    prev: Digest,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next: 1, prev: GENESIS }
    }
}

impl ChainVerifier {
    /// Check the next entry, stored under `key_seq` with hash `stored` and bytes `raw`.
    pub fn feed(&mut self, key_seq: u64, stored: &Digest, raw: &[u8]) -> Result<(), ChainError> {
        if key_seq != self.next {
            return Err(ChainError::Sequence { seq: self.next, found: key_seq });
        }
        let e: AuditEntry = serde_json::from_slice(raw)
            .map_err(|err| ChainError::Unreadable { seq: key_seq, why: err.to_string() })?;
        if e.seq != key_seq {
            return Err(ChainError::Sequence { seq: self.next, found: e.seq });
        }
        if Digest::of(raw) != *stored {
            return Err(ChainError::Hash { seq: key_seq });
        }
        if e.prev != self.prev {
            return Err(ChainError::Link { seq: key_seq });
        }
        self.prev = *stored;
        self.next += 1;
        Ok(())
    }

    /// The number of entries verified so far.
    pub fn verified(&self) -> u64 {
        self.next - 1
    }

    /// The hash of the last entry verified.
    pub fn head(&self) -> Digest {
        self.prev
    }
}

/// Verify a whole sequence of (key seq, stored hash, bytes) and that it ends at `head_seq`.
pub fn verify_entries(
    entries: impl IntoIterator<Item = (u64, Digest, Vec<u8>)>,
    head_seq: Option<u64>,
) -> Result<u64, ChainError> {
    let mut v = ChainVerifier::default();
    for (seq, hash, raw) in entries {
        v.feed(seq, &hash, &raw)?;
    }
    let last = v.verified();
    if let Some(h) = head_seq {
        if h != last {
            return Err(ChainError::Head { last, head: h });
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<(u64, Digest, Vec<u8>)> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let e = AuditEntry::build(
                    seq,
                    1_000 * seq as i64,
                    AuditEvent::new(Action::Ingested, Outcome::Ok).reason(format!("r{seq}")),
                    Digest([1; 32]),
                    prev,
                );
                let b = e.to_bytes();
                prev = Digest::of(&b);
                (seq, prev, b)
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_entries(chain(20), Some(20)), Ok(20));
    }

    #[test]
    fn every_tampering_names_the_first_bad_entry() {
        // One byte changed inside entry 7, or inside the last entry.
        for at in [6usize, 9] {
            let mut c = chain(10);
            let pos = c[at].2.iter().position(|b| *b == b'r').expect("has a reason");
            c[at].2[pos + 1] = b'X';
            assert_eq!(verify_entries(c, Some(10)).expect_err("detects").first_bad(), at as u64 + 1);
        }
        // Entry 7 changed and its stored hash recomputed: entry 8's link breaks.
        let mut c = chain(10);
        c[6].2[20] ^= 1;
        c[6].1 = Digest::of(&c[6].2);
        assert!(matches!(verify_entries(c, Some(10)), Err(ChainError::Link { seq: 8 })));
        // Deleted entry 4.
        let mut c = chain(10);
        c.remove(3);
        assert_eq!(verify_entries(c, Some(10)).expect_err("detects").first_bad(), 4);
        // Reordered 5 and 6.
        let mut c = chain(10);
        c.swap(4, 5);
        assert_eq!(verify_entries(c, Some(10)).expect_err("detects").first_bad(), 5);
        // Truncated tail.
        let mut c = chain(10);
        c.truncate(8);
        assert_eq!(verify_entries(c, Some(10)).expect_err("detects").first_bad(), 9);
    }
}

/// Query parameters for the audit log, as the API and the CLI take them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// RFC 3339 or a duration back from now (`24h`).
    pub since: Option<String>,
    /// RFC 3339 or a duration back from now.
    pub until: Option<String>,
    /// Member code.
    pub peer: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Agreement.
    pub agreement: Option<String>,
    /// Action name.
    pub action: Option<String>,
    /// Record id.
    pub record: Option<String>,
    /// Outcome name.
    pub outcome: Option<String>,
    /// Most entries returned.
    pub limit: Option<usize>,
}

/// Most entries one query returns.
pub const MAX_QUERY_ENTRIES: usize = 100_000;

/// A checked audit filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Entries at or after (ms).
    pub since_ms: Option<i64>,
    /// Entries at or before (ms).
    pub until_ms: Option<i64>,
    /// Peer.
    pub peer: Option<MemberCode>,
    /// Category.
    pub category: Option<CategoryId>,
    /// Agreement.
    pub agreement: Option<AgreementId>,
    /// Action.
    pub action: Option<Action>,
    /// Record.
    pub record: Option<RecordId>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Most entries.
    pub limit: usize,
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown {what} {s:?}"))
}

impl QueryParams {
    /// Check every parameter; errors name the bad one.
    pub fn into_filter(self, now_ms: i64) -> Result<Filter, String> {
        let time = |s: &Option<String>| s.as_deref().map(|v| crate::api::parse_since(v, now_ms)).transpose();
        Ok(Filter {
            since_ms: time(&self.since).map_err(|e| format!("since: {e}"))?,
            until_ms: time(&self.until).map_err(|e| format!("until: {e}"))?,
            peer: self.peer.as_deref().map(str::parse).transpose().map_err(|e| format!("peer: {e}"))?,
            category: self
                .category
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("category: {e}"))?,
            agreement: self
                .agreement
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("agreement: {e}"))?,
            action: self.action.as_deref().map(|a| parse_enum("action", a)).transpose()?,
            record: self.record.as_deref().map(str::parse).transpose().map_err(|e| format!("record: {e}"))?,
            outcome: self.outcome.as_deref().map(|o| parse_enum("outcome", o)).transpose()?,
            limit: self.limit.unwrap_or(MAX_QUERY_ENTRIES).min(MAX_QUERY_ENTRIES),
        })
    }
}

impl Filter {
    /// Whether an entry matches every filter set.
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms <= t)
            && self.peer.is_none_or(|p| e.peer == Some(p))
            && self.category.as_ref().is_none_or(|c| e.category.as_ref() == Some(c))
            && self.agreement.as_ref().is_none_or(|a| e.agreement.as_ref() == Some(a))
            && self.action.is_none_or(|a| e.action == a)
            && self.record.is_none_or(|r| e.record == Some(r))
            && self.outcome.is_none_or(|o| e.outcome == o)
    }
}

/// Entries matching a filter, in log order, each with its stored hash.
pub fn query(
    store: &crate::store::Store,
    f: &Filter,
) -> Result<Vec<ExportedEntry>, crate::store::StoreError> {
    let mut out = Vec::new();
    for item in store.audit_entries(1, u64::MAX) {
        let (seq, hash, raw) = item?;
        let Ok(e) = serde_json::from_slice::<AuditEntry>(&raw) else {
            return Err(crate::store::StoreError::Corrupt {
                key: format!("audit {seq}"),
                why: "unreadable entry".into(),
            });
        };
        if f.matches(&e) {
            out.push(ExportedEntry { hash, entry: e });
            if out.len() >= f.limit {
                break;
            }
        }
    }
    Ok(out)
}

/// An entry with its hash, as queries and exports give it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedEntry {
    /// SHA-256 of the entry's stored bytes.
    pub hash: Digest,
    /// The entry.
    pub entry: AuditEntry,
}

/// The result of verifying a node's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether the whole chain verified.
    pub ok: bool,
    /// Entries verified before the first problem (all of them when ok).
    pub entries: u64,
    /// The head hash verified.
    pub head: Digest,
    /// The first bad sequence number, if any.
    pub first_bad: Option<u64>,
    /// What was wrong.
    pub error: Option<String>,
}

/// Recompute the chain of a store's audit log.
pub fn verify_store(store: &crate::store::Store) -> VerifyReport {
    let mut v = ChainVerifier::default();
    let fail = |v: &ChainVerifier, e: ChainError| VerifyReport {
        ok: false,
        entries: v.verified(),
        head: v.head(),
        first_bad: Some(e.first_bad()),
        error: Some(e.to_string()),
    };
    for item in store.audit_entries(1, u64::MAX) {
        let (seq, hash, raw) = match item {
            Ok(x) => x,
            Err(e) => {
                let seq = v.verified() + 1;
                return fail(&v, ChainError::Unreadable { seq, why: e.to_string() });
            }
        };
        if let Err(e) = v.feed(seq, &hash, &raw) {
            return fail(&v, e);
        }
    }
    match store.audit_head() {
        Ok(Some((h, hash))) if h != v.verified() || hash != v.head() => {
            fail(&v, ChainError::Head { last: v.verified(), head: h })
        }
        Ok(None) if v.verified() > 0 => fail(&v, ChainError::Head { last: v.verified(), head: 0 }),
        Err(e) => fail(&v, ChainError::Unreadable { seq: v.verified() + 1, why: e.to_string() }),
        _ => VerifyReport { ok: true, entries: v.verified(), head: v.head(), first_bad: None, error: None },
    }
}

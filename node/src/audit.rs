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
//! task is the only place that appends (it holds the head; see [`crate::audit_index`] for
//! the append path, the indexes and the checkpoint schedule).
//!
//! Verification ([`verify_store_with`]) recomputes the chain — in parallel segments on a
//! long log, each link still checked once — and names the first bad sequence number (on a
//! running node, where the writer appends meanwhile, it goes on to the entries appended
//! until the head it reads names the last entry it verified); it then checks every
//! checkpoint the node signed (stored, and carried by `checkpoint` entries) and every
//! witnessed one (a peer's copy) against the hash the chain has at the checkpoint's
//! sequence number. A head hash commits to the whole prefix but cannot say
//! which entry in it changed, so a re-chained rewrite is localised between the last
//! checkpoint that matches and the first that does not ([`check_checkpoints`]); for a
//! witnessed checkpoint only other witnessed ones count as matching, since whoever
//! rewrote the log may hold the node's key and have re-signed its own.
//!
//! Asked to ([`verify_store_and_indexes`], `audit verify --indexes`), it then checks the
//! indexes' postings against the entries ([`crate::audit_index::verify_indexes`]); a log
//! whose entries are sound but whose indexes disagree does not verify either.
//!
//! To keep verification fast, [`ChainVerifier::feed`] reads `seq` and `prev` from the
//! fixed places the writer puts them instead of parsing each entry, and parses in full
//! only entries that carry a checkpoint or are not laid out that way (torn or foreign
//! bytes, which are then reported as unreadable).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tamga_protocol::{AgreementId, CategoryId, Checkpoint, Digest, MemberCode, Receipt, RecordId};

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
    /// A peer holds different terms of an agreement: its text, or the catalog's definition
    /// of a category it covers.
    DigestMismatch,
    /// A policy set was loaded and put in force.
    PolicyLoaded,
    /// A policy set was refused; the old one stays in force.
    PolicyRefused,
    /// An API call was refused (missing or wrong token, or a role that may not).
    ApiRefused,
    /// A backup of the store was taken through the API (`tamga backup`).
    BackupTaken,
    /// A signed checkpoint of this log.
    Checkpoint,
    /// Entries the node meant to append were dropped while its write groups kept failing
    /// (a full or failing disk); the reason says how many.
    EntriesLost,
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
            Action::BackupTaken => "backup_taken",
            Action::Checkpoint => "checkpoint",
            Action::EntriesLost => "entries_lost",
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

impl Outcome {
    /// The name used in files, queries and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
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
    /// The projection concerned: its stream's origin and its sequence number there.
    pub projection: Option<ProjectionRef>,
    /// A signed receipt (purge receipts; `delivered` entries of earlier builds).
    pub receipt: Option<Receipt>,
    /// The signed receipts of one push under one agreement (`delivered`).
    pub receipts: Vec<Receipt>,
    /// The projections of one stream one push or pull brought in (`received`).
    pub projections: Vec<TakenIn>,
    /// A signed checkpoint (the `checkpoint` action).
    pub checkpoint: Option<Checkpoint>,
}

/// One projection a `received` entry took in: its record and the record's category, and
/// where it sits in its stream (the agreement is the entry's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakenIn {
    /// The record.
    pub record: RecordId,
    /// Its category.
    pub category: CategoryId,
    /// The record's origin.
    pub origin: MemberCode,
    /// The projection's sequence number in (origin, agreement).
    pub seq: u64,
}

/// Most receipts, or projections taken in, that one entry lists: a push or pull of more
/// is audited in several entries, so that an entry stays within tens of kilobytes.
pub const MAX_LISTED: usize = 64;

/// `items` in runs of at most [`MAX_LISTED`], in order.
pub fn listed_runs<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut items = items.into_iter().peekable();
    let mut runs = Vec::new();
    while items.peek().is_some() {
        runs.push(items.by_ref().take(MAX_LISTED).collect());
    }
    runs
}

/// How an entry about a whole push or pull names the projections of one stream it is
/// about: "12 projections of RU, #40..#51", or "1 projection of RU, #40".
pub fn projections_of(origin: MemberCode, seqs: &[u64]) -> String {
    if let [one] = seqs {
        return format!("1 projection of {origin}, #{one}");
    }
    let first = seqs.iter().min().copied().unwrap_or(0);
    let last = seqs.iter().max().copied().unwrap_or(0);
    format!("{} projections of {origin}, #{first}..#{last}", seqs.len())
}

/// The value every item has, if there are items and they all have the same.
fn one<T: PartialEq>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.all(|x| x == first).then_some(first)
}

/// Where a projection sits: the (origin, agreement) stream it belongs to (the agreement is
/// the entry's own) and its sequence number in that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionRef {
    /// The record's origin.
    pub origin: MemberCode,
    /// The projection's sequence number in (origin, agreement).
    pub seq: u64,
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
            projection: None,
            receipt: None,
            receipts: Vec::new(),
            projections: Vec::new(),
            checkpoint: None,
        }
    }

    /// Set the projection (its stream's origin and sequence number).
    pub fn projection(mut self, origin: MemberCode, seq: u64) -> Self {
        self.projection = Some(ProjectionRef { origin, seq });
        self
    }

    /// Attach a signed receipt; also sets the record, agreement, projection and (when
    /// not set yet) the peer from it.
    pub fn receipt(mut self, r: &Receipt) -> Self {
        self.record = Some(r.record);
        self.agreement = Some(r.agreement.clone());
        self.projection = Some(ProjectionRef { origin: r.origin, seq: r.seq });
        self.peer = self.peer.or(Some(r.receiver));
        self.receipt = Some(r.clone());
        self
    }

    /// Attach the signed receipts one peer gave for one push under one agreement; also
    /// sets the peer and the agreement from them (the caller groups them so), and the
    /// record when they are all for one. The entry is found under each record its
    /// receipts name.
    pub fn receipts(mut self, rs: Vec<Receipt>) -> Self {
        if let Some(r) = rs.first() {
            self.peer = self.peer.or(Some(r.receiver));
            self.agreement = Some(r.agreement.clone());
        }
        self.record = one(rs.iter().map(|r| r.record));
        self.receipts = rs;
        self
    }

    /// List the projections of one stream taken in together; the entry also names their
    /// record when they are all of one, and their category when they share one.
    pub fn projections(mut self, ps: Vec<TakenIn>) -> Self {
        self.record = one(ps.iter().map(|p| p.record));
        self.category = one(ps.iter().map(|p| p.category.clone()));
        self.projections = ps;
        self
    }

    /// Attach a signed checkpoint.
    pub fn checkpoint(mut self, cp: Checkpoint) -> Self {
        self.checkpoint = Some(cp);
        self
    }

    /// Set a non-roster peer's PeerId.
    pub fn peer_id(mut self, id: impl Into<String>) -> Self {
        self.peer_id = Some(id.into());
        self
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
    /// The projection concerned (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionRef>,
    /// A signed receipt (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The signed receipts of one push under one agreement, in the order given (absent
    /// when none; `delivered` entries of this build, schema 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<Receipt>,
    /// The projections of one stream taken in together, in the order taken (absent when
    /// none; `received` entries of this build, schema 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projections: Vec<TakenIn>,
    /// A signed checkpoint (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// Hash of the previous entry. Always the last field, so that it ends the bytes.
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
            projection: ev.projection,
            receipt: ev.receipt,
            receipts: ev.receipts,
            projections: ev.projections,
            checkpoint: ev.checkpoint,
            prev,
        }
    }

    /// Whether the entry is about a record: it names it, holds a receipt for it, or took
    /// in a projection of it.
    pub fn names_record(&self, id: RecordId) -> bool {
        self.record == Some(id)
            || self.receipts.iter().any(|r| r.record == id)
            || self.projections.iter().any(|p| p.record == id)
    }

    /// Whether the entry is about a category: it names it, or took in a record of it.
    pub fn names_category(&self, c: &CategoryId) -> bool {
        self.category.as_ref() == Some(c) || self.projections.iter().any(|p| &p.category == c)
    }

    /// Every category the entry is about, each once.
    pub fn categories(&self) -> BTreeSet<&CategoryId> {
        self.category.iter().chain(self.projections.iter().map(|p| &p.category)).collect()
    }

    /// The signed receipts the entry keeps for a record (two when the record was shared
    /// again under the same agreement, with another number).
    pub fn receipts_for(&self, id: RecordId) -> impl Iterator<Item = &Receipt> {
        self.receipt.iter().chain(&self.receipts).filter(move |r| r.record == id)
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
    /// An entry's bytes are not a valid entry (torn, cut short, or not JSON).
    #[error("entry {seq}: unreadable ({why})")]
    Unreadable {
        /// Where.
        seq: u64,
        /// Why.
        why: String,
    },
    /// Sequence numbers skip or repeat (an entry was deleted or reordered).
    #[error("entry {seq}: missing or out of order (entry {found} is in its place)")]
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
    /// The last entry is not the one the recorded head names (it was replaced with its hash).
    #[error("entry {seq}: it is not the entry the recorded head names (the last entry was replaced)")]
    HeadHash {
        /// The last entry.
        seq: u64,
    },
    /// A signed checkpoint (the node's own, or one a peer witnessed) does not match the
    /// log: the log was rewritten after it was signed. A head hash cannot say which entry
    /// changed, only that one at or before `at` did after the last checkpoint that matches.
    #[error("{what} at entry {at} does not match the log: {why}; entries {first}..={at} were rewritten after it was signed (the last checkpoint that matches is at entry {})", first - 1)]
    Checkpoint {
        /// Which checkpoint ("checkpoint signed by RU", "checkpoint witnessed (from file)").
        what: String,
        /// The sequence number it covers.
        at: u64,
        /// The first entry not covered by a checkpoint that matches.
        first: u64,
        /// What differs.
        why: String,
    },
    /// A checkpoint covers the last entry of the log or one beyond it (the tail was cut and
    /// the head rewritten): a checkpoint of entry `at` is signed and stored in one batch with
    /// entry `at + 1`, which logs it, so a log that holds it holds that entry.
    #[error("{what} covers entry {at} and was logged in entry {}, but the log ends at entry {last}: entries {}..={} were removed", at.saturating_add(1), last + 1, at.saturating_add(1))]
    Truncated {
        /// Which checkpoint.
        what: String,
        /// The sequence number it covers.
        at: u64,
        /// The last entry present.
        last: u64,
    },
}

impl ChainError {
    /// The first bad sequence number.
    pub fn first_bad(&self) -> u64 {
        match self {
            ChainError::Unreadable { seq, .. }
            | ChainError::Sequence { seq, .. }
            | ChainError::Hash { seq }
            | ChainError::Link { seq }
            | ChainError::HeadHash { seq } => *seq,
            ChainError::Head { last, head } => (*last).min(*head) + 1,
            ChainError::Checkpoint { first, .. } => *first,
            ChainError::Truncated { last, .. } => last + 1,
        }
    }
}

/// The parts of an entry that verification reads; serde skips (but still checks the
/// syntax of) the rest, which keeps verification fast.
#[derive(Deserialize)]
struct Link {
    seq: u64,
    #[serde(default)]
    checkpoint: Option<Checkpoint>,
    prev: Digest,
}

/// Read `seq` and `prev` from where tamga writes them — `{"seq":N,` first and
/// `,"prev":"<64 hex>"}` last — without parsing the rest (verification speed: the bytes
/// are checked against their hash anyway). None when the bytes are not laid out so (a
/// torn or foreign entry), and the caller parses them in full.
fn fast_link(raw: &[u8]) -> Option<(u64, &[u8])> {
    const PREV: &[u8] = b",\"prev\":\"";
    let rest = raw.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b',') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()?;
    let tail = raw.get(raw.len().checked_sub(PREV.len() + 64 + 2)?..)?;
    if tail.get(..PREV.len())? != PREV || tail.get(PREV.len() + 64..)? != b"\"}" {
        return None;
    }
    Some((seq, tail.get(PREV.len()..PREV.len() + 64)?))
}

/// Whether an entry has a `checkpoint` field. In valid JSON the bytes `,"checkpoint":{`
/// cannot occur inside a string (its quotes would be escaped), so finding them is exact.
fn carries_checkpoint(raw: &[u8]) -> bool {
    const PAT: &[u8] = b",\"checkpoint\":{";
    // `checkpoint` is the last field before `prev`, and its object ends with a string
    // (the signature); a `projection` ends with a number, other fields are not objects.
    // Only an entry whose last field ends `"}` can carry one: scan just those.
    let end = raw.len().saturating_sub(9 + 64 + 2);
    if raw.get(end.saturating_sub(2)..end) != Some(b"\"}") {
        return false;
    }
    raw.iter().enumerate().any(|(i, b)| *b == b',' && raw.get(i..i + PAT.len()) == Some(PAT))
}

/// Incremental chain verification: feed entries in order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next: u64,
    prev: Digest,
    /// `prev` in lowercase hex, as the next entry must carry it.
    prev_hex: [u8; 64],
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next: 1, prev: GENESIS, prev_hex: GENESIS.hex_bytes() }
    }
}

impl ChainVerifier {
    /// Start after a known entry (`seq`, `hash`): to verify a range whose predecessor is trusted.
    pub fn after(seq: u64, hash: Digest) -> ChainVerifier {
        ChainVerifier { next: seq + 1, prev: hash, prev_hex: hash.hex_bytes() }
    }

    /// Check the next entry, stored under `key_seq` with hash `stored` and bytes `raw`.
    /// Returns the checkpoint the entry carries, if any.
    pub fn feed(
        &mut self,
        key_seq: u64,
        stored: &Digest,
        raw: &[u8],
    ) -> Result<Option<Checkpoint>, ChainError> {
        if key_seq != self.next {
            return Err(ChainError::Sequence { seq: self.next, found: key_seq });
        }
        let (seq, linked, checkpoint) = match fast_link(raw) {
            Some((seq, prev_hex)) if !carries_checkpoint(raw) => (seq, prev_hex == self.prev_hex, None),
            _ => {
                let e: Link = serde_json::from_slice(raw)
                    .map_err(|err| ChainError::Unreadable { seq: key_seq, why: err.to_string() })?;
                (e.seq, e.prev == self.prev, e.checkpoint)
            }
        };
        if seq != key_seq {
            return Err(ChainError::Sequence { seq: self.next, found: seq });
        }
        if Digest::of(raw) != *stored {
            return Err(ChainError::Hash { seq: key_seq });
        }
        if !linked {
            return Err(ChainError::Link { seq: key_seq });
        }
        self.prev = *stored;
        self.prev_hex = stored.hex_bytes();
        self.next += 1;
        Ok(checkpoint)
    }

    /// The number of entries verified so far (the last sequence number verified).
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

/// Where a checkpoint being checked came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointSource {
    /// Stored by this node when it signed it.
    Own,
    /// Carried by a `checkpoint` entry of the log.
    Entry(u64),
    /// From a witness file (a peer's copy).
    Witness,
}

/// Check signed checkpoints against the hashes of a verified chain.
///
/// `heads` maps each sequence number a checkpoint covers to the hash the chain has there.
/// Checkpoints are taken in sequence order; the first one that does not match is
/// reported, with the first entry after the last checkpoint that still vouches for the
/// log. For a witnessed checkpoint only other witnessed ones vouch: whoever rewrote the
/// log may hold the node's key and have re-signed its own checkpoints.
pub fn check_checkpoints(
    mut cps: Vec<(CheckpointSource, Checkpoint)>,
    heads: &std::collections::HashMap<u64, Digest>,
    last: u64,
) -> Result<(), ChainError> {
    cps.sort_by_key(|(src, cp)| (cp.seq, *src == CheckpointSource::Witness));
    let (mut good_any, mut good_witness) = (0u64, 0u64);
    for (src, cp) in cps {
        let what = match src {
            CheckpointSource::Own => format!("the checkpoint {} signed", cp.member),
            CheckpointSource::Entry(s) => format!("the checkpoint in entry {s}"),
            CheckpointSource::Witness => "a witnessed checkpoint".to_owned(),
        };
        // The node's checkpoint of entry s is stored in one batch with entry s+1, which
        // carries it (and peers are shown only stored ones): it proves entry s+1 existed.
        if cp.seq >= last {
            return Err(ChainError::Truncated { what, at: cp.seq, last });
        }
        if cp.seq == 0 {
            continue;
        }
        let vouched = if src == CheckpointSource::Witness { good_witness } else { good_any };
        match heads.get(&cp.seq) {
            Some(h) if *h == cp.head => {
                good_any = good_any.max(cp.seq);
                if src == CheckpointSource::Witness {
                    good_witness = good_witness.max(cp.seq);
                }
            }
            Some(h) => {
                return Err(ChainError::Checkpoint {
                    what,
                    at: cp.seq,
                    first: vouched + 1,
                    why: format!("entry {} now hashes to {}, the checkpoint says {}", cp.seq, h, cp.head),
                })
            }
            None => {
                return Err(ChainError::Unreadable {
                    seq: cp.seq,
                    why: "no hash was recorded for a checkpoint".into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, WriteBatch};

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
    fn the_fast_path_reads_what_the_writer_writes() {
        for (seq, _, raw) in chain(3) {
            let e: AuditEntry = serde_json::from_slice(&raw).expect("parses");
            assert_eq!(fast_link(&raw), Some((seq, e.prev.to_hex().as_bytes())));
            assert!(!carries_checkpoint(&raw));
        }
        let key = tamga_protocol::SigningKey::from_bytes(&[9; 32]);
        let cp = Checkpoint::sign("RU".parse().expect("valid"), 4, Digest([3; 32]), 0, &key);
        let ev = AuditEvent::new(Action::Checkpoint, Outcome::Ok)
            .reason("a \"checkpoint\":{ in text")
            .checkpoint(cp);
        let raw = AuditEntry::build(5, 0, ev, GENESIS, Digest([4; 32])).to_bytes();
        assert!(carries_checkpoint(&raw));
        let text = AuditEvent::new(Action::Sent, Outcome::Ok).reason(",\"checkpoint\":{");
        assert!(
            !carries_checkpoint(&AuditEntry::build(5, 0, text, GENESIS, GENESIS).to_bytes()),
            "inside a string"
        );
        assert_eq!(fast_link(b"{\"seq\":5,\"prev\":\"00"), None, "torn");
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
        // A torn last entry (its bytes cut short).
        let mut c = chain(10);
        let len = c[9].2.len();
        c[9].2.truncate(len / 2);
        let e = verify_entries(c, Some(10)).expect_err("detects");
        assert!(matches!(e, ChainError::Unreadable { seq: 10, .. }), "{e}");
    }

    #[test]
    fn entries_without_the_new_fields_still_read_and_old_bytes_stay_valid() {
        // An entry written before projection/receipt/checkpoint existed.
        let old = br#"{"seq":1,"time":"2026-01-01T00:00:00.000Z","time_ms":1767225600000,"action":"ingested","peer":null,"peer_id":null,"record":null,"category":null,"agreement":null,"policy":"0000000000000000000000000000000000000000000000000000000000000000","outcome":"ok","reason":null,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        let e: AuditEntry = serde_json::from_slice(old).expect("reads");
        assert_eq!(e.to_bytes(), old.to_vec(), "absent optional fields are not written");
        let mut v = ChainVerifier::default();
        assert_eq!(v.feed(1, &Digest::of(old), old), Ok(None));
    }

    #[test]
    fn checkpoints_localise_a_rewrite_between_the_last_good_one_and_the_first_bad_one() {
        let key = tamga_protocol::SigningKey::from_bytes(&[9; 32]);
        let me: MemberCode = "RU".parse().expect("valid");
        let c = chain(30);
        let heads: std::collections::HashMap<u64, Digest> = c.iter().map(|(s, h, _)| (*s, *h)).collect();
        let cp = |seq: u64, head: Digest| Checkpoint::sign(me, seq, head, 0, &key);
        let good = |s: u64| (CheckpointSource::Witness, cp(s, heads[&s]));
        assert_eq!(check_checkpoints(vec![good(10), good(20)], &heads, 30), Ok(()));
        let bad = (CheckpointSource::Witness, cp(20, Digest([7; 32])));
        let e = check_checkpoints(vec![good(10), bad, good(25)], &heads, 30).expect_err("detects");
        assert_eq!(e.first_bad(), 11, "{e}");
        // A forger holding the key re-signed its own checkpoint at 20: only witnesses vouch.
        let forged_own = (CheckpointSource::Own, cp(20, heads[&20]));
        let bad = (CheckpointSource::Witness, cp(20, Digest([7; 32])));
        let e = check_checkpoints(vec![good(10), forged_own, bad], &heads, 30).expect_err("detects");
        assert_eq!(e.first_bad(), 11, "{e}");
        let e = check_checkpoints(vec![good(10), good(20)], &heads, 15).expect_err("detects");
        assert!(matches!(e, ChainError::Truncated { at: 20, last: 15, .. }), "{e}");
        assert_eq!(e.first_bad(), 16);
        // A checkpoint of the last entry: the entry that logged it is gone.
        let e = check_checkpoints(vec![good(10), good(20)], &heads, 20).expect_err("detects");
        assert!(matches!(e, ChainError::Truncated { at: 20, last: 20, .. }), "{e}");
        assert_eq!(e.first_bad(), 21);
        assert!(e.to_string().contains("entries 21..=21 were removed"), "{e}");
    }

    /// A store in a temporary directory whose log holds `n` entries; its head.
    fn store_with_log(n: u64) -> (tempfile::TempDir, Store, (u64, Digest)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut head = (0, GENESIS);
        append_to(&store, &mut head, n, 1000);
        (dir, store, head)
    }

    /// Append `n` entries after `head` as the writer does ([`crate::audit_index::append`],
    /// then a commit), `per_commit` to a batch.
    fn append_to(store: &Store, head: &mut (u64, Digest), n: u64, per_commit: u64) {
        let mut left = n;
        while left > 0 {
            let now = per_commit.min(left);
            let mut batch = WriteBatch::default();
            for _ in 0..now {
                let seq = head.0 + 1;
                let ev = AuditEvent::new(Action::Ingested, Outcome::Ok).reason(format!("r{seq}"));
                crate::audit_index::append(&mut batch, head, ev, 1_000 * seq as i64, Digest([1; 32]));
            }
            store.commit(batch).expect("commits");
            left -= now;
        }
    }

    /// Sign a checkpoint of `head` and append its entry, as the writer does when one falls
    /// due (the checkpoint and its entry in one batch).
    fn sign_checkpoint(store: &Store, head: &mut (u64, Digest)) -> Checkpoint {
        let mut state = crate::audit_index::ChainState::open(store, *head).expect("reads the state");
        state.force = true;
        let key = tamga_protocol::SigningKey::from_bytes(&[9; 32]);
        let me: MemberCode = "RU".parse().expect("valid");
        let mut batch = WriteBatch::default();
        let now = 1_000 * (head.0 as i64 + 1);
        let (_, cp) = state.checkpoint_if_due(&mut batch, head, now, me, &key, Digest([1; 32])).expect("due");
        store.commit(batch).expect("commits");
        assert!(store.checkpoints().expect("reads").contains(&cp), "stored");
        cp
    }

    #[test]
    fn a_log_that_grows_while_it_is_verified_verifies() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_dir, store, head) = store_with_log(20_000);
        let stop = AtomicBool::new(false);
        let (reports, grown) = std::thread::scope(|s| {
            // The writer keeps appending, a checkpoint every 50 entries.
            let appender = s.spawn(|| {
                let mut head = head;
                while !stop.load(Ordering::Relaxed) {
                    append_to(&store, &mut head, 1, 1);
                    if head.0 % 50 == 0 {
                        sign_checkpoint(&store, &mut head);
                    }
                }
                head.0
            });
            let reports: Vec<VerifyReport> = (0..20).map(|_| verify_store(&store)).collect();
            stop.store(true, Ordering::Relaxed);
            (reports, appender.join().expect("the appender ran"))
        });
        for r in &reports {
            assert!(r.ok, "an honest log that grows verifies: {:?}", r.error);
        }
        assert!(grown > reports[0].entries, "the log grew while it was verified");
        let last = verify_store(&store);
        assert!(last.ok && last.entries == grown, "{last:?}");
        // A head past the entries that no longer moves is still a cut tail.
        store.tamper_audit_set(grown, None).expect("tampers");
        let cut = verify_store(&store);
        assert_eq!(cut.first_bad, Some(grown), "{cut:?}");
    }

    #[test]
    fn a_cut_tail_is_found_when_the_head_names_the_last_checkpointed_entry() {
        let (_dir, store, mut head) = store_with_log(10);
        let cp = sign_checkpoint(&store, &mut head);
        append_to(&store, &mut head, 5, 1);
        assert!(verify_store(&store).ok);
        // The checkpoint of entry s came in one batch with entry s+1, which carries it:
        // cut the tail from s+1 and rewrite the head to name entry s.
        let s = cp.seq;
        for seq in s + 1..=head.0 {
            store.tamper_audit_set(seq, None).expect("tampers");
        }
        let (hash, bytes) = store.audit_entry(s).expect("reads").expect("present");
        let mut batch = WriteBatch::default();
        batch.put_audit(s, &bytes, &hash);
        store.commit(batch).expect("commits");
        assert_eq!(store.audit_head().expect("reads"), Some((s, hash)));
        let r = verify_store(&store);
        assert!(!r.ok, "the stored checkpoint of entry {s} proves entry {} existed: {r:?}", s + 1);
        assert_eq!(r.first_bad, Some(s + 1), "{r:?}");
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
            && self.category.as_ref().is_none_or(|c| e.names_category(c))
            && self.agreement.as_ref().is_none_or(|a| e.agreement.as_ref() == Some(a))
            && self.action.is_none_or(|a| e.action == a)
            && self.record.is_none_or(|r| e.names_record(r))
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.record_of_category(e)
    }

    /// With both a record and a category asked, an entry that lists what it took in must
    /// list that record as of that category, not the one beside another of it.
    fn record_of_category(&self, e: &AuditEntry) -> bool {
        match (self.record, &self.category) {
            (Some(r), Some(c)) if !e.projections.is_empty() => {
                e.projections.iter().any(|p| p.record == r && &p.category == c)
            }
            _ => true,
        }
    }
}

/// An entry with its hash, as queries and exports give it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedEntry {
    /// SHA-256 of the entry's stored bytes.
    pub hash: Digest,
    /// The entry.
    pub entry: AuditEntry,
}

/// What `audit verify` checks besides the chain itself.
#[derive(Debug, Default, Clone)]
pub struct VerifyOptions {
    /// The member whose log this is, and the key it signs checkpoints with (from the
    /// roster). Without it, checkpoints are checked against the chain but their
    /// signatures are not.
    pub signer: Option<(MemberCode, Vec<tamga_protocol::VerifyingKey>)>,
    /// Checkpoints of this log that peers hold (`tamga audit checkpoints --member` on a peer).
    pub witness: Vec<Checkpoint>,
}

/// The result of verifying a node's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Whether the whole chain, every checkpoint and every witnessed checkpoint verified.
    pub ok: bool,
    /// Entries verified before the first problem (all of them when ok).
    pub entries: u64,
    /// The head hash verified.
    pub head: Digest,
    /// The first bad sequence number, if any.
    pub first_bad: Option<u64>,
    /// What was wrong.
    pub error: Option<String>,
    /// The node's own signed checkpoints checked.
    #[serde(default)]
    pub checkpoints: u64,
    /// Witnessed checkpoints checked.
    #[serde(default)]
    pub witnessed: u64,
    /// What the check of the indexes found, when it was asked for and the chain and the
    /// checkpoints verified (it says nothing of a log that does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<crate::audit_index::IndexReport>,
}

/// Logs shorter than this are verified on one thread.
pub const PARALLEL_VERIFY_MIN: u64 = 100_000;
/// Most threads one verification uses.
pub const MAX_VERIFY_THREADS: usize = 4;
/// Most times verification reads the head again and verifies the entries appended since
/// (on a running node the writer keeps appending while the log is verified). The last
/// round verifies up to the head it read, and the report is of the log that head names.
pub const MAX_VERIFY_ROUNDS: u32 = 64;

/// What one segment of the chain gave.
struct Segment {
    /// Where the segment's verification stopped.
    v: ChainVerifier,
    /// The first problem in it.
    error: Option<ChainError>,
    /// Checkpoints its entries carry.
    cps: Vec<(CheckpointSource, Checkpoint)>,
    /// Hashes at the sequence numbers checkpoints cover.
    heads: std::collections::HashMap<u64, Digest>,
}

impl Segment {
    fn panicked() -> Segment {
        Segment {
            v: ChainVerifier::default(),
            error: Some(ChainError::Unreadable { seq: 1, why: "verification thread failed".into() }),
            cps: Vec::new(),
            heads: Default::default(),
        }
    }
}

/// The verifier a segment starting at entry `lo` starts from: after the hash stored
/// beside entry `lo - 1` (a missing or damaged entry `lo - 1` is reported by the segment
/// before, which checks that hash against the entry's bytes).
fn segment_start(store: &crate::store::Store, lo: u64) -> ChainVerifier {
    if lo <= 1 {
        return ChainVerifier::default();
    }
    let prev = store.audit_entry(lo - 1).ok().flatten().map_or(GENESIS, |(h, _)| h);
    ChainVerifier::after(lo - 1, prev)
}

/// Verify the entries after those `start` verified, up to `hi` (to the end of the log
/// when `hi` is `u64::MAX`).
fn verify_segment(
    store: &crate::store::Store,
    start: ChainVerifier,
    hi: u64,
    head_seq: u64,
    wanted: &std::collections::HashSet<u64>,
) -> Segment {
    let lo = start.verified() + 1;
    let mut seg = Segment { v: start, error: None, cps: Vec::new(), heads: Default::default() };
    store.for_each_audit_entry(lo, hi, |item| {
        let (seq, hash, raw) = match item {
            Ok(x) => x,
            Err(e) => {
                seg.error = Some(ChainError::Unreadable { seq: seg.v.verified() + 1, why: e.to_string() });
                return false;
            }
        };
        let before = (seg.v.verified(), seg.v.head());
        match seg.v.feed(seq, &hash, raw) {
            Ok(Some(cp)) => {
                if cp.seq != before.0 {
                    let why = format!(
                        "entry {seq} carries a checkpoint of entry {}, not of entry {}",
                        cp.seq, before.0
                    );
                    seg.error = Some(ChainError::Unreadable { seq, why });
                    return false;
                }
                seg.heads.insert(before.0, before.1);
                seg.cps.push((CheckpointSource::Entry(seq), cp));
            }
            Ok(None) => {}
            Err(e) => {
                seg.error = Some(e);
                return false;
            }
        }
        if wanted.contains(&seq) {
            seg.heads.insert(seq, hash);
        }
        true
    });
    // A segment that is not the last must reach its end.
    if seg.error.is_none() && hi != u64::MAX && seg.v.verified() != hi {
        let next = seg.v.verified() + 1;
        seg.error = Some(match store.audit_entries(next, u64::MAX).next().and_then(|r| r.ok()) {
            Some((found, _, _)) => ChainError::Sequence { seq: next, found },
            None => ChainError::Head { last: next - 1, head: head_seq },
        });
    }
    seg
}

/// Recompute the chain of a store's audit log (no signatures, no witnesses).
pub fn verify_store(store: &crate::store::Store) -> VerifyReport {
    verify_store_with(store, &VerifyOptions::default())
}

/// Recompute the chain of a store's audit log, check every signed checkpoint the node
/// stored or logged, and every witnessed checkpoint given.
pub fn verify_store_with(store: &crate::store::Store, opts: &VerifyOptions) -> VerifyReport {
    verify_store_and(store, opts, false)
}

/// [`verify_store_with`], then, if the log verifies, check the indexes' postings against
/// the entries (`audit verify --indexes`: [`crate::audit_index::verify_indexes`]). Not
/// done by default: it parses every entry in full and reads every index key, several
/// times the work of the chain alone.
pub fn verify_store_and_indexes(store: &crate::store::Store, opts: &VerifyOptions) -> VerifyReport {
    verify_store_and(store, opts, true)
}

fn verify_store_and(store: &crate::store::Store, opts: &VerifyOptions, indexes: bool) -> VerifyReport {
    use std::collections::{HashMap, HashSet};
    let v = ChainVerifier::default();
    let fail = |v: &ChainVerifier, e: ChainError| VerifyReport {
        ok: false,
        entries: v.verified(),
        head: v.head(),
        first_bad: Some(e.first_bad()),
        error: Some(e.to_string()),
        checkpoints: 0,
        witnessed: 0,
        indexes: None,
    };
    let signed =
        |cp: &Checkpoint, keys: &[tamga_protocol::VerifyingKey]| keys.iter().any(|k| cp.verify(k).is_ok());
    // A witness that is not this node's, or not signed by it, proves nothing either way.
    for cp in &opts.witness {
        let why = match &opts.signer {
            Some((me, _)) if cp.member != *me => Some(format!("it is {}'s, not {me}'s", cp.member)),
            Some((me, keys)) if !signed(cp, keys) => Some(format!("it is not signed by {me}'s key")),
            _ => None,
        };
        if let Some(why) = why {
            return VerifyReport {
                ok: false,
                entries: 0,
                head: GENESIS,
                first_bad: None,
                error: Some(format!("the witnessed checkpoint of entry {} cannot be used: {why}", cp.seq)),
                checkpoints: 0,
                witnessed: 0,
                indexes: None,
            };
        }
    }
    let own = match store.checkpoints() {
        Ok(c) => c,
        Err(e) => return fail(&v, ChainError::Unreadable { seq: 1, why: format!("checkpoints: {e}") }),
    };
    let mut cps: Vec<(CheckpointSource, Checkpoint)> =
        own.iter().map(|c| (CheckpointSource::Own, c.clone())).collect();
    cps.extend(opts.witness.iter().map(|c| (CheckpointSource::Witness, c.clone())));
    let wanted: HashSet<u64> = cps.iter().map(|(_, c)| c.seq).collect();
    // The chain, in segments verified in parallel (each link checked exactly once: a
    // segment starts from the hash stored beside the entry before it, which the previous
    // segment checks against that entry's bytes).
    let head_seq = store.audit_head().ok().flatten().map_or(0, |h| h.0);
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_VERIFY_THREADS);
    let parts = if head_seq >= PARALLEL_VERIFY_MIN { parts } else { 1 };
    let bounds: Vec<(u64, u64)> = (0..parts as u64)
        .map(|k| {
            let lo = head_seq * k / parts as u64 + 1;
            let hi = if k + 1 == parts as u64 { u64::MAX } else { head_seq * (k + 1) / parts as u64 };
            (lo, hi)
        })
        .collect();
    let segments: Vec<Segment> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(lo, hi)| {
                let wanted = &wanted;
                scope.spawn(move || verify_segment(store, segment_start(store, lo), hi, head_seq, wanted))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Segment::panicked())).collect()
    });
    let mut heads: HashMap<u64, Digest> = HashMap::new();
    let mut v = ChainVerifier::default();
    for seg in segments {
        v = seg.v;
        if let Some(e) = seg.error {
            return fail(&v, e);
        }
        heads.extend(seg.heads);
        cps.extend(seg.cps);
    }
    // The head, read after the entries. An entry and the head that names it are committed
    // in one atomic batch, so on an honest log the head read now is at or past every
    // entry read before: a head past them names entries appended meanwhile (verify is run
    // on a running node), which are verified in turn, until the head read names the last
    // entry verified. A head below the entries, or one that names entries the log does not
    // hold, is an error.
    let mut rounds = 0;
    loop {
        let (h, hash) = match store.audit_head() {
            Ok(Some(head)) => head,
            Ok(None) if v.verified() == 0 => break,
            Ok(None) => return fail(&v, ChainError::Head { last: v.verified(), head: 0 }),
            Err(e) => return fail(&v, ChainError::Unreadable { seq: v.verified() + 1, why: e.to_string() }),
        };
        if h < v.verified() {
            return fail(&v, ChainError::Head { last: v.verified(), head: h });
        }
        if h == v.verified() {
            if hash != v.head() {
                return fail(&v, ChainError::HeadHash { seq: v.verified() });
            }
            break;
        }
        // Entries up to the head read are all committed: verify them, and past them
        // (then read the head again) unless the log kept growing for too many rounds,
        // when the log verified is the one this head names.
        rounds += 1;
        let last_round = rounds >= MAX_VERIFY_ROUNDS;
        let seg = verify_segment(store, v, if last_round { h } else { u64::MAX }, h, &wanted);
        v = seg.v;
        if let Some(e) = seg.error {
            return fail(&v, e);
        }
        heads.extend(seg.heads);
        cps.extend(seg.cps);
        if v.verified() < h {
            return fail(&v, ChainError::Head { last: v.verified(), head: h });
        }
        if last_round {
            if hash != v.head() {
                return fail(&v, ChainError::HeadHash { seq: v.verified() });
            }
            break;
        }
    }
    // Signatures: a checkpoint the node signed that does not verify was forged. Each is
    // stored and logged, so the same checkpoint seen twice is verified once.
    if let Some((me, keys)) = &opts.signer {
        let mut mine: Vec<&(CheckpointSource, Checkpoint)> =
            cps.iter().filter(|(src, _)| *src != CheckpointSource::Witness).collect();
        mine.sort_by_key(|(_, cp)| cp.seq);
        let mut good: HashMap<u64, &Checkpoint> = HashMap::new();
        for (src, cp) in mine {
            if good.get(&cp.seq).is_some_and(|g| *g == cp) {
                continue;
            }
            if cp.member == *me && signed(cp, keys) {
                good.insert(cp.seq, cp);
                continue;
            }
            let what = match src {
                CheckpointSource::Entry(s) => format!("the checkpoint in entry {s}"),
                _ => "a stored checkpoint".to_owned(),
            };
            let first = good.keys().copied().filter(|s| *s < cp.seq).max().unwrap_or(0) + 1;
            let why = format!("it is not signed by {me}'s key");
            return fail(&v, ChainError::Checkpoint { what, at: cp.seq, first, why });
        }
    }
    let witnessed = opts.witness.len() as u64;
    let checkpoints = own.len() as u64;
    if let Err(e) = check_checkpoints(cps, &heads, v.verified()) {
        return VerifyReport { checkpoints, witnessed, ..fail(&v, e) };
    }
    // The entries are sound: do the indexes say what they say? A bad posting is no bad
    // entry, so no first bad sequence number.
    let indexes = indexes.then(|| crate::audit_index::verify_indexes(store, v.verified()));
    let error = indexes.as_ref().filter(|r| !r.ok).map(|r| r.summary());
    VerifyReport {
        ok: error.is_none(),
        entries: v.verified(),
        head: v.head(),
        first_bad: None,
        error,
        checkpoints,
        witnessed,
        indexes,
    }
}

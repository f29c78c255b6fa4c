//! The store: the only module that names sled. Everything the node keeps lives in one
//! sled tree under a keyspace of one-byte prefixes, so that one [`WriteBatch`] — records,
//! indexes, projections, receipts and audit entries together — is applied atomically.
//! The bytes of the large values (records, projections, audit entries; marked * below)
//! lie in the values files beside the tree, and their keys hold only where (see below).
//!
//! | prefix | key                                    | value                         |
//! |--------|----------------------------------------|-------------------------------|
//! | `M`    | `schema`                               | schema version, u32 BE        |
//! | `R`    | record id                              | * [`StoredRecord`] (a live received one without its body, which its projection holds), with the (agreement, seq) of each of its projections |
//! | `C`    | category, 0, time, record id           | category index: time, record id, 40 bytes each, of the records of that category one commit added (up to [`MAX_RECORDS_PER_CATEGORY_KEY`]); the key's time and id are the latest of them (earlier builds: one key per record, empty value) |
//! | `S`    | origin, agreement, 0, seq / 64         | where projections `64·b ..` of the stream lie in the values files, 13 bytes each ([`blocks`]) |
//! | `Q`    | origin, agreement, 0                   | stream head, u64 BE (own: last seq assigned; received: contiguous) |
//! | `W`    | origin, agreement, 0, seq              | (seq known withheld from us)  |
//! | `U`    | origin, agreement, 0, seq              | the member whose word alone the `W` mark of that seq stands on, when it is not the stream's origin (the origin is asked again) |
//! | `D`    | origin, agreement, 0, seq              | (the `W` mark of that seq stands on this node's word: its accept policy declined it; asked again once the policy changes) |
//! | `M`    | `declined_under`                       | digest of the policy the `D` marks were made under |
//! | `G`    | origin, agreement, 0, seq              | seq purged (expired or revoked): its audience, or empty from earlier builds |
//! | `E`    | expiry time, origin, agreement, 0, seq | expiry index: seq, expiry time, 8 bytes each, per projection of the stream the key lists; the key's time is the earliest, its seq the first (earlier builds: one key per projection, empty value) |
//! | `F`    | record id, giver, time, 8 bytes of its signature | feedback received on own record (earlier builds: without the signature bytes) |
//! | `B`    | record id, origin, time, 8 bytes of its signature | feedback given, not yet delivered (see [`OutboxKey`]) |
//! | `A`    | audit seq                              | * entry hash, entry JSON bytes |
//! | `H`    | (empty)                                | audit head: seq u64 BE, hash  |
//! | `I`    | index kind, value, 0, first audit seq  | audit seqs, u64 BE each (`audit_index`) |
//! | `K`    | audit seq                              | own signed checkpoint         |
//! | `J`    | member, seq, head                      | checkpoint a peer showed us   |
//! | `M`    | `audit_index`                          | audit seq indexed through, u64 BE |
//! | `M`    | `records`                              | how many `R` keys there are, u64 BE |
//! | `M`    | `restored`                             | what a restore left to reconcile ([`Restored`]) |
//! | `M`    | `values`, lane, file number            | bytes of that values file the tree points at, u64 BE |
//! | `M`    | `zero`, lane, place                    | (a value no key points at, to overwrite once that is durable) |
//!
//! The rest of the store names a projection (*) by the key schemas before 7 kept it under,
//! `P`, origin, agreement, 0, seq: batches write those keys and backups hold those pairs;
//! sealing a batch turns them into changes of the `S` blocks ([`blocks`]).
//!
//! Two prefixes of earlier builds are no longer written, and stores that hold them keep
//! them unread: `T` (a time index of records; listing every category merges the category
//! index's per-category scans instead) and `V` (receipts; a receipt is kept in the
//! `delivered` or `purged` audit entry that records it, found through the audit log's
//! indexes (`audit_index`); since schema 4 a `delivered` entry keeps every receipt of one
//! push under one agreement). A third, `X` (record id, agreement: the seq of its
//! projection), was schema 2's; opening a schema 2 store moves it into the records
//! ([`StoredRecord::shares`]).
//!
//! Since schema 5 the values marked * are appended to the values files (the directory
//! `values` beside sled's own files, one series of files per keyspace: see [`values`]),
//! written once and never rewritten in place, and the key holds only where they lie (12
//! bytes). sled rewrites a page with every value in it each time the page changes; a
//! value outside is written once. Under those keys, a value of any other length is the
//! bytes themselves, as schemas before 5 kept them.
//!
//! Times are milliseconds since the epoch with the sign bit flipped, big-endian, so byte
//! order is time order. Values are encoded with `tamga_protocol::codec::encode_stored`.
//!
//! Nothing here decides anything; the writer task is the only caller of [`Store::commit`].

mod blocks;
mod values;

use blocks::Block;
use values::{Lane, Place};

use std::borrow::Cow;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tamga_protocol::codec::{decode_stored, encode_stored};
use tamga_protocol::{
    AgreementId, CategoryId, Checkpoint, Digest, Envelope, MemberCode, Projection, RecordHeader, RecordId,
    Salt, StreamKey, Value,
};

/// The on-disk schema this build reads and writes. Schema 8: the audit log indexes what a
/// `received` or `delivered` entry lists by stream number (`I` kind `n`), not by record,
/// so a schema 7 build would not find those entries by record; nothing moves on opening.
/// Schema 7: the places of a stream's projections are listed 64 to a key (`S`), where
/// schema 6 kept one key each (`P`), which schema 7 moves on opening. Schema 6: a category
/// index key lists the records of one category a commit added, which schema 5 builds read
/// as one record. Schema 5: the bytes of the records, projections and audit entries are in the values
/// files, which schema 4 builds do not read. Schema 4: an audit entry lists the receipts
/// of a whole push (`delivered`) or the projections one push or pull took in
/// (`received`), which schema 3 builds do not read. Schema 3: a record lists its
/// projections (schema 2 kept them under `X`).
pub const SCHEMA_VERSION: u32 = 8;

/// The key of the schema marker: the store's schema, 4 bytes big-endian.
pub const SCHEMA_KEY: &[u8] = b"Mschema";

/// The oldest schema this build upgrades from, in place, on open (and after restoring a
/// backup): every one from it up to [`SCHEMA_VERSION`].
pub const UPGRADES_FROM: u32 = 2;

/// Whether this build reads a store or backup of schema `found`, upgrading it if older.
pub fn schema_readable(found: u32) -> bool {
    (UPGRADES_FROM..=SCHEMA_VERSION).contains(&found)
}

/// Why the store failed. The caller refuses the operation; nothing was half-applied.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory was written by another schema version.
    #[error("the data directory has schema version {found}; this build reads version {expected}, and upgrades the older versions from {UPGRADES_FROM} in place, but no other (a backup, too, restores only into a build that reads or upgrades its version): run a build of schema version {found}")]
    Schema {
        /// The version found on disk.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The storage engine failed (disk full, read-only, I/O error, lock held).
    #[error("storage: {0}")]
    Engine(String),
    /// A stored value does not decode (corruption).
    #[error("corrupt stored value under {key}: {why}")]
    Corrupt {
        /// The key, hex.
        key: String,
        /// The decode error.
        why: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

/// Where a stored record came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Ingested through the local API.
    Local,
    /// Received from a peer under an agreement.
    Received {
        /// The peer that delivered it.
        from: MemberCode,
        /// The agreement of the share its body is read from: the first it was received
        /// under, or, once that share expired, another one still held.
        agreement: AgreementId,
    },
}

/// A record as this node holds it: whole for its own, the revealed fields for others'.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The record id.
    pub id: RecordId,
    /// The header.
    pub header: RecordHeader,
    /// The body fields held (all for own records, revealed ones for received).
    pub body: BTreeMap<String, Value>,
    /// How many fields were withheld from this node.
    pub withheld: u32,
    /// Where it came from.
    pub source: Source,
    /// When this node stored it.
    pub stored_ms: i64,
    /// The salts of every body field (own records only; empty for received ones).
    pub salts: BTreeMap<String, Salt>,
    /// Live, or a tombstone: revoked by its origin, or expired (body purged).
    pub state: RecordState,
    /// Its projections: (agreement, seq in the origin's stream of that agreement), in the
    /// order they were made or received (by agreement for a store upgraded from schema 2).
    /// Usually one per agreement; more when the origin
    /// projected it again for members added to its audience since. Kept in the record,
    /// not under keys of their own: a sled key costs far more to write than its bytes.
    pub shares: Vec<(AgreementId, u64)>,
}

/// A record as schema 2 stored it: without its shares, which were keys of their own.
#[derive(Deserialize)]
struct StoredRecordV2 {
    id: RecordId,
    header: RecordHeader,
    body: BTreeMap<String, Value>,
    withheld: u32,
    source: Source,
    stored_ms: i64,
    salts: BTreeMap<String, Salt>,
    state: RecordState,
}

impl StoredRecordV2 {
    fn with_shares(self, shares: Vec<(AgreementId, u64)>) -> StoredRecord {
        let StoredRecordV2 { id, header, body, withheld, source, stored_ms, salts, state } = self;
        StoredRecord { id, header, body, withheld, source, stored_ms, salts, state, shares }
    }
}

/// Whether a record's body is still held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Held.
    #[default]
    Live,
    /// Revoked by its origin; a received copy's body is purged.
    Revoked,
    /// Its retention expired; a received copy's body is purged.
    Expired,
}

impl StoredRecord {
    /// An own record as it was ingested: its header, body and salts, to project (a
    /// received record has no salts, and cannot be).
    pub fn salted(&self) -> tamga_protocol::SaltedRecord {
        tamga_protocol::SaltedRecord {
            id: self.id,
            record: tamga_protocol::Record { header: self.header.clone(), body: self.body.clone() },
            salts: self.salts.clone(),
        }
    }
}

impl Source {
    /// The JSON form the API shows: `{"kind": "local"}` or `{"kind": "received", ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Source::Local => serde_json::json!({ "kind": "local" }),
            Source::Received { from, agreement } => {
                serde_json::json!({ "kind": "received", "from": from.as_str(), "agreement": agreement.as_str() })
            }
        }
    }
}

/// Filters for listing records. All are optional and combine with AND.
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    /// Only this category.
    pub category: Option<CategoryId>,
    /// Only this origin.
    pub origin: Option<MemberCode>,
    /// Only records created at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only records listed after this place: the next page of a listing.
    pub after: Option<ListCursor>,
}

/// A place in the newest-first order of records, (creation time, id): the page of a
/// listing that follows a record starts after the cursor [`ListCursor::at`] it. Written
/// as 80 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor(CategoryEntry);

impl ListCursor {
    /// The cursor at a record listed.
    pub fn at(r: &StoredRecord) -> ListCursor {
        ListCursor(CategoryEntry::new(r.header.created_ms, &r.id))
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0 .0))
    }
}

impl std::str::FromStr for ListCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a cursor a listing gave: {} hex digits", 2 * CategoryEntry::LEN);
        let bytes = hex::decode(s).map_err(|_| bad())?;
        CategoryEntry::of(&bytes).map(ListCursor).ok_or_else(bad)
    }
}

fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Most records one category index key lists: a commit adding more of one category
/// writes more keys.
pub const MAX_RECORDS_PER_CATEGORY_KEY: usize = 256;

/// The keys of one category's index: `C`, category, 0.
fn category_prefix(c: &CategoryId) -> Vec<u8> {
    key(&[b"C", c.as_str().as_bytes(), &[0]])
}

/// A record in the category index: its time (as [`time_key`]) then its id, so that byte
/// order is (time, id) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CategoryEntry([u8; CategoryEntry::LEN]);

impl CategoryEntry {
    const LEN: usize = 8 + 32;

    fn new(at_ms: i64, id: &RecordId) -> CategoryEntry {
        let mut e = [0; CategoryEntry::LEN];
        e[..8].copy_from_slice(&time_key(at_ms));
        e[8..].copy_from_slice(&id.0);
        CategoryEntry(e)
    }

    fn of(b: &[u8]) -> Option<CategoryEntry> {
        <[u8; CategoryEntry::LEN]>::try_from(b).ok().map(CategoryEntry)
    }

    fn id(&self) -> RecordId {
        let mut id = [0; 32];
        id.copy_from_slice(&self.0[8..]);
        Digest(id)
    }
}

fn bad_category_key(k: &[u8]) -> StoreError {
    StoreError::Corrupt { key: hex::encode(k), why: "bad category index key".into() }
}

/// The latest record a category index key `k` (its prefix `len` bytes long) lists.
fn category_latest(k: &[u8], len: usize) -> Result<CategoryEntry, StoreError> {
    k.get(len..).and_then(CategoryEntry::of).ok_or_else(|| bad_category_key(k))
}

/// The records a category index key `k` (its prefix `len` bytes long) lists: those of its
/// value, or the key's own from a build that wrote one key per record (empty value).
fn category_entries(k: &[u8], len: usize, v: &[u8]) -> Result<Vec<CategoryEntry>, StoreError> {
    let bad = || bad_category_key(k);
    let latest = category_latest(k, len)?;
    if v.is_empty() {
        return Ok(vec![latest]);
    }
    if !v.len().is_multiple_of(CategoryEntry::LEN) {
        return Err(bad());
    }
    let listed: Vec<CategoryEntry> = v.chunks(CategoryEntry::LEN).filter_map(CategoryEntry::of).collect();
    // None later than the key says: the listing relies on it.
    if listed.iter().any(|e| *e > latest) {
        return Err(bad());
    }
    Ok(listed)
}

/// The time [`time_key`] made `b` of.
fn time_of(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// A stream's keys in the keyspace `space` (`P`, `Q`, `W`, `U`, `G`, `S`): space, origin,
/// agreement, 0.
fn stream_space(space: &[u8; 1], s: &StreamKey) -> Vec<u8> {
    key(&[space, &s.origin.as_bytes(), s.agreement.as_str().as_bytes(), &[0]])
}

fn stream_prefix(s: &StreamKey) -> Vec<u8> {
    stream_space(b"P", s)
}

/// A projection's key, as a batch writes it and a backup holds it (see [`blocks`]).
fn projection_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[&stream_prefix(s), &seq.to_be_bytes()])
}

/// The block key of projection `seq` of a stream.
fn projection_block_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    blocks::block_key(&stream_space(b"S", s), seq)
}

fn stream_meta_key(s: &StreamKey) -> Vec<u8> {
    stream_space(b"Q", s)
}

fn gone_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[&stream_space(b"G", s), &seq.to_be_bytes()])
}

fn withheld_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[&stream_space(b"W", s), &seq.to_be_bytes()])
}

fn unconfirmed_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[&stream_space(b"U", s), &seq.to_be_bytes()])
}

fn declined_key(s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[&stream_space(b"D", s), &seq.to_be_bytes()])
}

fn expiry_key(expires_ms: i64, s: &StreamKey, seq: u64) -> Vec<u8> {
    key(&[
        b"E",
        &time_key(expires_ms),
        &s.origin.as_bytes(),
        s.agreement.as_str().as_bytes(),
        &[0],
        &seq.to_be_bytes(),
    ])
}

/// The expiry index key of a list of (seq, expiry ms) of one stream: its earliest expiry,
/// its first seq. `None` for an empty list.
fn expiry_list_key(s: &StreamKey, list: &[(u64, i64)]) -> Option<Vec<u8>> {
    let earliest = list.iter().map(|&(_, at)| at).min()?;
    Some(expiry_key(earliest, s, list.first()?.0))
}

fn expiry_list_value(list: &[(u64, i64)]) -> Vec<u8> {
    list.iter().flat_map(|&(seq, at)| seq.to_be_bytes().into_iter().chain(time_key(at))).collect()
}

/// A sled key costs far more to write than its bytes, so the expiry index holds the
/// projections of one stream put (or indexed again, [`WriteBatch::index_expiry`]) by one
/// batch under one key, up to this many.
pub const MAX_EXPIRIES_PER_KEY: usize = 512;

/// Where a walk over the projections held ([`Store::walk_projections`]) goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkCursor {
    /// The block key it is in.
    block: Vec<u8>,
    /// The first offset in it not yet read.
    from: u8,
}

/// One expiry index key with entries due: what the sweep purges, and what stays listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueExpiries {
    key: Vec<u8>,
    /// The stream.
    pub stream: StreamKey,
    /// Its sequence numbers due.
    pub due: Vec<u64>,
    /// Its entries not yet due: (seq, expiry ms).
    rest: Vec<(u64, i64)>,
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    encode_stored(v).map_err(|e| StoreError::Engine(format!("encode: {e}")))
}

/// Whether a record's body is its projection's revealed fields, kept only there: a live
/// received record's. (A store written before this kept the body in the record too; such a
/// record is read as it was stored.)
fn body_in_projection(r: &StoredRecord) -> bool {
    matches!(r.source, Source::Received { .. }) && r.state == RecordState::Live
}

fn dec<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    decode_stored(v).map_err(|e| StoreError::Corrupt { key: hex::encode(k), why: e.to_string() })
}

fn u64_of(k: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt { key: hex::encode(k), why: "not 8 bytes".into() })
}

/// Where one piece of feedback given waits in the outbox (`B`): its record id, its origin,
/// its time and the first 8 bytes of its signature, which covers every field — so each
/// feedback has its own entry, however many are given on one record. A store written
/// before this kept one entry per record and origin, under `B`, record id, origin; such an
/// entry is read with that key and removed by it. Opaque outside the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboxKey(Vec<u8>);

impl OutboxKey {
    /// The key a feedback given by this build is kept under.
    pub fn of(f: &tamga_protocol::Feedback) -> OutboxKey {
        OutboxKey(feedback_key(b"B", f, f.origin))
    }
}

/// A feedback's key in `space` (`B` under its origin, `F` under its giver): the record id,
/// that member, its time and the first 8 bytes of its signature.
fn feedback_key(space: &[u8; 1], f: &tamga_protocol::Feedback, member: MemberCode) -> Vec<u8> {
    key(&[space, &f.record.0, &member.as_bytes(), &time_key(f.time_ms), &f.signature.0[..8]])
}

/// What a restore left to reconcile. A backup is older than the node it was taken of, so
/// the peers may hold numbers of the node's own streams that the backup does not, and the
/// restored node, numbering on from the backup, gives those numbers again to other
/// records. Until a stream is reconciled with a peer, the node takes back what the peer
/// holds of it above the backup's head (see the writer's `take_back`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Each stream's head in the backup (a stream not listed had none).
    pub heads: Vec<(StreamKey, u64)>,
    /// How far each stream has been reconciled with each peer since.
    pub reconciled: Vec<(MemberCode, StreamKey, Reconciled)>,
    /// Shares and revocations made since the restore whose numbers a peer holds with
    /// other records (or purged), by that peer, stream and record, with their envelopes:
    /// to be made again at new numbers once that peer's numbers are all taken back.
    pub displaced: Vec<(MemberCode, StreamKey, RecordId, Envelope)>,
    /// Numbers given since the restore that a peer holds with other records, which were
    /// taken back: a copy of what this node gave them since, from another peer, is stale.
    pub given: Vec<(StreamKey, u64)>,
}

/// How far a stream has been reconciled with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reconciled {
    /// Not at all, or not that this op records.
    No,
    /// Through this number of the stream.
    Through(u64),
    /// All of what the peer held of it.
    All,
}

impl Restored {
    /// Where reconciling `stream` with `peer` goes on from: after the stream's head in the
    /// backup or after the number it has been reconciled through, whichever is higher;
    /// `None` once it is reconciled.
    pub fn floor(&self, peer: MemberCode, stream: &StreamKey) -> Option<u64> {
        let head = self.backup_head(stream);
        match self.reconciled.iter().find(|(p, s, _)| *p == peer && s == stream).map(|(_, _, r)| *r) {
            Some(Reconciled::All) => None,
            Some(Reconciled::Through(n)) => Some(head.max(n)),
            _ => Some(head),
        }
    }

    /// The head `stream` had in the backup: numbers above it were given since.
    pub fn backup_head(&self, stream: &StreamKey) -> u64 {
        self.heads.iter().find(|(s, _)| s == stream).map_or(0, |(_, h)| *h)
    }

    /// Whether number `seq` of `stream`, given since the restore, was taken over by a
    /// peer's record ([`Restored::given`]).
    pub fn is_given(&self, stream: &StreamKey, seq: u64) -> bool {
        self.given.iter().any(|(s, n)| s == stream && *n == seq)
    }

    /// Record how far `stream` is reconciled with `peer`.
    pub fn reconcile(&mut self, peer: MemberCode, stream: &StreamKey, how_far: Reconciled) {
        self.reconciled.retain(|(p, s, _)| !(*p == peer && s == stream));
        self.reconciled.push((peer, stream.clone(), how_far));
    }
}

const RESTORED_KEY: &[u8] = b"Mrestored";
const DECLINED_UNDER_KEY: &[u8] = b"Mdeclined_under";

/// A set of writes applied atomically by [`Store::commit`]. Until then it can be read
/// through ([`Store::pending`]) and its latest writes undone ([`WriteBatch::rollback`]).
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Key -> its new value, `None` when removed. Hashed, not ordered: the writer looks
    /// keys up one by one on its hot path; the few range reads walk it all.
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Each write in order, with what it replaced in `writes` (`None`: nothing), so that
    /// the writes since a [`Savepoint`] can be undone newest first.
    undo: Vec<(Vec<u8>, Replaced)>,
    /// Audit index postings gathered by [`WriteBatch::put_audit_index`]: (index key prefix
    /// (kind, value), sequence number), grouped into a few keys when the batch is committed.
    postings: Vec<(Vec<u8>, u64)>,
    /// The records written, each with its category and time and whether the writer found
    /// it held nowhere ([`WriteBatch::put_new_record`]), so that [`Store::commit`] can
    /// count the new ones and index them.
    records: Vec<(RecordId, CategoryId, i64, bool)>,
    /// Projections put, by stream: (seq, expiry ms), gathered into a few expiry index
    /// keys when the batch is committed.
    expiries: Vec<(StreamKey, u64, i64)>,
}

/// What a write replaced in a [`WriteBatch`]: the batch's earlier write of the key, or
/// (`None`) nothing.
type Replaced = Option<Option<Vec<u8>>>;

/// How far a [`WriteBatch`] had got, to undo what was added after it.
#[derive(Clone, Copy, Debug)]
pub struct Savepoint {
    undo: usize,
    postings: usize,
    records: usize,
    expiries: usize,
}

impl WriteBatch {
    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.undo.is_empty() && self.postings.is_empty() && self.expiries.is_empty()
    }

    /// Where the batch is now.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            undo: self.undo.len(),
            postings: self.postings.len(),
            records: self.records.len(),
            expiries: self.expiries.len(),
        }
    }

    /// Undo everything added since `sp`, as if it had never been.
    pub fn rollback(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.undo {
            let Some((k, before)) = self.undo.pop() else { break };
            match before {
                Some(v) => self.writes.insert(k, v),
                None => self.writes.remove(&k),
            };
        }
        self.postings.truncate(sp.postings);
        self.records.truncate(sp.records);
        self.expiries.truncate(sp.expiries);
    }

    fn write(&mut self, k: Vec<u8>, v: Option<Vec<u8>>) {
        let before = self.writes.insert(k.clone(), v);
        self.undo.push((k, before));
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.write(k, Some(v));
    }

    fn remove(&mut self, k: Vec<u8>) {
        self.write(k, None);
    }

    /// Whether the batch holds, knows withheld or purged `seq` of a stream (its own
    /// writes only; see [`View::seq_known`] for the store with them).
    pub fn knows_seq(&self, s: &StreamKey, seq: u64) -> bool {
        // One key, its keyspace byte changed: the keys differ only there.
        let mut k = projection_key(s, seq);
        [b'P', b'W', b'G'].into_iter().any(|space| {
            k[0] = space;
            matches!(self.written(&k), Some(Some(_)))
        })
    }

    /// What the batch wrote under `k`: `Some(None)` if it removed it, `None` if untouched.
    fn written(&self, k: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(k).map(|v| v.as_deref())
    }

    /// A record and its index entry (new, or replacing the one held, whose entry stays: see
    /// [`Store::commit`]). A live received record
    /// is kept without its body: the body is its projection's revealed fields, and the
    /// projection is kept beside it (see [`Store::record`]).
    pub fn put_record(&mut self, r: &StoredRecord) -> Result<(), StoreError> {
        self.records.push((r.id, r.header.category.clone(), r.header.created_ms, false));
        self.update_record(r)
    }

    /// Whether this batch writes record `id` (its own writes only).
    pub fn holds_record(&self, id: &RecordId) -> bool {
        matches!(self.written(&key(&[b"R", &id.0])), Some(Some(_)))
    }

    /// The ids of the records this batch writes.
    pub fn record_ids(&self) -> Vec<RecordId> {
        self.records.iter().map(|r| r.0).collect()
    }

    /// A record the caller knows is held neither in the store nor in this batch:
    /// [`Store::commit`] counts and indexes it without looking it up again. The writer
    /// task, the only committer, knows.
    pub fn put_new_record(&mut self, r: &StoredRecord) -> Result<(), StoreError> {
        self.records.push((r.id, r.header.category.clone(), r.header.created_ms, true));
        self.update_record(r)
    }

    /// A record held already, changed but for its header: its indexes stay as they are.
    pub fn update_record(&mut self, r: &StoredRecord) -> Result<(), StoreError> {
        // The writer passes a received record without its body already; strip one that
        // comes with it.
        let value = if body_in_projection(r) && !r.body.is_empty() {
            enc(&StoredRecord { body: BTreeMap::new(), salts: BTreeMap::new(), ..r.clone() })?
        } else {
            enc(r)?
        };
        self.put(key(&[b"R", &r.id.0]), value);
        Ok(())
    }

    /// What a restore left to reconcile, as it is now.
    pub fn set_restored(&mut self, r: &Restored) -> Result<(), StoreError> {
        self.put(RESTORED_KEY.to_vec(), enc(r)?);
        Ok(())
    }

    /// A projection at its place in its stream. The record lists it in its
    /// [`StoredRecord::shares`]: the caller writes that.
    pub fn put_projection(&mut self, p: &Projection) -> Result<(), StoreError> {
        let s = StreamKey { origin: p.header.origin, agreement: p.envelope.agreement.clone() };
        self.put(projection_key(&s, p.envelope.seq), enc(p)?);
        self.expiries.push((s, p.envelope.seq, p.envelope.expires_ms));
        Ok(())
    }

    /// The stream's head: for an own stream the last sequence number assigned, for a
    /// received one the contiguous high-water mark (held or known withheld).
    pub fn set_stream_head(&mut self, s: &StreamKey, seq: u64) {
        self.put(stream_meta_key(s), seq.to_be_bytes().to_vec());
    }

    /// Drop a projection (its envelope `e`) from its stream and remember the number as
    /// purged, with the audience it was shared with: an origin checks feedback against it.
    /// Its expiry index entry stays, shared with others, until it is due; the sweep then
    /// finds the projection gone and only drops the entry.
    pub fn purge_projection(&mut self, s: &StreamKey, e: &Envelope) -> Result<(), StoreError> {
        self.remove(projection_key(s, e.seq));
        self.put(gone_key(s, e.seq), enc(&e.audience)?);
        Ok(())
    }

    /// Index projection `seq` of a stream to expire at `at` as well (earlier than the
    /// expiry it carries, which stays indexed; whichever comes first purges it).
    pub fn index_expiry(&mut self, s: &StreamKey, seq: u64, at: i64) {
        self.expiries.push((s.clone(), seq, at));
    }

    /// Take `due`'s entries out of the expiry index: its key goes, and the entries not yet
    /// due are written back under a key of their earliest expiry.
    pub fn take_due(&mut self, due: &DueExpiries) {
        self.remove(due.key.clone());
        if let Some(k) = expiry_list_key(&due.stream, &due.rest) {
            self.put(k, expiry_list_value(&due.rest));
        }
    }

    /// Forget that a number of a stream was said to be withheld from us.
    pub fn remove_withheld(&mut self, s: &StreamKey, seq: u64) {
        self.remove(withheld_key(s, seq));
        self.remove(unconfirmed_key(s, seq));
        self.remove(declined_key(s, seq));
    }

    /// The stream's origin says too that a number is withheld from us: it no longer
    /// stands on another peer's word alone, nor on this node's.
    pub fn confirm_withheld(&mut self, s: &StreamKey, seq: u64) {
        self.remove(unconfirmed_key(s, seq));
        self.remove(declined_key(s, seq));
    }

    /// Mark a number withheld from this node on its own word: its accept policy declined
    /// it. Not asked for again until the policy changes ([`WriteBatch::ask_again`]).
    pub fn put_declined(&mut self, s: &StreamKey, seq: u64) {
        self.put(withheld_key(s, seq), Vec::new());
        self.remove(unconfirmed_key(s, seq));
        self.put(declined_key(s, seq), Vec::new());
    }

    /// A number declined here, to be asked of its origin again (the policy changed): it
    /// stands, until then, on `me`'s word as one another peer said withheld would.
    pub fn ask_again(&mut self, s: &StreamKey, seq: u64, me: MemberCode) {
        self.remove(declined_key(s, seq));
        self.put(unconfirmed_key(s, seq), me.as_bytes().to_vec());
    }

    /// The policy the numbers declined here were declined under.
    pub fn set_declined_under(&mut self, policy: &Digest) {
        self.put(DECLINED_UNDER_KEY.to_vec(), policy.0.to_vec());
    }

    /// Forget that a number of a stream was purged here (its number is another record's).
    pub fn remove_gone(&mut self, s: &StreamKey, seq: u64) {
        self.remove(gone_key(s, seq));
    }

    /// Feedback a peer gave on one of our records, under its own key however many the
    /// peer gives in one millisecond.
    pub fn put_feedback_received(&mut self, f: &tamga_protocol::Feedback) -> Result<(), StoreError> {
        self.put(feedback_key(b"F", f, f.from), enc(f)?);
        Ok(())
    }

    /// Feedback this node gave, waiting for delivery to the origin under its own key.
    pub fn put_feedback_outbox(&mut self, f: &tamga_protocol::Feedback) -> Result<(), StoreError> {
        self.put(OutboxKey::of(f).0, enc(f)?);
        Ok(())
    }

    /// Feedback delivered: out of the outbox, by the key it was read under.
    pub fn remove_feedback_outbox(&mut self, k: &OutboxKey) {
        self.remove(k.0.clone());
    }

    /// Mark a sequence number as known withheld from this node, on the word of `by`. Only
    /// the stream's origin knows: what another peer says is kept as unconfirmed too, for
    /// the origin to be asked again.
    pub fn put_withheld(&mut self, s: &StreamKey, seq: u64, by: MemberCode) {
        self.put(withheld_key(s, seq), Vec::new());
        if by != s.origin {
            self.put(unconfirmed_key(s, seq), by.as_bytes().to_vec());
        }
    }

    /// One audit entry and the new chain head. An entry is written once, at the next
    /// number of the chain: the store holds nothing under its key (see
    /// [`WriteBatch::seal`]).
    pub fn put_audit(&mut self, seq: u64, entry: &[u8], hash: &Digest) {
        self.put(key(&[b"A", &seq.to_be_bytes()]), key(&[&hash.0, entry]));
        self.put(b"H".to_vec(), key(&[&seq.to_be_bytes(), &hash.0]));
    }
}

/// Reads of the store: as committed ([`Store::view`]), or as it will be once a batch not
/// yet committed is ([`Store::pending`]) — the batch's writes first, then what is stored.
/// The writer reads through the second, so that the ops of one write group see each
/// other's writes (a revocation the share stored a moment before, a share the tombstone
/// written a moment before). The batch's audit index postings are not read through.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    db: &'a sled::Db,
    values: &'a values::Values,
    pending: Option<&'a WriteBatch>,
}

/// A value read through a [`View`].
enum Got<'a> {
    Stored(sled::IVec),
    /// Read from the values files.
    Read(Vec<u8>),
    Pending(&'a [u8]),
}

impl std::ops::Deref for Got<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Got::Stored(v) => v,
            Got::Read(v) => v,
            Got::Pending(v) => v,
        }
    }
}

impl<'a> View<'a> {
    fn get(&self, k: &[u8]) -> Result<Option<Got<'a>>, StoreError> {
        if let Some(w) = self.pending.and_then(|b| b.written(k)) {
            return Ok(w.map(Got::Pending));
        }
        let Some(v) = self.db.get(k)? else { return Ok(None) };
        Ok(match placed(k, &v) {
            Some((lane, place)) => match self.values.read(lane, place) {
                Ok(bytes) => Some(Got::Read(bytes)),
                Err(e) => reread(self.db, self.values, k, place, e)?.map(Got::Read),
            },
            None => Some(Got::Stored(v)),
        })
    }

    fn contains(&self, k: &[u8]) -> Result<bool, StoreError> {
        match self.pending.and_then(|b| b.written(k)) {
            Some(w) => Ok(w.is_some()),
            None => Ok(self.db.contains_key(k)?),
        }
    }

    /// The first key in `lo..=hi`.
    fn first_key(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stored = None;
        for kv in self.db.range(lo..=hi) {
            let (k, _) = kv?;
            // A key the batch wrote or removed is judged by the batch, below.
            if self.pending.and_then(|b| b.written(&k)).is_none() {
                stored = Some(k.to_vec());
                break;
            }
        }
        Ok(first_of(stored, self.first_written(lo, hi)))
    }

    /// The first key in `lo..=hi` the pending batch writes a value under.
    fn first_written(&self, lo: &[u8], hi: &[u8]) -> Option<Vec<u8>> {
        self.pending.and_then(|b| {
            let within = |k: &&Vec<u8>| k.as_slice() >= lo && k.as_slice() <= hi;
            b.writes.iter().filter(|(k, v)| v.is_some() && within(k)).map(|(k, _)| k).min().cloned()
        })
    }

    /// Where projection `seq` of a stream lies, as committed.
    fn stored_place(&self, s: &StreamKey, seq: u64) -> Result<Option<Place>, StoreError> {
        let k = projection_block_key(s, seq);
        match self.db.get(&k)? {
            Some(v) => Block::find(&k, &v, seq),
            None => Ok(None),
        }
    }

    /// Whether projection `seq` of a stream is held.
    fn holds_projection(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        match self.pending.and_then(|b| b.written(&projection_key(s, seq))) {
            Some(w) => Ok(w.is_some()),
            None => Ok(self.stored_place(s, seq)?.is_some()),
        }
    }

    /// The smallest number from `first` on whose projection a stream holds.
    fn first_held(&self, s: &StreamKey, first: u64) -> Result<Option<u64>, StoreError> {
        let space = stream_space(b"S", s);
        let (lo, hi) = (blocks::block_key(&space, first), blocks::block_key(&space, u64::MAX));
        let mut stored = None;
        'blocks: for kv in self.db.range(lo..=hi) {
            let (k, v) = kv?;
            let (base, block) = read_block(&k, &v)?;
            for (seq, _) in block.entries(base) {
                // A number the batch wrote or removed is judged by the batch, below.
                if seq >= first && self.pending.and_then(|b| b.written(&projection_key(s, seq))).is_none() {
                    stored = Some(projection_key(s, seq));
                    break 'blocks;
                }
            }
        }
        let written = self.first_written(&projection_key(s, first), &projection_key(s, u64::MAX));
        let prefix = stream_prefix(s).len();
        first_of(stored, written).map(|k| u64_of(&k, &k[prefix..])).transpose()
    }

    /// Whether a record is held.
    pub fn has_record(&self, id: &RecordId) -> Result<bool, StoreError> {
        self.contains(&key(&[b"R", &id.0]))
    }

    /// One record, with its body.
    pub fn record(&self, id: &RecordId) -> Result<Option<StoredRecord>, StoreError> {
        self.record_as_stored(id)?.map(|r| self.with_body(r)).transpose()
    }

    /// One record as stored: a live received record without its body (enough to make
    /// its tombstone, which keeps no body).
    pub fn record_as_stored(&self, id: &RecordId) -> Result<Option<StoredRecord>, StoreError> {
        let k = key(&[b"R", &id.0]);
        self.get(&k)?.map(|v| dec(&k, &v)).transpose()
    }

    /// A live received record's body, from the share its source names.
    fn with_body(&self, mut r: StoredRecord) -> Result<StoredRecord, StoreError> {
        let Source::Received { agreement, .. } = &r.source else { return Ok(r) };
        if !body_in_projection(&r) || !r.body.is_empty() {
            return Ok(r);
        }
        let stream = StreamKey { origin: r.header.origin, agreement: agreement.clone() };
        for seq in r.shares.iter().filter(|(a, _)| a == agreement).map(|&(_, seq)| seq) {
            if let Some(p) = self.projection(&stream, seq)? {
                r.body = p.revealed_body();
                break;
            }
        }
        Ok(r)
    }

    /// The highest sequence number known in a stream (0 when none).
    pub fn stream_head(&self, s: &StreamKey) -> Result<u64, StoreError> {
        let k = stream_meta_key(s);
        self.get(&k)?.map(|v| u64_of(&k, &v)).transpose().map(|o| o.unwrap_or(0))
    }

    /// Whether a sequence number of a stream is held or known withheld.
    pub fn seq_known(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        Ok(self.holds_projection(s, seq)? || self.contains(&withheld_key(s, seq))? || self.is_gone(s, seq)?)
    }

    /// The smallest sequence number above `after` that is held, known withheld or purged
    /// in a stream, if any: every number between `after` and it is unknown here. One
    /// lookup per keyspace instead of three per number (see [`View::seq_known`]).
    pub fn next_known(&self, s: &StreamKey, after: u64) -> Result<Option<u64>, StoreError> {
        let Some(first) = after.checked_add(1) else { return Ok(None) };
        let mut best = self.first_held(s, first)?;
        for space in [b"W", b"G"] {
            let base = stream_space(space, s);
            let lo = key(&[&base, &first.to_be_bytes()]);
            let hi = key(&[&base, &u64::MAX.to_be_bytes()]);
            if let Some(k) = self.first_key(&lo, &hi)? {
                let seq = u64_of(&k, &k[base.len()..])?;
                best = Some(best.map_or(seq, |b| b.min(seq)));
            }
        }
        Ok(best)
    }

    /// Whether a sequence number of a stream was purged here (expired or revoked).
    pub fn is_gone(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        self.contains(&gone_key(s, seq))
    }

    /// Whether a peer said a sequence number of a stream is withheld from us.
    pub fn is_withheld(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        self.contains(&withheld_key(s, seq))
    }

    /// The peer on whose word alone a number of a stream is marked withheld, if that is
    /// not its origin.
    pub fn withheld_on_word_of(&self, s: &StreamKey, seq: u64) -> Result<Option<MemberCode>, StoreError> {
        let k = unconfirmed_key(s, seq);
        let Some(v) = self.get(&k)? else { return Ok(None) };
        member_code(Some(&v))
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt { key: hex::encode(&k), why: "not a member code".into() })
    }

    /// Whether this feedback, received, is held already.
    pub fn holds_feedback(&self, f: &tamga_protocol::Feedback) -> Result<bool, StoreError> {
        self.contains(&feedback_key(b"F", f, f.from))
    }

    /// Whether feedback this node gave still waits in the outbox under `k`.
    pub fn in_outbox(&self, k: &OutboxKey) -> Result<bool, StoreError> {
        self.contains(&k.0)
    }

    /// Whether this node declined a number of a stream itself (see [`WriteBatch::put_declined`]).
    pub fn is_declined(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        self.contains(&declined_key(s, seq))
    }

    /// The policy the numbers declined here were declined under, if it was recorded.
    pub fn declined_under(&self) -> Result<Option<Digest>, StoreError> {
        let Some(v) = self.get(DECLINED_UNDER_KEY)? else { return Ok(None) };
        let d: [u8; 32] = <[u8; 32]>::try_from(&v[..]).map_err(|_| StoreError::Corrupt {
            key: hex::encode(DECLINED_UNDER_KEY),
            why: "not a digest".into(),
        })?;
        Ok(Some(Digest(d)))
    }

    /// What a restore left to reconcile, if this store was restored.
    pub fn restored(&self) -> Result<Option<Restored>, StoreError> {
        self.get(RESTORED_KEY)?.map(|v| dec(RESTORED_KEY, &v)).transpose()
    }

    /// The projection at `seq` in a stream.
    pub fn projection(&self, s: &StreamKey, seq: u64) -> Result<Option<Projection>, StoreError> {
        let k = projection_key(s, seq);
        if let Some(w) = self.pending.and_then(|b| b.written(&k)) {
            return w.map(|v| dec(&k, v)).transpose();
        }
        let Some(place) = self.stored_place(s, seq)? else { return Ok(None) };
        let bytes = match self.values.read(Lane::Projections, place) {
            Ok(bytes) => Some(bytes),
            Err(e) => reread(self.db, self.values, &k, place, e)?,
        };
        bytes.map(|v| dec(&k, &v)).transpose()
    }

    /// Who projection `seq` of a stream was shared with: its audience, read from the
    /// projection while it is held and from its purge mark after. `None` if neither is
    /// held, or the mark was made by an earlier build, which kept no audience.
    pub fn audience(&self, s: &StreamKey, seq: u64) -> Result<Option<Vec<MemberCode>>, StoreError> {
        if let Some(p) = self.projection(s, seq)? {
            return Ok(Some(p.envelope.audience));
        }
        let k = gone_key(s, seq);
        match self.get(&k)? {
            Some(v) if !v.is_empty() => Ok(Some(dec(&k, &v)?)),
            _ => Ok(None),
        }
    }
}

/// The node's store. Cheap to clone (one shared sled database).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    /// How many records are held (`R` keys): kept in memory and under `Mrecords` by every
    /// commit that adds one, so that status and metrics never scan the records.
    records: Arc<AtomicU64>,
    /// The values files: the bytes of the values kept outside the tree ([`Lane::of_key`]).
    values: Arc<values::Values>,
    /// The streams whose head a commit moved since the last flush that succeeded, each
    /// with its head before that commit: the head that is durable ([`Store::durable_head`]).
    unflushed_heads: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
    /// Tests only: a commit or a flush made to fail, and the flushes that ran
    /// ([`Store::fail_commits`], [`Store::fail_next_flush`]).
    #[cfg(test)]
    failpoints: Arc<Failpoints>,
}

/// Tests only: makes [`Store::commit`] fail, applying nothing, or [`Store::flush`]
/// fail once, after its batch was applied, as a full or failing disk can; and counts the
/// flushes that made something durable.
#[cfg(test)]
#[derive(Debug, Default)]
struct Failpoints {
    /// How many of the next commits fail without applying anything.
    commits_to_fail: AtomicU64,
    /// The next flush fails without flushing.
    armed: std::sync::atomic::AtomicBool,
    /// How many flushes succeeded.
    flushed: AtomicU64,
}

/// Where the count of bytes the tree points at in one values file is kept: this, the
/// lane's byte, the file's number (u32 BE).
const VALUES_COUNT_PREFIX: &[u8] = b"Mvalues";

fn values_count_key(lane: Lane, segment: u32) -> Vec<u8> {
    key(&[VALUES_COUNT_PREFIX, &[lane.byte()], &segment.to_be_bytes()])
}

/// Where a value the tree no longer points at waits to be overwritten: this, the lane's
/// byte, its place. Written with the change that leaves it behind, so that a crash before
/// the flush that makes it safe to overwrite does not forget it; taken out once done.
const ZERO_PREFIX: &[u8] = b"Mzero";

fn zero_key(lane: Lane, place: Place) -> Vec<u8> {
    key(&[ZERO_PREFIX, &[lane.byte()], &place.encode()])
}

/// A bookkeeping key of the values files under `prefix`: its lane, and what follows.
fn lane_key<'k>(k: &'k [u8], prefix: &[u8]) -> Result<(Lane, &'k [u8]), StoreError> {
    let rest = k.get(prefix.len()..).unwrap_or_default();
    match rest.split_first().and_then(|(b, rest)| Some((Lane::of_byte(*b)?, rest))) {
        Some(found) => Ok(found),
        None => Err(StoreError::Corrupt { key: hex::encode(k), why: "bad values lane".into() }),
    }
}

/// Whether a key is the values files' bookkeeping, which describes this store's files
/// only (not carried by a backup).
fn is_values_bookkeeping(k: &[u8]) -> bool {
    k.starts_with(VALUES_COUNT_PREFIX) || k.starts_with(ZERO_PREFIX)
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// A sled batch ready to apply, and what the values files take in once it is.
struct Sealed {
    batch: sled::Batch,
    counts: BTreeMap<(Lane, u32), u64>,
    added: Vec<(Lane, Place)>,
    removed: Vec<(Lane, Place)>,
}

impl Store {
    /// A sled batch of `writes` (`None`: removed). The values kept in the values files
    /// are appended to them first, durably, and the batch holds where they lie (under
    /// their key, or for a projection in its stream's block); a value there that a write
    /// replaces or removes is counted out of its file. The keys `fresh` names are held
    /// nowhere in the tree, so no value of theirs is looked for.
    fn seal_writes(
        &self,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        fresh: impl Fn(&[u8]) -> bool,
    ) -> Result<Sealed, StoreError> {
        let mut batch = sled::Batch::default();
        let mut outside: BTreeMap<Lane, Vec<Pair>> = BTreeMap::new();
        let mut removed = Vec::new();
        // The projection blocks the writes change, as they will be.
        let mut changed: BTreeMap<Vec<u8>, Block> = BTreeMap::new();
        for (k, v) in writes {
            let Some(lane) = Lane::of_key(&k) else {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
                continue;
            };
            let slot = blocks::slot_of(&k);
            let old = match &slot {
                Some((block, seq)) => block_in(&self.db, &mut changed, block)?.set(*seq, None),
                None if fresh(&k) => None,
                None => self.db.get(&k)?.and_then(|old| Place::decode(&old)),
            };
            removed.extend(old.map(|place| (lane, place)));
            match v {
                Some(v) => outside.entry(lane).or_default().push((k, v)),
                // A projection's removal is its block's change, below.
                None if slot.is_some() => {}
                None => batch.remove(k),
            }
        }
        let mut added = Vec::new();
        for (lane, mut pairs) in outside {
            // In key order, so that a scan of the keys reads the file forwards.
            pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let bytes: Vec<&[u8]> = pairs.iter().map(|(_, v)| v.as_slice()).collect();
            let places = match self.values.append_unsynced(lane, &bytes) {
                Ok(places) => places,
                Err(e) => {
                    self.forget(&added);
                    return Err(e);
                }
            };
            for ((k, _), place) in pairs.into_iter().zip(places) {
                match blocks::slot_of(&k) {
                    Some((block, seq)) => {
                        changed.entry(block).or_default().set(seq, Some(place));
                    }
                    None => batch.insert(k, place.encode()),
                }
                added.push((lane, place));
            }
        }
        if let Err(e) = self.values.sync() {
            self.forget(&added);
            return Err(e);
        }
        for (k, b) in changed {
            if b.is_empty() {
                batch.remove(k);
            } else {
                batch.insert(k, b.encode());
            }
        }
        let counts = self.values.counts_after(&added, &removed);
        for ((lane, segment), count) in &counts {
            batch.insert(values_count_key(*lane, *segment), &count.to_be_bytes());
        }
        for (lane, place) in &removed {
            batch.insert(zero_key(*lane, *place), Vec::new());
        }
        Ok(Sealed { batch, counts, added, removed })
    }

    /// Apply a sealed batch atomically (not yet durable).
    fn apply(&self, sealed: Sealed) -> Result<(), StoreError> {
        if let Err(e) = self.db.apply_batch(sealed.batch) {
            self.forget(&sealed.added);
            return Err(e.into());
        }
        self.values.committed(sealed.counts, sealed.removed);
        Ok(())
    }

    /// Overwrite values appended for a batch that is not applied: no key points at them.
    fn forget(&self, added: &[(Lane, Place)]) {
        if let Err(e) = self.values.zero(added) {
            tracing::warn!(error = %e, "values files: overwriting the values of a failed commit failed");
        }
    }

    /// Overwrite the values and delete the files that `work` names once a flush made the
    /// tree durable (`flushed`); else, or if that fails, keep it for the next flush. What
    /// was made durable stays so either way.
    fn after_flush(&self, work: values::AfterFlush, flushed: bool) {
        if !flushed {
            return self.values.put_back(work);
        }
        let done: Vec<Vec<u8>> = work.zeroed().iter().map(|(lane, place)| zero_key(*lane, *place)).collect();
        if let Err(e) = self.values.after_flush(work.clone()) {
            tracing::warn!(error = %e, "values files: overwriting or deleting what no key points at failed; tried again after the next flush");
            return self.values.put_back(work);
        }
        if !done.is_empty() {
            let mut b = sled::Batch::default();
            done.into_iter().for_each(|k| b.remove(k));
            // Left behind, they are overwritten again at the next start: no harm.
            if let Err(e) = self.db.apply_batch(b) {
                tracing::warn!(error = %e, "values files: the list of values to overwrite is not cleared");
            }
        }
    }

    /// At start-up: overwrite the values a crash left on the list (the tree as opened is
    /// durable), then clear the list.
    fn zero_listed(&self) -> Result<(), StoreError> {
        let mut listed = Vec::new();
        for kv in self.db.scan_prefix(ZERO_PREFIX) {
            let (k, _) = kv?;
            let (lane, place) = lane_key(&k, ZERO_PREFIX)?;
            let place = Place::decode(place)
                .ok_or_else(|| StoreError::Corrupt { key: hex::encode(&k), why: "bad place".into() })?;
            listed.push((k.clone(), (lane, place)));
        }
        if listed.is_empty() {
            return Ok(());
        }
        let places: Vec<(Lane, Place)> = listed.iter().map(|(_, p)| *p).collect();
        self.values.zero(&places)?;
        let mut b = sled::Batch::default();
        listed.into_iter().for_each(|(k, _)| b.remove(k));
        self.db.apply_batch(b)?;
        self.db.flush()?;
        Ok(())
    }
}

const RECORD_COUNT_KEY: &[u8] = b"Mrecords";

/// How long opening waits for the engine's lock on the store's files. A store this process
/// has just closed stays locked until the engine's last background write lets go of it (a
/// moment, longer on a loaded machine); a store another process holds stays locked.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Open the engine, waiting up to [`LOCK_WAIT`] for its lock.
fn open_locked(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            // The engine says so only in its message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

/// The schema version `db` is marked with (0 if the mark is not 4 bytes), if any.
fn stored_schema(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let v = db.get(SCHEMA_KEY)?;
    Ok(v.map(|v| <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes).unwrap_or(0)))
}

impl Store {
    /// Open (or create) the store in `dir`. Fails if another process holds it or the
    /// schema version differs.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, tamga_config::node::default_cache_mb())
    }

    /// [`Store::open`] with a page cache of `cache_mb` MiB (node.toml `store.cache_mb`).
    pub fn open_with_cache(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        Store::open_as(dir, cache_mb, true)
    }

    /// Open a store only to read it (`tamga audit … --offline`): one of an older schema
    /// that this build upgrades is read as it is and left at its schema, so that the
    /// build that wrote it still opens it. Nothing is written. Its projections, which only
    /// the upgrade moves into their blocks, are not read (the audit log does not need them).
    pub fn open_to_read(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, tamga_config::node::default_cache_mb(), false)
    }

    fn open_as(dir: &Path, cache_mb: u64, writing: bool) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_mb.saturating_mul(1024 * 1024));
        let db = open_locked(&config)?;
        let mut counts = BTreeMap::new();
        for kv in db.scan_prefix(VALUES_COUNT_PREFIX) {
            let (k, v) = kv?;
            let (lane, segment) = lane_key(&k, VALUES_COUNT_PREFIX)?;
            let segment = <[u8; 4]>::try_from(segment)
                .map_err(|_| StoreError::Corrupt { key: hex::encode(&k), why: "bad file number".into() })?;
            counts.insert((lane, u32::from_be_bytes(segment)), u64_of(&k, &v)?);
        }
        // Before the values files are opened (which deletes those the tree does not point
        // at): a store of a schema this build does not read is left as it is.
        let found = stored_schema(&db)?;
        if let Some(found) = found.filter(|f| !schema_readable(*f)) {
            return Err(StoreError::Schema { found, expected: SCHEMA_VERSION });
        }
        let values = Arc::new(values::Values::open(dir, writing, counts)?);
        let store = Store {
            db,
            records: Arc::default(),
            values,
            unflushed_heads: Arc::default(),
            #[cfg(test)]
            failpoints: Arc::default(),
        };
        if writing {
            store.zero_listed()?;
        }
        match found {
            Some(found) => {
                if found != SCHEMA_VERSION && writing {
                    store.upgrade(found)?;
                }
            }
            None if !writing => {}
            None => {
                store.db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                store.db.flush()?;
            }
        }
        let count = match store.db.get(RECORD_COUNT_KEY)? {
            Some(v) => u64_of(RECORD_COUNT_KEY, &v)?,
            // Written by a build that did not keep the count: count once (the next commit
            // that adds a record stores it).
            None => store.count_records()?,
        };
        store.records.store(count, Ordering::Relaxed);
        Ok(store)
    }

    /// Upgrade an older store in place, then mark it this schema. From schema 2 each
    /// record takes in the seqs of its projections (schema 2's `X` keys, which go), in
    /// rounds of a few thousand records, each applied atomically: an upgrade cut short
    /// resumes where it stopped, since a record moved already decodes as this schema's.
    /// Up to schema 6, the projections' keys go into their blocks (see
    /// [`Store::move_projections_into_blocks`]). Nothing else moves: schemas 4, 5, 6 and 8
    /// only add what the one before cannot read (the values an older store holds in the
    /// tree stay there, and are read there, and so do its category index keys of one
    /// record each and its audit entries' record index keys).
    fn upgrade(&self, found: u32) -> Result<(), StoreError> {
        if found == 2 {
            self.move_shares_into_records()?;
        }
        if found < 7 {
            self.move_projections_into_blocks()?;
        }
        self.db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        self.db.flush()?;
        tracing::info!("store upgraded from schema {found} to {SCHEMA_VERSION}");
        Ok(())
    }

    /// Schema 2 to 3: see [`Store::upgrade`].
    fn move_shares_into_records(&self) -> Result<(), StoreError> {
        const ROUND: usize = 4096;
        let (mut from, mut moved) = (b"R".to_vec(), 0u64);
        loop {
            // Written through the values files: a store restored from a schema 2 backup
            // holds its records there already.
            let (mut writes, mut seen, mut last) = (Vec::new(), 0, None);
            for kv in self.db.range(from.clone()..) {
                let (k, v) = kv?;
                if k.first() != Some(&b'R') || seen == ROUND {
                    break;
                }
                seen += 1;
                last = Some(k.to_vec());
                let v = self.value(&k, &v)?;
                if decode_stored::<StoredRecord>(&v).is_ok() {
                    continue;
                }
                let old: StoredRecordV2 = dec(&k, &v)?;
                let prefix = key(&[b"X", &k[1..]]);
                let mut shares = Vec::new();
                for x in self.db.scan_prefix(&prefix) {
                    let (xk, xv) = x?;
                    let name = std::str::from_utf8(&xk[prefix.len()..]).ok().and_then(|s| s.parse().ok());
                    let agreement = name.ok_or_else(|| StoreError::Corrupt {
                        key: hex::encode(&xk),
                        why: "bad agreement".into(),
                    })?;
                    shares.push((agreement, u64_of(&xk, &xv)?));
                    writes.push((xk.to_vec(), None));
                }
                writes.push((k.to_vec(), Some(enc(&old.with_shares(shares))?)));
                moved += 1;
            }
            let sealed = self.seal_writes(writes, |_| false)?;
            self.apply(sealed)?;
            match last {
                Some(k) if seen == ROUND => from = key(&[&k, &[0]]),
                _ => break,
            }
        }
        // An `X` key of a record not held (none is written so) goes with the others.
        let mut batch = sled::Batch::default();
        for kv in self.db.scan_prefix(b"X") {
            batch.remove(kv?.0);
        }
        batch.insert(SCHEMA_KEY, &3u32.to_be_bytes());
        self.db.apply_batch(batch)?;
        tracing::info!(records = moved, "store upgraded from schema 2 to 3");
        Ok(())
    }

    /// Schema 6 to 7: each projection's key (`P`) goes, and its place goes into its
    /// stream's block (`S`); a value an older schema kept in the tree is appended to the
    /// values files first. In rounds of a few thousand keys, each applied atomically, so
    /// an upgrade cut short resumes with the keys left.
    fn move_projections_into_blocks(&self) -> Result<(), StoreError> {
        const ROUND: usize = 4096;
        let mut moved = 0u64;
        loop {
            let round: Vec<(sled::IVec, sled::IVec)> =
                self.db.scan_prefix(b"P").take(ROUND).collect::<Result<_, _>>()?;
            if round.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            let mut changed: BTreeMap<Vec<u8>, Block> = BTreeMap::new();
            let mut inline = Vec::new();
            for (k, v) in &round {
                let (block, seq) = blocks::slot_of(k).ok_or_else(|| StoreError::Corrupt {
                    key: hex::encode(k),
                    why: "bad projection key".into(),
                })?;
                let held = block_in(&self.db, &mut changed, &block)?;
                match Place::decode(v) {
                    Some(place) => {
                        held.set(seq, Some(place));
                    }
                    None => inline.push((block, seq, v)),
                }
                batch.remove(k);
            }
            let bytes: Vec<&[u8]> = inline.iter().map(|(_, _, v)| v.as_ref()).collect();
            let places = self.values.append(Lane::Projections, &bytes)?;
            for ((block, seq, _), place) in inline.iter().zip(&places) {
                changed.entry(block.clone()).or_default().set(*seq, Some(*place));
            }
            let added: Vec<(Lane, Place)> = places.into_iter().map(|p| (Lane::Projections, p)).collect();
            let counts = self.values.counts_after(&added, &[]);
            for ((lane, segment), count) in &counts {
                batch.insert(values_count_key(*lane, *segment), &count.to_be_bytes());
            }
            for (k, b) in changed {
                batch.insert(k, b.encode());
            }
            moved += round.len() as u64;
            self.apply(Sealed { batch, counts, added, removed: Vec::new() })?;
        }
        if moved > 0 {
            tracing::info!(projections = moved, "store upgraded: projection keys moved into their blocks");
        }
        Ok(())
    }

    /// Apply a batch atomically (not yet durable: see [`Store::flush`]). The writer task
    /// is the only caller, so the record count read here cannot change before it is stored.
    pub fn commit(&self, mut b: WriteBatch) -> Result<(), StoreError> {
        #[cfg(test)]
        if self
            .failpoints
            .commits_to_fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Engine("commit failed (test failpoint)".into()));
        }
        let mut count = self.records.load(Ordering::Relaxed);
        let mut new_keys = HashSet::new();
        if !b.records.is_empty() {
            // The records new to the store are counted, and indexed by category: one key
            // per category lists those this commit adds. A record held already keeps the
            // entry it has, so no record is listed twice and no key is written twice.
            let mut records: BTreeMap<RecordId, (CategoryId, i64, bool)> = BTreeMap::new();
            for (id, category, at, new) in std::mem::take(&mut b.records) {
                let was_new = records.get(&id).is_some_and(|r| r.2);
                records.insert(id, (category, at, new || was_new));
            }
            let mut lists: BTreeMap<CategoryId, Vec<CategoryEntry>> = BTreeMap::new();
            for (id, (category, at, new)) in records {
                if new || !self.view().has_record(&id)? {
                    count += 1;
                    new_keys.insert(key(&[b"R", &id.0]));
                    lists.entry(category).or_default().push(CategoryEntry::new(at, &id));
                }
            }
            for (category, mut list) in lists {
                list.sort_unstable();
                for chunk in list.chunks(MAX_RECORDS_PER_CATEGORY_KEY) {
                    let Some(latest) = chunk.last() else { continue };
                    let v: Vec<u8> = chunk.iter().flat_map(|e| e.0).collect();
                    b.put(key(&[&category_prefix(&category), &latest.0]), v);
                }
            }
            b.put(RECORD_COUNT_KEY.to_vec(), count.to_be_bytes().to_vec());
        }
        // The heads this commit moves, as they were: durable until the next flush (an
        // earlier commit's, if one moved them since, is kept). Noted before the batch is
        // applied, so that no reader finds a head moved and not noted; noted for nothing
        // if it fails, until the next flush.
        let mut heads = Vec::new();
        for k in b.writes.keys().filter(|k| k.first() == Some(&b'Q')) {
            let before = match self.db.get(k)? {
                Some(v) => u64_of(k, &v)?,
                None => 0,
            };
            heads.push((k.clone(), before));
        }
        let sealed = b.seal(self, &new_keys)?;
        {
            let mut unflushed = self.unflushed_heads.lock().unwrap_or_else(|p| p.into_inner());
            for (k, before) in heads {
                unflushed.entry(k).or_insert(before);
            }
        }
        self.apply(sealed)?;
        self.records.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// The head of stream `s` that is durable, when a commit moved it since the last flush
    /// that succeeded (`None`: its head as read before this call is durable). Peers are
    /// shown no number of an own stream past it: a crash would lose it, and the node then
    /// give the number to another record, which a peer that took the first would hold as a
    /// conflict for good.
    pub fn durable_head(&self, s: &StreamKey) -> Option<u64> {
        self.unflushed_heads.lock().unwrap_or_else(|p| p.into_inner()).get(&stream_meta_key(s)).copied()
    }

    /// The heads moved by commits before a flush starts; put back if the flush fails.
    fn take_unflushed_heads(&self) -> HashMap<Vec<u8>, u64> {
        std::mem::take(&mut *self.unflushed_heads.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A flush failed: the heads it would have made durable are not. Theirs are the older
    /// heads, so they win over those of commits made since.
    fn put_back_unflushed_heads(&self, heads: HashMap<Vec<u8>, u64>) {
        self.unflushed_heads.lock().unwrap_or_else(|p| p.into_inner()).extend(heads);
    }

    /// Make everything committed so far durable (then overwrite the values and delete the
    /// values files no key points at any more: see [`values`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let work = self.values.take_pending();
        let heads = self.take_unflushed_heads();
        #[cfg(test)]
        if self.failpoints.armed.swap(false, Ordering::Relaxed) {
            self.after_flush(work, false);
            self.put_back_unflushed_heads(heads);
            return Err(StoreError::Engine("flush failed (test failpoint)".into()));
        }
        let flushed = self.db.flush_async().await;
        if flushed.is_err() {
            self.put_back_unflushed_heads(heads);
        }
        self.after_flush(work, flushed.is_ok());
        flushed?;
        #[cfg(test)]
        self.failpoints.flushed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Tests only: the next [`Store::flush`] fails without flushing, leaving what was
    /// committed applied but not durable.
    #[cfg(test)]
    pub(crate) fn fail_next_flush(&self) {
        self.failpoints.armed.store(true, Ordering::Relaxed);
    }

    /// Tests only: the next `n` calls of [`Store::commit`] fail, applying nothing (0: none).
    #[cfg(test)]
    pub(crate) fn fail_commits(&self, n: u64) {
        self.failpoints.commits_to_fail.store(n, Ordering::Relaxed);
    }

    /// Tests only: how many calls of [`Store::flush`] have succeeded.
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.failpoints.flushed.load(Ordering::Relaxed)
    }

    /// Make everything durable, blocking (for shutdown), then do what that makes safe in
    /// the values files.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let work = self.values.take_pending();
        let heads = self.take_unflushed_heads();
        let flushed = self.db.flush();
        if flushed.is_err() {
            self.put_back_unflushed_heads(heads);
        }
        self.after_flush(work, flushed.is_ok());
        flushed?;
        Ok(())
    }

    /// Reads of what is committed.
    pub fn view(&self) -> View<'_> {
        View { db: &self.db, values: &self.values, pending: None }
    }

    /// Reads of what will be committed once `batch` is.
    pub fn pending<'a>(&'a self, batch: &'a WriteBatch) -> View<'a> {
        View { db: &self.db, values: &self.values, pending: Some(batch) }
    }

    /// One record, with its body.
    pub fn record(&self, id: &RecordId) -> Result<Option<StoredRecord>, StoreError> {
        self.view().record(id)
    }

    /// The highest sequence number known in a stream (0 when none).
    pub fn stream_head(&self, s: &StreamKey) -> Result<u64, StoreError> {
        self.view().stream_head(s)
    }

    /// See [`View::next_known`].
    pub fn next_known(&self, s: &StreamKey, after: u64) -> Result<Option<u64>, StoreError> {
        self.view().next_known(s, after)
    }

    /// Whether a sequence number of a stream was purged here (expired or revoked).
    pub fn is_gone(&self, s: &StreamKey, seq: u64) -> Result<bool, StoreError> {
        self.view().is_gone(s, seq)
    }

    /// The projection at `seq` in a stream.
    pub fn projection(&self, s: &StreamKey, seq: u64) -> Result<Option<Projection>, StoreError> {
        self.view().projection(s, seq)
    }

    /// See [`View::audience`].
    pub fn audience(&self, s: &StreamKey, seq: u64) -> Result<Option<Vec<MemberCode>>, StoreError> {
        self.view().audience(s, seq)
    }

    /// Records matching `filter`, newest first (by creation time, then id), at most `limit`.
    pub fn records(&self, filter: &RecordFilter, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        // The category index is the only record index: a category filter reads its own
        // category's keys, no filter every category's, newest first. A key lists records
        // no later than its own time and id, so a record read from a key is listed once no
        // key left unread can list a later one. The other filters are checked per record.
        let prefixes = match &filter.category {
            Some(c) => vec![category_prefix(c)],
            None => self.category_prefixes()?,
        };
        let since = filter.since_ms.map(|t| CategoryEntry::new(t, &Digest([0; 32])));
        let view = self.view();
        // Each category's keys, newest first, with the next one while it may list a
        // record at or after `since`.
        struct Keys {
            len: usize,
            scan: std::iter::Rev<sled::Iter>,
            next: Option<(sled::IVec, sled::IVec, CategoryEntry)>,
        }
        impl Keys {
            fn advance(&mut self, since: Option<CategoryEntry>) -> Result<(), StoreError> {
                self.next = match self.scan.next() {
                    None => None,
                    Some(kv) => {
                        let (k, v) = kv?;
                        let latest = category_latest(&k, self.len)?;
                        since.is_none_or(|s| latest >= s).then_some((k, v, latest))
                    }
                };
                Ok(())
            }
        }
        let mut keys = Vec::with_capacity(prefixes.len());
        for p in &prefixes {
            let mut k = Keys { len: p.len(), scan: self.db.scan_prefix(p).rev(), next: None };
            k.advance(since)?;
            keys.push(k);
        }
        let mut read: BinaryHeap<CategoryEntry> = BinaryHeap::new();
        let mut out = Vec::new();
        while out.len() < limit {
            let unread =
                keys.iter_mut().filter(|k| k.next.is_some()).max_by_key(|k| k.next.as_ref().map(|n| n.2));
            if let Some(k) =
                unread.filter(|k| read.peek().is_none_or(|top| k.next.as_ref().is_some_and(|n| n.2 >= *top)))
            {
                if let Some((key, value, _)) = k.next.take() {
                    let listed = category_entries(&key, k.len, &value)?;
                    read.extend(
                        listed.into_iter().filter(|e| {
                            since.is_none_or(|s| *e >= s) && filter.after.is_none_or(|a| *e < a.0)
                        }),
                    );
                }
                k.advance(since)?;
                continue;
            }
            let Some(e) = read.pop() else { break };
            let Some(r) = view.record_as_stored(&e.id())? else { continue };
            if filter.origin.is_some_and(|o| o != r.header.origin) {
                continue;
            }
            out.push(view.with_body(r)?);
        }
        Ok(out)
    }

    /// The prefix (`C`, category, 0) of each category the index holds, found by seeking
    /// from one category to the next rather than scanning their records.
    fn category_prefixes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut from = b"C".to_vec();
        while let Some(kv) = self.db.range(from.as_slice()..).next() {
            let (k, _) = kv?;
            if k.first() != Some(&b'C') {
                break;
            }
            let end = k.iter().position(|b| *b == 0).ok_or_else(|| StoreError::Corrupt {
                key: hex::encode(&k),
                why: "bad category index key".into(),
            })?;
            let prefix = k[..=end].to_vec();
            // Past every key of this category: its terminating 0 raised to 1.
            from = prefix.clone();
            if let Some(last) = from.last_mut() {
                *last = 1;
            }
            out.push(prefix);
        }
        Ok(out)
    }

    /// How many records are held (live or tombstones).
    pub fn record_count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Count the records by reading them all.
    fn count_records(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for kv in self.db.scan_prefix(b"R") {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    /// Mark a store just restored from a backup: every stream's head is the backup's,
    /// reconciled with no peer yet ([`Restored`]). What a backup of a restored node still
    /// had waiting (given up, to be made again) waits on.
    pub fn mark_restored(&self) -> Result<(), StoreError> {
        let before = self.restored()?.unwrap_or_default();
        let mark = Restored { heads: self.streams()?, reconciled: Vec::new(), ..before };
        self.db.insert(RESTORED_KEY, enc(&mark)?)?;
        Ok(())
    }

    /// What a restore left to reconcile, if this store was restored.
    pub fn restored(&self) -> Result<Option<Restored>, StoreError> {
        self.view().restored()
    }

    /// Every stream this node holds something of, with its head.
    pub fn streams(&self) -> Result<Vec<(StreamKey, u64)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"Q") {
            let (k, v) = kv?;
            let bad = || StoreError::Corrupt { key: hex::encode(&k), why: "bad stream key".into() };
            let origin = member_code(k.get(1..3));
            let agreement = k
                .get(3..k.len().saturating_sub(1))
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok());
            let (Some(origin), Some(agreement)) = (origin, agreement) else { return Err(bad()) };
            out.push((StreamKey { origin, agreement }, u64_of(&k, &v)?));
        }
        Ok(out)
    }

    /// Expiry index keys with entries at or before `now_ms`, in order of their earliest,
    /// until at least `limit` entries are due (or none is left).
    pub fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<DueExpiries>, StoreError> {
        let hi = key(&[b"E", &time_key(now_ms), &[0xff]]);
        let (mut out, mut n) = (Vec::new(), 0);
        for kv in self.db.range(b"E".to_vec()..hi) {
            if n >= limit {
                break;
            }
            let (k, v) = kv?;
            let due = due_expiries(&k, &v, now_ms)?;
            n += due.due.len();
            out.push(due);
        }
        Ok(out)
    }

    /// A round of a walk over every projection held, in stream order: at most `limit`
    /// from `from` (the first when `None`), and where the next round starts (`None` once
    /// the walk has reached the end).
    pub fn walk_projections(
        &self,
        from: Option<&WalkCursor>,
        limit: usize,
    ) -> Result<(Vec<Projection>, Option<WalkCursor>), StoreError> {
        let (start, skip) = from.map_or_else(|| (b"S".to_vec(), 0), |c| (c.block.clone(), c.from));
        let (mut out, mut scan) = (Vec::new(), self.values.scan());
        let mut read = 0;
        for kv in self.db.range(start.as_slice()..) {
            let (k, v) = kv?;
            if k.first() != Some(&b'S') {
                return Ok((out, None));
            }
            // One key or value that does not decode (or read) must not stop the walk at it
            // for good.
            let (first, block) = match read_block(&k, &v) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "a projection block does not decode; the walk goes past it");
                    continue;
                }
            };
            let skip = if *k == *start { u64::from(skip) } else { 0 };
            for (seq, place) in block.entries(first).filter(|(seq, _)| seq - first >= skip) {
                read += 1;
                let pk = blocks::projection_key_of(&k, seq);
                match self.read_now(&mut scan, &pk, Lane::Projections, place) {
                    Ok(Some(v)) => match dec(&pk, &v) {
                        Ok(p) => out.push(p),
                        Err(e) => {
                            tracing::warn!(error = %e, "a projection held does not decode; the walk goes past it")
                        }
                    },
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a projection held does not read; the walk goes past it")
                    }
                }
                if read == limit {
                    let from = (seq - first + 1) as u8;
                    return Ok((out, Some(WalkCursor { block: k.to_vec(), from })));
                }
            }
        }
        Ok((out, None))
    }

    /// The projections a stream holds in `from..=to`, in order, at most `limit`: their
    /// numbers and places.
    fn held_in(
        &self,
        s: &StreamKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Place)>, StoreError> {
        let space = stream_space(b"S", s);
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        for kv in self.db.range(blocks::block_key(&space, from)..=blocks::block_key(&space, to)) {
            let (k, v) = kv?;
            let (first, block) = read_block(&k, &v)?;
            for (seq, place) in block.entries(first) {
                if seq > to {
                    return Ok(out);
                }
                if seq >= from {
                    out.push((seq, place));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Held sequence numbers of a stream above `after`, in order, at most `limit`.
    pub fn held_above(&self, s: &StreamKey, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
        Ok(self.held_in(s, first, u64::MAX, limit)?.into_iter().map(|(seq, _)| seq).collect())
    }

    /// Numbers of a stream in `from..=to` marked withheld on the word of a peer other than
    /// its origin alone, in order, at most `limit`.
    pub fn unconfirmed_withheld(
        &self,
        s: &StreamKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let base = stream_space(b"U", s);
        let (lo, hi) = (unconfirmed_key(s, from), unconfirmed_key(s, to));
        let mut out = Vec::new();
        for kv in self.db.range(lo..=hi).take(limit) {
            let (k, _) = kv?;
            out.push(u64_of(&k, &k[base.len()..])?);
        }
        Ok(out)
    }

    /// Numbers of a stream this node declined itself, in order, at most `limit`.
    pub fn declined(&self, s: &StreamKey, limit: usize) -> Result<Vec<u64>, StoreError> {
        let base = stream_space(b"D", s);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&base).take(limit) {
            let (k, _) = kv?;
            out.push(u64_of(&k, &k[base.len()..])?);
        }
        Ok(out)
    }

    /// Projections of a stream in `from..=to`, in order, at most `limit`.
    pub fn projections(
        &self,
        s: &StreamKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Projection>, StoreError> {
        let (mut out, mut scan) = (Vec::new(), self.values.scan());
        for (seq, place) in self.held_in(s, from, to, limit)? {
            let k = projection_key(s, seq);
            if let Some(v) = self.read_now(&mut scan, &k, Lane::Projections, place)? {
                out.push(dec(&k, &v)?);
            }
        }
        Ok(out)
    }

    /// Feedback received on a record.
    pub fn feedback_of(&self, id: &RecordId) -> Result<Vec<tamga_protocol::Feedback>, StoreError> {
        let prefix = key(&[b"F", &id.0]);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push(dec(&k, &v)?);
        }
        Ok(out)
    }

    /// Feedback given and not yet delivered, for `origin` (or all when `None`), at most
    /// `limit`, each with the key it is kept under: in key order from just after `after`,
    /// then from the first up to `after` (so that reads that each start where the last
    /// one ended come round to every entry, however many before it stay).
    pub fn feedback_outbox(
        &self,
        origin: Option<MemberCode>,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, tamga_protocol::Feedback)>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let (first, end) = (b"B".to_vec(), b"C".to_vec());
        let rest =
            self.db.range((after.map_or(Included(first.clone()), |k| Excluded(k.0.clone())), Excluded(end)));
        let before = after.map(|k| self.db.range((Included(first), Included(k.0.clone()))));
        let mut out = Vec::new();
        for kv in rest.chain(before.into_iter().flatten()) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let f: tamga_protocol::Feedback = dec(&k, &v)?;
            if origin.is_none_or(|o| o == f.origin) {
                out.push((OutboxKey(k.to_vec()), f));
            }
        }
        Ok(out)
    }

    /// How many pieces of feedback given wait in the outbox, per origin they go to. Reads
    /// the keys only: the origin follows the record id in both key forms ([`OutboxKey`]).
    pub fn feedback_waiting(&self) -> Result<BTreeMap<MemberCode, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for k in self.db.scan_prefix(b"B").keys() {
            let k = k?;
            let origin = member_code(k.get(33..35)).ok_or_else(|| StoreError::Corrupt {
                key: hex::encode(&k),
                why: "no origin in an outbox key".into(),
            })?;
            *out.entry(origin).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// The audit chain head: last sequence number and its hash.
    pub fn audit_head(&self) -> Result<Option<(u64, Digest)>, StoreError> {
        let Some(v) = self.db.get(b"H")? else { return Ok(None) };
        if v.len() != 40 {
            return Err(StoreError::Corrupt { key: "48".into(), why: "audit head is not 40 bytes".into() });
        }
        let seq = u64_of(b"H", &v[..8])?;
        let hash = RecordId::try_from_slice(&v[8..])
            .ok_or_else(|| StoreError::Corrupt { key: "48".into(), why: "bad head hash".into() })?;
        Ok(Some((seq, hash)))
    }

    /// Audit entries with sequence numbers in `from..=to`, in order: (seq, stored hash, bytes).
    pub fn audit_entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Digest, Vec<u8>), StoreError>> + '_ {
        let lo = key(&[b"A", &from.to_be_bytes()]);
        let hi = key(&[b"A", &to.to_be_bytes()]);
        let mut scan = self.values.scan();
        self.db.range(lo..=hi).map(move |kv| {
            let (k, v) = kv?;
            let seq = u64_of(&k, &k[1..])?;
            let (hash, bytes) = audit_entry_of(&k, value_in(&mut scan, &k, &v)?)?;
            Ok((seq, hash, bytes.to_vec()))
        })
    }

    /// Every key and value, each value as written (read from the values files where it
    /// lies there), and each projection under its own key (`P`) where its block sorts, in
    /// place of the block: for backups, whose format knows neither the files nor the blocks.
    /// The caller holds the write path still.
    pub fn dump(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        let mut scan = self.values.scan();
        let pairs = self.db.iter().filter(|kv| kv.as_ref().map_or(true, |(k, _)| !is_values_bookkeeping(k)));
        pairs.flat_map(move |kv| -> Vec<Result<Pair, StoreError>> {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return vec![Err(e.into())],
            };
            if k.first() != Some(&b'S') {
                return vec![value_in(&mut scan, &k, &v).map(|v| (k.to_vec(), v.to_vec()))];
            }
            let (first, block) = match read_block(&k, &v) {
                Ok(found) => found,
                Err(e) => return vec![Err(e)],
            };
            block
                .entries(first)
                .map(|(seq, place)| {
                    let v = scan.read(Lane::Projections, place)?.to_vec();
                    Ok((blocks::projection_key_of(&k, seq), v))
                })
                .collect()
        })
    }

    /// Load raw pairs produced by [`Store::dump`] into an empty store (restore); a
    /// an older schema's pairs are upgraded.
    pub fn load_raw(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        // Projections come under their own keys, never as blocks (see [`Store::dump`]).
        if let Some((k, _)) = pairs.iter().find(|(k, _)| k.first() == Some(&b'S')) {
            let why = "a backup holds no projection blocks".into();
            return Err(StoreError::Corrupt { key: hex::encode(k), why });
        }
        // The values files' bookkeeping was the backed-up store's, not this one's.
        let pairs = pairs.into_iter().filter(|(k, _)| !is_values_bookkeeping(k));
        let sealed = self.seal_writes(pairs.map(|(k, v)| (k, Some(v))), |_| false)?;
        self.apply(sealed)?;
        if let Some(found) = stored_schema(&self.db)?.filter(|f| *f != SCHEMA_VERSION && schema_readable(*f))
        {
            self.upgrade(found)?;
        }
        let count = self.count_records()?;
        self.db.insert(RECORD_COUNT_KEY, &count.to_be_bytes())?;
        self.records.store(count, Ordering::Relaxed);
        self.db.flush()?;
        Ok(())
    }

    /// Insert raw pairs in one batch, outside the keyspace (the `tamga bench` baseline of
    /// what sled itself costs; never used on a node's store).
    pub fn raw_insert(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in pairs {
            b.insert(k, v);
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    /// Bytes the store occupies on disk: sled's files and the values files.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.values.size()
    }

    /// The part of [`Store::size_on_disk`] that the values files occupy.
    pub fn values_on_disk(&self) -> u64 {
        self.values.size()
    }
}

// ---------------------------------------------------------------------------------------
// The audit log's indexes and checkpoints (used by `audit_index` and the writer).
// ---------------------------------------------------------------------------------------

const AUDIT_INDEXED_KEY: &[u8] = b"Maudit_index";

/// Most sequence numbers in one posting key of an audit index.
pub const MAX_POSTINGS_PER_KEY: usize = 4096;

/// A member code from its two bytes in a key or value.
fn member_code(bytes: Option<&[u8]>) -> Option<MemberCode> {
    std::str::from_utf8(bytes?).ok()?.parse().ok()
}

/// Read one expiry index key: its stream and its entries, split at `now_ms`.
fn due_expiries(k: &[u8], v: &[u8], now_ms: i64) -> Result<DueExpiries, StoreError> {
    let bad = || StoreError::Corrupt { key: hex::encode(k), why: "bad expiry index entry".into() };
    let origin = member_code(k.get(9..11));
    let rest = k.get(11..).ok_or_else(bad)?;
    let (name, seq) = rest.split_at(rest.len().saturating_sub(9));
    let agreement = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok());
    let seq = seq.get(1..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
    let at = k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(time_of);
    let (Some(origin), Some(agreement), Some(seq), Some(at)) = (origin, agreement, seq, at) else {
        return Err(bad());
    };
    let entries: Vec<(u64, i64)> = if v.is_empty() {
        // An earlier build's key: one projection, its expiry the key's time.
        vec![(seq, at)]
    } else {
        if !v.len().is_multiple_of(16) {
            return Err(bad());
        }
        v.chunks_exact(16)
            .map(|c| {
                let (s, t) = c.split_at(8);
                let s = u64::from_be_bytes(s.try_into().unwrap_or_default());
                let t = time_of(t.try_into().unwrap_or_default());
                (s, t)
            })
            .collect()
    };
    let (due, rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|&(_, t)| t <= now_ms);
    Ok(DueExpiries {
        key: k.to_vec(),
        stream: StreamKey { origin, agreement },
        due: due.into_iter().map(|(s, _)| s).collect(),
        rest,
    })
}

fn audit_index_prefix(kind: u8, value: &[u8]) -> Vec<u8> {
    key(&[b"I", &[kind], value, &[0]])
}

fn decode_postings(k: &[u8], v: &[u8]) -> Result<Vec<u64>, StoreError> {
    if !v.len().is_multiple_of(8) {
        return Err(StoreError::Corrupt {
            key: hex::encode(k),
            why: "posting list is not 8-byte aligned".into(),
        });
    }
    Ok(v.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())).collect())
}

/// One posting key of the audit indexes as stored ([`Store::for_each_audit_posting_list`]):
/// `I`, kind, value, 0, first seq, and the sequence numbers its value lists.
#[derive(Debug, Clone, Copy)]
pub struct PostingList<'a> {
    /// The index kind (`audit_index::KIND_*`).
    pub kind: u8,
    /// The value indexed.
    pub value: &'a [u8],
    /// The sequence number the key names: the first it lists, when written by the writer.
    pub first: u64,
    /// The sequence numbers listed, in stored order.
    pub seqs: &'a [u64],
}

fn peer_checkpoint_key(cp: &Checkpoint) -> Vec<u8> {
    key(&[b"J", &cp.member.as_bytes(), &cp.seq.to_be_bytes(), &cp.head.0])
}

impl WriteBatch {
    /// Entry `seq` has `value` for audit index `kind`. Call in increasing `seq` order.
    ///
    /// A sled key costs far more to write than its bytes, so postings are not one key
    /// each: the sequence numbers a batch adds to one (kind, value) list are written as
    /// one key `I kind value 0 first-seq` whose value is the numbers, u64 BE each (split
    /// every [`MAX_POSTINGS_PER_KEY`]).
    pub fn put_audit_index(&mut self, kind: u8, value: &[u8], seq: u64) {
        self.postings.push((audit_index_prefix(kind, value), seq));
    }

    /// The sled batch: the writes (see [`Store::seal_writes`]), and the gathered postings
    /// grouped by list.
    /// The keys of the records new to the store (`new_records`) and of the audit entries
    /// are held nowhere in it, so sealing looks for no value they replace.
    fn seal(self, store: &Store, new_records: &HashSet<Vec<u8>>) -> Result<Sealed, StoreError> {
        let fresh = |k: &[u8]| k.first() == Some(&b'A') || new_records.contains(k);
        let mut sealed = store.seal_writes(self.writes, fresh)?;
        let out = &mut sealed.batch;
        let mut lists: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        for (prefix, seq) in self.postings {
            lists.entry(prefix).or_default().push(seq);
        }
        for (prefix, seqs) in lists {
            for chunk in seqs.chunks(MAX_POSTINGS_PER_KEY) {
                let first = chunk.first().copied().unwrap_or_default();
                let v: Vec<u8> = chunk.iter().flat_map(|s| s.to_be_bytes()).collect();
                out.insert(key(&[&prefix, &first.to_be_bytes()]), v);
            }
        }
        let mut streams: HashMap<StreamKey, Vec<(u64, i64)>> = HashMap::new();
        for (s, seq, at) in self.expiries {
            streams.entry(s).or_default().push((seq, at));
        }
        for (s, list) in streams {
            for chunk in list.chunks(MAX_EXPIRIES_PER_KEY) {
                if let Some(k) = expiry_list_key(&s, chunk) {
                    out.insert(k, expiry_list_value(chunk));
                }
            }
        }
        Ok(sealed)
    }

    /// The audit indexes are complete through entry `seq`.
    pub fn set_audit_indexed(&mut self, seq: u64) {
        self.put(AUDIT_INDEXED_KEY.to_vec(), seq.to_be_bytes().to_vec());
    }

    /// A checkpoint this node signed of its own log.
    pub fn put_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), StoreError> {
        self.put(key(&[b"K", &cp.seq.to_be_bytes()]), enc(cp)?);
        Ok(())
    }

    /// A checkpoint a peer showed this node of the peer's log (kept, with any other of
    /// the same sequence number: two different heads for one number are evidence).
    pub fn put_peer_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), StoreError> {
        self.put(peer_checkpoint_key(cp), enc(cp)?);
        Ok(())
    }
}

impl Store {
    /// One audit entry: its stored hash and bytes.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<(Digest, Vec<u8>)>, StoreError> {
        let k = key(&[b"A", &seq.to_be_bytes()]);
        let Some(v) = self.db.get(&k)? else { return Ok(None) };
        let value = self.value(&k, &v)?;
        let (hash, bytes) = audit_entry_of(&k, &value)?;
        Ok(Some((hash, bytes.to_vec())))
    }

    /// A value as written: read from the values files when the tree holds where it lies.
    fn value<'v>(&self, k: &[u8], v: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
        match placed(k, v) {
            Some((lane, place)) => Ok(Cow::Owned(self.values.read(lane, place)?)),
            None => Ok(Cow::Borrowed(v)),
        }
    }

    /// Sequence numbers in `from..=to` that index `kind` lists under `value`, in order.
    pub fn audit_index(
        &self,
        kind: u8,
        value: &[u8],
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<u64, StoreError>> + '_ {
        let prefix = audit_index_prefix(kind, value);
        let at = |s: u64| key(&[&prefix, &s.to_be_bytes()]);
        // The posting key that may hold `from` starts at or before it; the rest after it.
        let first = self.db.range(prefix.clone()..=at(from)).next_back();
        let rest = self.db.range(at(from.saturating_add(1))..=at(to.max(from)));
        first.into_iter().chain(rest).flat_map(move |kv| {
            let seqs = kv.map_err(StoreError::from).and_then(|(k, v)| decode_postings(&k, &v));
            let items: Vec<Result<u64, StoreError>> = match seqs {
                Ok(s) => s.into_iter().filter(|s| (from..=to).contains(s)).map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            items
        })
    }

    /// Call `f` with each audit entry in `from..=to`, in order, without copying it, until
    /// it returns false. A damaged entry is passed as an error (and iteration goes on).
    pub fn for_each_audit_entry(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(Result<(u64, Digest, &[u8]), StoreError>) -> bool,
    ) {
        let lo = key(&[b"A", &from.to_be_bytes()]);
        let hi = key(&[b"A", &to.to_be_bytes()]);
        let mut scan = self.values.scan();
        for kv in self.db.range(lo..=hi) {
            let go = match kv {
                Err(e) => f(Err(e.into())),
                Ok((k, v)) => match u64_of(&k, &k[1..]) {
                    Err(e) => f(Err(e)),
                    Ok(seq) => match value_in(&mut scan, &k, &v).and_then(|v| audit_entry_of(&k, v)) {
                        Ok((hash, bytes)) => f(Ok((seq, hash, bytes))),
                        Err(e) => f(Err(e)),
                    },
                },
            };
            if !go {
                break;
            }
        }
    }

    /// Call `f` with each posting key of the audit indexes, in key order, until it returns
    /// false: those whose kind and value (the key after `I`) lie in `from..to` (`None`: to
    /// the last). Read-only, for `audit verify --indexes`. A key or value that does not
    /// decode is passed as an error naming the key, and the walk goes on.
    pub fn for_each_audit_posting_list(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        mut f: impl FnMut(Result<PostingList<'_>, StoreError>) -> bool,
    ) {
        let lo = key(&[b"I", from]);
        let hi = to.map_or_else(|| b"J".to_vec(), |t| key(&[b"I", t]));
        let mut seqs = Vec::new();
        for kv in self.db.range(lo..hi) {
            let item = kv.map_err(StoreError::from).and_then(|(k, v)| {
                // `I`, kind, value, 0, first seq (8 bytes): the value may hold zero bytes.
                let bad = || StoreError::Corrupt { key: hex::encode(&k), why: "bad audit index key".into() };
                let split = k.len().checked_sub(9).filter(|s| *s >= 2).ok_or_else(bad)?;
                if k.get(split) != Some(&0) {
                    return Err(bad());
                }
                let first = u64_of(&k, &k[split + 1..])?;
                seqs = decode_postings(&k, &v)?;
                Ok((k, split, first))
            });
            let go = match item {
                Ok((k, split, first)) => {
                    f(Ok(PostingList { kind: k[1], value: &k[2..split], first, seqs: &seqs }))
                }
                Err(e) => f(Err(e)),
            };
            if !go {
                break;
            }
        }
    }

    /// The audit sequence number through which the indexes are complete (0: none).
    pub fn audit_indexed(&self) -> Result<u64, StoreError> {
        self.db
            .get(AUDIT_INDEXED_KEY)?
            .map(|v| u64_of(AUDIT_INDEXED_KEY, &v))
            .transpose()
            .map(|o| o.unwrap_or(0))
    }

    /// The newest checkpoint this node signed of its own log (what it shows peers in hello).
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        match self.db.scan_prefix(b"K").next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some(dec(&k, &v)?))
            }
            None => Ok(None),
        }
    }

    /// Every checkpoint this node signed of its own log, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.db
            .scan_prefix(b"K")
            .map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| dec(&k, &v)))
            .collect()
    }

    /// Checkpoints peers showed this node (of one member's log, or of every member's),
    /// by member then sequence number.
    pub fn peer_checkpoints(&self, member: Option<MemberCode>) -> Result<Vec<Checkpoint>, StoreError> {
        let prefix = match member {
            Some(m) => key(&[b"J", &m.as_bytes()]),
            None => b"J".to_vec(),
        };
        self.db
            .scan_prefix(prefix)
            .map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| dec(&k, &v)))
            .collect()
    }

    /// TAMPER HOOK, for the audit tamper tests only: read the raw stored value of audit
    /// entry `seq` (32-byte hash, then the JSON bytes).
    #[doc(hidden)]
    pub fn tamper_audit_raw(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(&[b"A", &seq.to_be_bytes()]);
        let Some(v) = self.db.get(&k)? else { return Ok(None) };
        Ok(Some(self.value(&k, &v)?.into_owned()))
    }

    /// TAMPER HOOK, for the audit tamper tests only (never called by the node): overwrite
    /// (`Some`) or delete (`None`) the raw stored value of audit entry `seq`, bypassing the
    /// writer, its chain and its indexes, then flush. Works on a stopped node's store.
    #[doc(hidden)]
    pub fn tamper_audit_set(&self, seq: u64, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let k = key(&[b"A", &seq.to_be_bytes()]);
        let sealed = self.seal_writes([(k, value)], |_| false)?;
        self.apply(sealed)?;
        self.flush_blocking()
    }
}

/// The value of key `k` as written, read through `scan` when it lies in the values files.
fn value_in<'v>(scan: &'v mut values::Scan<'_>, k: &[u8], v: &'v [u8]) -> Result<&'v [u8], StoreError> {
    match placed(k, v) {
        Some((lane, place)) => scan.read(lane, place),
        None => Ok(v),
    }
}

impl Store {
    /// The value of key `k` that lay at `place` in `lane`'s files when its key (or
    /// block) was read, read through `scan`; `None` if a commit removed it since.
    fn read_now(
        &self,
        scan: &mut values::Scan<'_>,
        k: &[u8],
        lane: Lane,
        place: Place,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match scan.read(lane, place) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(e) => reread(&self.db, &self.values, k, place, e),
        }
    }
}

/// The value of key `k` after reading it at `place` failed with `e`. A value is replaced
/// or removed by a commit, and overwritten once that is durable: a read that found its
/// place before the commit, and read it after, reads the key again (a projection's: its
/// block). The same place again is damage (`e`); no key now, `None`.
fn reread(
    db: &sled::Db,
    values: &values::Values,
    k: &[u8],
    place: Place,
    e: StoreError,
) -> Result<Option<Vec<u8>>, StoreError> {
    let now = match blocks::slot_of(k) {
        Some((block, seq)) => block_at(db, &block)?.get(seq).map(|p| p.encode().into()),
        None => db.get(k)?,
    };
    let Some(now) = now else { return Ok(None) };
    match placed(k, &now) {
        Some((_, same)) if same == place => Err(e),
        Some((lane, moved)) => values.read(lane, moved).map(Some),
        None => Ok(Some(now.to_vec())),
    }
}

/// The projection block under key `k` (empty when there is none).
fn block_at(db: &sled::Db, k: &[u8]) -> Result<Block, StoreError> {
    match db.get(k)? {
        Some(v) => Block::decode(k, &v),
        None => Ok(Block::default()),
    }
}

/// Block key `k`'s first number and the block its value `v` is.
fn read_block(k: &[u8], v: &[u8]) -> Result<(u64, Block), StoreError> {
    Ok((blocks::first_seq(k)?, Block::decode(k, v)?))
}

/// Block `k` as `changed` has it, read from the tree the first time.
fn block_in<'c>(
    db: &sled::Db,
    changed: &'c mut BTreeMap<Vec<u8>, Block>,
    k: &[u8],
) -> Result<&'c mut Block, StoreError> {
    Ok(match changed.entry(k.to_vec()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => e.insert(block_at(db, k)?),
    })
}

/// The smaller of two keys found, either or both.
fn first_of(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Where the value of key `k` lies in the values files, if `v` (its value in the tree) is
/// a place: 12 bytes under a key of a lane. Any other value is the bytes themselves (as
/// schemas before 5 kept them).
fn placed(k: &[u8], v: &[u8]) -> Option<(Lane, Place)> {
    Some((Lane::of_key(k)?, Place::decode(v)?))
}

/// An audit entry's stored hash and bytes, from the value of its key `k`.
fn audit_entry_of<'v>(k: &[u8], v: &'v [u8]) -> Result<(Digest, &'v [u8]), StoreError> {
    match v.get(..32).and_then(Digest::try_from_slice) {
        Some(hash) => Ok((hash, &v[32..])),
        None => Err(StoreError::Corrupt { key: hex::encode(k), why: "short audit entry".into() }),
    }
}

/// Reading a record id from stored bytes.
trait FromSlice: Sized {
    fn try_from_slice(b: &[u8]) -> Option<Self>;
}

impl FromSlice for Digest {
    fn try_from_slice(b: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(b).ok().map(Digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tamga_protocol::Classification;

    fn rec(n: u8, cat: &str, origin: &str, t: i64) -> StoredRecord {
        StoredRecord {
            id: Digest([n; 32]),
            header: RecordHeader {
                category: cat.parse().expect("valid"),
                classification: Classification::Public,
                origin: origin.parse().expect("valid"),
                created_ms: t,
                supersedes: None,
                expires_ms: None,
            },
            body: BTreeMap::new(),
            withheld: 0,
            source: Source::Local,
            stored_ms: t,
            salts: BTreeMap::new(),
            state: RecordState::Live,
            shares: Vec::new(),
        }
    }

    // A values file the tree points into, lost: the store does not open (else the lane
    // would start its files again at that number, and old keys read new values).
    #[test]
    fn a_values_file_the_tree_points_into_missing_stops_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("opens");
            let mut b = WriteBatch::default();
            b.put_record(&rec(1, "ipr.mark", "RU", 1)).expect("enc");
            s.commit(b).expect("commits");
            s.flush_blocking().expect("flushes");
        }
        let values = dir.path().join(values::DIR_NAME);
        let files: Vec<_> =
            std::fs::read_dir(&values).expect("lists").map(|e| e.expect("entry").path()).collect();
        assert!(!files.is_empty());
        for f in &files {
            let aside = dir.path().join(f.file_name().expect("a name"));
            std::fs::rename(f, &aside).expect("moves");
            let e = Store::open(dir.path()).map(|_| ()).expect_err("refused");
            let named = f.display().to_string();
            assert!(
                matches!(&e, StoreError::Corrupt { key, why } if *key == named && why.starts_with("missing")),
                "{e}"
            );
            std::fs::rename(&aside, f).expect("moves back");
        }
        // The directory gone with them.
        std::fs::rename(&values, dir.path().join("aside")).expect("moves");
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { .. })));
        std::fs::rename(dir.path().join("aside"), &values).expect("moves back");
        assert_eq!(Store::open(dir.path()).expect("opens").record_count(), 1);
    }

    #[test]
    fn the_record_count_counts_each_record_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("opens");
            let mut b = WriteBatch::default();
            b.put_record(&rec(1, "ipr.mark", "RU", 1)).expect("enc");
            // The same record twice in one batch, as a receive and a tombstone can put it.
            b.put_record(&rec(2, "ipr.mark", "RU", 2)).expect("enc");
            b.put_record(&rec(2, "ipr.mark", "RU", 2)).expect("enc");
            s.commit(b).expect("commits");
            assert_eq!(s.record_count(), 2);
            // A record already held, replaced (a tombstone), and one new.
            let mut b = WriteBatch::default();
            let mut gone = rec(1, "ipr.mark", "RU", 1);
            gone.state = RecordState::Revoked;
            b.put_record(&gone).expect("enc");
            b.put_record(&rec(3, "rms.method", "KZ", 3)).expect("enc");
            s.commit(b).expect("commits");
            assert_eq!(s.record_count(), 3);
            // A batch without records leaves it alone.
            let mut b = WriteBatch::default();
            b.set_audit_indexed(7);
            s.commit(b).expect("commits");
            assert_eq!(s.record_count(), 3);
            assert_eq!(s.count_records().expect("scans"), 3);
            s.flush_blocking().expect("flushes");
        }
        {
            let s = Store::open(dir.path()).expect("reopens");
            assert_eq!(s.record_count(), 3, "kept under Mrecords");
            // A store written before the count was kept: counted once when opened.
            s.db.remove(RECORD_COUNT_KEY).expect("removes");
            s.flush_blocking().expect("flushes");
        }
        let s = Store::open(dir.path()).expect("reopens");
        assert_eq!(s.record_count(), 3, "counted when the key is missing");
        // A restore counts what it loaded.
        let pairs: Vec<_> = s.dump().collect::<Result<_, _>>().expect("dumps");
        drop(s);
        let other = tempfile::tempdir().expect("tempdir");
        let r = Store::open(other.path()).expect("opens");
        r.load_raw(pairs.into_iter().filter(|(k, _)| k.as_slice() != RECORD_COUNT_KEY).collect())
            .expect("loads");
        assert_eq!(r.record_count(), 3);
    }

    #[test]
    fn a_received_record_is_read_with_its_projections_body() {
        use tamga_protocol::{EntryKind, Envelope, Record, SaltKey, SaltedRecord};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let ru: MemberCode = "RU".parse().expect("valid");
        let agreement: AgreementId = "sco-rms-2013".parse().expect("valid");
        let record = Record {
            header: RecordHeader {
                category: "rms.method".parse().expect("valid"),
                classification: Classification::Public,
                origin: ru,
                created_ms: 1,
                supersedes: None,
                expires_ms: None,
            },
            body: BTreeMap::from([
                ("title".to_owned(), Value::Text("a method".into())),
                ("summary".to_owned(), Value::Text("withheld from KZ".into())),
            ]),
        };
        let salted = SaltedRecord::new(record, &SaltKey::from_bytes([7; 32]));
        let envelope = Envelope {
            kind: EntryKind::Share,
            agreement: agreement.clone(),
            audience: vec!["KZ".parse().expect("valid")],
            seq: 1,
            expires_ms: i64::MAX,
        };
        let p = salted
            .project(|f| f == "summary", envelope, &tamga_config::demo::demo_signing_key(ru))
            .expect("projects");
        let received = StoredRecord {
            id: salted.id,
            header: p.header.clone(),
            body: p.revealed_body(),
            withheld: 1,
            source: Source::Received { from: ru, agreement: agreement.clone() },
            stored_ms: 2,
            salts: BTreeMap::new(),
            state: RecordState::Live,
            shares: vec![(agreement, 1)],
        };
        assert_eq!(received.body.keys().collect::<Vec<_>>(), vec!["title"]);
        let mut b = WriteBatch::default();
        b.put_record(&received).expect("enc");
        b.put_projection(&p).expect("enc");
        s.commit(b).expect("commits");
        let stored = s.view().record_as_stored(&salted.id).expect("reads").expect("held");
        assert!(stored.body.is_empty(), "kept once, in the projection");
        assert_eq!(s.record(&salted.id).expect("reads"), Some(received.clone()));
        assert_eq!(s.records(&RecordFilter::default(), 10).expect("lists"), vec![received.clone()]);

        // Stored with its body by an earlier build: read as stored.
        s.db.insert(key(&[b"R", &salted.id.0]), enc(&received).expect("enc")).expect("writes");
        assert_eq!(s.record(&salted.id).expect("reads"), Some(received.clone()));

        // A tombstone has no body, and none is read into it.
        let mut b = WriteBatch::default();
        b.put_record(&StoredRecord { body: BTreeMap::new(), state: RecordState::Revoked, ..received })
            .expect("enc");
        s.commit(b).expect("commits");
        let gone = s.record(&salted.id).expect("reads").expect("held");
        assert!(gone.body.is_empty() && gone.state == RecordState::Revoked);
    }

    // A projection's bytes lie in the values files; purged, they are overwritten once the
    // tree is durable, and a file holding nothing else is deleted.
    #[test]
    fn a_purged_projection_leaves_no_bytes_behind_once_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("opens");
        Arc::get_mut(&mut s.values).expect("one holder").set_segment_bytes(1024);
        let stream = rms_stream();
        let all: Vec<Projection> = (1..=12).map(|seq| signed_share(&stream, seq)).collect();
        let mut b = WriteBatch::default();
        for p in &all {
            b.put_projection(p).expect("encodes");
        }
        s.commit(b).expect("commits");
        s.flush_blocking().expect("flushes");
        let on_disk = || {
            let mut bytes = Vec::new();
            for e in std::fs::read_dir(dir.path().join(values::DIR_NAME)).expect("lists") {
                bytes.extend(std::fs::read(e.expect("entry").path()).expect("reads"));
            }
            bytes
        };
        let holds =
            |bytes: &[u8], seq: u64| bytes.windows(11).any(|w| w == format!("marker-{seq:04}").as_bytes());
        let files = s.values.files();
        assert!(files >= 2, "{files} files");
        assert!((1..=12).all(|seq| holds(&on_disk(), seq)));
        assert!(block_at(&s.db, &projection_block_key(&stream, 1)).expect("reads").get(1).is_some());

        let mut b = WriteBatch::default();
        for p in &all[..8] {
            b.purge_projection(&stream, &p.envelope).expect("encodes");
        }
        s.commit(b).expect("commits");
        assert!(holds(&on_disk(), 1), "not before the tree is durable");
        s.flush_blocking().expect("flushes");
        let bytes = on_disk();
        assert!((1..=8).all(|seq| !holds(&bytes, seq)), "purged bytes are gone");
        assert!((9..=12).all(|seq| holds(&bytes, seq)));
        assert!(s.values.files() < files, "a file holding only purged values is deleted");
        assert_eq!(s.size_on_disk(), s.db.size_on_disk().expect("sizes") + bytes.len() as u64);
        drop(s);

        let s = Store::open(dir.path()).expect("reopens");
        for p in &all[8..] {
            assert_eq!(s.projection(&stream, p.envelope.seq).expect("reads").as_ref(), Some(p));
        }
        assert_eq!(s.projection(&stream, 1).expect("reads"), None);
        let listed = s.projections(&stream, 1, 12, 100).expect("reads");
        assert_eq!(listed, all[8..].to_vec());

        // A purge made durable by the engine alone (as by its own background flush), then
        // a crash before the store's flush overwrote it: the next start does.
        let mut b = WriteBatch::default();
        b.purge_projection(&stream, &all[8].envelope).expect("encodes");
        s.commit(b).expect("commits");
        s.db.flush().expect("flushes the tree only");
        drop(s);
        assert!(holds(&on_disk(), 9), "not overwritten yet");
        let s = Store::open(dir.path()).expect("reopens");
        assert!(!holds(&on_disk(), 9), "overwritten at the start");
        assert!((10..=12).all(|seq| holds(&on_disk(), seq)));
        assert_eq!(s.db.scan_prefix(ZERO_PREFIX).count(), 0, "the list is cleared");
        assert_eq!(s.projection(&stream, 10).expect("reads").as_ref(), Some(&all[9]));
    }

    #[test]
    fn records_and_filters_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("opens");
            let mut b = WriteBatch::default();
            b.put_record(&rec(1, "ipr.mark", "RU", -5)).expect("enc");
            b.put_record(&rec(2, "ipr.mark", "KZ", 10)).expect("enc");
            b.put_record(&rec(3, "rms.method", "RU", 20)).expect("enc");
            // A category whose name extends another's: listed in its place, never as it.
            b.put_record(&rec(4, "ipr.marks", "UZ", 15)).expect("enc");
            s.commit(b).expect("commits");
            s.flush_blocking().expect("flushes");
        }
        let s = Store::open(dir.path()).expect("reopens");
        assert_eq!(s.record_count(), 4);
        let ids = |f: &RecordFilter, limit| {
            s.records(f, limit).expect("lists").iter().map(|r| r.id.0[0]).collect::<Vec<_>>()
        };
        let all = RecordFilter::default();
        assert_eq!(ids(&all, 10), vec![3, 4, 2, 1], "newest first, across categories");
        assert_eq!(ids(&all, 2), vec![3, 4]);
        let f = RecordFilter { category: Some("ipr.mark".parse().expect("valid")), ..Default::default() };
        assert_eq!(ids(&f, 10), vec![2, 1]);
        let f = RecordFilter { origin: Some("RU".parse().expect("valid")), ..Default::default() };
        assert_eq!(ids(&f, 10), vec![3, 1]);
        let f = RecordFilter { since_ms: Some(0), ..Default::default() };
        assert_eq!(ids(&f, 10), vec![3, 4, 2], "negative time sorts first");
        let f = RecordFilter {
            category: Some("ipr.mark".parse().expect("valid")),
            origin: Some("KZ".parse().expect("valid")),
            ..Default::default()
        };
        assert_eq!(s.records(&f, 10).expect("lists").len(), 1);
    }

    // One key per category per commit, whose records interleave in time with another
    // key's, beside a key of an earlier build (one record, empty value): each record is
    // listed once, in order, whatever the limit or the time it starts from.
    #[test]
    fn the_category_index_lists_each_record_once_newest_first_across_its_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let commit = |records: &[StoredRecord]| {
            let mut b = WriteBatch::default();
            records.iter().for_each(|r| b.put_record(r).expect("enc"));
            s.commit(b).expect("commits");
        };
        commit(&[rec(1, "ipr.mark", "RU", 10), rec(3, "ipr.mark", "KZ", 30), rec(5, "ipr.mark", "RU", 50)]);
        commit(&[rec(2, "ipr.mark", "RU", 20), rec(4, "ipr.mark", "RU", 40), rec(6, "ipr.mark", "KZ", 60)]);
        // Held already (its entry stays as it is), and one of another category.
        let held_again = StoredRecord { state: RecordState::Expired, ..rec(3, "ipr.mark", "KZ", 30) };
        commit(&[held_again, rec(7, "rms.method", "RU", 35)]);
        let old = rec(8, "ipr.mark", "RU", 45);
        let c = key(&[&category_prefix(&old.header.category), &CategoryEntry::new(45, &old.id).0]);
        s.raw_insert(vec![(key(&[b"R", &old.id.0]), enc(&old).expect("enc")), (c, Vec::new())])
            .expect("writes");
        assert_eq!(s.db.scan_prefix(b"C").count(), 4, "one key per category and commit");

        let ids = |f: &RecordFilter, limit| {
            s.records(f, limit).expect("lists").iter().map(|r| r.id.0[0]).collect::<Vec<_>>()
        };
        let all = RecordFilter::default();
        assert_eq!(ids(&all, 100), vec![6, 5, 8, 4, 7, 3, 2, 1]);
        for limit in 0..9 {
            assert_eq!(ids(&all, limit), [6, 5, 8, 4, 7, 3, 2, 1][..limit].to_vec());
        }
        let f = RecordFilter { since_ms: Some(30), ..Default::default() };
        assert_eq!(ids(&f, 100), vec![6, 5, 8, 4, 7, 3]);
        let f = RecordFilter {
            category: Some("ipr.mark".parse().expect("valid")),
            since_ms: Some(31),
            ..Default::default()
        };
        assert_eq!(ids(&f, 100), vec![6, 5, 8, 4]);
        // Page by page, whatever the page's size: each record once, in order.
        for size in 1..9 {
            let (mut paged, mut f) = (Vec::new(), RecordFilter::default());
            loop {
                let page = s.records(&f, size).expect("lists");
                paged.extend(page.iter().map(|r| r.id.0[0]));
                match page.last() {
                    Some(last) if page.len() == size => f.after = Some(ListCursor::at(last)),
                    _ => break,
                }
            }
            assert_eq!(paged, vec![6, 5, 8, 4, 7, 3, 2, 1], "pages of {size}");
        }
        let cursor = ListCursor::at(&rec(4, "ipr.mark", "RU", 40));
        assert_eq!(cursor.to_string().parse::<ListCursor>(), Ok(cursor));
        assert!("4f".parse::<ListCursor>().is_err() && "zz".repeat(40).parse::<ListCursor>().is_err());
        let f = RecordFilter {
            origin: Some("RU".parse().expect("valid")),
            after: Some(cursor),
            ..Default::default()
        };
        assert_eq!(ids(&f, 100), vec![7, 2, 1], "after a record, whichever filter");
        assert_eq!(s.record(&Digest([3; 32])).expect("reads").map(|r| r.state), Some(RecordState::Expired));

        // A commit of more records of one category than a key lists writes more keys.
        let many: Vec<StoredRecord> = (0..MAX_RECORDS_PER_CATEGORY_KEY as i64 + 1)
            .map(|t| {
                let mut id = [0xee; 32];
                id[..8].copy_from_slice(&t.to_be_bytes());
                StoredRecord { id: Digest(id), ..rec(0, "rms.risk", "UZ", 100 + t) }
            })
            .collect();
        commit(&many);
        assert_eq!(s.db.scan_prefix(key(&[b"C", b"rms.risk", &[0]])).count(), 2);
        let f = RecordFilter { category: Some("rms.risk".parse().expect("valid")), ..Default::default() };
        let listed: Vec<_> =
            s.records(&f, 1000).expect("lists").iter().map(|r| r.header.created_ms).collect();
        assert_eq!(listed, (100..100 + many.len() as i64).rev().collect::<Vec<_>>());
    }

    /// RU's stream under the RMS memorandum.
    fn rms_stream() -> StreamKey {
        StreamKey { origin: "RU".parse().expect("valid"), agreement: "sco-rms-2013".parse().expect("valid") }
    }

    /// Projection `seq` of stream `s` (from RU), signed, its body a marker of its number.
    fn signed_share(s: &StreamKey, seq: u64) -> Projection {
        use tamga_protocol::{EntryKind, Record, SaltKey, SaltedRecord};
        let record = Record {
            header: rec(seq as u8, "rms.method", "RU", seq as i64).header,
            body: BTreeMap::from([("title".to_owned(), Value::Text(format!("marker-{seq:04}")))]),
        };
        let envelope = Envelope {
            kind: EntryKind::Share,
            agreement: s.agreement.clone(),
            audience: vec!["KZ".parse().expect("valid")],
            seq,
            expires_ms: i64::MAX,
        };
        SaltedRecord::new(record, &SaltKey::from_bytes([7; 32]))
            .project(|_| false, envelope, &tamga_config::demo::demo_signing_key(s.origin))
            .expect("projects")
    }

    // A stream's projections are listed 64 numbers to a block key: every read by number,
    // by range and by walk finds them across blocks, and a purge empties a block away.
    #[test]
    fn projections_are_kept_64_numbers_to_a_key_and_read_across_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let stream = rms_stream();
        let held: Vec<u64> = (1..=150).filter(|seq| ![64, 100].contains(seq)).collect();
        for part in held.chunks(70) {
            let mut b = WriteBatch::default();
            for seq in part {
                b.put_projection(&signed_share(&stream, *seq)).expect("encodes");
            }
            s.commit(b).expect("commits");
        }
        assert_eq!(s.db.scan_prefix(b"P").count(), 0, "no key of its own");
        assert_eq!(s.db.scan_prefix(stream_space(b"S", &stream)).count(), 3, "numbers 1-63, 65-127, 128-150");
        for seq in [1, 63, 65, 127, 128, 150] {
            assert_eq!(s.projection(&stream, seq).expect("reads"), Some(signed_share(&stream, seq)));
        }
        assert_eq!(s.projection(&stream, 64).expect("reads"), None);
        assert_eq!(s.held_above(&stream, 0, 1000).expect("reads"), held);
        assert_eq!(s.held_above(&stream, 62, 3).expect("reads"), vec![63, 65, 66]);
        assert_eq!(s.held_above(&stream, u64::MAX, 3).expect("reads"), Vec::<u64>::new());
        let seqs = |ps: Vec<Projection>| ps.iter().map(|p| p.envelope.seq).collect::<Vec<_>>();
        let range = s.projections(&stream, 60, 70, 100).expect("reads");
        assert_eq!(seqs(range), [60, 61, 62, 63, 65, 66, 67, 68, 69, 70]);
        assert_eq!(seqs(s.projections(&stream, 99, 200, 3).expect("reads")), [99, 101, 102]);
        assert_eq!(s.next_known(&stream, 63).expect("reads"), Some(65));
        assert_eq!(s.next_known(&stream, 150).expect("reads"), None);
        // A walk in rounds of 7, whose cursor stops inside and at the end of blocks.
        let (mut walked, mut cursor) = (Vec::new(), None);
        loop {
            let (got, next) = s.walk_projections(cursor.as_ref(), 7).expect("walks");
            walked.extend(seqs(got));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(walked, held);
        let mut b = WriteBatch::default();
        for seq in (128..=150).chain([65]) {
            b.purge_projection(&stream, &share(&stream, seq, &["KZ"])).expect("encodes");
        }
        s.commit(b).expect("commits");
        assert_eq!(s.db.scan_prefix(stream_space(b"S", &stream)).count(), 2, "the emptied block is gone");
        assert_eq!(s.held_above(&stream, 63, 2).expect("reads"), vec![66, 67]);
        assert_eq!(s.projection(&stream, 65).expect("reads"), None);
        assert!(s.view().seq_known(&stream, 65).expect("reads"), "purged");
        assert_eq!(s.next_known(&stream, 127).expect("reads"), Some(128), "its purge mark");
        // A backup holds each under its own key; a block in a backup is refused.
        let pairs: Vec<Pair> = s.dump().collect::<Result<_, _>>().expect("dumps");
        let keys: Vec<&Vec<u8>> = pairs.iter().map(|(k, _)| k).filter(|k| k.first() == Some(&b'P')).collect();
        assert_eq!(keys.len(), held.len() - 24);
        let other = tempfile::tempdir().expect("tempdir");
        let restored = Store::open(other.path()).expect("opens");
        let block = (key(&[&stream_space(b"S", &stream), &0u64.to_be_bytes()]), vec![0; 13]);
        assert!(restored.load_raw(vec![block]).is_err(), "a block in a backup");
        restored.load_raw(pairs).expect("loads");
        assert_eq!(
            restored.held_above(&stream, 0, 1000).expect("reads"),
            s.held_above(&stream, 0, 1000).expect("reads")
        );
        assert_eq!(restored.projection(&stream, 66).expect("reads"), Some(signed_share(&stream, 66)));
    }

    // Schema 6 kept each projection under its own key: its place in the values files, or
    // (schemas before 5) its bytes in the tree. Opening moves both into the blocks.
    #[test]
    fn a_schema_6_store_has_its_projection_keys_moved_into_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stream = rms_stream();
        let all: Vec<Projection> = (1..=6).map(|seq| signed_share(&stream, seq)).collect();
        {
            let s = Store::open(dir.path()).expect("opens");
            let mut batch = sled::Batch::default();
            for p in &all[..3] {
                batch.insert(projection_key(&stream, p.envelope.seq), enc(p).expect("encodes"));
            }
            let bytes: Vec<Vec<u8>> = all[3..].iter().map(|p| enc(p).expect("encodes")).collect();
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            let places = s.values.append(Lane::Projections, &refs).expect("appends");
            for (p, place) in all[3..].iter().zip(&places) {
                batch.insert(projection_key(&stream, p.envelope.seq), place.encode());
            }
            let added: Vec<(Lane, Place)> = places.into_iter().map(|p| (Lane::Projections, p)).collect();
            let counts = s.values.counts_after(&added, &[]);
            for ((lane, segment), count) in &counts {
                batch.insert(values_count_key(*lane, *segment), &count.to_be_bytes());
            }
            batch.insert(SCHEMA_KEY, &6u32.to_be_bytes());
            s.apply(Sealed { batch, counts, added, removed: Vec::new() }).expect("applies");
            s.flush_blocking().expect("flushes");
        }
        for _ in 0..2 {
            let s = Store::open(dir.path()).expect("upgrades, then opens");
            assert_eq!(
                s.db.get(SCHEMA_KEY).expect("reads").as_deref(),
                Some(&SCHEMA_VERSION.to_be_bytes()[..])
            );
            assert_eq!(s.db.scan_prefix(b"P").count(), 0, "the keys went");
            assert_eq!(s.projections(&stream, 1, 6, 10).expect("reads"), all);
            let block = block_at(&s.db, &projection_block_key(&stream, 1)).expect("reads");
            assert_eq!(block.entries(0).count(), 6, "every place in the block");
        }
    }

    /// The envelope of share `seq` of stream `s`, for `audience`.
    fn share(s: &StreamKey, seq: u64, audience: &[&str]) -> Envelope {
        Envelope {
            kind: tamga_protocol::EntryKind::Share,
            agreement: s.agreement.clone(),
            audience: audience.iter().map(|m| m.parse().expect("valid")).collect(),
            seq,
            expires_ms: 0,
        }
    }

    // An origin checks feedback against whom its projection was shared with, also once the
    // projection is purged: its purge mark keeps the audience. A mark made by an earlier
    // build kept none.
    #[test]
    fn a_purged_projections_audience_is_kept_with_its_purge_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let ipr =
            StreamKey { origin: "RU".parse().expect("valid"), agreement: "ipr".parse().expect("valid") };
        let mut b = WriteBatch::default();
        b.purge_projection(&ipr, &share(&ipr, 1, &["KZ", "UZ"])).expect("encodes");
        b.put(gone_key(&ipr, 2), Vec::new());
        s.commit(b).expect("commits");
        let members = |ms: &[&str]| ms.iter().map(|m| m.parse().expect("valid")).collect::<Vec<MemberCode>>();
        assert_eq!(s.audience(&ipr, 1).expect("reads"), Some(members(&["KZ", "UZ"])));
        assert!(s.is_gone(&ipr, 1).expect("reads"));
        assert_eq!(s.audience(&ipr, 2).expect("reads"), None, "an earlier build's mark");
        assert_eq!(s.audience(&ipr, 3).expect("reads"), None, "never held");
    }

    // The expiry index lists a batch's projections of one stream under one key. The sweep
    // takes the entries due and writes the rest back under their earliest expiry; a key
    // of an earlier build (one projection, empty value) is read too.
    #[test]
    fn the_expiry_index_gives_each_entry_once_when_it_is_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let stream = |a: &str| StreamKey {
            origin: "RU".parse().expect("valid"),
            agreement: a.parse().expect("valid"),
        };
        let (ipr, rms) = (stream("ipr"), stream("rms"));
        let mut b = WriteBatch::default();
        b.expiries.extend([
            (ipr.clone(), 1, 100),
            (ipr.clone(), 2, 300),
            (rms.clone(), 1, 250),
            (ipr.clone(), 3, 200),
        ]);
        b.put(expiry_key(150, &ipr, 9), Vec::new());
        s.commit(b).expect("commits");
        let due = |now, limit| -> Vec<(String, Vec<u64>)> {
            let got = s.expired(now, limit).expect("reads");
            got.iter().map(|d| (d.stream.agreement.as_str().to_owned(), d.due.clone())).collect()
        };
        assert_eq!(due(99, 10), vec![]);
        let got = s.expired(200, 10).expect("reads");
        assert_eq!(due(200, 10), vec![("ipr".to_owned(), vec![1, 3]), ("ipr".to_owned(), vec![9])]);
        let mut b = WriteBatch::default();
        got.iter().for_each(|d| b.take_due(d));
        s.commit(b).expect("commits");
        assert_eq!(due(200, 10), vec![], "taken once");
        assert_eq!(due(300, 1), vec![("rms".to_owned(), vec![1])], "at least the limit, in order");
        assert_eq!(due(300, 10), vec![("rms".to_owned(), vec![1]), ("ipr".to_owned(), vec![2])]);
    }

    #[test]
    fn next_known_finds_the_first_held_withheld_or_purged_number_of_its_stream_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let stream = |a: &str| StreamKey {
            origin: "RU".parse().expect("valid"),
            agreement: a.parse().expect("valid"),
        };
        let (ipr, ipr2) = (stream("ipr"), stream("ipr2"));
        assert_eq!(s.next_known(&ipr, 0).expect("reads"), None, "an empty stream");
        let mut b = WriteBatch::default();
        b.put(key(&[&stream_prefix(&ipr), &9u64.to_be_bytes()]), vec![1]);
        b.put_withheld(&ipr, 7, ipr.origin);
        b.purge_projection(&ipr, &share(&ipr, 12, &["KZ"])).expect("encodes");
        // Another stream whose agreement id extends this one's: never mistaken for it.
        b.put_withheld(&ipr2, 3, ipr2.origin);
        b.put(key(&[&stream_prefix(&ipr2), &4u64.to_be_bytes()]), vec![1]);
        s.commit(b).expect("commits");
        let next = |after| s.next_known(&ipr, after).expect("reads");
        assert_eq!(
            [next(0), next(6), next(7), next(8), next(9), next(11), next(12)],
            [Some(7), Some(7), Some(9), Some(9), Some(12), Some(12), None]
        );
        assert_eq!(s.next_known(&ipr2, 0).expect("reads"), Some(3));
        assert_eq!(s.next_known(&ipr2, 3).expect("reads"), Some(4));
        assert_eq!(s.next_known(&ipr, u64::MAX).expect("reads"), None);
        for seq in 1..=13 {
            assert_eq!(s.view().seq_known(&ipr, seq).expect("reads"), [7, 9, 12].contains(&seq), "seq {seq}");
        }
    }

    // Reads through a batch not yet committed see its writes over the store's, including
    // what it removed; a rollback takes back exactly what came after its savepoint.
    #[test]
    fn a_pending_batch_is_read_through_and_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let ipr =
            StreamKey { origin: "RU".parse().expect("valid"), agreement: "ipr".parse().expect("valid") };
        let mut b = WriteBatch::default();
        b.put_withheld(&ipr, 5, ipr.origin);
        b.put_withheld(&ipr, 8, ipr.origin);
        s.commit(b).expect("commits");
        let mut b = WriteBatch::default();
        b.put(key(&[&stream_prefix(&ipr), &3u64.to_be_bytes()]), vec![1]);
        let sp = b.savepoint();
        b.remove(withheld_key(&ipr, 5));
        b.put_withheld(&ipr, 6, ipr.origin);
        b.put_record(&rec(1, "ipr.mark", "RU", 10)).expect("encodes");
        let v = s.pending(&b);
        assert_eq!(v.next_known(&ipr, 0).expect("reads"), Some(3), "the batch's own key");
        assert_eq!(v.next_known(&ipr, 3).expect("reads"), Some(6), "5 removed by the batch");
        assert!(!v.seq_known(&ipr, 5).expect("reads") && v.seq_known(&ipr, 8).expect("reads"));
        assert!(v.has_record(&Digest([1; 32])).expect("reads"));
        assert!(!s.view().has_record(&Digest([1; 32])).expect("reads"), "nothing committed yet");
        b.rollback(sp);
        let v = s.pending(&b);
        assert_eq!(v.next_known(&ipr, 3).expect("reads"), Some(5), "the removal undone");
        assert!(!v.has_record(&Digest([1; 32])).expect("reads"));
        s.commit(b).expect("commits");
        assert_eq!(s.next_known(&ipr, 0).expect("reads"), Some(3));
        assert_eq!(s.next_known(&ipr, 5).expect("reads"), Some(8), "6 was rolled back");
        assert_eq!(s.record_count(), 0);
    }

    #[test]
    fn schema_mismatch_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("opens");
            s.db.insert(SCHEMA_KEY, &99u32.to_be_bytes()).expect("writes");
            s.flush_blocking().expect("flushes");
        }
        let e = Store::open(dir.path()).expect_err("refuses");
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    // Schemas 4 to 6 move nothing but projections (none here): an older store is only
    // marked, and reads as before;
    // read only (an offline audit), it is left at its schema for the build that wrote it.
    #[test]
    fn a_schema_3_to_5_store_is_marked_this_schema_when_opened_and_its_entries_read_in_place() {
        for old in [3u32, 4, 5] {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = rec(1, "ipr.mark", "RU", 1);
            let (hash, entry) = (Digest([9; 32]), br#"{"seq":1}"#.to_vec());
            {
                let s = Store::open(dir.path()).expect("opens");
                let mut b = WriteBatch::default();
                b.put_record(&r).expect("encodes");
                s.commit(b).expect("commits");
                // As schemas before 5 kept an audit entry: its bytes in the tree.
                s.db.insert(key(&[b"A", &1u64.to_be_bytes()]), key(&[&hash.0, &entry])).expect("writes");
                s.db.insert(SCHEMA_KEY, &old.to_be_bytes()).expect("writes");
                s.flush_blocking().expect("flushes");
            }
            {
                let s = Store::open_to_read(dir.path()).expect("reads");
                assert_eq!(s.db.get(SCHEMA_KEY).expect("reads").as_deref(), Some(&old.to_be_bytes()[..]));
                assert_eq!(s.record(&r.id).expect("reads"), Some(r.clone()));
                assert_eq!(s.audit_entry(1).expect("reads"), Some((hash, entry.clone())));
            }
            let s = Store::open(dir.path()).expect("upgrades");
            let marked = s.db.get(SCHEMA_KEY).expect("reads");
            assert_eq!(marked.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
            assert_eq!(s.record(&r.id).expect("reads"), Some(r.clone()));
            assert_eq!(s.record_count(), 1);
            // The old entry is read where it is; the next lies in the values file.
            let (hash2, entry2) = (Digest([8; 32]), br#"{"seq":2}"#.to_vec());
            let mut b = WriteBatch::default();
            b.put_audit(2, &entry2, &hash2);
            s.commit(b).expect("commits");
            let in_tree = s.db.get(key(&[b"A", &2u64.to_be_bytes()])).expect("reads").expect("present");
            assert_eq!(in_tree.len(), values::Place::ENCODED_LEN, "the tree holds only where it lies");
            let both = vec![(1, hash, entry.clone()), (2, hash2, entry2.clone())];
            let listed: Vec<_> = s.audit_entries(1, 2).collect::<Result<_, _>>().expect("reads");
            assert_eq!(listed, both);
            // A backup's pairs hold the bytes, and restore to a store that reads them.
            let pairs: Vec<_> = s.dump().collect::<Result<_, _>>().expect("dumps");
            let a2 = pairs.iter().find(|(k, _)| *k == key(&[b"A", &2u64.to_be_bytes()])).expect("dumped");
            assert_eq!(a2.1, key(&[&hash2.0, &entry2]));
            let other = tempfile::tempdir().expect("tempdir");
            let restored = Store::open(other.path()).expect("opens");
            restored.load_raw(pairs).expect("loads");
            let listed: Vec<_> = restored.audit_entries(1, 2).collect::<Result<_, _>>().expect("reads");
            assert_eq!(listed, both);
            assert_eq!(restored.record(&r.id).expect("reads"), Some(r));
        }
    }

    // A schema 2 store kept the seq of each projection of a record under a key of its own
    // (`X`). Opened by this build, or restored from a backup, its records take them in.
    #[test]
    fn a_schema_2_store_is_upgraded_in_place_and_from_a_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut own, old) = (rec(1, "ipr.mark", "RU", 1), rec(2, "rms.method", "RU", 2));
        own.shares =
            vec![("sco-ipr-2012".parse().expect("valid"), 7), ("sco-rms-2013".parse().expect("valid"), 3)];
        let v2 = |r: &StoredRecord| {
            let fields = (r.id, &r.header, &r.body, r.withheld, &r.source, r.stored_ms, &r.salts, r.state);
            encode_stored(&fields).expect("encodes")
        };
        let pairs = {
            let s = Store::open(dir.path()).expect("opens");
            let mut pairs = vec![(SCHEMA_KEY.to_vec(), 2u32.to_be_bytes().to_vec())];
            for r in [&own, &old] {
                pairs.push((key(&[b"R", &r.id.0]), v2(r)));
                pairs.push((
                    key(&[
                        b"C",
                        r.header.category.as_str().as_bytes(),
                        &[0],
                        &time_key(r.header.created_ms),
                        &r.id.0,
                    ]),
                    Vec::new(),
                ));
                for (a, seq) in &r.shares {
                    pairs.push((key(&[b"X", &r.id.0, a.as_str().as_bytes()]), seq.to_be_bytes().to_vec()));
                }
            }
            s.raw_insert(pairs.clone()).expect("writes");
            s.flush_blocking().expect("flushes");
            pairs
        };
        let check = |s: &Store| {
            assert_eq!(s.record(&own.id).expect("reads"), Some(own.clone()));
            assert_eq!(s.record(&old.id).expect("reads"), Some(old.clone()));
            assert_eq!(s.db.scan_prefix(b"X").count(), 0, "the X keys went");
            assert_eq!(
                s.db.get(SCHEMA_KEY).expect("reads").as_deref(),
                Some(&SCHEMA_VERSION.to_be_bytes()[..])
            );
            assert_eq!(s.record_count(), 2);
        };
        check(&Store::open(dir.path()).expect("upgrades"));
        check(&Store::open(dir.path()).expect("opens upgraded"));
        let restored = tempfile::tempdir().expect("tempdir");
        let s = Store::open(restored.path()).expect("opens");
        s.load_raw(pairs).expect("loads and upgrades");
        check(&s);
    }
}

//! The audit log beyond the chain itself: appending an entry with its index keys, the
//! writer's checkpoint schedule and clock, and the read side — indexed queries, counts,
//! traces and exports.
//!
//! Who owns what: the writer task is the only caller of [`append`] and the only owner of
//! a [`ChainState`]; everything else here only reads the store, and works the same on a
//! running node (through the API) and on a stopped node's data directory (`--offline`).
//!
//! ## Indexes
//!
//! Every entry gets, in the same atomic batch as the entry itself, one empty key per
//! indexed field it has (`I`, kind, value, 0, seq — see `store.rs`):
//!
//! | kind | field     | written when                 |
//! |------|-----------|------------------------------|
//! | `p`  | peer      | the entry names a peer       |
//! | `c`  | category  | it names a category, or took in a record of one (once per category) |
//! | `g`  | agreement | it names an agreement        |
//! | `a`  | action    | always                       |
//! | `r`  | record    | it names a record            |
//! | `n`  | numbers   | it lists projections taken in (`received`) or receipts (`delivered`): once per [`NUMBERS_PER_LIST`] numbers of their stream |
//! | `o`  | outcome   | the outcome is not `ok`      |
//!
//! What a `received` or `delivered` entry lists is indexed by stream number, not by
//! record (store schema 8; earlier entries keep their `r` keys): a push or pull carries
//! consecutive numbers of one stream, so its entry takes one or two `n` keys where a key
//! per record took up to 64. A record lists the numbers of its shares (a received one
//! never forgets one; an own one forgets only a number it gave up after a restore, and
//! the `sent` entry that says so names the record and points at the number), so a query
//! by record reads, merged, its `r` list and the `n` lists of its shares' numbers and of
//! the numbers its `r` entries point at; each entry is then checked, as always.
//!
//! Time needs no index: the writer never lets an entry's time go backwards
//! ([`ChainState::clock`]), so times are non-decreasing in sequence order and a time range
//! is a sequence range, found by binary search over the entries. A query intersects the
//! index lists of its equality filters (leapfrog: each list is sorted by sequence number,
//! and a cursor seeks past what another excluded) within that range, then reads only the
//! entries in the intersection; the entry itself is always checked against the whole
//! filter, so an index can only make a query faster, never change its answer. The key
//! `Maudit_index` records the sequence number through which the indexes are complete;
//! a store written before the indexes existed is indexed when the writer opens it, and
//! until then queries scan.
//!
//! ## Checking the indexes
//!
//! An index posting deleted, added or moved hides entries from queries, counts and traces,
//! or adds wrong ones, while the chain still verifies: `audit verify --indexes`
//! ([`verify_indexes`]) checks that the postings of the entries the indexes cover are
//! exactly those [`postings`] gives them (the function [`append`] writes them with), and
//! that none lies beyond those entries. It is an option, off by default: it parses every
//! entry in full and reads every index key, several times the work of the chain alone.
//!
//! A first pass folds every posting, implied and stored, into one of [`INDEX_BUCKETS`]
//! buckets chosen by a hash of its (kind, value): a count, and a wrapping sum of a 128-bit
//! keyed SHA-256 of the posting, with a key drawn for the run, so that the order of the
//! walk does not matter and a tamperer cannot aim for sums that still match. It keeps no
//! posting in memory. Only if buckets differ does a second pass read the postings of the
//! first [`INDEX_BUCKETS_EXPLAINED`] of them again (memory bounded by those buckets) and
//! name what differs: `posting missing: …`, `posting with no entry: …`. The first pass
//! also checks what a query relies on that the sums cannot see: each (kind, value)'s keys
//! list increasing numbers, each key from the number it names.
//!
//! What an entry lists under an agreement was indexed by record before schema 8, and an
//! upgraded store keeps those postings; no build wrote an `n` posting before, so entries
//! before the first entry an `n` posting names are expected as indexed by record, the
//! rest by number. On a running node the writer appends while the check runs: postings of
//! entries past those the chain verified are skipped once the indexes' mark covers them.
//!
//! Not checked: the share numbers a record keeps, which a trace also follows. A record's
//! numbers are not a function of the entries alone (an own record's share that was never
//! delivered has no listing entry; one entry may list a number another lists again), so
//! they cannot be folded into sums that must come out equal.
//!
//! ## Checkpoints
//!
//! Every `checkpoint_every` entries or `checkpoint_secs` seconds (whichever first, and only
//! if something was appended since the last one) the writer signs a [`Checkpoint`] of the
//! head — the sequence number and hash of the last entry — stores it under `K`, and
//! appends a `checkpoint` entry carrying it, all in the same batch, and flushes. The store
//! shows it once the batch is applied, before the flush (and still if the flush fails);
//! peers are shown only the newest one a successful flush covered
//! ([`crate::writer::Writer::durable_checkpoint`]), so a crash can never make an honest
//! log disagree with a checkpoint it already showed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tamga_protocol::{AgreementId, Checkpoint, Digest, MemberCode, Receipt, RecordId};

use crate::audit::{Action, AuditEntry, AuditEvent, ExportedEntry, Filter, Outcome};
use crate::store::{Store, StoreError, WriteBatch};

/// Index kind: the peer.
pub const KIND_PEER: u8 = b'p';
/// Index kind: the category.
pub const KIND_CATEGORY: u8 = b'c';
/// Index kind: the agreement.
pub const KIND_AGREEMENT: u8 = b'g';
/// Index kind: the action.
pub const KIND_ACTION: u8 = b'a';
/// Index kind: the record.
pub const KIND_RECORD: u8 = b'r';
/// Index kind: the outcome (only `refused` and `failed` are indexed).
pub const KIND_OUTCOME: u8 = b'o';
/// Index kind: numbers of a stream, [`NUMBERS_PER_LIST`] to a list.
pub const KIND_NUMBERS: u8 = b'n';
/// Consecutive numbers of a stream that share one `n` list.
pub const NUMBERS_PER_LIST: u64 = 64;

/// Entries indexed per batch when indexing a store written before the indexes existed.
pub const REBUILD_BATCH: usize = 10_000;
/// How many keys a query cursor steps through before it seeks instead.
pub const SEEK_STEPS: usize = 16;

// ---------------------------------------------------------------------------------------
// Write side
// ---------------------------------------------------------------------------------------

/// How an entry's listed projections or receipts are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// By the numbers of their stream, under the entry's own agreement (store schema 8 on).
    ByNumber,
    /// By their records, as builds before schema 8 indexed them (an upgraded store keeps
    /// those keys).
    ByRecord,
}

/// Every index posting of one entry, (kind, value), each once, under rule `listed`: the
/// one statement of the index rules (see Indexes). [`append`] writes these, and `audit
/// verify --indexes` expects exactly these.
pub fn postings(e: &AuditEntry, listed: Listed, mut put: impl FnMut(u8, &[u8])) {
    if let Some(p) = e.peer {
        put(KIND_PEER, &p.as_bytes());
    }
    for c in e.categories() {
        put(KIND_CATEGORY, c.as_str().as_bytes());
    }
    if let Some(a) = &e.agreement {
        put(KIND_AGREEMENT, a.as_str().as_bytes());
    }
    put(KIND_ACTION, e.action.as_str().as_bytes());
    // What the entry lists is indexed by number (under the entry's own agreement).
    let listed_items = e.projections.iter().map(|p| (p.record, p.origin, p.seq));
    let listed_items = listed_items.chain(e.receipts.iter().map(|r| (r.record, r.origin, r.seq)));
    let mut records: BTreeSet<RecordId> = e.record.into_iter().collect();
    let mut lists = BTreeSet::new();
    for (record, origin, seq) in listed_items {
        match (&e.agreement, listed) {
            (Some(a), Listed::ByNumber) => lists.insert(numbers_list(origin, a, seq)),
            _ => records.insert(record),
        };
    }
    for r in records {
        put(KIND_RECORD, &r.0);
    }
    for list in lists {
        put(KIND_NUMBERS, &list);
    }
    if e.outcome != Outcome::Ok {
        put(KIND_OUTCOME, e.outcome.as_str().as_bytes());
    }
}

/// Add the index keys of one entry to a batch.
pub fn index_entry(batch: &mut WriteBatch, e: &AuditEntry) {
    postings(e, Listed::ByNumber, |kind, value| batch.put_audit_index(kind, value, e.seq));
}

/// The `n` list that holds number `seq` of stream (`origin`, `agreement`).
fn numbers_list(origin: MemberCode, agreement: &AgreementId, seq: u64) -> Vec<u8> {
    format!("{origin}/{agreement}/{}", seq / NUMBERS_PER_LIST).into_bytes()
}

/// Append the entry for `ev` after `head` to a batch — the entry, its hash, the new head,
/// its index keys — and advance `head`. The one place an entry is built; the caller (the
/// writer, or `tamga bench` on a scratch store) holds the head.
pub fn append(
    batch: &mut WriteBatch,
    head: &mut (u64, Digest),
    ev: AuditEvent,
    time_ms: i64,
    policy: Digest,
) {
    let seq = head.0 + 1;
    let entry = AuditEntry::build(seq, time_ms, ev, policy, head.1);
    let bytes = entry.to_bytes();
    let hash = Digest::of(&bytes);
    batch.put_audit(seq, &bytes, &hash);
    index_entry(batch, &entry);
    batch.set_audit_indexed(seq);
    *head = (seq, hash);
}

/// The writer's audit state besides the head: its clock and its checkpoint schedule.
#[derive(Debug, Clone)]
pub struct ChainState {
    /// The newest entry time written: entries' times never go backwards.
    last_time_ms: i64,
    /// Sign after this many entries.
    every: u64,
    /// …or after this many milliseconds.
    period_ms: i64,
    /// Sequence number of the last `checkpoint` entry (0: none yet).
    last_cp_entry: u64,
    /// When the last checkpoint was signed (ms).
    last_cp_ms: i64,
    /// Sign at the next group whatever the schedule says (set at shutdown).
    pub force: bool,
}

/// Light view of an entry: its time only.
#[derive(Deserialize)]
struct TimeOf {
    time_ms: i64,
}

/// Light view of an entry: the number of a stream it points at, if any.
#[derive(Deserialize)]
struct PointsAt {
    agreement: Option<AgreementId>,
    #[serde(default)]
    projection: Option<crate::audit::ProjectionRef>,
}

fn unreadable(seq: u64, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { key: format!("audit entry {seq}"), why: format!("{why}; run `tamga audit verify`") }
}

fn time_of(store: &Store, seq: u64) -> Result<i64, StoreError> {
    let (_, raw) = store.audit_entry(seq)?.ok_or_else(|| unreadable(seq, "missing"))?;
    serde_json::from_slice::<TimeOf>(&raw).map(|t| t.time_ms).map_err(|e| unreadable(seq, e))
}

impl ChainState {
    /// Read the state of a store whose head is `head`, indexing any entries the indexes
    /// do not cover yet (a store written before they existed).
    pub fn open(store: &Store, head: (u64, Digest)) -> Result<ChainState, StoreError> {
        rebuild_indexes(store, head.0)?;
        let last_time_ms = if head.0 > 0 { time_of(store, head.0).unwrap_or(0) } else { 0 };
        let (last_cp_entry, last_cp_ms) = match store.latest_checkpoint()? {
            Some(cp) => (cp.seq + 1, cp.time_ms),
            None => (0, 0),
        };
        let d = tamga_config::AuditConfig::default();
        Ok(ChainState {
            last_time_ms,
            every: d.checkpoint_every,
            period_ms: (d.checkpoint_secs as i64).saturating_mul(1000),
            last_cp_entry,
            last_cp_ms,
            force: false,
        })
    }

    /// Take the checkpoint schedule from `node.toml`'s `[audit]`.
    pub fn configure(&mut self, c: &tamga_config::AuditConfig) {
        self.every = c.checkpoint_every.max(1);
        self.period_ms = (c.checkpoint_secs.max(1) as i64).saturating_mul(1000);
    }

    /// The time to stamp on the entries of a group: the wall clock, but never earlier than
    /// the newest entry already written (a clock stepped back does not reorder the log).
    pub fn clock(&mut self, wall_ms: i64) -> i64 {
        self.last_time_ms = self.last_time_ms.max(wall_ms);
        self.last_time_ms
    }

    /// Whether a checkpoint of a log whose head is `head_seq` is due at `now`.
    pub fn due(&self, head_seq: u64, now: i64) -> bool {
        head_seq > self.last_cp_entry
            && (self.force
                || head_seq - self.last_cp_entry >= self.every
                || now.saturating_sub(self.last_cp_ms) >= self.period_ms)
    }

    /// How long the writer may sleep before a checkpoint can fall due by time.
    pub fn wait(&self, head_seq: u64, now: i64) -> Duration {
        if head_seq <= self.last_cp_entry {
            return Duration::from_millis(self.period_ms as u64);
        }
        let left = self.last_cp_ms.saturating_add(self.period_ms).saturating_sub(now);
        Duration::from_millis(left.clamp(1, self.period_ms) as u64)
    }

    /// Sign a checkpoint of `head` and append its entry, if one is due. Returns the
    /// sequence number of the checkpoint entry (call [`ChainState::signed`] with it once
    /// the batch is committed) and the checkpoint.
    pub fn checkpoint_if_due(
        &self,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
        me: tamga_protocol::MemberCode,
        key: &tamga_protocol::SigningKey,
        policy: Digest,
    ) -> Option<(u64, Checkpoint)> {
        if !self.due(head.0, now) {
            return None;
        }
        let cp = Checkpoint::sign(me, head.0, head.1, now, key);
        if let Err(e) = batch.put_checkpoint(&cp) {
            tracing::error!(error = %e, "checkpoint not stored");
            return None;
        }
        let ev = AuditEvent::new(Action::Checkpoint, Outcome::Ok)
            .reason(format!("signed checkpoint of entry {} ({})", cp.seq, cp.head))
            .checkpoint(cp.clone());
        append(batch, head, ev, now, policy);
        Some((head.0, cp))
    }

    /// A checkpoint entry was committed at `entry_seq`.
    pub fn signed(&mut self, entry_seq: u64, now: i64) {
        self.last_cp_entry = entry_seq;
        self.last_cp_ms = now;
        self.force = false;
    }
}

/// Index the entries after the indexes' high-water mark, up to `head_seq`. Returns how
/// many were indexed. Unreadable entries are skipped (`audit verify` reports them).
pub fn rebuild_indexes(store: &Store, head_seq: u64) -> Result<u64, StoreError> {
    let from = store.audit_indexed()? + 1;
    if from > head_seq {
        return Ok(0);
    }
    tracing::info!(from, to = head_seq, "indexing the audit log");
    let mut batch = WriteBatch::default();
    let (mut n, mut in_batch) = (0u64, 0usize);
    for item in store.audit_entries(from, head_seq) {
        let (seq, _, raw) = item?;
        match serde_json::from_slice::<AuditEntry>(&raw) {
            Ok(e) if e.seq == seq => index_entry(&mut batch, &e),
            _ => tracing::warn!(seq, "audit entry unreadable; not indexed"),
        }
        batch.set_audit_indexed(seq);
        n += 1;
        in_batch += 1;
        if in_batch >= REBUILD_BATCH {
            store.commit(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    batch.set_audit_indexed(head_seq);
    store.commit(batch)?;
    store.flush_blocking()?;
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Read side
// ---------------------------------------------------------------------------------------

/// The first sequence number in `1..=head+1` whose entry's time is at or after `t`.
fn first_at_or_after(store: &Store, t: i64, head: u64) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (1u64, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if time_of(store, mid)? < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The sequence numbers `lo..=hi` of the entries in a time range (empty when lo > hi).
pub fn seq_range(
    store: &Store,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<(u64, u64), StoreError> {
    let head = store.audit_head()?.map_or(0, |h| h.0);
    let lo = match since_ms {
        Some(t) => first_at_or_after(store, t, head)?,
        None => 1,
    };
    let hi = match until_ms {
        Some(t) => first_at_or_after(store, t.saturating_add(1), head)? - 1,
        None => head,
    };
    Ok((lo, hi))
}

/// The sequence numbers of one filter's index lists in `from..=to`, merged in order, each
/// once (most filters have one list; a record has its `r` list and its shares' `n` lists).
fn merged<'a>(
    store: &'a Store,
    lists: &[(u8, Vec<u8>)],
    from: u64,
    to: u64,
) -> Box<dyn Iterator<Item = Result<u64, StoreError>> + 'a> {
    if let [(kind, value)] = lists {
        return Box::new(store.audit_index(*kind, value, from, to));
    }
    let mut its: Vec<_> = lists.iter().map(|(k, v)| store.audit_index(*k, v, from, to).peekable()).collect();
    let mut last = None;
    Box::new(std::iter::from_fn(move || loop {
        // An error comes out first; otherwise the smallest next number.
        let mut min: Option<(usize, u64)> = None;
        for (i, it) in its.iter_mut().enumerate() {
            match it.peek() {
                Some(Err(_)) => return it.next(),
                Some(Ok(s)) if min.is_none_or(|(_, m)| *s < m) => min = Some((i, *s)),
                _ => {}
            }
        }
        let (i, s) = min?;
        its[i].next();
        if last != Some(s) {
            last = Some(s);
            return Some(Ok(s));
        }
    }))
}

/// One filter's index lists, read in sequence order, that can skip ahead.
struct Cursor<'a> {
    store: &'a Store,
    lists: Vec<(u8, Vec<u8>)>,
    hi: u64,
    it: Box<dyn Iterator<Item = Result<u64, StoreError>> + 'a>,
    /// The last sequence number read; None before the first read or when exhausted.
    at: Option<u64>,
    exhausted: bool,
}

impl<'a> Cursor<'a> {
    fn new(store: &'a Store, lists: Vec<(u8, Vec<u8>)>, lo: u64, hi: u64) -> Cursor<'a> {
        let it = merged(store, &lists, lo, hi);
        Cursor { store, lists, hi, it, at: None, exhausted: false }
    }

    fn read(&mut self) -> Result<Option<u64>, StoreError> {
        match self.it.next() {
            Some(r) => {
                let s = r?;
                self.at = Some(s);
                Ok(Some(s))
            }
            None => {
                self.exhausted = true;
                Ok(None)
            }
        }
    }

    /// The first sequence number at or after `target` in these lists.
    fn seek(&mut self, target: u64) -> Result<Option<u64>, StoreError> {
        if self.exhausted {
            return Ok(None);
        }
        if let Some(a) = self.at {
            if a >= target {
                return Ok(Some(a));
            }
        }
        for _ in 0..SEEK_STEPS {
            match self.read()? {
                Some(s) if s >= target => return Ok(Some(s)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        if target > self.hi {
            self.exhausted = true;
            return Ok(None);
        }
        self.it = merged(self.store, &self.lists, target, self.hi);
        self.read()
    }
}

/// The index lists of a record (see Indexes): its own; those of its shares' numbers; and
/// those of a number an entry naming it points at (the number of a share it gave up,
/// whose receipts stay listed under it).
fn record_lists(store: &Store, id: &RecordId) -> Result<Vec<(u8, Vec<u8>)>, StoreError> {
    let mut numbers = BTreeSet::new();
    if let Some(r) = store.view().record_as_stored(id)? {
        numbers.extend(r.shares.iter().map(|(a, seq)| numbers_list(r.header.origin, a, *seq)));
    }
    for seq in store.audit_index(KIND_RECORD, &id.0, 1, u64::MAX) {
        let seq = seq?;
        let (_, raw) = store.audit_entry(seq)?.ok_or_else(|| unreadable(seq, "missing"))?;
        let e: PointsAt = serde_json::from_slice(&raw).map_err(|e| unreadable(seq, e))?;
        if let (Some(p), Some(a)) = (e.projection, &e.agreement) {
            numbers.insert(numbers_list(p.origin, a, p.seq));
        }
    }
    let mut lists = vec![(KIND_RECORD, id.0.to_vec())];
    lists.extend(numbers.into_iter().map(|v| (KIND_NUMBERS, v)));
    Ok(lists)
}

fn cursors_for<'a>(store: &'a Store, f: &Filter, lo: u64, hi: u64) -> Result<Vec<Cursor<'a>>, StoreError> {
    let mut keys: Vec<Vec<(u8, Vec<u8>)>> = Vec::new();
    if let Some(r) = &f.record {
        keys.push(record_lists(store, r)?);
    }
    let mut one = |kind: u8, value: &[u8]| keys.push(vec![(kind, value.to_vec())]);
    if let Some(p) = f.peer {
        one(KIND_PEER, &p.as_bytes());
    }
    if let Some(a) = &f.agreement {
        one(KIND_AGREEMENT, a.as_str().as_bytes());
    }
    if let Some(c) = &f.category {
        one(KIND_CATEGORY, c.as_str().as_bytes());
    }
    if let Some(a) = f.action {
        one(KIND_ACTION, a.as_str().as_bytes());
    }
    if let Some(o) = f.outcome.filter(|o| *o != Outcome::Ok) {
        one(KIND_OUTCOME, o.as_str().as_bytes());
    }
    Ok(keys.into_iter().map(|lists| Cursor::new(store, lists, lo, hi)).collect())
}

/// How a query was answered (for `tamga bench` and tests: an index, or a scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueryStats {
    /// Index lists intersected (0: the range was scanned).
    pub indexes: usize,
    /// Entries read and checked against the filter.
    pub entries_read: u64,
}

/// Call `visit` with every entry matching the filter, in log order, until it returns false.
pub fn for_each_match(
    store: &Store,
    f: &Filter,
    mut visit: impl FnMut(Digest, AuditEntry, usize) -> bool,
) -> Result<QueryStats, StoreError> {
    let (lo, hi) = seq_range(store, f.since_ms, f.until_ms)?;
    let mut stats = QueryStats { indexes: 0, entries_read: 0 };
    if lo > hi {
        return Ok(stats);
    }
    let mut check =
        |seq: u64, hash: Digest, raw: &[u8], stats: &mut QueryStats| -> Result<bool, StoreError> {
            stats.entries_read += 1;
            let e: AuditEntry = serde_json::from_slice(raw).map_err(|e| unreadable(seq, e))?;
            Ok(!f.matches(&e) || visit(hash, e, raw.len()))
        };
    let mut cursors = if store.audit_indexed()? >= hi { cursors_for(store, f, lo, hi)? } else { Vec::new() };
    stats.indexes = cursors.len();
    if cursors.is_empty() {
        for item in store.audit_entries(lo, hi) {
            let (seq, hash, raw) = item?;
            if !check(seq, hash, &raw, &mut stats)? {
                break;
            }
        }
        return Ok(stats);
    }
    // Leapfrog intersection of the sorted index lists.
    let mut target = lo;
    'outer: while target <= hi {
        let mut max = target;
        let mut agreed = true;
        for c in cursors.iter_mut() {
            match c.seek(max)? {
                None => break 'outer,
                Some(s) if s > max => {
                    max = s;
                    agreed = false;
                }
                Some(_) => {}
            }
        }
        if max > hi {
            break;
        }
        if agreed {
            let (hash, raw) = store.audit_entry(max)?.ok_or_else(|| unreadable(max, "missing"))?;
            if !check(max, hash, &raw, &mut stats)? {
                break;
            }
            target = max + 1;
        } else {
            target = max;
        }
    }
    Ok(stats)
}

/// Most stored bytes of entries one query answers or one export page carries (an entry
/// that lists a whole push is tens of kilobytes; see [`crate::audit::MAX_LISTED`]).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Entries matching a filter, in log order, each with its stored hash: at most `f.limit`,
/// and no more once [`MAX_ANSWER_BYTES`] of them are taken ([`query_page`] also says
/// whether more match).
pub fn query(store: &Store, f: &Filter) -> Result<Vec<ExportedEntry>, StoreError> {
    query_page(store, f).map(|(entries, _)| entries)
}

/// [`query`], and whether more entries match than it returns (cut at `f.limit` or at
/// [`MAX_ANSWER_BYTES`]): an answer cut short must say so.
pub fn query_page(store: &Store, f: &Filter) -> Result<(Vec<ExportedEntry>, bool), StoreError> {
    let mut out = Vec::new();
    let (mut bytes, mut more) = (0, false);
    for_each_match(store, f, |hash, entry, size| {
        if out.len() >= f.limit || bytes >= MAX_ANSWER_BYTES {
            more = true;
            return false;
        }
        out.push(ExportedEntry { hash, entry });
        bytes += size;
        true
    })?;
    Ok((out, more))
}

/// Every entry about one record, in log order: its whole life on this node (up to
/// [`MAX_ANSWER_BYTES`] of entries: [`trace_page`] says whether more were left out).
pub fn trace(store: &Store, record: tamga_protocol::RecordId) -> Result<Vec<ExportedEntry>, StoreError> {
    trace_page(store, record).map(|(entries, _)| entries)
}

/// [`trace`], and whether entries were left out past [`MAX_ANSWER_BYTES`].
pub fn trace_page(
    store: &Store,
    record: tamga_protocol::RecordId,
) -> Result<(Vec<ExportedEntry>, bool), StoreError> {
    query_page(store, &Filter { record: Some(record), limit: usize::MAX, ..Filter::default() })
}

/// The signed receipts held for a record, in log order, each with the action of the
/// entry that keeps it (`delivered` for a share, `purged` for a revocation).
pub fn receipts(
    store: &Store,
    record: tamga_protocol::RecordId,
) -> Result<Vec<(Action, Receipt)>, StoreError> {
    Ok(trace(store, record)?
        .into_iter()
        .flat_map(|e| {
            let action = e.entry.action;
            e.entry.receipts_for(record).map(|r| (action, r.clone())).collect::<Vec<_>>()
        })
        .collect())
}

/// What counts are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The peer (`-` for none).
    Peer,
    /// The category.
    Category,
    /// The action.
    Action,
    /// The agreement.
    Agreement,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("cannot group by {s:?}: use peer, category, action, agreement or day"))
    }
}

/// One group of a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The value grouped on (`-` when the entries have none).
    pub key: String,
    /// How many entries.
    pub count: u64,
}

/// Counts of matching entries, in total and per group (groups sorted by key). By
/// category, an entry listing several categories counts in each of their groups, so the
/// groups may add up to more than the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every matching entry.
    pub total: u64,
    /// What they were grouped by, if anything.
    pub by: Option<GroupBy>,
    /// The groups.
    pub groups: Vec<Group>,
}

/// The groups an entry counts in: one, but for categories, where an entry that lists
/// projections of several categories counts in each (as a `--category` query of each
/// would find it).
fn group_keys(e: &AuditEntry, by: GroupBy) -> Vec<String> {
    let dash = || "-".to_owned();
    match by {
        GroupBy::Category => {
            let cs: Vec<String> = e.categories().into_iter().map(|c| c.to_string()).collect();
            if cs.is_empty() {
                vec![dash()]
            } else {
                cs
            }
        }
        GroupBy::Peer => vec![e.peer.map_or_else(dash, |p| p.to_string())],
        GroupBy::Action => vec![e.action.as_str().to_owned()],
        GroupBy::Agreement => vec![e.agreement.as_ref().map_or_else(dash, |a| a.to_string())],
        GroupBy::Day => vec![e.time.get(..10).map_or_else(dash, str::to_owned)],
    }
}

/// Count the entries matching a filter (its limit is ignored), grouped by `by`.
pub fn count(store: &Store, f: &Filter, by: Option<GroupBy>) -> Result<Counts, StoreError> {
    let mut total = 0u64;
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for_each_match(store, f, |_, e, _| {
        total += 1;
        for key in by.map(|by| group_keys(&e, by)).unwrap_or_default() {
            *groups.entry(key).or_default() += 1;
        }
        true
    })?;
    Ok(Counts { total, by, groups: groups.into_iter().map(|(key, count)| Group { key, count }).collect() })
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// One entry exactly as stored: its sequence number, its hash and the hashed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEntry {
    /// Its sequence number.
    pub seq: u64,
    /// SHA-256 of `entry`.
    pub hash: Digest,
    /// The stored JSON bytes, verbatim (JSON text is UTF-8, so this loses nothing).
    pub entry: String,
}

/// Entries `from..=to` as stored: at most `limit`, and no more once [`MAX_ANSWER_BYTES`]
/// of them are taken.
pub fn export_page(store: &Store, from: u64, to: u64, limit: usize) -> Result<Vec<RawEntry>, StoreError> {
    let (mut out, mut bytes) = (Vec::new(), 0);
    for item in store.audit_entries(from, to).take(limit) {
        let (seq, hash, raw) = item?;
        bytes += raw.len();
        let entry = String::from_utf8(raw).map_err(|e| unreadable(seq, e))?;
        out.push(RawEntry { seq, hash, entry });
        if bytes >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(out)
}

/// The export's JSON-lines form of one entry: `{"hash":"<64 hex>","entry":<stored bytes>}`.
/// The stored bytes start at byte 83 of the line and end before its closing `}`.
pub fn jsonl_line(e: &RawEntry) -> String {
    format!("{{\"hash\":\"{}\",\"entry\":{}}}", e.hash, e.entry)
}

/// The export's CSV header.
pub const CSV_HEADER: &str =
    "seq,hash,time,action,peer,record,category,agreement,policy,outcome,reason,entry";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The export's CSV form of one entry: readable columns, then the stored bytes (the last
/// column, CSV-quoted) from which the hash can be recomputed.
pub fn csv_line(e: &RawEntry) -> String {
    let parsed: Option<AuditEntry> = serde_json::from_str(&e.entry).ok();
    let opt = |v: Option<String>| v.unwrap_or_default();
    let cols: Vec<String> = match &parsed {
        Some(x) => vec![
            x.time.clone(),
            x.action.as_str().to_owned(),
            opt(x.peer.map(|p| p.to_string())),
            opt(x.record.map(|r| r.to_hex())),
            opt(x.category.as_ref().map(|c| c.to_string())),
            opt(x.agreement.as_ref().map(|a| a.to_string())),
            x.policy.to_hex(),
            x.outcome.as_str().to_owned(),
            opt(x.reason.clone()),
        ],
        None => vec![String::new(); 9],
    };
    let mut line = format!("{},{}", e.seq, e.hash);
    for c in cols {
        line.push(',');
        line.push_str(&csv_field(&c));
    }
    line.push(',');
    line.push_str(&csv_field(&e.entry));
    line
}

// ---------------------------------------------------------------------------------------
// Checking the indexes (`audit verify --indexes`)
// ---------------------------------------------------------------------------------------

/// Buckets the postings are folded into, by a hash of their (kind, value).
pub const INDEX_BUCKETS: usize = 1024;
/// Differing buckets whose postings are read again to name the differences.
pub const INDEX_BUCKETS_EXPLAINED: usize = 8;
/// Differences of each sort (missing, unexpected, other) named in a report.
pub const INDEX_DIFFERENCES_NAMED: usize = 5;
/// Entries read as one piece of work when the entries are folded.
pub const INDEX_CHECK_ENTRIES: u64 = 50_000;

/// What `audit verify --indexes` found: whether the index postings (what queries, counts
/// and traces read) are exactly those the entries imply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexReport {
    /// Whether they are.
    pub ok: bool,
    /// The entries whose postings were checked: 1 through this (those the indexes say
    /// they cover, among those whose chain verified).
    pub through: u64,
    /// Postings those entries imply.
    pub expected: u64,
    /// Postings stored for them.
    pub stored: u64,
    /// Buckets (of [`INDEX_BUCKETS`]) whose postings differ.
    pub differing_buckets: u64,
    /// The first differences, in words: `posting missing: kind r value <id> seq 123`,
    /// `posting with no entry: …`, `posting beyond the indexed range: …`, and keys that
    /// are out of order or unreadable.
    pub differences: Vec<String>,
    /// Differences found but not named (those in differing buckets beyond the first
    /// [`INDEX_BUCKETS_EXPLAINED`] are not even counted: see `differing_buckets`).
    pub more: u64,
}

impl IndexReport {
    /// One line for the verify report's error.
    pub fn summary(&self) -> String {
        let named: Vec<&str> = self.differences.iter().take(3).map(String::as_str).collect();
        let left = self.differences.len().saturating_sub(named.len()) as u64 + self.more;
        let mut s = format!("the indexes disagree with the entries: {}", named.join("; "));
        if named.is_empty() {
            s.push_str("their postings differ");
        }
        let mut notes = Vec::new();
        if left > 0 {
            notes.push(format!("{left} more differences"));
        }
        if self.differing_buckets > 0 {
            notes.push(format!("postings differ in {} of {INDEX_BUCKETS} buckets", self.differing_buckets));
        }
        if !notes.is_empty() {
            s.push_str(&format!(" ({})", notes.join("; ")));
        }
        s
    }
}

/// Differences found, a few of each sort named and the rest counted.
#[derive(Debug, Default)]
struct Findings {
    missing: Vec<String>,
    unexpected: Vec<String>,
    other: Vec<String>,
    more: u64,
}

impl Findings {
    fn push(list: &mut Vec<String>, more: &mut u64, what: String) {
        if list.len() < INDEX_DIFFERENCES_NAMED {
            list.push(what);
        } else {
            *more += 1;
        }
    }
    fn missing(&mut self, what: String) {
        Findings::push(&mut self.missing, &mut self.more, what);
    }
    fn unexpected(&mut self, what: String) {
        Findings::push(&mut self.unexpected, &mut self.more, what);
    }
    fn other(&mut self, what: String) {
        Findings::push(&mut self.other, &mut self.more, what);
    }
    fn absorb(&mut self, f: Findings) {
        self.more += f.more;
        for m in f.missing {
            self.missing(m);
        }
        for u in f.unexpected {
            self.unexpected(u);
        }
        for o in f.other {
            self.other(o);
        }
    }
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.other.is_empty() && self.more == 0
    }
    fn into_list(self) -> (Vec<String>, u64) {
        let mut all = self.missing;
        all.extend(self.unexpected);
        all.extend(self.other);
        (all, self.more)
    }
}

/// A posting in words: `kind r value <record id> seq 123`.
fn posting_text(kind: u8, value: &[u8], seq: u64) -> String {
    let value = match std::str::from_utf8(value) {
        Ok(v) if kind != KIND_RECORD && !v.chars().any(char::is_control) => v.to_owned(),
        _ => hex::encode(value),
    };
    format!("kind {} value {value} seq {seq}", char::from(kind).escape_default())
}

/// The keyed hashes of one run: the bucket of a (kind, value), and a posting's 128-bit
/// hash. The keys are drawn afresh for each run, so whoever changes the store cannot
/// choose postings whose sums collide with those they removed.
struct Hashes {
    buckets: std::collections::hash_map::RandomState,
    /// SHA-256 having taken in a random 64-byte key (one block): each posting's hash is
    /// this state, cloned, over the posting.
    keyed: sha2::Sha256,
}

impl Hashes {
    fn new() -> Hashes {
        use rand::RngCore as _;
        use sha2::Digest as _;
        let mut key = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut key);
        let mut keyed = sha2::Sha256::new();
        keyed.update(key);
        Hashes { buckets: Default::default(), keyed }
    }

    fn bucket(&self, kind: u8, value: &[u8]) -> usize {
        use std::hash::BuildHasher as _;
        (self.buckets.hash_one((kind, value)) % INDEX_BUCKETS as u64) as usize
    }

    fn posting(&self, kind: u8, value: &[u8], seq: u64) -> u128 {
        use sha2::Digest as _;
        let mut h = self.keyed.clone();
        h.update([kind]);
        h.update((value.len() as u32).to_be_bytes());
        h.update(value);
        h.update(seq.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        u128::from_be_bytes(out)
    }
}

/// Postings folded into buckets: per bucket, how many and the wrapping sum of their keyed
/// hashes, which does not depend on the order they were folded in.
struct Fold {
    count: Vec<u64>,
    sum: Vec<u128>,
}

impl Fold {
    fn new() -> Fold {
        Fold { count: vec![0; INDEX_BUCKETS], sum: vec![0; INDEX_BUCKETS] }
    }

    fn add(&mut self, h: &Hashes, kind: u8, value: &[u8], seq: u64) {
        let b = h.bucket(kind, value);
        self.count[b] = self.count[b].wrapping_add(1);
        self.sum[b] = self.sum[b].wrapping_add(h.posting(kind, value, seq));
    }

    fn merge(&mut self, o: &Fold) {
        for b in 0..INDEX_BUCKETS {
            self.count[b] = self.count[b].wrapping_add(o.count[b]);
            self.sum[b] = self.sum[b].wrapping_add(o.sum[b]);
        }
    }
}

/// What one check reads: which entries are expected to have postings, and under which rule.
struct Scope {
    /// Entries 1 through this are checked.
    through: u64,
    /// From this entry on, what an entry lists is indexed by number; before it, by record
    /// (the first entry an `n` posting names: no build wrote one before schema 8).
    by_number_from: u64,
}

impl Scope {
    fn listed(&self, seq: u64) -> Listed {
        if seq >= self.by_number_from {
            Listed::ByNumber
        } else {
            Listed::ByRecord
        }
    }

    /// Call `put` with every posting entries `lo..=hi` imply (an unreadable entry is a
    /// finding: its postings cannot be known).
    fn implied(
        &self,
        store: &Store,
        lo: u64,
        hi: u64,
        found: &mut Findings,
        mut put: impl FnMut(u8, &[u8], u64),
    ) {
        store.for_each_audit_entry(lo, hi.min(self.through), |item| {
            match item {
                Ok((seq, _, raw)) => match serde_json::from_slice::<AuditEntry>(raw) {
                    Ok(e) if e.seq == seq => postings(&e, self.listed(seq), |k, v| put(k, v, seq)),
                    _ => found.other(format!("entry {seq} is unreadable: its postings cannot be checked")),
                },
                Err(e) => found.other(format!("entries from {lo}: {e}")),
            }
            true
        });
    }
}

/// One piece of the first pass: entries, or a range of index keys (by kind and value).
enum Work {
    Entries(u64, u64),
    Postings(Vec<u8>, Option<Vec<u8>>),
}

/// The ranges of index keys read as separate pieces of work: one per kind, the record
/// kind (most keys: one per record on most nodes) in sixteen. Together they cover every
/// key, and all keys of one (kind, value) lie in one range.
fn posting_ranges() -> Vec<Work> {
    let mut starts: Vec<Vec<u8>> =
        [KIND_PEER, KIND_CATEGORY, KIND_AGREEMENT, KIND_ACTION, KIND_RECORD, KIND_OUTCOME, KIND_NUMBERS]
            .iter()
            .map(|k| vec![*k])
            .collect();
    starts.extend((1..16u8).map(|i| vec![KIND_RECORD, i * 16]));
    starts.push(Vec::new());
    starts.sort();
    let ends = starts.iter().skip(1).map(|e| Some(e.clone())).chain([None]);
    starts.iter().cloned().zip(ends).map(|(from, to)| Work::Postings(from, to)).collect()
}

/// Fold the stored postings of index keys in `from..to`, checking that each (kind,
/// value)'s keys list increasing sequence numbers, each key from the one it names (a
/// query seeks by that number). Postings past `scope.through` are not folded: those the
/// writer appended while this ran are skipped, any other is beyond the indexed range.
/// Returns how many were folded.
fn fold_stored(
    store: &Store,
    h: &Hashes,
    scope: &Scope,
    range: (&[u8], Option<&[u8]>),
    fold: &mut Fold,
    found: &mut Findings,
) -> u64 {
    let mut n = 0u64;
    // The (kind, value) of the key before, and the last number it listed.
    let mut last: Option<(u8, Vec<u8>, u64)> = None;
    // Postings up to here are the writer's, whether or not this check covers them.
    let mut appended = scope.through;
    store.for_each_audit_posting_list(range.0, range.1, |item| {
        let list = match item {
            Ok(l) => l,
            Err(e) => {
                found.other(format!("an index key is unreadable: {e}"));
                return true;
            }
        };
        let (kind, value) = (list.kind, list.value);
        let name = |seq| posting_text(kind, value, seq);
        let mut prev = match &last {
            Some((k, v, s)) if *k == kind && v == value => Some(*s),
            _ => None,
        };
        match list.seqs.first() {
            None => found.other(format!("the index key of {} lists no entry", name(list.first))),
            Some(s) if *s != list.first => found.other(format!(
                "the index key of {} lists entry {s} first (queries seek by the entry the key names)",
                name(list.first)
            )),
            Some(_) => {}
        }
        for &seq in list.seqs {
            if prev.is_some_and(|p| seq <= p) {
                found.other(format!("{} is listed out of order (queries may miss it)", name(seq)));
            }
            prev = Some(seq);
            if seq <= scope.through {
                fold.add(h, kind, value, seq);
                n += 1;
                continue;
            }
            if seq > appended {
                // Read again: the writer commits an entry, its postings and the indexes'
                // mark in one batch, so a posting it appended is within the mark now.
                let head = store.audit_head().ok().flatten().map_or(0, |h| h.0);
                appended = store.audit_indexed().unwrap_or(0).min(head).max(appended);
            }
            if seq > appended {
                found.unexpected(format!(
                    "posting beyond the indexed range: {} (the indexes cover entries through {appended})",
                    name(seq)
                ));
            }
        }
        last = Some((kind, value.to_vec(), prev.unwrap_or(list.first)));
        true
    });
    n
}

/// Check the index postings of entries 1 through `verified` (those whose chain verified)
/// that the indexes cover (`Maudit_index`) against the entries: the postings the index
/// rules ([`postings`]) give each entry must be exactly those stored, none missing, none
/// more, and none beyond the entries covered.
///
/// Memory stays bounded on any log: a first pass folds each posting, implied and stored,
/// into one of [`INDEX_BUCKETS`] buckets by a hash of its (kind, value) — a count and a
/// sum of keyed hashes — in parallel pieces; only when buckets differ does a second pass
/// read the postings of the first [`INDEX_BUCKETS_EXPLAINED`] of them (memory bounded by
/// those buckets) to name what differs.
pub fn verify_indexes(store: &Store, verified: u64) -> IndexReport {
    let mut found = Findings::default();
    let indexed = store.audit_indexed();
    let head = store.audit_head().map(|h| h.map_or(0, |h| h.0));
    let (indexed, head) = match (indexed, head) {
        (Ok(i), Ok(h)) => (i, h),
        (Err(e), _) | (_, Err(e)) => {
            found.other(format!("the indexes' mark cannot be read: {e}"));
            (0, 0)
        }
    };
    if indexed > head {
        found.other(format!(
            "the indexes say they cover entries through {indexed}, but the log ends at entry {head}"
        ));
    }
    // No build wrote an `n` posting before schema 8: entries before the first one an `n`
    // posting names were indexed by record.
    let mut by_number_from = u64::MAX;
    store.for_each_audit_posting_list(&[KIND_NUMBERS], Some(&[KIND_NUMBERS + 1]), |item| {
        if let Some(min) = item.ok().and_then(|l| l.seqs.iter().min().copied()) {
            by_number_from = by_number_from.min(min);
        }
        true
    });
    let scope = Scope { through: indexed.min(verified).min(head), by_number_from };
    let h = Hashes::new();

    // First pass: every entry and every index key, in pieces taken by a few threads.
    let mut work: Vec<Work> = (0..scope.through.div_ceil(INDEX_CHECK_ENTRIES))
        .map(|i| Work::Entries(i * INDEX_CHECK_ENTRIES + 1, (i + 1) * INDEX_CHECK_ENTRIES))
        .collect();
    work.extend(posting_ranges());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(crate::audit::MAX_VERIFY_THREADS);
    type Done = (Fold, Fold, u64, u64, Vec<(usize, Findings)>);
    let done: Vec<Option<Done>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut implied, mut stored) = (Fold::new(), Fold::new());
                    let (mut n_implied, mut n_stored) = (0u64, 0u64);
                    let mut findings = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(w) = work.get(i) else { break };
                        let mut f = Findings::default();
                        match w {
                            Work::Entries(lo, hi) => scope.implied(store, *lo, *hi, &mut f, |k, v, seq| {
                                implied.add(&h, k, v, seq);
                                n_implied += 1;
                            }),
                            Work::Postings(from, to) => {
                                n_stored +=
                                    fold_stored(store, &h, &scope, (from, to.as_deref()), &mut stored, &mut f)
                            }
                        }
                        findings.push((i, f));
                    }
                    (implied, stored, n_implied, n_stored, findings)
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().ok()).collect()
    });
    let (mut implied, mut stored) = (Fold::new(), Fold::new());
    let (mut expected, mut n_stored) = (0u64, 0u64);
    let mut pieces = Vec::new();
    for d in done {
        match d {
            Some((i, s, ni, ns, fs)) => {
                implied.merge(&i);
                stored.merge(&s);
                expected += ni;
                n_stored += ns;
                pieces.extend(fs);
            }
            None => found.other("an index check thread failed".into()),
        }
    }
    // In the order of the pieces, whichever thread took them.
    pieces.sort_by_key(|(i, _)| *i);
    for (_, f) in pieces {
        found.absorb(f);
    }
    let differing: Vec<usize> = (0..INDEX_BUCKETS)
        .filter(|b| implied.count[*b] != stored.count[*b] || implied.sum[*b] != stored.sum[*b])
        .collect();

    // Second pass, only on a difference: name it.
    if !differing.is_empty() {
        explain(store, &h, &scope, &differing[..differing.len().min(INDEX_BUCKETS_EXPLAINED)], &mut found);
    }
    let ok = differing.is_empty() && found.is_empty();
    let (differences, more) = found.into_list();
    IndexReport {
        ok,
        through: scope.through,
        expected,
        stored: n_stored,
        differing_buckets: differing.len() as u64,
        differences,
        more,
    }
}

/// Read the postings of buckets `buckets` again, those the entries imply and those stored,
/// and name the differences (memory: the implied postings of those buckets).
fn explain(store: &Store, h: &Hashes, scope: &Scope, buckets: &[usize], found: &mut Findings) {
    let mut wanted = vec![false; INDEX_BUCKETS];
    for b in buckets {
        wanted[*b] = true;
    }
    let mut implied: BTreeMap<(u64, u8, Vec<u8>), u32> = BTreeMap::new();
    let mut ignored = Findings::default();
    scope.implied(store, 1, scope.through, &mut ignored, |k, v, seq| {
        if wanted[h.bucket(k, v)] {
            *implied.entry((seq, k, v.to_vec())).or_default() += 1;
        }
    });
    // Stored postings the entries do not imply, in these buckets (bounded by them too).
    let mut unexpected: Vec<(u64, u8, Vec<u8>)> = Vec::new();
    store.for_each_audit_posting_list(&[], None, |item| {
        let Ok(list) = item else { return true };
        if !wanted[h.bucket(list.kind, list.value)] {
            return true;
        }
        for &seq in list.seqs.iter().filter(|s| **s <= scope.through) {
            match implied.get_mut(&(seq, list.kind, list.value.to_vec())) {
                Some(c) if *c > 0 => *c -= 1,
                _ => unexpected.push((seq, list.kind, list.value.to_vec())),
            }
        }
        true
    });
    for ((seq, k, v), left) in implied {
        for _ in 0..left {
            found.missing(format!("posting missing: {}", posting_text(k, &v, seq)));
        }
    }
    unexpected.sort();
    for (seq, k, v) in unexpected {
        found.unexpected(format!("posting with no entry: {}", posting_text(k, &v, seq)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::audit::{Action, AuditEvent, Outcome, GENESIS};
    use rand::{Rng, SeedableRng};
    use tamga_protocol::{AgreementId, CategoryId, MemberCode, RecordId};

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    struct Log {
        _dir: tempfile::TempDir,
        store: Store,
        entries: Vec<AuditEntry>,
    }

    fn members() -> Vec<MemberCode> {
        ["KZ", "CN", "UZ", "KG"].iter().map(|m| m.parse().expect("valid")).collect()
    }
    fn categories() -> Vec<CategoryId> {
        ["rms.method", "ipr.infringement", "energy.transfer"]
            .iter()
            .map(|m| m.parse().expect("valid"))
            .collect()
    }
    fn agreements() -> Vec<AgreementId> {
        ["sco-ipr-2012", "sco-rms-2013"].iter().map(|m| m.parse().expect("valid")).collect()
    }
    const ACTIONS: [Action; 6] = [
        Action::Ingested,
        Action::Sent,
        Action::Delivered,
        Action::Received,
        Action::Rejected,
        Action::Withheld,
    ];
    const OUTCOMES: [Outcome; 3] = [Outcome::Ok, Outcome::Refused, Outcome::Failed];

    /// A record received from `members()[0]` under `shares`.
    fn received(id: RecordId, shares: Vec<(AgreementId, u64)>) -> crate::store::StoredRecord {
        crate::store::StoredRecord {
            id,
            header: tamga_protocol::RecordHeader {
                category: categories()[0].clone(),
                classification: tamga_protocol::Classification::Public,
                origin: members()[0],
                created_ms: T0,
                supersedes: None,
                expires_ms: None,
            },
            body: BTreeMap::new(),
            withheld: 0,
            source: crate::store::Source::Received { from: members()[0], agreement: shares[0].0.clone() },
            stored_ms: T0,
            salts: BTreeMap::new(),
            state: crate::store::RecordState::Live,
            shares,
        }
    }

    /// A log of random entries spread over six days, written in batches of random sizes
    /// (one larger than a posting key holds) through [`append`].
    fn log(n: usize, seed: u64) -> Log {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let records: Vec<RecordId> =
            (0..40u32).map(|i| tamga_protocol::Digest::of(&i.to_be_bytes())).collect();
        let mut head = (0u64, GENESIS);
        let mut i = 0usize;
        let mut big_done = false;
        let mut shares: BTreeMap<RecordId, Vec<(AgreementId, u64)>> = BTreeMap::new();
        while i < n {
            let size = if !big_done && i > n / 2 {
                big_done = true;
                crate::store::MAX_POSTINGS_PER_KEY + 100
            } else {
                rng.gen_range(1..300)
            };
            let mut batch = WriteBatch::default();
            for _ in 0..size.min(n - i) {
                let mut ev = AuditEvent::new(ACTIONS[rng.gen_range(0..6)], OUTCOMES[rng.gen_range(0..3)]);
                if rng.gen_bool(0.7) {
                    ev = ev.peer(members()[rng.gen_range(0..4)]);
                }
                if rng.gen_bool(0.2) {
                    // An entry listing what one push or pull took in.
                    let taken = (0..rng.gen_range(1..5))
                        .map(|seq| crate::audit::TakenIn {
                            record: records[rng.gen_range(0..40)],
                            category: categories()[rng.gen_range(0..3)].clone(),
                            origin: members()[0],
                            seq,
                        })
                        .collect();
                    ev = ev.projections(taken);
                } else if rng.gen_bool(0.8) {
                    ev = ev.record(records[rng.gen_range(0..40)], categories()[rng.gen_range(0..3)].clone());
                }
                if rng.gen_bool(0.6) {
                    ev = ev.agreement(agreements()[rng.gen_range(0..2)].clone());
                }
                // As on a receiver, a record taken in lists the number it came under.
                if let Some(a) = &ev.agreement {
                    for p in &ev.projections {
                        shares.entry(p.record).or_default().push((a.clone(), p.seq));
                    }
                }
                let time = T0 + (i as i64) * 6 * DAY / n as i64;
                append(&mut batch, &mut head, ev, time, tamga_protocol::Digest([1; 32]));
                i += 1;
            }
            store.commit(batch).expect("commits");
        }
        let mut batch = WriteBatch::default();
        for (id, shares) in shares {
            batch.put_record(&received(id, shares)).expect("encodes");
        }
        store.commit(batch).expect("commits");
        let entries = store
            .audit_entries(1, u64::MAX)
            .map(|r| serde_json::from_slice(&r.expect("reads").2).expect("parses"))
            .collect();
        Log { _dir: dir, store, entries }
    }

    fn seqs(store: &Store, f: &Filter) -> (Vec<u64>, QueryStats) {
        let mut out = Vec::new();
        let stats = for_each_match(store, f, |_, e, _| {
            out.push(e.seq);
            true
        })
        .expect("queries");
        (out, stats)
    }

    fn expect(entries: &[AuditEntry], keep: impl Fn(&AuditEntry) -> bool) -> Vec<u64> {
        entries.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
    }

    fn all() -> Filter {
        Filter { limit: usize::MAX, ..Filter::default() }
    }

    #[test]
    fn an_answer_cut_at_its_limit_says_more_entries_match() {
        let l = log(600, 4);
        let rejected = expect(&l.entries, |e| e.action == Action::Rejected);
        assert!(rejected.len() > 3, "the log has rejections to cut");
        let f = |limit| Filter { action: Some(Action::Rejected), limit, ..Filter::default() };
        let page = |limit| {
            let (entries, more) = query_page(&l.store, &f(limit)).expect("queries");
            (entries.iter().map(|e| e.entry.seq).collect::<Vec<_>>(), more)
        };
        assert_eq!(page(2), (rejected[..2].to_vec(), true));
        assert_eq!(page(rejected.len() - 1), (rejected[..rejected.len() - 1].to_vec(), true));
        assert_eq!(page(rejected.len()), (rejected.clone(), false), "all of them: nothing more");
        assert_eq!(page(usize::MAX), (rejected, false));
        assert_eq!(page(0), (Vec::new(), true), "a limit of 0 answers nothing of what matches");
    }

    #[test]
    fn each_filter_returns_exactly_the_expected_entries_through_an_index() {
        let l = log(9000, 1);
        let e = &l.entries;
        for p in members() {
            let (got, stats) = seqs(&l.store, &Filter { peer: Some(p), ..all() });
            assert_eq!(got, expect(e, |x| x.peer == Some(p)), "peer {p}");
            assert_eq!(
                (stats.indexes, stats.entries_read),
                (1, got.len() as u64),
                "peer {p}: read only matches"
            );
        }
        for c in categories() {
            let (got, _) = seqs(&l.store, &Filter { category: Some(c.clone()), ..all() });
            let lists = |x: &AuditEntry| x.projections.iter().any(|p| p.category == c);
            assert_eq!(got, expect(e, |x| x.category.as_ref() == Some(&c) || lists(x)), "category {c}");
        }
        for a in agreements() {
            let (got, _) = seqs(&l.store, &Filter { agreement: Some(a.clone()), ..all() });
            assert_eq!(got, expect(e, |x| x.agreement.as_ref() == Some(&a)), "agreement {a}");
        }
        for a in ACTIONS {
            let (got, _) = seqs(&l.store, &Filter { action: Some(a), ..all() });
            assert_eq!(got, expect(e, |x| x.action == a), "action {a:?}");
        }
        for o in OUTCOMES {
            let (got, stats) = seqs(&l.store, &Filter { outcome: Some(o), ..all() });
            assert_eq!(got, expect(e, |x| x.outcome == o), "outcome {o:?}");
            assert_eq!(stats.indexes, usize::from(o != Outcome::Ok), "ok is not indexed, the others are");
        }
        for i in [0u32, 7, 39] {
            let r = tamga_protocol::Digest::of(&i.to_be_bytes());
            let (got, _) = seqs(&l.store, &Filter { record: Some(r), ..all() });
            let lists = |x: &AuditEntry| x.projections.iter().any(|p| p.record == r);
            assert_eq!(got, expect(e, |x| x.record == Some(r) || lists(x)), "record {i}");
            assert_eq!(trace(&l.store, r).expect("traces").len(), got.len());
        }
        // Time bounds are inclusive, at an entry's exact time and between entries.
        let t = e[3000].time_ms;
        for (since, until) in
            [(Some(t), None), (None, Some(t)), (Some(t + 1), Some(t + DAY)), (Some(t), Some(t))]
        {
            let (got, stats) = seqs(&l.store, &Filter { since_ms: since, until_ms: until, ..all() });
            let want =
                expect(e, |x| since.is_none_or(|s| x.time_ms >= s) && until.is_none_or(|u| x.time_ms <= u));
            assert_eq!(got, want, "since {since:?} until {until:?}");
            assert_eq!(stats.entries_read, want.len() as u64, "a time range reads only its entries");
        }
        let (got, _) = seqs(&l.store, &Filter { since_ms: Some(T0 + 7 * DAY), ..all() });
        assert!(got.is_empty(), "after the last entry");
        let (got, _) = seqs(&l.store, &Filter { until_ms: Some(T0 - 1), ..all() });
        assert!(got.is_empty(), "before the first entry");
    }

    #[test]
    fn combined_filters_intersect_the_indexes() {
        let l = log(6000, 2);
        let e = &l.entries;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let mut f = all();
            if rng.gen_bool(0.5) {
                f.peer = Some(members()[rng.gen_range(0..4)]);
            }
            if rng.gen_bool(0.4) {
                f.category = Some(categories()[rng.gen_range(0..3)].clone());
            }
            if rng.gen_bool(0.4) {
                f.agreement = Some(agreements()[rng.gen_range(0..2)].clone());
            }
            if rng.gen_bool(0.5) {
                f.action = Some(ACTIONS[rng.gen_range(0..6)]);
            }
            if rng.gen_bool(0.3) {
                f.outcome = Some(OUTCOMES[rng.gen_range(0..3)]);
            }
            if rng.gen_bool(0.2) {
                f.record = Some(tamga_protocol::Digest::of(&rng.gen_range(0u32..40).to_be_bytes()));
            }
            if rng.gen_bool(0.5) {
                let day = rng.gen_range(0..6);
                f.since_ms = Some(T0 + day * DAY);
                f.until_ms = Some(T0 + (day + 1) * DAY - 1);
            }
            let (got, _) = seqs(&l.store, &f);
            assert_eq!(got, expect(e, |x| f.matches(x)), "{f:?}");
            // A limit keeps the first matches, in log order.
            let limited = query(&l.store, &Filter { limit: 3, ..f.clone() }).expect("queries");
            assert_eq!(
                limited.iter().map(|x| x.entry.seq).collect::<Vec<_>>(),
                got.iter().take(3).copied().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn counts_by_each_grouping_are_right() {
        let l = log(3000, 4);
        let e = &l.entries;
        let f = Filter { action: Some(Action::Sent), ..all() };
        for by in [GroupBy::Peer, GroupBy::Category, GroupBy::Action, GroupBy::Agreement, GroupBy::Day] {
            let c = count(&l.store, &f, Some(by)).expect("counts");
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            let sent: Vec<_> = e.iter().filter(|x| x.action == Action::Sent).collect();
            for x in &sent {
                let keys: Vec<String> = match by {
                    GroupBy::Peer => vec![x.peer.map_or("-".into(), |p| p.to_string())],
                    GroupBy::Category => {
                        let listed = x.projections.iter().map(|p| p.category.to_string());
                        let cs: BTreeSet<String> =
                            x.category.iter().map(|c| c.to_string()).chain(listed).collect();
                        if cs.is_empty() {
                            vec!["-".into()]
                        } else {
                            cs.into_iter().collect()
                        }
                    }
                    GroupBy::Action => vec![x.action.as_str().to_owned()],
                    GroupBy::Agreement => vec![x.agreement.as_ref().map_or("-".into(), |a| a.to_string())],
                    GroupBy::Day => vec![crate::audit::rfc3339(x.time_ms)[..10].to_owned()],
                };
                for key in keys {
                    *want.entry(key).or_default() += 1;
                }
            }
            let got: BTreeMap<String, u64> = c.groups.iter().map(|g| (g.key.clone(), g.count)).collect();
            assert_eq!(got, want, "by {by:?}");
            assert_eq!(c.total, sent.len() as u64);
            if by == GroupBy::Category {
                // Each category's group counts what a query of that category finds.
                for cat in categories() {
                    let q = Filter { category: Some(cat.clone()), ..f.clone() };
                    assert_eq!(count(&l.store, &q, None).expect("counts").total, got[cat.as_str()], "{cat}");
                }
            }
        }
        assert_eq!(GroupBy::Day, "day".parse().expect("parses"));
        assert_eq!(count(&l.store, &all(), Some(GroupBy::Day)).expect("counts").groups.len(), 6, "six days");
        assert_eq!(count(&l.store, &all(), None).expect("counts").total, 3000);
    }

    #[test]
    fn receipts_are_found_under_the_records_numbers_and_a_number_it_gave_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let (kz, uz) = (members()[0], members()[2]);
        let a = agreements()[0].clone();
        let [held, gave_up, other]: [RecordId; 3] =
            [1u32, 2, 3].map(|i| tamga_protocol::Digest::of(&i.to_be_bytes()));
        // `held` and `gave_up` are numbers #3 and #4 of KZ's stream; `other` is #200
        // (another list of numbers); one entry keeps UZ's receipts for all three.
        let item =
            |record, seq| tamga_protocol::ReceiptItem { record, agreement: a.clone(), origin: kz, seq };
        let items = vec![item(held, 3), item(gave_up, 4), item(other, 200)];
        let signed = Receipt::sign_batch(items, uz, T0, &tamga_config::demo::demo_signing_key(uz));
        let mut head = (0u64, GENESIS);
        let mut batch = WriteBatch::default();
        let delivered = AuditEvent::new(Action::Delivered, Outcome::Ok).receipts(signed);
        append(&mut batch, &mut head, delivered, T0, Digest([1; 32]));
        // `gave_up` then gives #4 up (after a restore), and is shared again as #130.
        let sent = AuditEvent::new(Action::Sent, Outcome::Ok)
            .record(gave_up, categories()[0].clone())
            .agreement(a.clone())
            .projection(kz, 4);
        append(&mut batch, &mut head, sent, T0 + 1, Digest([1; 32]));
        for (id, seq) in [(held, 3), (gave_up, 130), (other, 200)] {
            batch.put_record(&received(id, vec![(a.clone(), seq)])).expect("encodes");
        }
        store.commit(batch).expect("commits");
        let kept =
            |id| -> Vec<u64> { receipts(&store, id).expect("reads").iter().map(|(_, r)| r.seq).collect() };
        assert_eq!((kept(held), kept(gave_up), kept(other)), (vec![3], vec![4], vec![200]));
        let traced =
            |id| -> Vec<u64> { trace(&store, id).expect("reads").iter().map(|e| e.entry.seq).collect() };
        assert_eq!((traced(held), traced(gave_up), traced(other)), (vec![1], vec![1, 2], vec![1]));
        // Not held, and named by no entry: nothing.
        assert!(trace(&store, tamga_protocol::Digest::of(b"none")).expect("reads").is_empty());
        // A `delivered` entry's receipts are indexed by their numbers, as verify expects.
        let r = with_indexes(&store);
        assert!(r.ok && r.indexes.as_ref().is_some_and(|i| i.expected > 0), "{r:?}");
    }

    #[test]
    fn a_log_written_without_indexes_is_scanned_then_indexed() {
        // Entries as a build before the indexes wrote them: the entry and the head only.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut prev = GENESIS;
        let mut batch = WriteBatch::default();
        for seq in 1..=500u64 {
            let peer = members()[(seq % 4) as usize];
            let ev = AuditEvent::new(Action::Sent, Outcome::Ok).peer(peer);
            let e = AuditEntry::build(seq, T0 + seq as i64, ev, GENESIS, prev);
            let bytes = e.to_bytes();
            prev = tamga_protocol::Digest::of(&bytes);
            batch.put_audit(seq, &bytes, &prev);
        }
        store.commit(batch).expect("commits");
        // The indexes cover no entry yet, and none is expected to have postings.
        let r = with_indexes(&store);
        assert!(r.ok && r.indexes.as_ref().is_some_and(|i| (i.through, i.expected) == (0, 0)), "{r:?}");
        let p = members()[1];
        let want: Vec<u64> = (1..=500).filter(|s| s % 4 == 1).collect();
        let (got, stats) = seqs(&store, &Filter { peer: Some(p), ..all() });
        assert_eq!(stats.indexes, 0, "incomplete indexes are not trusted");
        assert_eq!(got, want);
        // Opening the writer's state indexes what is missing.
        ChainState::open(&store, (500, prev)).expect("opens");
        assert_eq!(store.audit_indexed().expect("reads"), 500);
        let (again, stats) = seqs(&store, &Filter { peer: Some(p), since_ms: Some(T0 + 200), ..all() });
        assert_eq!(stats.indexes, 1);
        assert_eq!(again, want.into_iter().filter(|s| *s >= 200).collect::<Vec<_>>());
        assert_eq!(rebuild_indexes(&store, 500).expect("nothing left"), 0);
        let r = with_indexes(&store);
        assert!(r.ok && r.indexes.as_ref().is_some_and(|i| (i.through, i.expected) == (500, 1000)), "{r:?}");
        // …and a posting for an entry the indexes do not cover yet is one too many.
        let mut prev_head = (500, prev);
        let mut batch = WriteBatch::default();
        let ev = AuditEvent::new(Action::Sent, Outcome::Ok).peer(p);
        let seq = prev_head.0 + 1;
        let e = AuditEntry::build(seq, T0 + 501, ev, GENESIS, prev_head.1);
        let bytes = e.to_bytes();
        prev_head = (seq, tamga_protocol::Digest::of(&bytes));
        batch.put_audit(seq, &bytes, &prev_head.1);
        batch.put_audit_index(KIND_PEER, &p.as_bytes(), seq);
        store.commit(batch).expect("commits");
        let r = with_indexes(&store);
        assert!(crate::audit::verify_store(&store).ok);
        assert_eq!(
            r.indexes.expect("checked").differences,
            [format!("posting beyond the indexed range: kind p value {p} seq 501 (the indexes cover entries through 500)")]
        );
    }

    /// `audit verify --indexes`, with no signer and no witness.
    fn with_indexes(store: &Store) -> crate::audit::VerifyReport {
        crate::audit::verify_store_and_indexes(store, &crate::audit::VerifyOptions::default())
    }

    /// Every posting key of the indexes: kind, value, the entry the key names, what it lists.
    fn posting_lists(store: &Store) -> Vec<(u8, Vec<u8>, u64, Vec<u64>)> {
        let mut out = Vec::new();
        store.for_each_audit_posting_list(&[], None, |l| {
            let l = l.expect("reads");
            out.push((l.kind, l.value.to_vec(), l.first, l.seqs.to_vec()));
            true
        });
        out
    }

    /// TAMPER: overwrite the posting key (kind, value, first) to list `seqs`, bypassing the
    /// writer (the key layout is the store's: `I`, kind, value, 0, first seq).
    fn rewrite(store: &Store, kind: u8, value: &[u8], first: u64, seqs: &[u64]) {
        let key = [b"I", &[kind][..], value, &[0], &first.to_be_bytes()].concat();
        let listed = seqs.iter().flat_map(|s| s.to_be_bytes()).collect();
        store.raw_insert(vec![(key, listed)]).expect("tampers");
    }

    /// TAMPER: add one posting under a key of its own, as a commit of the writer would.
    fn add_posting(store: &Store, kind: u8, value: &[u8], seq: u64) {
        let mut batch = WriteBatch::default();
        batch.put_audit_index(kind, value, seq);
        store.commit(batch).expect("commits");
    }

    /// The report of a log whose indexes were tampered with: the chain alone verifies (the
    /// option is what finds it); with the indexes, it fails and names the differences.
    fn differences(store: &Store) -> (crate::audit::VerifyReport, IndexReport) {
        let plain = crate::audit::verify_store(store);
        assert!(plain.ok && plain.indexes.is_none(), "the entries are sound: {plain:?}");
        let r = with_indexes(store);
        assert!(!r.ok && r.first_bad.is_none(), "{r:?}");
        assert!(
            r.error.as_deref().is_some_and(|e| e.starts_with("the indexes disagree with the entries: ")),
            "{r:?}"
        );
        let i = r.indexes.clone().expect("checked");
        assert!(!i.ok);
        (r, i)
    }

    #[test]
    fn an_honest_log_with_every_index_kind_verifies_with_its_indexes() {
        let l = log(6000, 7);
        let lists = posting_lists(&l.store);
        let kinds: BTreeSet<u8> = lists.iter().map(|l| l.0).collect();
        let all_kinds =
            [KIND_PEER, KIND_CATEGORY, KIND_AGREEMENT, KIND_ACTION, KIND_RECORD, KIND_NUMBERS, KIND_OUTCOME];
        assert_eq!(kinds, all_kinds.into_iter().collect(), "every kind is in the log");
        let postings: usize = lists.iter().map(|l| l.3.len()).sum();
        let r = with_indexes(&l.store);
        assert!(r.ok && r.error.is_none(), "{r:?}");
        let i = r.indexes.expect("checked");
        assert_eq!((i.through, i.expected, i.stored), (6000, postings as u64, postings as u64));
        assert_eq!((i.differing_buckets, i.differences.len(), i.more), (0, 0, 0));
        assert!(crate::audit::verify_store(&l.store).indexes.is_none(), "not checked unless asked");
    }

    /// Append `ev` as builds before schema 8 did: what an entry lists indexed by record.
    fn append_by_record(batch: &mut WriteBatch, head: &mut (u64, Digest), ev: AuditEvent, time_ms: i64) {
        let seq = head.0 + 1;
        let e = AuditEntry::build(seq, time_ms, ev, Digest([1; 32]), head.1);
        let bytes = e.to_bytes();
        let hash = Digest::of(&bytes);
        batch.put_audit(seq, &bytes, &hash);
        postings(&e, Listed::ByRecord, |kind, value| batch.put_audit_index(kind, value, seq));
        batch.set_audit_indexed(seq);
        *head = (seq, hash);
    }

    #[test]
    fn a_store_indexed_by_record_before_schema_8_then_by_number_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let records: Vec<RecordId> = (0..8u32).map(|i| Digest::of(&i.to_be_bytes())).collect();
        let taken = |i: u64| -> AuditEvent {
            let listed = (0..3)
                .map(|k| crate::audit::TakenIn {
                    record: records[((i + k) % 8) as usize],
                    category: categories()[0].clone(),
                    origin: members()[0],
                    seq: i * 3 + k,
                })
                .collect();
            AuditEvent::new(Action::Received, Outcome::Ok)
                .peer(members()[0])
                .agreement(agreements()[0].clone())
                .projections(listed)
        };
        let mut head = (0u64, GENESIS);
        let mut batch = WriteBatch::default();
        for i in 0..40 {
            append_by_record(&mut batch, &mut head, taken(i), T0 + i as i64);
        }
        store.commit(batch).expect("commits");
        assert!(posting_lists(&store).iter().all(|l| l.0 != KIND_NUMBERS), "no `n` posting yet");
        let r = with_indexes(&store);
        assert!(r.ok, "a store of schema 7 alone: {r:?}");
        // The store is opened by this build, which goes on by number.
        let mut batch = WriteBatch::default();
        for i in 40..80 {
            append(&mut batch, &mut head, taken(i), T0 + i as i64, Digest([1; 32]));
        }
        store.commit(batch).expect("commits");
        let r = with_indexes(&store);
        assert!(r.ok, "{r:?}");
        // An old entry's record posting deleted is still found.
        let (_, value, first, seqs) = posting_lists(&store)
            .into_iter()
            .find(|l| l.0 == KIND_RECORD && l.3.len() > 2)
            .expect("a record listed by several old entries");
        let gone = seqs[1];
        assert!(gone < 41, "an entry indexed by record");
        let kept: Vec<u64> = seqs.iter().copied().filter(|s| *s != gone).collect();
        rewrite(&store, KIND_RECORD, &value, first, &kept);
        let (_, i) = differences(&store);
        assert_eq!(
            i.differences,
            [format!("posting missing: kind r value {} seq {gone}", hex::encode(&value))]
        );
    }

    #[test]
    fn each_changed_posting_is_named_by_verify_with_indexes_only() {
        // A log, and one of its action lists of several entries with a gap after the
        // second, into which a posting can be moved to an entry of another action.
        let fresh = || {
            let l = log(2000, 5);
            let (kind, value, first, seqs) = posting_lists(&l.store)
                .into_iter()
                .find(|l| l.0 == KIND_ACTION && l.3.len() > 3 && l.3[2] > l.3[1] + 1)
                .expect("an action list with a gap");
            (l, kind, value, first, seqs)
        };
        let action = |v: &[u8]| String::from_utf8(v.to_vec()).expect("an action name");

        // Deleted: the second posting of the list.
        let (l, kind, value, first, seqs) = fresh();
        let mut fewer = seqs.clone();
        fewer.remove(1);
        rewrite(&l.store, kind, &value, first, &fewer);
        let (r, i) = differences(&l.store);
        let missing = format!("posting missing: kind a value {} seq {}", action(&value), seqs[1]);
        assert_eq!(i.differences, std::slice::from_ref(&missing));
        assert_eq!(i.stored + 1, i.expected);
        assert!(r.error.as_deref().is_some_and(|e| e.contains(&missing)), "{r:?}");

        // Added: a peer posting for an entry that names another peer, or none.
        let (l, ..) = fresh();
        let kz = members()[0];
        let other = l.entries.iter().find(|e| e.peer != Some(kz)).expect("an entry not about KZ").seq;
        add_posting(&l.store, KIND_PEER, &kz.as_bytes(), other);
        let (_, i) = differences(&l.store);
        let no_entry = format!("posting with no entry: kind p value KZ seq {other}");
        assert!(i.differences.contains(&no_entry), "{i:?}");
        assert_eq!(i.stored, i.expected + 1);

        // Its seq changed: moved into the gap, to an entry of another action.
        let (l, kind, value, first, seqs) = fresh();
        let moved = seqs[1] + 1;
        let mut changed = seqs.clone();
        changed[1] = moved;
        rewrite(&l.store, kind, &value, first, &changed);
        let (_, i) = differences(&l.store);
        let name = action(&value);
        assert_eq!(
            i.differences,
            [
                format!("posting missing: kind a value {name} seq {}", seqs[1]),
                format!("posting with no entry: kind a value {name} seq {moved}"),
            ]
        );

        // Beyond the indexed range, for an entry that does not exist.
        let (l, ..) = fresh();
        add_posting(&l.store, KIND_ACTION, b"sent", 2005);
        let (_, i) = differences(&l.store);
        assert_eq!(
            i.differences,
            ["posting beyond the indexed range: kind a value sent seq 2005 (the indexes cover entries through 2000)"]
        );

        // A key that no longer starts at the entry it names (queries seek by it).
        let (l, kind, value, first, seqs) = fresh();
        rewrite(&l.store, kind, &value, first, &seqs[1..]);
        let (_, i) = differences(&l.store);
        assert_eq!(
            i.differences,
            [
                format!("posting missing: kind a value {name} seq {first}", name = action(&value)),
                format!(
                    "the index key of kind a value {} seq {first} lists entry {} first (queries seek by the entry the key names)",
                    action(&value),
                    seqs[1]
                ),
            ]
        );
    }

    #[test]
    fn many_differences_are_counted_and_a_few_named() {
        let l = log(2000, 5);
        // Every record posting of the first 600 entries gone.
        let mut gone = 0u64;
        for (kind, value, first, seqs) in posting_lists(&l.store).into_iter().filter(|l| l.0 == KIND_RECORD) {
            let kept: Vec<u64> = seqs.iter().copied().filter(|s| *s > 600).collect();
            gone += (seqs.len() - kept.len()) as u64;
            rewrite(&l.store, kind, &value, first, &kept);
        }
        assert!(gone > 100, "{gone}");
        let (r, i) = differences(&l.store);
        assert!(i.differing_buckets > INDEX_BUCKETS_EXPLAINED as u64, "{i:?}");
        assert!(i.differences.len() <= 3 * INDEX_DIFFERENCES_NAMED && i.more > 0, "{i:?}");
        assert!(i.differences.iter().any(|d| d.starts_with("posting missing: kind r value ")), "{i:?}");
        let error = r.error.expect("an error");
        assert!(error.contains("more differences") && error.contains("buckets"), "{error}");
    }

    #[test]
    fn export_lines_carry_the_exact_hashed_bytes() {
        let l = log(50, 6);
        let page = export_page(&l.store, 10, 20, 5).expect("exports");
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
        for e in &page {
            let line = jsonl_line(e);
            let raw = &line[83..line.len() - 1];
            assert_eq!(tamga_protocol::Digest::of(raw.as_bytes()), e.hash);
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(v["entry"]["seq"], e.seq);
            let csv = csv_line(e);
            assert!(csv.starts_with(&format!("{},{},", e.seq, e.hash)), "{csv}");
            assert!(csv.ends_with(&format!("\"{}\"", e.entry.replace('"', "\"\""))), "{csv}");
        }
    }

    #[test]
    fn the_clock_never_goes_back_and_checkpoints_fall_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut st = ChainState::open(&store, (0, GENESIS)).expect("opens");
        st.configure(&tamga_config::AuditConfig { checkpoint_every: 10, checkpoint_secs: 60 });
        assert_eq!(st.clock(1_000), 1_000);
        assert_eq!(st.clock(500), 1_000, "a clock stepped back does not reorder the log");
        assert!(!st.due(0, 1_000), "nothing to sign");
        st.signed(1, 1_000);
        assert!(!st.due(5, 2_000));
        assert!(st.due(11, 2_000), "ten entries since");
        assert!(st.due(2, 61_000), "sixty seconds since");
        assert_eq!(st.wait(2, 31_000), Duration::from_secs(30));
        assert_eq!(st.wait(1, 31_000), Duration::from_secs(60), "nothing new: a full period");
        st.force = true;
        assert!(st.due(2, 2_000));
    }
}

//! The write path: one task that owns every write to the store and the head of the audit
//! chain.
//!
//! Callers send [`Op`]s through a bounded channel. The task takes the first op, drains up
//! to [`MAX_GROUP`] more that are already waiting, turns the whole group into one atomic
//! [`WriteBatch`] (records, indexes, audit entries), commits it, flushes once if any op
//! in the group needs durability, and only then answers. Concurrent ingests thus share
//! one flush (group commit): acknowledged means durable without a flush per record.
//!
//! Within a group, each op reads the store as the ops before it left it
//! ([`Store::pending`]): a revocation finds the share stored a moment before and purges
//! it, a share arriving after its revocation finds the tombstone. An op that fails
//! halfway (a stored value that does not decode) is undone to where it began and answered
//! with the error; the rest of the group is committed without it.
//!
//! If a commit or flush fails (disk full, read-only directory), every op of the group is
//! answered with the error, the in-memory chain head is not advanced, and nothing of the
//! group is acknowledged.
//!
//! An own audit checkpoint is visible in the store once its group is applied, but only a
//! flush makes it durable. The one that may leave the node (a peer keeps the one in our
//! hello as a witness of our log) is [`Writer::durable_checkpoint`]: the newest that a
//! successful flush covered, so a crash can never make the log disagree with it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tamga_config::{Decision, Federation};
use tamga_protocol::disclosure::ProjectError;
use tamga_protocol::{
    AgreementId, Checkpoint, Digest, EntryKind, Envelope, MemberCode, Projection, Receipt, RecordId,
    SaltedRecord, SigningKey, StreamKey,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::audit::{listed_runs, projections_of, Action, AuditEvent, Outcome, TakenIn, GENESIS};
use crate::daemon::PolicyCell;
use crate::metrics::Metrics;
use crate::store::{
    OutboxKey, Reconciled, RecordState, Restored, Savepoint, Source, Store, StoreError, StoredRecord,
    WalkCursor, WriteBatch,
};

/// Capacity of the op channel; senders wait when it is full (back-pressure on the API).
pub const WRITE_QUEUE: usize = 4096;
/// Most ops committed in one group (one batch, one flush).
pub const MAX_GROUP: usize = 512;
/// Most ops that ask for no answer (audit entries, receipts, peer checkpoints) kept from
/// write groups that failed, to be written by the next group ([`WriterTask::carried`]).
/// Past it the oldest are dropped, counted, and the count audited once a group commits.
pub const MAX_CARRIED: usize = 10_000;

/// How many projections held one tick of the walk of the projections held reads (after
/// start-up and after each reload): with the default one-minute tick, a node holding a
/// million projections walks them all in about two hours.
pub const WALK_ROUND: usize = 8192;

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store refused the write; nothing of it was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (the node is shutting down).
    #[error("the node is shutting down")]
    Stopped,
    /// The write does not apply to what is stored (a record already revoked, say);
    /// nothing of it was applied.
    #[error("{0}")]
    Refused(String),
}

/// The result of ingesting one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The record id.
    pub id: RecordId,
    /// False when the record was already held (idempotent ingest).
    pub new: bool,
}

/// What happened to a piece of feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackEvent {
    /// This node gave it; keep it until the origin has it.
    Given,
    /// The origin stored it: out of the outbox, from under the key it was read with.
    Delivered(OutboxKey),
    /// The origin refused it round after round (this reason the last): out of the outbox.
    GivenUp(OutboxKey, String),
    /// A peer gave it on one of this node's records.
    Received,
}

/// Where an ingest is answered.
type IngestReply = oneshot::Sender<Result<Vec<Ingested>, WriteError>>;

/// An op's reply channel and the result it will be sent once the group is durable.
type Answer<T, E = StoreError> = (oneshot::Sender<Result<T, WriteError>>, Result<T, E>);

/// A raw copy of the store, taken between two write groups.
pub type Snapshot = Vec<(Vec<u8>, Vec<u8>)>;

/// A request to the writer.
#[derive(Debug)]
pub enum Op {
    /// Store own records, durably.
    Ingest {
        /// The records, already validated against the catalog and salted (salting is
        /// done by the caller, off the single write path).
        records: Vec<SaltedRecord>,
        /// Which of them the store held when the caller looked (also off that path).
        checked: Checked,
        /// Where to answer.
        reply: IngestReply,
    },
    /// Append an audit entry (made durable with the next flush).
    Audit(Box<AuditEvent>),
    /// Append an audit entry and answer once it is durable.
    AuditDurable {
        /// The entry.
        event: Box<AuditEvent>,
        /// Where to answer once durable.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Store verified projections received from a peer, durably (receipts are signed after).
    Received {
        /// The member that delivered them.
        from: MemberCode,
        /// The projections, each already verified, with its record id.
        items: Vec<(RecordId, Projection)>,
        /// Sequence numbers that exist but are not for this node, each with the member on
        /// whose word: the sender's, or this node's own (its accept policy declined them).
        withheld: Vec<(StreamKey, u64, MemberCode)>,
        /// Where to answer: per item, what became of it.
        reply: oneshot::Sender<Result<Vec<Taken>, WriteError>>,
    },
    /// Store receipts that peers signed for projections this node sent, each with the kind
    /// of entry it acknowledges (a receipt for a revocation is a purge receipt).
    Receipts(Vec<(Receipt, EntryKind)>),
    /// Revoke an own record: a revocation entry in every stream it was projected in.
    Revoke {
        /// The record.
        id: RecordId,
        /// Where to answer: how many revocation entries were made.
        reply: oneshot::Sender<Result<usize, WriteError>>,
    },
    /// Purge every projection whose expiry has passed.
    PurgeExpired,
    /// Feedback: given by this node (outbox), delivered (out of the outbox), or received.
    Feedback {
        /// The feedback.
        feedback: Box<tamga_protocol::Feedback>,
        /// What happened to it.
        event: FeedbackEvent,
        /// Where to answer once durable.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Take back what a peer holds of an own stream (see [`WriterTask::take_back`]).
    TakeBack {
        /// What the peer holds.
        held: HeldByPeer,
        /// Where to answer, once durable.
        reply: oneshot::Sender<Result<TookBack, WriteError>>,
    },
    /// Keep a checkpoint a peer showed of its own log (its signature already verified).
    PeerCheckpoint(tamga_protocol::Checkpoint),
    /// Take a consistent snapshot of the whole store.
    Snapshot {
        /// Where to answer.
        reply: oneshot::Sender<Result<Snapshot, WriteError>>,
    },
}

/// A cheap, cloneable handle to the writer task.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    store: Store,
    /// How many groups that wrote records the task has applied ([`WriterTask::remember`]).
    applied: Arc<AtomicU64>,
    /// The newest own checkpoint known durable ([`WriterTask::flushed`]).
    durable_checkpoint: watch::Receiver<Option<Checkpoint>>,
}

/// Which records of an ingest the store held when its caller looked them up, once
/// `after` groups that wrote records had been applied: a record held then is held still
/// (records are never deleted, a revoked one leaves its tombstone), and one not held can
/// only have come since, in a group the writer task remembers.
#[derive(Debug)]
pub struct Checked {
    after: u64,
    held: Vec<bool>,
}

impl Writer {
    /// Ingest records; answers once they are durable. Whether each is held already is
    /// looked up here, on the caller's task, so that the single write path does not.
    pub async fn ingest(&self, records: Vec<SaltedRecord>) -> Result<Vec<Ingested>, WriteError> {
        // Read before the lookups: every group counted in it is visible to them.
        let after = self.applied.load(Ordering::Acquire);
        let view = self.store.view();
        let held = records.iter().map(|r| view.has_record(&r.id)).collect::<Result<_, _>>()?;
        let (reply, rx) = oneshot::channel();
        let op = Op::Ingest { records, checked: Checked { after, held }, reply };
        self.tx.send(op).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Append an audit entry. Waits for room in the queue, not for the flush.
    pub async fn audit(&self, ev: AuditEvent) {
        // A stopped writer means shutdown; the event has nowhere durable to go.
        let _ = self.tx.send(Op::Audit(Box::new(ev))).await;
    }

    /// Append an audit entry and wait until it is durable: for an event the node answers
    /// (an API refusal), so that a `kill -9` after the answer cannot erase it.
    pub async fn audit_durable(&self, ev: AuditEvent) -> Result<(), WriteError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::AuditDurable { event: Box::new(ev), reply };
        self.tx.send(op).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Store verified projections from a peer, and mark numbers withheld from this node,
    /// each on its claimant's word (see [`Op::Received`]); answers once they are durable.
    pub async fn received(
        &self,
        from: MemberCode,
        items: Vec<(RecordId, Projection)>,
        withheld: Vec<(StreamKey, u64, MemberCode)>,
    ) -> Result<Vec<Taken>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Received { from, items, withheld, reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Take back what a peer holds of an own stream; answers once durable.
    pub async fn take_back(&self, held: HeldByPeer) -> Result<TookBack, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::TakeBack { held, reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Revoke an own record; answers with the number of revocation entries, once durable.
    pub async fn revoke(&self, id: RecordId) -> Result<usize, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Revoke { id, reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Record feedback given, delivered or received; answers once durable.
    pub async fn feedback(
        &self,
        feedback: tamga_protocol::Feedback,
        event: FeedbackEvent,
    ) -> Result<(), WriteError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Feedback { feedback: Box::new(feedback), event, reply };
        self.tx.send(op).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Purge expired projections (the sync task calls this periodically).
    pub async fn purge_expired(&self) {
        let _ = self.tx.send(Op::PurgeExpired).await;
    }

    /// Store receipts for delivered projections.
    pub async fn receipts(&self, receipts: Vec<(Receipt, EntryKind)>) {
        let _ = self.tx.send(Op::Receipts(receipts)).await;
    }

    /// Keep a checkpoint a peer showed in its hello, so that this node can later witness
    /// that the peer's log was not rewritten (`tamga audit checkpoints --member`). The
    /// caller has verified its signature against the peer's roster key.
    pub async fn peer_checkpoint(&self, cp: tamga_protocol::Checkpoint) {
        let _ = self.tx.send(Op::PeerCheckpoint(cp)).await;
    }

    /// The newest checkpoint of this node's own log that a flush has made durable: the
    /// only one that may leave the node (a peer's hello, a witness). The store's newest
    /// may be applied and not yet flushed, and a crash would lose it.
    pub fn durable_checkpoint(&self) -> Option<Checkpoint> {
        self.durable_checkpoint.borrow().clone()
    }

    /// A consistent copy of the store, its audit log ending with a checkpoint signed over
    /// its last entry.
    pub async fn snapshot(&self) -> Result<Snapshot, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Snapshot { reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Everything the writer task owns.
pub struct WriterTask {
    store: Store,
    me: MemberCode,
    policy: Arc<PolicyCell>,
    metrics: Arc<Metrics>,
    head: (u64, Digest),
    signing: SigningKey,
    /// Where new own projections are announced for an immediate push (best effort:
    /// anti-entropy delivers whatever a full channel drops).
    notify: Option<mpsc::Sender<Vec<Projection>>>,
    /// The audit clock and checkpoint schedule.
    audit: crate::audit_index::ChainState,
    /// The walk of the projections held (see [`WriterTask::walk_held`]) under way: where
    /// its next round starts (`Some(None)`: at the beginning). `None`: no walk to do.
    walk: Option<Option<WalkCursor>>,
    /// The federation the walk has been under; another one restarts it.
    walked_under: Option<Arc<Federation>>,
    /// How many groups that wrote records have been applied, shared with the handles.
    applied: Arc<AtomicU64>,
    /// The ids of records the last [`RECENT_GROUPS`] of those groups wrote, each set with
    /// its group's number: what an ingest's caller could not have seen ([`Checked`]).
    recent: VecDeque<(u64, HashSet<RecordId>)>,
    /// Something is applied that no flush has yet made durable (a group that needed none,
    /// or one whose flush failed): the next group that answers durable flushes first.
    unflushed: bool,
    /// The newest own checkpoint applied since the last flush that succeeded: made durable,
    /// and published, by the next one.
    unflushed_checkpoint: Option<Checkpoint>,
    /// The newest own checkpoint a flush made durable, published to the handles: at
    /// start-up the store's newest (what was recovered is durable), then what each
    /// successful flush covered.
    durable_checkpoint: watch::Sender<Option<Checkpoint>>,
    /// Ops that ask for no answer, from groups whose commit failed: put at the head of
    /// the next group, so that a failing write loses none of what they audit.
    carried: Vec<Op>,
    /// How many such ops were dropped past [`MAX_CARRIED`] since a group last committed.
    lost: u64,
}

impl std::fmt::Debug for WriterTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterTask").field("me", &self.me).field("head", &self.head).finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl WriterTask {
    /// Prepare the writer over an open store.
    pub fn new(
        store: Store,
        me: MemberCode,
        policy: Arc<PolicyCell>,
        metrics: Arc<Metrics>,
        signing: SigningKey,
        notify: Option<mpsc::Sender<Vec<Projection>>>,
    ) -> Result<WriterTask, StoreError> {
        let head = store.audit_head()?.unwrap_or((0, GENESIS));
        let audit = crate::audit_index::ChainState::open(&store, head)?;
        let (durable_checkpoint, _) = watch::channel(store.latest_checkpoint()?);
        Ok(WriterTask {
            store,
            me,
            policy,
            metrics,
            head,
            signing,
            notify,
            audit,
            walk: None,
            walked_under: None,
            applied: Arc::new(AtomicU64::new(0)),
            recent: VecDeque::with_capacity(RECENT_GROUPS),
            unflushed: false,
            unflushed_checkpoint: None,
            durable_checkpoint,
            carried: Vec::new(),
            lost: 0,
        })
    }

    /// Take the audit checkpoint schedule from `node.toml` (defaults otherwise).
    pub fn with_audit_config(mut self, c: &tamga_config::AuditConfig) -> WriterTask {
        self.audit.configure(c);
        self
    }

    /// Start the task; it ends when every handle is dropped or `cancel` fires, after
    /// finishing the ops already queued.
    pub fn spawn(self, cancel: CancellationToken) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (store, applied) = (self.store.clone(), self.applied.clone());
        let durable_checkpoint = self.durable_checkpoint.subscribe();
        let handle = tokio::spawn(self.run(rx, cancel));
        (Writer { tx, store, applied, durable_checkpoint }, handle)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Op>, cancel: CancellationToken) {
        let span = tracing::info_span!("writer", member = %self.me);
        let _guard = span.enter();
        loop {
            let wait = self.audit.wait(self.head.0, now_ms());
            let first = tokio::select! {
                biased;
                op = rx.recv() => op,
                () = cancel.cancelled() => { rx.close(); rx.recv().await }
                () = tokio::time::sleep(wait) => {
                    // A checkpoint falls due by time.
                    if self.audit.due(self.head.0, now_ms()) {
                        self.apply(Vec::new()).await;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.apply(group).await;
        }
        // Sign the final head, so that the log of a stopped node ends with a checkpoint.
        self.audit.force = true;
        if self.audit.due(self.head.0, now_ms()) {
            self.apply(Vec::new()).await;
        }
        match self.store.flush().await {
            Ok(()) => self.flushed(),
            Err(e) => tracing::error!(error = %e, "final flush failed"),
        }
        tracing::debug!("writer stopped");
    }

    fn append(&self, batch: &mut WriteBatch, head: &mut (u64, Digest), ev: AuditEvent, now: i64) {
        crate::audit_index::append(batch, head, ev, now, self.policy.get().policy_digest);
    }

    async fn apply(&mut self, group: Vec<Op>) {
        let now = self.audit.clock(now_ms());
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let group = match self.carried.is_empty() {
            true => group,
            false => std::mem::take(&mut self.carried).into_iter().chain(group).collect(),
        };
        // What the ops that ask for no answer wrote, kept until the group commits.
        let mut kept: Vec<Op> = Vec::new();
        if self.lost > 0 {
            let ev = AuditEvent::new(Action::EntriesLost, Outcome::Failed).reason(format!(
                "{} audit entries, receipt sets or peer checkpoints were not written: write groups kept failing",
                self.lost
            ));
            self.append(&mut batch, &mut head, ev, now);
        }
        let mut durable = false;
        let mut answers: Vec<Answer<Vec<Ingested>>> = Vec::new();
        let mut snapshots = Vec::new();
        let (mut new_records, mut dups) = (0u64, 0u64);
        let fed = self.policy.get();
        let mut projections: Vec<Projection> = Vec::new();
        let mut received_answers = Vec::new();
        let mut revoke_answers: Vec<Answer<usize, WriteError>> = Vec::new();
        let mut took_back_answers: Vec<Answer<TookBack>> = Vec::new();
        let mut seqs = GroupSeqs::default();
        let mut feedback_answers: Vec<Answer<()>> = Vec::new();
        let mut audit_answers: Vec<oneshot::Sender<Result<(), WriteError>>> = Vec::new();
        let (mut received, mut delivered) = (0u64, 0u64);

        for op in group {
            match op {
                Op::Ingest { records, checked, reply } => {
                    durable = true;
                    let mark = (batch.savepoint(), head);
                    match self.ingest(&fed, records, checked, &mut batch, &mut head, now) {
                        Ok((out, ps)) => {
                            let fresh = out.iter().filter(|i| i.new).count() as u64;
                            new_records += fresh;
                            dups += out.len() as u64 - fresh;
                            projections.extend(ps);
                            answers.push((reply, Ok(out)));
                        }
                        Err(e) => {
                            undo(&mut batch, &mut head, mark);
                            answers.push((reply, Err(e)));
                        }
                    }
                }
                Op::Audit(ev) => {
                    self.append(&mut batch, &mut head, (*ev).clone(), now);
                    kept.push(Op::Audit(ev));
                }
                Op::AuditDurable { event, reply } => {
                    durable = true;
                    self.append(&mut batch, &mut head, *event, now);
                    audit_answers.push(reply);
                }
                Op::Received { from, items, withheld, reply } => {
                    durable = true;
                    let mark = (batch.savepoint(), head);
                    let r = self
                        .store_received(&fed, from, items, withheld, &mut batch, &mut head, &mut seqs, now);
                    match &r {
                        Ok(taken) => received += taken.iter().filter(|t| **t == Taken::New).count() as u64,
                        Err(_) => undo(&mut batch, &mut head, mark),
                    }
                    received_answers.push((reply, r));
                }
                Op::Receipts(receipts) => {
                    delivered += receipts.len() as u64;
                    self.keep_receipts(&receipts, &mut batch, &mut head, now);
                    kept.push(Op::Receipts(receipts));
                }
                Op::PeerCheckpoint(cp) => {
                    if let Err(e) = batch.put_peer_checkpoint(&cp) {
                        tracing::warn!(error = %e, "peer checkpoint not stored");
                    }
                    kept.push(Op::PeerCheckpoint(cp));
                }
                Op::Revoke { id, reply } => {
                    durable = true;
                    let mark = (batch.savepoint(), head);
                    match self.revoke(id, &mut batch, &mut head, now) {
                        Ok(ps) => {
                            let n = ps.len();
                            projections.extend(ps);
                            revoke_answers.push((reply, Ok(n)));
                        }
                        Err(e) => {
                            undo(&mut batch, &mut head, mark);
                            revoke_answers.push((reply, Err(e)));
                        }
                    }
                }
                Op::Feedback { feedback, event, reply } => {
                    durable = true;
                    let f = *feedback;
                    // Recorded already (sent again after its answer was lost, or delivered
                    // by two rounds at once): done, once durable, with nothing written or
                    // audited again.
                    let view = self.store.pending(&batch);
                    let again = match &event {
                        FeedbackEvent::Given => Ok(false),
                        FeedbackEvent::Delivered(k) | FeedbackEvent::GivenUp(k, _) => {
                            view.in_outbox(k).map(|waiting| !waiting)
                        }
                        FeedbackEvent::Received => view.holds_feedback(&f),
                    };
                    match again {
                        Ok(false) => {}
                        Ok(true) => {
                            feedback_answers.push((reply, Ok(())));
                            continue;
                        }
                        Err(e) => {
                            feedback_answers.push((reply, Err(e)));
                            continue;
                        }
                    }
                    let r = match &event {
                        FeedbackEvent::Given => batch.put_feedback_outbox(&f),
                        FeedbackEvent::Delivered(k) | FeedbackEvent::GivenUp(k, _) => {
                            batch.remove_feedback_outbox(k);
                            Ok(())
                        }
                        FeedbackEvent::Received => batch.put_feedback_received(&f),
                    };
                    // Nothing was written if it failed (the value did not encode).
                    if let Err(e) = r {
                        feedback_answers.push((reply, Err(e)));
                        continue;
                    }
                    let (peer, what, outcome) = match event {
                        FeedbackEvent::Given => {
                            (f.origin, format!("given: {}", f.outcome.as_str()), Outcome::Ok)
                        }
                        FeedbackEvent::Delivered(_) => {
                            (f.origin, format!("delivered: {}", f.outcome.as_str()), Outcome::Ok)
                        }
                        FeedbackEvent::GivenUp(_, why) => (
                            f.origin,
                            format!(
                                "given up: {}, refused by its origin round after round ({why})",
                                f.outcome.as_str()
                            ),
                            Outcome::Refused,
                        ),
                        FeedbackEvent::Received => {
                            (f.from, format!("received: {}", f.outcome.as_str()), Outcome::Ok)
                        }
                    };
                    let mut ev = AuditEvent::new(Action::Feedback, outcome)
                        .peer(peer)
                        .agreement(f.agreement.clone())
                        .reason(if f.note.is_empty() { what } else { format!("{what}: {}", f.note) });
                    ev.record = Some(f.record);
                    self.append(&mut batch, &mut head, ev, now);
                    feedback_answers.push((reply, Ok(())));
                }
                Op::PurgeExpired => {
                    // Expiry is judged by the wall clock as it is now, not by the audit
                    // clock (which never goes back): a clock that was ahead for a moment
                    // must not purge what has not expired.
                    let wall = now_ms();
                    let mark = (batch.savepoint(), head);
                    if let Err(e) = self.purge_expired(&fed, &mut batch, &mut head, wall, now) {
                        undo(&mut batch, &mut head, mark);
                        tracing::warn!(error = %e, "expiry purge failed; retried at the next tick");
                    }
                    // Started, or agreements or policy changed: walk what is held once more,
                    // and ask again for what the policy before declined.
                    if !self.walked_under.as_ref().is_some_and(|f| Arc::ptr_eq(f, &fed)) {
                        self.walked_under = Some(fed.clone());
                        self.walk = Some(None);
                        let mark = (batch.savepoint(), head);
                        if let Err(e) = self.ask_again_if_policy_changed(&fed, &mut batch) {
                            undo(&mut batch, &mut head, mark);
                            self.walked_under = None;
                            tracing::warn!(error = %e, "declined numbers not reconsidered; retried at the next tick");
                        }
                    }
                    if let Some(from) = self.walk.take() {
                        let mark = (batch.savepoint(), head);
                        match self.walk_held(&fed, from.as_ref(), &mut batch, &mut head, wall, now) {
                            Ok((next, made)) => {
                                self.walk = next.map(Some);
                                // Made here, sent once committed: durable first, as an
                                // ingest's, or a restart could number another record so.
                                durable |= !made.is_empty();
                                projections.extend(made);
                            }
                            Err(e) => {
                                undo(&mut batch, &mut head, mark);
                                self.walk = Some(from);
                                tracing::warn!(error = %e, "walk of the projections held failed; retried at the next tick");
                            }
                        }
                    }
                }
                Op::TakeBack { held, reply } => {
                    durable = true;
                    let mark = (batch.savepoint(), head);
                    let stream = held.stream.clone();
                    let r = self.take_back(&fed, held, &mut batch, &mut head, now);
                    match r {
                        Ok((took, again, given_up)) => {
                            received += took.taken as u64;
                            projections.retain(|p| {
                                let same = p.header.origin == stream.origin
                                    && p.envelope.agreement == stream.agreement;
                                !(same && given_up.contains(&p.envelope.seq))
                            });
                            projections.extend(again);
                            took_back_answers.push((reply, Ok(took)));
                        }
                        Err(e) => {
                            undo(&mut batch, &mut head, mark);
                            took_back_answers.push((reply, Err(e)));
                        }
                    }
                }
                Op::Snapshot { reply } => snapshots.push(reply),
            }
        }
        // A snapshot (a backup) ends with a checkpoint over its last entry, so that a
        // restore can check who signed all of its log, not only up to the last one due.
        if !snapshots.is_empty() {
            self.audit.force = true;
        }
        let checkpoint = self.checkpoint_if_due(&mut batch, &mut head, now);
        durable |= checkpoint.is_some();

        let committed = if batch.is_empty() {
            Ok(())
        } else {
            let written = batch.record_ids();
            self.store.commit(batch).map(|()| {
                // Applied, so visible to readers, whether or not the flush succeeds.
                self.remember(written);
                self.unflushed = true;
                // Made durable, and shown to peers, by the next flush that succeeds.
                if let Some((_, cp)) = &checkpoint {
                    self.unflushed_checkpoint = Some(cp.clone());
                }
            })
        };
        // A group whose answers say durable flushes whatever is applied and not yet known
        // durable, even when it wrote nothing itself: a retry of a write whose flush failed
        // finds its records held, and must not be told so before they are durable.
        let committed = match committed {
            Ok(()) if durable && self.unflushed => {
                let flushed = self.store.flush().await;
                self.unflushed = flushed.is_err();
                if flushed.is_ok() {
                    self.flushed();
                }
                flushed
            }
            other => other,
        };
        match committed {
            Ok(()) => {
                self.lost = 0;
                // Every entry the group appended, whatever op appended it.
                self.metrics.audit_entries.add(head.0 - self.head.0);
                self.head = head;
                if let Some((entry_seq, _)) = checkpoint {
                    self.audit.signed(entry_seq, now);
                }
                self.metrics.projections_received.add(received);
                self.metrics.projections_delivered.add(delivered);
                for (reply, result) in received_answers {
                    let _ = reply.send(result.map_err(WriteError::from));
                }
                for (reply, result) in revoke_answers {
                    let _ = reply.send(result);
                }
                for (reply, result) in took_back_answers {
                    let _ = reply.send(result.map_err(WriteError::from));
                }
                for (reply, result) in feedback_answers {
                    let _ = reply.send(result.map_err(WriteError::from));
                }
                for reply in audit_answers {
                    let _ = reply.send(Ok(()));
                }
                if let (Some(n), false) = (&self.notify, projections.is_empty()) {
                    if n.try_send(projections).is_err() {
                        tracing::debug!("push queue full; anti-entropy will deliver");
                    }
                }
                self.metrics.records_ingested.add(new_records);
                self.metrics.records_duplicate.add(dups);
                self.metrics.write_groups.add(1);
                for (reply, result) in answers {
                    let _ = reply.send(result.map_err(WriteError::from));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write group failed; nothing acknowledged");
                // A walk round of this group is lost with it: walk again from the start.
                self.walked_under = None;
                // The batch was not applied (apply_batch is atomic) or not made durable;
                // re-read the head so the chain continues from what is really stored.
                self.head = self.store.audit_head().ok().flatten().unwrap_or(self.head);
                let why = match &e {
                    StoreError::Engine(m) => m.clone(),
                    other => other.to_string(),
                };
                for (reply, _) in answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                for (reply, _) in received_answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                for (reply, _) in revoke_answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                for (reply, _) in took_back_answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                for (reply, _) in feedback_answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                for reply in audit_answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                // A backup of what is applied but not durable would hold, and sign a
                // checkpoint over, entries a crash could still take back.
                for reply in snapshots.drain(..) {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(why.clone()))));
                }
                self.carry(kept);
            }
        }
        for reply in snapshots {
            let snap: Result<Snapshot, StoreError> = self.store.dump().collect();
            let _ = reply.send(snap.map_err(WriteError::from));
        }
    }
}

impl WriterTask {
    /// Store new own records, each with its `ingested` entry and its projections; a record
    /// held already is answered as such and not stored again. The op's projections are
    /// numbered first and signed together ([`sign_shares`]), then stored with their
    /// records; one that cannot be made fails the op, which is undone.
    fn ingest(
        &self,
        fed: &Federation,
        records: Vec<SaltedRecord>,
        checked: Checked,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<(Vec<Ingested>, Vec<Projection>), StoreError> {
        let mut out = Vec::with_capacity(records.len());
        let mut fresh: Vec<(SaltedRecord, Vec<Share>)> = Vec::with_capacity(records.len());
        let mut taken = HashSet::with_capacity(records.len());
        for (salted, held) in records.into_iter().zip(checked.held) {
            let id = salted.id;
            if held || taken.contains(&id) || self.held_since(checked.after, &id, batch)? {
                out.push(Ingested { id, new: false });
                continue;
            }
            taken.insert(id);
            let ev = AuditEvent::new(Action::Ingested, Outcome::Ok)
                .record(id, salted.record.header.category.clone());
            self.append(batch, head, ev, now);
            let shares = self.number_shares(fed, &salted, batch, head, now)?;
            fresh.push((salted, shares));
            out.push(Ingested { id, new: true });
        }
        let signed = sign_shares(&fresh, &self.signing).map_err(|e| {
            tracing::error!(error = %e, "projection refused");
            StoreError::Engine(format!("a projection could not be made: {e}"))
        })?;
        let mut projections = Vec::with_capacity(signed.len());
        let mut signed = signed.into_iter();
        for (salted, shares) in fresh {
            let projected: Vec<Projection> = signed.by_ref().take(shares.len()).collect();
            for p in &projected {
                batch.put_projection(p)?;
            }
            let stored = StoredRecord {
                id: salted.id,
                header: salted.record.header,
                body: salted.record.body,
                withheld: 0,
                source: Source::Local,
                stored_ms: now,
                salts: salted.salts,
                state: RecordState::Live,
                shares: projected.iter().map(|p| (p.envelope.agreement.clone(), p.envelope.seq)).collect(),
            };
            batch.put_new_record(&stored)?;
            projections.extend(projected);
        }
        Ok((out, projections))
    }

    /// Whether a record its caller found not held once `after` groups were applied is
    /// held now: written earlier in this group, or by a group applied since (or, when
    /// those are no longer all remembered, found in the store).
    fn held_since(&self, after: u64, id: &RecordId, batch: &WriteBatch) -> Result<bool, StoreError> {
        if batch.holds_record(id) {
            return Ok(true);
        }
        let applied = self.applied.load(Ordering::Relaxed);
        if applied.saturating_sub(after) > self.recent.len() as u64 {
            return self.store.view().has_record(id);
        }
        Ok(self.recent.iter().rev().take_while(|(g, _)| *g > after).any(|(_, ids)| ids.contains(id)))
    }

    /// A flush succeeded: everything applied before it is durable, so is the newest
    /// checkpoint among it, which peers may now be shown.
    fn flushed(&mut self) {
        if let Some(cp) = self.unflushed_checkpoint.take() {
            self.durable_checkpoint.send_replace(Some(cp));
        }
    }

    /// Remember the records an applied group wrote, for [`WriterTask::held_since`].
    fn remember(&mut self, written: Vec<RecordId>) {
        if written.is_empty() {
            return;
        }
        let group = self.applied.load(Ordering::Relaxed) + 1;
        if self.recent.len() == RECENT_GROUPS {
            self.recent.pop_front();
        }
        self.recent.push_back((group, written.into_iter().collect()));
        self.applied.store(group, Ordering::Release);
    }

    /// Number a new own record's share under every agreement that covers it and whose
    /// policy names an audience; audit what policy withholds. Sequence numbers are
    /// assigned here, in the same atomic batch as the record, so a stream never has a
    /// hole: the caller signs and stores every share or undoes them all.
    fn number_shares(
        &self,
        fed: &Federation,
        salted: &SaltedRecord,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<Vec<Share>, StoreError> {
        let header = &salted.record.header;
        let mut out = Vec::new();
        for agreement in fed.agreements_for(&header.category) {
            if !agreement.is_party(self.me) {
                continue;
            }
            let audience = tamga_config::audience(header, agreement, fed, now);
            // Audit what policy withholds: once when the reason is the same for every
            // party (a classified record, an agreement not in force), else per party.
            let denials: Vec<(MemberCode, String)> = agreement
                .parties
                .iter()
                .filter(|p| **p != self.me && !audience.contains(p))
                .filter_map(|p| match tamga_config::decide(header, agreement, *p, fed, now) {
                    Decision::Deny(r) => Some((*p, r.to_string())),
                    Decision::Allow { .. } => None,
                })
                .collect();
            let same = denials.windows(2).all(|w| w[0].1 == w[1].1);
            if same && denials.len() > 1 {
                let ev = AuditEvent::new(Action::Withheld, Outcome::Refused)
                    .record(salted.id, header.category.clone())
                    .agreement(agreement.id.clone())
                    .policy(fed.policy_digest)
                    .reason(format!("from every party: {}", denials[0].1));
                self.append(batch, head, ev, now);
            } else {
                for (p, why) in denials {
                    let ev = AuditEvent::new(Action::Withheld, Outcome::Refused)
                        .peer(p)
                        .record(salted.id, header.category.clone())
                        .agreement(agreement.id.clone())
                        .policy(fed.policy_digest)
                        .reason(why);
                    self.append(batch, head, ev, now);
                }
            }
            if audience.is_empty() {
                continue;
            }
            let share = self.next_share(&fed.catalog, agreement, salted, audience, batch)?;
            batch.set_stream_head(&share.stream(self.me), share.envelope.seq);
            out.push(share);
        }
        Ok(out)
    }

    /// An own record's share under `agreement` with `audience`, at the next number of the
    /// stream (the caller moves the stream's head once the share is made). It reveals only
    /// fields that `catalog` (the one in force) lists for the record's category: a field
    /// dropped or renamed since the record was stored has no tags left to decide on.
    fn next_share(
        &self,
        catalog: &tamga_config::Catalog,
        agreement: &tamga_config::Agreement,
        salted: &SaltedRecord,
        audience: Vec<MemberCode>,
        batch: &WriteBatch,
    ) -> Result<Share, StoreError> {
        let header = &salted.record.header;
        let stream = StreamKey { origin: self.me, agreement: agreement.id.clone() };
        let seq = self.store.pending(batch).stream_head(&stream)? + 1;
        let envelope = Envelope {
            kind: EntryKind::Share,
            agreement: agreement.id.clone(),
            audience,
            seq,
            expires_ms: agreement.purge_at_ms(header),
        };
        let unknown: Vec<String> =
            salted.record.body.keys().filter(|f| !catalog.lists(&header.category, f)).cloned().collect();
        let withheld = tamga_config::withheld(agreement, &header.category).map(|w| {
            if unknown.is_empty() {
                w
            } else {
                w.and(unknown)
            }
        });
        Ok(Share { withheld, envelope })
    }

    /// Share an own record under `agreement` with `audience`: its projection, redacted as
    /// the agreement says and signed, at the next number of the stream. `None` if the
    /// record cannot be projected.
    fn put_share(
        &self,
        catalog: &tamga_config::Catalog,
        agreement: &tamga_config::Agreement,
        salted: &SaltedRecord,
        audience: Vec<MemberCode>,
        batch: &mut WriteBatch,
    ) -> Result<Option<Projection>, StoreError> {
        let share = self.next_share(catalog, agreement, salted, audience, batch)?;
        match share.sign(salted, &self.signing) {
            Ok(p) => {
                batch.put_projection(&p)?;
                batch.set_stream_head(&share.stream(self.me), p.envelope.seq);
                Ok(Some(p))
            }
            // audience() never admits a classified record; refuse quietly if it ever did.
            Err(e) => {
                tracing::error!(error = %e, "projection refused");
                Ok(None)
            }
        }
    }

    /// Revoke an own record's share (its envelope `of`) in `stream`: a revocation entry,
    /// signed, for the same audience, at the next number of the stream. `None` if the
    /// record cannot be projected.
    fn put_revocation(
        &self,
        salted: &SaltedRecord,
        of: &Envelope,
        stream: &StreamKey,
        batch: &mut WriteBatch,
    ) -> Result<Option<Projection>, StoreError> {
        let next = self.store.pending(batch).stream_head(stream)? + 1;
        let Ok(rev) = salted.revocation(of, next, &self.signing) else { return Ok(None) };
        batch.put_projection(&rev)?;
        batch.set_stream_head(stream, next);
        Ok(Some(rev))
    }

    /// Store verified projections from `from`, advance each stream's contiguous mark.
    #[allow(clippy::too_many_arguments)]
    fn store_received(
        &self,
        fed: &Federation,
        from: MemberCode,
        items: Vec<(RecordId, Projection)>,
        withheld: Vec<(StreamKey, u64, MemberCode)>,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        seqs: &mut GroupSeqs,
        now: i64,
    ) -> Result<Vec<Taken>, StoreError> {
        let mut touched: HashSet<StreamKey> = HashSet::new();
        let mut flags = Vec::with_capacity(items.len());
        // What each stream took in, audited in `received` entries per stream (see
        // `audit_taken`), written before any other entry of this op so that the log keeps
        // the order things happened.
        let mut taken: BTreeMap<StreamKey, Vec<TakenIn>> = BTreeMap::new();
        // Numbers a peer other than their origin said were withheld from us, which the
        // origin's signed projections now give us: audited against that peer, per stream.
        let mut contradicted: BTreeMap<(MemberCode, StreamKey), Vec<u64>> = BTreeMap::new();
        for (id, p) in items {
            let stream = StreamKey { origin: p.header.origin, agreement: p.envelope.agreement.clone() };
            let seq = p.envelope.seq;
            if seqs.known(&self.store, batch, &stream, seq)? {
                if let Some(known) = self.known_number(batch, &p)? {
                    if known == Taken::Conflict {
                        // Two records under one number, both signed by the origin: an
                        // origin restored from an old backup, or one that equivocates.
                        self.audit_taken(from, &mut taken, batch, head, now);
                        let ev = AuditEvent::new(Action::Rejected, Outcome::Refused)
                            .peer(from)
                            .record(id, p.header.category.clone())
                            .agreement(p.envelope.agreement.clone())
                            .reason(format!("{} #{seq} is held here with another record", stream.origin));
                        self.append(batch, head, ev, now);
                    }
                    flags.push(known);
                    continue;
                }
                // Withheld only on a peer's word, which no one signs; the origin signed
                // this projection with us in its audience, so it is ours after all. (Or
                // on our own: declined by an accept policy that takes it now.)
                let by = self.store.pending(batch).withheld_on_word_of(&stream, seq)?;
                if let Some(by) = by.filter(|by| *by != self.me) {
                    contradicted.entry((by, stream.clone())).or_default().push(seq);
                }
                batch.remove_withheld(&stream, seq);
            }
            if p.envelope.kind == EntryKind::Revoke {
                self.audit_taken(from, &mut taken, batch, head, now);
                self.apply_revocation(id, &p, from, batch, head, now)?;
                touched.insert(stream);
                flags.push(Taken::New);
                continue;
            }
            let Some(item) = self.keep_share(fed, from, id, &p, &stream, batch, now)? else {
                // Its record is revoked here: not taken in, and the number marked purged
                // (so audited once, not at each copy a relay offers).
                self.audit_taken(from, &mut taken, batch, head, now);
                let ev = AuditEvent::new(Action::Rejected, Outcome::Refused)
                    .peer(from)
                    .record(id, p.header.category.clone())
                    .agreement(p.envelope.agreement.clone())
                    .reason(format!(
                        "{} #{seq}: a share of a record revoked here; not taken in",
                        stream.origin
                    ));
                self.append(batch, head, ev, now);
                touched.insert(stream);
                flags.push(Taken::Purged);
                continue;
            };
            taken.entry(stream.clone()).or_default().push(item);
            touched.insert(stream);
            flags.push(Taken::New);
        }
        self.audit_taken(from, &mut taken, batch, head, now);
        for ((by, stream), seqs) in contradicted {
            let ev = AuditEvent::new(Action::Rejected, Outcome::Refused)
                .peer(by)
                .agreement(stream.agreement)
                .reason(format!(
                    "said to be withheld from this node, but signed by their origin for this node: {}",
                    crate::audit::projections_of(stream.origin, &seqs)
                ));
            self.append(batch, head, ev, now);
        }
        for (stream, seq, by) in withheld {
            let view = self.store.pending(batch);
            // Declined here: not asked for again until the policy changes (a mark asked
            // again, one from a build that asked at every exchange, or one on a relay's
            // word that its origin's signed projection has now answered, is declined anew).
            let declined = by == self.me;
            if !seqs.known(&self.store, batch, &stream, seq)? {
                if declined {
                    batch.put_declined(&stream, seq);
                } else {
                    batch.put_withheld(&stream, seq, by);
                }
            } else if declined && view.withheld_on_word_of(&stream, seq)?.is_some() {
                batch.put_declined(&stream, seq);
            } else if by == stream.origin
                && (view.withheld_on_word_of(&stream, seq)?.is_some() || view.is_declined(&stream, seq)?)
            {
                batch.confirm_withheld(&stream, seq);
            }
            touched.insert(stream);
        }
        for stream in touched {
            let mut h = seqs.head(&self.store, &stream)?;
            while seqs.known(&self.store, batch, &stream, h + 1)? {
                h += 1;
            }
            batch.set_stream_head(&stream, h);
        }
        Ok(flags)
    }

    /// Keep a verified share `p` of record `id`, delivered by `from`, at its place in
    /// `stream`, and list it in its record (made if not held); what was taken in, for its
    /// `received` entry. `None` if the record was revoked here: the tombstone stays, the
    /// body is never taken back in, and the number is marked purged.
    #[allow(clippy::too_many_arguments)]
    fn keep_share(
        &self,
        fed: &Federation,
        from: MemberCode,
        id: RecordId,
        p: &Projection,
        stream: &StreamKey,
        batch: &mut WriteBatch,
        now: i64,
    ) -> Result<Option<TakenIn>, StoreError> {
        // One read answers both: whether the record is held, and as a tombstone —
        // stored, or written by this group.
        let stored = self.store.pending(batch).record_as_stored(&id)?;
        let held = stored.as_ref().map(|r| r.state);
        if held == Some(RecordState::Revoked) {
            batch.purge_projection(stream, &p.envelope)?;
            return Ok(None);
        }
        // Held as expired, the record's shares all expired; this one has not (the gate
        // refuses expired projections), so it is taken in under its own retention.
        let share = (p.envelope.agreement.clone(), p.envelope.seq);
        match stored {
            // Held already under another share (another agreement, or another number
            // its origin projected it again under): this one is listed beside it.
            Some(mut r) if r.state == RecordState::Live => {
                if !r.shares.contains(&share) {
                    r.shares.push(share);
                    batch.update_record(&r)?;
                }
            }
            stored => {
                let new = stored.is_none();
                let r = StoredRecord {
                    id,
                    header: p.header.clone(),
                    // Its body is the projection's revealed fields: the store keeps
                    // them only in the projection, and reads them from there.
                    body: std::collections::BTreeMap::new(),
                    withheld: p.withheld.len() as u32,
                    source: Source::Received { from, agreement: p.envelope.agreement.clone() },
                    stored_ms: now,
                    salts: std::collections::BTreeMap::new(),
                    state: RecordState::Live,
                    // A record held as expired keeps the numbers of its expired shares.
                    shares: stored.map(|r| r.shares).unwrap_or_default().into_iter().chain([share]).collect(),
                };
                if new {
                    batch.put_new_record(&r)?;
                } else {
                    batch.put_record(&r)?;
                }
            }
        }
        batch.put_projection(p)?;
        // Purged by the retention in force when the agreement has shortened it since the
        // origin signed the envelope, as the origin and every other holder purge it.
        if let Some(a) = fed.agreement(&p.envelope.agreement) {
            let at = a.purge_at_ms(&p.header);
            if at < p.envelope.expires_ms {
                batch.index_expiry(stream, p.envelope.seq, at);
            }
        }
        let category = p.header.category.clone();
        Ok(Some(TakenIn { record: id, category, origin: stream.origin, seq: p.envelope.seq }))
    }
}

impl WriterTask {
    /// Take back what a peer holds of an own stream ([`HeldByPeer`]: its projections, each
    /// signed by this node), after a restore from a backup older than what the peer holds:
    /// - a number not held here is taken in as the peer holds it (the record comes back
    ///   as the peer saw it, its withheld fields lost), and the stream numbers on after
    ///   the highest taken;
    /// - a number held here with a share or revocation made since the restore is given to
    ///   the peer's record: the own record no longer lists it, and it is made again once
    ///   the peer's numbers are all taken (`last`), so that its new number is above them
    ///   ([`WriterTask::project_displaced`]);
    /// - a number held here with anything else (a record taken back from another peer)
    ///   is kept, and the conflict audited.
    ///
    /// The restore mark records how far the stream is now `reconciled` with `from`
    /// ([`crate::store::Restored`]). Returns what was done, the projections made and the
    /// numbers given up (a projection made earlier in the group under one of them is not
    /// to be pushed).
    fn take_back(
        &self,
        fed: &Federation,
        held: HeldByPeer,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<(TookBack, Vec<Projection>, Vec<u64>), StoreError> {
        let HeldByPeer { from, stream, items, mut used, reconciled, last } = held;
        let stream = &stream;
        let wall = now_ms();
        let mut took = TookBack::default();
        let start = self.store.pending(batch).stream_head(stream)?;
        let mut mark = self.store.pending(batch).restored()?;
        let mut top = start;
        let mut given_up = Vec::new();
        let mut taken: BTreeMap<StreamKey, Vec<TakenIn>> = BTreeMap::new();
        for (id, p) in items {
            if p.header.origin != stream.origin || p.envelope.agreement != stream.agreement {
                continue;
            }
            let seq = p.envelope.seq;
            let view = self.store.pending(batch);
            let ours = view.projection(stream, seq)?;
            if p.envelope.expires_ms <= wall {
                // Given, but past its retention: nothing to take back; the number is
                // marked purged here, so that members that lack it stop asking for it.
                if ours.is_none() && !view.is_gone(stream, seq)? {
                    top = top.max(seq);
                    batch.purge_projection(stream, &p.envelope)?;
                } else {
                    used.push(seq);
                }
                continue;
            }
            let given = mark.as_ref().is_some_and(|m| m.is_given(stream, seq));
            match ours {
                Some(ours) if ours.signature == p.signature => continue,
                // The same record under this number, for another audience: ours is kept
                // (the peer's copy lacks what was withheld from it); the walk adds whom
                // the peer's audience had, as for any member added.
                Some(ours) if ours.record_id().ok() == Some(id) => continue,
                // Taken back from another peer already: this copy is what this node gave
                // the number to since the restore, and gave up.
                Some(_) if given => continue,
                Some(ours) => {
                    if !self.give_up(from, stream, &ours, batch, mark.as_mut(), head, now)? {
                        self.audit_taken(from, &mut taken, batch, head, now);
                        let ev = AuditEvent::new(Action::Rejected, Outcome::Refused)
                            .peer(from)
                            .record(id, p.header.category.clone())
                            .agreement(stream.agreement.clone())
                            .reason(format!(
                                "{from} holds #{seq} of this node's stream with another record than the one held here, which was not made since a restore; kept"
                            ));
                        self.append(batch, head, ev, now);
                        continue;
                    }
                    given_up.push(seq);
                }
                // Purged here: a share or revocation made before the restore (gone for
                // good), or one made since (revoked, or expired), whose number the peer
                // holds with a record this node lost.
                None if view.is_gone(stream, seq)? => {
                    let since = mark.as_ref().is_some_and(|m| seq > m.backup_head(stream));
                    if !since || given {
                        continue;
                    }
                    batch.remove_gone(stream, seq);
                    given_up.push(seq);
                }
                None => {}
            }
            top = top.max(seq);
            if p.envelope.kind == EntryKind::Revoke {
                took.taken += 1;
                self.audit_taken(from, &mut taken, batch, head, now);
                self.apply_revocation(id, &p, from, batch, head, now)?;
                continue;
            }
            if let Some(item) = self.keep_share(fed, from, id, &p, stream, batch, now)? {
                took.taken += 1;
                taken.entry(stream.clone()).or_default().push(item);
            }
        }
        self.audit_taken(from, &mut taken, batch, head, now);
        // Numbers the peer knows were given, with no copy to take back (purged there, or
        // past their retention): what this node gave them since the restore reaches no
        // one there, and is made again.
        for seq in used {
            let given = mark.as_ref().is_some_and(|m| m.is_given(stream, seq));
            let Some(ours) = self.store.pending(batch).projection(stream, seq)? else { continue };
            if !given && self.give_up(from, stream, &ours, batch, mark.as_mut(), head, now)? {
                batch.purge_projection(stream, &ours.envelope)?;
                given_up.push(seq);
            }
        }
        if top > start {
            batch.set_stream_head(stream, top);
        }
        let mut made = Vec::new();
        if let Some(mut m) = mark {
            m.given.extend(given_up.iter().map(|seq| (stream.clone(), *seq)));
            if last {
                made = self.project_displaced(fed, from, stream, &mut m, batch, head, now)?;
            }
            if reconciled != Reconciled::No && m.floor(from, stream).is_some() {
                m.reconcile(from, stream, reconciled);
            }
            batch.set_restored(&m)?;
        }
        took.projected_again = made.len();
        Ok((took, made, given_up))
    }

    /// Give up number `ours.envelope.seq` of an own stream, which a peer holds with
    /// another record, if what holds it here was made since the restore (`mark`): a share
    /// of a live own record, which then no longer lists it, or a revocation of an own
    /// record; either is kept in the mark to be made again
    /// ([`WriterTask::project_displaced`]). `false` if anything else holds it.
    #[allow(clippy::too_many_arguments)]
    fn give_up(
        &self,
        from: MemberCode,
        stream: &StreamKey,
        ours: &Projection,
        batch: &mut WriteBatch,
        mark: Option<&mut Restored>,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<bool, StoreError> {
        let (Some(mark), Ok(id)) = (mark, ours.record_id()) else { return Ok(false) };
        let seq = ours.envelope.seq;
        let Some(mut record) = self.store.pending(batch).record_as_stored(&id)? else { return Ok(false) };
        if record.source != Source::Local || seq <= mark.backup_head(stream) {
            return Ok(false);
        }
        let share = (stream.agreement.clone(), seq);
        match (ours.envelope.kind, record.state) {
            (EntryKind::Share, RecordState::Live) if record.shares.contains(&share) => {
                record.shares.retain(|s| *s != share);
                batch.update_record(&record)?;
            }
            (EntryKind::Revoke, RecordState::Revoked) => {}
            _ => return Ok(false),
        }
        mark.displaced.push((from, stream.clone(), id, ours.envelope.clone()));
        let what = if ours.envelope.kind == EntryKind::Revoke { "revocation" } else { "share" };
        // The number it gave up, under which receipts for it stay listed (see
        // `audit_index`'s Indexes).
        let ev = AuditEvent::new(Action::Sent, Outcome::Ok)
            .peer(from)
            .record(id, record.header.category.clone())
            .agreement(stream.agreement.clone())
            .projection(stream.origin, seq)
            .reason(format!(
                "its {what} #{seq} made since the restore gives up its number, which {from} holds with another record; made again once all {from}'s numbers are taken back"
            ));
        self.append(batch, head, ev, now);
        Ok(true)
    }

    /// Make again, at the stream's next numbers, what gave up its number in `stream`
    /// ([`WriterTask::give_up`]) to `from`, or to a member no longer party to the
    /// agreement: a share, for the members of its old audience that the
    /// agreement and policy in force still share the record with and that do not hold it
    /// under another number of its own; a revocation, for its old audience. Each is
    /// audited `sent`, and leaves the mark.
    #[allow(clippy::too_many_arguments)]
    fn project_displaced(
        &self,
        fed: &Federation,
        from: MemberCode,
        stream: &StreamKey,
        mark: &mut Restored,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<Vec<Projection>, StoreError> {
        // Also what waits for a member no longer party to the agreement in force, which
        // will never be reconciled.
        let gone = |p: &MemberCode| !fed.agreement(&stream.agreement).is_some_and(|a| a.is_party(*p));
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut mark.displaced)
            .into_iter()
            .partition(|(p, s, _, _)| s == stream && (*p == from || gone(p)));
        mark.displaced = rest;
        let mut made = Vec::new();
        for (_, _, id, old) in mine {
            let Some(mut record) = self.store.pending(batch).record(&id)? else { continue };
            if record.source != Source::Local {
                continue;
            }
            let again = match (old.kind, record.state) {
                (EntryKind::Share, RecordState::Live) => {
                    // Members it is still shared with under another number of its own
                    // (ingested again since the restore, say) need no new one.
                    let covered = shared_with(&self.store.pending(batch), &record, stream)?;
                    let agreement = fed.agreement(&stream.agreement);
                    let audience: Vec<MemberCode> = agreement
                        .map(|a| tamga_config::audience(&record.header, a, fed, now))
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| old.audience.contains(m) && !covered.contains(m))
                        .collect();
                    match agreement {
                        Some(a) if !audience.is_empty() => {
                            let again = self.put_share(&fed.catalog, a, &record.salted(), audience, batch)?;
                            if let Some(p) = &again {
                                record.shares.push((stream.agreement.clone(), p.envelope.seq));
                                batch.update_record(&record)?;
                            }
                            again
                        }
                        _ => None,
                    }
                }
                // A revocation; or a share of a record revoked since it gave up its
                // number, which the members holding a copy of it still need revoked.
                (_, RecordState::Revoked) => self.put_revocation(&record.salted(), &old, stream, batch)?,
                _ => continue,
            };
            let what = match (old.kind, record.state) {
                (EntryKind::Share, RecordState::Revoked) => "share, revoked since,",
                (EntryKind::Share, _) => "share",
                _ => "revocation",
            };
            let reason = match &again {
                Some(p) => format!(
                    "its {what} #{} made since the restore gave up its number, which {from} holds with another record; made again as #{} ({})",
                    old.seq,
                    p.envelope.seq,
                    if p.envelope.kind == EntryKind::Revoke { "a revocation" } else { "a share" }
                ),
                None => format!(
                    "its {what} #{} made since the restore gave up its number, which {from} holds with another record; not made again: each member it was for holds it under another number, or is no longer shared with",
                    old.seq
                ),
            };
            let ev = AuditEvent::new(Action::Sent, Outcome::Ok)
                .record(id, record.header.category.clone())
                .agreement(stream.agreement.clone())
                .policy(fed.policy_digest)
                .reason(reason);
            self.append(batch, head, ev, now);
            made.extend(again);
        }
        Ok(made)
    }

    /// Audit what `taken` holds, one `received` entry per stream (or per run of
    /// [`crate::audit::MAX_LISTED`]), and empty it.
    fn audit_taken(
        &self,
        from: MemberCode,
        taken: &mut BTreeMap<StreamKey, Vec<TakenIn>>,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) {
        for (stream, ps) in std::mem::take(taken) {
            for ps in listed_runs(ps) {
                let seqs: Vec<u64> = ps.iter().map(|p| p.seq).collect();
                let ev = AuditEvent::new(Action::Received, Outcome::Ok)
                    .peer(from)
                    .agreement(stream.agreement.clone())
                    .reason(format!("{}, from {from}", projections_of(stream.origin, &seqs)))
                    .projections(ps);
                self.append(batch, head, ev, now);
            }
        }
    }

    /// Keep the receipts one peer signed for one push in audit entries, which are where
    /// receipts are kept: one `delivered` entry per receiver and agreement (an entry per
    /// receipt wrote five entries per record on the origin of a six-member federation),
    /// then one `purged` entry per purge receipt (revocations are rare).
    fn keep_receipts(
        &self,
        receipts: &[(Receipt, EntryKind)],
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) {
        let (purges, shares): (Vec<_>, Vec<_>) = receipts.iter().partition(|(_, k)| *k == EntryKind::Revoke);
        let mut by_agreement: BTreeMap<(MemberCode, AgreementId), Vec<Receipt>> = BTreeMap::new();
        for (r, _) in shares {
            by_agreement.entry((r.receiver, r.agreement.clone())).or_default().push(r.clone());
        }
        for rs in by_agreement.into_values().flat_map(listed_runs) {
            let seqs: Vec<u64> = rs.iter().map(|r| r.seq).collect();
            let of = projections_of(rs[0].origin, &seqs);
            let ev = AuditEvent::new(Action::Delivered, Outcome::Ok)
                .reason(format!("receipts for {of}, signed by {}", rs[0].receiver))
                .receipts(rs);
            self.append(batch, head, ev, now);
        }
        for (r, _) in purges {
            // `receipt` sets the record, agreement, stream position and peer.
            let ev = AuditEvent::new(Action::Purged, Outcome::Ok)
                .reason(format!("purge receipt for seq {} signed by {}", r.seq, r.receiver))
                .receipt(r);
            self.append(batch, head, ev, now);
        }
    }

    /// Keep the ops of a failed group that ask for no answer, for the next group; past
    /// [`MAX_CARRIED`], drop the oldest and count them.
    fn carry(&mut self, kept: Vec<Op>) {
        self.carried.extend(kept);
        let over = self.carried.len().saturating_sub(MAX_CARRIED);
        if over > 0 {
            self.carried.drain(..over);
            self.lost += over as u64;
            self.metrics.audit_lost.add(over as u64);
            tracing::error!(dropped = over, "write groups keep failing: audit entries dropped");
        }
    }
}

impl WriterTask {
    /// A verified projection whose number is known here: held (the same projection, or a
    /// copy withholding more — the origin signed the record id and the envelope, so the
    /// signature is the same), held with another record (the caller audits it), or
    /// purged. `None` when the number is known only from a peer's claim that it is
    /// withheld from us. The common case, a projection held already, costs one read.
    fn known_number(&self, batch: &WriteBatch, p: &Projection) -> Result<Option<Taken>, StoreError> {
        let stream = StreamKey { origin: p.header.origin, agreement: p.envelope.agreement.clone() };
        let seq = p.envelope.seq;
        let view = self.store.pending(batch);
        if let Some(held) = view.projection(&stream, seq)? {
            // Another signature: another record under this number (the caller audits it).
            return Ok(Some(if held.signature == p.signature { Taken::Held } else { Taken::Conflict }));
        }
        if view.is_gone(&stream, seq)? {
            return Ok(Some(Taken::Purged));
        }
        if view.is_withheld(&stream, seq)? {
            return Ok(None);
        }
        Ok(Some(Taken::Held))
    }
}

/// Part of an own stream that a peer holds, pulled back from it (after a restore, see
/// [`WriterTask::take_back`]).
#[derive(Debug)]
pub struct HeldByPeer {
    /// The peer.
    pub from: MemberCode,
    /// The own stream.
    pub stream: StreamKey,
    /// Projections of the stream the peer holds, each verified as signed by this node,
    /// with its record id.
    pub items: Vec<(RecordId, Projection)>,
    /// Numbers the peer says were given but holds no copy of (purged there).
    pub used: Vec<u64>,
    /// How far the stream is reconciled with the peer once these are taken, after a
    /// restore ([`crate::store::Restored`]).
    pub reconciled: Reconciled,
    /// Whether these are the last the peer holds above what was taken before.
    pub last: bool,
}

/// What taking back part of an own stream from a peer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TookBack {
    /// Projections taken in: numbers this node had lost, or held with another record.
    pub taken: usize,
    /// Own records projected again at new numbers, their numbers being held by the peer
    /// with another record.
    pub projected_again: usize,
}

/// What became of one received projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Stored now.
    New,
    /// Held already: its number of its stream is here.
    Held,
    /// Not stored, and not held: its number was purged here (expired or revoked), or its
    /// record was revoked.
    Purged,
    /// Not stored: its number is held here with another record (audited).
    Conflict,
}

/// What the store knew of each stream when a write group began: its contiguous head and
/// the first number known above it. With the group's own writes, that answers whether a
/// number is known: at or below the head it is; between the head and the first known
/// above it only the group's writes are looked at; the rest are looked up in both. Kept
/// per group, so that two ops of one group on the same stream see each other's numbers
/// and the later one never writes a lower head.
#[derive(Default)]
struct GroupSeqs {
    at_start: HashMap<StreamKey, (u64, Option<u64>)>,
}

impl GroupSeqs {
    fn at_start(&mut self, store: &Store, stream: &StreamKey) -> Result<(u64, Option<u64>), StoreError> {
        if let Some(v) = self.at_start.get(stream) {
            return Ok(*v);
        }
        let head = store.stream_head(stream)?;
        let v = (head, store.next_known(stream, head)?);
        self.at_start.insert(stream.clone(), v);
        Ok(v)
    }

    /// The stream's contiguous head as stored when the group began.
    fn head(&mut self, store: &Store, stream: &StreamKey) -> Result<u64, StoreError> {
        Ok(self.at_start(store, stream)?.0)
    }

    /// Whether `seq` is held, known withheld or purged: in the store, or by the group's
    /// writes in `batch`.
    fn known(
        &mut self,
        store: &Store,
        batch: &WriteBatch,
        stream: &StreamKey,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let (head, next) = self.at_start(store, stream)?;
        match next {
            _ if seq <= head => Ok(true),
            Some(first) if seq >= first => store.pending(batch).seq_known(stream, seq),
            _ => Ok(batch.knows_seq(stream, seq)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Audit checkpoints (see `audit_index`): signed here, where the head is held.
// ---------------------------------------------------------------------------------------

impl WriterTask {
    /// Sign a checkpoint of `head` and append its entry if one is due; the sequence
    /// number of the checkpoint entry, to record once the batch is committed, and the
    /// checkpoint.
    fn checkpoint_if_due(
        &self,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Option<(u64, Checkpoint)> {
        let policy = self.policy.get().policy_digest;
        self.audit.checkpoint_if_due(batch, head, now, self.me, &self.signing, policy)
    }
}

impl WriterTask {
    /// The tombstone of a record held (or, if none is, of the one `p` projects).
    fn tombstone(
        &self,
        batch: &WriteBatch,
        id: RecordId,
        p: &Projection,
        from: MemberCode,
        state: RecordState,
        now: i64,
    ) -> Result<StoredRecord, StoreError> {
        let r = self.store.pending(batch).record_as_stored(&id)?.unwrap_or(StoredRecord {
            id,
            header: p.header.clone(),
            body: std::collections::BTreeMap::new(),
            withheld: 0,
            source: Source::Received { from, agreement: p.envelope.agreement.clone() },
            stored_ms: now,
            salts: std::collections::BTreeMap::new(),
            state,
            shares: Vec::new(),
        });
        Ok(tombstone_of(r, state))
    }

    /// A verified revocation from the origin: keep the entry (so it travels on), purge the
    /// record's body and keep a tombstone. The origin revokes the record, not one share of
    /// it, so its share is purged in every stream that holds one — not only in the stream
    /// the revocation came in, whose siblings may arrive much later or not at all.
    fn apply_revocation(
        &self,
        id: RecordId,
        p: &Projection,
        from: MemberCode,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<(), StoreError> {
        batch.put_projection(p)?;
        let mut purged = Vec::new();
        for share in self.shares_held(batch, &id, p.header.origin)? {
            let stream = StreamKey { origin: p.header.origin, agreement: share.envelope.agreement.clone() };
            batch.purge_projection(&stream, &share.envelope)?;
            purged.push(format!("{} #{}", stream.agreement, share.envelope.seq));
        }
        let r = self.tombstone(batch, id, p, from, RecordState::Revoked, now)?;
        batch.put_record(&r)?;
        let shares = if purged.is_empty() { "no share held".to_owned() } else { purged.join(", ") };
        let ev = AuditEvent::new(Action::Purged, Outcome::Ok)
            .peer(from)
            .record(id, p.header.category.clone())
            .agreement(p.envelope.agreement.clone())
            .reason(format!("revoked by its origin {}; shares purged: {shares}", p.header.origin));
        self.append(batch, head, ev, now);
        Ok(())
    }

    /// The shares of a record of `origin`'s still held, as this group's batch leaves them.
    fn shares_held(
        &self,
        batch: &WriteBatch,
        id: &RecordId,
        origin: MemberCode,
    ) -> Result<Vec<Projection>, StoreError> {
        let view = self.store.pending(batch);
        let mut out = Vec::new();
        for (agreement, seq) in view.record_as_stored(id)?.map(|r| r.shares).unwrap_or_default() {
            // A number taken back after a restore holds another record (see `take_back`).
            let p = view.projection(&StreamKey { origin, agreement }, seq)?;
            out.extend(p.filter(|p| p.record_id().ok() == Some(*id)));
        }
        Ok(out)
    }

    /// Revoke an own record in every stream it was projected in.
    fn revoke(
        &self,
        id: RecordId,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<Vec<Projection>, WriteError> {
        // Read once: what revokes it (its salts) and what is stored back, revoked.
        let own = self.store.pending(batch).record(&id)?.filter(|r| r.source == Source::Local);
        let Some(record) = own else {
            return Err(WriteError::Refused(format!("no own record {id} to revoke")));
        };
        // Checked here, in the one writer, so that two revocations racing past the API's
        // check make one set of revocation entries, not two.
        if record.state == RecordState::Revoked {
            return Err(WriteError::Refused(format!("record {id} is already revoked")));
        }
        let salted = record.salted();
        let mut out = Vec::new();
        for original in self.shares_held(batch, &id, self.me)? {
            let stream = StreamKey { origin: self.me, agreement: original.envelope.agreement.clone() };
            let Some(rev) = self.put_revocation(&salted, &original.envelope, &stream, batch)? else {
                continue;
            };
            batch.purge_projection(&stream, &original.envelope)?;
            out.push(rev);
        }
        batch.put_record(&StoredRecord { state: RecordState::Revoked, ..record })?;
        let ev = AuditEvent::new(Action::Revoked, Outcome::Ok)
            .record(id, salted.record.header.category.clone())
            .reason(format!("{} revocation entries", out.len()));
        self.append(batch, head, ev, now);
        Ok(out)
    }

    /// If the policy in force is not the one the numbers declined here were declined
    /// under, make each of them a number to ask its origin for again (on this node's word,
    /// as one another peer said withheld): the new policy may take it. Declined anew, it
    /// is not asked for again until the next change.
    fn ask_again_if_policy_changed(
        &self,
        fed: &Federation,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let view = self.store.pending(batch);
        if view.declined_under()? == Some(fed.policy_digest) {
            return Ok(());
        }
        let mut again = 0;
        for (stream, _) in self.store.streams()? {
            for seq in self.store.declined(&stream, usize::MAX)? {
                batch.ask_again(&stream, seq, self.me);
                again += 1;
            }
        }
        batch.set_declined_under(&fed.policy_digest);
        if again > 0 {
            tracing::info!(
                numbers = again,
                "the policy changed: numbers declined under the one before are asked for again"
            );
        }
        Ok(())
    }

    /// Purge every projection expired at `wall` (the wall clock): its entry, and the body
    /// of a received record; `now` is the audit clock, for the entries and tombstones.
    fn purge_expired(
        &self,
        fed: &Federation,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        wall: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let due = self.store.expired(wall, MAX_GROUP)?;
        for (stream, seq) in due.iter().flat_map(|d| d.due.iter().map(|&seq| (d.stream.clone(), seq))) {
            // Not there if an earlier op of this group purged it.
            let Some(p) = self.store.pending(batch).projection(&stream, seq)? else { continue };
            // An entry the walk indexed for a retention since lengthened again is not due:
            // due is the earlier of the expiry the projection carries and the retention
            // in force.
            let agreement = fed.agreement(&stream.agreement);
            let in_force = agreement.map(|a| a.purge_at_ms(&p.header));
            if in_force.map_or(p.envelope.expires_ms, |at| at.min(p.envelope.expires_ms)) > wall {
                continue;
            }
            let why = match agreement {
                // Shortened since the origin signed the envelope: said as the walk says it.
                Some(a) if in_force.is_some_and(|at| at < p.envelope.expires_ms) => format!(
                    "{} #{seq}: the retention of {} in force, {} days, has ended",
                    stream.origin, a.id, a.retention_days
                ),
                _ => format!("{} #{seq} expired", stream.origin),
            };
            self.purge_share(batch, head, &stream, &p, why, now)?;
        }
        for d in &due {
            batch.take_due(d);
        }
        Ok(())
    }

    /// Walk one round of the projections held, from `from`, and apply the agreements in
    /// force to what was made under earlier ones. A share whose agreement's retention in
    /// force ends before the expiry it carries (the retention was shortened since) is
    /// purged if that end has passed, and else indexed to expire then. An own record is
    /// projected again for members it is now shared with but was not then (see
    /// [`WriterTask::project_again`]). Returns where the next round starts (`None`: the
    /// walk is done) and the projections made.
    fn walk_held(
        &self,
        fed: &Federation,
        from: Option<&WalkCursor>,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        wall: i64,
        now: i64,
    ) -> Result<(Option<WalkCursor>, Vec<Projection>), StoreError> {
        let (held, next) = self.store.walk_projections(from, WALK_ROUND)?;
        let mut made = Vec::new();
        for p in held {
            let Some(agreement) = fed.agreement(&p.envelope.agreement) else { continue };
            if p.envelope.kind == EntryKind::Revoke {
                continue;
            }
            let stream = StreamKey { origin: p.header.origin, agreement: agreement.id.clone() };
            let (seq, ends) = (p.envelope.seq, agreement.purge_at_ms(&p.header));
            let shortened = ends < p.envelope.expires_ms;
            if shortened && ends <= wall {
                if self.store.pending(batch).projection(&stream, seq)?.is_some() {
                    let why = format!(
                        "{} #{seq}: the retention of {} in force, {} days, has ended",
                        stream.origin, agreement.id, agreement.retention_days
                    );
                    self.purge_share(batch, head, &stream, &p, why, now)?;
                }
                continue;
            }
            if shortened {
                batch.index_expiry(&stream, seq, ends);
            }
            if p.header.origin == self.me {
                made.extend(self.project_again(fed, &p, batch, head, now)?);
            }
        }
        Ok((next, made))
    }

    /// Project own record `p` is a projection of again, at the next number of its stream,
    /// for the members the agreement and policy in force share it with and none of its
    /// projections under that agreement was made for: members added to the agreement's
    /// parties, or to the policy's sharing, since. The agreement decides for them as for a
    /// new record (its dates, `backfill`), and its redactions hold.
    fn project_again(
        &self,
        fed: &Federation,
        p: &Projection,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        now: i64,
    ) -> Result<Option<Projection>, StoreError> {
        let Some(agreement) = fed.agreement(&p.envelope.agreement) else { return Ok(None) };
        let audience = tamga_config::audience(&p.header, agreement, fed, now);
        // The common case, read from the projection alone: no one new.
        if audience.iter().all(|m| p.envelope.audience.contains(m)) {
            return Ok(None);
        }
        let Ok(id) = p.record_id() else { return Ok(None) };
        let view = self.store.pending(batch);
        let own = view.record(&id)?.filter(|r| r.source == Source::Local && r.state == RecordState::Live);
        let Some(mut record) = own else { return Ok(None) };
        let stream = StreamKey { origin: self.me, agreement: agreement.id.clone() };
        let shared = shared_with(&view, &record, &stream)?;
        let added: Vec<MemberCode> = audience.into_iter().filter(|m| !shared.contains(m)).collect();
        if added.is_empty() {
            return Ok(None);
        }
        let Some(again) = self.put_share(&fed.catalog, agreement, &record.salted(), added.clone(), batch)?
        else {
            return Ok(None);
        };
        let seq = again.envelope.seq;
        record.shares.push((agreement.id.clone(), seq));
        batch.update_record(&record)?;
        let to: Vec<&str> = added.iter().map(|m| m.as_str()).collect();
        let ev = AuditEvent::new(Action::Sent, Outcome::Ok)
            .record(id, record.header.category.clone())
            .agreement(agreement.id.clone())
            .policy(fed.policy_digest)
            .reason(format!(
                "projected again as #{seq} for {}, shared with since #{} was made",
                to.join(", "),
                p.envelope.seq
            ));
        self.append(batch, head, ev, now);
        Ok(Some(again))
    }

    /// Purge one share held, `p` at its place in `stream`: its entry, and the body of a
    /// received record whose last share it was; audited with `why`.
    fn purge_share(
        &self,
        batch: &mut WriteBatch,
        head: &mut (u64, Digest),
        stream: &StreamKey,
        p: &Projection,
        why: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = p.record_id().ok();
        let live_received = match id {
            Some(id) => self.store.pending(batch).record_as_stored(&id)?,
            None => None,
        }
        .filter(|r| r.source != Source::Local && r.state == RecordState::Live);
        batch.purge_projection(stream, &p.envelope)?;
        // A received record held live loses its body with its last share. A share under
        // another agreement (with its own retention) may outlive this one: the record
        // stays live and is read from that share.
        if let Some(r) = live_received {
            let next = self.shares_held(batch, &r.id, stream.origin)?.into_iter().next();
            let kept = match (next, r.source.clone()) {
                (Some(share), Source::Received { from, .. }) => StoredRecord {
                    source: Source::Received { from, agreement: share.envelope.agreement },
                    ..r
                },
                _ => tombstone_of(r, RecordState::Expired),
            };
            batch.update_record(&kept)?;
        }
        let Some(id) = id else { return Ok(()) };
        let ev = AuditEvent::new(Action::Purged, Outcome::Ok)
            .record(id, p.header.category.clone())
            .agreement(stream.agreement.clone())
            .reason(why);
        self.append(batch, head, ev, now);
        Ok(())
    }
}

/// Whom own record `r`'s shares in `stream` went to: each share's audience, read from its
/// projection while held (if the number is still the record's: after a restore a number
/// can be given to another record, see `WriterTask::take_back`), else from its purge mark.
fn shared_with(
    view: &crate::store::View<'_>,
    r: &StoredRecord,
    stream: &StreamKey,
) -> Result<HashSet<MemberCode>, StoreError> {
    let mut out = HashSet::new();
    for &(_, seq) in r.shares.iter().filter(|(a, _)| *a == stream.agreement) {
        match view.projection(stream, seq)? {
            Some(p) if p.record_id().ok() == Some(r.id) => out.extend(p.envelope.audience),
            Some(_) => {}
            None => out.extend(view.audience(stream, seq)?.unwrap_or_default()),
        }
    }
    Ok(out)
}

/// A record's tombstone: a received copy's body dropped, its state set.
fn tombstone_of(mut r: StoredRecord, state: RecordState) -> StoredRecord {
    if r.source != Source::Local {
        r.body.clear();
    }
    r.state = state;
    r
}

/// Undo what a failed op added to its group: its writes and its audit entries.
fn undo(batch: &mut WriteBatch, head: &mut (u64, Digest), (sp, was): (Savepoint, (u64, Digest))) {
    batch.rollback(sp);
    *head = was;
}

/// Groups whose written records the writer task remembers ([`Checked`]).
const RECENT_GROUPS: usize = 64;

/// Ingest ops with at least this many projections sign them on several threads.
const PARALLEL_SIGNING_FROM: usize = 16;
/// Most threads an ingest op's projections are signed on.
const MAX_SIGNING_THREADS: usize = 4;

/// A share of an own record under one agreement, numbered, not yet signed.
struct Share {
    /// The fields the agreement redacts from the record's category, and those the catalog
    /// no longer lists; `None` (no category of the agreement) withholds every field.
    withheld: Option<tamga_config::Withheld>,
    envelope: Envelope,
}

impl Share {
    fn stream(&self, me: MemberCode) -> StreamKey {
        StreamKey { origin: me, agreement: self.envelope.agreement.clone() }
    }

    /// The projection: the record redacted as the agreement says, under this envelope,
    /// signed.
    fn sign(&self, salted: &SaltedRecord, key: &SigningKey) -> Result<Projection, ProjectError> {
        let withheld = &self.withheld;
        salted.project(|f| withheld.as_ref().is_none_or(|w| w.contains(f)), self.envelope.clone(), key)
    }
}

/// Sign every share of an ingest op, in order: signing is the largest part of what a new
/// record costs the writer task, and the shares are independent, so an op with many of
/// them is split across the machine's cores.
fn sign_shares(
    fresh: &[(SaltedRecord, Vec<Share>)],
    key: &SigningKey,
) -> Result<Vec<Projection>, ProjectError> {
    let jobs: Vec<(&SaltedRecord, &Share)> =
        fresh.iter().flat_map(|(salted, shares)| shares.iter().map(move |s| (salted, s))).collect();
    let sign = |chunk: &[(&SaltedRecord, &Share)]| -> Result<Vec<Projection>, ProjectError> {
        chunk.iter().map(|(salted, share)| share.sign(salted, key)).collect()
    };
    let threads = crate::par::cores().min(MAX_SIGNING_THREADS);
    if threads < 2 || jobs.len() < PARALLEL_SIGNING_FROM {
        return sign(&jobs);
    }
    let chunks: Vec<&[(&SaltedRecord, &Share)]> = jobs.chunks(jobs.len().div_ceil(threads)).collect();
    let mut out = Vec::with_capacity(jobs.len());
    for part in crate::par::each_on_a_thread(&chunks, |chunk| sign(chunk)) {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tamga_protocol::{Classification, ReceiptItem, Record, RecordHeader, SaltKey, Value};

    use super::*;

    /// Projections `seqs` of one stream of RU's, as a pull or a push would bring them.
    fn projections(seqs: std::ops::RangeInclusive<u64>) -> Vec<(RecordId, Projection)> {
        shares(RMS, i64::MAX, seqs)
    }

    const RMS: &str = "sco-rms-2013";
    const IPR: &str = "sco-ipr-2012";

    /// Shares `seqs` of RU's records 1, 2, … under `agreement`, expiring at `expires_ms`
    /// (the writer takes what the gate passed; the tests give any agreement and expiry).
    fn shares(
        agreement: &str,
        expires_ms: i64,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Vec<(RecordId, Projection)> {
        shares_created(agreement, expires_ms, seqs, LATER)
    }

    /// Far enough ahead that no agreement's retention has ended.
    const LATER: i64 = 4_000_000_000_000;

    /// [`shares`] of records created at `created + seq` (ms).
    fn shares_created(
        agreement: &str,
        expires_ms: i64,
        seqs: std::ops::RangeInclusive<u64>,
        created: i64,
    ) -> Vec<(RecordId, Projection)> {
        let ru: MemberCode = "RU".parse().expect("valid");
        let key = tamga_config::demo::demo_signing_key(ru);
        seqs.map(|seq| {
            let record = Record {
                header: RecordHeader {
                    category: "rms.method".parse().expect("valid"),
                    classification: Classification::Public,
                    origin: ru,
                    created_ms: created + seq as i64,
                    supersedes: None,
                    expires_ms: None,
                },
                body: BTreeMap::from([("title".to_owned(), Value::Text(format!("method {seq}")))]),
            };
            let salted = SaltedRecord::new(record, &SaltKey::from_bytes([7; 32]));
            let envelope = Envelope {
                kind: EntryKind::Share,
                agreement: agreement.parse().expect("valid"),
                audience: vec!["KZ".parse().expect("valid")],
                seq,
                expires_ms,
            };
            (salted.id, salted.project(|_| false, envelope, &key).expect("projects"))
        })
        .collect()
    }

    /// A writer for KZ over a fresh store in `dir`, with the example federation's files.
    fn kz_writer(dir: &std::path::Path) -> (Store, WriterTask) {
        let files = dir.join("federation");
        std::fs::create_dir_all(&files).expect("mkdir");
        crate::example::write_to(&files).expect("writes");
        let kz: MemberCode = "KZ".parse().expect("valid");
        let fed = Federation::load_files(
            &files.join("roster.toml"),
            &files.join("catalog.toml"),
            &files.join("agreements"),
            &files.join("policies/KZ.toml"),
            kz,
        )
        .expect("loads");
        let store = Store::open(&dir.join("store")).expect("opens");
        let task = WriterTask::new(
            store.clone(),
            kz,
            Arc::new(PolicyCell::new(fed)),
            Arc::new(Metrics::default()),
            tamga_config::demo::demo_signing_key(kz),
            None,
        )
        .expect("writer");
        (store, task)
    }

    /// Every audit entry matching `f` (its limit ignored), in log order.
    fn audited(store: &Store, f: crate::audit::Filter) -> Vec<crate::audit::ExportedEntry> {
        crate::audit_index::query(store, &crate::audit::Filter { limit: usize::MAX, ..f }).expect("queries")
    }

    /// The entries of one action.
    fn audited_as(store: &Store, action: Action) -> Vec<crate::audit::ExportedEntry> {
        audited(store, crate::audit::Filter { action: Some(action), ..Default::default() })
    }

    /// RU's revocation, at `seq`, of the record shared as `share`.
    fn revocation_of(seq: u64) -> (RecordId, Projection) {
        let ru: MemberCode = "RU".parse().expect("valid");
        let (id, share) = projections(1..=1).remove(0);
        let record = Record {
            header: share.header.clone(),
            body: BTreeMap::from([("title".to_owned(), Value::Text("method 1".to_owned()))]),
        };
        let salted = SaltedRecord::new(record, &SaltKey::from_bytes([7; 32]));
        assert_eq!(salted.id, id);
        let key = tamga_config::demo::demo_signing_key(ru);
        (id, salted.revocation(&share.envelope, seq, &key).expect("revokes"))
    }

    /// Two Received ops from RU, drained into one write group on a fresh KZ writer: each
    /// op's flags, then what KZ holds of RU's record 1 — its state, and whether the share
    /// projection (seq 1), which carries the revealed body, is still held.
    async fn one_group(
        first: Vec<(RecordId, Projection)>,
        second: Vec<(RecordId, Projection)>,
    ) -> ((Vec<Taken>, Vec<Taken>), (RecordState, bool)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        // On one thread both ops are queued before the writer runs, so one group takes both.
        let (a, b) =
            tokio::join!(writer.received(ru, first, Vec::new()), writer.received(ru, second, Vec::new()));
        drop(writer);
        handle.await.expect("the writer ends");
        let stream = StreamKey { origin: ru, agreement: "sco-rms-2013".parse().expect("valid") };
        let (id, _) = revocation_of(2);
        let r = store.record(&id).expect("reads").expect("held");
        assert!(r.body.is_empty(), "a revoked record keeps no body: {:?}", r.body);
        let held = store.projection(&stream, 1).expect("reads").is_some();
        ((a.expect("stored"), b.expect("stored")), (r.state, held))
    }

    // A catch-up pull can bring a share and its revocation in one answer: the revocation
    // must purge the share stored a moment before in the same batch.
    #[tokio::test(flavor = "current_thread")]
    async fn a_revocation_purges_a_share_stored_in_the_same_op() {
        let mut items = projections(1..=1);
        items.push(revocation_of(2));
        let (flags, held) = one_group(items, Vec::new()).await;
        assert_eq!(flags, (vec![Taken::New; 2], vec![]));
        assert_eq!(held, (RecordState::Revoked, false));
    }

    // The log keeps the order things happened: the share taken in, then its revocation.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_and_its_revocation_in_one_op_are_audited_in_that_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let mut items = projections(1..=1);
        items.push(revocation_of(2));
        writer.received(ru, items, Vec::new()).await.expect("stored");
        drop(writer);
        handle.await.expect("the writer ends");
        let actions: Vec<Action> = audited(&store, Default::default())
            .into_iter()
            .map(|e| e.entry.action)
            .filter(|a| matches!(a, Action::Received | Action::Purged))
            .collect();
        assert_eq!(actions, vec![Action::Received, Action::Purged]);
    }

    // Two pushes, the share and then its revocation, drained into one write group.
    #[tokio::test(flavor = "current_thread")]
    async fn a_revocation_purges_a_share_stored_earlier_in_the_same_group() {
        let (flags, held) = one_group(projections(1..=1), vec![revocation_of(2)]).await;
        assert_eq!(flags, (vec![Taken::New], vec![Taken::New]));
        assert_eq!(held, (RecordState::Revoked, false));
    }

    // The other order: a revocation, then the share it revoked arriving late (a relay's
    // push), in one group. The tombstone stands and the body is not taken back in.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_after_its_revocation_in_the_same_group_is_not_taken_in() {
        let (flags, held) = one_group(vec![revocation_of(2)], projections(1..=1)).await;
        assert_eq!(flags, (vec![Taken::New], vec![Taken::Purged]));
        assert_eq!(held, (RecordState::Revoked, false));
    }

    // A share of a record revoked here is not taken in, and the log says so, once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_of_a_record_revoked_here_is_refused_and_audited_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        assert_eq!(
            writer.received(ru, vec![revocation_of(2)], Vec::new()).await.expect("stored"),
            [Taken::New]
        );
        for _ in 0..2 {
            let flags = writer.received(ru, projections(1..=1), Vec::new()).await.expect("stored");
            assert_eq!(flags, [Taken::Purged]);
        }
        drop(writer);
        handle.await.expect("the writer ends");
        let refused: Vec<String> = entries(&store)
            .iter()
            .filter(|e| e["action"] == "rejected")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("RU #1: a share of a record revoked here"), "{refused:?}");
    }

    // A record shared under two agreements, revoked: the revocation comes in one stream,
    // and the share in the other is purged with it, not held until (or unless) that
    // stream's revocation arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn a_revocation_purges_the_records_share_under_every_agreement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let mut both = shares(RMS, i64::MAX, 1..=1);
        both.extend(shares(IPR, i64::MAX, 1..=1));
        assert_eq!(writer.received(ru, both, Vec::new()).await.expect("stored"), vec![Taken::New; 2]);
        let flags = writer.received(ru, vec![revocation_of(2)], Vec::new()).await.expect("stored");
        assert_eq!(flags, vec![Taken::New]);
        drop(writer);
        handle.await.expect("the writer ends");
        let (id, _) = revocation_of(2);
        for agreement in [RMS, IPR] {
            let stream = StreamKey { origin: ru, agreement: agreement.parse().expect("valid") };
            assert_eq!(store.projection(&stream, 1).expect("reads"), None, "{agreement} share still held");
            assert!(store.is_gone(&stream, 1).expect("reads"), "{agreement} #1 not known purged");
        }
        let r = store.record(&id).expect("reads").expect("held");
        assert_eq!((r.state, r.body.is_empty()), (RecordState::Revoked, true));
    }

    // The share under another agreement arriving after the revocation is not taken in.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_under_another_agreement_after_the_revocation_is_not_taken_in() {
        let (flags, held) = one_group(vec![revocation_of(2)], shares(IPR, i64::MAX, 1..=1)).await;
        assert_eq!(flags, (vec![Taken::New], vec![Taken::Purged]));
        assert_eq!(held, (RecordState::Revoked, false));
    }

    /// KZ's writer after `ops` Received ops from RU, each awaited, then an expiry purge:
    /// the store, and what it holds of RU's record 1.
    async fn received_then_expired(
        ops: Vec<Vec<(RecordId, Projection)>>,
        after: Vec<(RecordId, Projection)>,
    ) -> (tempfile::TempDir, Store, StoredRecord, Vec<Taken>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        for items in ops {
            writer.received(ru, items, Vec::new()).await.expect("stored");
        }
        writer.purge_expired().await;
        let flags = writer.received(ru, after, Vec::new()).await.expect("stored");
        drop(writer);
        handle.await.expect("the writer ends");
        let id = projections(1..=1)[0].0;
        let r = store.record(&id).expect("reads").expect("held");
        (dir, store, r, flags)
    }

    // A member added to an agreement's parties after an own record was projected under it:
    // the next walk of what is held projects the record again, once, for that member only.
    #[tokio::test(flavor = "current_thread")]
    async fn an_own_record_is_projected_again_for_a_member_added_to_its_agreement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let files = dir.path().join("federation");
        let (kz, uz): (MemberCode, MemberCode) = ("KZ".parse().expect("valid"), "UZ".parse().expect("valid"));
        let load = || load_kz(&files);
        let rms_file = files.join("agreements/sco-rms-2013.toml");
        let text = std::fs::read_to_string(&rms_file).expect("reads");
        let (with, without) = (r#""TJ", "UZ", "XS""#, r#""TJ", "XS""#);
        assert!(text.contains(with));
        std::fs::write(&rms_file, text.replace(with, without)).expect("writes");
        let policy = task.policy.clone();
        policy.set(load());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let record = Record {
            header: RecordHeader {
                category: "rms.method".parse().expect("valid"),
                classification: Classification::Public,
                origin: kz,
                created_ms: now_ms(),
                supersedes: None,
                expires_ms: None,
            },
            body: BTreeMap::from([
                ("title".to_owned(), Value::Text("a method".into())),
                ("summary".to_owned(), Value::Text("how".into())),
            ]),
        };
        let salted = SaltedRecord::new(record, &SaltKey::from_bytes([9; 32]));
        let id = writer.ingest(vec![salted]).await.expect("stored")[0].id;
        let rms = StreamKey { origin: kz, agreement: RMS.parse().expect("valid") };
        let first = store.projection(&rms, 1).expect("reads").expect("projected");
        assert!(!first.envelope.audience.contains(&uz) && first.envelope.audience.len() == 5, "{first:?}");
        tick(&writer).await;
        assert_eq!(store.stream_head(&rms).expect("reads"), 1, "no one new");
        std::fs::write(&rms_file, &text).expect("writes");
        // The catalog renamed `summary` meanwhile: a field it no longer lists has no tags
        // to decide on, and is withheld.
        let catalog = files.join("catalog.toml");
        let cat_text = std::fs::read_to_string(&catalog).expect("reads");
        let (old, new) =
            ("[category.\"rms.method\".fields.summary]", "[category.\"rms.method\".fields.synopsis]");
        assert_eq!(cat_text.matches(old).count(), 1);
        std::fs::write(&catalog, cat_text.replace(old, new)).expect("writes");
        policy.set(load());
        tick(&writer).await;
        let again = store.projection(&rms, 2).expect("reads").expect("projected again");
        assert_eq!(again.envelope.audience, vec![uz]);
        assert_eq!(again.record_id().expect("its record"), id);
        assert!(first.revealed_body().contains_key("summary"), "{first:?}");
        let mut without = first.revealed_body();
        without.remove("summary");
        assert_eq!(again.revealed_body(), without);
        tick(&writer).await;
        assert_eq!(store.stream_head(&rms).expect("reads"), 2, "once");
        let r = store.record(&id).expect("reads").expect("held");
        assert_eq!(r.shares, vec![(rms.agreement.clone(), 1), (rms.agreement.clone(), 2)]);
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A snapshot's log ends with a checkpoint over its last entry, however few entries
    // came since the last one due.
    #[tokio::test(flavor = "current_thread")]
    async fn a_snapshot_ends_with_a_checkpoint_over_its_last_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        // The first group signs a checkpoint (none yet); the second is not due one.
        writer.ingest(vec![kz_method("M1")]).await.expect("stored");
        writer.ingest(vec![kz_method("M2")]).await.expect("stored");
        let (head, _) = store.audit_head().expect("reads").expect("an entry");
        let before = store.latest_checkpoint().expect("reads").map_or(0, |c| c.seq);
        assert!(before + 1 < head, "no checkpoint over the last entry yet: {before} of {head}");
        let snap = writer.snapshot().await.expect("copied");
        // Signed over every entry before it; its own entry, which carries it, comes last.
        let cp = store.latest_checkpoint().expect("reads").expect("a checkpoint");
        let (last, _) = store.audit_head().expect("reads").expect("an entry");
        assert_eq!((cp.seq, last), (head, head + 1));
        assert!(snap.iter().any(|(k, _)| k.first() == Some(&b'K')), "the copy holds it");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    /// Every entry of the store's audit log, as JSON.
    fn entries(store: &Store) -> Vec<serde_json::Value> {
        let (last, _) = store.audit_head().expect("reads").expect("an entry");
        store
            .audit_entries(1, last)
            .map(|e| serde_json::from_slice(&e.expect("reads").2).expect("json"))
            .collect()
    }

    /// KZ's own rms record titled `title`, salted as every test here salts.
    fn kz_method(title: &str) -> SaltedRecord {
        let record = Record {
            header: RecordHeader {
                category: "rms.method".parse().expect("valid"),
                classification: Classification::Public,
                origin: "KZ".parse().expect("valid"),
                created_ms: now_ms(),
                supersedes: None,
                expires_ms: None,
            },
            body: BTreeMap::from([("title".to_owned(), Value::Text(title.into()))]),
        };
        SaltedRecord::new(record, &SaltKey::from_bytes([9; 32]))
    }

    /// Send an ingest as a caller would that looked its records up once `after` groups
    /// had been applied and found none held.
    async fn ingest_checked_after(writer: &Writer, records: Vec<SaltedRecord>, after: u64) -> Vec<Ingested> {
        let (reply, rx) = oneshot::channel();
        let checked = Checked { after, held: vec![false; records.len()] };
        writer.tx.send(Op::Ingest { records, checked, reply }).await.expect("the writer runs");
        rx.await.expect("answered").expect("stored")
    }

    // An op's records are numbered in order and signed on several threads: each share
    // verifies under its own number, and the stream has no hole.
    #[tokio::test]
    async fn an_ops_shares_are_signed_together_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let n = PARALLEL_SIGNING_FROM as u64 * 3 + 1;
        let records: Vec<SaltedRecord> = (1..=n).map(|i| kz_method(&format!("M{i}"))).collect();
        let answered = writer.ingest(records.clone()).await.expect("stored");
        assert!(answered.iter().all(|i| i.new));
        drop(writer);
        handle.await.expect("the writer ends");
        let kz: MemberCode = "KZ".parse().expect("valid");
        let rms = StreamKey { origin: kz, agreement: RMS.parse().expect("valid") };
        assert_eq!(store.stream_head(&rms).expect("reads"), n);
        let key = tamga_config::demo::demo_signing_key(kz).verifying_key();
        for (seq, r) in (1..=n).zip(&records) {
            let p = store.projection(&rms, seq).expect("reads").expect("held");
            assert_eq!(p.record_id().expect("its record"), r.id, "#{seq} is the op's record {seq}");
            p.verify(&key).expect("signed under its number");
            let held = store.record(&r.id).expect("reads").expect("held");
            assert_eq!(held.shares, vec![(rms.agreement.clone(), seq)]);
        }
        assert_eq!(store.record_count(), n);
    }

    // A caller looks its records up before the op reaches the writer; one stored in
    // between, by a group it could not have seen, is still answered as held: from the
    // groups the writer remembers, or, once it remembers too few, from the store.
    #[tokio::test]
    async fn a_record_stored_after_its_caller_looked_is_not_stored_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let first = kz_method("first");
        writer.ingest(vec![first.clone()]).await.expect("stored");
        let again = ingest_checked_after(&writer, vec![first.clone()], 0).await;
        assert_eq!(again, vec![Ingested { id: first.id, new: false }], "remembered");
        for i in 0..RECENT_GROUPS {
            writer.ingest(vec![kz_method(&format!("later {i}"))]).await.expect("stored");
        }
        let again = ingest_checked_after(&writer, vec![first.clone()], 0).await;
        assert_eq!(again, vec![Ingested { id: first.id, new: false }], "looked up");
        // Twice in one op, or once in each of two ops sent together: stored once.
        let twice = kz_method("twice");
        let answered = ingest_checked_after(&writer, vec![twice.clone(), twice.clone()], 0).await;
        assert_eq!(answered.iter().map(|i| i.new).collect::<Vec<_>>(), vec![true, false]);
        let third = kz_method("third");
        let (a, b) = tokio::join!(
            ingest_checked_after(&writer, vec![third.clone()], 0),
            ingest_checked_after(&writer, vec![third.clone()], 0)
        );
        assert_eq!([a[0].new, b[0].new].iter().filter(|n| **n).count(), 1);
        drop(writer);
        handle.await.expect("the writer ends");
        let total = RECENT_GROUPS as u64 + 3;
        assert_eq!(store.record_count(), total);
        let rms = StreamKey { origin: "KZ".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        assert_eq!(store.stream_head(&rms).expect("reads"), total, "one share each");
    }

    // A flush failed after its group was applied: the caller was told the write failed,
    // yet the record is held. Its retry finds it held and writes nothing, and is answered
    // only once a flush has made it durable.
    #[tokio::test(flavor = "current_thread")]
    async fn a_retry_after_a_failed_flush_is_answered_only_once_a_flush_ran() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        // The first group signs the first checkpoint; the retry below is due none, so it
        // writes nothing.
        writer.ingest(vec![kz_method("first")]).await.expect("stored");
        let record = kz_method("M1");
        store.fail_next_flush();
        let failed = writer.ingest(vec![record.clone()]).await;
        assert!(matches!(failed, Err(WriteError::Store(_))), "{failed:?}");
        let flushes = store.flushes();
        let again = writer.ingest(vec![record.clone()]).await.expect("stored");
        assert_eq!(again, vec![Ingested { id: record.id, new: false }]);
        assert_eq!(store.flushes(), flushes + 1, "answered held before any flush");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // An own record whose flush failed is applied, numbered in its streams, but a crash
    // could lose it and a restarted node give its numbers to other records: summaries and
    // pulls (`Store::durable_head`) show peers the heads before it until a flush ran.
    #[tokio::test(flavor = "current_thread")]
    async fn own_numbers_are_shown_to_peers_only_once_a_flush_covered_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let rms = StreamKey { origin: "KZ".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        writer.ingest(vec![kz_method("first")]).await.expect("stored");
        assert_eq!((store.stream_head(&rms).expect("reads"), store.durable_head(&rms)), (1, None));
        store.fail_next_flush();
        let failed = writer.ingest(vec![kz_method("second")]).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(store.stream_head(&rms).expect("reads"), 2, "applied");
        assert_eq!(store.durable_head(&rms), Some(1), "not durable");
        // Another group applied before any flush: still the head the last flush made durable.
        store.fail_next_flush();
        assert!(writer.ingest(vec![kz_method("third")]).await.is_err());
        assert_eq!((store.stream_head(&rms).expect("reads"), store.durable_head(&rms)), (3, Some(1)));
        writer.ingest(vec![kz_method("fourth")]).await.expect("stored");
        assert_eq!((store.stream_head(&rms).expect("reads"), store.durable_head(&rms)), (4, None));
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A checkpoint whose flush failed is applied, so the store shows it, but a crash could
    // still lose it: peers are shown the one before it until a flush has covered it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_checkpoint_is_shown_only_once_a_flush_covered_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        // The first group signs the first checkpoint (none yet) and flushes it.
        writer.ingest(vec![kz_method("first")]).await.expect("stored");
        let first = store.latest_checkpoint().expect("reads").expect("a checkpoint");
        assert_eq!(writer.durable_checkpoint().as_ref(), Some(&first));
        writer.ingest(vec![kz_method("second")]).await.expect("stored");
        // A snapshot forces a checkpoint over the last entry; its flush fails.
        store.fail_next_flush();
        assert!(writer.snapshot().await.is_err(), "no backup of what a crash could take back");
        let applied = store.latest_checkpoint().expect("reads").expect("a checkpoint");
        assert!(
            applied.seq > first.seq,
            "the forced checkpoint is applied: {} after {}",
            applied.seq,
            first.seq
        );
        assert_eq!(writer.durable_checkpoint().as_ref(), Some(&first), "shown before any flush covered it");
        // A later group that answers durable flushes it (and the one it signs, if any).
        writer.ingest(vec![kz_method("third")]).await.expect("stored");
        let last = store.latest_checkpoint().expect("reads").expect("a checkpoint");
        assert!(last.seq >= applied.seq);
        assert_eq!(writer.durable_checkpoint().as_ref(), Some(&last), "flushed, so shown");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A group whose commit fails answers its ops with the error; what asked for no answer
    // (here audit entries) is written by the next group that commits, and past
    // MAX_CARRIED the oldest are dropped and their count audited.
    #[tokio::test(flavor = "current_thread")]
    async fn what_a_failed_group_audited_is_written_by_the_next_group_that_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let uz: MemberCode = "UZ".parse().expect("valid");
        let event =
            |n: usize| AuditEvent::new(Action::PeerConnected, Outcome::Ok).peer(uz).reason(format!("{n}"));
        let connected = |store: &Store| -> Vec<String> {
            let es = entries(store).into_iter().filter(|e| e["action"] == "peer_connected");
            es.map(|e| e["reason"].as_str().expect("a reason").to_owned()).collect()
        };
        // Queued without waiting, so the ingest after it falls in the same group.
        store.fail_commits(1);
        writer.audit(event(0)).await;
        assert!(writer.ingest(vec![kz_method("refused")]).await.is_err(), "its group failed");
        writer.ingest(vec![kz_method("stored")]).await.expect("stored");
        assert_eq!(connected(&store), ["0"], "written once, by the group after");

        // Failing on and on: the oldest past the bound are dropped, and counted.
        store.fail_commits(u64::MAX);
        for n in 1..=MAX_CARRIED + 7 {
            writer.audit(event(n)).await;
        }
        assert!(writer.ingest(vec![kz_method("refused too")]).await.is_err());
        store.fail_commits(0);
        writer.ingest(vec![kz_method("stored too")]).await.expect("stored");
        let kept: Vec<String> = (8..=MAX_CARRIED + 7).map(|n| n.to_string()).collect();
        assert_eq!(connected(&store)[1..], kept[..], "the newest {MAX_CARRIED}, in order, once each");
        let lost: Vec<_> = entries(&store).into_iter().filter(|e| e["action"] == "entries_lost").collect();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0]["reason"].as_str().expect("a reason").starts_with("7 audit entries"), "{lost:?}");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    #[tokio::test]
    async fn what_a_peer_holds_of_an_own_stream_is_taken_back_and_its_numbers_given_up() {
        // Before the loss: KZ made L1..L4, numbered #1..#4; UZ holds them.
        let lost: Vec<SaltedRecord> = (1..=4).map(|i| kz_method(&format!("L{i}"))).collect();
        let old = tempfile::tempdir().expect("tempdir");
        let (old_store, task) = kz_writer(old.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        writer.ingest(lost.clone()).await.expect("stored");
        drop(writer);
        handle.await.expect("the writer ends");
        let rms = StreamKey { origin: "KZ".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        let held_by = |store: &Store, seqs: std::ops::RangeInclusive<u64>| -> Vec<(RecordId, Projection)> {
            seqs.map(|seq| {
                let p = store.projection(&rms, seq).expect("reads").expect("held");
                (p.record_id().expect("its record"), p)
            })
            .collect()
        };
        let held_by_uz = held_by(&old_store, 1..=4);
        let held = |from, items, used, reconciled, last| HeldByPeer {
            from,
            stream: rms.clone(),
            items,
            used,
            reconciled,
            last,
        };

        // Restored from a backup that held none of them, KZ makes N1, L3 again (an import
        // run again) and N2 (#1..#3), and revokes N1 (its revocation #4, #1 purged).
        let new = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(new.path());
        store.mark_restored().expect("marks");
        let (writer, handle) = task.spawn(CancellationToken::new());
        let (n1, n2, l3) = (kz_method("N1"), kz_method("N2"), lost[2].clone());
        writer.ingest(vec![n1.clone(), l3.clone(), n2.clone()]).await.expect("stored");
        let given_since = held_by(&store, 1..=3);
        assert_eq!(writer.revoke(n1.id).await.expect("revoked"), 1);
        // A second revocation (two racing past the API's check) is refused, and no second
        // `revoked` entry is written.
        match writer.revoke(n1.id).await {
            Err(WriteError::Refused(m)) => assert!(m.contains("already revoked"), "{m}"),
            other => panic!("a second revocation: {other:?}"),
        }
        assert_eq!(entries(&store).iter().filter(|e| e["action"] == "revoked").count(), 1);
        let uz: MemberCode = "UZ".parse().expect("valid");
        // CN's receipts for L3's #2 and N2's #3, in one entry, kept before they give their
        // numbers up.
        let cn: MemberCode = "CN".parse().expect("valid");
        let items = given_since[1..].iter().map(|(id, p)| ReceiptItem::of(*id, p)).collect();
        let signed = Receipt::sign_batch(items, cn, 1, &tamga_config::demo::demo_signing_key(cn));
        writer.receipts(signed.into_iter().map(|r| (r, EntryKind::Share)).collect()).await;

        // Not all of UZ's numbers yet: what gave up its number waits.
        let took = writer
            .take_back(held(uz, held_by_uz.clone(), Vec::new(), Reconciled::Through(4), false))
            .await
            .expect("taken");
        assert_eq!(took, TookBack { taken: 4, projected_again: 0 });
        for (seq, (id, p)) in (1..=4).zip(&held_by_uz) {
            let kept = store.projection(&rms, seq).expect("reads").expect("held");
            assert_eq!((kept.record_id().expect("its record"), &kept.signature), (*id, &p.signature));
        }
        assert_eq!(store.stream_head(&rms).expect("reads"), 4);
        let mark = store.restored().expect("reads").expect("restored");
        assert_eq!(mark.displaced.len(), 3, "L3's share #2, N2's share #3, N1's revocation #4");
        assert_eq!(mark.floor(uz, &rms), Some(4));

        // The last of them: N2's share and N1's revocation are made again after UZ's
        // numbers; L3, held again under UZ's #3, needs no new number.
        let took =
            writer.take_back(held(uz, Vec::new(), Vec::new(), Reconciled::All, true)).await.expect("taken");
        assert_eq!(took, TookBack { taken: 0, projected_again: 2 });
        let at = |seq| store.projection(&rms, seq).expect("reads").expect("held");
        assert_eq!((at(5).record_id().expect("its record"), at(5).envelope.kind), (n2.id, EntryKind::Share));
        assert_eq!((at(6).record_id().expect("its record"), at(6).envelope.kind), (n1.id, EntryKind::Revoke));
        assert_eq!(store.stream_head(&rms).expect("reads"), 6);
        let shares = |id| store.record(&id).expect("reads").expect("held").shares;
        assert_eq!(shares(l3.id), vec![(rms.agreement.clone(), 3)]);
        assert_eq!(shares(n2.id), vec![(rms.agreement.clone(), 5)]);
        let l1_back = store.record(&lost[0].id).expect("reads").expect("taken back");
        assert_eq!(l1_back.source, Source::Received { from: uz, agreement: rms.agreement.clone() });
        assert_eq!(l1_back.body, lost[0].record.body);
        let mark = store.restored().expect("reads").expect("restored");
        assert_eq!(mark.floor(uz, &rms), None, "reconciled with UZ");
        assert!(mark.displaced.is_empty());
        let sent = audited_as(&store, Action::Sent);
        let reasons: Vec<&str> = sent.iter().filter_map(|e| e.entry.reason.as_deref()).collect();
        let count = |what: &str| reasons.iter().filter(|r| r.contains(what)).count();
        assert_eq!(count("gives up its number, which UZ holds"), 3, "{reasons:#?}");
        assert_eq!(count("which UZ holds with another record; made again as"), 2, "{reasons:#?}");
        assert_eq!(count("which UZ holds with another record; not made again"), 1, "{reasons:#?}");
        // A receipt stays with the record it was given for, under the number given up.
        let receipts = |id| -> Vec<u64> {
            crate::audit_index::receipts(&store, id).expect("reads").iter().map(|(_, r)| r.seq).collect()
        };
        assert_eq!((receipts(l3.id), receipts(n2.id)), (vec![2], vec![3]));

        // CN holds what KZ gave #1..#3 to since the restore (given up since): stale, and
        // kept out. UZ's again: nothing changes.
        let took =
            writer.take_back(held(cn, given_since, Vec::new(), Reconciled::All, true)).await.expect("taken");
        assert_eq!(took, TookBack::default());
        let took = writer
            .take_back(held(uz, held_by_uz.clone(), Vec::new(), Reconciled::No, true))
            .await
            .expect("taken");
        assert_eq!(took, TookBack::default());
        for (seq, (id, _)) in (1..=4).zip(&held_by_uz) {
            assert_eq!(at(seq).record_id().expect("its record"), *id);
        }
        assert_eq!(store.stream_head(&rms).expect("reads"), 6);

        // TJ holds #7 purged (N3, made since, is given it): N3 gives it up; revoked
        // while it waits, it is made again as a revocation, for whoever holds a copy.
        let n3 = kz_method("N3");
        writer.ingest(vec![n3.clone()]).await.expect("stored");
        let tj: MemberCode = "TJ".parse().expect("valid");
        let took = writer
            .take_back(held(tj, Vec::new(), vec![7], Reconciled::Through(7), false))
            .await
            .expect("taken");
        assert_eq!(took, TookBack::default());
        assert!(store.projection(&rms, 7).expect("reads").is_none(), "#7 given up");
        assert_eq!(writer.revoke(n3.id).await.expect("revoked"), 0, "no share held to revoke");
        let took =
            writer.take_back(held(tj, Vec::new(), Vec::new(), Reconciled::All, true)).await.expect("taken");
        assert_eq!(took.projected_again, 1);
        assert_eq!((at(8).record_id().expect("its record"), at(8).envelope.kind), (n3.id, EntryKind::Revoke));
        assert!(store.restored().expect("reads").expect("restored").displaced.is_empty());
        assert!(audited_as(&store, Action::Rejected).is_empty(), "nothing to refuse");
        assert!(crate::audit::verify_store(&store).ok);
        drop(writer);
        handle.await.expect("the writer ends");
    }

    #[tokio::test]
    async fn what_waits_for_a_member_that_left_the_agreement_is_made_again_at_the_next_peers_end() {
        let rms = StreamKey { origin: "KZ".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        // UZ holds L at #1, given before the loss.
        let old = tempfile::tempdir().expect("tempdir");
        let (old_store, task) = kz_writer(old.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let l = kz_method("L");
        writer.ingest(vec![l.clone()]).await.expect("stored");
        drop(writer);
        handle.await.expect("the writer ends");
        let held_by_uz = vec![(l.id, old_store.projection(&rms, 1).expect("reads").expect("held"))];

        // Restored, KZ gives #1 to N; UZ's first pull takes L back, and N waits for UZ.
        let new = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(new.path());
        store.mark_restored().expect("marks");
        let policy = task.policy.clone();
        let (writer, handle) = task.spawn(CancellationToken::new());
        let n = kz_method("N");
        writer.ingest(vec![n.clone()]).await.expect("stored");
        let (uz, cn): (MemberCode, MemberCode) = ("UZ".parse().expect("valid"), "CN".parse().expect("valid"));
        let held = |from, items, last| HeldByPeer {
            from,
            stream: rms.clone(),
            items,
            used: Vec::new(),
            reconciled: if last { Reconciled::All } else { Reconciled::Through(1) },
            last,
        };
        let took = writer.take_back(held(uz, held_by_uz, false)).await.expect("taken");
        assert_eq!(took, TookBack { taken: 1, projected_again: 0 });

        // UZ leaves the agreement; CN's end makes N again, for the others.
        let files = new.path().join("federation");
        let rms_file = files.join("agreements/sco-rms-2013.toml");
        let text = std::fs::read_to_string(&rms_file).expect("reads");
        let (with, without) = (r#""TJ", "UZ", "XS""#, r#""TJ", "XS""#);
        assert!(text.contains(with));
        std::fs::write(&rms_file, text.replace(with, without)).expect("writes");
        policy.set(load_kz(&files));
        let took = writer.take_back(held(cn, Vec::new(), true)).await.expect("taken");
        assert_eq!(took.projected_again, 1);
        let again = store.projection(&rms, 2).expect("reads").expect("made again");
        assert_eq!(again.record_id().expect("its record"), n.id);
        assert!(!again.envelope.audience.contains(&uz) && again.envelope.audience.contains(&cn), "{again:?}");
        assert!(store.restored().expect("reads").expect("restored").displaced.is_empty());
        drop(writer);
        handle.await.expect("the writer ends");
    }

    /// An anti-entropy tick's op, then an op whose answer says the tick is done.
    async fn tick(writer: &Writer) {
        writer.purge_expired().await;
        writer.audit_durable(AuditEvent::new(Action::PolicyLoaded, Outcome::Ok)).await.expect("stored");
    }

    /// KZ's federation from the files in `files`, as a reload loads it.
    fn load_kz(files: &std::path::Path) -> Arc<Federation> {
        let fed = Federation::load_files(
            &files.join("roster.toml"),
            &files.join("catalog.toml"),
            &files.join("agreements"),
            &files.join("policies/KZ.toml"),
            "KZ".parse().expect("valid"),
        );
        Arc::new(fed.expect("loads"))
    }

    /// KZ's writer with sco-rms-2013's retention cut from 1,095 days to one, in its files
    /// and in force: its store and task, the federation's directory, and the agreement's
    /// file with its text before.
    fn kz_writer_keeping_rms_a_day(
        dir: &std::path::Path,
    ) -> (Store, WriterTask, std::path::PathBuf, (std::path::PathBuf, String)) {
        let (store, task) = kz_writer(dir);
        let files = dir.join("federation");
        let rms_file = files.join("agreements/sco-rms-2013.toml");
        let text = std::fs::read_to_string(&rms_file).expect("reads");
        std::fs::write(&rms_file, text.replace("retention_days = 1095", "retention_days = 1"))
            .expect("writes");
        task.policy.set(load_kz(&files));
        (store, task, files, (rms_file, text))
    }

    // A retention shortened, then lengthened back before the shortened one ended: the walk
    // under the short one indexed the share to expire early, and that entry, once due, no
    // longer purges it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_retention_lengthened_back_keeps_what_the_shorter_one_would_have_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task, files, (rms_file, text)) = kz_writer_keeping_rms_a_day(dir.path());
        let policy = task.policy.clone();
        let (writer, handle) = task.spawn(CancellationToken::new());
        let soon = now_ms() + 4_000;
        let items = shares_created(RMS, i64::MAX, 1..=1, soon - 86_400_000 - 1);
        writer.received("RU".parse().expect("valid"), items, Vec::new()).await.expect("stored");
        tick(&writer).await;
        std::fs::write(&rms_file, &text).expect("writes");
        policy.set(load_kz(&files));
        tick(&writer).await;
        tokio::time::sleep(std::time::Duration::from_millis((soon - now_ms()).max(0) as u64 + 100)).await;
        tick(&writer).await;
        let rms = StreamKey { origin: "RU".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        assert!(store.projection(&rms, 1).expect("reads").is_some(), "kept under the retention in force");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A retention shortened, the walk under it done, and then a share arrives (from a
    // peer back from a partition) whose envelope, signed under the longer one, expires far
    // later: it is purged when the retention in force ends, as the origin purges it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_taken_in_after_a_retention_was_shortened_expires_under_the_shorter_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task, ..) = kz_writer_keeping_rms_a_day(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        tick(&writer).await;
        tick(&writer).await;
        let soon = now_ms() + 4_000;
        let items = shares_created(RMS, i64::MAX, 1..=1, soon - 86_400_000);
        writer.received("RU".parse().expect("valid"), items, Vec::new()).await.expect("stored");
        let rms = StreamKey { origin: "RU".parse().expect("valid"), agreement: RMS.parse().expect("valid") };
        assert!(store.projection(&rms, 1).expect("reads").is_some(), "held until then");
        tokio::time::sleep(std::time::Duration::from_millis((soon - now_ms()).max(0) as u64 + 100)).await;
        tick(&writer).await;
        assert_eq!(store.projection(&rms, 1).expect("reads"), None, "purged under the retention in force");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // An agreement's retention shortened after its shares were made: for one the retention
    // in force has ended (its record was created in 1970), for one it ends in a moment, for
    // one much later; the expiry each carries is far off. The first is purged at once, the
    // second when its retention in force ends, and the third is kept.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_is_purged_once_the_retention_in_force_has_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let retention = 1095 * 86_400_000; // sco-rms-2013's
        let soon = now_ms() + 4_000;
        let mut items = shares_created(RMS, i64::MAX, 1..=1, 0);
        items.extend(shares(RMS, i64::MAX, 2..=2));
        items.extend(shares_created(RMS, i64::MAX, 3..=3, soon - retention - 3));
        let (old, recent) = (items[0].0, items[1].0);
        writer.received(ru, items, Vec::new()).await.expect("stored");
        tick(&writer).await;
        let rms = StreamKey { origin: ru, agreement: RMS.parse().expect("valid") };
        assert_eq!(store.projection(&rms, 1).expect("reads"), None, "purged");
        assert!(store.is_gone(&rms, 1).expect("reads"));
        let r = store.record(&old).expect("reads").expect("its tombstone");
        assert!(r.state == RecordState::Expired && r.body.is_empty(), "{r:?}");
        assert!(store.projection(&rms, 3).expect("reads").is_some(), "its retention in force ends later");
        let purged: Vec<String> = entries(&store)
            .iter()
            .filter(|e| e["action"] == "purged")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(purged.len(), 1, "{purged:?}");
        assert!(purged[0].contains("RU #1: the retention of sco-rms-2013 in force"), "{purged:?}");

        tokio::time::sleep(std::time::Duration::from_millis((soon - now_ms()).max(0) as u64 + 100)).await;
        tick(&writer).await;
        assert_eq!(store.projection(&rms, 3).expect("reads"), None, "expired by its retention in force");
        assert!(store.projection(&rms, 2).expect("reads").is_some(), "within the retention: kept");
        assert_eq!(store.record(&recent).expect("reads").expect("held").state, RecordState::Live);
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A share expires while the record's share under another agreement (a longer retention)
    // is held: the record stays live, read from the share that is left.
    #[tokio::test(flavor = "current_thread")]
    async fn a_received_record_outlives_one_expired_share_while_another_is_held() {
        let mut both = shares(RMS, 1, 1..=1);
        both.extend(shares(IPR, i64::MAX, 1..=1));
        let (_dir, store, r, _) = received_then_expired(vec![both], Vec::new()).await;
        let ru: MemberCode = "RU".parse().expect("valid");
        let rms = StreamKey { origin: ru, agreement: RMS.parse().expect("valid") };
        let ipr = StreamKey { origin: ru, agreement: IPR.parse().expect("valid") };
        assert_eq!(store.projection(&rms, 1).expect("reads"), None, "the expired share is purged");
        assert!(store.projection(&ipr, 1).expect("reads").is_some(), "the other share is held");
        assert_eq!(r.state, RecordState::Live);
        assert_eq!(r.source, Source::Received { from: ru, agreement: IPR.parse().expect("valid") });
        assert_eq!(r.body.get("title"), Some(&Value::Text("method 1".to_owned())));
    }

    // A record whose only share expired is held as expired; a share of it under another
    // agreement that has not expired takes it back in. Revoked is different (above).
    #[tokio::test(flavor = "current_thread")]
    async fn an_expired_record_is_taken_back_in_by_a_share_under_another_agreement() {
        let (_dir, _store, r, flags) =
            received_then_expired(vec![shares(RMS, 1, 1..=1)], shares(IPR, i64::MAX, 1..=1)).await;
        assert_eq!(flags, vec![Taken::New]);
        assert_eq!(r.state, RecordState::Live);
        assert_eq!(r.body.get("title"), Some(&Value::Text("method 1".to_owned())));
        let (_dir, _store, r, _) = received_then_expired(vec![shares(RMS, 1, 1..=1)], Vec::new()).await;
        assert_eq!((r.state, r.body.is_empty()), (RecordState::Expired, true));
    }

    // A peer's word that a number is withheld from us is not signed; the origin's signed
    // projection of that number, with us in its audience, wins over it. Purged numbers
    // stay purged, a projection held already is answered as held, and another record
    // under a number held is refused.
    #[tokio::test(flavor = "current_thread")]
    async fn a_signed_projection_wins_over_a_peers_withheld_claim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let (ru, uz): (MemberCode, MemberCode) = ("RU".parse().expect("valid"), "UZ".parse().expect("valid"));
        let stream = StreamKey { origin: ru, agreement: RMS.parse().expect("valid") };
        let claims = vec![(stream.clone(), 1, uz), (stream.clone(), 2, uz)];
        assert_eq!(writer.received(uz, Vec::new(), claims).await.expect("stored"), vec![]);
        assert_eq!(store.stream_head(&stream).expect("reads"), 2, "claims count as known");
        let taken = writer.received(ru, projections(1..=1), Vec::new()).await.expect("stored");
        assert_eq!(taken, vec![Taken::New]);
        assert!(store.projection(&stream, 1).expect("reads").is_some());
        assert!(!store.view().is_withheld(&stream, 1).expect("reads"));
        let again = writer.received(uz, projections(1..=1), Vec::new()).await.expect("stored");
        assert_eq!(again, vec![Taken::Held]);
        // Another record under the same number (an origin restored from an old backup).
        let (other, mut clash) = projections(2..=2).remove(0);
        clash.envelope.seq = 1;
        let clash = {
            let key = tamga_config::demo::demo_signing_key(ru);
            let record = Record { header: clash.header.clone(), body: clash.revealed_body() };
            let salted = SaltedRecord::new(record, &SaltKey::from_bytes([7; 32]));
            assert_eq!(salted.id, other);
            salted.project(|_| false, clash.envelope, &key).expect("projects")
        };
        let taken = writer.received(ru, vec![(other, clash)], Vec::new()).await.expect("stored");
        assert_eq!(taken, vec![Taken::Conflict]);
        assert_eq!(store.record(&other).expect("reads"), None, "nothing of it is stored");
        writer.received(ru, vec![revocation_of(3)], Vec::new()).await.expect("stored");
        let late = writer.received(uz, projections(1..=1), Vec::new()).await.expect("stored");
        assert_eq!(late, vec![Taken::Purged], "revoked: purged, not held");
        drop(writer);
        handle.await.expect("the writer ends");
        assert_eq!(store.stream_head(&stream).expect("reads"), 3);
    }

    // A number said withheld by a peer other than its origin is kept as unconfirmed, to be
    // asked of the origin again; the origin saying so too confirms it, and the origin's
    // signed projection of it ends the claim whole, audited against the peer. What the
    // origin says first is not unconfirmed, nor made so by a peer saying it again. A
    // number this node declined itself (its accept policy) is not asked for again until
    // the files in force change; then it is, and its projection taken later audits no one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_withheld_number_on_another_peers_word_waits_for_the_origins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let policy = task.policy.clone();
        let (writer, handle) = task.spawn(CancellationToken::new());
        // The first tick after start records the files the declines are made under.
        tick(&writer).await;
        let (ru, uz): (MemberCode, MemberCode) = ("RU".parse().expect("valid"), "UZ".parse().expect("valid"));
        let stream = StreamKey { origin: ru, agreement: RMS.parse().expect("valid") };
        let kz: MemberCode = "KZ".parse().expect("valid");
        let claims =
            |by: MemberCode, seqs: &[u64]| seqs.iter().map(|&s| (stream.clone(), s, by)).collect::<Vec<_>>();
        let unconfirmed = || store.unconfirmed_withheld(&stream, 1, u64::MAX, 100).expect("reads");
        writer.received(ru, Vec::new(), claims(ru, &[1])).await.expect("stored");
        writer.received(uz, Vec::new(), claims(uz, &[1, 2, 3, 5])).await.expect("stored");
        assert_eq!(unconfirmed(), vec![2, 3, 5], "1 is the origin's word");
        assert_eq!(store.stream_head(&stream).expect("reads"), 3);
        assert_eq!(store.unconfirmed_withheld(&stream, 3, 4, 100).expect("reads"), vec![3], "within bounds");
        assert_eq!(store.unconfirmed_withheld(&stream, 1, u64::MAX, 1).expect("reads"), vec![2], "at most");
        writer.received(ru, Vec::new(), claims(ru, &[2])).await.expect("stored");
        assert_eq!(unconfirmed(), vec![3, 5], "2 confirmed by its origin");
        assert!(store.view().is_withheld(&stream, 2).expect("reads"), "and still withheld");
        let taken = writer.received(ru, projections(3..=3), Vec::new()).await.expect("stored");
        assert_eq!(taken, vec![Taken::New]);
        assert_eq!(unconfirmed(), vec![5], "3 is held: the claim is gone");
        assert!(!store.view().is_withheld(&stream, 3).expect("reads"));
        writer.received(ru, Vec::new(), claims(kz, &[4])).await.expect("stored");
        assert_eq!(unconfirmed(), vec![5], "declined here: not asked for again");
        assert_eq!(store.declined(&stream, 10).expect("reads"), vec![4]);
        assert_eq!(store.stream_head(&stream).expect("reads"), 5, "the head passes it");
        tick(&writer).await;
        assert_eq!(unconfirmed(), vec![5], "the files are the same");
        let files = dir.path().join("federation");
        let kz_policy = files.join("policies/KZ.toml");
        let text = std::fs::read_to_string(&kz_policy).expect("reads");
        const ENERGY: &str = "[[accept]]\nagreement = \"sco-energy-2008\"\n";
        assert!(text.contains(ENERGY));
        std::fs::write(&kz_policy, text.replace(ENERGY, &format!("{ENERGY}from = [\"CN\", \"RU\"]\n")))
            .expect("writes");
        policy.set(load_kz(&files));
        tick(&writer).await;
        assert_eq!(unconfirmed(), vec![4, 5], "the files changed: asked of the origin again");
        assert!(store.declined(&stream, 10).expect("reads").is_empty());
        writer.received(ru, Vec::new(), claims(kz, &[4])).await.expect("stored");
        assert_eq!(unconfirmed(), vec![5], "declined anew");
        tick(&writer).await;
        assert_eq!(unconfirmed(), vec![5], "and not asked for again under the same files");
        policy.set(load_kz(&files));
        tick(&writer).await;
        assert_eq!(unconfirmed(), vec![5], "nor under the same files loaded again");
        std::fs::write(&kz_policy, text).expect("writes");
        policy.set(load_kz(&files));
        tick(&writer).await;
        assert_eq!(unconfirmed(), vec![4, 5], "the files changed back");
        let taken = writer.received(ru, projections(4..=4), Vec::new()).await.expect("stored");
        assert_eq!(taken, vec![Taken::New]);
        assert_eq!(unconfirmed(), vec![5]);
        let against: Vec<String> = entries(&store)
            .iter()
            .filter(|e| e["action"] == "rejected")
            .map(|e| e["peer"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(against, vec!["UZ".to_owned()], "the peer's false claim only");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // A Received op that fails halfway (its second record's stored value does not decode)
    // is refused whole: its first projection, record and audit entry are not committed
    // with the rest of its group, and the op beside it in the group is.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_op_leaves_nothing_in_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        // Record 2 is taken in and audited, then the revocation of record 1, whose stored
        // value does not decode, fails the op: its entry must go with the rest.
        let mut items = projections(2..=2);
        let revoked = revocation_of(3);
        let (first, second) = (items[0].0, revoked.0);
        items.push(revoked);
        store
            .raw_insert(vec![([b"R".as_slice(), &second.0].concat(), b"this is not a record".to_vec())])
            .expect("writes");
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let beside = AuditEvent::new(Action::PolicyLoaded, Outcome::Ok).reason("beside the failed op");
        let (a, b) = tokio::join!(writer.received(ru, items, Vec::new()), writer.audit_durable(beside));
        assert!(a.is_err(), "the op is refused: {a:?}");
        b.expect("the op beside it is committed");
        drop(writer);
        handle.await.expect("the writer ends");
        let stream = StreamKey { origin: ru, agreement: "sco-rms-2013".parse().expect("valid") };
        assert_eq!(store.projection(&stream, 2).expect("reads"), None);
        assert_eq!(store.record(&first).expect("reads"), None);
        assert_eq!(store.stream_head(&stream).expect("reads"), 0);
        let actions: Vec<String> =
            entries(&store).iter().map(|e| e["action"].as_str().unwrap_or_default().to_owned()).collect();
        assert!(actions.contains(&"policy_loaded".to_owned()), "{actions:?}");
        assert!(!actions.contains(&"received".to_owned()), "{actions:?}");
    }

    /// KZ's signed feedback on RU's record 1, given at `time_ms`.
    fn feedback(outcome: tamga_protocol::FeedbackOutcome, time_ms: i64) -> tamga_protocol::Feedback {
        let kz: MemberCode = "KZ".parse().expect("valid");
        let (id, p) = projections(1..=1).remove(0);
        let key = tamga_config::demo::demo_signing_key(kz);
        tamga_protocol::Feedback::sign(
            id,
            p.envelope.agreement,
            p.header.origin,
            kz,
            outcome,
            String::new(),
            time_ms,
            &key,
        )
    }

    // Each feedback given waits under its own key: two on one record are both kept, and
    // delivering one leaves the other. An entry that an earlier build kept under record id
    // and origin only is read, and removed by that key alone.
    #[tokio::test(flavor = "current_thread")]
    async fn each_feedback_given_waits_in_the_outbox_until_it_is_delivered() {
        use tamga_protocol::FeedbackOutcome;
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let older = feedback(FeedbackOutcome::NoFinding, 1);
        let legacy_key = [b"B".as_slice(), &older.record.0, &older.origin.as_bytes()].concat();
        let value = tamga_protocol::codec::encode_stored(&older).expect("encodes");
        store.raw_insert(vec![(legacy_key, value)]).expect("writes");
        let (writer, handle) = task.spawn(CancellationToken::new());
        let seized = feedback(FeedbackOutcome::Seized, 2);
        let cleared = feedback(FeedbackOutcome::FalsePositive, 3);
        for f in [&seized, &cleared] {
            writer.feedback(f.clone(), FeedbackEvent::Given).await.expect("given");
        }
        let outbox = || store.feedback_outbox(None, None, usize::MAX).expect("reads");
        let waiting: Vec<_> = outbox().into_iter().map(|(_, f)| f).collect();
        assert_eq!(waiting.len(), 3, "{waiting:?}");
        assert!([&older, &seized, &cleared].iter().all(|f| waiting.contains(f)), "{waiting:?}");
        // Counted per origin from the keys, the earlier form's among them.
        assert_eq!(
            store.feedback_waiting().expect("reads").into_iter().collect::<Vec<_>>(),
            vec![(older.origin, 3)]
        );
        // Read from just after a key, wrapping round to it.
        let keys: Vec<_> = outbox().into_iter().map(|(k, _)| k).collect();
        let from_second: Vec<_> = store
            .feedback_outbox(None, Some(&keys[1]), 10)
            .expect("reads")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(from_second, vec![keys[2].clone(), keys[0].clone(), keys[1].clone()]);
        let two = store.feedback_outbox(Some(older.origin), Some(&keys[2]), 2).expect("reads");
        assert_eq!(
            two.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec![keys[0].clone(), keys[1].clone()]
        );
        for delivered in [&seized, &older] {
            let (k, f) = outbox().into_iter().find(|(_, f)| f == delivered).expect("waiting");
            writer.feedback(f.clone(), FeedbackEvent::Delivered(k.clone())).await.expect("recorded");
            // Delivered by two rounds at once: recorded once.
            writer.feedback(f, FeedbackEvent::Delivered(k)).await.expect("answered");
        }
        let delivered = entries(&store)
            .iter()
            .filter(|e| {
                e["action"] == "feedback" && e["reason"].as_str().is_some_and(|r| r.starts_with("delivered"))
            })
            .count();
        assert_eq!(delivered, 2, "one entry each");
        let waiting: Vec<_> = outbox().into_iter().map(|(_, f)| f).collect();
        assert_eq!(waiting, vec![cleared], "only the one not delivered is left");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // Two pieces of feedback received from one giver, signed in the same millisecond, are
    // both kept; one received twice is kept and audited once.
    #[tokio::test(flavor = "current_thread")]
    async fn feedback_received_in_one_millisecond_is_all_kept() {
        use tamga_protocol::FeedbackOutcome;
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let (seized, cleared) =
            (feedback(FeedbackOutcome::Seized, 5), feedback(FeedbackOutcome::NoFinding, 5));
        for f in [&seized, &cleared] {
            writer.feedback(f.clone(), FeedbackEvent::Received).await.expect("stored");
        }
        let held = store.feedback_of(&seized.record).expect("reads");
        assert!(held.len() == 2 && held.contains(&seized) && held.contains(&cleared), "{held:?}");
        // The same one sent again (its answer lost) is answered, and neither kept nor
        // audited twice.
        writer.feedback(seized.clone(), FeedbackEvent::Received).await.expect("answered");
        assert_eq!(store.feedback_of(&seized.record).expect("reads").len(), 2);
        let audited = entries(&store).iter().filter(|e| e["action"] == "feedback").count();
        assert_eq!(audited, 2, "one entry each");
        drop(writer);
        handle.await.expect("the writer ends");
    }

    // The receipts of one push are kept in one `delivered` entry per agreement, and each
    // is found again under its own record; a purge receipt keeps an entry of its own.
    #[tokio::test(flavor = "current_thread")]
    async fn the_receipts_of_a_push_are_kept_in_one_entry_per_agreement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        // Records 1 and 2 are shared under both agreements (one id each, two numbers).
        // Held here, as a record is where its receipts are kept.
        let held: Vec<(RecordId, Projection)> =
            shares(RMS, LATER, 1..=3).into_iter().chain(shares(IPR, LATER, 1..=2)).collect();
        writer.received(ru, held.clone(), Vec::new()).await.expect("stored");
        let items: Vec<ReceiptItem> = held.iter().map(|(id, p)| ReceiptItem::of(*id, p)).collect();
        let signed = Receipt::sign_batch(items, ru, 1, &tamga_config::demo::demo_signing_key(ru));
        let (purge, shared) = signed.split_last().expect("five");
        let mut given: Vec<(Receipt, EntryKind)> =
            shared.iter().map(|r| (r.clone(), EntryKind::Share)).collect();
        given.push((purge.clone(), EntryKind::Revoke));
        writer.receipts(given).await;
        drop(writer);
        handle.await.expect("the writer ends");

        let delivered = audited_as(&store, Action::Delivered);
        let kept: Vec<(Option<String>, usize)> = delivered
            .iter()
            .map(|e| (e.entry.agreement.as_ref().map(|a| a.to_string()), e.entry.receipts.len()))
            .collect();
        assert_eq!(kept, vec![(Some(IPR.to_owned()), 1), (Some(RMS.to_owned()), 3)]);
        // An entry of one receipt names its record too.
        let named: Vec<Option<RecordId>> = delivered.iter().map(|e| e.entry.record).collect();
        assert_eq!(named, vec![Some(shared[3].record), None]);
        assert!(delivered.iter().all(|e| e.entry.peer == Some(ru)));
        let purged = audited_as(&store, Action::Purged);
        assert_eq!(purged.len(), 1);
        assert_eq!(purged[0].entry.receipt.as_ref(), Some(purge));
        for r in shared {
            let held = crate::audit_index::receipts(&store, r.record).expect("reads");
            assert!(held.contains(&(Action::Delivered, r.clone())), "{r:?} in {held:?}");
        }
        // Record 1 has its two receipts, one from each entry; record 2 its RMS one, then
        // its purge receipt (IPR), kept after the deliveries.
        let (one, two) = (shared[0].record, shared[1].record);
        assert_eq!(crate::audit_index::receipts(&store, one).expect("reads").len(), 2);
        let kinds: Vec<Action> =
            crate::audit_index::receipts(&store, two).expect("reads").into_iter().map(|(a, _)| a).collect();
        assert_eq!(kinds, vec![Action::Delivered, Action::Purged]);
    }

    // What one push or pull brings in is audited in one `received` entry per stream,
    // listing each projection; queries by record and category still find it.
    #[tokio::test(flavor = "current_thread")]
    async fn what_one_op_takes_in_is_audited_once_per_stream() {
        use crate::audit::Filter;
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let items: Vec<_> = shares(RMS, LATER, 1..=3).into_iter().chain(shares(IPR, LATER, 1..=1)).collect();
        let ids: Vec<RecordId> = items.iter().map(|(id, _)| *id).collect();
        let taken = writer.received(ru, items, Vec::new()).await.expect("stored");
        assert_eq!(taken, vec![Taken::New; 4]);
        drop(writer);
        handle.await.expect("the writer ends");

        let received = audited_as(&store, Action::Received);
        let listed: Vec<(Option<String>, Vec<u64>, Option<RecordId>)> = received
            .iter()
            .map(|e| {
                let seqs = e.entry.projections.iter().map(|p| p.seq).collect();
                (e.entry.agreement.as_ref().map(|a| a.to_string()), seqs, e.entry.record)
            })
            .collect();
        // One projection alone names its record, as an entry per projection did.
        assert_eq!(
            listed,
            vec![(Some(IPR.to_owned()), vec![1], Some(ids[3])), (Some(RMS.to_owned()), vec![1, 2, 3], None)]
        );
        assert!(received.iter().all(|e| e.entry.peer == Some(ru)));
        for id in &ids[..3] {
            let trace = crate::audit_index::trace(&store, *id).expect("traces");
            let actions: Vec<Action> = trace.iter().map(|e| e.entry.action).collect();
            assert!(actions.contains(&Action::Received), "{id:?}: {actions:?}");
        }
        let category = Some("rms.method".parse().expect("valid"));
        assert_eq!(
            audited(&store, Filter { category, action: Some(Action::Received), ..Filter::default() }).len(),
            2
        );
    }

    // A pull of more than an entry lists is audited in several entries, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_pull_is_audited_in_entries_of_at_most_max_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        let ru: MemberCode = "RU".parse().expect("valid");
        let n = crate::audit::MAX_LISTED as u64 * 2 + 2;
        writer.received(ru, projections(1..=n), Vec::new()).await.expect("stored");
        drop(writer);
        handle.await.expect("the writer ends");
        let seqs: Vec<Vec<u64>> = audited_as(&store, Action::Received)
            .iter()
            .map(|e| e.entry.projections.iter().map(|p| p.seq).collect())
            .collect();
        let max = crate::audit::MAX_LISTED as u64;
        let want: Vec<Vec<u64>> =
            vec![(1..=max).collect(), (max + 1..=2 * max).collect(), (2 * max + 1..=n).collect()];
        assert_eq!(seqs, want);
    }

    // Two ops on one stream drained into one write group: the later one sees the earlier
    // one's numbers, so the stream head ends at the top of both, not below the first.
    #[tokio::test(flavor = "current_thread")]
    async fn two_received_ops_of_one_group_on_one_stream_end_at_the_higher_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, task) = kz_writer(dir.path());
        let (writer, handle) = task.spawn(CancellationToken::new());
        // On one thread both ops are queued before the writer runs, so one group takes both.
        let ru: MemberCode = "RU".parse().expect("valid");
        let (a, b) = tokio::join!(
            writer.received(ru, projections(1..=3), Vec::new()),
            writer.received(ru, projections(4..=5), Vec::new()),
        );
        assert_eq!(a.expect("stored"), vec![Taken::New; 3]);
        assert_eq!(b.expect("stored"), vec![Taken::New; 2]);
        let stream = StreamKey { origin: ru, agreement: "sco-rms-2013".parse().expect("valid") };
        assert_eq!(store.stream_head(&stream).expect("reads"), 5);
        drop(writer);
        handle.await.expect("the writer ends");
    }
}

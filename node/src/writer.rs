//! The write path: one task that owns every write to the store and the head of the audit
//! chain.
//!
//! Callers send [`Op`]s through a bounded channel. The task takes the first op, drains up
//! to [`MAX_GROUP`] more that are already waiting, turns the whole group into one atomic
//! [`WriteBatch`] (records, indexes, audit entries), commits it, flushes once if any op
//! in the group needs durability, and only then answers. Concurrent ingests thus share
//! one flush (group commit): acknowledged means durable without a flush per record.
//!
//! If a commit or flush fails (disk full, read-only directory), every op of the group is
//! answered with the error, the in-memory chain head is not advanced, and nothing of the
//! group is acknowledged.

use std::collections::HashSet;
use std::sync::Arc;

use tamga_protocol::{Digest, MemberCode, RecordId, SaltedRecord};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::audit::{Action, AuditEntry, AuditEvent, Outcome, GENESIS};
use crate::metrics::Metrics;
use crate::store::{Source, Store, StoreError, StoredRecord, WriteBatch};

/// Capacity of the op channel; senders wait when it is full (back-pressure on the API).
pub const WRITE_QUEUE: usize = 4096;
/// Most ops committed in one group (one batch, one flush).
pub const MAX_GROUP: usize = 512;

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store refused the write; nothing of it was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (the node is shutting down).
    #[error("the node is shutting down")]
    Stopped,
}

/// The result of ingesting one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The record id.
    pub id: RecordId,
    /// False when the record was already held (idempotent ingest).
    pub new: bool,
}

/// Where an ingest is answered.
type IngestReply = oneshot::Sender<Result<Vec<Ingested>, WriteError>>;

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
        /// Where to answer.
        reply: IngestReply,
    },
    /// Append an audit entry (made durable with the next flush).
    Audit(AuditEvent),
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
}

impl Writer {
    /// Ingest records; answers once they are durable.
    pub async fn ingest(&self, records: Vec<SaltedRecord>) -> Result<Vec<Ingested>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Ingest { records, reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// Append an audit entry. Waits for room in the queue, not for the flush.
    pub async fn audit(&self, ev: AuditEvent) {
        // A stopped writer means shutdown; the event has nowhere durable to go.
        let _ = self.tx.send(Op::Audit(ev)).await;
    }

    /// Append an audit entry without waiting; drops it (and says so) if the queue is full.
    pub fn try_audit(&self, ev: AuditEvent) {
        if let Err(e) = self.tx.try_send(Op::Audit(ev)) {
            tracing::warn!(error = %e, "audit queue full; entry dropped");
        }
    }

    /// A consistent copy of the store.
    pub async fn snapshot(&self) -> Result<Snapshot, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Snapshot { reply }).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Where the writer reads the digest of the policy set in force.
pub trait PolicyDigest: Send + Sync + 'static {
    /// The digest of the policy set in force now.
    fn policy_digest(&self) -> Digest;
}

/// Everything the writer task owns.
pub struct WriterTask {
    store: Store,
    me: MemberCode,
    policy: Arc<dyn PolicyDigest>,
    metrics: Arc<Metrics>,
    head: (u64, Digest),
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
        policy: Arc<dyn PolicyDigest>,
        metrics: Arc<Metrics>,
    ) -> Result<WriterTask, StoreError> {
        let head = store.audit_head()?.unwrap_or((0, GENESIS));
        Ok(WriterTask { store, me, policy, metrics, head })
    }

    /// Start the task; it ends when every handle is dropped or `cancel` fires, after
    /// finishing the ops already queued.
    pub fn spawn(self, cancel: CancellationToken) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let handle = tokio::spawn(self.run(rx, cancel));
        (Writer { tx }, handle)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Op>, cancel: CancellationToken) {
        let span = tracing::info_span!("writer", member = %self.me);
        let _guard = span.enter();
        loop {
            let first = tokio::select! {
                biased;
                op = rx.recv() => op,
                () = cancel.cancelled() => { rx.close(); rx.recv().await }
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
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::debug!("writer stopped");
    }

    fn append(&self, batch: &mut WriteBatch, head: &mut (u64, Digest), ev: AuditEvent, now: i64) {
        let seq = head.0 + 1;
        let entry = AuditEntry::build(seq, now, ev, self.policy.policy_digest(), head.1);
        let bytes = entry.to_bytes();
        let hash = Digest::of(&bytes);
        batch.put_audit(seq, &bytes, &hash);
        *head = (seq, hash);
    }

    async fn apply(&mut self, group: Vec<Op>) {
        let now = now_ms();
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let mut durable = false;
        let mut seen: HashSet<RecordId> = HashSet::new();
        let mut answers: Vec<(IngestReply, Result<Vec<Ingested>, StoreError>)> = Vec::new();
        let mut snapshots = Vec::new();
        let (mut new_records, mut dups, mut audits) = (0u64, 0u64, 0u64);

        for op in group {
            match op {
                Op::Ingest { records, reply } => {
                    durable = true;
                    let mut out = Vec::with_capacity(records.len());
                    let mut failed = None;
                    for salted in records {
                        let held = match self.store.has_record(&salted.id) {
                            Ok(h) => h || seen.contains(&salted.id),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        };
                        if held {
                            dups += 1;
                            out.push(Ingested { id: salted.id, new: false });
                            continue;
                        }
                        let id = salted.id;
                        let category = salted.record.header.category.clone();
                        let stored = StoredRecord {
                            id,
                            header: salted.record.header,
                            body: salted.record.body,
                            withheld: 0,
                            source: Source::Local,
                            stored_ms: now,
                            salts: salted.salts,
                        };
                        if let Err(e) = batch.put_record(&stored) {
                            failed = Some(e);
                            break;
                        }
                        let ev = AuditEvent::new(Action::Ingested, Outcome::Ok).record(id, category);
                        self.append(&mut batch, &mut head, ev, now);
                        audits += 1;
                        seen.insert(id);
                        new_records += 1;
                        out.push(Ingested { id, new: true });
                    }
                    answers.push((reply, failed.map_or(Ok(out), Err)));
                }
                Op::Audit(ev) => {
                    self.append(&mut batch, &mut head, ev, now);
                    audits += 1;
                }
                Op::Snapshot { reply } => snapshots.push(reply),
            }
        }

        let committed = if batch.is_empty() {
            Ok(())
        } else {
            match self.store.commit(batch) {
                Ok(()) if durable => self.store.flush().await,
                other => other,
            }
        };
        match committed {
            Ok(()) => {
                self.head = head;
                self.metrics.records_ingested.add(new_records);
                self.metrics.records_duplicate.add(dups);
                self.metrics.audit_entries.add(audits);
                self.metrics.write_groups.add(1);
                for (reply, result) in answers {
                    let _ = reply.send(result.map_err(WriteError::from));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write group failed; nothing acknowledged");
                // The batch was not applied (apply_batch is atomic) or not made durable;
                // re-read the head so the chain continues from what is really stored.
                self.head = self.store.audit_head().ok().flatten().unwrap_or(self.head);
                for (reply, _) in answers {
                    let _ = reply.send(Err(WriteError::Store(StoreError::Engine(e.to_string()))));
                }
            }
        }
        for reply in snapshots {
            let snap: Result<Snapshot, StoreError> = self.store.dump().collect();
            let _ = reply.send(snap.map_err(WriteError::from));
        }
    }
}

//! The messages peers exchange over the project's request-response protocols:
//! hello (agreement terms, roster digest, audit checkpoint), push (projections answered
//! by signed receipts), and anti-entropy (stream summaries, then pulls of missing ranges).
//!
//! Every message has a `check` that enforces the count limits of [`crate::limits`]; the
//! codec calls it after decoding, so a decoded message is always within bounds.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::Canonical;
use crate::disclosure::{Projection, Receipt, Sig, VerifyError};
use crate::limits;
use crate::types::{AgreementId, Digest, MemberCode};

/// A message exceeds a count limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} has {got} items, more than the limit of {limit}")]
pub struct LimitError {
    /// What was too long.
    pub what: &'static str,
    /// How many it had.
    pub got: usize,
    /// The limit.
    pub limit: usize,
}

fn bound(what: &'static str, got: usize, limit: usize) -> Result<(), LimitError> {
    if got > limit {
        Err(LimitError { what, got, limit })
    } else {
        Ok(())
    }
}

/// A stream of projections: one origin's records under one agreement, numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    /// The member that created the records.
    pub origin: MemberCode,
    /// The agreement they are shared under.
    pub agreement: AgreementId,
}

/// A signed statement of the head of a node's audit log at some sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The member whose log this is.
    pub member: MemberCode,
    /// Sequence number of the last entry covered.
    pub seq: u64,
    /// Hash of that entry (the chain head).
    pub head: Digest,
    /// When it was signed, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The member's signature.
    pub signature: Sig,
}

impl Checkpoint {
    fn message(member: MemberCode, seq: u64, head: &Digest, time_ms: i64) -> Vec<u8> {
        let mut c = Canonical::new();
        c.str("tamga.checkpoint.v1").str(member.as_str()).u64(seq).raw32(head).i64(time_ms);
        c.as_bytes().to_vec()
    }

    /// Sign a checkpoint of this node's audit log.
    pub fn sign(member: MemberCode, seq: u64, head: Digest, time_ms: i64, key: &SigningKey) -> Checkpoint {
        let sig = key.sign(&Self::message(member, seq, &head, time_ms));
        Checkpoint { member, seq, head, time_ms, signature: Sig(sig.to_bytes()) }
    }

    /// Verify the member's signature.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify_strict(&Self::message(self.member, self.seq, &self.head, self.time_ms), &sig)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// Sent by both sides when two members connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's member code.
    pub member: MemberCode,
    /// Digest of the sender's roster file.
    pub roster_digest: Digest,
    /// The terms of each agreement the sender holds: a digest of its text and of the
    /// catalog's definition of each category it covers.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub agreements: Vec<(AgreementId, Digest)>,
    /// The sender's latest audit checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

impl Hello {
    fn check(&self) -> Result<(), LimitError> {
        bound("hello.agreements", self.agreements.len(), limits::MAX_AGREEMENTS)
    }
}

/// A batch of projections pushed to one audience member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The projections, in stream order per stream.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub projections: Vec<Projection>,
}

impl Push {
    fn check(&self) -> Result<(), LimitError> {
        bound("push.projections", self.projections.len(), limits::MAX_BATCH)
    }
}

/// Why a receiver refused one projection of a push (the receiver audits the details).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Index of the projection in the push.
    pub index: u32,
    /// A short reason.
    pub reason: String,
}

/// The answer to a push: a signed receipt for each projection stored, a refusal for each not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReply {
    /// Receipts for stored (or already held) projections.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub receipts: Vec<Receipt>,
    /// Refused projections.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub refused: Vec<Refusal>,
}

impl PushReply {
    fn check(&self) -> Result<(), LimitError> {
        bound("push_reply.receipts", self.receipts.len(), limits::MAX_RECEIPTS)?;
        bound("push_reply.refused", self.refused.len(), limits::MAX_RECEIPTS)?;
        let longest = self.receipts.iter().map(|r| r.path.len()).max().unwrap_or(0);
        bound("receipt.path", longest, limits::MAX_RECEIPT_PATH)?;
        if let Some(r) = self.refused.iter().find(|r| r.reason.len() > limits::MAX_REASON_LEN) {
            return Err(LimitError {
                what: "refusal.reason",
                got: r.reason.len(),
                limit: limits::MAX_REASON_LEN,
            });
        }
        Ok(())
    }
}

/// What a node holds of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream.
    pub stream: StreamKey,
    /// Every sequence number from 1 to this one is held or known withheld.
    pub contiguous: u64,
    /// Sequence numbers above `contiguous` that are also held, sorted.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub above: Vec<u64>,
}

/// A summary of the streams a node holds, sent on connect and periodically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// One entry per stream.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub streams: Vec<StreamSummary>,
}

impl Summary {
    fn check(&self) -> Result<(), LimitError> {
        bound("summary.streams", self.streams.len(), limits::MAX_STREAMS)?;
        for s in &self.streams {
            bound("summary.above", s.above.len(), limits::MAX_ABOVE)?;
        }
        Ok(())
    }
}

/// An inclusive range of sequence numbers in one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// The stream.
    pub stream: StreamKey,
    /// First sequence number.
    pub from: u64,
    /// Last sequence number (inclusive).
    pub to: u64,
}

/// A request for the projections in some ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// The ranges wanted.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub ranges: Vec<SeqRange>,
}

impl Pull {
    fn check(&self) -> Result<(), LimitError> {
        bound("pull.ranges", self.ranges.len(), limits::MAX_RANGES)
    }
}

/// The answer to a pull: the projections the asker may hold, and the ranges of sequence
/// numbers that are withheld from it (so that its gaps close).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReply {
    /// Projections the asker is in the audience of.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub projections: Vec<Projection>,
    /// Sequence numbers that exist but are not for the asker.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub withheld: Vec<SeqRange>,
}

impl PullReply {
    fn check(&self) -> Result<(), LimitError> {
        bound("pull_reply.projections", self.projections.len(), limits::MAX_BATCH)?;
        bound("pull_reply.withheld", self.withheld.len(), limits::MAX_RANGES)
    }
}

/// What acting on a shared record found (risk-management feedback to its origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackOutcome {
    /// Goods were seized.
    Seized,
    /// A check found nothing.
    NoFinding,
    /// The alert or profile was wrong.
    FalsePositive,
}

impl FeedbackOutcome {
    /// The name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackOutcome::Seized => "seized",
            FeedbackOutcome::NoFinding => "no_finding",
            FeedbackOutcome::FalsePositive => "false_positive",
        }
    }

    fn tag(self) -> u8 {
        match self {
            FeedbackOutcome::Seized => 0,
            FeedbackOutcome::NoFinding => 1,
            FeedbackOutcome::FalsePositive => 2,
        }
    }
}

impl std::str::FromStr for FeedbackOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [FeedbackOutcome::Seized, FeedbackOutcome::NoFinding, FeedbackOutcome::FalsePositive]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of seized, no_finding, false_positive"))
    }
}

/// A receiver's signed answer to a shared record, for its origin only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The record.
    pub record: Digest,
    /// The agreement it was shared under.
    pub agreement: AgreementId,
    /// The record's origin (the only member that receives this).
    pub origin: MemberCode,
    /// The member that acted on it and signs this.
    pub from: MemberCode,
    /// What was found.
    pub outcome: FeedbackOutcome,
    /// Free text, at most [`limits::MAX_REASON_LEN`] bytes.
    pub note: String,
    /// When, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The signature of `from`.
    pub signature: Sig,
}

impl Feedback {
    #[allow(clippy::too_many_arguments)]
    fn message(
        record: &Digest,
        agreement: &AgreementId,
        origin: MemberCode,
        from: MemberCode,
        outcome: FeedbackOutcome,
        note: &str,
        time_ms: i64,
    ) -> Vec<u8> {
        let mut c = Canonical::new();
        c.str("tamga.feedback.v1")
            .raw32(record)
            .str(agreement.as_str())
            .str(origin.as_str())
            .str(from.as_str())
            .u8(outcome.tag())
            .str(note)
            .i64(time_ms);
        c.as_bytes().to_vec()
    }

    /// Sign feedback on a record.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        record: Digest,
        agreement: AgreementId,
        origin: MemberCode,
        from: MemberCode,
        outcome: FeedbackOutcome,
        note: String,
        time_ms: i64,
        key: &SigningKey,
    ) -> Feedback {
        let m = Self::message(&record, &agreement, origin, from, outcome, &note, time_ms);
        let signature = Sig(key.sign(&m).to_bytes());
        Feedback { record, agreement, origin, from, outcome, note, time_ms, signature }
    }

    /// Verify the signature of `from`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let m = Self::message(
            &self.record,
            &self.agreement,
            self.origin,
            self.from,
            self.outcome,
            &self.note,
            self.time_ms,
        );
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify_strict(&m, &sig).map_err(|_| VerifyError::BadSignature)
    }

    fn check(&self) -> Result<(), LimitError> {
        bound("feedback.note", self.note.len(), limits::MAX_REASON_LEN)
    }
}

/// A request from one peer to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Exchange agreement digests and checkpoints.
    Hello(Hello),
    /// Deliver projections.
    Push(Push),
    /// Compare stream holdings.
    Summary(Summary),
    /// Ask for missing ranges.
    Pull(Pull),
    /// Feedback on one of the receiver's own records.
    Feedback(Feedback),
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The other side's hello.
    Hello(Hello),
    /// Receipts and refusals for a push.
    Push(PushReply),
    /// The other side's summary.
    Summary(Summary),
    /// Projections for a pull.
    Pull(PullReply),
    /// Feedback stored by the origin.
    FeedbackStored,
    /// The request was refused as a whole (rate limit, digest mismatch, malformed).
    Error(String),
}

impl Request {
    /// The message's name, used for metric labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Push(_) => "push",
            Request::Summary(_) => "summary",
            Request::Pull(_) => "pull",
            Request::Feedback(_) => "feedback",
        }
    }

    pub(crate) fn check(&self) -> Result<(), LimitError> {
        match self {
            Request::Hello(m) => m.check(),
            Request::Push(m) => m.check(),
            Request::Summary(m) => m.check(),
            Request::Pull(m) => m.check(),
            Request::Feedback(m) => m.check(),
        }
    }
}

impl Response {
    /// The message's name, used for metric labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello(_) => "hello_reply",
            Response::Push(_) => "push_reply",
            Response::Summary(_) => "summary_reply",
            Response::Pull(_) => "pull_reply",
            Response::FeedbackStored => "feedback_stored",
            Response::Error(_) => "error",
        }
    }

    pub(crate) fn check(&self) -> Result<(), LimitError> {
        match self {
            Response::Hello(m) => m.check(),
            Response::Push(m) => m.check(),
            Response::Summary(m) => m.check(),
            Response::Pull(m) => m.check(),
            Response::FeedbackStored => Ok(()),
            Response::Error(s) => bound("error", s.len(), limits::MAX_REASON_LEN),
        }
    }
}

//! Every size limit of the protocol, in one place. A peer that exceeds one is refused
//! before anything it sent is allocated or stored.

/// Longest category, agreement or field identifier, in bytes.
pub const MAX_IDENTIFIER_LEN: usize = 64;
/// Most body fields a record may have.
pub const MAX_FIELDS: usize = 64;
/// Most text bytes one field value may hold.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most members in a projection's audience (the federation is small; ten members today).
pub const MAX_AUDIENCE: usize = 64;
/// Most projections in one push or pull reply.
pub const MAX_BATCH: usize = 512;
/// Most receipts or refusals in one push reply.
pub const MAX_RECEIPTS: usize = MAX_BATCH;
/// Longest inclusion path of a receipt (a tree over [`MAX_RECEIPTS`] leaves is 9 deep).
pub const MAX_RECEIPT_PATH: usize = 16;
/// Most streams in one summary.
pub const MAX_STREAMS: usize = 4096;
/// Most sequence numbers listed above a stream's contiguous high-water mark in a summary.
pub const MAX_ABOVE: usize = 1024;
/// Most ranges in one pull.
pub const MAX_RANGES: usize = 1024;
/// Most agreements announced in a hello.
pub const MAX_AGREEMENTS: usize = 256;
/// Longest free-text reason in a refusal or error, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// Frame size limits per message kind (payload bytes, header excluded).
pub mod frame {
    /// Hello and its reply.
    pub const HELLO: usize = 64 * 1024;
    /// A push of up to [`super::MAX_BATCH`] projections.
    pub const PUSH: usize = 8 * 1024 * 1024;
    /// The receipts answering a push.
    pub const PUSH_REPLY: usize = 256 * 1024;
    /// A stream summary.
    pub const SUMMARY: usize = 1024 * 1024;
    /// A pull request.
    pub const PULL: usize = 128 * 1024;
    /// A pull reply of up to [`super::MAX_BATCH`] projections.
    pub const PULL_REPLY: usize = 8 * 1024 * 1024;
    /// Feedback on a record.
    pub const FEEDBACK: usize = 4 * 1024;
    /// An error reply.
    pub const ERROR: usize = 4 * 1024;
    /// The largest of the above: no frame of any kind is ever longer.
    pub const MAX: usize = 8 * 1024 * 1024;
}

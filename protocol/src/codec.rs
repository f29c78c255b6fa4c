//! The one wire codec: a 10-byte frame header around a bincode 2 payload.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  "TMGA"
//! 4       1     version (1)
//! 5       1     kind: 0x01 hello, 0x02 push, 0x03 summary, 0x04 pull, 0x05 feedback
//!                     (requests); 0x81 hello reply, 0x82 push reply, 0x83 summary reply,
//!                     0x84 pull reply, 0x85 feedback stored, 0xff error (responses)
//! 6       4     payload length, u32 big-endian
//! 10      n     payload: bincode 2 (standard configuration, varint integers) of the
//!               message struct named by the kind
//! ```
//!
//! Decoding never trusts a length it has not bounded: the header's payload length is
//! checked against the kind's limit ([`crate::limits::frame`]) before a byte of payload
//! is read, bincode runs with that same limit (so no claimed length makes it allocate more
//! for strings and bytes), the elements of every list are charged to a memory budget of
//! the kind's (`list_budget`) before they are allocated, the payload must be consumed
//! exactly (no trailing bytes), and the decoded message's item counts are checked against
//! [`crate::limits`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::disclosure::{Projection, RevealedField};
use crate::limits::frame;
use crate::messages::{
    Feedback, Hello, LimitError, Pull, PullReply, Push, PushReply, Request, Response, Summary,
};
use crate::types::{Digest, MemberCode, Value};

/// The four magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"TMGA";
/// The codec version this build speaks.
pub const VERSION: u8 = 1;
/// Length of the frame header.
pub const HEADER_LEN: usize = 10;

/// Why bytes could not be decoded. Every variant means: drop the message, nothing applied.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header or the length it announces.
    #[error("truncated frame: {got} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// The frame does not start with `TMGA`.
    #[error("bad magic bytes")]
    Magic,
    /// A codec version this build does not speak.
    #[error("unsupported codec version {0}")]
    Version(u8),
    /// A kind byte that names no message (or a response where a request was expected).
    #[error("unknown message kind 0x{0:02x}")]
    Kind(u8),
    /// The announced payload is longer than the kind allows.
    #[error("payload of {len} bytes exceeds the {limit}-byte limit for this kind")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The kind's limit.
        limit: usize,
    },
    /// Bytes left after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// The payload is not a valid message.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The message decoded but exceeds a count limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Encoding failed (a message over its kind's limit on the sending side).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The kind byte.
    pub kind: u8,
    /// The payload length, already checked against the kind's limit.
    pub len: usize,
}

mod kind {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const PUSH: u8 = 0x02;
    pub(super) const SUMMARY: u8 = 0x03;
    pub(super) const PULL: u8 = 0x04;
    pub(super) const FEEDBACK: u8 = 0x05;
    pub(super) const FEEDBACK_STORED: u8 = 0x85;
    pub(super) const HELLO_REPLY: u8 = 0x81;
    pub(super) const PUSH_REPLY: u8 = 0x82;
    pub(super) const SUMMARY_REPLY: u8 = 0x83;
    pub(super) const PULL_REPLY: u8 = 0x84;
    pub(super) const ERROR: u8 = 0xff;
}

fn limit_of(k: u8) -> Option<usize> {
    Some(match k {
        kind::HELLO | kind::HELLO_REPLY => frame::HELLO,
        kind::PUSH => frame::PUSH,
        kind::PUSH_REPLY => frame::PUSH_REPLY,
        kind::SUMMARY | kind::SUMMARY_REPLY => frame::SUMMARY,
        kind::PULL => frame::PULL,
        kind::PULL_REPLY => frame::PULL_REPLY,
        kind::ERROR => frame::ERROR,
        kind::FEEDBACK => frame::FEEDBACK,
        kind::FEEDBACK_STORED => frame::ERROR,
        _ => return None,
    })
}

/// Parse and bound a frame header. Call before reading the payload from a stream.
pub fn parse_header(h: &[u8]) -> Result<FrameHeader, CodecError> {
    let h: &[u8; HEADER_LEN] = h
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(CodecError::Truncated { got: h.len(), expected: HEADER_LEN })?;
    if h[..4] != MAGIC {
        return Err(CodecError::Magic);
    }
    if h[4] != VERSION {
        return Err(CodecError::Version(h[4]));
    }
    let kind = h[5];
    let limit = limit_of(kind).ok_or(CodecError::Kind(kind))?;
    let len = u32::from_be_bytes([h[6], h[7], h[8], h[9]]) as usize;
    if len > limit {
        return Err(CodecError::Oversized { len, limit });
    }
    Ok(FrameHeader { kind, len })
}

/// Whether a kind byte is a request (as opposed to a response).
pub fn is_request_kind(kind: u8) -> bool {
    kind & 0x80 == 0
}

fn config<const N: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<N>()
}

fn encode_frame<T: Serialize>(kind: u8, msg: &T) -> Result<Vec<u8>, CodecError> {
    let limit = limit_of(kind).ok_or(CodecError::Kind(kind))?;
    let payload = bincode::serde::encode_to_vec(msg, config::<{ frame::MAX }>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if payload.len() > limit {
        return Err(CodecError::Encode(format!(
            "{} bytes exceed the {limit}-byte limit of kind 0x{kind:02x}",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    // payload.len() <= limit <= frame::MAX < u32::MAX
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn decode_payload<T: DeserializeOwned, const N: usize>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::serde::decode_from_slice::<T, _>(payload, config::<N>())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(msg)
}

/// Split a whole frame into its header and exactly its payload.
fn split(frame_bytes: &[u8]) -> Result<(FrameHeader, &[u8]), CodecError> {
    let h = parse_header(frame_bytes)?;
    let rest = &frame_bytes[HEADER_LEN..];
    if rest.len() < h.len {
        return Err(CodecError::Truncated { got: frame_bytes.len(), expected: HEADER_LEN + h.len });
    }
    if rest.len() > h.len {
        return Err(CodecError::Trailing(rest.len() - h.len));
    }
    Ok((h, rest))
}

/// Encode a request as one frame.
pub fn encode_request(r: &Request) -> Result<Vec<u8>, CodecError> {
    match r {
        Request::Hello(m) => encode_frame(kind::HELLO, m),
        Request::Push(m) => encode_frame(kind::PUSH, m),
        Request::Summary(m) => encode_frame(kind::SUMMARY, m),
        Request::Pull(m) => encode_frame(kind::PULL, m),
        Request::Feedback(m) => encode_frame(kind::FEEDBACK, m),
    }
}

/// Encode a response as one frame.
pub fn encode_response(r: &Response) -> Result<Vec<u8>, CodecError> {
    match r {
        Response::Hello(m) => encode_frame(kind::HELLO_REPLY, m),
        Response::Push(m) => encode_frame(kind::PUSH_REPLY, m),
        Response::Summary(m) => encode_frame(kind::SUMMARY_REPLY, m),
        Response::Pull(m) => encode_frame(kind::PULL_REPLY, m),
        Response::Error(m) => encode_frame(kind::ERROR, m),
        Response::FeedbackStored => encode_frame(kind::FEEDBACK_STORED, &()),
    }
}

/// The memory a decode of a frame of kind `k` may take for the elements of its lists
/// (see `crate::bounded`), besides that of its strings, which bincode's limit bounds:
/// twice the kind's frame limit for the kinds that carry projections, whose senders keep
/// the [`frame_share`]s of a batch within the frame limit; sixteen times for the others,
/// more than any of their lists takes per byte on the wire (a summary's stream, at most
/// about 64 bytes in memory for at least 5 on the wire, takes the most).
fn list_budget(k: u8) -> usize {
    let limit = limit_of(k).unwrap_or(0);
    match k {
        kind::PUSH | kind::PULL_REPLY => 2 * limit,
        _ => 16 * limit,
    }
}

/// The memory the decoding of `p` in a push or a pull reply charges for its lists: the
/// projection itself (an element of the message's list) and each element of its own.
fn list_bytes(p: &Projection) -> usize {
    use std::mem::size_of;
    let texts: usize = p
        .revealed
        .iter()
        .map(|f| match &f.value {
            Value::TextList(l) => l.len() * size_of::<String>(),
            _ => 0,
        })
        .sum();
    size_of::<Projection>()
        + p.revealed.len() * size_of::<RevealedField>()
        + texts
        + p.withheld.len() * size_of::<Digest>()
        + p.envelope.audience.len() * size_of::<MemberCode>()
}

/// What `p` takes of a push's or a pull reply's frame limit: the larger of its bytes on
/// the wire and the memory its decoding charges for its lists. A batch whose shares sum
/// within the limit is one every receiver decodes.
pub fn frame_share(p: &Projection) -> Result<usize, CodecError> {
    Ok(payload_len(p)?.max(list_bytes(p)))
}

/// Decode one whole request frame.
pub fn decode_request(frame_bytes: &[u8]) -> Result<Request, CodecError> {
    let (h, p) = split(frame_bytes)?;
    crate::bounded::within(list_budget(h.kind), || decode_request_payload(h, p))
}

fn decode_request_payload(h: FrameHeader, p: &[u8]) -> Result<Request, CodecError> {
    let r = match h.kind {
        kind::HELLO => Request::Hello(decode_payload::<Hello, { frame::HELLO }>(p)?),
        kind::PUSH => Request::Push(decode_payload::<Push, { frame::PUSH }>(p)?),
        kind::SUMMARY => Request::Summary(decode_payload::<Summary, { frame::SUMMARY }>(p)?),
        kind::PULL => Request::Pull(decode_payload::<Pull, { frame::PULL }>(p)?),
        kind::FEEDBACK => Request::Feedback(decode_payload::<Feedback, { frame::FEEDBACK }>(p)?),
        other => return Err(CodecError::Kind(other)),
    };
    r.check()?;
    Ok(r)
}

/// Decode one whole response frame.
pub fn decode_response(frame_bytes: &[u8]) -> Result<Response, CodecError> {
    let (h, p) = split(frame_bytes)?;
    crate::bounded::within(list_budget(h.kind), || decode_response_payload(h, p))
}

fn decode_response_payload(h: FrameHeader, p: &[u8]) -> Result<Response, CodecError> {
    let r = match h.kind {
        kind::HELLO_REPLY => Response::Hello(decode_payload::<Hello, { frame::HELLO }>(p)?),
        kind::PUSH_REPLY => Response::Push(decode_payload::<PushReply, { frame::PUSH_REPLY }>(p)?),
        kind::SUMMARY_REPLY => Response::Summary(decode_payload::<Summary, { frame::SUMMARY }>(p)?),
        kind::PULL_REPLY => Response::Pull(decode_payload::<PullReply, { frame::PULL_REPLY }>(p)?),
        kind::ERROR => Response::Error(decode_payload::<String, { frame::ERROR }>(p)?),
        kind::FEEDBACK_STORED => {
            decode_payload::<(), { frame::ERROR }>(p)?;
            Response::FeedbackStored
        }
        other => return Err(CodecError::Kind(other)),
    };
    r.check()?;
    Ok(r)
}

/// The bytes `v` takes in a frame's payload, counted without encoding it into memory:
/// what a sender sums to keep the projections of one push or pull reply within its frame.
pub fn payload_len<T: Serialize>(v: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(v, &mut size, config::<{ frame::MAX }>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Encode any value for local storage with the same bincode configuration (used by the
/// node's store so that the on-disk encoding is also defined here).
pub fn encode_stored<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(v, config::<{ frame::MAX }>())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode a value stored with [`encode_stored`], with the frame limit and no trailing bytes.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_payload::<T, { frame::MAX }>(bytes)
}

//! The `/tamga/sync/1` codec for libp2p's request-response machinery.
//!
//! This is the only place where bytes of the sync protocol are read from or written to a
//! libp2p stream, and it owns no format of its own: framing and decoding are
//! `tamga_protocol::codec`'s. One request and one response travel per stream, each as one
//! frame. Reading never trusts a length it has not bounded: the 10-byte header is read
//! and passed to [`parse_header`] (which bounds the payload length by the message kind)
//! *before* any payload byte is read, and the payload buffer grows with the bytes that
//! actually arrive, so a claimed length alone allocates nothing.
//!
//! Codec-level rejections (bad magic, unknown kind, oversized, truncated, malformed,
//! over a count limit) are not I/O errors: they come back as [`Frame::Rejected`] so that
//! the net task sees them (libp2p drops inbound read errors silently) and can report a
//! roster peer's bad bytes for the audit log. Only transport failures are `io::Error`s.

use std::{fmt, io};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use tamga_protocol::codec::{
    decode_request, decode_response, encode_request, encode_response, parse_header, CodecError, HEADER_LEN,
};
use tamga_protocol::{Request, Response};

/// How much payload buffer is reserved up front, whatever the header claims; the rest
/// grows as bytes arrive.
const INITIAL_PAYLOAD_RESERVE: usize = 16 * 1024;

/// One message as it crosses the codec.
pub(crate) enum Frame<T> {
    /// Bytes already encoded by `tamga_protocol::codec` (what the sending side passes in:
    /// encoding happens in the caller's task, so an oversized message fails there, before
    /// a stream is opened).
    Encoded(Vec<u8>),
    /// A message decoded from a peer's bytes.
    Decoded(T),
    /// A peer's bytes that are not a valid message. Nothing was applied.
    Rejected(CodecError),
}

impl<T> fmt::Debug for Frame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Encoded(b) => write!(f, "Frame::Encoded({} bytes)", b.len()),
            Frame::Decoded(_) => f.write_str("Frame::Decoded"),
            Frame::Rejected(e) => write!(f, "Frame::Rejected({e})"),
        }
    }
}

/// The request-response codec of `/tamga/sync/1`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncCodec;

/// Read one frame: header first, bounded by kind, then exactly the announced payload.
async fn read_frame<T, R>(io: &mut R, decode: fn(&[u8]) -> Result<T, CodecError>) -> io::Result<Frame<T>>
where
    R: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while let Some(rest) = header.get_mut(got..).filter(|r| !r.is_empty()) {
        let n = io.read(rest).await?;
        if n == 0 && got == 0 {
            // A stream closed before its first byte: the requester gave up (a timeout, a
            // link that went away), not bad input. Dropped without a report.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream closed before a frame"));
        }
        if n == 0 {
            return Ok(Frame::Rejected(CodecError::Truncated { got, expected: HEADER_LEN }));
        }
        got += n;
    }
    let h = match parse_header(&header) {
        Ok(h) => h,
        Err(e) => return Ok(Frame::Rejected(e)),
    };
    let expected = HEADER_LEN + h.len;
    let mut buf = Vec::with_capacity(HEADER_LEN + h.len.min(INITIAL_PAYLOAD_RESERVE));
    buf.extend_from_slice(&header);
    // `h.len` is bounded by the kind's limit (at most 8 MiB), so it fits in u64.
    (&mut *io).take(h.len as u64).read_to_end(&mut buf).await?;
    if buf.len() < expected {
        return Ok(Frame::Rejected(CodecError::Truncated { got: buf.len(), expected }));
    }
    Ok(match decode(&buf) {
        Ok(m) => Frame::Decoded(m),
        Err(e) => Frame::Rejected(e),
    })
}

async fn write_frame<T, W>(
    io: &mut W,
    frame: Frame<T>,
    encode: fn(&T) -> Result<Vec<u8>, CodecError>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    let bytes = match frame {
        Frame::Encoded(b) => b,
        Frame::Decoded(m) => encode(&m).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        Frame::Rejected(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to send a rejected frame: {e}"),
            ))
        }
    };
    io.write_all(&bytes).await?;
    io.flush().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Frame<Request>;
    type Response = Frame<Response>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, decode_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, decode_response).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Self::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req, encode_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Self::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res, encode_response).await
    }
}

/// [`read_frame`] for requests, for the codec's own tests.
#[cfg(test)]
pub(super) async fn read_frame_for_tests<R>(io: &mut R) -> io::Result<Frame<Request>>
where
    R: AsyncRead + Unpin + Send,
{
    read_frame(io, decode_request).await
}

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
//!
//! A request must arrive whole within the codec's read deadline (`PeerLimits::stream_read`)
//! once its stream is open; a stream left half-open longer comes back as
//! [`Frame::Stalled`], so that it frees its slot and is reported like bad bytes. Responses
//! have no such deadline here: the request timeout of the whole exchange bounds them.
//! Every frame read carries the number of bytes it took off the wire, which the net task
//! charges to the sender's byte budget.
//!
//! The requests being read at once, from every peer together, hold at most
//! `PeerLimits::read_buffer` bytes of buffer ([`ReadBudget`]), and those of one peer at
//! most `PeerLimits::read_buffer_per_peer`: each takes its share before it grows, and a
//! request that finds none left comes back as [`Frame::Busy`] without the rest of it
//! being read. A peer's requests are charged to its rate budget only once read whole, so
//! without this bound one member could have its every open stream (libp2p's 64 per
//! connection) hold an 8 MiB request half-read, and without the bound per peer one
//! member could hold the whole buffer and have every other member's requests answered
//! busy.
//!
//! Which peer a request comes from is not something libp2p's codec is told: each
//! connection's handler reads with a clone of the behaviour's codec, made as the
//! connection is established. [`ConnectionPeer`], the behaviour just before the sync
//! protocol's, notes the connection's peer at that moment, and the clone takes it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::{fmt, io};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{request_response, Multiaddr, PeerId, StreamProtocol};
use tamga_protocol::codec::{
    decode_request, decode_response, encode_request, encode_response, parse_header, CodecError, HEADER_LEN,
};
use tamga_protocol::{Request, Response};

/// How much payload buffer is reserved up front, whatever the header claims; the rest
/// grows as bytes arrive, at most this much per read.
const INITIAL_PAYLOAD_RESERVE: usize = 16 * 1024;

/// One message as it crosses the codec.
pub(crate) enum Frame<T> {
    /// Bytes already encoded by `tamga_protocol::codec` (what the sending side passes in:
    /// encoding happens in the caller's task, so an oversized message fails there, before
    /// a stream is opened).
    Encoded(Vec<u8>),
    /// A message decoded from a peer's bytes, and how many bytes it took on the wire.
    Decoded(T, usize),
    /// A peer's bytes that are not a valid message, and how many were read. Nothing was
    /// applied.
    Rejected(CodecError, usize),
    /// A request stream that did not deliver its whole frame within the read deadline,
    /// and how many bytes it had sent. Nothing was applied.
    Stalled(usize),
    /// A request left unread because the requests being read already hold the whole
    /// [`ReadBudget`], and how many of its bytes were read. Nothing was applied.
    Busy(usize),
    /// A stream closed before its first byte.
    Empty,
}

impl<T> Frame<T> {
    /// Bytes this frame took off the wire (0 for a frame to send).
    pub(crate) fn wire_len(&self) -> usize {
        match self {
            Frame::Encoded(_) | Frame::Empty => 0,
            Frame::Decoded(_, n) | Frame::Rejected(_, n) | Frame::Stalled(n) | Frame::Busy(n) => *n,
        }
    }
}

impl<T> fmt::Debug for Frame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Encoded(b) => write!(f, "Frame::Encoded({} bytes)", b.len()),
            Frame::Decoded(_, n) => write!(f, "Frame::Decoded({n} bytes)"),
            Frame::Rejected(e, n) => write!(f, "Frame::Rejected({e}, {n} bytes)"),
            Frame::Stalled(n) => write!(f, "Frame::Stalled({n} bytes)"),
            Frame::Busy(n) => write!(f, "Frame::Busy({n} bytes)"),
            Frame::Empty => write!(f, "Frame::Empty"),
        }
    }
}

/// The request-response codec of `/tamga/sync/1`.
#[derive(Debug)]
pub(crate) struct SyncCodec {
    /// How long a request's bytes may take to arrive once its stream is open.
    pub(crate) request_deadline: std::time::Duration,
    /// The buffer all requests being read share (every clone of the codec, so every
    /// connection, holds the same one).
    pub(crate) read_budget: Arc<ReadBudget>,
    /// The peer of the connection this clone reads for (`None` in the behaviour's own).
    pub(crate) peer: Option<PeerId>,
    /// The peer of the connection being established, noted by [`ConnectionPeer`].
    pub(crate) next_peer: Arc<Mutex<Option<PeerId>>>,
}

impl Clone for SyncCodec {
    /// A connection's codec is a clone of the behaviour's, made as it is established: it
    /// reads for the peer [`ConnectionPeer`] noted then. A stream's is a clone of its
    /// connection's, and reads for the same peer.
    fn clone(&self) -> Self {
        let peer = self.peer.or_else(|| *self.next_peer.lock().unwrap_or_else(|p| p.into_inner()));
        SyncCodec {
            request_deadline: self.request_deadline,
            read_budget: self.read_budget.clone(),
            peer,
            next_peer: self.next_peer.clone(),
        }
    }
}

/// Notes the peer of each connection being established for the [`SyncCodec`] clone the
/// sync protocol's behaviour makes next, for that connection (see the module doc). It
/// must come just before that behaviour: the swarm asks each behaviour in turn.
#[derive(Debug)]
pub(crate) struct ConnectionPeer {
    next_peer: Arc<Mutex<Option<PeerId>>>,
}

impl ConnectionPeer {
    /// The note-taker for `codec`.
    pub(crate) fn of(codec: &SyncCodec) -> ConnectionPeer {
        ConnectionPeer { next_peer: codec.next_peer.clone() }
    }

    fn note(&self, peer: PeerId) {
        *self.next_peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
    }
}

impl NetworkBehaviour for ConnectionPeer {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.note(peer);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.note(peer);
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Bytes of buffer that the requests being read hold, in all and per peer, and their
/// bounds. Responses are not counted: each answers a request of ours, and ours are
/// bounded per peer.
#[derive(Debug)]
pub(crate) struct ReadBudget {
    /// Bytes held in all, and by each peer holding some.
    held: Mutex<(usize, HashMap<PeerId, usize>)>,
    limit: usize,
    per_peer: usize,
}

impl ReadBudget {
    pub(crate) fn new(limit: usize, per_peer: usize) -> Arc<ReadBudget> {
        Arc::new(ReadBudget { held: Mutex::default(), limit, per_peer })
    }

    fn held_now(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<PeerId, usize>)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held_now().0
    }
}

/// What one request being read holds of the [`ReadBudget`]; given back when dropped.
struct Share<'a> {
    budget: &'a ReadBudget,
    /// Whose request it is, if known.
    peer: Option<PeerId>,
    bytes: usize,
}

impl Share<'_> {
    /// Hold `total` bytes in all, if the budget has the difference left, in all and for
    /// the peer.
    fn grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        let mut held = self.budget.held_now();
        let (all, peers) = &mut *held;
        let peer = self.peer.map(|p| peers.entry(p).or_default());
        let fits = |held: usize, limit: usize| held.checked_add(more).is_some_and(|t| t <= limit);
        if !fits(*all, self.budget.limit) || peer.as_ref().is_some_and(|p| !fits(**p, self.budget.per_peer)) {
            return false;
        }
        *all += more;
        if let Some(p) = peer {
            *p += more;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut held = self.budget.held_now();
        let (all, peers) = &mut *held;
        *all -= self.bytes;
        if let Some(p) = self.peer {
            if peers.get_mut(&p).is_some_and(|h| {
                *h -= self.bytes;
                *h == 0
            }) {
                peers.remove(&p);
            }
        }
    }
}

/// Read one frame, within `deadline` if there is one (a frame not whole by then is
/// [`Frame::Stalled`]).
async fn read_frame<T, R>(
    io: &mut R,
    decode: fn(&[u8]) -> Result<T, CodecError>,
    deadline: Option<std::time::Duration>,
    budget: Option<(&ReadBudget, Option<PeerId>)>,
) -> io::Result<Frame<T>>
where
    R: AsyncRead + Unpin + Send,
{
    let mut got = 0;
    let Some(deadline) = deadline else {
        return read_frame_counted(io, decode, budget, &mut got).await;
    };
    match tokio::time::timeout(deadline, read_frame_counted(io, decode, budget, &mut got)).await {
        Ok(frame) => frame,
        Err(_) => Ok(Frame::Stalled(got)),
    }
}

/// Read one frame: header first, bounded by kind, then exactly the announced payload,
/// its buffer held within `budget` if there is one (and within its bound per peer, if
/// the peer is known); `got` counts the bytes read so far, so that a caller that gives
/// up still knows them.
async fn read_frame_counted<T, R>(
    io: &mut R,
    decode: fn(&[u8]) -> Result<T, CodecError>,
    budget: Option<(&ReadBudget, Option<PeerId>)>,
    got: &mut usize,
) -> io::Result<Frame<T>>
where
    R: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; HEADER_LEN];
    while let Some(rest) = header.get_mut(*got..).filter(|r| !r.is_empty()) {
        let n = io.read(rest).await?;
        if n == 0 && *got == 0 {
            // A stream closed before its first byte: the requester gave up (a timeout, a
            // link that went away), not bad input; or a peer opening streams for nothing.
            return Ok(Frame::Empty);
        }
        if n == 0 {
            return Ok(Frame::Rejected(CodecError::Truncated { got: *got, expected: HEADER_LEN }, *got));
        }
        *got += n;
    }
    let h = match parse_header(&header) {
        Ok(h) => h,
        Err(e) => return Ok(Frame::Rejected(e, *got)),
    };
    // `h.len` is bounded by the kind's limit (at most 8 MiB).
    let expected = HEADER_LEN + h.len;
    let mut share = budget.map(|(budget, peer)| Share { budget, peer, bytes: 0 });
    // The buffer's capacity, held of the budget before it is allocated: it doubles as
    // the bytes arrive (up to the frame's length), as a vector would grow by itself.
    let mut room = |capacity: usize| share.as_mut().is_none_or(|s| s.grow_to(capacity));
    let first = HEADER_LEN + h.len.min(INITIAL_PAYLOAD_RESERVE);
    if !room(first) {
        return Ok(Frame::Busy(*got));
    }
    let mut buf = Vec::with_capacity(first);
    buf.extend_from_slice(&header);
    while buf.len() < expected {
        let start = buf.len();
        let end = start + (expected - start).min(INITIAL_PAYLOAD_RESERVE);
        if end > buf.capacity() {
            let capacity = end.max(buf.capacity().saturating_mul(2)).min(expected);
            if !room(capacity) {
                return Ok(Frame::Busy(*got));
            }
            buf.reserve_exact(capacity - buf.len());
        }
        buf.resize(end, 0);
        let n = match buf.get_mut(start..) {
            Some(room) => io.read(room).await?,
            None => 0,
        };
        buf.truncate(start + n);
        if n == 0 {
            break;
        }
        *got += n;
    }
    if buf.len() < expected {
        return Ok(Frame::Rejected(CodecError::Truncated { got: buf.len(), expected }, *got));
    }
    Ok(match decode(&buf) {
        Ok(m) => Frame::Decoded(m, *got),
        Err(e) => Frame::Rejected(e, *got),
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
        Frame::Decoded(m, _) => encode(&m).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        Frame::Rejected(..) | Frame::Stalled(_) | Frame::Busy(_) | Frame::Empty => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to send {frame:?}")))
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
        read_frame(io, decode_request, Some(self.request_deadline), Some((&self.read_budget, self.peer)))
            .await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, decode_response, None, None).await
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
pub(super) async fn read_frame_for_tests<R>(
    io: &mut R,
    budget: Option<&ReadBudget>,
) -> io::Result<Frame<Request>>
where
    R: AsyncRead + Unpin + Send,
{
    read_frame(io, decode_request, None, budget.map(|b| (b, None))).await
}

//! A codec for the sync protocol that writes requests as raw bytes and reads responses as
//! they come, checking nothing: for clients that must speak the protocol badly on purpose
//! (the hostile-peer tests drive a libp2p swarm with it). The node never uses it.

use std::collections::HashMap;
use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::StreamProtocol;
use tokio::sync::oneshot;

/// Most response bytes read (a pull reply may be large).
pub const RAW_READ_MAX: u64 = 16 << 20;

/// Bytes to write on a new stream; `stall` leaves the stream open after them, never
/// finishing the request (a half-open stream, until the requester's own timeout).
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The bytes, sent as they are.
    pub bytes: Vec<u8>,
    /// Never finish the request.
    pub stall: bool,
}

/// Writes the request bytes as given; reads the response bytes as they come.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = RawRequest;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<RawRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.take(RAW_READ_MAX).read_to_end(&mut bytes).await?;
        Ok(RawRequest { bytes, stall: false })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(RAW_READ_MAX).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: RawRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req.bytes).await?;
        io.flush().await?;
        if req.stall {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.flush().await
    }
}

/// What a raw request came to: the response bytes, or why there were none.
pub type RawAnswer = Result<Vec<u8>, String>;

/// Requests sent and not yet answered, each with where its answer goes.
pub type Pending = HashMap<OutboundRequestId, oneshot::Sender<RawAnswer>>;

/// Hand a response, or an outbound failure, to the request it answers; other events are
/// ignored.
pub fn settle(pending: &mut Pending, ev: request_response::Event<RawRequest, Vec<u8>>) {
    let (id, answer) = match ev {
        request_response::Event::Message {
            message: request_response::Message::Response { request_id, response },
            ..
        } => (request_id, Ok(response)),
        request_response::Event::OutboundFailure { request_id, error, .. } => {
            (request_id, Err(error.to_string()))
        }
        _ => return,
    };
    if let Some(reply) = pending.remove(&id) {
        let _ = reply.send(answer);
    }
}

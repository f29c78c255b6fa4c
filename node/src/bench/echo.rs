//! Baseline: a bare libp2p request-response echo between two local peers, on the
//! product's transport (TCP with `TCP_NODELAY`, TLS 1.3, yamux) and with the product's
//! bound on outstanding requests per peer ([`crate::net::MAX_OUTBOUND_PER_PEER`]). No
//! roster, no codec of tamga's, no storage: length-prefixed bytes out, the same bytes
//! back. What a push of the same size could do at most over one link of this machine.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity::Keypair, tcp, tls, yamux, Multiaddr, StreamProtocol, Swarm, SwarmBuilder};

/// The echo protocol's name.
pub const ECHO_PROTOCOL: &str = "/tamga-bench/echo/1";
/// Largest echo message.
pub const MAX_ECHO_BYTES: usize = 16 * 1024 * 1024;
/// How long one echo measurement runs.
pub const ECHO_DURATION: Duration = Duration::from_millis(1500);
/// How long the two peers may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Length-prefixed bytes, both ways.
#[derive(Debug, Clone, Copy, Default)]
struct EchoCodec;

async fn read_msg<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_ECHO_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo message too large"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_msg<T: AsyncWrite + Unpin + Send>(io: &mut T, msg: Vec<u8>) -> io::Result<()> {
    let len =
        u32::try_from(msg.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&msg).await?;
    io.flush().await
}

impl request_response::Codec for EchoCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_msg(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_msg(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_msg(io, req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_msg(io, res).await
    }
}

type Echo = request_response::Behaviour<EchoCodec>;

fn swarm() -> Result<Swarm<Echo>> {
    Ok(SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), tls::Config::new, yamux::Config::default)
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_behaviour(|_| {
            Echo::with_codec(
                EchoCodec,
                [(StreamProtocol::new(ECHO_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(crate::net::REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(crate::net::MAX_CONCURRENT_STREAMS),
            )
        })
        .map_err(|e| anyhow::anyhow!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// What one echo run measured.
#[derive(Debug, Clone, Copy)]
pub struct EchoFigures {
    /// Round trips per second.
    pub messages_per_sec: f64,
    /// Payload megabytes (10^6) per second, one way.
    pub mb_per_sec: f64,
}

/// Echo messages of `payload` bytes for [`ECHO_DURATION`] with
/// [`crate::net::MAX_OUTBOUND_PER_PEER`] outstanding, between two swarms of this process.
pub async fn measure(payload: usize) -> Result<EchoFigures> {
    if payload > MAX_ECHO_BYTES {
        bail!("--payload {payload} is over the echo limit of {MAX_ECHO_BYTES} bytes");
    }
    let mut server = swarm()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let server_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut client = swarm()?;
    client.dial(addr)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), client.select_next_some())
            .await
            .context("the echo peers did not connect")?;
        if matches!(ev, SwarmEvent::ConnectionEstablished { .. }) {
            break;
        }
        if let SwarmEvent::OutgoingConnectionError { error, .. } = ev {
            server_task.abort();
            bail!("the echo peers did not connect: {error}");
        }
    }
    let body = vec![0x5au8; payload];
    let mut outstanding: std::collections::HashSet<OutboundRequestId> = Default::default();
    let mut done = 0u64;
    let start = Instant::now();
    let result = loop {
        while outstanding.len() < crate::net::MAX_OUTBOUND_PER_PEER {
            outstanding.insert(client.behaviour_mut().send_request(&server_id, body.clone()));
        }
        if start.elapsed() >= ECHO_DURATION {
            break Ok(start.elapsed());
        }
        match client.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }) => {
                if response.len() != payload {
                    break Err(anyhow::anyhow!(
                        "the echo came back with {} bytes, not {payload}",
                        response.len()
                    ));
                }
                outstanding.remove(&request_id);
                done += 1;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                break Err(anyhow::anyhow!("an echo request failed: {error}"));
            }
            _ => {}
        }
    };
    server_task.abort();
    let secs = result?.as_secs_f64();
    let messages_per_sec = done as f64 / secs;
    Ok(EchoFigures { messages_per_sec, mb_per_sec: messages_per_sec * payload as f64 / 1e6 })
}

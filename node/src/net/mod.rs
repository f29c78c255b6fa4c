//! Networking: one task owns the libp2p `Swarm`; everyone else holds a [`NetHandle`].
//!
//! # Who owns what
//!
//! - The **net task** (started by [`spawn`], span `net`) owns the `Swarm` (TCP with
//!   `TCP_NODELAY`, TLS 1.3 via `libp2p-tls`, yamux; and QUIC v1 beside it, see
//!   [Transports](#transports)), the allow-list, the dial schedule,
//!   the map of outbound requests awaiting a response, the per-peer queues of requests
//!   waiting for an outbound slot, and the response channels of inbound requests waiting
//!   for [`NetHandle::respond`]. Nothing else touches any of these.
//! - **Callers** hold a cloneable [`NetHandle`]. Each method sends one command over a
//!   bounded channel with a `oneshot` for the reply. Messages are encoded in the caller's
//!   task, so a message over its size limit fails there ([`NetError::Encode`]) and never
//!   opens a stream.
//! - **One consumer** (the sync service) owns the [`NetEvent`] receiver: connection
//!   changes, refused peers, inbound requests (to answer with [`NetHandle::respond`]) and
//!   abuse by roster peers — malformed bytes, stalled streams, requests over a limit (to
//!   audit).
//! - The wire format belongs to `tamga_protocol::codec`; this module only moves its
//!   frames (see the private `codec` module). It never decides what may be shared.
//!
//! This module must never let a peer that is not in the roster reach any protocol, never
//! panic on anything a peer sends, and never grow a queue without a bound.
//!
//! # Transports
//!
//! One swarm carries two transports, chosen per address by its shape:
//!
//! | address | transport | security and streams |
//! |---|---|---|
//! | `/ip4\|ip6/ADDR/tcp/PORT` | TCP, `TCP_NODELAY` | TLS 1.3 (`libp2p-tls`), then yamux |
//! | `/ip4\|ip6/ADDR/udp/PORT/quic-v1` | QUIC v1 (RFC 9000, `libp2p-quic`) | QUIC's own TLS 1.3 with the same `libp2p-tls` certificates; QUIC streams |
//!
//! A node listens on whatever `node.toml` lists (TCP, QUIC or both) and dials each roster
//! address on that address's transport, whatever it listens on itself: a TCP-only node
//! dials a QUIC peer from an ephemeral UDP socket, and a node that listens on QUIC dials
//! QUIC from its listening socket (of the same IP family). Everything above the transport is the same for both:
//! the remote PeerId is proven by the TLS handshake, so roster gating, the connection
//! limits, refusal reports (their `addr` is then a `/udp/…/quic-v1` address), identify,
//! ping and `/tamga/sync/1` see one kind of connection. The QUIC draft-29 (`/quic`) is
//! not offered; `tamga-config` refuses it, and plain `/udp` addresses, by name.
//!
//! QUIC brings its own timers, libp2p-quic's defaults: a 5 s handshake timeout (within
//! [`CONNECTION_TIMEOUT`]), a keep-alive every 5 s and a 10 s idle timeout, so a QUIC
//! connection whose peer vanished closes after 10 s, before [`Liveness::max_failures`] pings
//! would; the node then redials as for any lost link. QUIC's per-connection stream limit
//! (256) is above [`MAX_CONCURRENT_STREAMS`], as yamux's is, so the request-response limit
//! is the one that binds on both.
//!
//! # Roster gating
//!
//! The composed behaviour puts `allow_block_list::Behaviour<AllowedPeers>` first, so a
//! connection from or to a PeerId outside the roster is denied right after the TLS
//! handshake (the earliest point where the remote PeerId is proven) and never reaches the
//! connection limits, identify, ping or `/tamga/sync/1`. Denials are reported as
//! [`NetEvent::Refused`], at most once per peer per [`REFUSED_REPORT_INTERVAL`]; while
//! [`REFUSED_TRACKED_MAX`] peers refused within it are remembered, further refusals are
//! counted instead and reported as [`NetEvent::RefusedSummary`] (the first at once, then
//! at most once per interval), so none goes unaudited. A dial to a roster address that
//! answers with a PeerId outside the roster is refused and reported the same way.
//!
//! # A roster peer's connection lifecycle
//!
//! ```text
//!                    start, or set_peers adds it
//!                                │
//!                                ▼
//!    ┌──────────────────────► Waiting ─── no addresses: never dialled, accepts inbound
//!    │                           │ deadline (jittered backoff, doubling up to
//!    │                           ▼           dial_backoff_max)
//!    ├────── dial error ────── Dialing
//!    │                           │ TCP + TLS + yamux, or QUIC, done (our dial, or theirs inbound)
//!    │                           ▼
//!    │                      Established ── the remote may still refuse us: not usable yet
//!    │                           │ identify answer, ping answer, or a sync message on it
//!    │                           ▼
//!    │                         Ready ───── NetEvent::Connected; requests go out
//!    │                           │ its last ready connection closes
//!    │                           ▼
//!    └───────────────────── Disconnected ─ NetEvent::Disconnected; queued requests fail
//!                                          (NotConnected); the backoff restarts from
//!                                          DIAL_BACKOFF_INITIAL if the link was up for
//!                                          BACKOFF_RESET_AFTER
//!
//!  removed by set_peers (from any state): the allow-list closes all its connections
//!  (Disconnected if it was Ready; a late answer on one not Ready yet is ignored, so it
//!  never gets Connected), it is never dialled again, and its attempts are Refused.
//! ```
//!
//! A connection counts as *ready* once the remote has shown it accepted it: an identify
//! answer, a ping answer, or a `/tamga/sync/1` message on it. A node refused by the other
//! side sees its TLS handshake succeed and the connection then dropped; it never gets
//! ready, so it never reports `Connected`. Connections are kept open while idle (see
//! [`IDLE_CONNECTION_TIMEOUT`]); [`Liveness::max_failures`] failed pings in a row close one
//! (node.toml's `[network] ping_interval_secs`, `ping_timeout_secs` and `ping_max_failures`,
//! 15 s, 20 s and 3 by default; how long a dead link then stays open is worked out at
//! [`tamga_config::NetworkConfig::ping_max_failures`]: at most 110 s with the defaults).
//!
//! # Listening
//!
//! [`spawn`] binds every listen address before it returns (a bad address is a
//! [`NetError::Listen`]). libp2p-tcp marks listening sockets `SO_REUSEPORT`, so a second
//! daemon on a fixed port would bind without error and silently take half the incoming
//! connections; a plain bind is tried first so that an occupied port is an error instead.
//! libp2p-quic binds its UDP socket plainly, so an occupied QUIC port fails by itself.
//! [`NetHandle::listen_addrs`] waits until each listener has reported its address, so a
//! `/tcp/0` or `/udp/0/quic-v1` listener reports the port it got.
//! [`NetHandle::connection_addrs`] tells which address, and so which transport, each
//! ready connection uses.
//!
//! # Backpressure
//!
//! The task polls, in this order: cancellation, local commands, delivery of pending
//! events, the swarm, the dial timer. Local work always comes first. Events go to a
//! bounded channel ([`EVENT_CHANNEL_CAPACITY`]); while the consumer is behind they wait in
//! a bounded backlog ([`EVENT_BACKLOG_MAX`]). Once [`INBOUND_SHED_BACKLOG`] events are
//! waiting, new inbound requests are answered `Response::Error("busy")` at once instead of
//! being queued: remote work is shed, local requests keep flowing.
//!
//! Outbound requests to one peer are bounded by [`MAX_OUTBOUND_PER_PEER`], well below the
//! per-connection stream limit [`MAX_CONCURRENT_STREAMS`] (which counts both directions):
//! past that limit libp2p silently drops inbound streams, so a sender that respected only
//! its own limit could lose requests at the receiver. Excess requests wait in a per-peer
//! queue ([`MAX_QUEUED_PER_PEER`]); past it, [`NetError::Busy`]. Pushes waiting there
//! were decided under the policy in force when they were queued: when it changes, the
//! consumer withdraws them ([`NetHandle::withdraw_queued_pushes`]) before they leave.
//!
//! # Per-peer limits
//!
//! A roster peer is trusted to connect, not to behave. What one peer may ask of the node
//! is bounded by [`PeerLimits`] (node.toml `[limits]`), enforced here, where every inbound
//! request passes, before the request reaches the consumer:
//!
//! | limit | enforced | refusal |
//! |---|---|---|
//! | `messages_per_sec` | token bucket per peer (burst: one second's worth), each request | `Response::Error("rate limit: …")` |
//! | `bytes_per_sec` | token bucket per peer on the request's wire bytes; a request is refused while the bucket is in debt, one large request may overdraw it | `Response::Error("rate limit: …")` |
//! | `open_streams` | requests of the peer handed to the consumer and not answered yet | `Response::Error("too many open requests …")` |
//! | `pending_pulls` | the same, for pulls only | `Response::Error("too many pending pulls …")` |
//! | `stream_read` | the codec's deadline for a request's bytes once its stream is open; a half-open stream is then answered with an error and closed | `Response::Error("stalled request …")` |
//!
//! A stream closed before its first byte costs a message token, unanswered and not
//! reported below the rate: a requester that gave up looks the same.
//!
//! Requests refused by a limit, or answered "busy" because the consumer is behind (see
//! [Backpressure](#backpressure)), cost no token, so a flooding peer still gets its
//! allowance served and an honest peer does not pay for the node's own backlog. The
//! requests being read at once on one connection are bounded by libp2p at
//! [`MAX_CONCURRENT_STREAMS`] (past it, streams are dropped unread), each for at most
//! `stream_read`; and the buffer they hold, from every peer together, at
//! [`READ_BUFFER_BYTES`]: a request that finds it full is answered "busy" without the
//! rest of it being read, and costs no token either (its sender may be honest, and
//! another peer the one holding the buffer, until `stream_read` cuts it).
//!
//! Every refusal, malformed request and stalled stream is an [`Abuse`], reported as
//! [`NetEvent::Abuse`] at most once per peer and kind per `report_interval`: the first at
//! once, the later ones counted and reported when the interval has passed (by the next
//! refusal, or by a timer if the peer went quiet), so the audit log records the abuse
//! without being flooded by it. Honest peers are unaffected: each has its own buckets, and
//! a refusal costs the node one small error frame.
//!
//! # Constants
//!
//! | name | value | why |
//! |---|---|---|
//! | [`SYNC_PROTOCOL`] | `/tamga/sync/1` | the request-response protocol of hello, push, summary, pull |
//! | [`IDENTIFY_PROTOCOL_VERSION`] | `/tamga/1.1.0` | announced by identify; a mismatch is logged (1.1: a hello carries agreement terms) |
//! | [`REQUEST_TIMEOUT`] | 30 s | one exchange, including the peer verifying and storing a 512-projection push |
//! | [`MAX_CONCURRENT_STREAMS`] | 64 | per connection, inbound + outbound request streams |
//! | [`MAX_OUTBOUND_PER_PEER`] | 16 | at most half the stream limit, so both sides at full load still fit |
//! | [`MAX_QUEUED_PER_PEER`] | 256 | requests waiting for an outbound slot before callers get `Busy` |
//! | [`MAX_PENDING_INBOUND`] | 1024 | inbound requests awaiting `respond`; past it peers get "busy" |
//! | [`READ_BUFFER_BYTES`] | 64 MiB | buffer of the requests being read, all peers together; past it peers get "busy" |
//! | [`READ_BUFFER_PER_PEER_BYTES`] | 16 MiB | of it, what one peer's requests hold; past it that peer gets "busy", so one peer cannot hold it all |
//! | [`COMMAND_CHANNEL_CAPACITY`] | 64 | handle → task commands; senders wait when full |
//! | [`EVENT_CHANNEL_CAPACITY`] | 256 | task → consumer events |
//! | [`EVENT_BACKLOG_MAX`] | 1024 | events held while the channel is full; past it events are dropped and logged |
//! | [`INBOUND_SHED_BACKLOG`] | 64 | backlog length from which inbound requests are shed |
//! | [`REFUSED_REPORT_INTERVAL`] | 5 min | at most one `Refused` per peer per interval (audit, not a flood) |
//! | [`REFUSED_TRACKED_MAX`] | 1024 | refused peers remembered; when all are recent, further refusals are counted and reported as one `RefusedSummary` per interval |
//! | [`MAX_CONNECTIONS_PER_PEER`] | 2 | tolerates both sides dialling at once without flapping |
//! | [`MAX_PENDING_INCOMING`] | 32 | handshakes in progress from unknown remotes (TLS costs CPU) |
//! | [`MAX_PENDING_PER_IP`] | 4 | of those, from one IP address the roster does not list, so one host cannot hold them all |
//! | [`MAX_PENDING_OUTGOING`] | 128 | dials in progress (one per roster peer) |
//! | [`MAX_ROSTER_PEERS`] | 1024 | PeerIds a roster may list |
//! | [`CONNECTION_TIMEOUT`] | 10 s | TCP connect + TLS + yamux negotiation, or the QUIC handshake |
//! | [`IDLE_CONNECTION_TIMEOUT`] | 7 days | roster links stay up; dead ones are found by ping |
//! | [`DIAL_BACKOFF_INITIAL`] | 1 s | first redial delay; doubles up to `NetConfig::dial_backoff_max` |
//! | [`DIAL_BACKOFF_CEILING`] | 1 h | `dial_backoff_max` is clamped to this (and to at least 1 ms) |
//! | [`BACKOFF_RESET_AFTER`] | 30 s | uptime after which a closed link redials from the initial delay |
//! | [`LISTEN_WAITERS_MAX`] | 64 | `listen_addrs` callers parked until every listener is bound |
//! | [`ABUSE_TRACKED_MAX`] | 4096 | (peer, kind) abuse reports remembered; roster peers only, so never reached by a roster within its limit |
//!
//! Redial delays are jittered uniformly in `[d/2, d]` so a federation restarting together
//! does not dial in lockstep.
//!
//! # `SSLKEYLOGFILE`
//!
//! `libp2p-tls` 0.7 builds its rustls configurations with `KeyLogFile::new()`, which writes
//! TLS secrets to the file named by `SSLKEYLOGFILE` if it is set; libp2p-quic takes its
//! configurations from the same functions. [`spawn`] cannot change
//! those private configurations, so the daemon's `main` removes the variable from the
//! environment before any thread starts.

mod behaviour;
mod codec;
mod pending;
pub mod raw;
mod task;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use libp2p::identity::Keypair;
use libp2p::request_response::InboundRequestId;
pub use libp2p::{Multiaddr, PeerId};
use tamga_protocol::codec::{encode_request, encode_response, CodecError};
use tamga_protocol::{MemberCode, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The request-response protocol carrying `tamga_protocol::{Request, Response}`.
pub const SYNC_PROTOCOL: &str = "/tamga/sync/1";
/// The protocol version announced over identify.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/tamga/1.1.0";
/// Longest one request/response exchange may take, including the peer's processing.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most concurrent request streams (inbound + outbound) on one connection.
pub const MAX_CONCURRENT_STREAMS: usize = 64;
/// Most requests this node has outstanding to one peer.
pub const MAX_OUTBOUND_PER_PEER: usize = 16;
/// Most requests waiting for an outbound slot to one peer.
pub const MAX_QUEUED_PER_PEER: usize = 256;
/// Most inbound requests awaiting [`NetHandle::respond`].
pub const MAX_PENDING_INBOUND: usize = 1024;
/// Bytes of buffer the requests being read hold at once, from every peer together
/// ([`PeerLimits::read_buffer`]): eight of the largest frames.
pub const READ_BUFFER_BYTES: usize = 8 * tamga_protocol::limits::frame::MAX;
/// Of those, the most one peer's requests hold ([`PeerLimits::read_buffer_per_peer`]):
/// two of the largest frames, a quarter of the whole.
pub const READ_BUFFER_PER_PEER_BYTES: usize = 2 * tamga_protocol::limits::frame::MAX;
/// Capacity of the handle → task command channel.
pub const COMMAND_CHANNEL_CAPACITY: usize = 64;
/// Capacity of the task → consumer event channel.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Most events held while the event channel is full.
pub const EVENT_BACKLOG_MAX: usize = 1024;
/// Backlog length from which new inbound requests are answered "busy".
pub const INBOUND_SHED_BACKLOG: usize = 64;
/// At most one [`NetEvent::Refused`] per peer per this interval.
pub const REFUSED_REPORT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Most refused peers remembered for rate limiting; past it refusals are only counted
/// ([`NetEvent::RefusedSummary`]).
pub const REFUSED_TRACKED_MAX: usize = 1024;
/// Most established connections to one peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Most inbound connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 32;
/// Most inbound connections still in their handshake from one IP address that the roster
/// does not list.
pub const MAX_PENDING_PER_IP: u32 = 4;
/// Most outbound dials in progress.
pub const MAX_PENDING_OUTGOING: u32 = 128;
/// Most PeerIds a roster may list.
pub const MAX_ROSTER_PEERS: usize = 1024;
/// Longest a connection attempt (TCP + TLS + yamux, or the QUIC handshake) may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection without active streams stays open.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// First redial delay after a failed dial or a lost link.
pub const DIAL_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Upper bound on `NetConfig::dial_backoff_max`: no setting makes a roster peer wait
/// longer than this between two dials.
pub const DIAL_BACKOFF_CEILING: Duration = Duration::from_secs(3600);
/// A link that stayed up this long redials from [`DIAL_BACKOFF_INITIAL`] when lost.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// Most `listen_addrs` callers waiting for listeners to bind.
pub const LISTEN_WAITERS_MAX: usize = 64;
/// Most (peer, [`Abuse`]) report states remembered. Only roster peers get one, so the
/// bound is [`MAX_ROSTER_PEERS`] times the kinds of abuse; past it new reports are
/// suppressed (and logged).
pub const ABUSE_TRACKED_MAX: usize = 4096;

// Both peers may use their whole outbound allowance on the same connection; together
// they must stay within the receiver's stream limit, or libp2p drops streams silently.
const _: () = assert!(2 * MAX_OUTBOUND_PER_PEER <= MAX_CONCURRENT_STREAMS);

/// One federation member as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The member's code.
    pub member: MemberCode,
    /// The PeerIds its nodes may use (usually one; two during a key rotation).
    pub peer_ids: Vec<PeerId>,
    /// Where to dial it; empty means: accept its connections, never dial.
    pub addrs: Vec<Multiaddr>,
}

/// What [`spawn`] needs.
#[derive(Clone)]
pub struct NetConfig {
    /// This node's identity; its PeerId is what the roster lists for this member.
    pub keypair: Keypair,
    /// Addresses to listen on: TCP (`/ip4/127.0.0.1/tcp/0` picks a free port) or QUIC
    /// (`/ip4/127.0.0.1/udp/0/quic-v1`), or both.
    pub listen: Vec<Multiaddr>,
    /// The roster. Entries for this node's own PeerId are never dialled.
    pub peers: Vec<PeerEntry>,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Longest delay between two dials of an unreachable peer (clamped to
    /// [`DIAL_BACKOFF_CEILING`]).
    pub dial_backoff_max: Duration,
    /// What one roster peer may ask of this node.
    pub limits: PeerLimits,
    /// The liveness check of each connection.
    pub liveness: Liveness,
}

/// The liveness check of each connection: a ping every `interval`, failed after
/// `timeout`; `max_failures` failures in a row close the connection, and the node redials.
/// Built from node.toml's `[network] ping_*` keys; [`Default`] gives their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Between two pings on a connection.
    pub interval: Duration,
    /// After which an unanswered ping counts as failed.
    pub timeout: Duration,
    /// Consecutive failed pings that close a connection.
    pub max_failures: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::from(&tamga_config::NetworkConfig::default())
    }
}

impl From<&tamga_config::NetworkConfig> for Liveness {
    fn from(n: &tamga_config::NetworkConfig) -> Self {
        Liveness {
            interval: Duration::from_secs(n.ping_interval_secs),
            timeout: Duration::from_secs(n.ping_timeout_secs),
            max_failures: n.ping_max_failures,
        }
    }
}

/// What one roster peer may ask of this node (see "Per-peer limits" in the module doc).
/// Built from node.toml's `[limits]`; [`Default`] gives that section's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Requests per second; a burst of one second's worth is allowed.
    pub messages_per_sec: u64,
    /// Request bytes per second.
    pub bytes_per_sec: u64,
    /// Requests of one peer awaiting this node's answer at once.
    pub open_streams: usize,
    /// Pulls of one peer awaiting this node's answer at once.
    pub pending_pulls: usize,
    /// How long a request's bytes may take to arrive once its stream is open.
    pub stream_read: Duration,
    /// At most one [`NetEvent::Abuse`] per peer and kind per this interval.
    pub report_interval: Duration,
    /// Bytes of buffer the requests being read hold at once, from every peer together;
    /// a request that would take more is answered "busy" unread. Not from node.toml:
    /// [`READ_BUFFER_BYTES`].
    pub read_buffer: usize,
    /// Of those, the most one peer's requests hold at once. Not from node.toml:
    /// [`READ_BUFFER_PER_PEER_BYTES`].
    pub read_buffer_per_peer: usize,
}

impl From<&tamga_config::LimitsConfig> for PeerLimits {
    fn from(c: &tamga_config::LimitsConfig) -> Self {
        PeerLimits {
            messages_per_sec: c.messages_per_sec,
            bytes_per_sec: c.bytes_per_sec,
            open_streams: usize::try_from(c.open_streams).unwrap_or(usize::MAX),
            pending_pulls: usize::try_from(c.pending_pulls).unwrap_or(usize::MAX),
            stream_read: Duration::from_secs(c.stream_read_secs),
            report_interval: Duration::from_secs(c.report_secs),
            read_buffer: READ_BUFFER_BYTES,
            read_buffer_per_peer: READ_BUFFER_PER_PEER_BYTES,
        }
    }
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits::from(&tamga_config::LimitsConfig::default())
    }
}

/// How a roster peer misbehaved. Its [`Abuse::name`] labels metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Abuse {
    /// Bytes that are not a valid request, or a valid response to one of ours (bad magic,
    /// unknown kind, oversized, truncated, undecodable).
    Malformed,
    /// A request stream left open without its whole request for `stream_read`.
    Stalled,
    /// More requests per second than `messages_per_sec`.
    MessageRate,
    /// More request bytes per second than `bytes_per_sec`.
    ByteRate,
    /// More than `open_streams` requests awaiting an answer.
    OpenStreams,
    /// More than `pending_pulls` pulls awaiting an answer.
    PendingPulls,
}

impl Abuse {
    /// The kind's name, for metric labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Abuse::Malformed => "malformed",
            Abuse::Stalled => "stalled",
            Abuse::MessageRate => "message_rate",
            Abuse::ByteRate => "byte_rate",
            Abuse::OpenStreams => "open_streams",
            Abuse::PendingPulls => "pending_pulls",
        }
    }
}

impl fmt::Display for Abuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("max_connections", &self.max_connections)
            .field("dial_backoff_max", &self.dial_backoff_max)
            .field("limits", &self.limits)
            .field("liveness", &self.liveness)
            .finish()
    }
}

/// Names an inbound request awaiting [`NetHandle::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundId(InboundRequestId);

impl fmt::Display for InboundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the net task tells its consumer.
#[derive(Debug)]
pub enum NetEvent {
    /// A roster member's node accepted a connection with us (first ready connection).
    Connected {
        /// The member.
        member: MemberCode,
        /// Its node.
        peer: PeerId,
    },
    /// The last ready connection to a member's node closed (or it was removed from the roster).
    Disconnected {
        /// The member.
        member: MemberCode,
        /// Its node.
        peer: PeerId,
    },
    /// A PeerId outside the roster tried to connect, or answered a dial; it was refused.
    /// At most once per peer per [`REFUSED_REPORT_INTERVAL`].
    Refused {
        /// The refused PeerId (proven by its TLS certificate).
        peer: PeerId,
        /// Its address, if known.
        addr: Option<Multiaddr>,
    },
    /// Refusals of PeerIds outside the roster that were not reported one by one, because
    /// [`REFUSED_TRACKED_MAX`] peers refused within [`REFUSED_REPORT_INTERVAL`] were
    /// already remembered. At most one per interval (the first at once), counting the
    /// refusals since the previous one; so every refusal is audited, at least in summary.
    RefusedSummary {
        /// Connection attempts refused and not reported one by one (at least 1).
        count: u64,
    },
    /// A roster member sent a request. Answer it with [`NetHandle::respond`] within
    /// [`REQUEST_TIMEOUT`].
    Inbound {
        /// The sender's member code.
        member: MemberCode,
        /// The sender's node.
        peer: PeerId,
        /// Pass to [`NetHandle::respond`].
        id: InboundId,
        /// The decoded, bounds-checked request.
        request: Request,
    },
    /// A roster member misbehaved: bytes that are not a valid request, a stalled stream, or
    /// requests over one of its [`PeerLimits`]. Each offending request was answered with an
    /// error and nothing of it was applied. At most one per peer and kind per
    /// `report_interval`, counting the offences since the previous one. To be audited.
    Abuse {
        /// The sender's member code.
        member: MemberCode,
        /// The sender's node.
        peer: PeerId,
        /// What it did.
        kind: Abuse,
        /// Offences of this kind since the previous report (at least 1).
        count: u64,
        /// The latest offence, in words.
        detail: String,
    },
}

impl NetEvent {
    /// The event's name, for metric labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            NetEvent::Connected { .. } => "connected",
            NetEvent::Disconnected { .. } => "disconnected",
            NetEvent::Refused { .. } => "refused",
            NetEvent::RefusedSummary { .. } => "refused_summary",
            NetEvent::Inbound { .. } => "inbound",
            NetEvent::Abuse { .. } => "abuse",
        }
    }
}

/// Why a network operation failed, by what the caller may conclude.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The member is not in the roster: a caller or configuration error, retrying is useless.
    #[error("member {0} is not in the roster")]
    UnknownMember(MemberCode),
    /// No ready connection to the member now. Nothing was sent; the task keeps dialling,
    /// retry after [`NetEvent::Connected`].
    #[error("member {0} is not connected")]
    NotConnected(MemberCode),
    /// [`MAX_QUEUED_PER_PEER`] requests already wait for this member. Nothing was sent; back off.
    #[error("too many requests queued for member {0}")]
    Busy(MemberCode),
    /// No response within [`REQUEST_TIMEOUT`]. The peer may or may not have processed the
    /// request: only idempotent requests may be retried blindly (all of tamga's are).
    #[error("no response within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// The connection closed before the response. The peer may or may not have processed it.
    #[error("connection closed before the response arrived")]
    ConnectionClosed,
    /// The peer would not take the request stream (it does not speak `/tamga/sync/1`).
    #[error("peer refused the request: {0}")]
    Refused(String),
    /// The peer's response is not a valid frame. Nothing was applied; worth auditing.
    #[error("malformed response from peer: {0}")]
    Malformed(String),
    /// A local message could not be encoded (it exceeds its kind's size limit). Nothing was sent.
    #[error("cannot encode message: {0}")]
    Encode(#[source] CodecError),
    /// The stream failed (reset, broken pipe). The peer may or may not have processed it.
    #[error("stream error: {0}")]
    Io(String),
    /// The inbound request was already answered, timed out, or lost its connection.
    #[error("inbound request {0} is no longer awaiting a response")]
    UnknownInbound(InboundId),
    /// The net task has stopped (shutdown); nothing more can be done with this handle.
    #[error("the network task has stopped")]
    Shutdown,
    /// A push waiting for an outbound slot was withdrawn ([`NetHandle::withdraw_queued_pushes`]).
    /// Nothing was sent.
    #[error("withdrawn before it was sent")]
    Withdrawn,
    /// [`spawn`] was called outside a Tokio runtime.
    #[error("the network must be started inside a Tokio runtime")]
    NoRuntime,
    /// The TLS transport could not be set up from the keypair.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The configuration or roster is inconsistent; nothing was changed.
    #[error("invalid network configuration: {0}")]
    Config(String),
}

/// A local command for the net task, each with its reply channel.
#[derive(Debug)]
enum Command {
    Request {
        member: MemberCode,
        frame: Vec<u8>,
        push: bool,
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    WithdrawPushes {
        reply: oneshot::Sender<usize>,
    },
    Respond {
        id: InboundId,
        frame: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    SetPeers {
        peers: Vec<PeerEntry>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Connected {
        reply: oneshot::Sender<Vec<(MemberCode, PeerId)>>,
    },
    ConnectionAddrs {
        reply: oneshot::Sender<Vec<(MemberCode, PeerId, Multiaddr)>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
}

/// A cheap, cloneable handle to the net task.
#[derive(Debug, Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

impl NetHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Send a request to a member's node and wait for its response.
    pub async fn request(&self, member: MemberCode, req: Request) -> Result<Response, NetError> {
        let frame = encode_request(&req).map_err(NetError::Encode)?;
        let push = matches!(req, Request::Push(_));
        self.call(|reply| Command::Request { member, frame, push, reply }).await?
    }

    /// Withdraw every push still waiting for an outbound slot (their callers get
    /// [`NetError::Withdrawn`]); how many. Those in flight are on the wire already.
    pub async fn withdraw_queued_pushes(&self) -> Result<usize, NetError> {
        self.call(|reply| Command::WithdrawPushes { reply }).await
    }

    /// Answer an inbound request ([`NetEvent::Inbound`]). If the response cannot be
    /// encoded, the request stays pending and may be answered again (e.g. with an error).
    pub async fn respond(&self, id: InboundId, resp: Response) -> Result<(), NetError> {
        let frame = encode_response(&resp).map_err(NetError::Encode)?;
        self.call(|reply| Command::Respond { id, frame, reply }).await?
    }

    /// Replace the roster. Takes effect at once: removed peers are disconnected and
    /// refused from now on, new ones are dialled, changed addresses are redialled. An
    /// inconsistent roster ([`NetError::Config`]) changes nothing.
    pub async fn set_peers(&self, peers: Vec<PeerEntry>) -> Result<(), NetError> {
        self.call(|reply| Command::SetPeers { peers, reply }).await?
    }

    /// The roster members with a ready connection, sorted.
    pub async fn connected(&self) -> Result<Vec<(MemberCode, PeerId)>, NetError> {
        self.call(|reply| Command::Connected { reply }).await
    }

    /// The remote address of every ready connection, with its member and PeerId, sorted:
    /// `/ip4|ip6/…/tcp/…` for TCP, `/ip4|ip6/…/udp/…/quic-v1` for QUIC. For a connection
    /// we dialled it is the roster address dialled; for one the peer opened, the address
    /// it came from (its port is then the peer's sending port, not its listener's).
    pub async fn connection_addrs(&self) -> Result<Vec<(MemberCode, PeerId, Multiaddr)>, NetError> {
        self.call(|reply| Command::ConnectionAddrs { reply }).await
    }

    /// The addresses this node listens on, once every listener has bound (so a `tcp/0` or
    /// `udp/0/quic-v1` listener reports its real port).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }
}

/// Start the net task: build the swarm, start listening, dial the roster.
///
/// Returns the handle, the event receiver (for one consumer) and the task's join handle.
/// The task stops when `cancel` fires or when every handle has been dropped.
pub fn spawn(
    cfg: NetConfig,
    cancel: CancellationToken,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>, JoinHandle<()>), NetError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
    let local_peer_id = cfg.keypair.public().to_peer_id();
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let task = task::NetTask::new(cfg, commands_rx, events_tx, cancel)?;
    let join = runtime.spawn(task.run());
    Ok((NetHandle { commands: commands_tx, local_peer_id }, events_rx, join))
}

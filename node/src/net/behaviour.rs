//! The composed libp2p behaviour and the swarm it runs in: TCP + TLS + yamux, and QUIC v1
//! beside it (its own TLS 1.3 and streams), so one swarm listens on and dials either.
//!
//! Built once by [`build_swarm`] and then owned by the net task alone. The order of the
//! fields matters: `#[derive(NetworkBehaviour)]` asks each sub-behaviour in field order
//! whether to accept a connection and stops at the first refusal, so the allow-list comes
//! first and a refused peer never reaches the connection limits, identify, ping or the
//! sync protocol.

use libp2p::{
    allow_block_list, connection_limits, identify, identity::Keypair, ping, request_response,
    swarm::NetworkBehaviour, tcp, tls, yamux, StreamProtocol, Swarm, SwarmBuilder,
};

use super::codec::{ConnectionPeer, ReadBudget, SyncCodec};
use super::pending::PendingPerIp;
use super::{
    Liveness, NetError, PeerLimits, CONNECTION_TIMEOUT, IDENTIFY_PROTOCOL_VERSION, IDLE_CONNECTION_TIMEOUT,
    MAX_CONCURRENT_STREAMS, MAX_CONNECTIONS_PER_PEER, MAX_PENDING_INCOMING, MAX_PENDING_OUTGOING,
    REQUEST_TIMEOUT, SYNC_PROTOCOL,
};

/// Everything the node speaks on a connection, in the order connections are vetted.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    /// Only roster PeerIds may connect, in either direction. First: see the module doc.
    pub(super) allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    /// Bounds the handshakes from one address outside the roster (before `limits`, which
    /// bounds them all together).
    pub(super) pending: PendingPerIp,
    /// Bounds on established and pending connections.
    pub(super) limits: connection_limits::Behaviour,
    /// Exchanges protocol versions; a peer that answers has accepted the connection.
    pub(super) identify: identify::Behaviour,
    /// Liveness of each connection.
    pub(super) ping: ping::Behaviour,
    /// Notes each new connection's peer for the sync codec's clone for it: just before
    /// `sync` (see `codec`'s module doc).
    pub(super) codec_peer: ConnectionPeer,
    /// The `/tamga/sync/1` request-response protocol.
    pub(super) sync: request_response::Behaviour<SyncCodec>,
}

/// Build the swarm: transports (TCP and QUIC), behaviours, the connection limits from
/// `max_connections`, the request read deadline from `limits` and the pings' timers from
/// `liveness`.
pub(super) fn build_swarm(
    keypair: Keypair,
    max_connections: u32,
    limits: &PeerLimits,
    liveness: Liveness,
) -> Result<Swarm<Behaviour>, NetError> {
    // libp2p-tls gives its rustls configs a key-log writer that opens SSLKEYLOGFILE as
    // they are made: the peer channels' session keys must never be written anywhere. The
    // `tamga` binary removes the variable; a program that starts a node itself is refused.
    if std::env::var_os("SSLKEYLOGFILE").is_some() {
        return Err(NetError::Tls(
            "SSLKEYLOGFILE is set: the peer channels' TLS session keys would be written to it; unset it"
                .into(),
        ));
    }
    let codec = SyncCodec {
        request_deadline: limits.stream_read,
        read_budget: ReadBudget::new(limits.read_buffer, limits.read_buffer_per_peer),
        peer: None,
        next_peer: Default::default(),
    };
    let public = keypair.public();
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), tls::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Tls(e.to_string()))?
        // QUIC v1 (`/udp/PORT/quic-v1`) with libp2p-tls's certificates: the remote PeerId
        // is proven by the same handshake as on TCP, so the allow-list and every
        // behaviour below see a QUIC connection exactly as a TCP one.
        .with_quic()
        .with_behaviour(|_| {
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(max_connections))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING));
            Behaviour {
                allow: allow_block_list::Behaviour::default(),
                pending: PendingPerIp::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), public)
                        .with_agent_version(format!("tamga/{}", env!("CARGO_PKG_VERSION")))
                        // The roster is the only source of addresses: learn none from peers.
                        .with_cache_size(0)
                        .with_push_listen_addr_updates(false),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(liveness.interval).with_timeout(liveness.timeout),
                ),
                codec_peer: ConnectionPeer::of(&codec),
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), request_response::ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
                ),
            }
        })
        .map_err(|e| NetError::Config(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .with_connection_timeout(CONNECTION_TIMEOUT)
        .build();
    Ok(swarm)
}

//! A bound on the inbound connections still in their handshake from any one IP address
//! that no roster member lists: libp2p's own bound ([`super::MAX_PENDING_INCOMING`]) is
//! one for every remote together and is counted before the remote's PeerId is known, so
//! without this a single host holding that many bare TCP connections open (each until
//! [`super::CONNECTION_TIMEOUT`]) would keep every member from connecting to the node.
//! The addresses the roster lists are exempt: a member's node dials from them, and
//! several members may share one (every node of a test federation is on 127.0.0.1).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Why a connection was refused before its handshake.
#[derive(Debug)]
struct TooManyFromOneAddress(IpAddr);

impl std::fmt::Display for TooManyFromOneAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} connections in their handshake from {}", super::MAX_PENDING_PER_IP, self.0)
    }
}

impl std::error::Error for TooManyFromOneAddress {}

/// The IP address a multiaddr starts with, if it does.
pub(super) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// Counts the inbound connections in their handshake per remote IP address.
#[derive(Debug, Default)]
pub(super) struct PendingPerIp {
    /// The addresses the roster lists (not bounded here).
    roster: HashSet<IpAddr>,
    /// Each connection counted, with its address.
    pending: HashMap<ConnectionId, IpAddr>,
    /// Connections counted per address.
    counts: HashMap<IpAddr, u32>,
}

impl PendingPerIp {
    /// The roster's addresses are now `roster`.
    pub(super) fn set_roster(&mut self, roster: HashSet<IpAddr>) {
        self.roster = roster;
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.pending.remove(&id) else { return };
        if let Some(n) = self.counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for PendingPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote).filter(|ip| !self.roster.contains(ip)) else { return Ok(()) };
        let n = self.counts.entry(ip).or_default();
        if *n >= super::MAX_PENDING_PER_IP {
            tracing::debug!(%ip, "connection refused before its handshake: too many from one address");
            return Err(ConnectionDenied::new(TooManyFromOneAddress(ip)));
        }
        *n += 1;
        self.pending.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // A handshake that failed, or a connection another behaviour refused (which the
        // swarm reports so, whether this one was asked about it or not).
        if let FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) = event {
            self.release(connection_id);
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

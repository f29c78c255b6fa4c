//! The net task: the one event loop that owns the `Swarm` and all network state.
//!
//! Owns: the swarm, the roster's dial schedule, the live links, outbound requests in
//! flight and queued, inbound requests awaiting a response, each roster peer's quota
//! (rate buckets, open requests and pulls), the refused-peer and abuse report limiters
//! and the event backlog. Everything reaches it as a [`Command`] or a swarm event; it
//! never blocks on its consumer (see "Backpressure" in the module doc of `net`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use libp2p::allow_block_list::NotAllowed;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundFailure, InboundRequestId, Message, OutboundFailure, OutboundRequestId, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use rand::Rng;
use tamga_protocol::codec::encode_response;
use tamga_protocol::limits::MAX_REASON_LEN;
use tamga_protocol::{MemberCode, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::behaviour::{build_swarm, Behaviour, BehaviourEvent};
use super::codec::Frame;
use super::{
    Abuse, Command, InboundId, NetConfig, NetError, NetEvent, PeerEntry, PeerLimits, ABUSE_TRACKED_MAX,
    BACKOFF_RESET_AFTER, DIAL_BACKOFF_CEILING, DIAL_BACKOFF_INITIAL, EVENT_BACKLOG_MAX,
    IDENTIFY_PROTOCOL_VERSION, INBOUND_SHED_BACKLOG, LISTEN_WAITERS_MAX, MAX_OUTBOUND_PER_PEER,
    MAX_PENDING_INBOUND, MAX_QUEUED_PER_PEER, MAX_ROSTER_PEERS, REFUSED_REPORT_INTERVAL, REFUSED_TRACKED_MAX,
    SYNC_PROTOCOL,
};

type RequestReply = oneshot::Sender<Result<Response, NetError>>;

/// A roster PeerId other than our own, and when to dial it next.
#[derive(Debug)]
struct RosterPeer {
    member: MemberCode,
    addrs: Vec<Multiaddr>,
    /// The delay the next failure will wait (before jitter).
    backoff: Duration,
    /// When to dial next; `None` while connected, dialling, or without addresses.
    next_dial: Option<Instant>,
}

/// The roster as the task uses it, built and checked from [`PeerEntry`]s.
#[derive(Debug, Default)]
struct Roster {
    /// Every member, ours included.
    members: HashSet<MemberCode>,
    /// Every PeerId but ours, with its member and addresses.
    peers: HashMap<PeerId, (MemberCode, Vec<Multiaddr>)>,
}

impl Roster {
    fn build(local: PeerId, entries: &[PeerEntry]) -> Result<Roster, NetError> {
        let mut roster = Roster::default();
        let mut seen = HashSet::new();
        for e in entries {
            if !roster.members.insert(e.member) {
                return Err(NetError::Config(format!("member {} is listed twice", e.member)));
            }
            for p in &e.peer_ids {
                if !seen.insert(*p) {
                    return Err(NetError::Config(format!("peer id {p} is listed twice")));
                }
                if seen.len() > MAX_ROSTER_PEERS {
                    return Err(NetError::Config(format!("more than {MAX_ROSTER_PEERS} peer ids")));
                }
                if *p != local {
                    roster.peers.insert(*p, (e.member, e.addrs.clone()));
                }
            }
        }
        Ok(roster)
    }
}

/// One established connection.
#[derive(Debug)]
struct Conn {
    /// The remote has shown it accepted the connection.
    ready: bool,
    /// Consecutive failed pings.
    ping_failures: u32,
    /// The remote's address: the one dialled, or the one an inbound connection came from.
    /// TCP or QUIC alike; only reported ([`super::NetHandle::connection_addrs`]).
    remote: Multiaddr,
}

/// The established connections to one peer.
#[derive(Debug)]
struct Link {
    /// The member the peer belonged to when it connected.
    member: MemberCode,
    conns: HashMap<ConnectionId, Conn>,
    /// `Connected` was reported and `Disconnected` not yet.
    announced: bool,
    /// When the first of these connections was established.
    since: Instant,
}

#[derive(Debug)]
struct PendingOutbound {
    peer: PeerId,
    reply: RequestReply,
}

#[derive(Debug)]
struct QueuedRequest {
    frame: Vec<u8>,
    /// A push, which a policy change withdraws (see [`super::NetHandle::withdraw_queued_pushes`]).
    push: bool,
    reply: RequestReply,
}

/// An inbound request handed to the consumer and not answered yet.
#[derive(Debug)]
struct PendingInbound {
    channel: ResponseChannel<Frame<Response>>,
    peer: PeerId,
    pull: bool,
}

/// A token bucket: `rate` tokens per second, at most `rate` held (one second's burst).
/// The balance may go below zero (a debt), see [`Bucket::take`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: u64, now: Instant) -> Bucket {
        Bucket { tokens: rate as f64, last: now }
    }

    fn refill(&mut self, rate: u64, now: Instant) {
        let rate = rate as f64;
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
    }

    /// Take `cost` tokens, into debt if need be (whether the request may pass is decided
    /// before, by [`NetTask::check_rate`]).
    fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }
}

/// What one roster peer is using of its [`PeerLimits`].
#[derive(Debug)]
struct PeerQuota {
    messages: Bucket,
    bytes: Bucket,
    /// Its requests in `NetTask::inbound`.
    open: usize,
    /// Of which pulls.
    pulls: usize,
}

/// The abuse of one kind by one peer, for reporting once per interval.
#[derive(Debug)]
struct AbuseReport {
    member: MemberCode,
    /// When it was last reported.
    last: Instant,
    /// Offences since then.
    pending: u64,
    /// The latest offence, in words.
    detail: String,
}

/// The net task's state; see the module doc.
pub(super) struct NetTask {
    swarm: Swarm<Behaviour>,
    local_peer_id: PeerId,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    /// The consumer dropped its receiver.
    events_closed: bool,
    /// Events waiting for room in `events`, oldest first; at most [`EVENT_BACKLOG_MAX`].
    backlog: VecDeque<NetEvent>,
    cancel: CancellationToken,
    backoff_initial: Duration,
    backoff_max: Duration,
    members: HashSet<MemberCode>,
    roster: HashMap<PeerId, RosterPeer>,
    links: HashMap<PeerId, Link>,
    outbound: HashMap<OutboundRequestId, PendingOutbound>,
    in_flight: HashMap<PeerId, usize>,
    queued: HashMap<PeerId, VecDeque<QueuedRequest>>,
    inbound: HashMap<InboundRequestId, PendingInbound>,
    limits: PeerLimits,
    /// Consecutive failed pings that close a connection.
    ping_max_failures: u32,
    /// Per roster peer that sent a request.
    quotas: HashMap<PeerId, PeerQuota>,
    /// Per (peer, kind) of abuse seen; at most [`ABUSE_TRACKED_MAX`].
    abuse: HashMap<(PeerId, Abuse), AbuseReport>,
    abuse_suppressed: u64,
    /// When the earliest counted but unreported abuse becomes due.
    abuse_due: Option<Instant>,
    /// When each refused peer was last reported; at most [`REFUSED_TRACKED_MAX`].
    refused: HashMap<PeerId, Instant>,
    /// Refusals not reported one by one (the table was full) and not yet in a
    /// [`NetEvent::RefusedSummary`].
    refused_suppressed: u64,
    /// When the last [`NetEvent::RefusedSummary`] was emitted.
    refused_summary_last: Option<Instant>,
    /// When the counted refusals are due for a summary, if any are.
    refused_due: Option<Instant>,
    /// Listeners that have not reported an address yet.
    listeners_pending: HashSet<ListenerId>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
}

impl std::fmt::Debug for NetTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetTask")
            .field("local_peer_id", &self.local_peer_id)
            .field("links", &self.links.len())
            .field("outbound", &self.outbound.len())
            .field("inbound", &self.inbound.len())
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

fn jitter(d: Duration) -> Duration {
    let full = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::thread_rng().gen_range(full / 2..=full))
}

/// Cut a reason to what the protocol accepts in an error response.
fn bounded_reason(s: String) -> String {
    if s.len() <= MAX_REASON_LEN {
        return s;
    }
    let mut end = MAX_REASON_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl NetTask {
    pub(super) fn new(
        cfg: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        cancel: CancellationToken,
    ) -> Result<NetTask, NetError> {
        if cfg.max_connections == 0 {
            return Err(NetError::Config("max_connections must be at least 1".into()));
        }
        let l = &cfg.limits;
        if l.messages_per_sec == 0
            || l.bytes_per_sec == 0
            || l.open_streams == 0
            || l.pending_pulls == 0
            || l.stream_read.is_zero()
        {
            return Err(NetError::Config(format!("every per-peer limit must be above zero: {l:?}")));
        }
        let local_peer_id = cfg.keypair.public().to_peer_id();
        let roster = Roster::build(local_peer_id, &cfg.peers)?;
        let mut swarm = build_swarm(cfg.keypair, cfg.max_connections, &cfg.limits, cfg.liveness)?;
        let mut listeners_pending = HashSet::new();
        for addr in cfg.listen {
            ensure_port_free(&addr)?;
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr, reason: e.to_string() })?;
            listeners_pending.insert(id);
        }
        let backoff_max = cfg.dial_backoff_max.clamp(Duration::from_millis(1), DIAL_BACKOFF_CEILING);
        let mut task = NetTask {
            swarm,
            local_peer_id,
            commands,
            events,
            events_closed: false,
            backlog: VecDeque::new(),
            cancel,
            backoff_initial: DIAL_BACKOFF_INITIAL.min(backoff_max),
            backoff_max,
            members: HashSet::new(),
            roster: HashMap::new(),
            links: HashMap::new(),
            outbound: HashMap::new(),
            in_flight: HashMap::new(),
            queued: HashMap::new(),
            inbound: HashMap::new(),
            limits: cfg.limits,
            ping_max_failures: cfg.liveness.max_failures.max(1),
            quotas: HashMap::new(),
            abuse: HashMap::new(),
            abuse_suppressed: 0,
            abuse_due: None,
            refused: HashMap::new(),
            refused_suppressed: 0,
            refused_summary_last: None,
            refused_due: None,
            listeners_pending,
            listen_waiters: Vec::new(),
        };
        task.apply_roster(roster);
        Ok(task)
    }

    /// The event loop. Local commands first, then event delivery, then the swarm.
    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("net", local = %self.local_peer_id);
        async move {
            info!("network task started");
            loop {
                let next_dial = self.next_dial_deadline();
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => break,
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => self.on_command(cmd),
                        None => {
                            debug!("every handle dropped");
                            break;
                        }
                    },
                    // An owned permit, so that no borrow of `self` outlives the branch.
                    permit = self.events.clone().reserve_owned(), if !self.backlog.is_empty() => match permit {
                        Ok(permit) => {
                            if let Some(ev) = self.backlog.pop_front() {
                                permit.send(ev);
                            }
                        }
                        Err(_) => self.close_events(),
                    },
                    event = self.swarm.select_next_some() => self.on_swarm_event(event),
                    () = sleep_until_opt(next_dial) => self.dial_due(),
                    () = sleep_until_opt(self.abuse_due) => self.report_abuse_due(),
                    () = sleep_until_opt(self.refused_due) => self.report_refused_summary(Instant::now()),
                }
            }
            info!("network task stopped");
        }
        .instrument(span)
        .await
    }

    // ---- events to the consumer ----

    fn emit(&mut self, ev: NetEvent) {
        if self.events_closed {
            return;
        }
        if self.backlog.is_empty() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => self.backlog.push_back(ev),
                Err(mpsc::error::TrySendError::Closed(_)) => self.close_events(),
            }
        } else if self.backlog.len() < EVENT_BACKLOG_MAX {
            self.backlog.push_back(ev);
        } else {
            warn!(event = ev.name(), "event backlog full, dropping event");
        }
    }

    fn close_events(&mut self) {
        if !self.events_closed {
            warn!("event receiver dropped; inbound requests will be refused");
        }
        self.events_closed = true;
        self.backlog.clear();
    }

    /// Whether a new inbound request may be handed to the consumer.
    fn can_take_inbound(&self) -> bool {
        !self.events_closed
            && self.inbound.len() < MAX_PENDING_INBOUND
            && self.backlog.len() < INBOUND_SHED_BACKLOG
    }

    fn report_refused(&mut self, peer: PeerId, addr: Option<Multiaddr>) {
        let now = Instant::now();
        self.report_refused_summary(now);
        match self.refused.get(&peer) {
            Some(last) if now.duration_since(*last) < REFUSED_REPORT_INTERVAL => {
                debug!(%peer, "refused again (already reported)");
                return;
            }
            Some(_) => {}
            None if self.refused.len() >= REFUSED_TRACKED_MAX => {
                self.refused.retain(|_, t| now.duration_since(*t) < REFUSED_REPORT_INTERVAL);
                if self.refused.len() >= REFUSED_TRACKED_MAX {
                    self.refused_suppressed += 1;
                    debug!(%peer, suppressed = self.refused_suppressed, "too many refused peers, counted for a summary");
                    self.report_refused_summary(now);
                    return;
                }
            }
            None => {}
        }
        self.refused.insert(peer, now);
        warn!(%peer, addr = ?addr, "refused a peer that is not in the roster");
        self.emit(NetEvent::Refused { peer, addr });
    }

    /// Report the refusals counted but not reported one by one, if there are any and no
    /// summary was emitted within [`REFUSED_REPORT_INTERVAL`]; else have the timer do it
    /// when the interval has passed.
    fn report_refused_summary(&mut self, now: Instant) {
        if self.refused_suppressed == 0 {
            self.refused_due = None;
            return;
        }
        if let Some(last) = self.refused_summary_last {
            if now.duration_since(last) < REFUSED_REPORT_INTERVAL {
                self.refused_due = Some(last + REFUSED_REPORT_INTERVAL);
                return;
            }
        }
        let count = std::mem::take(&mut self.refused_suppressed);
        self.refused_summary_last = Some(now);
        self.refused_due = None;
        warn!(count, "refused peers that are not in the roster, too many to report one by one");
        self.emit(NetEvent::RefusedSummary { count });
    }

    // ---- commands ----

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request { member, frame, push, reply } => self.on_request(member, frame, push, reply),
            Command::WithdrawPushes { reply } => {
                let mut withdrawn = 0;
                for queue in self.queued.values_mut() {
                    for q in std::mem::take(queue) {
                        if q.push {
                            let _ = q.reply.send(Err(NetError::Withdrawn));
                            withdrawn += 1;
                        } else {
                            queue.push_back(q);
                        }
                    }
                }
                self.queued.retain(|_, q| !q.is_empty());
                let _ = reply.send(withdrawn);
            }
            Command::Respond { id, frame, reply } => {
                let result = match self.take_inbound(id.0) {
                    None => Err(NetError::UnknownInbound(id)),
                    Some(ch) => self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(ch, Frame::Encoded(frame))
                        .map_err(|_| NetError::UnknownInbound(id)),
                };
                let _ = reply.send(result);
            }
            Command::SetPeers { peers, reply } => {
                let result = Roster::build(self.local_peer_id, &peers).map(|r| self.apply_roster(r));
                let _ = reply.send(result);
            }
            Command::Connected { reply } => {
                let mut list: Vec<_> =
                    self.links.iter().filter(|(_, l)| l.announced).map(|(p, l)| (l.member, *p)).collect();
                list.sort();
                let _ = reply.send(list);
            }
            Command::ConnectionAddrs { reply } => {
                let mut list: Vec<_> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.announced)
                    .flat_map(|(p, l)| {
                        l.conns.values().filter(|c| c.ready).map(move |c| (l.member, *p, c.remote.clone()))
                    })
                    .collect();
                list.sort();
                let _ = reply.send(list);
            }
            Command::ListenAddrs { reply } => {
                if self.listeners_pending.is_empty() || self.listen_waiters.len() >= LISTEN_WAITERS_MAX {
                    let _ = reply.send(self.swarm.listeners().cloned().collect());
                } else {
                    self.listen_waiters.push(reply);
                }
            }
        }
    }

    fn on_request(&mut self, member: MemberCode, frame: Vec<u8>, push: bool, reply: RequestReply) {
        if !self.members.contains(&member) {
            let _ = reply.send(Err(NetError::UnknownMember(member)));
            return;
        }
        let peer = self
            .links
            .iter()
            .filter(|(p, l)| {
                l.announced && l.member == member && self.roster.get(p).is_some_and(|r| r.member == member)
            })
            .map(|(p, _)| *p)
            .min_by_key(|p| self.in_flight.get(p).copied().unwrap_or(0));
        let Some(peer) = peer else {
            let _ = reply.send(Err(NetError::NotConnected(member)));
            return;
        };
        if self.in_flight.get(&peer).copied().unwrap_or(0) < MAX_OUTBOUND_PER_PEER {
            self.send_now(peer, frame, reply);
            return;
        }
        let queue = self.queued.entry(peer).or_default();
        if queue.len() >= MAX_QUEUED_PER_PEER {
            let _ = reply.send(Err(NetError::Busy(member)));
        } else {
            queue.push_back(QueuedRequest { frame, push, reply });
        }
    }

    fn send_now(&mut self, peer: PeerId, frame: Vec<u8>, reply: RequestReply) {
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, Frame::Encoded(frame));
        self.outbound.insert(id, PendingOutbound { peer, reply });
        *self.in_flight.entry(peer).or_default() += 1;
    }

    /// Send queued requests to `peer` while it has free outbound slots.
    fn pump(&mut self, peer: PeerId) {
        while self.in_flight.get(&peer).copied().unwrap_or(0) < MAX_OUTBOUND_PER_PEER {
            let Some(q) = self.queued.get_mut(&peer).and_then(VecDeque::pop_front) else {
                self.queued.remove(&peer);
                return;
            };
            if !q.reply.is_closed() {
                self.send_now(peer, q.frame, q.reply);
            }
        }
    }

    fn complete_outbound(&mut self, id: OutboundRequestId, result: Result<Response, NetError>) {
        let Some(p) = self.outbound.remove(&id) else {
            return;
        };
        let _ = p.reply.send(result);
        if let Some(n) = self.in_flight.get_mut(&p.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&p.peer);
            }
        }
        self.pump(p.peer);
    }

    fn fail_queued(&mut self, peer: PeerId, member: MemberCode) {
        for q in self.queued.remove(&peer).into_iter().flatten() {
            let _ = q.reply.send(Err(NetError::NotConnected(member)));
        }
    }

    // ---- roster and dialling ----

    fn apply_roster(&mut self, new: Roster) {
        let old: Vec<(PeerId, MemberCode)> = self.roster.iter().map(|(p, r)| (*p, r.member)).collect();
        for (peer, member) in old {
            if new.peers.get(&peer).is_some_and(|(m, _)| *m == member) {
                continue;
            }
            // Removed, or moved to another member: close its connections; if it moved,
            // it is added back below and redialled once they are closed (a connection of
            // its own that completes before then starts a new link: ConnectionEstablished).
            info!(%peer, %member, "peer removed from the roster");
            self.roster.remove(&peer);
            self.quotas.remove(&peer);
            self.swarm.behaviour_mut().allow.disallow_peer(peer);
            self.fail_queued(peer, member);
        }
        for (peer, (member, addrs)) in new.peers {
            match self.roster.get_mut(&peer) {
                Some(r) => {
                    if r.addrs != addrs {
                        r.addrs = addrs;
                        r.backoff = self.backoff_initial;
                        self.dial_now(peer);
                    }
                }
                None => {
                    info!(%peer, %member, "peer added to the roster");
                    self.swarm.behaviour_mut().allow.allow_peer(peer);
                    self.roster.insert(
                        peer,
                        RosterPeer { member, addrs, backoff: self.backoff_initial, next_dial: None },
                    );
                    self.dial_now(peer);
                }
            }
        }
        self.members = new.members;
        let ips =
            self.roster.values().flat_map(|r| r.addrs.iter().filter_map(super::pending::ip_of)).collect();
        self.swarm.behaviour_mut().pending.set_roster(ips);
    }

    fn next_dial_deadline(&self) -> Option<Instant> {
        self.roster.values().filter_map(|r| r.next_dial).min()
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .roster
            .iter()
            .filter(|(_, r)| r.next_dial.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.dial_now(peer);
        }
    }

    fn dial_now(&mut self, peer: PeerId) {
        let Some(r) = self.roster.get_mut(&peer) else {
            return;
        };
        r.next_dial = None;
        if r.addrs.is_empty() || self.links.contains_key(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(r.addrs.clone())
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => debug!(%peer, "dialling"),
            // A dial is already under way; its outcome schedules the next one.
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                debug!(%peer, error = %e, "dial failed at once");
                self.schedule_redial(peer);
            }
        }
    }

    fn schedule_redial(&mut self, peer: PeerId) {
        let Some(r) = self.roster.get_mut(&peer) else {
            return;
        };
        if r.addrs.is_empty() {
            r.next_dial = None;
            return;
        }
        let delay = jitter(r.backoff);
        r.next_dial = Some(Instant::now() + delay);
        r.backoff = r.backoff.saturating_mul(2).min(self.backoff_max);
        debug!(%peer, ?delay, "redial scheduled");
    }

    // ---- links ----

    fn mark_ready(&mut self, peer: PeerId, conn: ConnectionId) {
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        // A late answer from a peer that left the roster (or moved to another member)
        // since it connected: its connections are being closed, it is no member to announce.
        if self.roster.get(&peer).is_none_or(|r| r.member != link.member) {
            debug!(%peer, member = %link.member, "answer from a peer no longer in the roster as this member, ignored");
            return;
        }
        let Some(c) = link.conns.get_mut(&conn) else {
            return;
        };
        c.ready = true;
        if !link.announced {
            link.announced = true;
            let member = link.member;
            info!(%peer, %member, "member connected");
            self.emit(NetEvent::Connected { member, peer });
        }
    }

    fn on_connection_closed(&mut self, peer: PeerId, conn: ConnectionId) {
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        link.conns.remove(&conn);
        let member = link.member;
        let lost = link.announced && !link.conns.values().any(|c| c.ready);
        if lost {
            link.announced = false;
        }
        let gone = link.conns.is_empty().then(|| link.since.elapsed());
        if lost {
            info!(%peer, %member, "member disconnected");
            self.emit(NetEvent::Disconnected { member, peer });
            self.fail_queued(peer, member);
        }
        if let Some(lasted) = gone {
            self.links.remove(&peer);
            if let Some(r) = self.roster.get_mut(&peer) {
                if lasted >= BACKOFF_RESET_AFTER {
                    r.backoff = self.backoff_initial;
                }
                self.schedule_redial(peer);
            }
        }
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let Some(r) = self.roster.get_mut(&peer_id) else {
                    // Only possible if the peer left the roster while its handshake ran.
                    self.swarm.close_connection(connection_id);
                    return;
                };
                r.next_dial = None;
                let member = r.member;
                let remote = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, %member, addr = %remote, "connection established");
                // The peer moved to another member and reconnected before its old
                // connections (closing) reported it: those belong to the old member's link,
                // which ends here; this connection starts the new member's.
                if self.links.get(&peer_id).is_some_and(|l| l.member != member) {
                    if let Some(old) = self.links.remove(&peer_id).filter(|l| l.announced) {
                        info!(peer = %peer_id, member = %old.member, to = %member, "member disconnected: its peer moved");
                        self.emit(NetEvent::Disconnected { member: old.member, peer: peer_id });
                    }
                }
                self.links
                    .entry(peer_id)
                    .or_insert_with(|| Link {
                        member,
                        conns: HashMap::new(),
                        announced: false,
                        since: Instant::now(),
                    })
                    .conns
                    .insert(connection_id, Conn { ready: false, ping_failures: 0, remote });
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.on_connection_closed(peer_id, connection_id);
            }
            SwarmEvent::IncomingConnectionError { peer_id, send_back_addr, error, .. } => {
                if let (ListenError::Denied { cause }, Some(peer)) = (&error, peer_id) {
                    if cause.downcast_ref::<NotAllowed>().is_some() {
                        self.report_refused(peer, Some(send_back_addr));
                        return;
                    }
                }
                debug!(peer = ?peer_id, addr = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                match &error {
                    DialError::WrongPeerId { obtained, address } if !self.roster.contains_key(obtained) => {
                        self.report_refused(*obtained, Some(address.clone()));
                    }
                    _ => debug!(peer = ?peer_id, %error, "dial failed"),
                }
                if let Some(peer) = peer_id {
                    if !self.links.contains_key(&peer) {
                        self.schedule_redial(peer);
                    }
                }
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                info!(%address, "listening");
                self.listener_done(listener_id);
            }
            SwarmEvent::ListenerClosed { listener_id, reason, addresses } => {
                match reason {
                    Ok(()) => info!(?addresses, "listener closed"),
                    Err(e) => warn!(?addresses, error = %e, "listener failed"),
                }
                self.listener_done(listener_id);
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    fn listener_done(&mut self, id: ListenerId) {
        self.listeners_pending.remove(&id);
        if self.listeners_pending.is_empty() {
            let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
            for w in self.listen_waiters.drain(..) {
                let _ = w.send(addrs.clone());
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Allow(never)
            | BehaviourEvent::Pending(never)
            | BehaviourEvent::Limits(never)
            | BehaviourEvent::CodecPeer(never) => match never {},
            BehaviourEvent::Identify(identify::Event::Received { peer_id, connection_id, info }) => {
                if info.protocol_version != IDENTIFY_PROTOCOL_VERSION {
                    warn!(peer = %peer_id, version = %info.protocol_version, "peer announces another protocol version");
                }
                self.mark_ready(peer_id, connection_id);
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                debug!(peer = %peer_id, %error, "identify failed");
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event { peer, connection, result }) => match result {
                Ok(_) => {
                    if let Some(c) = self.links.get_mut(&peer).and_then(|l| l.conns.get_mut(&connection)) {
                        c.ping_failures = 0;
                    }
                    self.mark_ready(peer, connection);
                }
                Err(ping::Failure::Unsupported) => debug!(%peer, "peer does not answer pings"),
                Err(e) => {
                    let Some(c) = self.links.get_mut(&peer).and_then(|l| l.conns.get_mut(&connection)) else {
                        return;
                    };
                    c.ping_failures += 1;
                    if c.ping_failures >= self.ping_max_failures {
                        warn!(%peer, error = %e, "connection unresponsive, closing it");
                        self.swarm.close_connection(connection);
                    }
                }
            },
            BehaviourEvent::Sync(ev) => self.on_sync_event(ev),
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<Frame<Request>, Frame<Response>>) {
        match event {
            request_response::Event::Message { peer, connection_id, message } => {
                self.mark_ready(peer, connection_id);
                match message {
                    Message::Request { request_id, request, channel } => {
                        self.on_inbound(peer, request_id, request, channel)
                    }
                    Message::Response { request_id, response } => {
                        let result = match response {
                            Frame::Decoded(r, _) => Ok(r),
                            Frame::Rejected(e, _) => {
                                // Reported as a malformed request is: a roster peer's bad
                                // bytes, whichever way they came.
                                if let Some(member) = self.roster.get(&peer).map(|r| r.member) {
                                    self.abuse(
                                        peer,
                                        member,
                                        Abuse::Malformed,
                                        format!("malformed response: {e}"),
                                    );
                                }
                                Err(NetError::Malformed(e.to_string()))
                            }
                            Frame::Empty => Err(NetError::Io("the stream closed before an answer".into())),
                            Frame::Stalled(_) | Frame::Busy(_) | Frame::Encoded(_) => {
                                Err(NetError::Malformed("undecoded frame".into()))
                            }
                        };
                        self.complete_outbound(request_id, result);
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %error, "request failed");
                let err = match error {
                    OutboundFailure::DialFailure => match self.roster.get(&peer) {
                        Some(r) => NetError::NotConnected(r.member),
                        None => NetError::ConnectionClosed,
                    },
                    OutboundFailure::Timeout => NetError::Timeout,
                    OutboundFailure::ConnectionClosed => NetError::ConnectionClosed,
                    OutboundFailure::UnsupportedProtocols => {
                        NetError::Refused(format!("the peer does not speak {SYNC_PROTOCOL}"))
                    }
                    OutboundFailure::Io(e) => NetError::Io(e.to_string()),
                };
                self.complete_outbound(request_id, Err(err));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                let delivered = self.take_inbound(request_id).is_some();
                debug!(%peer, %error, "inbound request not answered");
                // Not delivered and timed out: its bytes never all arrived (the codec's own
                // deadline is usually first; this catches a deadline at the timeout).
                if !delivered && matches!(error, InboundFailure::Timeout) {
                    if let Some(member) = self.roster.get(&peer).map(|r| r.member) {
                        let detail = "a request stream left open until the request timeout".to_owned();
                        self.abuse(peer, member, Abuse::Stalled, detail);
                    }
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Frame<Request>,
        channel: ResponseChannel<Frame<Response>>,
    ) {
        let Some(member) = self.roster.get(&peer).map(|r| r.member) else {
            debug!(%peer, "request from a peer that just left the roster, dropped");
            return;
        };
        if let Err((kind, why)) = self.check_rate(peer) {
            self.reply_error(channel, why.clone());
            self.abuse(peer, member, kind, why);
            return;
        }
        // A request costs its tokens once taken, or found malformed, stalled or empty; one
        // refused by a limit, or answered "busy" because our own consumer is behind,
        // costs none (else an honest peer would pay for our backlog).
        let len = request.wire_len();
        match request {
            Frame::Decoded(request, _) => {
                let pull = matches!(request, Request::Pull(_));
                let (open, pulls) = self.quotas.get(&peer).map_or((0, 0), |q| (q.open, q.pulls));
                let over = if open >= self.limits.open_streams {
                    Some((
                        Abuse::OpenStreams,
                        format!(
                            "too many open requests: {open} await an answer (limit {})",
                            self.limits.open_streams
                        ),
                    ))
                } else if pull && pulls >= self.limits.pending_pulls {
                    Some((
                        Abuse::PendingPulls,
                        format!(
                            "too many pending pulls: {pulls} await an answer (limit {})",
                            self.limits.pending_pulls
                        ),
                    ))
                } else {
                    None
                };
                if let Some((kind, why)) = over {
                    self.reply_error(channel, format!("{why}; retry later"));
                    self.abuse(peer, member, kind, why);
                    return;
                }
                if !self.can_take_inbound() {
                    debug!(%peer, %member, "consumer behind, answering busy");
                    self.reply_error(channel, "busy, try again later".into());
                    return;
                }
                self.charge(peer, len);
                if let Some(q) = self.quotas.get_mut(&peer) {
                    q.open += 1;
                    q.pulls += usize::from(pull);
                }
                self.inbound.insert(request_id, PendingInbound { channel, peer, pull });
                self.emit(NetEvent::Inbound { member, peer, id: InboundId(request_id), request });
            }
            Frame::Rejected(e, _) => {
                warn!(%peer, %member, error = %e, "malformed request");
                self.charge(peer, len);
                self.reply_error(channel, format!("malformed request: {e}"));
                self.abuse(peer, member, Abuse::Malformed, e.to_string());
            }
            Frame::Stalled(got) => {
                let why = format!(
                    "stalled request: {got} bytes in {} s, the whole request is due within that",
                    self.limits.stream_read.as_secs()
                );
                warn!(%peer, %member, got, "stalled request stream");
                self.charge(peer, len);
                self.reply_error(channel, why.clone());
                self.abuse(peer, member, Abuse::Stalled, why);
            }
            Frame::Busy(got) => {
                debug!(%peer, %member, got, "read buffer full, answering busy");
                self.reply_error(channel, "busy, try again later".into());
            }
            Frame::Empty => {
                // A requester that gave up, or a peer opening streams for nothing: a
                // message token either way, and no answer (no one waits for it).
                self.charge(peer, 0);
                drop(channel);
            }
            Frame::Encoded(_) => debug!(%peer, "codec returned an undecoded request, dropped"),
        }
    }

    /// Whether `peer` may send a request now, or which rate it is over. Takes no token:
    /// see [`NetTask::charge`].
    fn check_rate(&mut self, peer: PeerId) -> Result<(), (Abuse, String)> {
        let now = Instant::now();
        let l = self.limits;
        let q = self.quotas.entry(peer).or_insert_with(|| PeerQuota {
            messages: Bucket::full(l.messages_per_sec, now),
            bytes: Bucket::full(l.bytes_per_sec, now),
            open: 0,
            pulls: 0,
        });
        q.messages.refill(l.messages_per_sec, now);
        q.bytes.refill(l.bytes_per_sec, now);
        if q.messages.tokens < 1.0 {
            return Err((
                Abuse::MessageRate,
                format!("rate limit: more than {} requests/s; retry later", l.messages_per_sec),
            ));
        }
        // Bytes already read: a request is refused while the budget is in debt, and one
        // request may overdraw it (a large push must get through once).
        if q.bytes.tokens < 0.0 {
            return Err((
                Abuse::ByteRate,
                format!("rate limit: more than {} request bytes/s; retry later", l.bytes_per_sec),
            ));
        }
        Ok(())
    }

    /// Charge one request of `len` wire bytes, which passed [`NetTask::check_rate`], to
    /// `peer`'s rate buckets: one message token and `len` byte tokens (possibly a debt).
    fn charge(&mut self, peer: PeerId, len: usize) {
        if let Some(q) = self.quotas.get_mut(&peer) {
            q.messages.take(1.0);
            q.bytes.take(len as f64);
        }
    }

    /// Forget an inbound request (answered, failed or timed out) and release its quota.
    fn take_inbound(&mut self, id: InboundRequestId) -> Option<ResponseChannel<Frame<Response>>> {
        let p = self.inbound.remove(&id)?;
        if let Some(q) = self.quotas.get_mut(&p.peer) {
            q.open = q.open.saturating_sub(1);
            q.pulls = q.pulls.saturating_sub(usize::from(p.pull));
        }
        Some(p.channel)
    }

    /// Count one offence; report it now if this peer's abuse of this kind was not reported
    /// within the interval, else when the interval has passed.
    fn abuse(&mut self, peer: PeerId, member: MemberCode, kind: Abuse, detail: String) {
        let now = Instant::now();
        let interval = self.limits.report_interval;
        match self.abuse.get_mut(&(peer, kind)) {
            Some(r) => {
                r.pending += 1;
                r.detail = detail;
                if now.duration_since(r.last) >= interval {
                    self.report_abuse(peer, kind, now);
                } else {
                    let due = r.last + interval;
                    self.abuse_due = Some(self.abuse_due.map_or(due, |d| d.min(due)));
                    debug!(%peer, %member, kind = kind.name(), pending = r.pending, "abuse counted");
                }
            }
            None => {
                if self.abuse.len() >= ABUSE_TRACKED_MAX {
                    self.abuse.retain(|_, r| r.pending > 0 || now.duration_since(r.last) < interval);
                    if self.abuse.len() >= ABUSE_TRACKED_MAX {
                        self.abuse_suppressed += 1;
                        debug!(%peer, suppressed = self.abuse_suppressed, "too many abuse reports, suppressed");
                        return;
                    }
                }
                self.abuse.insert((peer, kind), AbuseReport { member, last: now, pending: 1, detail });
                self.report_abuse(peer, kind, now);
            }
        }
    }

    fn report_abuse(&mut self, peer: PeerId, kind: Abuse, now: Instant) {
        let Some(r) = self.abuse.get_mut(&(peer, kind)) else {
            return;
        };
        let (member, count, detail) = (r.member, r.pending, r.detail.clone());
        r.pending = 0;
        r.last = now;
        warn!(%peer, %member, kind = kind.name(), count, %detail, "peer abuse");
        self.emit(NetEvent::Abuse { member, peer, kind, count, detail });
    }

    /// Report every counted abuse whose interval has passed; forget the quiet ones.
    fn report_abuse_due(&mut self) {
        let now = Instant::now();
        let interval = self.limits.report_interval;
        let due: Vec<(PeerId, Abuse)> = self
            .abuse
            .iter()
            .filter(|(_, r)| r.pending > 0 && now.duration_since(r.last) >= interval)
            .map(|(k, _)| *k)
            .collect();
        for (peer, kind) in due {
            self.report_abuse(peer, kind, now);
        }
        self.abuse.retain(|_, r| r.pending > 0 || now.duration_since(r.last) < interval);
        self.abuse_due = self.abuse.values().filter(|r| r.pending > 0).map(|r| r.last + interval).min();
    }

    fn reply_error(&mut self, channel: ResponseChannel<Frame<Response>>, reason: String) {
        match encode_response(&Response::Error(bounded_reason(reason))) {
            Ok(frame) => {
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, Frame::Encoded(frame));
            }
            Err(e) => debug!(error = %e, "cannot encode error response"),
        }
    }
}

/// For the tests: feed the task the swarm events libp2p would deliver and the commands a
/// handle would send, in an order the test chooses, without its event loop. Some races
/// (a late answer on a connection of a peer that has just left the roster) cannot be
/// ordered from outside the task; this is how their order is made certain.
#[cfg(test)]
impl NetTask {
    pub(super) fn swarm_event_for_tests(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.on_swarm_event(event);
    }

    pub(super) fn command_for_tests(&mut self, cmd: Command) {
        self.on_command(cmd);
    }

    /// Make every refusal report `by` older, as if that much time had passed.
    pub(super) fn age_refusals_for_tests(&mut self, by: Duration) {
        let age = |t: &mut Instant| *t = t.checked_sub(by).expect("the clock is older than that");
        self.refused.values_mut().for_each(age);
        self.refused_summary_last.as_mut().map(age);
    }
}

/// Fail if a fixed TCP port is already taken. libp2p-tcp marks listening sockets
/// `SO_REUSEPORT`, so a second daemon on the same port would bind without error and
/// silently share the incoming connections with the first; a plain bind beforehand
/// turns that into a clear error.
///
/// A QUIC address (`/udp/PORT/quic-v1`) needs no such check: libp2p-quic binds its UDP
/// socket plainly (no `SO_REUSEPORT`) inside `listen_on`, so a taken port already fails
/// there, as a [`NetError::Listen`].
fn ensure_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            // QUIC: checked by its own bind, see above.
            Protocol::Udp(_) => return Ok(()),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind(SocketAddr::new(ip, port))
            .map(drop)
            .map_err(|e| NetError::Listen { addr: addr.clone(), reason: e.to_string() }),
        _ => Ok(()),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

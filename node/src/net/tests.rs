//! Tests of the net module: real nodes on `127.0.0.1:0` talking TLS, and a hostile peer
//! built with libp2p itself whose test codec writes whatever bytes it is given.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{tcp, tls, yamux, StreamProtocol, Swarm, SwarmBuilder};
use tamga_protocol::codec::{decode_response, encode_request, CodecError, HEADER_LEN, MAGIC, VERSION};
use tamga_protocol::{Digest, Hello, MemberCode, Push, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::codec::{read_frame_for_tests, Frame, ReadBudget};
use super::raw::{settle, Pending, RawCodec, RawRequest};
use super::*;

/// Upper bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);
/// How long to keep watching for something that must not happen.
const QUIET: Duration = Duration::from_millis(500);

fn code(s: &str) -> MemberCode {
    s.parse().expect("valid member code")
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")
}

fn loopback_quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid multiaddr")
}

fn is_quic(addr: &Multiaddr) -> bool {
    let mut it = addr.iter().skip(1);
    matches!((it.next(), it.next()), (Some(Protocol::Udp(p)), Some(Protocol::QuicV1)) if p != 0)
}

fn is_tcp(addr: &Multiaddr) -> bool {
    matches!(addr.iter().nth(1), Some(Protocol::Tcp(p)) if p != 0)
}

fn entry(member: &str, peer: PeerId, addrs: Vec<Multiaddr>) -> PeerEntry {
    PeerEntry { member: code(member), peer_ids: vec![peer], addrs }
}

fn hello(member: &str) -> Hello {
    Hello { member: code(member), roster_digest: Digest([7; 32]), agreements: vec![], checkpoint: None }
}

struct TestNode {
    member: MemberCode,
    peer: PeerId,
    handle: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    /// The first listen address.
    addr: Multiaddr,
    /// Every listen address, as bound.
    addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
    join: JoinHandle<()>,
}

impl TestNode {
    async fn start(member: &str, key: Keypair, peers: Vec<PeerEntry>) -> TestNode {
        TestNode::start_limited(member, key, peers, PeerLimits::default()).await
    }

    async fn start_limited(
        member: &str,
        key: Keypair,
        peers: Vec<PeerEntry>,
        limits: PeerLimits,
    ) -> TestNode {
        TestNode::start_on(member, key, peers, vec![loopback()], limits).await
    }

    async fn start_on(
        member: &str,
        key: Keypair,
        peers: Vec<PeerEntry>,
        listen: Vec<Multiaddr>,
        limits: PeerLimits,
    ) -> TestNode {
        let peer = key.public().to_peer_id();
        let cancel = CancellationToken::new();
        let cfg = NetConfig {
            keypair: key,
            listen: listen.clone(),
            peers,
            max_connections: 32,
            dial_backoff_max: Duration::from_secs(2),
            limits,
            liveness: Liveness::default(),
        };
        let (handle, events, join) = spawn(cfg, cancel.clone()).expect("net starts");
        let addrs = timeout(WAIT, handle.listen_addrs()).await.expect("listen in time").expect("task alive");
        assert_eq!(addrs.len(), listen.len(), "one bound address per listen address: {addrs:?}");
        for a in &addrs {
            assert!(is_tcp(a) || is_quic(a), "the real port is reported: {a}");
        }
        let addr = addrs.first().cloned().expect("one listen address");
        TestNode { member: code(member), peer, handle, events, addr, addrs, cancel, join }
    }

    /// This node's listen address of the kind `pick` selects.
    fn listen_addr(&self, pick: fn(&Multiaddr) -> bool) -> Multiaddr {
        self.addrs.iter().find(|a| pick(a)).cloned().expect("a listen address of that kind")
    }

    fn entry(&self) -> PeerEntry {
        PeerEntry { member: self.member, peer_ids: vec![self.peer], addrs: vec![self.addr.clone()] }
    }

    /// Wait for the first event matching `pred`; returns it and the events skipped before it.
    async fn wait_for(&mut self, mut pred: impl FnMut(&NetEvent) -> bool) -> (NetEvent, Vec<NetEvent>) {
        let mut skipped = Vec::new();
        let found = timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(ev) if pred(&ev) => return ev,
                    Some(ev) => skipped.push(ev),
                    None => panic!("event channel closed"),
                }
            }
        })
        .await
        .expect("expected event in time");
        (found, skipped)
    }

    /// Wait for [`NetEvent::Abuse`] reports of `kind` until they count `total` offences;
    /// fails on an inbound request among the events. Returns each report's sender.
    async fn abuse_reports(&mut self, kind: Abuse, total: u64) -> Vec<(MemberCode, PeerId)> {
        let mut counted = 0;
        let mut reports = Vec::new();
        while counted < total {
            let (ev, skipped) =
                self.wait_for(|e| matches!(e, NetEvent::Abuse { kind: k, .. } if *k == kind)).await;
            assert!(!skipped.iter().any(|e| matches!(e, NetEvent::Inbound { .. })), "{skipped:?}");
            let NetEvent::Abuse { member, peer, count, .. } = ev else { unreachable!("matched above") };
            counted += count;
            reports.push((member, peer));
        }
        assert_eq!(counted, total, "every offence counted once");
        reports
    }

    /// Every event that arrives within `QUIET`.
    async fn drain_quiet(&mut self) -> Vec<NetEvent> {
        let mut out = Vec::new();
        while let Ok(Some(ev)) = timeout(QUIET, self.events.recv()).await {
            out.push(ev);
        }
        out
    }

    async fn stop(self) {
        self.cancel.cancel();
        timeout(WAIT, self.join).await.expect("task stops in time").expect("task did not panic");
    }
}

fn is_connected(member: MemberCode) -> impl FnMut(&NetEvent) -> bool {
    move |e| matches!(e, NetEvent::Connected { member: m, .. } if *m == member)
}

/// Two roster members, each knowing the other's address, connected.
async fn connected_pair() -> (TestNode, TestNode) {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pa, pb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let roster = vec![entry("AA", pa, vec![]), entry("BB", pb, vec![])];
    let mut a = TestNode::start("AA", ka, roster.clone()).await;
    let mut b = TestNode::start("BB", kb, roster).await;
    let full = vec![a.entry(), b.entry()];
    a.handle.set_peers(full.clone()).await.expect("roster accepted");
    b.handle.set_peers(full).await.expect("roster accepted");
    a.wait_for(is_connected(b.member)).await;
    b.wait_for(is_connected(a.member)).await;
    (a, b)
}

/// Answer every inbound hello of `node` with our own hello; forward every event.
fn spawn_responder(
    handle: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
    me: &'static str,
) -> (mpsc::Receiver<NetEvent>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel(4096);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let NetEvent::Inbound { id, request: Request::Hello(_), .. } = &ev {
                // Counted first: the requester may have its answer before `respond` returns.
                count.fetch_add(1, Ordering::SeqCst);
                handle.respond(*id, Response::Hello(hello(me))).await.expect("respond");
            }
            let _ = tx.try_send(ev);
        }
    });
    (rx, answered)
}

async fn exchange_hello(from: &TestNode, to: &mut TestNode) {
    let h = from.handle.clone();
    let target = to.member;
    let me = from.member.to_string();
    let pending = tokio::spawn(async move { h.request(target, Request::Hello(hello(&me))).await });
    let (ev, _) = to.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { member, peer, id, request } = ev else { unreachable!("matched above") };
    assert_eq!(member, from.member);
    assert_eq!(peer, from.peer);
    assert_eq!(request, Request::Hello(hello(from.member.as_str())));
    to.handle.respond(id, Response::Hello(hello(to.member.as_str()))).await.expect("respond");
    let resp =
        timeout(WAIT, pending).await.expect("response in time").expect("no panic").expect("request ok");
    assert_eq!(resp, Response::Hello(hello(to.member.as_str())));
    // Answered once: a second answer is refused.
    assert!(matches!(
        to.handle.respond(id, Response::Error("again".into())).await,
        Err(NetError::UnknownInbound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_exchange_hello_both_ways_over_tls() {
    let (mut a, mut b) = connected_pair().await;
    exchange_hello(&a, &mut b).await;
    exchange_hello(&b, &mut a).await;

    let conns = a.handle.connected().await.expect("task alive");
    assert_eq!(conns, vec![(b.member, b.peer)]);
    assert!(matches!(
        a.handle.request(code("ZZ"), Request::Hello(hello("AA"))).await,
        Err(NetError::UnknownMember(_))
    ));
    // A response over its kind's size limit fails locally, before anything is sent.
    let h = b.handle.clone();
    let pending = tokio::spawn(async move { h.request(code("AA"), Request::Hello(hello("BB"))).await });
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
    let too_big = Response::Error("x".repeat(8 * 1024));
    assert!(matches!(a.handle.respond(id, too_big).await, Err(NetError::Encode(_))));
    // ... and the request is still pending, so it can be answered properly.
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("second try");
    let resp = timeout(WAIT, pending).await.expect("in time").expect("no panic").expect("ok");
    assert_eq!(resp, Response::Hello(hello("AA")));

    a.stop().await;
    b.stop().await;
}

/// Each node's ready connections, as (member, remote address), after `Connected` from
/// each of `members`.
async fn conn_addrs(n: &mut TestNode, members: &[MemberCode]) -> Vec<(MemberCode, Multiaddr)> {
    let mut waiting: HashSet<MemberCode> = members.iter().copied().collect();
    while !waiting.is_empty() {
        let (ev, _) =
            n.wait_for(|e| matches!(e, NetEvent::Connected { member, .. } if waiting.contains(member))).await;
        if let NetEvent::Connected { member, .. } = ev {
            waiting.remove(&member);
        }
    }
    let got = n.handle.connection_addrs().await.expect("task alive");
    got.into_iter().map(|(m, _, a)| (m, a)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_members_connect_and_exchange_hello() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pa, pb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let roster = vec![entry("AA", pa, vec![]), entry("BB", pb, vec![])];
    let quic = || vec![loopback_quic()];
    let mut a = TestNode::start_on("AA", ka, roster.clone(), quic(), PeerLimits::default()).await;
    let mut b = TestNode::start_on("BB", kb, roster, quic(), PeerLimits::default()).await;
    assert!(is_quic(&a.addr) && is_quic(&b.addr), "{} {}", a.addr, b.addr);
    let full = vec![a.entry(), b.entry()];
    a.handle.set_peers(full.clone()).await.expect("roster accepted");
    b.handle.set_peers(full).await.expect("roster accepted");

    for (n, other) in [(&mut a, b.member), (&mut b, code("AA"))] {
        let conns = conn_addrs(n, &[other]).await;
        assert!(!conns.is_empty() && conns.iter().all(|(m, a)| *m == other && is_quic(a)), "{conns:?}");
    }
    exchange_hello(&a, &mut b).await;
    exchange_hello(&b, &mut a).await;
    a.stop().await;
    b.stop().await;
}

/// One node per transport set — A on TCP only, B on TCP and QUIC, C on QUIC only — and
/// each link dialled by one side only (the other lists no address for it), so each
/// link's transport is known: B dials A over TCP, A dials C over QUIC without listening
/// on QUIC, C dials B at B's QUIC address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_quic_members_dial_each_other_on_the_roster_address_s_transport() {
    let (ka, kb, kc) =
        (Keypair::generate_ed25519(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pa, pb, pc) = (ka.public().to_peer_id(), kb.public().to_peer_id(), kc.public().to_peer_id());
    let none = vec![entry("AA", pa, vec![]), entry("BB", pb, vec![]), entry("CC", pc, vec![])];
    let l = PeerLimits::default();
    let mut a = TestNode::start_on("AA", ka, none.clone(), vec![loopback()], l).await;
    let mut b = TestNode::start_on("BB", kb, none.clone(), vec![loopback(), loopback_quic()], l).await;
    let mut c = TestNode::start_on("CC", kc, none, vec![loopback_quic()], l).await;
    let (a_tcp, b_quic, c_quic) = (a.listen_addr(is_tcp), b.listen_addr(is_quic), c.listen_addr(is_quic));
    let (ma, mb, mc) = (a.member, b.member, c.member);

    let set = |a_addrs: Vec<Multiaddr>, b_addrs: Vec<Multiaddr>, c_addrs: Vec<Multiaddr>| {
        vec![entry("AA", pa, a_addrs), entry("BB", pb, b_addrs), entry("CC", pc, c_addrs)]
    };
    a.handle.set_peers(set(vec![], vec![], vec![c_quic.clone()])).await.expect("roster accepted");
    b.handle.set_peers(set(vec![a_tcp.clone()], vec![], vec![])).await.expect("roster accepted");
    c.handle.set_peers(set(vec![], vec![b_quic.clone()], vec![])).await.expect("roster accepted");

    let dialled = |conns: &[(MemberCode, Multiaddr)], m: MemberCode, to: &Multiaddr| {
        conns.iter().filter(|(x, _)| *x == m).all(|(_, a)| a.to_string().starts_with(&to.to_string()))
    };
    let came_in = |conns: &[(MemberCode, Multiaddr)], m: MemberCode, kind: fn(&Multiaddr) -> bool| {
        conns.iter().filter(|(x, _)| *x == m).all(|(_, a)| kind(a))
    };
    let on_a = conn_addrs(&mut a, &[mb, mc]).await;
    assert!(came_in(&on_a, mb, is_tcp) && dialled(&on_a, mc, &c_quic), "{on_a:?}");
    let on_b = conn_addrs(&mut b, &[ma, mc]).await;
    assert!(dialled(&on_b, ma, &a_tcp) && came_in(&on_b, mc, is_quic), "{on_b:?}");
    let on_c = conn_addrs(&mut c, &[ma, mb]).await;
    assert!(came_in(&on_c, ma, is_quic) && dialled(&on_c, mb, &b_quic), "{on_c:?}");
    for conns in [&on_a, &on_b, &on_c] {
        let members: HashSet<_> = conns.iter().map(|(m, _)| *m).collect();
        assert_eq!(members.len(), 2, "{conns:?}");
    }

    exchange_hello(&a, &mut c).await;
    exchange_hello(&c, &mut b).await;
    exchange_hello(&b, &mut a).await;
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_roster_is_refused_over_quic_either_way() {
    let quic = || vec![loopback_quic()];
    let ka = Keypair::generate_ed25519();
    let pa = ka.public().to_peer_id();
    let mut a =
        TestNode::start_on("AA", ka, vec![entry("AA", pa, vec![])], quic(), PeerLimits::default()).await;
    // T dials A over QUIC; A's roster does not list T.
    let kt = Keypair::generate_ed25519();
    let pt = kt.public().to_peer_id();
    let t_roster = vec![a.entry(), entry("XX", pt, vec![])];
    let mut t = TestNode::start_on("XX", kt, t_roster, quic(), PeerLimits::default()).await;
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Refused { peer, .. } if *peer == pt)).await;
    assert!(matches!(&ev, NetEvent::Refused { addr: Some(addr), .. } if is_quic(addr)), "{ev:?}");

    // A dials U's QUIC address under a stale key for "KZ": U answers with its own PeerId.
    let ku = Keypair::generate_ed25519();
    let pu = ku.public().to_peer_id();
    let u = TestNode::start_on("YY", ku, vec![entry("YY", pu, vec![])], quic(), PeerLimits::default()).await;
    let stale = Keypair::generate_ed25519().public().to_peer_id();
    a.handle.set_peers(vec![a.entry(), entry("KZ", stale, vec![u.addr.clone()])]).await.expect("roster");
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Refused { peer, .. } if *peer == pu)).await;
    assert!(matches!(&ev, NetEvent::Refused { addr: Some(addr), .. } if is_quic(addr)), "{ev:?}");

    assert!(a.handle.connection_addrs().await.expect("alive").is_empty());
    let t_events = t.drain_quiet().await;
    assert!(!t_events.iter().any(|e| matches!(e, NetEvent::Connected { .. })), "{t_events:?}");
    for n in [a, t, u] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_quic_port_is_a_listen_error() {
    let a = TestNode::start_on(
        "AA",
        Keypair::generate_ed25519(),
        vec![],
        vec![loopback_quic()],
        PeerLimits::default(),
    )
    .await;
    let cfg = NetConfig {
        keypair: Keypair::generate_ed25519(),
        listen: vec![a.addr.clone()],
        peers: vec![],
        max_connections: 8,
        dial_backoff_max: Duration::from_secs(1),
        limits: PeerLimits::default(),
        liveness: Liveness::default(),
    };
    match spawn(cfg, CancellationToken::new()) {
        Err(NetError::Listen { addr, .. }) => assert_eq!(addr, a.addr),
        other => panic!("a second listener on {} started: {other:?}", a.addr),
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_roster_changes_nothing() {
    let (a, b) = connected_pair().await;
    let dup = vec![a.entry(), b.entry(), entry("CC", b.peer, vec![])];
    assert!(matches!(a.handle.set_peers(dup).await, Err(NetError::Config(_))));
    assert_eq!(a.handle.connected().await.expect("alive"), vec![(b.member, b.peer)]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_disconnects_it_and_refuses_it_from_then_on() {
    let (mut a, mut b) = connected_pair().await;
    a.handle.set_peers(vec![a.entry()]).await.expect("roster accepted");
    let (ev, early) = a.wait_for(|e| matches!(e, NetEvent::Disconnected { .. })).await;
    assert!(matches!(ev, NetEvent::Disconnected { member, peer } if member == b.member && peer == b.peer));
    assert!(a.handle.connected().await.expect("alive").is_empty());
    b.wait_for(|e| matches!(e, NetEvent::Disconnected { member, .. } if *member == a.member)).await;
    // B still lists A and redials it; A now refuses B at the connection. B's redial can be
    // refused before A reports the disconnection, and refusals are reported once per
    // interval, so the report may already be among the events skipped above.
    let refused_b = |e: &NetEvent| matches!(e, NetEvent::Refused { peer, .. } if *peer == b.peer);
    if !early.iter().any(refused_b) {
        let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Refused { .. })).await;
        assert!(refused_b(&ev), "{ev:?}");
    }
    assert!(matches!(
        b.handle.request(a.member, Request::Hello(hello("BB"))).await,
        Err(NetError::NotConnected(_))
    ));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_requests_than_the_stream_limit_all_complete() {
    let (a, b) = connected_pair().await;
    let (_b_events, answered) = spawn_responder(b.handle.clone(), b.events, "BB");
    let n = 3 * MAX_CONCURRENT_STREAMS + 8;
    assert!(n < MAX_QUEUED_PER_PEER + MAX_OUTBOUND_PER_PEER);
    let calls = (0..n).map(|_| {
        let h = a.handle.clone();
        async move { h.request(code("BB"), Request::Hello(hello("AA"))).await }
    });
    let results = timeout(WAIT, futures::future::join_all(calls)).await.expect("all complete in time");
    for r in &results {
        assert!(matches!(r, Ok(Response::Hello(h)) if h.member == code("BB")), "{r:?}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), n);
    b.cancel.cancel();
    a.stop().await;
}

// Pushes waiting for an outbound slot are withdrawn (a policy change decided them under
// the policy before); what else waits, and what is in flight, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_pushes_are_withdrawn_and_nothing_else() {
    let (a, mut b) = connected_pair().await;
    let request = |req: Request| {
        let h = a.handle.clone();
        Box::pin(async move { h.request(code("BB"), req).await })
    };
    // Every outbound slot taken by a hello B does not answer yet.
    let in_flight: Vec<_> =
        (0..MAX_OUTBOUND_PER_PEER).map(|_| tokio::spawn(request(Request::Hello(hello("AA"))))).collect();
    let mut inbound = Vec::new();
    while inbound.len() < MAX_OUTBOUND_PER_PEER {
        let (ev, _) = b.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
        let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
        inbound.push(id);
    }
    // Two pushes and a hello queue behind them: each polled once, its command is sent.
    let mut queued = vec![
        request(Request::Push(Push { projections: vec![] })),
        request(Request::Push(Push { projections: vec![] })),
        request(Request::Hello(hello("AA"))),
    ];
    for f in &mut queued {
        assert!(futures::poll!(f).is_pending());
    }
    assert_eq!(a.handle.withdraw_queued_pushes().await.expect("answers"), 2);
    let hello_left = queued.pop().expect("the hello");
    for push in queued {
        assert!(matches!(timeout(WAIT, push).await.expect("answered"), Err(NetError::Withdrawn)));
    }
    // B answers the hellos in flight: the queued hello goes out, and no push ever does.
    for id in inbound {
        b.handle.respond(id, Response::Hello(hello("BB"))).await.expect("respond");
    }
    let (ev, _) = b.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { id, request: got, .. } = ev else { unreachable!("matched above") };
    assert_eq!(got, Request::Hello(hello("AA")));
    b.handle.respond(id, Response::Hello(hello("BB"))).await.expect("respond");
    assert!(matches!(timeout(WAIT, hello_left).await.expect("answered"), Ok(Response::Hello(_))));
    for h in in_flight {
        assert!(matches!(h.await.expect("no panic"), Ok(Response::Hello(_))));
    }
    assert_eq!(a.handle.withdraw_queued_pushes().await.expect("answers"), 0, "nothing left to withdraw");
    b.cancel.cancel();
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused_at_spawn() {
    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let cfg = |listen: Vec<Multiaddr>, peers: Vec<PeerEntry>, max_connections: u32| NetConfig {
        keypair: key.clone(),
        listen,
        peers,
        max_connections,
        dial_backoff_max: Duration::MAX,
        limits: PeerLimits::default(),
        liveness: Liveness::default(),
    };
    let cancel = CancellationToken::new();
    assert!(matches!(spawn(cfg(vec![], vec![], 0), cancel.clone()), Err(NetError::Config(_))));
    let twice =
        vec![entry("AA", me, vec![]), entry("AA", Keypair::generate_ed25519().public().to_peer_id(), vec![])];
    assert!(matches!(spawn(cfg(vec![], twice, 8), cancel.clone()), Err(NetError::Config(_))));

    // An address already in use.
    let a = TestNode::start("AA", Keypair::generate_ed25519(), vec![]).await;
    assert!(matches!(
        spawn(cfg(vec![a.addr.clone()], vec![], 8), cancel.clone()),
        Err(NetError::Listen { .. })
    ));
    // No listeners: listen_addrs answers at once; an absurd backoff setting is clamped.
    let (h, _events, join) =
        spawn(cfg(vec![], vec![entry("AA", me, vec![])], 8), cancel.clone()).expect("starts");
    assert!(timeout(WAIT, h.listen_addrs()).await.expect("in time").expect("alive").is_empty());
    cancel.cancel();
    timeout(WAIT, join).await.expect("stops").expect("no panic");
    assert!(matches!(h.connected().await, Err(NetError::Shutdown)));
    a.stop().await;
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let cfg = NetConfig {
        keypair: Keypair::generate_ed25519(),
        listen: vec![loopback()],
        peers: vec![],
        max_connections: 8,
        dial_backoff_max: Duration::from_secs(1),
        limits: PeerLimits::default(),
        liveness: Liveness::default(),
    };
    assert!(matches!(spawn(cfg, CancellationToken::new()), Err(NetError::NoRuntime)));
}

// ---- a hostile peer, built with libp2p, whose codec sends raw bytes (`raw::RawCodec`) ----

enum HostileCmd {
    Dial(Multiaddr),
    Send(PeerId, RawRequest, oneshot::Sender<Result<Vec<u8>, String>>),
}

#[derive(Debug)]
enum HostileEvent {
    Established(PeerId),
    Closed,
    DialFailed,
}

struct Hostile {
    peer: PeerId,
    cmds: mpsc::Sender<HostileCmd>,
    events: mpsc::Receiver<HostileEvent>,
}

impl Hostile {
    fn start(key: Keypair) -> Hostile {
        Hostile::answering(key, None)
    }

    /// A hostile peer that also takes requests, and answers each with `answer`'s bytes.
    fn answering(key: Keypair, answer: Option<Vec<u8>>) -> Hostile {
        let peer = key.public().to_peer_id();
        let support = if answer.is_some() { ProtocolSupport::Full } else { ProtocolSupport::Outbound };
        let mut swarm: Swarm<request_response::Behaviour<RawCodec>> =
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(tcp::Config::default().nodelay(true), tls::Config::new, yamux::Config::default)
                .expect("transport")
                .with_behaviour(|_| {
                    request_response::Behaviour::with_codec(
                        RawCodec,
                        [(StreamProtocol::new(SYNC_PROTOCOL), support)],
                        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
                    )
                })
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<HostileCmd>(16);
        let (ev_tx, ev_rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut pending = Pending::new();
            // Only the connections dialled on command are reported, not the dials
            // request-response starts on its own when a request finds no connection.
            let mut ours: HashSet<ConnectionId> = HashSet::new();
            loop {
                tokio::select! {
                    cmd = cmd_rx.recv() => match cmd {
                        None => break,
                        Some(HostileCmd::Dial(addr)) => {
                            let opts = DialOpts::unknown_peer_id().address(addr).build();
                            ours.insert(opts.connection_id());
                            if swarm.dial(opts).is_err() {
                                let _ = ev_tx.try_send(HostileEvent::DialFailed);
                            }
                        }
                        Some(HostileCmd::Send(peer, bytes, reply)) => {
                            let id = swarm.behaviour_mut().send_request(&peer, bytes);
                            pending.insert(id, reply);
                        }
                    },
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. }
                            if ours.contains(&connection_id) =>
                        {
                            let _ = ev_tx.try_send(HostileEvent::Established(peer_id));
                        }
                        SwarmEvent::ConnectionClosed { connection_id, .. } if ours.contains(&connection_id) => {
                            let _ = ev_tx.try_send(HostileEvent::Closed);
                        }
                        SwarmEvent::OutgoingConnectionError { connection_id, .. }
                            if ours.contains(&connection_id) =>
                        {
                            let _ = ev_tx.try_send(HostileEvent::DialFailed);
                        }
                        SwarmEvent::Behaviour(request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        }) => {
                            let bytes = answer.clone().unwrap_or_default();
                            let _ = swarm.behaviour_mut().send_response(channel, bytes);
                        }
                        SwarmEvent::Behaviour(ev) => settle(&mut pending, ev),
                        _ => {}
                    },
                }
            }
        });
        Hostile { peer, cmds: cmd_tx, events: ev_rx }
    }

    async fn dial(&self, addr: &Multiaddr) {
        self.cmds.send(HostileCmd::Dial(addr.clone())).await.expect("hostile alive");
    }

    async fn send(&self, to: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(HostileCmd::Send(to, RawRequest { bytes, stall: false }, tx))
            .await
            .expect("hostile alive");
        timeout(WAIT, rx).await.expect("answer in time").expect("hostile alive")
    }

    /// Open a stream with `req` and return where its answer will arrive, without waiting.
    async fn fire(&self, to: PeerId, req: RawRequest) -> oneshot::Receiver<Result<Vec<u8>, String>> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(HostileCmd::Send(to, req, tx)).await.expect("hostile alive");
        rx
    }

    async fn next_event(&mut self) -> HostileEvent {
        timeout(WAIT, self.events.recv()).await.expect("hostile event in time").expect("hostile alive")
    }
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(VERSION);
    h.push(kind);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_roster_peer_is_reported_and_the_connection_stays_usable() {
    let ka = Keypair::generate_ed25519();
    let kh = Keypair::generate_ed25519();
    let (pa, ph) = (ka.public().to_peer_id(), kh.public().to_peer_id());
    let limits = PeerLimits { report_interval: Duration::from_secs(2), ..PeerLimits::default() };
    let roster = vec![entry("AA", pa, vec![]), entry("KZ", ph, vec![])];
    let mut a = TestNode::start_limited("AA", ka, roster, limits).await;
    let mut h = Hostile::start(kh);
    h.dial(&a.addr).await;
    assert!(matches!(h.next_event().await, HostileEvent::Established(p) if p == pa));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("oversized header", header(0x02, u32::MAX)),
        ("malformed payload", [header(0x01, 5), vec![0xff; 5]].concat()),
        ("truncated payload", [header(0x01, 100), vec![0; 10]].concat()),
        ("response kind as request", [header(0x81, 0)].concat()),
    ];
    // An empty stream is a requester that gave up (a timeout, a link gone), not bad input:
    // dropped without a reply and without a report.
    let reply = h.send(pa, vec![]).await;
    assert!(reply.as_ref().map_or(true, Vec::is_empty), "an empty stream gets no reply: {reply:?}");
    let n = cases.len() as u64;
    for (what, bytes) in cases {
        let reply = h.send(pa, bytes).await.unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
        let resp = decode_response(&reply).unwrap_or_else(|e| panic!("{what}: bad reply: {e}"));
        assert!(
            matches!(&resp, Response::Error(r) if r.starts_with("malformed request")),
            "{what}: {resp:?}"
        );
    }
    // Reported once per interval, not once per request: every case is counted.
    let reports = a.abuse_reports(Abuse::Malformed, n).await;
    assert!(reports.iter().all(|(m, p)| *m == code("KZ") && *p == ph), "{reports:?}");
    assert!(reports.len() < n as usize, "reports are grouped: {reports:?}");

    // The same connection still carries a well-formed request.
    let frame = encode_request(&Request::Hello(hello("KZ"))).expect("encodes");
    let sender = tokio::spawn({
        let cmds = h.cmds.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            let req = RawRequest { bytes: frame, stall: false };
            cmds.send(HostileCmd::Send(pa, req, tx)).await.expect("hostile alive");
            timeout(WAIT, rx).await.expect("in time").expect("alive")
        }
    });
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { member, id, request, .. } = ev else { unreachable!("matched above") };
    assert_eq!(member, code("KZ"));
    assert_eq!(request, Request::Hello(hello("KZ")));
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    let reply = sender.await.expect("no panic").expect("reply");
    assert_eq!(decode_response(&reply).expect("valid"), Response::Hello(hello("AA")));

    // The hostile peer's connection was never dropped.
    while let Ok(ev) = h.events.try_recv() {
        assert!(!matches!(ev, HostileEvent::Closed), "connection dropped: {ev:?}");
    }
    a.stop().await;
}

// A roster peer answering our request with bytes that are no response: the request fails
// as malformed, and the peer is reported as for a malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answered_by_a_roster_peer_is_reported() {
    let ka = Keypair::generate_ed25519();
    let kh = Keypair::generate_ed25519();
    let (pa, ph) = (ka.public().to_peer_id(), kh.public().to_peer_id());
    let roster = vec![entry("AA", pa, vec![]), entry("KZ", ph, vec![])];
    let mut a = TestNode::start("AA", ka, roster).await;
    let mut h = Hostile::answering(kh, Some([header(0x84, 5), vec![0xff; 5]].concat()));
    h.dial(&a.addr).await;
    assert!(matches!(h.next_event().await, HostileEvent::Established(p) if p == pa));
    // Its hello answered, the link is ready for requests of ours.
    let frame = encode_request(&Request::Hello(hello("KZ"))).expect("encodes");
    let _answered = h.fire(pa, RawRequest { bytes: frame, stall: false }).await;
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    let answer = a.handle.request(code("KZ"), Request::Hello(hello("AA"))).await;
    assert!(matches!(answer, Err(NetError::Malformed(_))), "{answer:?}");
    let reports = a.abuse_reports(Abuse::Malformed, 1).await;
    assert_eq!(reports, [(code("KZ"), ph)]);
    a.stop().await;
}

/// Keep `n` bare TCP connections from 127.0.0.2 open to `to`, never starting a handshake,
/// opening another whenever one is closed, until `stop`; `opened` counts them.
fn hold_handshakes_open(
    to: &Multiaddr,
    n: usize,
    opened: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let port = to.iter().find_map(|p| if let Protocol::Tcp(port) = p { Some(port) } else { None });
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port.expect("a TCP address")));
    tokio::spawn(async move {
        let mut held: Vec<tokio::net::TcpStream> = Vec::new();
        while !stop.is_cancelled() {
            held.retain(|s| !is_closed(s));
            while held.len() < n {
                let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
                socket.bind(([127, 0, 0, 2], 0).into()).expect("127.0.0.2 is loopback too");
                match socket.connect(to).await {
                    Ok(s) => {
                        held.push(s);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Whether the other end closed `s` (nothing to read is not closed).
fn is_closed(s: &tokio::net::TcpStream) -> bool {
    match s.try_read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

// A host outside the roster holding more bare TCP connections open than the node's
// handshake slots, and opening more as they are closed: a member still connects (without
// the bound per address, the host held every slot and the member was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_holding_handshakes_open_does_not_keep_members_out() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pa, pb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    // AA never dials BB (no address): BB can only come in.
    let mut a = TestNode::start("AA", ka, vec![entry("AA", pa, vec![]), entry("BB", pb, vec![])]).await;
    let stop = CancellationToken::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let holder =
        hold_handshakes_open(&a.addr, 2 * MAX_PENDING_INCOMING as usize, opened.clone(), stop.clone());
    // Every slot taken, and as many more tried, before the member dials.
    timeout(WAIT, async {
        while opened.load(Ordering::Relaxed) < 2 * MAX_PENDING_INCOMING as usize {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the host connects");
    let mut b = TestNode::start("BB", kb, vec![a.entry(), entry("BB", pb, vec![])]).await;
    a.wait_for(is_connected(code("BB"))).await;
    b.wait_for(is_connected(code("AA"))).await;
    stop.cancel();
    holder.await.expect("no panic");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_roster_cannot_connect_either_way() {
    let (mut a, b) = connected_pair().await;
    // T: a tamga node that believes it is a member (its roster lists A) but is in no one's
    // roster. A's roster has a stale key for "KZ" at T's address, so A dials T too.
    let kt = Keypair::generate_ed25519();
    let pt = kt.public().to_peer_id();
    let stale = Keypair::generate_ed25519().public().to_peer_id();
    let mut t = TestNode::start("XX", kt, vec![a.entry(), entry("XX", pt, vec![])]).await;
    a.handle
        .set_peers(vec![a.entry(), b.entry(), entry("KZ", stale, vec![t.addr.clone()])])
        .await
        .expect("roster");

    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Refused { .. })).await;
    assert!(matches!(ev, NetEvent::Refused { peer, addr: Some(_) } if peer == pt), "{ev:?}");

    // H: a raw libp2p peer outside the roster, dialling A three times and trying a request.
    let kh = Keypair::generate_ed25519();
    let mut h = Hostile::start(kh);
    for attempt in 0..3 {
        h.dial(&a.addr).await;
        loop {
            match h.next_event().await {
                HostileEvent::Established(_) if attempt == 0 => {
                    let frame = encode_request(&Request::Hello(hello("KZ"))).expect("encodes");
                    assert!(h.send(a.peer, frame).await.is_err(), "a refused peer got an answer");
                }
                HostileEvent::Established(_) => {}
                HostileEvent::Closed | HostileEvent::DialFailed => break,
            }
        }
    }

    // Everything A did about H happened before it handles this request from B.
    let hb = b.handle.clone();
    let pending = tokio::spawn(async move { hb.request(code("AA"), Request::Hello(hello("BB"))).await });
    let (ev, before) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { member, id, .. } = ev else { unreachable!("matched above") };
    assert_eq!(member, b.member, "only roster members reach the sync protocol");
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    timeout(WAIT, pending).await.expect("in time").expect("no panic").expect("B is served");

    let refused_h =
        before.iter().filter(|e| matches!(e, NetEvent::Refused { peer, .. } if *peer == h.peer)).count();
    assert_eq!(refused_h, 1, "H reported exactly once: {before:?}");
    let refused_t =
        before.iter().filter(|e| matches!(e, NetEvent::Refused { peer, .. } if *peer == pt)).count();
    assert_eq!(refused_t, 0, "T reported only once in all: {before:?}");
    assert!(!before.iter().any(|e| matches!(e, NetEvent::Inbound { .. } | NetEvent::Connected { .. })));

    // T never got a usable connection: no Connected, and its requests are not sent.
    let t_events = t.drain_quiet().await;
    assert!(!t_events.iter().any(|e| matches!(e, NetEvent::Connected { .. })), "{t_events:?}");
    assert!(matches!(
        t.handle.request(a.member, Request::Hello(hello("XX"))).await,
        Err(NetError::NotConnected(_))
    ));
    assert!(t.handle.connected().await.expect("alive").is_empty());
    assert!(!a.drain_quiet().await.iter().any(|e| matches!(e, NetEvent::Inbound { .. })));

    t.stop().await;
    a.stop().await;
    b.stop().await;
}

// ---- the codec alone ----

#[tokio::test]
async fn codec_bounds_the_header_before_reading_the_payload() {
    // A header announcing 4 GiB, followed by nothing: rejected from the header alone.
    let mut io = futures::io::Cursor::new(header(0x02, u32::MAX));
    let frame = read_frame_for_tests(&mut io, None).await.expect("no i/o error");
    assert!(matches!(frame, Frame::Rejected(CodecError::Oversized { .. }, HEADER_LEN)), "{frame:?}");
    assert_eq!(io.position() as usize, HEADER_LEN, "no payload byte read");

    let good = encode_request(&Request::Hello(hello("AA"))).expect("encodes");
    let mut io = futures::io::Cursor::new(good);
    let frame = read_frame_for_tests(&mut io, None).await.expect("no i/o error");
    assert!(matches!(frame, Frame::Decoded(Request::Hello(ref h), _) if *h == hello("AA")), "{frame:?}");

    let mut io = futures::io::Cursor::new(b"TMG".to_vec());
    let frame = read_frame_for_tests(&mut io, None).await.expect("no i/o error");
    assert!(matches!(frame, Frame::Rejected(CodecError::Truncated { got: 3, .. }, 3)), "{frame:?}");
}

/// A stream that never delivers another byte (nor ends).
struct Silent;

impl futures::AsyncRead for Silent {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn requests_being_read_hold_their_buffer_within_one_budget() {
    // The buffer doubles from 16 KiB as bytes arrive: 16, 32, 64 KiB, then 128 is past it.
    let budget = ReadBudget::new(80 * 1024, 80 * 1024);
    // A push of 1 MiB, all of its bytes there: read until its buffer would pass the budget.
    let mut io = futures::io::Cursor::new([header(0x02, 1 << 20), vec![0; 1 << 20]].concat());
    let frame = read_frame_for_tests(&mut io, Some(&budget)).await.expect("no i/o error");
    assert!(matches!(frame, Frame::Busy(n) if n > HEADER_LEN && n < 80 * 1024), "{frame:?}");
    assert!(io.position() < 80 * 1024, "read no further than the budget: {}", io.position());
    assert_eq!(budget.held(), 0, "given back once the read ended");

    // A request that fits is read whole, and gives its share back too.
    let good = encode_request(&Request::Hello(hello("AA"))).expect("encodes");
    let frame = read_frame_for_tests(&mut futures::io::Cursor::new(good.clone()), Some(&budget)).await;
    assert!(matches!(frame, Ok(Frame::Decoded(Request::Hello(_), _))), "{frame:?}");
    assert_eq!(budget.held(), 0);

    // While a stalled read holds 64 KiB of it, the next push is busy from its header on.
    let stalled = [header(0x02, 100_000), vec![0; 40_000]].concat();
    let next = [header(0x02, 20_000), vec![0; 20_000]].concat();
    let mut stalled = futures::io::AsyncReadExt::chain(futures::io::Cursor::new(stalled), Silent);
    let held = read_frame_for_tests(&mut stalled, Some(&budget));
    let (first, frame) = tokio::join!(tokio::time::timeout(Duration::from_millis(300), held), async {
        while budget.held() < 40_000 {
            tokio::task::yield_now().await;
        }
        read_frame_for_tests(&mut futures::io::Cursor::new(next), Some(&budget)).await
    });
    assert!(first.is_err(), "the stalled read is still waiting for bytes");
    assert!(matches!(frame, Ok(Frame::Busy(HEADER_LEN))), "{frame:?}");
    assert_eq!(budget.held(), 0, "the stalled read's share went with it");
}

// ---- per-peer limits ----

/// A node `AA` with `limits` and a connected hostile roster peer `KZ`.
async fn limited_pair(limits: PeerLimits) -> (TestNode, Hostile) {
    let ka = Keypair::generate_ed25519();
    let kh = Keypair::generate_ed25519();
    let (pa, ph) = (ka.public().to_peer_id(), kh.public().to_peer_id());
    let roster = vec![entry("AA", pa, vec![]), entry("KZ", ph, vec![])];
    let a = TestNode::start_limited("AA", ka, roster, limits).await;
    let mut h = Hostile::start(kh);
    h.dial(&a.addr).await;
    assert!(matches!(h.next_event().await, HostileEvent::Established(p) if p == pa));
    (a, h)
}

fn raw(req: &Request) -> RawRequest {
    RawRequest { bytes: encode_request(req).expect("encodes"), stall: false }
}

/// The error text of a raw answer, or `None` for any other answer.
fn error_text(answer: &Result<Vec<u8>, String>) -> Option<String> {
    match answer.as_ref().ok().map(|b| decode_response(b)) {
        Some(Ok(Response::Error(r))) => Some(r),
        _ => None,
    }
}

fn pull() -> Request {
    Request::Pull(tamga_protocol::Pull { ranges: vec![] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_message_rate_is_refused_and_reported_once_per_interval() {
    let limits =
        PeerLimits { messages_per_sec: 5, report_interval: Duration::from_secs(2), ..PeerLimits::default() };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    let flood = 40;
    let started = tokio::time::Instant::now();
    let mut answers = Vec::new();
    for _ in 0..flood {
        answers.push(h.fire(pa, raw(&Request::Hello(hello("KZ")))).await);
    }
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        for rx in answers {
            out.push(timeout(WAIT, rx).await.expect("answer in time").expect("hostile alive"));
        }
        out
    });
    // Serve what gets through, count the reports, until every answer is in.
    let mut served = 0u64;
    let mut reported = Vec::new();
    while !collect.is_finished() {
        match timeout(Duration::from_millis(50), a.events.recv()).await {
            Ok(Some(NetEvent::Inbound { id, .. })) => {
                served += 1;
                a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
            }
            Ok(Some(NetEvent::Abuse { kind, count, .. })) => reported.push((kind, count)),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("event channel closed"),
        }
    }
    let elapsed = started.elapsed();
    let answers = collect.await.expect("no panic");
    let refused =
        answers.iter().filter(|a| error_text(a).is_some_and(|r| r.starts_with("rate limit"))).count();
    let hellos = answers
        .iter()
        .filter(|a| matches!(a.as_ref().map(|b| decode_response(b)), Ok(Ok(Response::Hello(_)))))
        .count();
    println!(
        "flood of {flood}: {hellos} served, {refused} refused in {elapsed:?}; reports so far {reported:?}"
    );
    assert_eq!(hellos + refused, flood, "every request answered, served or refused");
    assert_eq!(hellos as u64, served);
    // One second's burst, plus what the bucket refilled while the flood lasted.
    assert!(hellos >= 1 && hellos as f64 <= 5.0 + 5.0 * elapsed.as_secs_f64() + 1.0, "{hellos} served");
    let mut counted: u64 = reported.iter().filter(|(k, _)| *k == Abuse::MessageRate).map(|(_, c)| c).sum();
    let mut reports = reported.iter().filter(|(k, _)| *k == Abuse::MessageRate).count();
    if counted < refused as u64 {
        reports += a.abuse_reports(Abuse::MessageRate, refused as u64 - counted).await.len();
        counted = refused as u64;
    }
    assert_eq!(counted, refused as u64);
    assert!(reports <= 2 + (elapsed.as_secs() / 2) as usize, "{reports} reports for {refused} refusals");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_requests_and_pending_pulls_are_bounded_per_peer() {
    let limits = PeerLimits { open_streams: 4, pending_pulls: 2, ..PeerLimits::default() };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    let mut delivered = Vec::new();
    let mut seen = Vec::new();
    // Three pulls: two go to the consumer (which does not answer yet), the third is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(h.fire(pa, raw(&pull())).await);
    }
    for _ in 0..2 {
        let (ev, skipped) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
        seen.extend(skipped);
        let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
        delivered.push(id);
    }
    let refused = timeout(WAIT, held.pop().expect("three")).await.expect("in time").expect("alive");
    assert!(error_text(&refused).is_some_and(|r| r.starts_with("too many pending pulls")), "{refused:?}");
    // Two more requests fill the four open slots; the next is refused.
    for _ in 0..3 {
        held.push(h.fire(pa, raw(&Request::Hello(hello("KZ")))).await);
    }
    for _ in 0..2 {
        let (ev, skipped) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
        seen.extend(skipped);
        let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
        delivered.push(id);
    }
    let refused = timeout(WAIT, held.pop().expect("five")).await.expect("in time").expect("alive");
    assert!(error_text(&refused).is_some_and(|r| r.starts_with("too many open requests")), "{refused:?}");
    // Answering frees a slot.
    a.handle.respond(delivered[0], Response::Error("done".into())).await.expect("respond");
    let next = h.fire(pa, raw(&pull())).await;
    let (ev, skipped) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    seen.extend(skipped);
    let NetEvent::Inbound { id, request, .. } = ev else { unreachable!("matched above") };
    assert_eq!(request, pull());
    a.handle.respond(id, Response::Error("done".into())).await.expect("respond");
    assert!(timeout(WAIT, next).await.expect("in time").expect("alive").is_ok());
    seen.extend(a.drain_quiet().await);
    for kind in [Abuse::PendingPulls, Abuse::OpenStreams] {
        let n = seen
            .iter()
            .filter(|e| matches!(e, NetEvent::Abuse { kind: k, count: 1, .. } if *k == kind))
            .count();
        assert_eq!(n, 1, "{kind} reported once: {seen:?}");
    }
    drop(held);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_streams_and_byte_floods_are_cut_and_reported() {
    let limits = PeerLimits {
        bytes_per_sec: 1000,
        stream_read: Duration::from_secs(1),
        report_interval: Duration::from_secs(2),
        ..PeerLimits::default()
    };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    // Three streams left open: one with nothing, one with half a header, one with a header
    // and part of its payload. Each is cut after the read deadline and counted.
    let stalls = [vec![], header(0x01, 100)[..4].to_vec(), [header(0x01, 100), vec![0; 10]].concat()];
    let mut held = Vec::new();
    for bytes in stalls {
        held.push(h.fire(pa, RawRequest { bytes, stall: true }).await);
    }
    let reports = a.abuse_reports(Abuse::Stalled, 3).await;
    println!("3 half-open streams, {} report(s)", reports.len());
    // 3 KB of bytes in one request overdraws a 1000 bytes/s budget: the next is refused.
    let big = h.send(pa, [header(0x01, 3000), vec![0; 3000]].concat()).await;
    assert!(error_text(&big).is_some_and(|r| r.starts_with("malformed request")), "{big:?}");
    let next = h.send(pa, encode_request(&Request::Hello(hello("KZ"))).expect("encodes")).await;
    assert!(error_text(&next).is_some_and(|r| r.contains("bytes/s")), "{next:?}");
    a.abuse_reports(Abuse::ByteRate, 1).await;
    // Once the budget has refilled, a request goes through again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = h.fire(pa, raw(&Request::Hello(hello("KZ")))).await;
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    let again = timeout(WAIT, again).await.expect("in time").expect("alive");
    assert!(matches!(decode_response(&again.expect("answered")), Ok(Response::Hello(_))));
    drop(held);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_read_buffer_are_answered_busy_until_it_frees() {
    let limits = PeerLimits {
        read_buffer: 80 * 1024,
        read_buffer_per_peer: 80 * 1024,
        stream_read: Duration::from_secs(5),
        ..PeerLimits::default()
    };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    // A push left half-sent: its 40,000 bytes hold 64 KiB of buffer until the deadline.
    let half = [header(0x02, 100_000), vec![0; 40_000]].concat();
    let stalled = h.fire(pa, RawRequest { bytes: half, stall: true }).await;
    // Another push of 20,000 bytes needs 16 KiB more than is left: answered busy, unread.
    let next = || [header(0x02, 20_000), vec![0; 20_000]].concat();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut answers = Vec::new();
    loop {
        let answer = error_text(&h.send(pa, next()).await);
        let busy = answer.as_deref().is_some_and(|r| r.starts_with("busy"));
        answers.push(answer);
        if busy || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.last().is_some_and(|r| r.as_deref().is_some_and(|r| r.starts_with("busy"))),
        "{answers:?}"
    );
    // Once the deadline cuts the stalled stream, its share is free: the same push is read
    // whole (and found malformed).
    a.abuse_reports(Abuse::Stalled, 1).await;
    let again = h.send(pa, next()).await;
    assert!(error_text(&again).is_some_and(|r| r.starts_with("malformed request")), "{again:?}");
    drop(stalled);
    a.stop().await;
}

// One member holding its share of the read buffer with half-sent pushes does not make
// another member's requests busy: its own next ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_holding_its_share_of_the_read_buffer_leaves_the_rest_to_others() {
    let limits = PeerLimits {
        read_buffer: 80 * 1024,
        read_buffer_per_peer: 40 * 1024,
        stream_read: Duration::from_secs(10),
        ..PeerLimits::default()
    };
    let (ka, kk, ku) =
        (Keypair::generate_ed25519(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (pa, pk, pu) = (ka.public().to_peer_id(), kk.public().to_peer_id(), ku.public().to_peer_id());
    let roster = vec![entry("AA", pa, vec![]), entry("KZ", pk, vec![]), entry("UZ", pu, vec![])];
    let a = TestNode::start_limited("AA", ka, roster, limits).await;
    let (mut kz, mut uz) = (Hostile::start(kk), Hostile::start(ku));
    for h in [&mut kz, &mut uz] {
        h.dial(&a.addr).await;
        assert!(matches!(h.next_event().await, HostileEvent::Established(p) if p == pa));
    }
    // KZ's pushes left half-sent: 16,000 bytes of each arrive, and each being read holds
    // 32 KiB of buffer. Its share holds one of them; the rest are answered busy (which KZ,
    // never finishing its requests, does not read). Without a bound per peer, two would
    // be held, and what they left of the whole buffer is less than any request's first
    // 16 KiB.
    let half = || RawRequest { bytes: [header(0x02, 100_000), vec![0; 16_000]].concat(), stall: true };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(kz.fire(pa, half()).await);
    }
    // Once they are being read, a whole push of KZ's is answered busy too.
    let whole = || [header(0x02, 20_000), vec![0; 20_000]].concat();
    timeout(WAIT, async {
        while !error_text(&kz.send(pa, whole()).await).is_some_and(|r| r.starts_with("busy")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("KZ's share is held");
    // UZ's push of 20,000 bytes (32 KiB of buffer) is read whole, and found malformed.
    let push = uz.send(pa, whole()).await;
    assert!(error_text(&push).is_some_and(|r| r.starts_with("malformed request")), "{push:?}");
    drop(held);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_closed_before_their_first_byte_count_against_the_message_rate() {
    let limits = PeerLimits { messages_per_sec: 1, ..PeerLimits::default() };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    // Each one is what a requester that gave up leaves, and costs a token: one second's
    // worth is one, so the rest of a burst of eight is over the rate.
    let mut empties = Vec::new();
    for _ in 0..8 {
        empties.push(h.fire(pa, RawRequest { bytes: vec![], stall: false }).await);
    }
    let (ev, skipped) = a.wait_for(|e| matches!(e, NetEvent::Abuse { kind: Abuse::MessageRate, .. })).await;
    assert!(matches!(ev, NetEvent::Abuse { member, .. } if member == code("KZ")), "{ev:?}");
    assert!(!skipped.iter().any(|e| matches!(e, NetEvent::Inbound { .. })), "{skipped:?}");
    drop(empties);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_for_open_streams_costs_no_rate_token() {
    let limits = PeerLimits { messages_per_sec: 2, open_streams: 1, ..PeerLimits::default() };
    let (mut a, h) = limited_pair(limits).await;
    let pa = a.peer;
    // The first request is handed to the consumer and held unanswered: one token spent.
    let first = h.fire(pa, raw(&Request::Hello(hello("KZ")))).await;
    let (ev, _) = a.wait_for(|e| matches!(e, NetEvent::Inbound { .. })).await;
    let NetEvent::Inbound { id, .. } = ev else { unreachable!("matched above") };
    // The second is refused by the open-streams limit, and must not spend the last token.
    let second = h.send(pa, encode_request(&Request::Hello(hello("KZ"))).expect("encodes")).await;
    assert!(error_text(&second).is_some_and(|r| r.starts_with("too many open requests")), "{second:?}");
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    assert!(timeout(WAIT, first).await.expect("in time").expect("alive").is_ok());
    // At once (well within the half second a token takes to refill), a third is served.
    let third = h.fire(pa, raw(&Request::Hello(hello("KZ")))).await;
    let (ev, _) = a
        .wait_for(|e| {
            matches!(e, NetEvent::Inbound { .. } | NetEvent::Abuse { kind: Abuse::MessageRate, .. })
        })
        .await;
    let NetEvent::Inbound { id, .. } = ev else { panic!("the third request was refused: {ev:?}") };
    a.handle.respond(id, Response::Hello(hello("AA"))).await.expect("respond");
    let third = timeout(WAIT, third).await.expect("in time").expect("alive");
    assert!(matches!(decode_response(&third.expect("answered")), Ok(Response::Hello(_))));
    a.stop().await;
}

// ---- the task driven by hand, for races whose order cannot be chosen from outside ----

/// A net task whose swarm events and commands the test feeds one by one.
struct Driven {
    task: task::NetTask,
    events: mpsc::Receiver<NetEvent>,
}

impl Driven {
    /// A task for `AA` (no listener, nothing to dial) with `peers` as its roster.
    fn start(peers: Vec<PeerEntry>) -> Driven {
        let cfg = NetConfig {
            keypair: Keypair::generate_ed25519(),
            listen: vec![],
            peers,
            max_connections: 32,
            dial_backoff_max: Duration::from_secs(2),
            limits: PeerLimits::default(),
            liveness: Liveness::default(),
        };
        let (_commands, commands_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let (events_tx, events) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let task = task::NetTask::new(cfg, commands_rx, events_tx, CancellationToken::new()).expect("task");
        Driven { task, events }
    }

    fn swarm(&mut self, event: SwarmEvent<behaviour::BehaviourEvent>) {
        self.task.swarm_event_for_tests(event);
    }

    /// A connection `conn` with `peer` completed its handshake.
    fn established(&mut self, peer: PeerId, conn: usize) {
        self.swarm(SwarmEvent::ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(conn),
            endpoint: driven_endpoint(),
            num_established: std::num::NonZeroU32::MIN,
            concurrent_dial_errors: None,
            established_in: Duration::from_millis(1),
        });
    }

    /// `peer` answered a ping on `conn`: the connection is ready.
    fn ping_answered(&mut self, peer: PeerId, conn: usize) {
        self.swarm(SwarmEvent::Behaviour(behaviour::BehaviourEvent::Ping(libp2p::ping::Event {
            peer,
            connection: ConnectionId::new_unchecked(conn),
            result: Ok(Duration::from_millis(1)),
        })));
    }

    fn closed(&mut self, peer: PeerId, conn: usize) {
        self.swarm(SwarmEvent::ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(conn),
            endpoint: driven_endpoint(),
            num_established: 0,
            cause: None,
        });
    }

    fn set_peers(&mut self, peers: Vec<PeerEntry>) {
        let (reply, mut rx) = oneshot::channel();
        self.task.command_for_tests(Command::SetPeers { peers, reply });
        rx.try_recv().expect("answered at once").expect("roster accepted");
    }

    fn connected(&mut self) -> Vec<(MemberCode, PeerId)> {
        let (reply, mut rx) = oneshot::channel();
        self.task.command_for_tests(Command::Connected { reply });
        rx.try_recv().expect("answered at once")
    }

    /// The events emitted so far.
    fn events(&mut self) -> Vec<NetEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

fn driven_endpoint() -> libp2p::core::ConnectedPoint {
    libp2p::core::ConnectedPoint::Listener {
        local_addr: "/ip4/127.0.0.1/tcp/1".parse().expect("valid multiaddr"),
        send_back_addr: "/ip4/127.0.0.1/tcp/2".parse().expect("valid multiaddr"),
    }
}

#[tokio::test]
async fn a_late_answer_from_a_peer_removed_while_connecting_announces_nothing() {
    let me = Keypair::generate_ed25519().public().to_peer_id();
    let p = Keypair::generate_ed25519().public().to_peer_id();
    let mut a = Driven::start(vec![entry("AA", me, vec![]), entry("KZ", p, vec![])]);
    // Connected, not ready yet (no identify or ping answer), when KZ leaves the roster.
    a.established(p, 1);
    a.set_peers(vec![entry("AA", me, vec![])]);
    // The ping answer was already on its way; then the allow-list's close lands.
    a.ping_answered(p, 1);
    let events = a.events();
    assert!(!events.iter().any(|e| matches!(e, NetEvent::Connected { .. })), "{events:?}");
    a.closed(p, 1);
    let events = a.events();
    assert!(events.is_empty(), "nothing to report about a peer never announced: {events:?}");
    assert!(a.connected().is_empty());
}

#[tokio::test]
async fn a_peer_moved_to_another_member_reconnects_as_that_member() {
    let me = Keypair::generate_ed25519().public().to_peer_id();
    let p = Keypair::generate_ed25519().public().to_peer_id();
    let mut a = Driven::start(vec![entry("AA", me, vec![]), entry("KZ", p, vec![])]);
    a.established(p, 1);
    a.ping_answered(p, 1);
    // The PeerId moves from KZ to KY; the peer reconnects before the old connection's close
    // is reported.
    a.set_peers(vec![entry("AA", me, vec![]), entry("KY", p, vec![])]);
    a.established(p, 2);
    a.ping_answered(p, 2);
    a.closed(p, 1);
    let got: Vec<(&str, MemberCode)> = a
        .events()
        .iter()
        .filter_map(|e| match e {
            NetEvent::Connected { member, .. } => Some(("connected", *member)),
            NetEvent::Disconnected { member, .. } => Some(("disconnected", *member)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![("connected", code("KZ")), ("disconnected", code("KZ")), ("connected", code("KY"))]);
    assert_eq!(a.connected(), vec![(code("KY"), p)]);
}

#[tokio::test]
async fn refusals_beyond_the_remembered_peers_are_reported_as_a_count() {
    let me = Keypair::generate_ed25519().public().to_peer_id();
    let mut a = Driven::start(vec![entry("AA", me, vec![])]);
    let (mut itemised, mut counted, mut summaries) = (0, 0, 0);
    let mut refuse_one = |a: &mut Driven| {
        // A dial answered by a PeerId outside the roster, each time another one.
        let obtained = Keypair::generate_ed25519().public().to_peer_id();
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/3".parse().expect("valid multiaddr");
        a.swarm(SwarmEvent::OutgoingConnectionError {
            connection_id: ConnectionId::new_unchecked(0),
            peer_id: None,
            error: libp2p::swarm::DialError::WrongPeerId { obtained, address },
        });
        for e in a.events() {
            match e {
                NetEvent::Refused { peer, .. } if peer == obtained => itemised += 1,
                NetEvent::RefusedSummary { count } => {
                    counted += count;
                    summaries += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (itemised, counted, summaries)
    };
    for _ in 0..REFUSED_TRACKED_MAX {
        refuse_one(&mut a);
    }
    // The table is full of recent refusals: the next is counted, reported at once.
    assert_eq!(refuse_one(&mut a), (REFUSED_TRACKED_MAX, 1, 1));
    // Two more within the interval: counted, not reported yet.
    refuse_one(&mut a);
    assert_eq!(refuse_one(&mut a), (REFUSED_TRACKED_MAX, 1, 1));
    // Once the interval has passed, the next refusal is itemised (the table has room
    // again) and the two counted ones are reported with it.
    a.task.age_refusals_for_tests(REFUSED_REPORT_INTERVAL);
    assert_eq!(refuse_one(&mut a), (REFUSED_TRACKED_MAX + 1, 3, 2));
}

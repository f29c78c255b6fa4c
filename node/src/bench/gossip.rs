//! Peer baseline: the same signed projections published over libp2p gossipsub — what a
//! libp2p user would build first, with no per-peer policy, no receipts and no storage.
//!
//! One publisher and `subscribers` subscriber swarms in this process, each on the
//! product's transport (TCP with `TCP_NODELAY`, TLS 1.3, yamux), the publisher dialling
//! every subscriber (a star, like tamga's origin pushing to each audience member).
//! Gossipsub's own message signing is off (`MessageAuthenticity::Anonymous`, message ids
//! by content hash): the projection already carries the origin's signature, and each
//! subscriber decodes every projection and verifies it against the origin's key in
//! batches ([`tamga_protocol::verify_many`], as tamga's receivers do), so the work per
//! message on the receiving side is the same cryptography as tamga's, minus the store.
//!
//! Gossipsub drops what overflows a peer's send queue, so the publisher keeps at most
//! [`WINDOW`] messages ahead of the slowest subscriber (flow control a user would add
//! after losing messages); nothing may be lost, or the measurement fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity::Keypair, tcp, tls, yamux, Multiaddr, Swarm, SwarmBuilder};
use sha2::{Digest as _, Sha256};
use tamga_protocol::{Projection, VerifyingKey};
use tokio::sync::{mpsc, oneshot};

/// The topic every projection is published on.
pub const TOPIC: &str = "tamga-bench/projections";
/// Most messages the publisher keeps ahead of the slowest subscriber.
pub const WINDOW: u64 = 1_000;
/// Messages per publish command.
pub const CHUNK: usize = 100;
/// Projections one subscriber verifies in one batch, at most.
pub const VERIFY_BATCH: usize = 64;
/// Largest gossipsub message.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Capacity of the channel from a subscriber's swarm to its verifier.
pub const VERIFY_QUEUE: usize = 1_024;
/// How long the swarms may take to connect and subscribe, and the messages to arrive.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Projections decoded and verified.
    verified: AtomicU64,
    /// Projections that failed to decode or verify.
    bad: AtomicU64,
    /// (sequence number, when verified) of every verified projection.
    arrivals: Mutex<Vec<(u64, Instant)>>,
}

/// Publisher commands.
enum Cmd {
    /// Publish these messages; answers with when each was handed to gossipsub.
    Publish(Vec<Vec<u8>>, oneshot::Sender<Result<Vec<Instant>, String>>),
}

type Gossip = gossipsub::Behaviour;

fn swarm() -> Result<Swarm<Gossip>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| MessageId::from(Sha256::digest(&m.data).to_vec()))
        .max_transmit_size(MAX_MESSAGE_BYTES)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    Ok(SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), tls::Config::new, yamux::Config::default)
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_behaviour(|_| {
            Gossip::new(MessageAuthenticity::Anonymous, config)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build())
}

/// Verify what arrives on `rx` in batches; count and time it in `seen`.
async fn verifier(mut rx: mpsc::Receiver<Vec<u8>>, key: VerifyingKey, seen: Arc<Seen>) {
    let mut buf = Vec::with_capacity(VERIFY_BATCH);
    while rx.recv_many(&mut buf, VERIFY_BATCH).await > 0 {
        let decoded: Vec<Option<Projection>> =
            buf.drain(..).map(|b| tamga_protocol::codec::decode_stored::<Projection>(&b).ok()).collect();
        let ok: Vec<&Projection> = decoded.iter().flatten().collect();
        let items: Vec<(&Projection, &VerifyingKey)> = ok.iter().map(|p| (*p, &key)).collect();
        let results = tamga_protocol::verify_many(&items);
        let now = Instant::now();
        let mut good = 0u64;
        {
            let mut arrivals = seen.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            for (p, r) in ok.iter().zip(&results) {
                if r.is_ok() {
                    arrivals.push((p.envelope.seq, now));
                    good += 1;
                }
            }
        }
        seen.verified.fetch_add(good, Ordering::Relaxed);
        seen.bad.fetch_add(decoded.len() as u64 - good, Ordering::Relaxed);
    }
}

/// A subscriber: its swarm, listening; returns its address once it listens.
async fn subscriber(key: VerifyingKey, seen: Arc<Seen>) -> Result<(Multiaddr, tokio::task::JoinHandle<()>)> {
    let mut s = swarm()?;
    s.behaviour_mut().subscribe(&IdentTopic::new(TOPIC)).map_err(|e| anyhow::anyhow!("subscribe: {e}"))?;
    s.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            break address;
        }
    };
    let (tx, rx) = mpsc::channel(VERIFY_QUEUE);
    let v = tokio::spawn(verifier(rx, key, seen));
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                s.select_next_some().await
            {
                if tx.send(message.data).await.is_err() {
                    break;
                }
            }
        }
        v.abort();
    });
    Ok((addr, task))
}

/// The publisher's task: owns its swarm, answers [`Cmd`]s; `ready` fires once
/// `subscribers` peers have subscribed to the topic.
async fn publisher(
    mut s: Swarm<Gossip>,
    subscribers: usize,
    ready: oneshot::Sender<()>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let topic = IdentTopic::new(TOPIC);
    let mut ready = Some(ready);
    let mut subscribed = std::collections::HashSet::new();
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Publish(msgs, reply)) => {
                    let mut at = Vec::with_capacity(msgs.len());
                    let mut failed = None;
                    for m in msgs {
                        match s.behaviour_mut().publish(topic.clone(), m) {
                            Ok(_) => at.push(Instant::now()),
                            Err(e) => {
                                failed = Some(format!("gossipsub publish: {e}"));
                                break;
                            }
                        }
                    }
                    let _ = reply.send(failed.map_or(Ok(at), Err));
                }
                None => return,
            },
            ev = s.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) = ev {
                    subscribed.insert(peer_id);
                    if subscribed.len() >= subscribers {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                }
            }
        }
    }
}

/// Projections verified by the slowest subscriber.
fn slowest(seen: &[Arc<Seen>]) -> u64 {
    seen.iter().map(|s| s.verified.load(Ordering::Relaxed)).min().unwrap_or(0)
}

/// Wait until every subscriber verified `want` projections; fail on a bad one or a loss.
async fn wait_all(seen: &[Arc<Seen>], want: u64) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while slowest(seen) < want {
        let bad: u64 = seen.iter().map(|s| s.bad.load(Ordering::Relaxed)).sum();
        ensure!(bad == 0, "{bad} gossipsub messages failed to decode or verify");
        ensure!(Instant::now() < deadline, "gossipsub lost messages: {} of {want} arrived", slowest(seen));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// What the gossipsub baseline measured.
#[derive(Debug, Clone)]
pub struct GossipFigures {
    /// Projections per second until every subscriber verified every one.
    pub records_per_sec: f64,
    /// Publish → verified by every subscriber, at the steady rate: p50, p95, p99 (ms).
    pub latency_ms: [f64; 3],
}

/// Run the baseline: publish `bulk` as fast as the window allows, then `steady` at
/// `per_tick` messages every `tick`; every message is an encoded [`Projection`] signed
/// by `key`'s owner, whose envelope sequence number is unique.
pub async fn measure(
    subscribers: usize,
    key: VerifyingKey,
    bulk: Vec<Vec<u8>>,
    steady: Vec<Vec<u8>>,
    per_tick: usize,
    tick: Duration,
) -> Result<GossipFigures> {
    ensure!(subscribers >= 1, "the gossipsub baseline needs a subscriber");
    let seen: Vec<Arc<Seen>> = (0..subscribers).map(|_| Arc::new(Seen::default())).collect();
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for s in &seen {
        let (addr, task) = subscriber(key, s.clone()).await?;
        addrs.push(addr);
        tasks.push(task);
    }
    let mut origin = swarm()?;
    for a in addrs {
        origin.dial(a)?;
    }
    let (ready_tx, ready_rx) = oneshot::channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    tasks.push(tokio::spawn(publisher(origin, subscribers, ready_tx, cmd_rx)));
    let result = async {
        tokio::time::timeout(TIMEOUT, ready_rx)
            .await
            .context("the gossipsub subscribers did not all subscribe")?
            .context("the publisher stopped")?;
        let publish = |msgs: Vec<Vec<u8>>| {
            let cmd_tx = cmd_tx.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                cmd_tx.send(Cmd::Publish(msgs, tx)).await.map_err(|_| anyhow::anyhow!("publisher gone"))?;
                rx.await.context("publisher gone")?.map_err(|e| anyhow::anyhow!(e))
            }
        };
        // Throughput.
        let total = bulk.len() as u64;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut chunks = bulk.into_iter().peekable();
        while chunks.peek().is_some() {
            while sent > slowest(&seen) + WINDOW {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            let chunk: Vec<Vec<u8>> = chunks.by_ref().take(CHUNK).collect();
            sent += chunk.len() as u64;
            publish(chunk).await?;
        }
        wait_all(&seen, total).await?;
        let records_per_sec = total as f64 / start.elapsed().as_secs_f64();

        // Latency at the steady rate.
        let first_seq = steady
            .first()
            .and_then(|b| tamga_protocol::codec::decode_stored::<Projection>(b).ok())
            .map(|p| p.envelope.seq)
            .context("steady-rate messages")?;
        let n = steady.len() as u64;
        let mut published: Vec<Instant> = Vec::with_capacity(steady.len());
        let mut ticker = tokio::time::interval(tick);
        let mut it = steady.into_iter().peekable();
        while it.peek().is_some() {
            ticker.tick().await;
            published.extend(publish(it.by_ref().take(per_tick).collect()).await?);
        }
        wait_all(&seen, total + n).await?;
        let mut last: Vec<Option<Instant>> = vec![None; published.len()];
        for s in &seen {
            for (seq, at) in s.arrivals.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let Some(i) = seq.checked_sub(first_seq).map(|i| i as usize) else { continue };
                if let Some(slot) = last.get_mut(i) {
                    *slot = Some(slot.map_or(*at, |l| l.max(*at)));
                }
            }
        }
        let mut lat: Vec<f64> = Vec::with_capacity(published.len());
        for (p, l) in published.iter().zip(&last) {
            let Some(l) = l else { bail!("a steady-rate message has no arrival") };
            lat.push(l.saturating_duration_since(*p).as_secs_f64() * 1e3);
        }
        let latency_ms = super::percentiles(&mut lat);
        Ok(GossipFigures { records_per_sec, latency_ms })
    }
    .await;
    drop(cmd_tx);
    for t in tasks {
        t.abort();
    }
    result
}

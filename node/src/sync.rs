//! Sync: the policy-gated dissemination of projections between members.
//!
//! Who owns what: the sync task owns the [`NetEvent`] receiver and the per-peer state
//! (hello results, last summaries); every request it makes or answers runs in its own
//! short task so that one slow peer never stalls the others. It decides nothing itself:
//! every send is decided by `tamga_config::decide` (own records) or `decide_relay`
//! (others') with the policy in force at send time, and every inbound projection is
//! checked by [`verify_inbound`] (invariant 4) before the writer stores it.
//!
//! The protocol, per pair of connected members:
//!
//! ```text
//!  connect ──► hello (agreement terms, roster digest) both ways
//!              │ agreements whose terms differ: nothing shared under them (audited)
//!              ▼
//!          summary exchange ──► each side pulls the ranges it lacks from the other;
//!              │                  the answer carries the projections the asker is in the
//!              │                  audience of, and the numbers withheld from it
//!              ▼
//!          steady state: new own records are pushed at once (answered by signed
//!          receipts); the summary exchange repeats every `anti_entropy_secs`
//! ```
//!
//! Feedback given on a received record waits in the store's outbox until its origin has
//! stored it: sent at once, then in rounds of at most [`OUTBOX_ROUND`] entries after each
//! hello with the origin — on connecting and on every anti-entropy tick — so an entry
//! whose send failed on a live connection goes again within one period. An entry its
//! origin refuses is audited the first time, sent again each round (the refusal may pass:
//! an origin restored from an older backup takes its shares back), and after
//! [`FEEDBACK_REFUSALS_GIVEN_UP`] refusals in a row leaves the outbox, audited with the
//! origin's last reason.
//!
//! Relaying falls out of the pull: a member cut off from an origin pulls the origin's
//! stream from any peer that holds it, if the agreement allows relaying; the projection
//! travels untouched and is verified against the origin's key. That a number is withheld
//! from the asker is no one's signed word: one marked withheld on a relay's word alone is
//! asked of its origin again once the two are connected ([`unconfirmed`]), after what
//! the pull still lacks. One this node's accept policy declines whoever sends it (its
//! origin included) is marked withheld on its own word, so that the stream's head passes
//! it, and is asked for again only once the files in force change (the writer's
//! `ask_again_if_policy_changed`); one refused only for who relayed it is asked of its
//! origin.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tamga_config::{Decision, Federation};
use tamga_protocol::{
    AgreementId, Digest, EntryKind, Hello, MemberCode, Projection, Pull, PullReply, Push, PushReply, Receipt,
    ReceiptItem, RecordId, Refusal, Request, Response, SeqRange, StreamKey, StreamSummary, Summary,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::daemon::Shared;
use crate::net::{NetEvent, NetHandle};
use crate::refusals::{Refusals, Window};
use crate::store::{OutboxKey, Reconciled};
use crate::writer::{now_ms, HeldByPeer, Taken};

/// Most projections asked for in one pull (one pull reply's worth).
pub const PULL_BATCH: usize = 256;
/// Most bytes of projections one push carries: its frame's limit, less room for the rest.
pub const PUSH_BYTES: usize = tamga_protocol::limits::frame::PUSH - 256 * 1024;
/// Most bytes of projections one pull reply carries: its frame's limit, less room for the
/// rest (its withheld ranges, at most [`tamga_protocol::limits::MAX_RANGES`]). A reply
/// full before the numbers asked for are all answered answers the first of them.
pub const PULL_REPLY_BYTES: usize = tamga_protocol::limits::frame::PULL_REPLY - 256 * 1024;
/// Most pulls one exchange of summaries makes to take back own streams from a peer.
pub const TAKE_BACK_PULLS: usize = 64;
/// Most ranges in one pull request.
pub const PULL_RANGES: usize = 64;
/// Pulls from one peer on the wire at once: no more than any peer's `limits.pending_pulls`
/// may be.
pub const PULLS_IN_FLIGHT: usize = 2;
const _: () = assert!(PULLS_IN_FLIGHT as u64 <= tamga_config::limits::MIN_PENDING_PULLS);
/// Pull rounds in a row that may bring no verified projection (only withheld numbers, or
/// nothing) before a pull from one peer stops until the next anti-entropy round. Rounds
/// that bring projections do not count: those are signed by their origins, so a peer
/// cannot make them up, while withheld numbers it could claim without end.
pub const PULL_IDLE_ROUNDS: u32 = 64;
/// Fewest projections a thread of [`verify_on_every_core`] checks: below it, a thread
/// costs more than it saves.
pub const VERIFY_PER_THREAD: usize = 64;

/// Capacity of the channel of new own projections to push.
pub const PUSH_QUEUE: usize = 1024;
/// Most outbox entries sent to one origin in one round (on connecting, then on each
/// anti-entropy tick), one at a time; the rest wait for the next round.
pub const OUTBOX_ROUND: usize = 64;
/// Refusals in a row of one piece of feedback by its origin (this node's run counting)
/// after which it leaves the outbox.
pub const FEEDBACK_REFUSALS_GIVEN_UP: u32 = 5;

/// What a hello told us about one agreement we share with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestStatus {
    /// Both hold the same terms (text, and the catalog's definition of its categories):
    /// projections flow under it.
    Match,
    /// The terms differ: nothing is shared under it.
    Mismatch,
    /// The peer does not hold it.
    Missing,
}

/// What this node knows of one roster peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerState {
    /// Connected now (through at least one of its nodes).
    pub connected: bool,
    /// Its nodes (PeerIds) connected now: a member may list several in the roster, and
    /// it is offline only once the last of them is gone.
    #[serde(skip)]
    pub nodes: BTreeSet<libp2p::PeerId>,
    /// Last time it was connected or answered (ms).
    pub last_seen_ms: Option<i64>,
    /// The agreements shared with it, and whether their terms match (as of its hello).
    pub agreements: BTreeMap<AgreementId, DigestStatus>,
    /// The agreement terms its last hello gave: what every decision compares with the
    /// terms in force at that moment, so a reload here needs no new hello to take effect.
    #[serde(skip)]
    pub digests: BTreeMap<AgreementId, Digest>,
    /// Its roster digest differs from ours.
    pub roster_mismatch: bool,
    /// Its contiguous mark per stream, from its last summary.
    pub streams: BTreeMap<String, u64>,
    /// Projections pushed to it (each push counts once, whatever became of it).
    pub pushed: u64,
    /// Of those, acknowledged by a receipt it signed.
    pub receipted: u64,
    /// Of those, refused by it (with a reason, which it audits).
    pub refused: u64,
    /// When the current anti-entropy period began (ms) and how many of the checkpoints it
    /// showed in it were kept ([`SyncState::keep_checkpoint`]).
    #[serde(skip)]
    pub checkpoints_kept: (i64, u32),
}

impl PeerState {
    /// Projections pushed to it that neither a receipt nor a refusal answered: pushes in
    /// flight, and pushes that failed (delivered later by anti-entropy, which carries no
    /// receipt, or not yet).
    pub fn receipts_outstanding(&self) -> u64 {
        self.pushed.saturating_sub(self.receipted + self.refused)
    }
}

/// The sync task's state, shared with the API's peers view.
#[derive(Debug, Default)]
pub struct SyncState {
    peers: Mutex<HashMap<MemberCode, PeerState>>,
    /// Streams being pulled now: each is pulled from one peer at a time.
    pulling: Mutex<std::collections::HashSet<StreamKey>>,
    /// Origins whose outbox is being sent now: one round per origin at a time.
    sending: Mutex<std::collections::HashSet<MemberCode>>,
    /// Per origin, the last outbox entry it answered: the next round starts after it.
    outbox_answered: Mutex<HashMap<MemberCode, OutboxKey>>,
    /// Refused inbound projections per peer and reason, in the current report interval.
    refusals: Refusals<(MemberCode, String)>,
    /// How many times in a row each outbox entry was refused by its origin, this run.
    feedback_refused: Mutex<HashMap<OutboxKey, u32>>,
}

/// Refused projections audited one by one per peer, reason and report interval; the rest
/// are counted into one summary entry ([`Refusals`]).
pub const REFUSALS_AUDITED: u64 = 16;

/// Most checkpoints of a peer's log kept per anti-entropy period. A peer shows its latest
/// in each hello, one each way per period, and again on each connection; each kept is
/// stored for good, so one a peer sends in a flood of hellos is not.
pub const PEER_CHECKPOINTS_KEPT: u32 = 4;

impl SyncState {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<MemberCode, PeerState>) -> R) -> R {
        f(&mut self.peers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A copy of every peer's state.
    pub fn snapshot(&self) -> HashMap<MemberCode, PeerState> {
        self.with(|p| p.clone())
    }

    /// Claim the streams not already being pulled; returns those claimed.
    fn claim(&self, streams: Vec<StreamKey>) -> Vec<StreamKey> {
        let mut p = self.pulling.lock().unwrap_or_else(|p| p.into_inner());
        streams.into_iter().filter(|s| p.insert(s.clone())).collect()
    }

    fn release(&self, streams: &[StreamKey]) {
        let mut p = self.pulling.lock().unwrap_or_else(|p| p.into_inner());
        for s in streams {
            p.remove(s);
        }
    }

    /// Claim `origin`'s outbox for a round; false if a round for it is still running.
    fn claim_outbox(&self, origin: MemberCode) -> bool {
        self.sending.lock().unwrap_or_else(|p| p.into_inner()).insert(origin)
    }

    fn release_outbox(&self, origin: MemberCode) {
        self.sending.lock().unwrap_or_else(|p| p.into_inner()).remove(&origin);
    }

    /// The last of `origin`'s outbox entries it answered, if any since this node started.
    fn outbox_answered(&self, origin: MemberCode) -> Option<OutboxKey> {
        self.outbox_answered.lock().unwrap_or_else(|p| p.into_inner()).get(&origin).cloned()
    }

    fn set_outbox_answered(&self, origin: MemberCode, key: OutboxKey) {
        self.outbox_answered.lock().unwrap_or_else(|p| p.into_inner()).insert(origin, key);
    }

    /// Count a refusal of outbox entry `key` by its origin; the refusals in a row so far.
    fn feedback_refused(&self, key: &OutboxKey) -> u32 {
        let mut m = self.feedback_refused.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_default();
        *n += 1;
        *n
    }

    /// Outbox entry `key` is out of the outbox, or was answered other than by a refusal.
    fn feedback_answered(&self, key: &OutboxKey) {
        self.feedback_refused.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Count a refusal; whether it is to be audited on its own. An interval that has
    /// ended with refusals counted but not audited yields its summary.
    fn refused(
        &self,
        peer: MemberCode,
        reason: &str,
        now: i64,
        interval_ms: i64,
    ) -> (bool, Option<AuditEvent>) {
        // Reasons start with their label (`signature: ...`): one window per label.
        let label = reason.split(':').next().unwrap_or(reason);
        let (one_by_one, ended) =
            self.refusals.admit((peer, label.to_owned()), REFUSALS_AUDITED, interval_ms, now, reason);
        (one_by_one, ended.map(summary))
    }

    /// Summaries of the intervals that have ended with refusals counted but not audited.
    fn refusal_summaries(&self, now: i64, interval_ms: i64) -> Vec<AuditEvent> {
        self.refusals.ended(now, interval_ms, false).into_iter().map(summary).collect()
    }

    /// Whether to keep a checkpoint `peer` showed at `now`: one of the first
    /// [`PEER_CHECKPOINTS_KEPT`] of the period of `period_ms` under way.
    fn keep_checkpoint(&self, peer: MemberCode, now: i64, period_ms: i64) -> bool {
        self.with(|p| {
            let (since, kept) = &mut p.entry(peer).or_default().checkpoints_kept;
            if now - *since >= period_ms {
                (*since, *kept) = (now, 0);
            }
            *kept += 1;
            *kept <= PEER_CHECKPOINTS_KEPT
        })
    }

    /// Whether `peer`'s terms of agreement `a` (from its last hello) are the ones in force
    /// here.
    fn agreement_ok(&self, fed: &Federation, peer: MemberCode, a: &AgreementId) -> bool {
        let Some(ours) = fed.agreement(a).map(|a| a.terms) else { return false };
        self.with(|p| p.get(&peer).and_then(|s| s.digests.get(a)) == Some(&ours))
    }
}

/// The audit entry counting the refusals of an interval that were not audited one by one.
fn summary(((peer, label), w): ((MemberCode, String), Window)) -> AuditEvent {
    AuditEvent::new(Action::Rejected, Outcome::Refused).peer(peer).reason(format!(
        "{label}: {} more refused since {} (after {} audited one by one); the latest: {}",
        w.counted,
        crate::audit::rfc3339(w.since_ms),
        w.audited,
        w.latest
    ))
}

/// Everything a sync job needs; cheap to clone into per-request tasks.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    net: NetHandle,
    state: Arc<SyncState>,
}

/// Start the sync task.
pub fn spawn(
    shared: Arc<Shared>,
    net: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
    mut policies: tokio::sync::watch::Receiver<Arc<Federation>>,
    mut pushes: mpsc::Receiver<Vec<Projection>>,
    state: Arc<SyncState>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let ctx = Ctx { shared, net, state };
    spawn_withdrawer(ctx.net.clone(), policies.clone(), cancel.clone());
    tokio::spawn(async move {
        let period = Duration::from_secs(ctx.shared.config.network.anti_entropy_secs.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Ok(()) = policies.changed() => {
                    let fed = policies.borrow_and_update().clone();
                    on_new_policy(&ctx, &fed).await;
                }
                Some(batch) = pushes.recv() => push_new(&ctx, batch).await,
                ev = events.recv() => match ev {
                    Some(ev) => on_event(&ctx, ev).await,
                    None => break,
                },
                _ = tick.tick() => {
                    ctx.shared.writer.purge_expired().await;
                    for ev in ctx.state.refusal_summaries(now_ms(), report_ms(&ctx)) {
                        ctx.shared.writer.audit(ev).await;
                    }
                    for member in connected_members(&ctx).await {
                        let c = ctx.clone();
                        // A hello each round carries our latest audit checkpoint to the peer.
                        tokio::spawn(async move {
                            if let Ok(Response::Hello(h)) = c.net.request(member, Request::Hello(hello(&c.shared, member))).await {
                                on_hello(&c, member, &h).await;
                            }
                            // Feedback whose send failed on this connection goes again.
                            send_outbox(&c, member).await;
                            anti_entropy(&c, member).await;
                        });
                    }
                }
            }
        }
        tracing::debug!("sync stopped");
    })
}

/// The members connected now, each once however many of its nodes are.
async fn connected_members(ctx: &Ctx) -> Vec<MemberCode> {
    let mut members: Vec<MemberCode> =
        ctx.net.connected().await.unwrap_or_default().into_iter().map(|(m, _)| m).collect();
    members.dedup(); // sorted by member, then node
    members
}

async fn on_event(ctx: &Ctx, ev: NetEvent) {
    let m = &ctx.shared.metrics;
    match ev {
        NetEvent::Connected { member, peer } => {
            let first = ctx.state.with(|p| {
                let s = p.entry(member).or_default();
                s.nodes.insert(peer);
                s.last_seen_ms = Some(now_ms());
                !std::mem::replace(&mut s.connected, true)
            });
            if first {
                m.peers_connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ctx.shared
                .writer
                .audit(
                    AuditEvent::new(Action::PeerConnected, Outcome::Ok).peer(member).reason(peer.to_string()),
                )
                .await;
            let c = ctx.clone();
            tokio::spawn(async move {
                match c.net.request(member, Request::Hello(hello(&c.shared, member))).await {
                    Ok(Response::Hello(h)) => {
                        on_hello(&c, member, &h).await;
                        send_outbox(&c, member).await;
                        anti_entropy(&c, member).await;
                    }
                    Ok(other) => tracing::warn!(%member, reply = other.name(), "unexpected reply to hello"),
                    Err(e) => tracing::debug!(%member, error = %e, "hello failed"),
                }
            });
        }
        NetEvent::Disconnected { member, peer } => {
            let last = ctx.state.with(|p| {
                let s = p.entry(member).or_default();
                s.nodes.remove(&peer);
                s.last_seen_ms = Some(now_ms());
                s.nodes.is_empty() && std::mem::replace(&mut s.connected, false)
            });
            if last {
                m.peers_connected.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            ctx.shared
                .writer
                .audit(
                    AuditEvent::new(Action::PeerDisconnected, Outcome::Ok)
                        .peer(member)
                        .reason(peer.to_string()),
                )
                .await;
        }
        NetEvent::Refused { peer, addr } => {
            let mut ev = AuditEvent::new(Action::PeerRefused, Outcome::Refused)
                .reason(format!("not in the roster{}", addr.map(|a| format!(" ({a})")).unwrap_or_default()));
            ev.peer_id = Some(peer.to_string());
            ctx.shared.writer.audit(ev).await;
        }
        NetEvent::RefusedSummary { count } => {
            let ev = AuditEvent::new(Action::PeerRefused, Outcome::Refused).reason(format!(
                "{count} further connection attempts from peers outside the roster refused, not itemised"
            ));
            ctx.shared.writer.audit(ev).await;
        }
        NetEvent::Abuse { member, kind, count, detail, .. } => {
            // One entry per peer and kind per report interval, however many requests it
            // stands for (the net task counts them).
            m.rejected.add(kind.name(), count);
            let reason = format!("{kind}: {count} refused since the last report; the latest: {detail}");
            ctx.shared
                .writer
                .audit(AuditEvent::new(Action::Rejected, Outcome::Refused).peer(member).reason(reason))
                .await;
        }
        NetEvent::Inbound { member, id, request, .. } => {
            let c = ctx.clone();
            tokio::spawn(async move {
                let resp = answer(&c, member, request).await;
                if let Err(e) = c.net.respond(id, resp).await {
                    tracing::debug!(%member, error = %e, "response not sent");
                }
            });
        }
    }
}

/// Withdraw the pushes still waiting for an outbound slot as soon as a new policy set is
/// in force: they were decided under the one before (invariant 1). Each is audited (see
/// [`send_push`]), and what the new policy allows goes by anti-entropy, decided again as
/// it is answered. A task of its own, so that the withdrawal does not wait for the sync
/// loop to finish what it is doing (storing a push's audit entries, an event).
fn spawn_withdrawer(
    net: NetHandle,
    mut policies: tokio::sync::watch::Receiver<Arc<Federation>>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = policies.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    policies.borrow_and_update();
                    match net.withdraw_queued_pushes().await {
                        Ok(0) | Err(_) => {}
                        Ok(n) => tracing::info!(pushes = n, "pushes queued under the policy before withdrawn"),
                    }
                }
            }
        }
    });
}

/// A new policy set is in force: the roster takes effect at once (a removed member is
/// disconnected, a new one dialled), and every connected peer hears our new agreement
/// digests. (Pushes queued under the set before are withdrawn by [`spawn_withdrawer`].)
async fn on_new_policy(ctx: &Ctx, fed: &Federation) {
    if let Err(e) = ctx.net.set_peers(crate::daemon::peer_entries(fed)).await {
        tracing::error!(error = %e, "the new roster could not be applied to the network");
    }
    for member in connected_members(ctx).await {
        let c = ctx.clone();
        tokio::spawn(async move {
            if let Ok(Response::Hello(h)) =
                c.net.request(member, Request::Hello(hello(&c.shared, member))).await
            {
                on_hello(&c, member, &h).await;
            }
        });
    }
}

/// Our hello to `peer`: the terms of the agreements it is a party to, and no others (a
/// bilateral agreement's id and terms are its parties' business).
fn hello(shared: &Shared, peer: MemberCode) -> Hello {
    let fed = shared.fed();
    let agreements = fed
        .agreement_terms()
        .into_iter()
        .filter(|(a, _)| fed.agreement(a).is_some_and(|a| a.is_party(peer)))
        .collect();
    Hello {
        member: shared.config.member,
        roster_digest: fed.roster.digest(),
        agreements,
        // Only one a flush made durable: a peer keeps it as a witness of our log.
        checkpoint: shared.writer.durable_checkpoint(),
    }
}

/// Record what a peer's hello says of the agreements we share with it.
async fn on_hello(ctx: &Ctx, member: MemberCode, h: &Hello) {
    let fed = ctx.shared.fed();
    // Keep the peer's latest audit checkpoint as a witness of its log, if it signed it.
    if let Some(cp) = &h.checkpoint {
        let now = now_ms();
        if cp.member == member && fed.roster.verifying_keys(member).iter().any(|k| cp.verify(k).is_ok()) {
            let period_ms =
                1000 * i64::try_from(ctx.shared.config.network.anti_entropy_secs).unwrap_or(i64::MAX / 1000);
            if ctx.state.keep_checkpoint(member, now, period_ms.max(1000)) {
                ctx.shared.writer.peer_checkpoint(cp.clone()).await;
            }
        } else {
            let why = "hello: a hello carried a checkpoint not signed by the peer's roster key";
            ctx.shared.metrics.rejected.add("hello", 1);
            audit_refusal(ctx, member, why, now, || {
                AuditEvent::new(Action::Rejected, Outcome::Refused).peer(member).reason(why)
            })
            .await;
        }
    }
    let theirs: HashMap<&AgreementId, &Digest> = h.agreements.iter().map(|(a, d)| (a, d)).collect();
    let mut statuses = BTreeMap::new();
    for a in fed.my_agreements().filter(|a| a.is_party(member)) {
        let st = match theirs.get(&a.id) {
            Some(d) if **d == a.terms => DigestStatus::Match,
            Some(_) => DigestStatus::Mismatch,
            None => DigestStatus::Missing,
        };
        statuses.insert(a.id.clone(), st);
    }
    let newly_mismatched: Vec<AgreementId> = ctx.state.with(|p| {
        let s = p.entry(member).or_default();
        let before = std::mem::replace(&mut s.agreements, statuses.clone());
        // Only of agreements it is a party to: naming another's with the right digest
        // (learnt from its parties) matches nothing.
        s.digests = h
            .agreements
            .iter()
            .filter(|(a, _)| fed.agreement(a).is_some_and(|a| a.is_party(member)))
            .cloned()
            .collect();
        s.roster_mismatch = h.roster_digest != fed.roster.digest();
        s.last_seen_ms = Some(now_ms());
        statuses
            .iter()
            .filter(|(a, st)| {
                **st == DigestStatus::Mismatch && before.get(*a) != Some(&DigestStatus::Mismatch)
            })
            .map(|(a, _)| a.clone())
            .collect()
    });
    for a in newly_mismatched {
        ctx.shared
            .writer
            .audit(
                AuditEvent::new(Action::DigestMismatch, Outcome::Refused).peer(member).agreement(a).reason(
                    "the peer holds different terms of this agreement (its text, or the catalog's \
                         definition of a category it covers); nothing is shared under it",
                ),
            )
            .await;
    }
}

/// Answer one request from a roster peer.
async fn answer(ctx: &Ctx, member: MemberCode, req: Request) -> Response {
    match req {
        Request::Hello(h) => {
            if h.member != member {
                let why = format!("hello names {} but the connection is {member}'s", h.member);
                ctx.shared.metrics.rejected.add("hello", 1);
                audit_refusal(ctx, member, &why, now_ms(), || {
                    AuditEvent::new(Action::Rejected, Outcome::Refused).peer(member).reason(why.clone())
                })
                .await;
                return Response::Error(why);
            }
            on_hello(ctx, member, &h).await;
            Response::Hello(hello(&ctx.shared, member))
        }
        Request::Push(p) => Response::Push(on_push(ctx, member, p.projections).await),
        Request::Summary(s) => {
            let c = ctx.clone();
            let theirs = s.clone();
            tokio::spawn(async move { pull_from(&c, member, &theirs).await });
            Response::Summary(summary_for(ctx, member))
        }
        Request::Pull(p) => Response::Pull(on_pull(ctx, member, &p).await),
        Request::Feedback(f) => match on_feedback(ctx, member, f).await {
            Ok(()) => Response::FeedbackStored,
            Err(why) => {
                ctx.shared.metrics.rejected.add("feedback", 1);
                // The giver sends again each round: audited as other refusals are.
                let reason = format!("feedback: {why}");
                audit_refusal(ctx, member, &reason, now_ms(), || {
                    AuditEvent::new(Action::Rejected, Outcome::Refused).peer(member).reason(reason.clone())
                })
                .await;
                Response::Error(why)
            }
        },
    }
}

/// Audit a refusal of `peer`'s through the refusal window: the first few of an interval
/// one by one (`entry`), the rest counted in the interval's summary.
async fn audit_refusal(
    ctx: &Ctx,
    peer: MemberCode,
    reason: &str,
    now: i64,
    entry: impl FnOnce() -> AuditEvent,
) {
    let (one_by_one, summary) = ctx.state.refused(peer, reason, now, report_ms(ctx));
    if let Some(ev) = summary {
        ctx.shared.writer.audit(ev).await;
    }
    if one_by_one {
        ctx.shared.writer.audit(entry()).await;
    }
}

/// Why an inbound projection was refused (its `as_str` names the metric label).
fn refuse(ctx: &Ctx, label: &'static str) -> &'static str {
    ctx.shared.metrics.rejected.add(label, 1);
    label
}

/// Invariant 4: signature by the origin's roster key; origin, sender and receiver are
/// parties; the receiver is in the audience; the category is in the agreement, each
/// revealed value is what ingest here would have made of it (of its field's type, within
/// its limits, in normal form), and no field the agreement redacts is revealed; the
/// agreement's terms match with the sender's; the local accept policy allows it.
/// `signed` is the result of checking the origin's signature (batched by the caller).
fn verify_inbound<'f>(
    ctx: &Ctx,
    fed: &'f Federation,
    sender: MemberCode,
    p: &Projection,
    signed: Option<Result<RecordId, tamga_protocol::disclosure::VerifyError>>,
    now: i64,
) -> Result<(RecordId, &'f tamga_config::Agreement), String> {
    let me = fed.me;
    let Some(agreement) = fed.agreement(&p.envelope.agreement) else {
        return Err(format!(
            "{}: unknown agreement {}",
            refuse(ctx, "unknown_agreement"),
            p.envelope.agreement
        ));
    };
    if !ctx.state.agreement_ok(fed, sender, &agreement.id) {
        return Err(format!(
            "{}: agreement {} not matched with {sender}",
            refuse(ctx, "digest"),
            agreement.id
        ));
    }
    let keys = fed.roster.verifying_keys(p.header.origin);
    if keys.is_empty() {
        return Err(format!("{}: origin {} not in the roster", refuse(ctx, "origin"), p.header.origin));
    }
    // Batch verification checked the first key; a member with several nodes may have signed
    // with another.
    let id = match signed {
        Some(Ok(id)) => id,
        Some(Err(e)) if e != tamga_protocol::disclosure::VerifyError::BadSignature => {
            return Err(format!("{}: {e}", refuse(ctx, "malformed")));
        }
        _ => keys.iter().skip(1).find_map(|k| p.verify(k).ok()).ok_or_else(|| {
            format!("{}: not signed by {}'s roster key", refuse(ctx, "signature"), p.header.origin)
        })?,
    };
    let Some(category) = fed.catalog.category(&p.header.category) else {
        return Err(format!("{}: unknown category {}", refuse(ctx, "category"), p.header.category));
    };
    if let Some(f) = p.revealed.iter().find(|f| !category.fields.contains_key(&f.name)) {
        return Err(format!(
            "{}: field {} is not in category {}",
            refuse(ctx, "field"),
            f.name,
            p.header.category
        ));
    }
    for f in &p.revealed {
        if let Err(e) = fed.catalog.check_value(&p.header.category, &f.name, &f.value) {
            return Err(format!("{}: {e}", refuse(ctx, "value")));
        }
    }
    let redacted = tamga_config::agreement_withheld(agreement, &p.header.category, &fed.catalog);
    if let Some(f) = p.revealed.iter().find(|f| redacted.contains(&f.name)) {
        return Err(format!(
            "{}: field {} is redacted by agreement {}",
            refuse(ctx, "redacted"),
            f.name,
            agreement.id
        ));
    }
    if !p.envelope.audience.contains(&me) {
        return Err(format!("{}: {me} is not in the audience", refuse(ctx, "audience")));
    }
    if p.envelope.expires_ms <= now {
        return Err(format!("{}: expired", refuse(ctx, "expired")));
    }
    Ok((id, agreement))
}

/// Does this node's accept policy take `p` (which passed [`verify_inbound`], under
/// `agreement`) from `sender`? A refusal here is this node's own choice about a
/// projection its origin signed for it, not a fault of the sender's.
fn accepts(
    ctx: &Ctx,
    (fed, agreement): (&Federation, &tamga_config::Agreement),
    sender: MemberCode,
    p: &Projection,
    now: i64,
) -> Result<(), String> {
    let decided = if p.envelope.kind == EntryKind::Revoke {
        // A revocation reveals nothing and only makes holders purge: accepted whatever the
        // accept rules and the dates say now, but only from whom a share could come.
        tamga_config::decide_accept_revocation(&p.header, agreement, sender, fed)
    } else {
        tamga_config::decide_accept(&p.header, agreement, sender, fed, now)
    };
    decided.map_err(|r| format!("{}: {r}", refuse(ctx, "policy")))
}

/// Whether this node's files decline `p` whoever sends it, its origin included: a number
/// refused only because a relay sent it under an agreement that allows no relaying is
/// not declined, and is asked of its origin.
fn declined_whoever_sends(
    fed: &Federation,
    agreement: &tamga_config::Agreement,
    p: &Projection,
    now: i64,
) -> bool {
    let origin = p.header.origin;
    match p.envelope.kind {
        EntryKind::Revoke => {
            tamga_config::decide_accept_revocation(&p.header, agreement, origin, fed).is_err()
        }
        _ => tamga_config::decide_accept(&p.header, agreement, origin, fed, now).is_err(),
    }
}

/// Verify, store, and answer with receipts.
async fn on_push(ctx: &Ctx, from: MemberCode, projections: Vec<Projection>) -> PushReply {
    let Checked { good: items, refused, declined } = check_all(ctx, from, projections).await;
    let mut reply = PushReply { receipts: Vec::new(), refused };
    let me = ctx.shared.config.member;
    let declined: Vec<(StreamKey, u64, MemberCode)> = declined.into_iter().map(|(s, q)| (s, q, me)).collect();
    if items.is_empty() {
        if !declined.is_empty() {
            if let Err(e) = ctx.shared.writer.received(from, Vec::new(), declined).await {
                tracing::warn!(%from, error = %e, "numbers declined here not marked");
            }
        }
        return reply;
    }
    // What each receipt would say, taken before the projections go to the writer.
    let answers: Vec<(u32, ReceiptItem)> =
        items.iter().map(|(i, id, p)| (*i, ReceiptItem::of(*id, p))).collect();
    let signed: Vec<(RecordId, Projection)> = items.into_iter().map(|(_, id, p)| (id, p)).collect();
    match ctx.shared.writer.received(from, signed, declined).await {
        Ok(taken) => {
            // A receipt says the projection is held here: none for one purged here.
            let mut acked = Vec::with_capacity(answers.len());
            for ((i, item), t) in answers.into_iter().zip(taken) {
                let reason = match t {
                    Taken::New | Taken::Held => {
                        acked.push(item);
                        continue;
                    }
                    Taken::Purged => "not stored: purged here (expired or revoked)",
                    Taken::Conflict => "not stored: its number is held here with another record",
                };
                reply.refused.push(Refusal { index: i, reason: reason.to_owned() });
            }
            // One signature for the whole push (see `Receipt::sign_batch`).
            reply.receipts = Receipt::sign_batch(acked, me, now_ms(), &ctx.shared.identity.signing);
        }
        Err(e) => {
            for (i, _) in answers {
                reply.refused.push(Refusal { index: i, reason: format!("not stored: {e}") });
            }
        }
    }
    reply
}

/// Verify every projection; audit and refuse the bad ones.
async fn check_all(ctx: &Ctx, from: MemberCode, projections: Vec<Projection>) -> Checked {
    let fed = ctx.shared.fed();
    let now = now_ms();
    let (mut good, mut refused, mut declined) = (Vec::new(), Vec::new(), Vec::new());
    // Batch signature verification (about twice the single rate) against each origin's
    // first roster key; the rest of the checks run per projection.
    let signed: Vec<Option<Result<RecordId, tamga_protocol::disclosure::VerifyError>>> = {
        let keyed: Vec<(usize, &Projection, &tamga_protocol::VerifyingKey)> = projections
            .iter()
            .enumerate()
            .filter_map(|(i, p)| fed.roster.verifying_keys(p.header.origin).first().map(|k| (i, p, k)))
            .collect();
        let items: Vec<(&Projection, &tamga_protocol::VerifyingKey)> =
            keyed.iter().map(|(_, p, k)| (*p, *k)).collect();
        let mut out = vec![None; projections.len()];
        for ((i, _, _), r) in keyed.iter().zip(verify_on_every_core(&items)) {
            out[*i] = Some(r);
        }
        out
    };
    for ((i, p), signed) in projections.into_iter().enumerate().zip(signed) {
        let i = i as u32;
        let checked = verify_inbound(ctx, &fed, from, &p, signed, now)
            .map(|(id, agreement)| (id, agreement, accepts(ctx, (&fed, agreement), from, &p, now)));
        let reason = match checked {
            Ok((id, _, Ok(()))) => {
                good.push((i, id, p));
                continue;
            }
            Ok((_, agreement, Err(reason))) => {
                // Never of our own streams: what a peer holds of them is taken back (see
                // `take_back`), not marked. Nor a number refused only for who relayed
                // it: its origin is asked for it still.
                if p.header.origin != fed.me && declined_whoever_sends(&fed, agreement, &p, now) {
                    let stream =
                        StreamKey { origin: p.header.origin, agreement: p.envelope.agreement.clone() };
                    declined.push((stream, p.envelope.seq));
                }
                reason
            }
            Err(reason) => reason,
        };
        audit_refusal(ctx, from, &reason, now, || {
            let mut ev = AuditEvent::new(Action::Rejected, Outcome::Refused)
                .peer(from)
                .agreement(p.envelope.agreement.clone())
                .reason(reason.clone());
            ev.category = Some(p.header.category.clone());
            ev.record = p.record_id().ok();
            ev
        })
        .await;
        refused.push(Refusal { index: i, reason });
    }
    Checked { good, refused, declined }
}

/// What [`check_all`] made of the projections a peer sent.
struct Checked {
    /// Those that verify and that this node's accept policy takes, with their index and
    /// record id.
    good: Vec<(u32, RecordId, Projection)>,
    /// The others, each with why (audited).
    refused: Vec<Refusal>,
    /// Of those, the numbers that verify but that this node's accept policy refuses: its
    /// own choice, marked withheld on its own word so that its streams' heads pass them
    /// (and asked of their origin again, as any number withheld on another's word is).
    declined: Vec<(StreamKey, u64)>,
}

/// [`tamga_protocol::verify_many`], split across the machine's cores when the batch is
/// large enough for each to check at least [`VERIFY_PER_THREAD`] of it.
fn verify_on_every_core(
    items: &[(&Projection, &tamga_protocol::VerifyingKey)],
) -> Vec<Result<RecordId, tamga_protocol::disclosure::VerifyError>> {
    let threads = crate::par::cores().min(items.len() / VERIFY_PER_THREAD).max(1);
    let parts: Vec<_> = items.chunks(items.len().div_ceil(threads).max(1)).collect();
    crate::par::each_on_a_thread(&parts, |part| tamga_protocol::verify_many(part)).concat()
}

/// The report interval of refusals, from `[limits] report_secs`.
fn report_ms(ctx: &Ctx) -> i64 {
    i64::try_from(ctx.shared.config.limits.report_secs.max(1)).unwrap_or(i64::MAX / 1000) * 1000
}

/// Push new own projections to every connected audience member the policy allows now.
async fn push_new(ctx: &Ctx, batch: Vec<Projection>) {
    let fed = ctx.shared.fed();
    let now = now_ms();
    let connected = connected_members(ctx).await;
    let mut per_peer: BTreeMap<MemberCode, Vec<Projection>> = BTreeMap::new();
    for p in batch {
        let Some(agreement) = fed.agreement(&p.envelope.agreement) else { continue };
        for peer in p.envelope.audience.iter().copied().filter(|m| connected.contains(m)) {
            if !ctx.state.agreement_ok(&fed, peer, &agreement.id) {
                continue;
            }
            if p.envelope.kind == EntryKind::Revoke {
                per_peer.entry(peer).or_default().push(p.clone());
                continue;
            }
            match tamga_config::decide(&p.header, agreement, peer, &fed, now) {
                Decision::Allow { .. } => per_peer.entry(peer).or_default().push(p.clone()),
                Decision::Deny(r) => {
                    withheld_at_send(ctx, &p, peer, &r.to_string(), fed.policy_digest).await;
                }
            }
        }
    }
    let size = ctx.shared.config.network.push_batch.clamp(1, tamga_protocol::limits::MAX_BATCH);
    for (peer, ps) in per_peer {
        for chunk in batches(ps, size, PUSH_BYTES) {
            let c = ctx.clone();
            tokio::spawn(async move { send_push(&c, peer, chunk).await });
        }
    }
}

/// `ps` in order, in batches of at most `count` projections and `bytes` of frame (each
/// projection's `frame_share`: its bytes on the wire, or the memory its decoding takes if
/// more; a projection larger than `bytes` alone goes alone).
fn batches(ps: Vec<Projection>, count: usize, bytes: usize) -> Vec<Vec<Projection>> {
    let mut out: Vec<Vec<Projection>> = Vec::new();
    let mut size = 0;
    for p in ps {
        let len = tamga_protocol::codec::frame_share(&p).unwrap_or(bytes);
        match out.last_mut() {
            Some(last) if last.len() < count && size + len <= bytes => {
                size += len;
                last.push(p);
            }
            _ => {
                size = len;
                out.push(vec![p]);
            }
        }
    }
    out
}

/// Withhold from a projection about to leave the fields a decision withholds now, and
/// those `catalog` (the one in force) no longer lists for its category: they have no tags
/// left to decide on. A projection is stored as its origin made it, under the redactions
/// and the catalog in force then; an agreement, a policy or a catalog that redacts more
/// since must not be undone by an old copy.
fn withhold(p: &mut Projection, withheld: &tamga_config::Withheld, catalog: &tamga_config::Catalog) {
    let known = catalog.category(&p.header.category).map(|c| &c.fields);
    let out = |f: &str| withheld.contains(f) || !known.is_some_and(|k| k.contains_key(f));
    if p.revealed.iter().any(|f| out(&f.name)) {
        p.withhold(out);
    }
}

async fn withheld_at_send(ctx: &Ctx, p: &Projection, peer: MemberCode, why: &str, policy: Digest) {
    ctx.shared.metrics.withheld.add("policy_at_send", 1);
    let mut ev = AuditEvent::new(Action::Withheld, Outcome::Refused)
        .peer(peer)
        .policy(policy)
        .agreement(p.envelope.agreement.clone())
        .reason(format!("at send time: {why}"));
    ev.record = p.record_id().ok();
    ev.category = Some(p.header.category.clone());
    ctx.shared.writer.audit(ev).await;
}

async fn send_push(ctx: &Ctx, peer: MemberCode, ps: Vec<Projection>) {
    // Decide again right before the bytes leave: a reload that paused this peer or ended
    // the agreement since the push was queued stops it here (invariant 1).
    let fed = ctx.shared.fed();
    let now = now_ms();
    let mut allowed = Vec::with_capacity(ps.len());
    for mut p in ps {
        let verdict = match fed.agreement(&p.envelope.agreement) {
            None => Err("the agreement is no longer in force".to_owned()),
            Some(a) if !ctx.state.agreement_ok(&fed, peer, &a.id) => {
                Err(format!("agreement {} is no longer matched with {peer}", a.id))
            }
            Some(_) if p.envelope.kind == EntryKind::Revoke => Ok(()),
            Some(a) => match tamga_config::decide(&p.header, a, peer, &fed, now) {
                // Stored under the policy of its ingest: leaves with today's redactions.
                Decision::Allow { withheld } => {
                    withhold(&mut p, &withheld, &fed.catalog);
                    Ok(())
                }
                Decision::Deny(r) => Err(r.to_string()),
            },
        };
        match verdict {
            Ok(()) => allowed.push(p),
            Err(why) => withheld_at_send(ctx, &p, peer, &why, fed.policy_digest).await,
        }
    }
    let ps = allowed;
    if ps.is_empty() {
        return;
    }
    // One `sent` entry per stream per push (and the receipts that come back are kept in
    // one `delivered` entry per stream): an entry per projection per peer would make the
    // audit log the bottleneck of replication.
    let numbers = ps.iter().map(|p| (p.header.origin, p.envelope.agreement.clone(), p.envelope.seq));
    for ((origin, agreement), seqs) in by_stream(numbers) {
        let ev = AuditEvent::new(Action::Sent, Outcome::Ok)
            .peer(peer)
            .agreement(agreement)
            .policy(fed.policy_digest)
            .reason(crate::audit::projections_of(origin, &seqs));
        ctx.shared.writer.audit(ev).await;
    }
    ctx.shared.metrics.projections_sent.add(ps.len() as u64);
    ctx.state.with(|p| p.entry(peer).or_default().pushed += ps.len() as u64);
    // What a receipt must match, taken before the projections move into the request.
    let sent: Sent = ps
        .iter()
        .map(|p| {
            let key = (p.header.origin, p.envelope.agreement.clone(), p.envelope.seq);
            (key, (p.record_id().ok(), p.envelope.kind))
        })
        .collect();
    // Writing those entries may have waited on the writer: a policy set put in force
    // meanwhile was not there to decide this push, which then does not leave (as a push
    // still queued when it comes into force is withdrawn).
    let in_force = Arc::ptr_eq(&fed, &ctx.shared.fed());
    let answer = if in_force {
        ctx.net.request(peer, Request::Push(Push { projections: ps })).await
    } else {
        Err(crate::net::NetError::Withdrawn)
    };
    match answer {
        Ok(Response::Push(reply)) => take_receipts(ctx, peer, &sent, reply).await,
        Ok(other) => tracing::warn!(%peer, reply = other.name(), "unexpected reply to push"),
        Err(crate::net::NetError::Withdrawn) => {
            // Its `sent` entries are written; the log says it never left.
            for ((origin, agreement), mut seqs) in by_stream(sent.into_keys()) {
                seqs.sort_unstable();
                let ev = AuditEvent::new(Action::Withheld, Outcome::Refused)
                    .peer(peer)
                    .agreement(agreement)
                    .policy(ctx.shared.fed().policy_digest)
                    .reason(format!(
                        "at send time: withdrawn before it left, the policy having changed: {}",
                        crate::audit::projections_of(origin, &seqs)
                    ));
                ctx.shared.writer.audit(ev).await;
            }
        }
        Err(e) => tracing::debug!(%peer, error = %e, "push failed; anti-entropy will deliver"),
    }
}

/// Stream numbers grouped by stream, in the order given: what one audit entry per stream
/// lists.
fn by_stream(
    numbers: impl IntoIterator<Item = (MemberCode, AgreementId, u64)>,
) -> BTreeMap<(MemberCode, AgreementId), Vec<u64>> {
    let mut out: BTreeMap<(MemberCode, AgreementId), Vec<u64>> = BTreeMap::new();
    for (origin, agreement, seq) in numbers {
        out.entry((origin, agreement)).or_default().push(seq);
    }
    out
}

/// The projections of one push, by (origin, agreement, seq), each with its record id and
/// kind: what a receipt for it must match.
type Sent = HashMap<(MemberCode, AgreementId, u64), (Option<RecordId>, EntryKind)>;

/// Keep the receipts that the receiver really signed for what was sent.
async fn take_receipts(ctx: &Ctx, peer: MemberCode, sent: &Sent, reply: PushReply) {
    let fed = ctx.shared.fed();
    let keys = fed.roster.verifying_keys(peer);
    let signed = tamga_protocol::verify_receipts(&reply.receipts, keys);
    let valid: Vec<(Receipt, EntryKind)> = reply
        .receipts
        .into_iter()
        .zip(signed)
        .filter(|(r, ok)| *ok && r.receiver == peer)
        .filter_map(|(r, _)| {
            let kind = match sent.get(&(r.origin, r.agreement.clone(), r.seq)) {
                Some((id, kind)) if *id == Some(r.record) => *kind,
                _ => return None,
            };
            Some((r, kind))
        })
        .collect();
    ctx.state.with(|p| {
        let s = p.entry(peer).or_default();
        s.receipted += valid.len() as u64;
        s.refused += reply.refused.len() as u64;
    });
    for refusal in reply.refused {
        tracing::info!(%peer, index = refusal.index, reason = %refusal.reason, "peer refused a projection");
    }
    if !valid.is_empty() {
        ctx.shared.writer.receipts(valid).await;
    }
}

/// The streams this node holds that `peer` may ask about (agreements matched with it).
fn summary_for(ctx: &Ctx, peer: MemberCode) -> Summary {
    let fed = ctx.shared.fed();
    let mut streams = Vec::new();
    for (stream, head) in ctx.shared.store.streams().unwrap_or_default() {
        let Some(a) = fed.agreement(&stream.agreement) else { continue };
        if !a.is_party(peer) || !ctx.state.agreement_ok(&fed, peer, &a.id) {
            continue;
        }
        let above =
            ctx.shared.store.held_above(&stream, head, tamga_protocol::limits::MAX_ABOVE).unwrap_or_default();
        // Of an own stream, only what is durable: past it, a crash could give a number to
        // another record. (`head` was read first: see `Store::durable_head`.)
        let contiguous = match stream.origin == fed.me {
            true => ctx.shared.store.durable_head(&stream).map_or(head, |d| d.min(head)),
            false => head,
        };
        streams.push(StreamSummary { stream, contiguous, above });
        if streams.len() >= tamga_protocol::limits::MAX_STREAMS {
            break;
        }
    }
    Summary { streams }
}

/// Exchange summaries with a peer: it pulls from us what it lacks (on its side), we pull
/// from it what we lack.
async fn anti_entropy(ctx: &Ctx, peer: MemberCode) {
    let ours = summary_for(ctx, peer);
    match ctx.net.request(peer, Request::Summary(ours)).await {
        Ok(Response::Summary(theirs)) => pull_from(ctx, peer, &theirs).await,
        Ok(other) => tracing::debug!(%peer, reply = other.name(), "unexpected reply to summary"),
        Err(e) => tracing::debug!(%peer, error = %e, "summary failed"),
    }
}

/// The ranges of `stream` above our `head` and above `after` (numbers already asked for)
/// up to `upto` that we neither hold nor know withheld, at most `budget` numbers in all.
fn missing(
    ctx: &Ctx,
    stream: &StreamKey,
    (head, after, upto): (u64, u64, u64),
    budget: &mut usize,
) -> Vec<SeqRange> {
    let store = &ctx.shared.store;
    let mut out: Vec<SeqRange> = Vec::new();
    let Some(mut seq) = head.max(after).checked_add(1) else { return out };
    while seq <= upto && *budget > 0 {
        // Every number from `seq` to just below the next one known here is missing.
        let Ok(next) = store.next_known(stream, seq - 1) else { return out };
        let end = next.map_or(upto, |k| k.saturating_sub(1).min(upto));
        if end >= seq {
            let to = end.min(seq.saturating_add(*budget as u64 - 1));
            out.push(SeqRange { stream: stream.clone(), from: seq, to });
            *budget -= (to - seq + 1) as usize;
        }
        match next {
            Some(k) if k < upto => seq = k + 1,
            _ => break,
        }
    }
    out
}

/// The numbers of `stream` above `after`, up to `upto`, that we know withheld on the word
/// of a peer other than its origin alone (or on our own: declined by our accept policy),
/// as ranges of at most `budget` numbers in all: to be asked of the origin again. A
/// withheld number is no one's signed word, and a peer that said so falsely would
/// otherwise keep us from that number for good, the head having passed it; one we
/// declined comes in once our policy takes it. Above the head as well as below it: a
/// number the origin does not serve us now (its policy stopped sharing that record with
/// us) is neither held nor withheld, and keeps the head below it until it expires.
fn unconfirmed(
    ctx: &Ctx,
    stream: &StreamKey,
    (after, upto): (u64, u64),
    budget: &mut usize,
) -> Vec<SeqRange> {
    let store = &ctx.shared.store;
    let Some(from) = after.checked_add(1) else { return Vec::new() };
    let to = upto;
    if from > to || *budget == 0 {
        return Vec::new();
    }
    let seqs = store.unconfirmed_withheld(stream, from, to, *budget).unwrap_or_default();
    *budget -= seqs.len();
    let mut out: Vec<SeqRange> = Vec::new();
    for seq in seqs {
        match out.last_mut() {
            Some(r) if r.to.checked_add(1) == Some(seq) => r.to = seq,
            _ => out.push(SeqRange { stream: stream.clone(), from: seq, to: seq }),
        }
    }
    out
}

/// Pull from `peer` every range it holds that we lack, in rounds of [`PULL_BATCH`].
async fn pull_from(ctx: &Ctx, peer: MemberCode, theirs: &Summary) {
    // Only streams of agreements held here in the same terms and with the peer a party are
    // of use; the rest is dropped before anything is kept of it, so a peer's summaries
    // cannot grow this node's memory.
    let fed = ctx.shared.fed();
    let theirs = Summary {
        streams: theirs
            .streams
            .iter()
            .filter(|st| {
                fed.agreement(&st.stream.agreement).is_some_and(|a| a.is_party(peer))
                    && ctx.state.agreement_ok(&fed, peer, &st.stream.agreement)
            })
            .cloned()
            .collect(),
    };
    ctx.state.with(|p| {
        let s = p.entry(peer).or_default();
        s.last_seen_ms = Some(now_ms());
        s.streams = theirs
            .streams
            .iter()
            .map(|st| (format!("{}/{}", st.stream.origin, st.stream.agreement), st.contiguous))
            .collect();
    });
    // Pull each stream from one peer at a time, and from its origin when the origin is
    // connected: the same numbers from several relays at once would be wasted work.
    let connected = connected_members(ctx).await;
    let wanted: Vec<StreamKey> = theirs
        .streams
        .iter()
        .map(|st| st.stream.clone())
        .filter(|s| s.origin == peer || !connected.contains(&s.origin))
        .collect();
    let claimed = ctx.state.claim(wanted);
    let theirs = Summary {
        streams: theirs.streams.iter().filter(|st| claimed.contains(&st.stream)).cloned().collect(),
    };
    take_back(ctx, peer, &theirs).await;
    pull_claimed(ctx, peer, &theirs).await;
    ctx.state.release(&claimed);
}

/// Take back from `peer` what it holds of our own streams that we do not hold as it does:
/// after a restore, everything above the backup's head until the stream is reconciled
/// with the peer ([`crate::store::Restored`]); otherwise only numbers above our head,
/// which a peer can hold only if this store lost them. Only streams of agreements matched
/// with the peer, and at most [`TAKE_BACK_PULLS`] pulls in one exchange. What the writer
/// does with them is `WriterTask::take_back`'s.
async fn take_back(ctx: &Ctx, peer: MemberCode, theirs: &Summary) {
    let me = ctx.shared.config.member;
    let fed = ctx.shared.fed();
    let store = &ctx.shared.store;
    let restored = match store.restored() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the restore mark cannot be read");
            return;
        }
    };
    let mut pulls = TAKE_BACK_PULLS;
    for st in theirs.streams.iter().filter(|st| st.stream.origin == me) {
        let Some(a) = fed.agreement(&st.stream.agreement) else { continue };
        if !a.is_party(peer) || !ctx.state.agreement_ok(&fed, peer, &a.id) {
            continue;
        }
        let high = highest(st);
        let floor = restored.as_ref().and_then(|r| r.floor(peer, &st.stream));
        let Ok(head) = store.stream_head(&st.stream) else { continue };
        let after = floor.unwrap_or(head);
        if high <= after && floor.is_none() {
            continue;
        }
        // A summary lists at most MAX_ABOVE numbers above the contiguous mark: with that
        // many, the peer may hold more than `high`.
        let all = st.above.len() < tamga_protocol::limits::MAX_ABOVE;
        let restored = floor.is_some();
        if !take_back_stream(ctx, peer, &st.stream, (after, high), restored, all, &mut pulls).await {
            return;
        }
    }
}

/// The highest number a peer's summary of a stream says it holds or knows withheld.
fn highest(st: &StreamSummary) -> u64 {
    st.above.iter().copied().max().unwrap_or(0).max(st.contiguous)
}

/// [`take_back`] for one stream: the numbers in `range` (above its first, up to its
/// second) the peer says it holds, in pulls of [`PULL_BATCH`] taken from `pulls` (a peer
/// may claim any number; what it returns must be signed by us). When `restored`, the
/// restore mark records how far the stream is reconciled with the peer after each pull
/// that brought something, so that the next exchange goes on from there, and at the end
/// (`all`: the summary listed every number the peer holds) that it is. `false` once the
/// pulls are spent or one failed.
async fn take_back_stream(
    ctx: &Ctx,
    peer: MemberCode,
    stream: &StreamKey,
    (after, high): (u64, u64),
    restored: bool,
    all: bool,
    pulls: &mut usize,
) -> bool {
    let me = ctx.shared.config.member;
    let fed = ctx.shared.fed();
    let keys = fed.roster.verifying_keys(me);
    let mut from = after.saturating_add(1);
    loop {
        let to = high.min(from.saturating_add(PULL_BATCH as u64 - 1));
        let (mut items, mut used) = (Vec::new(), Vec::new());
        if from <= to {
            if *pulls == 0 {
                // Out of pulls: the next exchange goes on from here.
                if restored && from > after.saturating_add(1) {
                    let reconciled = Reconciled::Through(from - 1);
                    let (items, used, last) = (Vec::new(), Vec::new(), false);
                    let held =
                        HeldByPeer { from: peer, stream: stream.clone(), items, used, reconciled, last };
                    let _ = ctx.shared.writer.take_back(held).await;
                }
                return false;
            }
            *pulls -= 1;
            let range = SeqRange { stream: stream.clone(), from, to };
            let reply = ctx.net.request(peer, Request::Pull(Pull { ranges: vec![range] })).await;
            let Ok(Response::Pull(reply)) = reply else {
                tracing::debug!(%peer, agreement = %stream.agreement, "taking back: the pull failed");
                return false;
            };
            // Numbers purged at the peer matter only after a restore (see the writer's
            // `take_back`); otherwise none of ours is above our head.
            for r in reply.withheld.iter().filter(|r| restored && r.stream == *stream) {
                used.extend(r.from.max(from)..=r.to.min(to));
            }
            for p in reply.projections {
                let ours = p.header.origin == me && p.envelope.agreement == stream.agreement;
                if !ours || p.envelope.seq < from || p.envelope.seq > to {
                    continue;
                }
                match keys.iter().find_map(|k| p.verify(k).ok()) {
                    Some(id) => items.push((id, p)),
                    None => {
                        tracing::warn!(%peer, seq = p.envelope.seq, "taking back: not signed by this node; ignored")
                    }
                }
            }
        }
        let last = to >= high;
        // The last of the peer's numbers only if its summary listed them all.
        let complete = last && all;
        let reconciled = match (restored, complete) {
            (false, _) => Reconciled::No,
            (true, true) => Reconciled::All,
            (true, false) => Reconciled::Through(to),
        };
        if !items.is_empty() || !used.is_empty() || (last && restored) {
            let held =
                HeldByPeer { from: peer, stream: stream.clone(), items, used, reconciled, last: complete };
            let taken = ctx.shared.writer.take_back(held).await;
            match taken {
                Ok(t) if t.taken + t.projected_again > 0 => tracing::info!(
                    %peer,
                    agreement = %stream.agreement,
                    taken = t.taken,
                    projected_again = t.projected_again,
                    "took back numbers of an own stream held by a peer"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%peer, agreement = %stream.agreement, error = %e, "taking back failed");
                    return false;
                }
            }
        }
        if last {
            return true;
        }
        from = to + 1;
    }
}

/// A pull on its way: the request's task, answering with the peer's response.
type PullTask = tokio::task::JoinHandle<Result<Response, crate::net::NetError>>;
/// A pull's verified projections on their way into the store: `false` if they could not
/// be stored.
type StoreTask = tokio::task::JoinHandle<bool>;

async fn pull_claimed(ctx: &Ctx, peer: MemberCode, theirs: &Summary) {
    // Pulls overlap: [`PULLS_IN_FLIGHT`] are on the wire while the previous reply is
    // verified and the one before it is stored, so the peer's reading, our checking and
    // our writing run side by side. `asked` keeps the pulls from asking for the same
    // numbers; a reply goes to the writer only once the one before it is stored, so they
    // land in order.
    let mut asked = Asked::default();
    let mut inflight: VecDeque<(Vec<SeqRange>, PullTask)> = VecDeque::new();
    let mut storing: Option<StoreTask> = None;
    let mut idle_rounds = 0;
    while idle_rounds < PULL_IDLE_ROUNDS {
        while inflight.len() < PULLS_IN_FLIGHT {
            let ranges = next_pull(ctx, peer, theirs, &mut asked);
            if ranges.is_empty() {
                break;
            }
            let (net, req) = (ctx.net.clone(), Request::Pull(Pull { ranges: ranges.clone() }));
            inflight.push_back((ranges, tokio::spawn(async move { net.request(peer, req).await })));
        }
        let Some((ranges, reply)) = inflight.pop_front() else { break };
        let reply = reply
            .await
            .unwrap_or_else(|e| Err(crate::net::NetError::Io(format!("the pull task ended: {e}"))));
        let Some(pulled) = check_pull(ctx, peer, &ranges, reply).await else { break };
        if !stored(storing.take()).await {
            break;
        }
        idle_rounds = if pulled.items.is_empty() { idle_rounds + 1 } else { 0 };
        if !pulled.items.is_empty() {
            asked.unanswered(&ranges, &pulled);
        }
        let c = ctx.clone();
        storing = Some(tokio::spawn(async move {
            let r = c.shared.writer.received(peer, pulled.items, pulled.withheld).await;
            r.map_err(|e| tracing::warn!(%peer, error = %e, "pulled projections not stored")).is_ok()
        }));
    }
    for (_, reply) in inflight {
        reply.abort();
    }
    stored(storing).await;
}

/// Wait for a pull's projections to be stored: `false` if they could not be.
async fn stored(task: Option<StoreTask>) -> bool {
    match task {
        Some(t) => t.await.unwrap_or(false),
        None => true,
    }
}

/// How far one round of pulls from a peer has asked, per stream: for the numbers we lack
/// ([`missing`]), and, apart, for those withheld on a word other than their origin's
/// ([`unconfirmed`]), so that neither kind holds the other back.
#[derive(Debug, Default)]
struct Asked {
    missing: HashMap<StreamKey, u64>,
    unconfirmed: HashMap<StreamKey, u64>,
}

impl Asked {
    /// A reply that brought projections but left numbers asked for unanswered was full
    /// ([`PULL_REPLY_BYTES`]): ask for those again in the next pull. (A peer that lacks
    /// them answers a later pull with nothing, and the round ends.)
    fn unanswered(&mut self, ranges: &[SeqRange], pulled: &Pulled) {
        let answered: HashSet<(MemberCode, &AgreementId, u64)> = pulled
            .items
            .iter()
            .map(|(_, p)| (p.header.origin, &p.envelope.agreement, p.envelope.seq))
            .chain(pulled.withheld.iter().map(|(s, seq, _)| (s.origin, &s.agreement, *seq)))
            .collect();
        for r in ranges {
            let first =
                (r.from..=r.to).find(|seq| !answered.contains(&(r.stream.origin, &r.stream.agreement, *seq)));
            if let (Some(first), Some(a)) = (first, self.missing.get_mut(&r.stream)) {
                *a = (*a).min(first.saturating_sub(1));
            }
        }
    }
}

/// The ranges of the next pull from `peer`, at most [`PULL_BATCH`] numbers: first what its
/// summary offers that we lack and have not asked for yet; then, of its own streams, what
/// we hold withheld on a word other than its own ([`unconfirmed`]), which may be many (a
/// peer may say so of any number) and must not keep us from the rest. `asked` records them.
fn next_pull(ctx: &Ctx, peer: MemberCode, theirs: &Summary, asked: &mut Asked) -> Vec<SeqRange> {
    let me = ctx.shared.config.member;
    let fed = ctx.shared.fed();
    let mut budget = PULL_BATCH;
    let streams: Vec<(&StreamSummary, u64)> = theirs
        .streams
        .iter()
        .filter(|st| st.stream.origin != me)
        .filter(|st| {
            fed.agreement(&st.stream.agreement)
                .is_some_and(|a| a.is_party(me) && ctx.state.agreement_ok(&fed, peer, &a.id))
        })
        .filter_map(|st| Some((st, ctx.shared.store.stream_head(&st.stream).ok()?)))
        .collect();
    let after = |m: &HashMap<StreamKey, u64>, s: &StreamKey| m.get(s).copied().unwrap_or(0);
    let mut ranges: Vec<(SeqRange, bool)> = Vec::new();
    for &(st, head) in &streams {
        if budget == 0 || ranges.len() >= PULL_RANGES {
            break;
        }
        let span = (head, after(&asked.missing, &st.stream), highest(st));
        ranges.extend(missing(ctx, &st.stream, span, &mut budget).into_iter().map(|r| (r, false)));
    }
    for &(st, _) in streams.iter().filter(|(st, _)| st.stream.origin == peer) {
        if budget == 0 || ranges.len() >= PULL_RANGES {
            break;
        }
        let span = (after(&asked.unconfirmed, &st.stream), highest(st));
        ranges.extend(unconfirmed(ctx, &st.stream, span, &mut budget).into_iter().map(|r| (r, true)));
    }
    ranges.truncate(PULL_RANGES);
    ranges
        .into_iter()
        .map(|(r, again)| {
            let m = if again { &mut asked.unconfirmed } else { &mut asked.missing };
            let a = m.entry(r.stream.clone()).or_default();
            *a = (*a).max(r.to);
            r
        })
        .collect()
}

/// What a pull brought that was asked for: the verified projections, and the numbers
/// withheld from us, each with whose word it is (the peer's, or ours: declined).
struct Pulled {
    items: Vec<(RecordId, Projection)>,
    withheld: Vec<(StreamKey, u64, MemberCode)>,
}

/// Verify a pull's reply; `None` if the pull failed.
async fn check_pull(
    ctx: &Ctx,
    peer: MemberCode,
    ranges: &[SeqRange],
    reply: Result<Response, crate::net::NetError>,
) -> Option<Pulled> {
    let reply = match reply {
        Ok(Response::Pull(r)) => r,
        Ok(other) => {
            tracing::debug!(%peer, reply = other.name(), "unexpected reply to pull");
            return None;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "pull failed");
            return None;
        }
    };
    // Only what was asked for counts: a peer cannot mark as withheld what we did not ask.
    let asked =
        |s: &StreamKey, seq: u64| ranges.iter().any(|r| &r.stream == s && r.from <= seq && seq <= r.to);
    // Each number once, however often the reply repeats it.
    let withheld: BTreeSet<(StreamKey, u64)> = reply
        .withheld
        .iter()
        .flat_map(|r| {
            (r.from..=r.to.min(r.from.saturating_add(PULL_BATCH as u64))).map(move |s| (r.stream.clone(), s))
        })
        .filter(|(s, q)| asked(s, *q))
        .collect();
    let projections: Vec<Projection> = reply
        .projections
        .into_iter()
        .filter(|p| {
            asked(
                &StreamKey { origin: p.header.origin, agreement: p.envelope.agreement.clone() },
                p.envelope.seq,
            )
        })
        .collect();
    let checked = check_all(ctx, peer, projections).await;
    let items = checked.good.into_iter().map(|(_, id, p)| (id, p)).collect();
    // On the peer's word, or on this node's own (declined by its accept policy).
    let me = ctx.shared.config.member;
    let withheld = withheld
        .into_iter()
        .map(|(s, q)| (s, q, peer))
        .chain(checked.declined.into_iter().map(|(s, q)| (s, q, me)))
        .collect();
    Some(Pulled { items, withheld })
}

/// Answer a pull: what the asker may hold, and what exists but is not for it.
async fn on_pull(ctx: &Ctx, asker: MemberCode, pull: &Pull) -> PullReply {
    let fed = ctx.shared.fed();
    let me = fed.me;
    let now = now_ms();
    let mut reply = PullReply { projections: Vec::new(), withheld: Vec::new() };
    let mut bytes = 0;
    // Projections the policy in force keeps from the asker now, by stream and reason.
    let mut denied: BTreeMap<(MemberCode, AgreementId, String), Vec<u64>> = BTreeMap::new();
    'ranges: for r in pull.ranges.iter().take(PULL_RANGES) {
        let Some(a) = fed.agreement(&r.stream.agreement) else { continue };
        if !a.is_party(asker) || !ctx.state.agreement_ok(&fed, asker, &a.id) {
            continue;
        }
        let room = tamga_protocol::limits::MAX_BATCH.saturating_sub(reply.projections.len());
        if room == 0 {
            break;
        }
        // Of an own stream, only what is durable (see `summary_for`): its head read first,
        // then whether a commit not yet flushed moved it.
        let durable = match r.stream.origin == me {
            true => {
                let head = ctx.shared.store.stream_head(&r.stream).unwrap_or(0);
                ctx.shared.store.durable_head(&r.stream).map_or(head, |d| d.min(head))
            }
            false => u64::MAX,
        };
        let to = r.to.min(r.from.saturating_add(PULL_BATCH as u64)).min(durable);
        // Purged here (expired or revoked): gone for everyone, so the asker's gap closes.
        for seq in r.from..=to {
            if ctx.shared.store.is_gone(&r.stream, seq).unwrap_or(false) {
                reply.withheld.push(SeqRange { stream: r.stream.clone(), from: seq, to: seq });
            }
        }
        for mut p in ctx.shared.store.projections(&r.stream, r.from, to, room).unwrap_or_default() {
            let seq = p.envelope.seq;
            let withheld = || SeqRange { stream: r.stream.clone(), from: seq, to: seq };
            // Its origin takes back what it signed, as it is held here (see `take_back`).
            let origin_asks = p.header.origin == asker;
            if !origin_asks && !p.envelope.audience.contains(&asker) {
                // Signed by the origin: this number is not for the asker, ever.
                reply.withheld.push(withheld());
                continue;
            }
            let relayed = p.header.origin != me;
            let fields = if origin_asks || (p.envelope.kind == EntryKind::Revoke && (!relayed || a.relay)) {
                Ok(tamga_config::Withheld::default())
            } else if p.envelope.kind == EntryKind::Revoke {
                // Another origin's revocation, under an agreement that allows no relaying.
                Err(tamga_config::DenyReason::RelayNotAllowed.to_string())
            } else if p.header.origin == me {
                match tamga_config::decide(&p.header, a, asker, &fed, now) {
                    Decision::Allow { withheld } => Ok(withheld),
                    Decision::Deny(r) => Err(r.to_string()),
                }
            } else {
                tamga_config::decide_relay(&p.header, a, &p.envelope.audience, asker, &fed, now)
                    .map_err(|r| r.to_string())
            };
            match fields {
                Ok(fields) => {
                    if !origin_asks {
                        withhold(&mut p, &fields, &fed.catalog);
                    }
                    let len = tamga_protocol::codec::frame_share(&p).unwrap_or(PULL_REPLY_BYTES);
                    if bytes + len > PULL_REPLY_BYTES && !reply.projections.is_empty() {
                        // Full: the asker asks again for what this reply does not answer.
                        break 'ranges;
                    }
                    bytes += len;
                    reply.projections.push(p);
                }
                Err(why) => {
                    denied.entry((p.header.origin, p.envelope.agreement.clone(), why)).or_default().push(seq)
                }
            }
        }
    }
    reply.withheld.truncate(tamga_protocol::limits::MAX_RANGES);
    // Audited before the answer leaves, as a push's are: entries per stream, each listing
    // what it sends, so that a record's trace finds where it went (a pull, unlike a push,
    // brings back no receipt that would list it).
    let mut listed: BTreeMap<(MemberCode, AgreementId), Vec<crate::audit::TakenIn>> = BTreeMap::new();
    for p in &reply.projections {
        // Every projection held here was verified as it came in, so its record id computes.
        let Ok(record) = p.record_id() else { continue };
        let (origin, seq) = (p.header.origin, p.envelope.seq);
        let item = crate::audit::TakenIn { record, category: p.header.category.clone(), origin, seq };
        listed.entry((origin, p.envelope.agreement.clone())).or_default().push(item);
    }
    for ((origin, agreement), items) in listed {
        for items in crate::audit::listed_runs(items) {
            let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
            let ev = AuditEvent::new(Action::Sent, Outcome::Ok)
                .peer(asker)
                .agreement(agreement.clone())
                .policy(fed.policy_digest)
                .reason(format!("pulled: {}", crate::audit::projections_of(origin, &seqs)))
                .projections(items);
            ctx.shared.writer.audit(ev).await;
        }
    }
    for ((origin, agreement, why), seqs) in denied {
        ctx.shared.metrics.withheld.add("policy_at_pull", seqs.len() as u64);
        let ev = AuditEvent::new(Action::Withheld, Outcome::Refused)
            .peer(asker)
            .agreement(agreement)
            .policy(fed.policy_digest)
            .reason(format!("at pull time: {why}: {}", crate::audit::projections_of(origin, &seqs)));
        ctx.shared.writer.audit(ev).await;
    }
    ctx.shared.metrics.projections_sent.add(reply.projections.len() as u64);
    reply
}

/// Feedback from `from` on one of our records: signed by `from`, on a record of ours that
/// was shared with `from` under the named agreement — whether or not that share has since
/// been purged (revoked or expired): feedback given on it is no less true, and the purge
/// mark keeps whom it was shared with.
async fn on_feedback(ctx: &Ctx, from: MemberCode, f: tamga_protocol::Feedback) -> Result<(), String> {
    let fed = ctx.shared.fed();
    if f.from != from || f.origin != fed.me {
        return Err(format!("feedback from {} to {} arrived from {from}", f.from, f.origin));
    }
    if !fed.roster.verifying_keys(from).iter().any(|k| f.verify(k).is_ok()) {
        return Err(format!("feedback not signed by {from}'s roster key"));
    }
    let stream = StreamKey { origin: fed.me, agreement: f.agreement.clone() };
    let store = &ctx.shared.store;
    // Only an own record's shares are numbers of our streams: a record received from
    // another origin lists numbers of that origin's streams.
    let shares = store
        .view()
        .record_as_stored(&f.record)
        .ok()
        .flatten()
        .filter(|r| r.header.origin == fed.me)
        .map(|r| r.shares)
        .unwrap_or_default();
    // Any of its projections under the agreement: the origin may have projected it again
    // for members added to the audience since.
    let shared_with = shares
        .into_iter()
        .filter(|(a, _)| *a == f.agreement)
        .any(|(_, seq)| store.audience(&stream, seq).ok().flatten().is_some_and(|a| a.contains(&from)));
    if !shared_with {
        return Err(format!("record {} was not shared with {from} under {}", f.record, f.agreement));
    }
    ctx.shared
        .writer
        .feedback(f, crate::writer::FeedbackEvent::Received)
        .await
        .map_err(|e| format!("not stored: {e}"))
}

/// One round of `origin`'s outbox: at most [`OUTBOX_ROUND`] entries, one at a time,
/// ending early if the origin stops answering. Skipped while a round for it is running.
/// Each round starts after the last entry the origin answered, wrapping round: entries
/// it refuses stay in the outbox, and [`OUTBOX_ROUND`] of them first in key order must
/// not hold back the ones after them.
async fn send_outbox(ctx: &Ctx, origin: MemberCode) {
    if !ctx.state.claim_outbox(origin) {
        return;
    }
    let after = ctx.state.outbox_answered(origin);
    match ctx.shared.store.feedback_outbox(Some(origin), after.as_ref(), OUTBOX_ROUND) {
        Ok(waiting) => {
            for (key, f) in waiting {
                if !send_feedback(&ctx.shared, key.clone(), f).await {
                    break;
                }
                ctx.state.set_outbox_answered(origin, key);
            }
        }
        Err(e) => tracing::warn!(%origin, error = %e, "the feedback outbox could not be read"),
    }
    ctx.state.release_outbox(origin);
}

/// Deliver feedback to its origin now if connected; it stays in the outbox unless the
/// origin stored it, and goes again in the next round. Whether the origin answered.
pub async fn send_feedback(shared: &Shared, key: OutboxKey, f: tamga_protocol::Feedback) -> bool {
    let origin = f.origin;
    match shared.net.request(origin, Request::Feedback(f.clone())).await {
        Ok(Response::FeedbackStored) => {
            shared.sync.feedback_answered(&key);
            if let Err(e) = shared.writer.feedback(f, crate::writer::FeedbackEvent::Delivered(key)).await {
                tracing::warn!(%origin, error = %e, "feedback delivered but not recorded");
            }
        }
        Ok(Response::Error(why)) => {
            tracing::warn!(%origin, %why, "origin refused feedback");
            let why: String = why.chars().take(tamga_protocol::limits::MAX_REASON_LEN).collect();
            let refusals = shared.sync.feedback_refused(&key);
            if refusals >= FEEDBACK_REFUSALS_GIVEN_UP {
                let given_up = crate::writer::FeedbackEvent::GivenUp(key.clone(), why);
                match shared.writer.feedback(f, given_up).await {
                    Ok(()) => shared.sync.feedback_answered(&key),
                    Err(e) => tracing::warn!(%origin, error = %e, "feedback given up but not recorded"),
                }
            } else if refusals == 1 {
                let mut ev = AuditEvent::new(Action::Feedback, Outcome::Refused)
                    .peer(origin)
                    .agreement(f.agreement.clone())
                    .reason(format!("refused by its origin, sent again next round: {why}"));
                ev.record = Some(f.record);
                shared.writer.audit(ev).await;
            }
        }
        Ok(other) => tracing::debug!(%origin, reply = other.name(), "unexpected reply to feedback"),
        Err(e) => {
            tracing::debug!(%origin, error = %e, "feedback not delivered yet");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example federation's files as RU loads them from `dir`.
    fn ru_federation(dir: &std::path::Path) -> Federation {
        Federation::load_files(
            &dir.join("roster.toml"),
            &dir.join("catalog.toml"),
            &dir.join("agreements"),
            &dir.join("policies/RU.toml"),
            "RU".parse().expect("valid"),
        )
        .expect("loads")
    }

    // Pushes are cut by count and by bytes, in order; one projection over the bytes alone
    // goes alone.
    #[test]
    fn pushes_are_batched_by_count_and_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::example::write_to(dir.path()).expect("writes");
        let fed = ru_federation(dir.path());
        let key = tamga_config::demo::demo_signing_key(fed.me);
        let projection = |seq: u64, text: usize| {
            let mut body = BTreeMap::new();
            body.insert("title".to_owned(), tamga_protocol::Value::Text("x".repeat(text)));
            let record = tamga_protocol::Record {
                header: tamga_protocol::RecordHeader {
                    category: "rms.method".parse().expect("valid"),
                    classification: tamga_protocol::Classification::Public,
                    origin: fed.me,
                    created_ms: 1_790_000_000_000,
                    supersedes: None,
                    expires_ms: None,
                },
                body,
            };
            let salted = tamga_protocol::SaltedRecord::new(record, &tamga_protocol::SaltKey::generate());
            let envelope = tamga_protocol::Envelope {
                kind: EntryKind::Share,
                agreement: "sco-rms-2013".parse().expect("valid"),
                audience: vec!["KZ".parse().expect("valid")],
                seq,
                expires_ms: 1_990_000_000_000,
            };
            salted.project(|_| false, envelope, &key).expect("projects")
        };
        let small: Vec<Projection> = (1..=5).map(|s| projection(s, 10)).collect();
        let len = tamga_protocol::codec::frame_share(&small[0]).expect("counts");
        let seqs = |b: &[Vec<Projection>]| -> Vec<Vec<u64>> {
            b.iter().map(|c| c.iter().map(|p| p.envelope.seq).collect()).collect()
        };
        assert_eq!(seqs(&batches(small.clone(), 2, usize::MAX)), vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(seqs(&batches(small.clone(), 10, 3 * len)), vec![vec![1, 2, 3], vec![4, 5]]);
        let mut mixed = small;
        mixed.insert(2, projection(9, 10_000));
        assert_eq!(seqs(&batches(mixed, 10, 3 * len)), vec![vec![1, 2], vec![9], vec![3, 4, 5]]);
    }

    // An agreement edited and reloaded here stops matching a peer's text at once, before
    // any new hello: decisions compare the peer's last terms with the terms in force.
    #[test]
    fn an_agreement_changed_here_stops_matching_before_the_next_hello() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::example::write_to(dir.path()).expect("writes");
        let before = ru_federation(dir.path());
        let kz: MemberCode = "KZ".parse().expect("valid");
        let s = SyncState::default();
        s.with(|p| p.entry(kz).or_default().digests = before.agreement_terms().into_iter().collect());
        let (ipr, rms): (AgreementId, AgreementId) =
            ("sco-ipr-2012".parse().expect("valid"), "sco-rms-2013".parse().expect("valid"));
        assert!(s.agreement_ok(&before, kz, &ipr) && s.agreement_ok(&before, kz, &rms));
        let file = dir.path().join("agreements/sco-ipr-2012.toml");
        let text = std::fs::read_to_string(&file).expect("reads");
        std::fs::write(&file, text.replace("retention_days = 1825", "retention_days = 1000"))
            .expect("writes");
        let after = ru_federation(dir.path());
        assert!(!s.agreement_ok(&after, kz, &ipr), "the edited agreement no longer matches");
        assert!(s.agreement_ok(&after, kz, &rms), "the others still do");
        assert!(!s.agreement_ok(&after, "UZ".parse().expect("valid"), &rms), "no hello, no match");
    }

    #[test]
    fn refusals_are_audited_one_by_one_up_to_a_bound_then_counted_once_per_interval() {
        let s = SyncState::default();
        let uz: MemberCode = "UZ".parse().expect("valid");
        let kz: MemberCode = "KZ".parse().expect("valid");
        let one_by_one = |peer, reason: &str, now| s.refused(peer, reason, now, 1000);
        for i in 0..REFUSALS_AUDITED {
            let (audited, summary) = one_by_one(uz, &format!("signature: forged {i}"), 10);
            assert!(audited && summary.is_none());
        }
        // Past the bound: counted, not audited; other reasons and peers have their own windows.
        for i in 0..100 {
            assert!(!one_by_one(uz, &format!("signature: forged again {i}"), 20).0);
        }
        assert!(one_by_one(uz, "audience: UZ is not in the audience", 20).0);
        assert!(one_by_one(kz, "signature: forged", 20).0);
        assert!(s.refusal_summaries(500, 1000).is_empty(), "the interval has not ended");
        // The interval ends: one summary counting the 100, then a new window.
        let (audited, summary) = one_by_one(uz, "signature: later", 1010);
        assert!(audited);
        let summary = summary.expect("a summary of the ended interval");
        let why = summary.reason.expect("a reason");
        assert!(why.starts_with("signature: 100 more refused"), "{why}");
        assert!(why.ends_with("forged again 99"), "{why}");
        // Windows that end quietly are summarised by the tick, only when something was counted.
        for i in 0..(REFUSALS_AUDITED + 3) {
            one_by_one(kz, &format!("field: smuggled {i}"), 3000);
        }
        let summaries = s.refusal_summaries(4000, 1000);
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        assert_eq!(summaries[0].peer, Some(kz));
        assert!(s.refusal_summaries(9000, 1000).is_empty());
    }
}

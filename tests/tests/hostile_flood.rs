//! A hostile roster peer floods a real node with everything the protocol makes possible,
//! while an honest peer keeps replicating from it.
//!
//! RU and KZ are real nodes (sled, HTTP API, libp2p over TLS on loopback). The hostile
//! peer holds UZ's roster key and speaks `/tamga/sync/1` through its own libp2p swarm,
//! whose codec writes whatever bytes it is given: random bytes, truncated frames, headers
//! claiming more than any limit, valid pushes with forged signatures, the same valid
//! projection replayed, floods of summaries and pulls far beyond RU's rate limit, pulls of
//! streams it is not in the audience of, and streams opened and never finished.
//!
//! Checked: RU stays up and keeps answering; every honest record reaches KZ intact; the
//! hostile peer never receives a projection whose audience excludes it; the replayed
//! projection is stored once; the abuse is refused and audited once per peer, kind and
//! report interval (the entries are counted), not once per request. Measured and printed:
//! KZ's replication throughput from RU with and without the attack, and the attack's
//! volume and outcome.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{tcp, tls, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};
use rand::Rng;
use tamga_config::Federation;
use tamga_node::identity::Role;
use tamga_node::net::raw::{settle, Pending, RawAnswer as Answer, RawCodec, RawRequest};
use tamga_node::net::SYNC_PROTOCOL;
use tamga_protocol::codec::{decode_response, encode_request, MAGIC, VERSION};
use tamga_protocol::{
    Classification, Envelope, MemberCode, Projection, Pull, Push, Record, RecordHeader, Request, Response,
    SaltKey, SaltedRecord, SeqRange, StreamKey, Summary, Value,
};
use tamga_tests::*;
use tokio::sync::{mpsc, oneshot};

/// RU's limits for this test: tight enough that the flood meets every one of them, and a
/// short report interval so that several intervals pass during the attack.
const RU_LIMITS: &str = "\n[limits]\nmessages_per_sec = 100\nbytes_per_sec = 1048576\nopen_streams = 16\n\
                         pending_pulls = 2\nstream_read_secs = 2\nreport_secs = 2\n";
/// The report interval set above.
const REPORT_SECS: u64 = 2;
/// Honest records replicated RU → KZ in each measured phase.
const HONEST_RECORDS: usize = 400;
/// Requests the hostile peer fires per round (it waits for their answers between rounds).
const ROUND: usize = 48;

fn code(s: &str) -> MemberCode {
    s.parse().expect("valid member code")
}

// ---- the hostile peer: a libp2p swarm whose codec writes raw bytes (`net::raw`) ----

/// A handle to the hostile swarm's task.
#[derive(Debug, Clone)]
struct Hostile {
    cmds: mpsc::Sender<(RawRequest, oneshot::Sender<Answer>)>,
}

impl Hostile {
    /// Start the swarm, connect to `target` at `addr`, and wait for the connection.
    async fn connect(key: libp2p::identity::Keypair, target: PeerId, addr: Multiaddr) -> Hostile {
        let mut swarm: Swarm<request_response::Behaviour<RawCodec>> =
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(tcp::Config::default().nodelay(true), tls::Config::new, yamux::Config::default)
                .expect("transport")
                .with_behaviour(|_| {
                    request_response::Behaviour::with_codec(
                        RawCodec,
                        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Outbound)],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(10))
                            .with_max_concurrent_streams(1024),
                    )
                })
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
                .build();
        swarm.add_peer_address(target, addr.clone());
        swarm.dial(addr).expect("dial starts");
        let (tx, mut rx) = mpsc::channel::<(RawRequest, oneshot::Sender<Answer>)>(1024);
        let (up_tx, up_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            let mut pending = Pending::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => break,
                        Some((req, reply)) => {
                            let id = swarm.behaviour_mut().send_request(&target, req);
                            pending.insert(id, reply);
                        }
                    },
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                            if let Some(up) = up.take() {
                                let _ = up.send(());
                            }
                        }
                        SwarmEvent::Behaviour(ev) => settle(&mut pending, ev),
                        _ => {}
                    },
                }
            }
        });
        tokio::time::timeout(WAIT, up_rx).await.expect("connects in time").expect("swarm alive");
        Hostile { cmds: tx }
    }

    /// Open a stream with `req`; the answer arrives on the returned channel.
    async fn fire(&self, req: RawRequest) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send((req, tx)).await.expect("hostile alive");
        rx
    }

    async fn send(&self, req: &Request) -> Answer {
        let rx = self.fire(raw(req)).await;
        tokio::time::timeout(WAIT, rx).await.expect("answer in time").expect("hostile alive")
    }
}

fn raw(req: &Request) -> RawRequest {
    RawRequest { bytes: encode_request(req).expect("encodes"), stall: false }
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(VERSION);
    h.push(kind);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

// ---- projections the hostile peer signs with UZ's key ----

fn record(origin: &str, text: &str) -> SaltedRecord {
    let mut body = BTreeMap::new();
    body.insert("mark_name".to_owned(), Value::Text(text.to_owned()));
    SaltedRecord::new(
        Record {
            header: RecordHeader {
                category: "ipr.protected_mark".parse().expect("valid"),
                classification: Classification::Public,
                origin: code(origin),
                created_ms: 1_790_000_000_000,
                supersedes: None,
                expires_ms: None,
            },
            body,
        },
        &SaltKey::generate(),
    )
}

fn envelope(seq: u64) -> Envelope {
    Envelope {
        kind: tamga_protocol::EntryKind::Share,
        agreement: "sco-ipr-2012".parse().expect("valid"),
        audience: vec![code("RU")],
        seq,
        expires_ms: 1_990_000_000_000,
    }
}

// ---- the federation ----

/// Start RU (with [`RU_LIMITS`], sharing energy data with neither TJ nor UZ) and KZ.
async fn start_nodes() -> (TestNode, TestNode, BTreeMap<String, u16>) {
    let ports = tamga_node::localfed::free_ports().expect("ports");
    let mut nodes = Vec::new();
    for m in ["RU", "KZ"] {
        let fed_dir = tempfile::tempdir().expect("tempdir");
        tamga_node::localfed::write_federation(fed_dir.path(), &ports).expect("federation");
        if m == "RU" {
            let policy = fed_dir.path().join("policies/RU.toml");
            let text = std::fs::read_to_string(&policy).expect("RU policy");
            let edited = text.replace("except = [\"TJ\"]", "except = [\"TJ\", \"UZ\"]");
            assert_ne!(text, edited, "the example RU policy pauses TJ's energy data");
            std::fs::write(&policy, edited).expect("write policy");
        }
        let listen = format!("/ip4/127.0.0.1/tcp/{}", ports[m]);
        let mut n = TestNode::init_in(m, fed_dir.path(), &listen, |t| {
            *t = t.replace("[network]\n", "[network]\nanti_entropy_secs = 1\n");
            if m == "RU" {
                t.push_str(RU_LIMITS);
            }
        })
        .expect("init");
        n.federation = Some(fed_dir);
        n.restart().await.expect("starts");
        nodes.push(n);
    }
    let kz = nodes.pop().expect("two");
    let ru = nodes.pop().expect("two");
    (ru, kz, ports)
}

fn uz_federation(fed_dir: &Path) -> Federation {
    Federation::load_files(
        &fed_dir.join("roster.toml"),
        &fed_dir.join("catalog.toml"),
        &fed_dir.join("agreements"),
        &fed_dir.join("policies/UZ.toml"),
        code("UZ"),
    )
    .expect("UZ's view loads")
}

async fn ingest(node: &TestNode, category: &str, tags: impl Iterator<Item = String>) {
    let catalog = example_catalog();
    let records: Vec<serde_json::Value> =
        tags.map(|t| record_json(&catalog, category, "public", &t)).collect();
    for chunk in records.chunks(200) {
        node.client(Role::Operator)
            .post("/v1/records", &serde_json::json!({ "records": chunk }))
            .await
            .expect("ingest accepted");
    }
}

/// The `enforcement.alert` records KZ holds from RU, by body text.
async fn kz_alerts(kz: &TestNode) -> Vec<String> {
    let listed = kz
        .client(Role::Operator)
        .get(
            "/v1/records",
            &[("origin", "RU".into()), ("category", "enforcement.alert".into()), ("limit", "10000".into())],
        )
        .await
        .expect("lists");
    listed["records"]
        .as_array()
        .map(|rs| rs.iter().map(|r| r["body"].to_string()).collect())
        .unwrap_or_default()
}

/// Ingest [`HONEST_RECORDS`] alerts at RU tagged `phase`, and time until KZ holds them all;
/// check each arrived with the body RU ingested. Returns records per second.
async fn honest_phase(ru: &TestNode, kz: &TestNode, phase: &str) -> f64 {
    let before = kz_alerts(kz).await.len();
    let tags: Vec<String> = (0..HONEST_RECORDS).map(|i| format!("{phase}-{i:04}")).collect();
    let started = Instant::now();
    ingest(ru, "enforcement.alert", tags.iter().cloned()).await;
    let deadline = started + WAIT * 4;
    loop {
        let held = kz_alerts(kz).await;
        if held.len() >= before + HONEST_RECORDS {
            let elapsed = started.elapsed();
            for t in &tags {
                assert!(held.iter().any(|b| b.contains(&format!("{t}\""))), "{t} arrived intact at KZ");
            }
            let rate = HONEST_RECORDS as f64 / elapsed.as_secs_f64();
            println!("honest replication RU → KZ, {phase}: {HONEST_RECORDS} records in {elapsed:.2?} = {rate:.0}/s");
            return rate;
        }
        assert!(Instant::now() < deadline, "{phase}: KZ holds {} of {HONEST_RECORDS}", held.len() - before);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the attack saw, by request kind and outcome.
#[derive(Debug, Default)]
struct Tally {
    by: BTreeMap<(&'static str, &'static str), u64>,
    /// Projections received whose audience excludes UZ: must stay 0.
    leaked: u64,
    /// Projections received in pull replies (all with UZ in the audience).
    pulled: u64,
}

impl Tally {
    fn note(&mut self, kind: &'static str, answer: &Answer) {
        let outcome = match answer {
            Err(_) => "stream failed",
            Ok(bytes) => match decode_response(bytes) {
                Err(_) if bytes.is_empty() => "no answer",
                Err(_) => "undecodable answer",
                Ok(Response::Error(r)) if r.starts_with("rate limit") => "refused: rate",
                Ok(Response::Error(r)) if r.starts_with("too many") => "refused: quota",
                Ok(Response::Error(r)) if r.starts_with("malformed") => "refused: malformed",
                Ok(Response::Error(r)) if r.starts_with("stalled") => "refused: stalled",
                Ok(Response::Error(_)) => "refused: other",
                Ok(Response::Pull(reply)) => {
                    for p in &reply.projections {
                        if p.envelope.audience.contains(&code("UZ")) {
                            self.pulled += 1;
                        } else {
                            self.leaked += 1;
                        }
                    }
                    "served"
                }
                Ok(_) => "served",
            },
        };
        *self.by.entry((kind, outcome)).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.by.values().sum()
    }
}

/// One round of abuse: [`ROUND`] requests of every bad kind.
fn round_requests(forged: &Projection, replayed: &Projection) -> Vec<(&'static str, RawRequest)> {
    let mut rng = rand::thread_rng();
    let stream = |origin: &str, agreement: &str| StreamKey {
        origin: code(origin),
        agreement: agreement.parse().expect("valid"),
    };
    let pull_of =
        |s: StreamKey| Request::Pull(Pull { ranges: vec![SeqRange { stream: s, from: 1, to: 200 }] });
    let plain = |bytes: Vec<u8>| RawRequest { bytes, stall: false };
    (0..ROUND)
        .map(|i| match i % 10 {
            0 => ("random bytes", plain((0..rng.gen_range(1..2048)).map(|_| rng.gen()).collect())),
            1 => ("truncated frame", plain([header(0x01, 500), vec![0; 20]].concat())),
            2 => ("oversized header", plain(header(0x02, u32::MAX))),
            3 => ("forged signature", raw(&Request::Push(Push { projections: vec![forged.clone()] }))),
            4 => ("replayed projection", raw(&Request::Push(Push { projections: vec![replayed.clone()] }))),
            5 => ("summary", raw(&Request::Summary(Summary { streams: vec![] }))),
            6 => ("pull, not in the audience", raw(&pull_of(stream("RU", "sco-energy-2008")))),
            7 => ("pull, not a party", raw(&pull_of(stream("RU", "ru-kz-enforcement")))),
            8 => ("pull, in the audience", raw(&pull_of(stream("RU", "sco-ipr-2012")))),
            _ => ("half-open stream", RawRequest { bytes: header(0x01, 100), stall: true }),
        })
        .collect()
}

/// Fire one round at once, then collect the answers.
async fn attack_round(h: &Hostile, forged: &Projection, replayed: &Projection, tally: &mut Tally) {
    let mut fired: Vec<(&'static str, oneshot::Receiver<Answer>)> = Vec::new();
    for (kind, req) in round_requests(forged, replayed) {
        fired.push((kind, h.fire(req).await));
    }
    for (kind, rx) in fired {
        if kind == "half-open stream" {
            // Never answered on this side: the write never finishes. RU cuts it.
            *tally.by.entry((kind, "left open")).or_default() += 1;
            continue;
        }
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(answer)) => tally.note(kind, &answer),
            _ => *tally.by.entry((kind, "no answer")).or_default() += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_roster_peer_is_refused_and_audited_while_honest_replication_goes_on() {
    let (ru, kz, ports) = start_nodes().await;
    // Records of every audience at RU: ipr (UZ in the audience), energy (UZ excluded by
    // RU's policy), alerts (RU–KZ only).
    ingest(&ru, "ipr.protected_mark", (0..20).map(|i| format!("mark-{i}"))).await;
    ingest(&ru, "energy.transfer", (0..20).map(|i| format!("energy-{i}"))).await;
    wait_for("KZ to replicate RU's marks", || async {
        let listed = kz
            .client(Role::Operator)
            .get("/v1/records", &[("origin", "RU".into()), ("category", "ipr.protected_mark".into())])
            .await;
        listed.ok().and_then(|l| l["records"].as_array().map(Vec::len)) == Some(20)
    })
    .await;

    // Without attack.
    let normal = honest_phase(&ru, &kz, "base").await;

    // The hostile peer: UZ's roster key, a swarm of its own.
    let fed_dir = ru.federation.as_ref().expect("own federation copy").path().to_owned();
    let uz_fed = uz_federation(&fed_dir);
    let ru_peer = tamga_config::demo::demo_peer_id(code("RU"));
    let ru_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", ports["RU"]).parse().expect("valid");
    let h = Hostile::connect(tamga_config::demo::demo_keypair(code("UZ")), ru_peer, ru_addr).await;
    let hello = tamga_protocol::Hello {
        member: code("UZ"),
        roster_digest: uz_fed.roster.digest(),
        agreements: uz_fed.agreement_terms(),
        checkpoint: None,
    };
    let answer = h.send(&Request::Hello(hello)).await.expect("hello answered");
    assert!(matches!(decode_response(&answer), Ok(Response::Hello(_))), "hello: {answer:?}");
    let key = tamga_config::demo::demo_signing_key(code("UZ"));
    let replayed = record("UZ", "REPLAYED").project(|_| false, envelope(1), &key).expect("projects");
    let mut forged = record("UZ", "FORGED").project(|_| false, envelope(2), &key).expect("projects");
    forged.signature.0[7] ^= 1;
    let uz_before =
        ru.client(Role::Operator).get("/v1/records", &[("origin", "UZ".into())]).await.expect("lists")
            ["records"]
            .as_array()
            .map(Vec::len);
    assert_eq!(uz_before, Some(0));

    // The attack runs in rounds until the honest phase under attack is over.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let attack_started = Instant::now();
    let attack = tokio::spawn({
        let (h, stop, rounds) = (h.clone(), stop.clone(), rounds.clone());
        let (forged, replayed) = (forged.clone(), replayed.clone());
        async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                attack_round(&h, &forged, &replayed, &mut tally).await;
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let under_attack = honest_phase(&ru, &kz, "atk").await;
    // Keep the attack going for a few report intervals in all.
    while attack_started.elapsed() < Duration::from_secs(4 * REPORT_SECS) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tally = tokio::time::timeout(WAIT, attack).await.expect("attack ends").expect("no panic");
    let attack_secs = attack_started.elapsed().as_secs_f64();

    println!(
        "attack: {} requests in {} rounds over {attack_secs:.1} s ({:.0}/s against a limit of 100/s)",
        tally.total(),
        rounds.load(Ordering::Relaxed),
        tally.total() as f64 / attack_secs
    );
    for ((kind, outcome), n) in &tally.by {
        println!("  {kind:28} {outcome:20} {n}");
    }
    println!(
        "honest throughput under attack: {:.0}% of normal ({under_attack:.0}/s vs {normal:.0}/s)",
        100.0 * under_attack / normal
    );

    // RU is up and answers; the hostile peer got nothing it may not hold.
    let status = ru.client(Role::Operator).get("/v1/status", &[]).await.expect("RU still answers");
    assert_eq!(status["member"], "RU");
    assert_eq!(tally.leaked, 0, "projections outside UZ's audience were handed to UZ");
    assert!(tally.pulled > 0, "pulls within UZ's audience were served, so the check above saw projections");
    let refused_rate =
        tally.by.iter().filter(|((_, o), _)| *o == "refused: rate").map(|(_, n)| n).sum::<u64>();
    assert!(refused_rate > 0, "the flood went beyond the rate limit: {tally:?}");

    // The replayed projection is stored once; the forged one never.
    let uz_records =
        ru.client(Role::Operator).get("/v1/records", &[("origin", "UZ".into())]).await.expect("lists");
    let bodies: Vec<String> = uz_records["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["body"]["mark_name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(bodies, vec!["REPLAYED".to_owned()], "stored once, and nothing forged");

    // The abuse is audited once per kind per report interval, each entry counting the
    // requests it stands for.
    let rejected = ru
        .client(Role::Auditor)
        .get("/v1/audit", &[("action", "rejected".into()), ("limit", "100000".into())])
        .await
        .expect("audit");
    // Each is `{ hash, entry }`.
    let entries = rejected.as_array().expect("entries");
    let intervals = (attack_secs / REPORT_SECS as f64).ceil() as usize;
    let mut total_entries = 0;
    for kind in ["malformed", "stalled", "message_rate", "byte_rate", "open_streams", "pending_pulls"] {
        let prefix = format!("{kind}: ");
        let of_kind: Vec<&serde_json::Value> = entries
            .iter()
            .filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with(&prefix)))
            .collect();
        let counted: u64 = of_kind
            .iter()
            .filter_map(|e| {
                e["entry"]["reason"].as_str()?.strip_prefix(&prefix)?.split(' ').next()?.parse::<u64>().ok()
            })
            .sum();
        println!(
            "audit: {kind:14} {} entries for {counted} refusals ({:.2} entries per {REPORT_SECS} s interval)",
            of_kind.len(),
            of_kind.len() as f64 / intervals as f64
        );
        // At most one per interval, plus the first (and a timer flush after the attack).
        assert!(of_kind.len() <= intervals + 2, "{kind}: {} entries in {intervals} intervals", of_kind.len());
        total_entries += of_kind.len();
    }
    for kind in ["malformed", "stalled", "message_rate"] {
        assert!(
            entries
                .iter()
                .any(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with(&format!("{kind}: ")))),
            "{kind} audited: {rejected:#}"
        );
    }
    let per_projection = entries.iter().filter(|e| e["entry"]["record"].is_string()).count();
    println!(
        "audit: {total_entries} abuse entries for {} hostile requests; {per_projection} per-projection rejections \
         (forged signatures that passed the rate limit)",
        tally.total()
    );
    let mut ru = ru;
    let mut kz = kz;
    ru.stop().await;
    kz.stop().await;
}

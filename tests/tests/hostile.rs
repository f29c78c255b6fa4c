//! A roster peer that sends forged or out-of-bounds projections (or one that reveals a
//! field its agreement redacts, a value its catalog refuses, is dated ahead, or revokes
//! what it could never have shared): each is refused, audited, and nothing of it is stored; a well-formed one on
//! the same connection still goes in. One that claims to hold the node's own stream far
//! beyond its head changes nothing, and one whose summaries list thousands of streams
//! leaves the node keeping only those it shares with it. One that says another member's
//! records are withheld from the node, falsely, keeps them from it only until it reaches
//! their origin. An origin that refuses some feedback for good does not hold back the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use tamga_config::Federation;
use tamga_node::identity::Role;
use tamga_node::net::{self, NetConfig, NetEvent};
use tamga_protocol::{
    Classification, Envelope, Projection, Push, Record, RecordHeader, Request, Response, SaltKey,
    SaltedRecord, Value,
};
use tamga_tests::*;

fn record(category: &str, origin: &str, text: String) -> SaltedRecord {
    let mut body = BTreeMap::new();
    body.insert("mark_name".to_owned(), Value::Text(text));
    SaltedRecord::new(
        Record {
            header: RecordHeader {
                category: category.parse().expect("valid"),
                classification: Classification::Public,
                origin: origin.parse().expect("valid"),
                created_ms: 1_790_000_000_000,
                supersedes: None,
                expires_ms: None,
            },
            body,
        },
        &SaltKey::generate(),
    )
}

fn envelope(agreement: &str, audience: &[&str], seq: u64) -> Envelope {
    Envelope {
        kind: tamga_protocol::EntryKind::Share,
        agreement: agreement.parse().expect("valid"),
        audience: audience.iter().map(|m| m.parse().expect("valid")).collect(),
        seq,
        expires_ms: 1_990_000_000_000,
    }
}

/// A peer holding UZ's roster key (a member gone rogue), connected to `node` and past
/// hello; `answer` answers the requests made to it (its hello is answered already).
async fn rogue_uz(
    node: &TestNode,
    answer: impl Fn(Request) -> Response + Send + 'static,
) -> (net::NetHandle, tokio_util::sync::CancellationToken) {
    let fed_dir = node.federation.as_ref().expect("own federation copy").path().to_owned();
    let uz_fed = Federation::load_files(
        &fed_dir.join("roster.toml"),
        &fed_dir.join("catalog.toml"),
        &fed_dir.join("agreements"),
        &fed_dir.join("policies/UZ.toml"),
        "UZ".parse().expect("valid"),
    )
    .expect("loads");
    let uz: tamga_protocol::MemberCode = "UZ".parse().expect("valid");
    let cfg = NetConfig {
        keypair: tamga_config::demo::demo_keypair(uz),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
        peers: tamga_node::daemon::peer_entries(&uz_fed),
        max_connections: 8,
        dial_backoff_max: Duration::from_secs(1),
        limits: net::PeerLimits::default(),
        liveness: net::Liveness::default(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (h, mut events, _task) = net::spawn(cfg, cancel.clone()).expect("spawns");
    let target = node.node().shared().config.member;
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, NetEvent::Connected { member, .. } if member == target) {
                return;
            }
        }
    })
    .await
    .expect("connects");
    let responder = h.clone();
    let hello = tamga_protocol::Hello {
        member: uz,
        roster_digest: uz_fed.roster.digest(),
        agreements: uz_fed.agreement_terms(),
        checkpoint: None,
    };
    let h2 = hello.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let NetEvent::Inbound { id, request, .. } = ev {
                let resp = match request {
                    Request::Hello(_) => Response::Hello(h2.clone()),
                    other => answer(other),
                };
                let _ = responder.respond(id, resp).await;
            }
        }
    });
    let reply = h.request(target, Request::Hello(hello)).await.expect("hello answered");
    assert!(matches!(reply, Response::Hello(_)));
    (h, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_projections_are_refused_audited_and_not_stored() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let uz: tamga_protocol::MemberCode = "UZ".parse().expect("valid");
    let ru_code: tamga_protocol::MemberCode = "RU".parse().expect("valid");
    let (h, cancel) = rogue_uz(ru, |request| match request {
        Request::Summary(_) => Response::Summary(tamga_protocol::Summary { streams: vec![] }),
        _ => Response::Error("no".into()),
    })
    .await;

    let key = tamga_config::demo::demo_signing_key(uz);
    let sign = |r: &SaltedRecord, e: Envelope| r.project(|_| false, e, &key).expect("projects");
    let good = sign(&record("ipr.protected_mark", "UZ", "GOOD".into()), envelope("sco-ipr-2012", &["RU"], 1));
    let mut bad_sig =
        sign(&record("ipr.protected_mark", "UZ", "BADSIG".into()), envelope("sco-ipr-2012", &["RU"], 2));
    bad_sig.signature.0[5] ^= 1;
    let outside =
        sign(&record("enforcement.alert", "UZ", "OUT".into()), envelope("sco-ipr-2012", &["RU"], 3));
    let forged_origin: Projection =
        sign(&record("ipr.protected_mark", "KZ", "FORGED".into()), envelope("sco-ipr-2012", &["RU"], 4));
    let not_audience =
        sign(&record("ipr.protected_mark", "UZ", "AUD".into()), envelope("sco-ipr-2012", &["CN"], 5));
    let not_party =
        sign(&record("enforcement.alert", "UZ", "BILAT".into()), envelope("ru-kz-enforcement", &["RU"], 1));
    let too_big =
        sign(&record("ipr.protected_mark", "UZ", "x".repeat(40_000)), envelope("sco-ipr-2012", &["RU"], 6));
    let mut unknown_field = record("ipr.protected_mark", "UZ", "FIELD".into());
    unknown_field.record.body.insert("smuggled".into(), Value::Text("x".into()));
    let unknown_field = sign(
        &SaltedRecord::new(unknown_field.record, &SaltKey::generate()),
        envelope("sco-ipr-2012", &["RU"], 7),
    );

    // A field the agreement redacts (`personal` under the IPR memorandum), revealed.
    let mut redacted = record("ipr.protected_mark", "UZ", "REDACTED".into());
    redacted.record.body.insert("right_holder_name".into(), Value::Text("I. Petrov".into()));
    let redacted =
        sign(&SaltedRecord::new(redacted.record, &SaltKey::generate()), envelope("sco-ipr-2012", &["RU"], 8));
    // Dated three days ahead: its retention would run from a time not yet come.
    let mut ahead = record("ipr.protected_mark", "UZ", "AHEAD".into());
    ahead.record.header.created_ms = tamga_node::writer::now_ms() + 3 * 86_400_000;
    let ahead =
        sign(&SaltedRecord::new(ahead.record, &SaltKey::generate()), envelope("sco-ipr-2012", &["RU"], 9));
    // Values ingest would have refused, signed by their origin all the same: of the wrong
    // type, not among an enumeration's values, longer than the field's `max_len`.
    let off_catalog = |field: &str, value: Value, seq: u64| {
        let mut r = record("ipr.protected_mark", "UZ", "OFF".into());
        r.record.body.insert(field.into(), value);
        sign(&SaltedRecord::new(r.record, &SaltKey::generate()), envelope("sco-ipr-2012", &["RU"], seq))
    };
    let wrong_type = off_catalog("mark_name", Value::Int(1), 10);
    let not_allowed = off_catalog("mark_kind", Value::Text("bogus".into()), 11);
    let too_long = off_catalog("mark_name", Value::Text("x".repeat(201)), 12);
    // Revocations come only from whom a share could: not of KZ's record in a category the
    // agreement does not cover, relayed by UZ ...
    let kz_key = tamga_config::demo::demo_signing_key("KZ".parse().expect("valid"));
    let revoke_outside = record("enforcement.alert", "KZ", "OUT".into())
        .revocation(&envelope("sco-ipr-2012", &["RU"], 1), 1, &kz_key)
        .expect("revokes");
    // ... and not from UZ under RU and KZ's bilateral agreement, even though UZ's hello
    // names that agreement with the right digest (below).
    let revoke_bilateral = record("enforcement.alert", "UZ", "BILAT".into())
        .revocation(&envelope("ru-kz-enforcement", &["RU"], 2), 2, &key)
        .expect("revokes");
    let fed_dir = ru.federation.as_ref().expect("own federation copy").path().to_owned();
    let load = |member: &str| {
        Federation::load_files(
            &fed_dir.join("roster.toml"),
            &fed_dir.join("catalog.toml"),
            &fed_dir.join("agreements"),
            &fed_dir.join(format!("policies/{member}.toml")),
            member.parse().expect("valid"),
        )
        .expect("loads")
    };
    let (ru_fed, mut claimed) = (load("RU"), load("UZ").agreement_terms());
    claimed.extend(ru_fed.agreement_terms().into_iter().filter(|(a, _)| a.as_str() == "ru-kz-enforcement"));
    claimed.sort();
    let hello = tamga_protocol::Hello {
        member: uz,
        roster_digest: ru_fed.roster.digest(),
        agreements: claimed,
        checkpoint: None,
    };
    assert!(matches!(h.request(ru_code, Request::Hello(hello)).await, Ok(Response::Hello(_))));

    let before = ru.client(Role::Operator).get("/v1/status", &[]).await.expect("status")["records"].as_u64();
    let push = vec![
        good,
        bad_sig,
        outside,
        forged_origin,
        not_audience,
        not_party,
        too_big,
        unknown_field,
        redacted,
        ahead,
        wrong_type,
        not_allowed,
        too_long,
        revoke_outside,
        revoke_bilateral,
    ];
    let n = push.len();
    let reply = h.request(ru_code, Request::Push(Push { projections: push })).await.expect("answered");
    let Response::Push(reply) = reply else { panic!("expected a push reply, got {reply:?}") };
    assert_eq!(reply.receipts.len(), 1, "only the good one is acknowledged: {reply:?}");
    let refused: Vec<u32> = reply.refused.iter().map(|r| r.index).collect();
    assert_eq!(refused, (1..n as u32).collect::<Vec<_>>(), "{reply:?}");

    let after = ru.client(Role::Operator).get("/v1/status", &[]).await.expect("status")["records"].as_u64();
    assert_eq!(after, before.map(|b| b + 1), "exactly the good one was stored");
    let listed =
        ru.client(Role::Operator).get("/v1/records", &[("origin", "UZ".into())]).await.expect("lists");
    let bodies: Vec<String> = listed["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["body"]["mark_name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(bodies, vec!["GOOD".to_owned()]);
    let rejected =
        ru.client(Role::Auditor).get("/v1/audit", &[("action", "rejected".into())]).await.expect("audit");
    assert_eq!(rejected.as_array().map(Vec::len), Some(n - 1), "{rejected:#}");
    cancel.cancel();
    f.stop().await;
}

/// A rogue peer claims to hold RU's own stream up to the last number there is, answers
/// each pull for it with a projection of RU's that RU did not sign and with every number
/// withheld: RU pulls a bounded number of times, takes in nothing, and numbers on as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_claiming_an_own_stream_it_does_not_hold_changes_nothing() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let ru_code: tamga_protocol::MemberCode = "RU".parse().expect("valid");
    let ipr =
        tamga_protocol::StreamKey { origin: ru_code, agreement: "sco-ipr-2012".parse().expect("valid") };
    let cat = example_catalog();
    let ingest = |tag: &'static str| {
        let op = ru.client(Role::Operator);
        let r = record_json(&cat, "ipr.protected_mark", "public", tag);
        async move { op.post("/v1/records", &serde_json::json!({ "records": [r] })).await.expect("ingests") }
    };
    ingest("first").await;
    let store = ru.node().shared().store.clone();
    assert_eq!(store.stream_head(&ipr).expect("reads"), 1);

    let pulls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = pulls.clone();
    let (forger, stream) = (record("ipr.protected_mark", "RU", "FORGED".into()), ipr.clone());
    let uz_key = tamga_config::demo::demo_signing_key("UZ".parse().expect("valid"));
    let (h, cancel) = rogue_uz(ru, move |request| match request {
        Request::Pull(p) => {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let from = p.ranges.first().map_or(1, |r| r.from);
            let forged = forger
                .project(|_| false, envelope("sco-ipr-2012", &["UZ"], from), &uz_key)
                .expect("projects");
            Response::Pull(tamga_protocol::PullReply { projections: vec![forged], withheld: p.ranges })
        }
        Request::Summary(_) => Response::Summary(tamga_protocol::Summary { streams: vec![] }),
        _ => Response::Error("no".into()),
    })
    .await;
    let claim = tamga_protocol::StreamSummary { stream, contiguous: u64::MAX - 1, above: vec![u64::MAX] };
    let summary = Request::Summary(tamga_protocol::Summary { streams: vec![claim] });
    assert!(matches!(h.request(ru_code, summary).await.expect("answered"), Response::Summary(_)));
    wait_for("RU pulls from the rogue peer", || {
        let n = pulls.load(std::sync::atomic::Ordering::Relaxed);
        async move { n > 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = pulls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n <= tamga_node::sync::TAKE_BACK_PULLS, "{n} pulls for one summary");

    assert_eq!(store.stream_head(&ipr).expect("reads"), 1, "RU numbers on from its own head");
    ingest("second").await;
    assert_eq!(store.stream_head(&ipr).expect("reads"), 2);
    let forged =
        ru.client(Role::Operator).get("/v1/records", &[("origin", "RU".into())]).await.expect("lists");
    assert_eq!(forged["records"].as_array().map(Vec::len), Some(2), "only its own two: {forged:#}");
    let report = ru.client(Role::Auditor).get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(report["ok"], true, "{report:#}");
    cancel.cancel();
    f.stop().await;
}

/// A rogue peer's summaries list thousands of streams of agreements that do not exist,
/// and of one it is not a party to: RU keeps of them only the streams it shares with the
/// peer, and each summary replaces the one before, so summaries cannot grow its memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_summary_keeps_only_the_streams_shared_with_its_sender() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let ru_code: tamga_protocol::MemberCode = "RU".parse().expect("valid");
    // UZ answers RU's own summaries (each anti-entropy round) with the one it last sent:
    // a summary replaces the one before, whichever side started the exchange.
    let last = std::sync::Arc::new(std::sync::Mutex::new(tamga_protocol::Summary { streams: vec![] }));
    let answer = last.clone();
    let (h, cancel) = rogue_uz(ru, move |request| match request {
        Request::Summary(_) => Response::Summary(answer.lock().expect("not poisoned").clone()),
        _ => Response::Error("no".into()),
    })
    .await;
    let stream = |origin: &str, agreement: &str| tamga_protocol::StreamSummary {
        stream: tamga_protocol::StreamKey {
            origin: origin.parse().expect("valid"),
            agreement: agreement.parse().expect("valid"),
        },
        contiguous: 0,
        above: vec![],
    };
    let summary = |shared: &str, agreement_of: fn(usize) -> String| {
        let mut streams: Vec<_> = (0..4000).map(|i| stream("UZ", &agreement_of(i))).collect();
        streams.push(stream("KZ", "ru-kz-enforcement"));
        streams.push(stream(shared, "sco-ipr-2012"));
        tamga_protocol::Summary { streams }
    };
    let kept = || {
        let states = ru.node().shared().sync.snapshot();
        states.get(&"UZ".parse().expect("valid")).map(|s| s.streams.keys().cloned().collect::<Vec<_>>())
    };
    for (shared, agreement_of) in
        [("UZ", (|i| format!("made-up-{i}")) as fn(usize) -> String), ("CN", |i| format!("other-{i}"))]
    {
        let sent = summary(shared, agreement_of);
        *last.lock().expect("not poisoned") = sent.clone();
        let reply = h.request(ru_code, Request::Summary(sent)).await.expect("answered");
        assert!(matches!(reply, Response::Summary(_)), "{reply:?}");
        let want = vec![format!("{shared}/sco-ipr-2012")];
        wait_for("RU keeps the one stream it shares with UZ", || {
            let now = kept();
            let want = want.clone();
            async move { now == Some(want) }
        })
        .await;
    }
    cancel.cancel();
    f.stop().await;
}

/// While KZ is cut off from RU, RU makes three IPR records and a rogue UZ says it holds
/// RU's IPR stream and that every number of it is withheld from KZ. KZ has no signed word
/// against it, so it marks them withheld and its head passes them. Then the link is back.
/// RU's IPR stream, its head, and UZ's cancel.
async fn withheld_from_kz_on_uz_word(
    f: &TestFederation,
) -> (tamga_protocol::StreamKey, u64, tokio_util::sync::CancellationToken) {
    let (ru, kz) = (f.node("RU"), f.node("KZ"));
    let (ru_code, kz_code) = (ru.node().shared().config.member, kz.node().shared().config.member);
    let fed_of = |n: &TestNode| Federation::load(&n.config().expect("config")).expect("loads");
    let all_but = |n: &TestNode, other: tamga_protocol::MemberCode| {
        let peers = tamga_node::daemon::peer_entries(&fed_of(n));
        peers.into_iter().filter(|p| p.member != other).collect::<Vec<_>>()
    };
    ru.node().shared().net.set_peers(all_but(ru, kz_code)).await.expect("cuts");
    kz.node().shared().net.set_peers(all_but(kz, ru_code)).await.expect("cuts");
    wait_for("the RU–KZ link down", || async {
        let c = kz.node().shared().net.connected().await.unwrap_or_default();
        !c.iter().any(|(m, _)| *m == ru_code)
    })
    .await;

    let cat = example_catalog();
    let records: Vec<_> =
        (0..3).map(|i| record_json(&cat, "ipr.protected_mark", "public", &format!("cut-{i}"))).collect();
    let op = ru.client(Role::Operator);
    op.post("/v1/records", &serde_json::json!({ "records": records })).await.expect("ingests");
    let ipr =
        tamga_protocol::StreamKey { origin: ru_code, agreement: "sco-ipr-2012".parse().expect("valid") };
    let head = ru.node().shared().store.stream_head(&ipr).expect("reads");
    assert_eq!(head, 3, "one IPR share each");

    let stream = ipr.clone();
    let (_h, cancel) = rogue_uz(kz, move |request| match request {
        Request::Pull(p) => {
            Response::Pull(tamga_protocol::PullReply { projections: vec![], withheld: p.ranges })
        }
        Request::Summary(_) => Response::Summary(tamga_protocol::Summary {
            streams: vec![tamga_protocol::StreamSummary {
                stream: stream.clone(),
                contiguous: head,
                above: vec![],
            }],
        }),
        _ => Response::Error("no".into()),
    })
    .await;
    let store = kz.node().shared().store.clone();
    wait_for("KZ takes UZ's word", || async { store.stream_head(&ipr).expect("reads") == head }).await;
    for seq in 1..=head {
        assert!(store.view().is_withheld(&ipr, seq).expect("reads"), "#{seq} marked withheld");
        assert!(store.projection(&ipr, seq).expect("reads").is_none());
    }
    assert_eq!(store.unconfirmed_withheld(&ipr, 1, u64::MAX, 10).expect("reads"), vec![1, 2, 3]);

    ru.node().shared().net.set_peers(tamga_node::daemon::peer_entries(&fed_of(ru))).await.expect("heals");
    kz.node().shared().net.set_peers(tamga_node::daemon::peer_entries(&fed_of(kz))).await.expect("heals");
    (ipr, head, cancel)
}

/// KZ, told by a rogue UZ that RU's IPR numbers are withheld from it (see
/// [`withheld_from_kz_on_uz_word`]), asks RU again for what it knows only on UZ's word
/// once the link to RU is back, holds RU's records, and audits UZ's claim as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_false_withheld_claim_is_undone_by_the_origin() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let (ipr, head, cancel) = withheld_from_kz_on_uz_word(&f).await;
    let kz = f.node("KZ");
    let store = kz.node().shared().store.clone();
    wait_for("KZ holds RU's records, asked of RU again", || async {
        (1..=head).all(|seq| store.projection(&ipr, seq).ok().flatten().is_some())
    })
    .await;
    for seq in 1..=head {
        assert!(!store.view().is_withheld(&ipr, seq).expect("reads"), "#{seq} no longer marked withheld");
    }
    assert_eq!(store.unconfirmed_withheld(&ipr, 1, u64::MAX, 10).expect("reads"), Vec::<u64>::new());
    // The auditor sees UZ's word contradicted by RU's signatures, each number once.
    let auditor = kz.client(Role::Auditor);
    let v = auditor
        .get("/v1/audit", &[("action", "rejected".into()), ("peer", "UZ".into())])
        .await
        .expect("queries");
    let contradicted: Vec<String> = v
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["entry"]["reason"].as_str())
        .filter(|r| r.starts_with("said to be withheld from this node"))
        .map(str::to_owned)
        .collect();
    // Each names how many of RU's numbers it covers ("2 projections of RU, #1..#2").
    let count = |r: &String| r.split(": ").nth(1)?.split(' ').next()?.parse::<usize>().ok();
    let numbers: usize = contradicted.iter().map(|r| count(r).unwrap_or(0)).sum();
    assert_eq!(numbers, 3, "{contradicted:?}");
    let listed =
        kz.client(Role::Operator).get("/v1/records", &[("origin", "RU".into())]).await.expect("lists");
    assert_eq!(listed["records"].as_array().map(Vec::len), Some(3), "{listed:#}");
    let report = kz.client(Role::Auditor).get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(report["ok"], true, "{report:#}");
    cancel.cancel();
    f.stop().await;
}

/// The same false claim, but KZ's own policy declines RU's IPR records: once RU's signed
/// projections come, each number is declined on KZ's own word, and not asked of RU again
/// at every round, until KZ's policy changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_number_withheld_on_a_relays_word_then_declined_is_not_asked_again() {
    let mut f = TestFederation::start_with(&["KZ", "RU"], kz_accepts_only_from_cn("sco-ipr-2012"))
        .await
        .expect("starts");
    let (ipr, _, cancel) = withheld_from_kz_on_uz_word(&f).await;
    let store = f.node("KZ").node().shared().store.clone();
    wait_for("KZ declines what RU sends, on its own word", || async {
        store.declined(&ipr, 10).expect("reads") == [1, 2, 3]
            && store.unconfirmed_withheld(&ipr, 1, u64::MAX, 10).expect("reads").is_empty()
    })
    .await;
    assert!((1..=3).all(|seq| store.projection(&ipr, seq).expect("reads").is_none()), "declined");
    cancel.cancel();
    f.stop().await;
}

/// A rogue UZ pushes 70 records to KZ, and refuses every piece of feedback KZ gives on
/// them; then goes on refusing, for good, the first 64 in the order KZ's outbox keeps them
/// (one round's worth), and takes the rest. Each round starts where the last one ended, so
/// the rest reach UZ, and only the refused 64 stay in KZ's outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_refused_for_good_does_not_hold_back_the_rest() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use tamga_protocol::RecordId;
    let mut f = TestFederation::start(&["KZ"]).await.expect("starts");
    let kz = f.node("KZ");
    let (uz, kz_code): (tamga_protocol::MemberCode, _) =
        ("UZ".parse().expect("valid"), kz.node().shared().config.member);
    // `None`: every piece refused; then those listed refused, the rest stored.
    let refused: Arc<Mutex<Option<HashSet<RecordId>>>> = Arc::default();
    let taken: Arc<Mutex<HashSet<RecordId>>> = Arc::default();
    let (r, t) = (refused.clone(), taken.clone());
    let (h, cancel) = rogue_uz(kz, move |request| match request {
        Request::Feedback(fb) => match r.lock().expect("lock").as_ref() {
            Some(refused) if !refused.contains(&fb.record) => {
                t.lock().expect("lock").insert(fb.record);
                Response::FeedbackStored
            }
            _ => Response::Error("refused".into()),
        },
        Request::Summary(_) => Response::Summary(tamga_protocol::Summary { streams: vec![] }),
        _ => Response::Error("no".into()),
    })
    .await;

    let key = tamga_config::demo::demo_signing_key(uz);
    let push: Vec<Projection> = (1..=70)
        .map(|i| {
            let r = record("ipr.protected_mark", "UZ", format!("mark {i}"));
            r.project(|_| false, envelope("sco-ipr-2012", &["KZ"], i), &key).expect("projects")
        })
        .collect();
    let reply = h.request(kz_code, Request::Push(Push { projections: push })).await.expect("answered");
    let Response::Push(reply) = reply else { panic!("expected a push reply, got {reply:?}") };
    assert_eq!(reply.receipts.len(), 70, "{:?}", reply.refused);

    let op = kz.client(Role::Operator);
    let listed =
        op.get("/v1/records", &[("origin", "UZ".into()), ("limit", "100".into())]).await.expect("lists");
    let ids: Vec<String> = listed["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(ids.len(), 70);
    for id in &ids {
        let fb = serde_json::json!({ "outcome": "no_finding", "note": "checked" });
        op.post(&format!("/v1/records/{id}/feedback"), &fb).await.expect("gives feedback");
    }
    let store = kz.node().shared().store.clone();
    let outbox = || store.feedback_outbox(None, None, usize::MAX).expect("reads");
    assert_eq!(outbox().len(), 70, "every piece refused so far");
    let first: HashSet<RecordId> =
        outbox().iter().take(tamga_node::sync::OUTBOX_ROUND).map(|(_, f)| f.record).collect();
    *refused.lock().expect("lock") = Some(first.clone());

    wait_for("the six pieces after one round's worth of refused ones reach UZ", || async {
        taken.lock().expect("lock").len() == 70 - first.len()
    })
    .await;
    // The refused ones go again each round; refused that many times in a row, each leaves
    // the outbox. Each piece's first refusal is audited, and each giving up.
    wait_for("KZ gives up the refused ones", || async { outbox().is_empty() }).await;
    assert!(taken.lock().expect("lock").is_disjoint(&first));
    let query = [("action", "feedback".into()), ("outcome", "refused".into())];
    let v = kz.client(Role::Auditor).get("/v1/audit", &query).await.expect("queries");
    let records = |prefix: &str| -> Vec<RecordId> {
        let es = v.as_array().expect("entries").iter();
        let es = es.filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.starts_with(prefix)));
        es.map(|e| e["entry"]["record"].as_str().expect("a record").parse().expect("an id")).collect()
    };
    let given_up = records("given up");
    assert_eq!(given_up.iter().copied().collect::<HashSet<_>>(), first, "{v:#}");
    assert_eq!(given_up.len(), first.len(), "each once: {v:#}");
    // (The others were refused too if their first send was answered before UZ took them.)
    let refused_once = records("refused by its origin");
    let distinct: HashSet<RecordId> = refused_once.iter().copied().collect();
    assert!(distinct.is_superset(&first), "{v:#}");
    assert_eq!(distinct.len(), refused_once.len(), "each once: {v:#}");
    cancel.cancel();
    f.stop().await;
}

/// Feedback goes to a record's origin: a rogue UZ that sends KZ feedback on RU's record
/// as if KZ were its origin is refused, though number 1 of KZ's own IPR stream, the
/// number RU's record has in RU's, was shared with UZ.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_naming_a_node_as_origin_of_another_members_record_is_refused() {
    let mut f = TestFederation::start(&["KZ", "RU"]).await.expect("starts");
    let cat = example_catalog();
    let ingest = |m: &'static str| {
        let c = f.node(m).client(Role::Operator);
        let r = record_json(&cat, "ipr.protected_mark", "public", m);
        async move {
            let v = c.post("/v1/records", &r).await.expect("ingests");
            v["ids"][0].as_str().expect("an id").to_owned()
        }
    };
    ingest("KZ").await;
    let theirs = ingest("RU").await;
    let kz = f.node("KZ");
    let path = format!("/v1/records/{theirs}");
    wait_for("KZ holds RU's record", || async { kz.client(Role::Operator).get(&path, &[]).await.is_ok() })
        .await;

    let (h, cancel) = rogue_uz(kz, |_| Response::Error("no".into())).await;
    let uz: tamga_protocol::MemberCode = "UZ".parse().expect("valid");
    let fb = tamga_protocol::Feedback::sign(
        theirs.parse().expect("a record id"),
        "sco-ipr-2012".parse().expect("valid"),
        "KZ".parse().expect("valid"),
        uz,
        tamga_protocol::FeedbackOutcome::Seized,
        "nothing of the kind".into(),
        1_790_000_000_000,
        &tamga_config::demo::demo_signing_key(uz),
    );
    let reply = h.request("KZ".parse().expect("valid"), Request::Feedback(fb)).await.expect("answered");
    assert!(matches!(reply, Response::Error(ref why) if why.contains("was not shared")), "{reply:?}");
    let shown = kz.client(Role::Operator).get(&path, &[]).await.expect("shows");
    assert!(shown["feedback"].as_array().is_none_or(Vec::is_empty), "{shown:#}");
    cancel.cancel();
    f.stop().await;
}

/// A hello that names another member than the connection's is refused and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hello_naming_another_member_is_refused_and_audited() {
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    let ru = f.node("RU");
    let (h, cancel) = rogue_uz(ru, |_| Response::Error("no".into())).await;
    let fed = ru.node().shared().fed();
    let posing = tamga_protocol::Hello {
        member: "KZ".parse().expect("valid"),
        roster_digest: fed.roster.digest(),
        agreements: fed.agreement_terms(),
        checkpoint: None,
    };
    let reply = h.request("RU".parse().expect("valid"), Request::Hello(posing)).await.expect("answered");
    assert!(matches!(reply, Response::Error(ref why) if why.contains("hello names KZ")), "{reply:?}");
    let auditor = ru.client(Role::Auditor);
    let named =
        |e: &serde_json::Value| e["entry"]["reason"].as_str().is_some_and(|r| r.contains("hello names KZ"));
    wait_for("RU audits the hello", || async {
        let query = [("action", "rejected".into()), ("peer", "UZ".into())];
        let v = auditor.get("/v1/audit", &query).await.expect("queries");
        v.as_array().is_some_and(|a| a.iter().any(named))
    })
    .await;
    cancel.cancel();
    f.stop().await;
}

// A roster peer sending hello after hello, each with a checkpoint: those it did not sign
// are audited like other refusals (the first of each report interval one by one, the
// rest counted), and of those it signed only a few per anti-entropy period are kept,
// each stored for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_hellos_grows_neither_the_audit_log_nor_the_checkpoints_kept() {
    const HELLOS: u64 = 40;
    let mut f = TestFederation::start(&["RU"]).await.expect("starts");
    // One anti-entropy period for the whole test, as by default (not the second the
    // federation's tests run at).
    let ru = f.nodes.get_mut("RU").expect("RU");
    let toml = std::fs::read_to_string(&ru.config_path).expect("reads");
    std::fs::write(&ru.config_path, toml.replace("anti_entropy_secs = 1\n", "anti_entropy_secs = 3600\n"))
        .expect("writes");
    ru.restart().await.expect("restarts");
    let ru = f.node("RU");
    let (h, cancel) = rogue_uz(ru, |_| Response::Error("no".into())).await;
    let fed = ru.node().shared().fed();
    let uz: tamga_protocol::MemberCode = "UZ".parse().expect("valid");
    let hello = |seq: u64, key: &tamga_protocol::SigningKey| tamga_protocol::Hello {
        member: uz,
        roster_digest: fed.roster.digest(),
        agreements: fed.agreement_terms(),
        checkpoint: Some(tamga_protocol::Checkpoint::sign(
            uz,
            seq,
            tamga_protocol::Digest::of(&seq.to_be_bytes()),
            1_790_000_000_000,
            key,
        )),
    };
    let own = tamga_config::demo::demo_signing_key(uz);
    let other = tamga_config::demo::demo_signing_key("KZ".parse().expect("valid"));
    let ru_code = "RU".parse().expect("valid");
    for seq in 1..=HELLOS {
        for key in [&own, &other] {
            let reply = h.request(ru_code, Request::Hello(hello(seq, key))).await.expect("answered");
            assert!(matches!(reply, Response::Hello(_)), "{reply:?}");
        }
    }
    // A hello after them all, with no checkpoint, is answered once the others were handled
    // (each queued its entry or checkpoint with the writer before it was answered); an
    // ingest after it is answered once the writer has made all of them durable.
    let last = tamga_protocol::Hello { checkpoint: None, ..hello(0, &own) };
    h.request(ru_code, Request::Hello(last)).await.expect("answered");
    let rec = record_json(&example_catalog(), "rms.method", "public", "after the hellos");
    ru.client(Role::Operator).post("/v1/records", &rec).await.expect("ingests");
    let auditor = ru.client(Role::Auditor);
    let unsigned = |e: &serde_json::Value| {
        e["entry"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("checkpoint not signed by the peer's roster key"))
    };
    let query = [("action", "rejected".into()), ("peer", "UZ".into())];
    let v = auditor.get("/v1/audit", &query).await.expect("queries");
    let audited = v.as_array().expect("entries").iter().filter(|e| unsigned(e)).count() as u64;
    assert_eq!(audited, tamga_node::sync::REFUSALS_AUDITED, "{v:#}");
    let kept = auditor.get("/v1/audit/checkpoints", &[("member", "UZ".into())]).await.expect("lists");
    let kept = kept["checkpoints"].as_array().expect("checkpoints");
    assert_eq!(kept.len() as u32, tamga_node::sync::PEER_CHECKPOINTS_KEPT, "{kept:#?}");
    cancel.cancel();
    f.stop().await;
}

//! A backup taken while records are ingested restores to a node holding a
//! prefix-consistent set of them, with a verifying audit log. Another member's backup, or
//! store, is refused by the node that would run on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tamga_node::client::ClientError;
use tamga_node::identity::Role;
use tamga_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_a_consistent_prefix() {
    let node = TestNode::start("UZ").await.expect("starts");
    let cat = example_catalog();
    let op = node.client(Role::Operator);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = {
        let (op, stop, acked) = (op.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let recs: Vec<_> =
                    (0..10).map(|j| record_json(&cat, "rms.method", "public", &format!("{i}-{j}"))).collect();
                let v = op.post("/v1/records", &json!({ "records": recs })).await.expect("ingests");
                let ids =
                    v["ids"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from));
                acked.lock().expect("lock").extend(ids);
                i += 1;
            }
        })
    };
    while acked.lock().expect("lock").len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let bytes = node.client(Role::Admin).get_bytes("/v1/backup").await.expect("backs up");
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer ends");
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    let all: HashSet<String> = acked.iter().cloned().collect();

    // Restore into a fresh data directory of the same member, then start from it.
    let mut restored = TestNode::init("UZ", |_| {}).expect("inits");
    let file = restored.dir.path().join("uz.backup");
    std::fs::write(&file, &bytes).expect("writes");
    let data_dir = restored.config().expect("config").data_dir;
    tamga_node::cli::restore_file(&data_dir, &file).expect("restores");
    restored.restart().await.expect("the restored node starts");

    let op2 = restored.client(Role::Operator);
    let list = op2.get("/v1/records", &[("limit", "10000".into())]).await.expect("lists");
    let held: HashSet<String> = list["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    assert!(before.is_subset(&held), "every record acknowledged before the backup is in it");
    assert!(held.is_subset(&all), "nothing that was never acknowledged");
    // One client, one batch at a time: what the backup holds is what was acknowledged
    // first, with no batch missing from the middle.
    let prefix: HashSet<String> = acked[..held.len()].iter().cloned().collect();
    assert_eq!(held, prefix, "a prefix of what was acknowledged");
    let auditor = restored.client(Role::Auditor);
    let report = auditor.get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(report["ok"], true, "{report:#}");
    let ingested = auditor.get("/v1/audit", &[("action", "ingested".into())]).await.expect("queries");
    assert_eq!(
        ingested.as_array().map(Vec::len),
        Some(held.len()),
        "one ingest entry per restored record, no more"
    );
}

/// A backup whose schema marker (the `Mschema` pair among its keys) disagrees with the
/// schema its header gives, its digest made again to match, restores nothing: the store
/// it would leave is marked a schema `tamga run` refuses. The error names both, no store
/// is left half built, and the same data directory takes the true backup afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_schema_marker_disagrees_with_its_header_restores_nothing() {
    let bytes = backup_of("KZ", "kept").await;
    let snap = tamga_node::backup::decode(&bytes).expect("decodes");

    let mut restored = TestNode::init("KZ", |_| {}).expect("inits");
    let data_dir = restored.config().expect("config").data_dir;
    let header = format!("schema {}", tamga_node::store::SCHEMA_VERSION);
    let store = tamga_node::daemon::STORE_DIR;
    for (marker, named) in [(99u32.to_be_bytes().to_vec(), "schema 99"), (vec![0, 8], "2 bytes long")] {
        let mut altered = snap.clone();
        let pair = altered
            .iter_mut()
            .find(|(k, _)| k.as_slice() == tamga_node::store::SCHEMA_KEY)
            .expect("a schema marker");
        pair.1 = marker;
        let file = restored.dir.path().join("altered.backup");
        std::fs::write(&file, tamga_node::backup::encode(&altered)).expect("writes");
        let e = tamga_node::cli::restore_file(&data_dir, &file).expect_err("refused");
        let e = format!("{e:#}");
        assert!(e.contains(&header) && e.contains(named), "names both {header:?} and {named:?}: {e}");
        for left in [store.to_owned(), format!("{store}.restoring")] {
            assert!(!data_dir.join(&left).exists(), "{left} is left in the data directory");
        }
    }
    let file = restored.dir.path().join("kz.backup");
    std::fs::write(&file, &bytes).expect("writes");
    tamga_node::cli::restore_file(&data_dir, &file).expect("the true backup restores");
    restored.restart().await.expect("the restored node starts");
    assert_eq!(live_ids(&restored).await.len(), 2);
}

/// A backup whose audit index lost a posting, the file's digest made again, restores
/// nothing: its chain verifies, but the restored node's queries would miss the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_audit_index_was_edited_restores_nothing() {
    let mut snap = tamga_node::backup::decode(&backup_of("KZ", "kept").await).expect("decodes");
    // The action index of `ingested` (key `I`, `a`, "ingested", 0, first seq) lists every
    // ingest entry, 8 bytes each: the last one goes.
    let pair =
        snap.iter_mut().find(|(k, _)| k.starts_with(b"Iaingested\0")).expect("the index of ingested entries");
    assert!(pair.1.len() >= 16, "two ingests listed");
    pair.1.truncate(pair.1.len() - 8);

    let restored = TestNode::init("KZ", |_| {}).expect("inits");
    let data_dir = restored.config().expect("config").data_dir;
    let file = restored.dir.path().join("edited.backup");
    std::fs::write(&file, tamga_node::backup::encode(&snap)).expect("writes");
    let e = format!("{:#}", tamga_node::cli::restore_file(&data_dir, &file).expect_err("refused"));
    assert!(e.contains("indexes disagree") && e.contains("posting missing"), "{e}");
    let store = tamga_node::daemon::STORE_DIR;
    for left in [store.to_owned(), format!("{store}.restoring")] {
        assert!(!data_dir.join(&left).exists(), "{left} is left in the data directory");
    }
}

/// The ids of the live records `node` holds, by origin.
async fn live_ids(node: &TestNode) -> HashSet<String> {
    let v =
        node.client(Role::Operator).get("/v1/records", &[("limit", "10000".into())]).await.expect("lists");
    v["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "live")
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect()
}

async fn ingest_marks(node: &TestNode, tag: &str, n: usize) -> Vec<String> {
    let cat = example_catalog();
    let recs: Vec<_> =
        (0..n).map(|i| record_json(&cat, "ipr.protected_mark", "public", &format!("{tag}-{i}"))).collect();
    let v =
        node.client(Role::Operator).post("/v1/records", &json!({ "records": recs })).await.expect("ingests");
    v["ids"].as_array().expect("ids").iter().map(|x| x.as_str().expect("id").to_owned()).collect()
}

async fn wait_holds(node: &TestNode, what: &str, want: &HashSet<String>) {
    let mut last = HashSet::new();
    for _ in 0..(WAIT.as_millis() / 100) {
        last = live_ids(node).await;
        if &last == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: missing {:?}, extra {:?}",
        want.difference(&last).collect::<Vec<_>>(),
        last.difference(want).collect::<Vec<_>>()
    );
}

/// RU is restored from a backup older than what KZ and UZ hold of it, and ingests while
/// they are away: the numbers it gives then are theirs for other records. Once they meet,
/// RU takes back what each holds of its stream, makes its newer records again at numbers
/// above all of theirs, once, and all three end with every record, KZ and UZ refusing
/// none; the numbers RU gives after that reach them as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_older_backup_takes_back_its_stream_from_its_peers() {
    const PEERS: [&str; 2] = ["KZ", "UZ"];
    let mut f = TestFederation::start(&["KZ", "RU", "UZ"]).await.expect("starts");
    let before: HashSet<String> = ingest_marks(f.node("RU"), "before", 4).await.into_iter().collect();
    for m in PEERS {
        wait_holds(f.node(m), &format!("{m} holds what RU made before the backup"), &before).await;
    }
    let backup = f.node("RU").client(Role::Admin).get_bytes("/v1/backup").await.expect("backs up");
    // More than one pull's worth, so that taking them back takes several pulls.
    let lost: HashSet<String> = ingest_marks(f.node("RU"), "lost", 300).await.into_iter().collect();
    let held: HashSet<String> = before.union(&lost).cloned().collect();
    for m in PEERS {
        wait_holds(f.node(m), &format!("{m} holds what RU made after the backup"), &held).await;
    }

    // RU loses its store and is restored from the backup while its peers are away; it
    // ingests three records, which take numbers they hold with three of the lost ones.
    for m in PEERS {
        f.nodes.get_mut(m).expect("a peer").stop().await;
    }
    let ru = f.nodes.get_mut("RU").expect("RU");
    ru.stop().await;
    let data_dir = ru.config().expect("config").data_dir;
    std::fs::remove_dir_all(data_dir.join(tamga_node::daemon::STORE_DIR)).expect("the store is lost");
    let file = ru.dir.path().join("ru.backup");
    std::fs::write(&file, &backup).expect("writes");
    tamga_node::cli::restore_file(&data_dir, &file).expect("restores");
    ru.restart().await.expect("the restored node starts");
    wait_holds(f.node("RU"), "RU holds what the backup held", &before).await;
    let after: HashSet<String> = ingest_marks(f.node("RU"), "after", 3).await.into_iter().collect();

    for m in PEERS {
        f.nodes.get_mut(m).expect("a peer").restart().await.expect("the peer starts");
    }
    let all: HashSet<String> = held.union(&after).cloned().collect();
    wait_holds(f.node("RU"), "RU takes back the records it lost", &all).await;
    for m in PEERS {
        wait_holds(f.node(m), &format!("{m} receives the records RU made after the restore"), &all).await;
    }

    let later: HashSet<String> = ingest_marks(f.node("RU"), "later", 2).await.into_iter().collect();
    let all: HashSet<String> = all.union(&later).cloned().collect();
    for m in PEERS {
        wait_holds(f.node(m), &format!("{m} receives what RU makes next"), &all).await;
    }

    let auditor = f.node("RU").client(Role::Auditor);
    let sent = auditor.get("/v1/audit", &[("action", "sent".into())]).await.expect("queries");
    let again = sent
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["entry"]["reason"].as_str().is_some_and(|r| r.contains("made again as #")))
        .count();
    assert_eq!(
        again, 3,
        "each record whose number its peers held with another is made again once:\n{sent:#}"
    );
    let report = auditor.get("/v1/audit/verify", &[]).await.expect("verifies");
    assert_eq!(report["ok"], true, "{report:#}");
    // A record taken back is held as received from a peer, and is RU's own still: no
    // feedback to itself.
    let taken_back = lost.iter().next().expect("a record");
    let operator = f.node("RU").client(Role::Operator);
    let feedback = json!({ "outcome": "seized" });
    match operator.post(&format!("/v1/records/{taken_back}/feedback"), &feedback).await {
        Err(ClientError::Api { status, message, .. }) => {
            assert_eq!(status.as_u16(), 409, "{message}");
            assert!(message.contains("this node's own"), "{message}");
        }
        other => panic!("feedback on an own record taken back: {other:?}"),
    }
    for m in PEERS {
        let peer = f.node(m).client(Role::Auditor);
        let rejected = peer.get("/v1/audit", &[("action", "rejected".into())]).await.expect("queries");
        assert_eq!(rejected.as_array().map(Vec::len), Some(0), "{m} refused nothing:\n{rejected:#}");
    }
    f.stop().await;
}

/// A backup of `member`'s node holding two records, its log ending with a checkpoint the
/// member signed (a clean stop signs one, and the backup is taken after the restart).
async fn backup_of(member: &str, tag: &str) -> Vec<u8> {
    let mut node = TestNode::start(member).await.expect("starts");
    ingest_marks(&node, tag, 2).await;
    node.restart().await.expect("restarts");
    let bytes = node.client(Role::Admin).get_bytes("/v1/backup").await.expect("backs up");
    node.stop().await;
    let snap = tamga_node::backup::decode(&bytes).expect("decodes");
    assert!(snap.iter().any(|(k, _)| k.first() == Some(&b'K')), "the backup holds a signed checkpoint");
    bytes
}

/// Neither the store nor the store being built is left in `data_dir`.
fn nothing_left(data_dir: &std::path::Path) {
    let store = tamga_node::daemon::STORE_DIR;
    for left in [store.to_owned(), format!("{store}.restoring")] {
        assert!(!data_dir.join(&left).exists(), "{left} is left in the data directory");
    }
}

/// RU's backup restored into KZ's data directory would give KZ's node a log whose
/// checkpoints RU signed, and RU's records as its own: it is refused, naming both
/// members, and nothing is left. Into a directory without a node.toml it restores, and
/// says that who signed the log was not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_another_member_restores_nothing_naming_both() {
    let bytes = backup_of("RU", "ru").await;
    let kz = TestNode::init("KZ", |_| {}).expect("inits");
    let data_dir = kz.config().expect("config").data_dir;
    let file = kz.dir.path().join("ru.backup");
    std::fs::write(&file, &bytes).expect("writes");
    let e = format!("{:#}", tamga_node::cli::restore_file(&data_dir, &file).expect_err("refused"));
    assert!(e.contains("RU's") && e.contains("KZ's"), "names both members: {e}");
    nothing_left(&data_dir);

    let bare = tempfile::tempdir().expect("tempdir");
    let done = tamga_node::cli::restore_file(bare.path(), &file).expect("restores").to_string();
    assert!(done.contains("as a hash chain only") && done.contains("cannot check who signed"), "{done}");
}

/// A forger edits an entry of KZ's backed-up log and makes everything after it again:
/// the chain, the heads of the checkpoints after the edit (signed with its own key, in
/// KZ's name), the head, and the backup's digest. Only the checkpoints' signatures give it away, and the
/// restore checks them under KZ's key: refused, nothing left. The same rewrite signed
/// with KZ's own key restores, so it is the signature alone that refuses the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_log_whose_checkpoints_another_key_signed_restores_nothing() {
    use tamga_node::audit::{Action, AuditEntry, GENESIS};
    use tamga_protocol::{Checkpoint, Digest, SigningKey};

    let snap = tamga_node::backup::decode(&backup_of("KZ", "kz").await).expect("decodes");
    let rewrite = |key: &SigningKey| {
        let mut snap = snap.clone();
        let mut prev = GENESIS;
        let mut hashes = std::collections::HashMap::new();
        let mut edited = false;
        let mut signed = Vec::new();
        for (k, v) in snap.iter_mut().filter(|(k, _)| k.first() == Some(&b'A')) {
            let mut e: AuditEntry = serde_json::from_slice(&v[32..]).expect("an entry");
            if e.action == Action::Ingested && !edited {
                e.reason = Some("nothing was ingested".into());
                edited = true;
            }
            // Checkpoints of the entries before the edit still match, and are left as KZ signed them.
            if let Some(cp) = e.checkpoint.as_mut().filter(|cp| cp.head != hashes[&cp.seq]) {
                *cp = Checkpoint::sign(cp.member, cp.seq, hashes[&cp.seq], cp.time_ms, key);
                signed.push(cp.clone());
            }
            e.prev = prev;
            let bytes = e.to_bytes();
            prev = Digest::of(&bytes);
            hashes.insert(u64::from_be_bytes(k[1..9].try_into().expect("a seq")), prev);
            *v = [prev.0.as_slice(), &bytes].concat();
        }
        assert!(edited && !signed.is_empty(), "an ingest entry before a checkpoint was edited");
        let head = *hashes.keys().max().expect("entries");
        for (k, v) in snap.iter_mut() {
            match k.first() {
                Some(b'H') => *v = [head.to_be_bytes().as_slice(), &prev.0].concat(),
                Some(b'K') => {
                    let seq = u64::from_be_bytes(k[1..9].try_into().expect("a seq"));
                    if let Some(cp) = signed.iter().find(|c| c.seq == seq) {
                        *v = tamga_protocol::codec::encode_stored(cp).expect("encodes");
                    }
                }
                _ => {}
            }
        }
        tamga_node::backup::encode(&snap)
    };

    let kz = TestNode::init("KZ", |_| {}).expect("inits");
    let data_dir = kz.config().expect("config").data_dir;
    let file = kz.dir.path().join("forged.backup");
    std::fs::write(&file, rewrite(&SigningKey::from_bytes(&[7; 32]))).expect("writes");
    let e = format!("{:#}", tamga_node::cli::restore_file(&data_dir, &file).expect_err("refused"));
    assert!(e.contains("not signed by KZ's key"), "{e}");
    nothing_left(&data_dir);

    let own = SigningKey::from_bytes(&tamga_config::demo::demo_secret("KZ".parse().expect("valid")));
    std::fs::write(&file, rewrite(&own)).expect("writes");
    tamga_node::cli::restore_file(&data_dir, &file).expect("a rewrite KZ's key signed restores");
}

/// A store whose audit log another member signed is not run: KZ's node, given RU's store,
/// refuses to start, naming both, and the store is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_log_another_member_signed_does_not_start() {
    let mut ru = TestNode::start("RU").await.expect("starts");
    let r = record_json(&example_catalog(), "rms.method", "public", "ru's");
    ru.client(Role::Operator).post("/v1/records", &r).await.expect("ingests");
    ru.stop().await;
    let mut kz = TestNode::init("KZ", |_| {}).expect("inits");
    let store = |n: &TestNode| n.config().expect("loads").data_dir.join(tamga_node::daemon::STORE_DIR);
    let (from, to) = (store(&ru), store(&kz));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).expect("makes");
    let mut files = vec![from.clone()];
    while let Some(dir) = files.pop() {
        for entry in std::fs::read_dir(&dir).expect("lists") {
            let path = entry.expect("reads").path();
            let target = to.join(path.strip_prefix(&from).expect("inside"));
            if path.is_dir() {
                std::fs::create_dir_all(&target).expect("makes");
                files.push(path);
            } else {
                std::fs::copy(&path, &target).expect("copies");
            }
        }
    }
    let e = kz.restart().await.expect_err("refused").to_string();
    assert!(e.contains("holds RU's audit log") && e.contains("this node is KZ"), "{e}");
    ru.restart().await.expect("RU's own node still starts on it");
    ru.stop().await;
}

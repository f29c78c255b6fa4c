//! Network faults on real links: six member nodes as `tamga run` processes, each in its
//! own network namespace on a bridge, with the faults made in the network itself (see
//! `tamga_tests::netns`). A three-way partition that heals, 200 ms ± 50 ms latency with 5%
//! loss between all members, and a flapping link: after each, every node holds exactly
//! what the files allow it (the oracle), never one record more on the way, no record twice,
//! and every audit chain verifies. Convergence times are measured and printed, not asserted.
//!
//! Each test needs root and network namespaces; without them it prints `SKIPPED` and why,
//! and passes. The tests run one at a time (a lab is six processes on a small machine).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tamga_tests::netns::{self, Lab, Support};

/// Six members of the example federation (the observer is left out).
const MEMBERS: [&str; 6] = ["CN", "KG", "KZ", "RU", "TJ", "UZ"];
/// The longest a lab may take to connect, or a convergence to finish, before the test fails.
const LIMIT: Duration = Duration::from_secs(120);

/// One lab at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tamga-child"))
}

fn netem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tamga-netem"))
}

/// Build the lab (not started), or `None` (printed) when the machine does not allow it.
fn lab(test: &str) -> Option<(Lab, Support)> {
    let support = netns::support_or_skip(test)?;
    let lab = Lab::new(bin(), Some(netem_bin()), &MEMBERS).expect("the lab is built");
    println!("{test}: lab 10.{}.0.0/24, switch namespace {}", lab.subnet, lab.switch);
    Some((lab, support))
}

/// What the oracle expects within each group while partitioned: the records whose origin
/// is in the holder's own group.
async fn within_groups(lab: &Lab, groups: &[&[&str]]) -> Duration {
    let t0 = Instant::now();
    let group_of = |m: &str| groups.iter().position(|g| g.contains(&m)).expect("every member is in a group");
    let want = netns::oracle(lab).await.expect("the oracle");
    let mut origin = std::collections::BTreeMap::new();
    for m in &MEMBERS {
        for r in netns::records(lab, m).await.expect("lists") {
            if let (Some(id), Some(o)) = (r["id"].as_str(), r["origin"].as_str()) {
                origin.insert(id.to_owned(), o.to_owned());
            }
        }
    }
    loop {
        let held = netns::holdings(lab).await.expect("every node answers");
        let mut done = true;
        for (m, h) in &held {
            let reachable: std::collections::BTreeSet<String> =
                want[m].iter().filter(|id| group_of(&origin[*id]) == group_of(m)).cloned().collect();
            let across: Vec<_> = h.difference(&reachable).collect();
            assert!(
                across.is_empty(),
                "{m} holds records from across the partition or not allowed: {across:?}"
            );
            done &= *h == reachable;
        }
        if done {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < LIMIT, "the groups did not converge among themselves within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_way_partition_heals_to_exact_holdings() {
    let _one = SERIAL.lock().await;
    let Some((mut lab, _)) = lab("a_three_way_partition_heals_to_exact_holdings") else { return };
    lab.start_all().await.expect("the nodes start");
    let t = lab.wait_connected(LIMIT).await.expect("the mesh forms");
    println!("partition: full mesh of {} nodes in {:.1} s", MEMBERS.len(), t.as_secs_f64());

    let groups: [&[&str]; 3] = [&["CN", "KG"], &["KZ", "RU"], &["TJ", "UZ"]];
    lab.partition(&groups).expect("partitioned");
    let mut ingested = 0;
    for m in MEMBERS {
        ingested +=
            netns::ingest(&lab, m, &netns::batch(m, "split"), LIMIT).await.expect("acknowledged").len();
    }
    let t = within_groups(&lab, &groups).await;
    println!("partition: {ingested} records ingested on all sides; each group converged among itself in {:.1} s, nothing crossed", t.as_secs_f64());
    // Let the cut last through ten anti-entropy rounds and past the requests' timeouts:
    // still nothing crosses.
    tokio::time::sleep(Duration::from_secs(10)).await;
    within_groups(&lab, &groups).await;
    let group_of = |m: &str| groups.iter().position(|g| g.contains(&m));
    let across = lab
        .connected_pairs()
        .await
        .expect("peers")
        .into_iter()
        .filter(|(a, b)| group_of(a) != group_of(b))
        .count();
    println!("partition: after 10 s of the cut, {across} of 24 links across it are still reported connected (no ping has timed out yet)");

    lab.heal().expect("healed");
    let t = netns::converge(&lab, LIMIT).await.expect("exact holdings after the heal");
    let want = netns::oracle(&lab).await.expect("the oracle");
    println!(
        "partition: converged {:.1} s after the heal ({} deliveries across the former cut and within)",
        t.as_secs_f64(),
        netns::deliveries(&want, ingested)
    );
    netns::audits_verify(&lab).await.expect("every audit chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_jitter_and_loss_between_all_members() {
    let _one = SERIAL.lock().await;
    let Some((mut lab, support)) = lab("latency_jitter_and_loss_between_all_members") else { return };
    if !support.netem && !support.nfqueue {
        println!(
            "SKIPPED latency_jitter_and_loss_between_all_members: neither tc netem nor iptables NFQUEUE"
        );
        return;
    }
    // Impaired from the start: the TLS handshakes and the first hellos cross it too.
    let how = lab.impair(support, 200, 50, 0.05).expect("impaired");
    lab.start_all().await.expect("the nodes start");
    let t = lab.wait_connected(LIMIT).await.expect("the mesh forms");
    println!("latency ({how}: 200 ms ± 50 ms, 5% loss each way): full mesh in {:.1} s", t.as_secs_f64());

    let t0 = Instant::now();
    let mut ingested = 0;
    for m in ["RU", "CN", "KZ", "UZ"] {
        for round in 0..4 {
            let tag = format!("slow{round}");
            ingested +=
                netns::ingest(&lab, m, &netns::batch(m, &tag), LIMIT).await.expect("acknowledged").len();
        }
    }
    let t_ingest = t0.elapsed();
    netns::converge(&lab, LIMIT).await.expect("exact holdings under latency and loss");
    let t = t0.elapsed();
    let want = netns::oracle(&lab).await.expect("the oracle");
    let deliveries = netns::deliveries(&want, ingested);
    println!(
        "latency: {ingested} records ingested at 4 members in {:.1} s; all {deliveries} deliveries done {:.1} s after the first ingest ({:.1} records/s, {:.1} deliveries/s)",
        t_ingest.as_secs_f64(),
        t.as_secs_f64(),
        ingested as f64 / t.as_secs_f64(),
        deliveries as f64 / t.as_secs_f64()
    );
    netns::audits_verify(&lab).await.expect("every audit chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_converges_without_duplicates() {
    let _one = SERIAL.lock().await;
    let Some((mut lab, _)) = lab("a_flapping_link_converges_without_duplicates") else { return };
    lab.start_all().await.expect("the nodes start");
    lab.wait_connected(LIMIT).await.expect("the mesh forms");

    // RU's link: down 2 s, up 3 s, six times, while every member ingests.
    let flapper = "RU";
    let stop = Arc::new(AtomicBool::new(false));
    let switch = lab.switch.clone();
    let flaps = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while n < 6 && !stop.load(Ordering::Relaxed) {
                netns::set_link_in(&switch, flapper, false).expect("link down");
                std::thread::sleep(Duration::from_secs(2));
                netns::set_link_in(&switch, flapper, true).expect("link up");
                std::thread::sleep(Duration::from_secs(3));
                n += 1;
            }
            n
        })
    };
    let t0 = Instant::now();
    let mut ingested = 0;
    let mut round = 0;
    while !flaps.is_finished() {
        for m in MEMBERS {
            let tag = format!("flap{round}");
            ingested +=
                netns::ingest(&lab, m, &netns::batch(m, &tag), LIMIT).await.expect("acknowledged").len();
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let n = flaps.join().expect("the flapper ends");
    lab.set_link(flapper, true).expect("link up");
    println!(
        "flapping: {flapper}'s link went down {n} times in {:.1} s; {ingested} records ingested in {round} rounds at every member",
        t0.elapsed().as_secs_f64()
    );
    let t = netns::converge(&lab, LIMIT).await.expect("exact holdings after the flapping");
    let want = netns::oracle(&lab).await.expect("the oracle");
    println!(
        "flapping: converged {:.1} s after the link came up for good ({} deliveries), no duplicates",
        t.as_secs_f64(),
        netns::deliveries(&want, ingested)
    );
    netns::audits_verify(&lab).await.expect("every audit chain verifies");
}

/// A lab left by a killed run (its pid gone) is removed by the next one, and a new lab
/// does not collide with one that is still up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_and_parallel_labs_do_not_collide() {
    let _one = SERIAL.lock().await;
    let Some(_) = netns::support_or_skip("leftovers_and_parallel_labs_do_not_collide") else { return };
    // A stale namespace as a killed run leaves it: a pid that cannot exist.
    let stale = format!("{}4294967-100-sw", netns::NS_PREFIX);
    let made = std::process::Command::new("ip").args(["netns", "add", &stale]).status().expect("ip runs");
    assert!(made.success());
    let a = Lab::new(bin(), None, &["RU", "KZ"]).expect("a lab");
    let list = String::from_utf8(
        std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip runs").stdout,
    )
    .expect("utf-8");
    assert!(!list.contains(&stale), "the stale namespace is gone:\n{list}");
    let b = Lab::new(bin(), None, &["RU", "KZ"]).expect("a second lab beside the first");
    assert_ne!(a.subnet, b.subnet);
    let (sa, sb) = (a.switch.clone(), b.switch.clone());
    drop(a);
    drop(b);
    let list = String::from_utf8(
        std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip runs").stdout,
    )
    .expect("utf-8");
    assert!(!list.contains(&sa) && !list.contains(&sb), "both labs are torn down:\n{list}");
}

/// How long the long cut is held after its links are declared down.
const HOLD_AFTER_DOWN: Duration = Duration::from_secs(20);

/// The liveness check of this lab's links: a ping every 2 s, failed after 2 s, the link
/// closed after 3 failures in a row, so a cut closes it within about 40 s (the defaults,
/// 15 s, 20 s and 3, within about 110 s; see `[network] ping_max_failures`).
const FAST_LIVENESS: &str = "ping_interval_secs = 2\nping_timeout_secs = 2\nping_max_failures = 3";

/// A cut that outlasts the links' liveness check (node.toml's `[network] ping_*` keys, set
/// short here), so the links close and healing rests on redialling, with the dial backoff
/// grown during the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_outlasts_liveness_heals_by_redialling() {
    let _one = SERIAL.lock().await;
    let Some((mut lab, _)) = lab("a_partition_that_outlasts_liveness_heals_by_redialling") else { return };
    lab.set_network(FAST_LIVENESS).expect("the liveness keys are set");
    lab.start_all().await.expect("the nodes start");
    lab.wait_connected(LIMIT).await.expect("the mesh forms");
    let groups: [&[&str]; 2] = [&["RU"], &["CN", "KG", "KZ", "TJ", "UZ"]];
    lab.partition(&groups).expect("partitioned");
    let cut = Instant::now();
    let crosses = |pairs: &std::collections::BTreeSet<(String, String)>| {
        pairs.iter().filter(|(a, b)| (a == "RU") != (b == "RU")).count()
    };
    loop {
        let n = crosses(&lab.connected_pairs().await.expect("peers"));
        if n == 0 {
            break;
        }
        assert!(cut.elapsed() < Duration::from_secs(90), "links across the cut still up after 90 s: {n}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let down = cut.elapsed();
    // Hold the cut while both sides redial into it and their backoff grows.
    tokio::time::sleep(HOLD_AFTER_DOWN).await;
    let mut ingested = 0;
    for m in ["RU", "KZ", "CN"] {
        ingested +=
            netns::ingest(&lab, m, &netns::batch(m, "long"), LIMIT).await.expect("acknowledged").len();
    }
    lab.heal().expect("healed");
    let healed = Instant::now();
    loop {
        if crosses(&lab.connected_pairs().await.expect("peers")) == 10 {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(400), "the links did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let relinked = healed.elapsed();
    let t = netns::converge(&lab, Duration::from_secs(400)).await.expect("exact holdings");
    println!(
        "long partition: links across the cut declared down {:.1} s into it, cut held {} s more; after the heal, relinked in {:.1} s, converged in {:.1} s ({ingested} records)",
        down.as_secs_f64(),
        HOLD_AFTER_DOWN.as_secs(),
        relinked.as_secs_f64(),
        healed.elapsed().as_secs_f64().max(t.as_secs_f64())
    );
    netns::audits_verify(&lab).await.expect("every audit chain verifies");
}

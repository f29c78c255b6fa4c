//! A network lab without Docker: one Linux network namespace per member, each with a veth
//! to a bridge in a "switch" namespace, and a veth from the test's own (root) namespace to
//! the same bridge so the test reaches every node's API. Nodes are real `tamga run`
//! processes started inside their namespace (`ip netns exec`), listening for peers and for
//! the API on their namespace address `10.<subnet>.0.<n>`.
//!
//! Faults are made where a real network makes them, in the switch namespace:
//! - partitions: iptables DROP rules between groups in the bridge's FORWARD path
//!   (`bridge-nf-call-iptables` is on in the switch namespace only), so packets vanish and
//!   TCP connections hang rather than being reset;
//! - latency, jitter (hence reordering) and loss: `tc netem` on every member's switch port
//!   when the kernel has `sch_netem`; otherwise the same figures from the `tamga-netem`
//!   packet delayer on an NFQUEUE of the bridge's FORWARD path;
//! - a flapping link: the member's switch port set down and up.
//!
//! The lab owns what it builds and tears it down in `Drop` (processes first, then the
//! namespaces, which takes the veths and the bridge with them). Names carry the test
//! process's pid and a subnet claimed atomically by creating the root veth `tgr<subnet>`,
//! so parallel tests do not collide, and a lab left over by a killed run is removed by the
//! next one (its pid is gone). It never touches the root namespace beyond its own veth.
//!
//! It needs root (CAP_NET_ADMIN and the right to mount namespaces); [`support`] checks this
//! honestly at the start of each test, which prints why and passes when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tamga_config::Federation;
use tamga_node::identity::Role;
use tamga_protocol::{Classification, MemberCode, RecordHeader};

use crate::child::ChildNode;

/// Prefix of every namespace a lab creates: `tamga-<pid>-<subnet>-<role>`.
pub const NS_PREFIX: &str = "tamga-";
/// Peer-to-peer port of every node (each has its own address).
pub const PEER_PORT: u16 = 7100;
/// API port of every node, on its namespace address.
pub const API_PORT: u16 = 7180;
/// Host number of the root namespace's address on every lab's subnet.
pub const ROOT_HOST: u8 = 254;
/// Subnets `10.<x>.0.0/24` a lab may claim.
pub const SUBNETS: std::ops::RangeInclusive<u8> = 100..=250;
/// How long one API call may take before the harness calls the node unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The bridge in the switch namespace.
const BRIDGE: &str = "tbr0";
/// The iptables chain holding the partition rules, jumped to from FORWARD.
const PARTITION_CHAIN: &str = "TAMGA-PART";
/// The NFQUEUE number of the packet delayer (queues are per namespace).
const QUEUE: &str = "0";

/// What the machine allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// `tc qdisc … netem` works.
    pub netem: bool,
    /// iptables' NFQUEUE target works (for the `tamga-netem` fallback).
    pub nfqueue: bool,
}

/// Run a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("{program}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip …`.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// A command inside namespace `ns`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    ip(&all)
}

/// Whether this machine lets a test build namespaces, veths, a bridge with iptables on its
/// forwarding path, and which way it can delay packets. `Err` says why not.
pub fn support() -> Result<Support, String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_err(|e| format!("cannot read /proc/self: {e}"))?.uid();
    if uid != 0 {
        return Err(format!("not root (uid {uid}): network namespaces need CAP_NET_ADMIN"));
    }
    for tool in ["ip", "tc", "iptables", "sysctl"] {
        if Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    let ns = format!("{NS_PREFIX}{}-probe", std::process::id());
    let _ = ip(&["netns", "del", &ns]);
    ip(&["netns", "add", &ns]).map_err(|e| format!("`ip netns add` is not allowed: {e}"))?;
    let probe = || -> Result<Support, String> {
        let s = |r: anyhow::Result<String>| r.map(drop).map_err(|e| e.to_string());
        s(ip(&["-n", &ns, "link", "add", "tprobe0", "type", "veth", "peer", "name", "tprobe1"]))?;
        s(ip(&["-n", &ns, "link", "add", "tprobebr", "type", "bridge"]))?;
        s(ip(&["-n", &ns, "link", "set", "tprobe1", "master", "tprobebr"]))?;
        s(in_ns(&ns, "sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=1"]))?;
        s(in_ns(&ns, "iptables", &["-A", "FORWARD", "-s", "10.0.0.1", "-j", "DROP"]))?;
        let netem = ip(&[
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "tprobe0", "root", "netem", "delay", "10ms",
        ])
        .is_ok();
        let nfqueue =
            in_ns(&ns, "iptables", &["-A", "FORWARD", "-s", "10.0.0.2", "-j", "NFQUEUE", "--queue-num", "0"])
                .is_ok();
        Ok(Support { netem, nfqueue })
    };
    let r = probe();
    let _ = ip(&["netns", "del", &ns]);
    r.map_err(|e| format!("namespaces work but the lab cannot be built: {e}"))
}

/// Print why a test is skipped when the machine does not allow a lab; `None` then.
pub fn support_or_skip(test: &str) -> Option<Support> {
    match support() {
        Ok(s) => Some(s),
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// Remove labs left behind by test processes that no longer exist.
pub fn remove_stale_labs() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for p in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", p]);
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// One member of a lab.
#[derive(Debug)]
pub struct LabMember {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: std::net::Ipv4Addr,
    /// Its node (files, API address, process).
    pub node: ChildNode,
}

/// A lab of member namespaces on one bridge, with a node per member.
#[derive(Debug)]
pub struct Lab {
    /// The claimed subnet: `10.<subnet>.0.0/24`.
    pub subnet: u8,
    /// The switch namespace.
    pub switch: String,
    /// Members by code.
    pub members: BTreeMap<String, LabMember>,
    /// The root namespace's veth.
    root_if: String,
    /// Namespaces created (deleted on drop).
    namespaces: Vec<String>,
    /// The packet delayer, when running.
    delayer: Option<Child>,
    /// The `tamga-netem` binary.
    netem_bin: Option<PathBuf>,
}

impl Lab {
    /// Build the lab for `members` of the example federation and `tamga init` a node in
    /// each (not started). `bin` is the `tamga` binary, `netem_bin` the packet delayer.
    pub fn new(bin: &Path, netem_bin: Option<&Path>, members: &[&str]) -> anyhow::Result<Lab> {
        anyhow::ensure!(members.len() < usize::from(ROOT_HOST), "too many members");
        remove_stale_labs();
        let subnet = SUBNETS
            .clone()
            .find(|x| {
                ip(&["link", "add", &format!("tgr{x}"), "type", "veth", "peer", "name", &format!("tgs{x}")])
                    .is_ok()
            })
            .ok_or_else(|| anyhow::anyhow!("no free lab subnet: every tgr<x> veth exists"))?;
        let pid = std::process::id();
        let mut lab = Lab {
            subnet,
            switch: format!("{NS_PREFIX}{pid}-{subnet}-sw"),
            members: BTreeMap::new(),
            root_if: format!("tgr{subnet}"),
            namespaces: Vec::new(),
            delayer: None,
            netem_bin: netem_bin.map(Path::to_owned),
        };
        let sw = lab.switch.clone();
        lab.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        in_ns(&sw, "sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=1"])?;
        in_ns(&sw, "iptables", &["-N", PARTITION_CHAIN])?;
        in_ns(&sw, "iptables", &["-A", "FORWARD", "-j", PARTITION_CHAIN])?;
        let tgs = format!("tgs{subnet}");
        ip(&["link", "set", &tgs, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &tgs, "name", "p-root"])?;
        ip(&["-n", &sw, "link", "set", "p-root", "master", BRIDGE, "up"])?;
        ip(&["addr", "add", &format!("{}/24", lab.addr(ROOT_HOST)), "dev", &lab.root_if])?;
        ip(&["link", "set", &lab.root_if, "up"])?;

        // The roster: lab members at their namespace addresses; the others keep loopback
        // addresses where nothing listens (refused at once, as a member that is down).
        let sentinel: BTreeMap<String, u16> = tamga_node::localfed::EXAMPLE_MEMBERS
            .iter()
            .enumerate()
            .map(|(i, m)| ((*m).to_owned(), 7101 + i as u16))
            .collect();
        let hosts: BTreeMap<&str, u8> = members.iter().enumerate().map(|(i, m)| (*m, i as u8 + 1)).collect();
        for (code, host) in &hosts {
            let ns = format!("{NS_PREFIX}{pid}-{subnet}-{code}");
            lab.add_ns(&ns)?;
            let port = format!("p-{code}");
            ip(&["-n", &ns, "link", "add", "veth0", "type", "veth", "peer", "name", &port, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &port, "master", BRIDGE, "up"])?;
            let addr = lab.addr(*host);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "veth0"])?;
            ip(&["-n", &ns, "link", "set", "veth0", "up"])?;

            let fed_dir = tempfile::tempdir()?;
            tamga_node::localfed::write_federation(fed_dir.path(), &sentinel)?;
            let roster = fed_dir.path().join("roster.toml");
            let mut text = std::fs::read_to_string(&roster)?;
            for (m, h) in &hosts {
                let from = format!("\"/ip4/127.0.0.1/tcp/{}\"", sentinel[*m]);
                anyhow::ensure!(text.contains(&from), "the roster has no address {from} for {m}");
                text = text.replace(&from, &format!("\"/ip4/{}/tcp/{PEER_PORT}\"", lab.addr(*h)));
            }
            std::fs::write(&roster, text)?;
            let listen = format!("/ip4/{addr}/tcp/{PEER_PORT}");
            let mut node = ChildNode::init(bin, code, fed_dir.path(), &listen, |t| {
                *t = t.replace("[network]\n", "[network]\nanti_entropy_secs = 1\n");
            })?;
            let api = format!("{addr}:{API_PORT}");
            let cfg = std::fs::read_to_string(&node.files.config_path)?;
            std::fs::write(&node.files.config_path, cfg.replace(&node.api, &api))?;
            node.api = api;
            node.files.federation = Some(fed_dir);
            lab.members.insert((*code).to_owned(), LabMember { ns, addr, node });
        }
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// `10.<subnet>.0.<host>`.
    pub fn addr(&self, host: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, self.subnet, 0, host)
    }

    /// One member.
    pub fn member(&self, code: &str) -> &LabMember {
        &self.members[code]
    }

    /// Add `keys` (lines of `key = value`) to every member's `[network]` section, before
    /// the nodes start.
    pub fn set_network(&self, keys: &str) -> anyhow::Result<()> {
        for m in self.members.values() {
            let path = &m.node.files.config_path;
            let cfg = std::fs::read_to_string(path)?;
            anyhow::ensure!(cfg.contains("[network]\n"), "{} has no [network] section", path.display());
            std::fs::write(path, cfg.replacen("[network]\n", &format!("[network]\n{keys}\n"), 1))?;
        }
        Ok(())
    }

    /// Start `member`'s node inside its namespace and wait until its API answers.
    pub async fn start(&mut self, member: &str) -> anyhow::Result<()> {
        let m = self.members.get_mut(member).ok_or_else(|| anyhow::anyhow!("no member {member}"))?;
        anyhow::ensure!(m.node.child.is_none(), "{member} is already running");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &m.ns]).arg(&m.node.bin).args(["run", "--config"]);
        cmd.arg(&m.node.files.config_path).stdin(Stdio::null()).stdout(Stdio::null());
        cmd.env("TAMGA_LOG", "warn").stderr(Stdio::null());
        for (k, v) in &m.node.env {
            cmd.env(k, v);
        }
        // `ip netns exec` enters the namespace and execs the binary: same pid, so the
        // harness's SIGKILL reaches the node itself.
        m.node.child = Some(cmd.spawn()?);
        m.node.wait_ready().await
    }

    /// Start every node.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        let codes: Vec<String> = self.members.keys().cloned().collect();
        for c in codes {
            self.start(&c).await?;
        }
        Ok(())
    }

    /// Wait until every node reports every other lab member connected.
    pub async fn wait_connected(&self, within: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for m in self.members.values() {
                let peers = call(m.node.client(Role::Operator).get("/v1/peers", &[])).await;
                let n = peers.ok().map_or(0, |p| {
                    p["peers"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .filter(|p| p["connected"] == true)
                                .filter(|p| {
                                    p["member"].as_str().is_some_and(|x| self.members.contains_key(x))
                                })
                                .count()
                        })
                        .unwrap_or(0)
                });
                all &= n + 1 >= self.members.len();
            }
            if all {
                return Ok(t0.elapsed());
            }
            anyhow::ensure!(t0.elapsed() < within, "the lab did not connect within {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The pairs `(a, b)` of lab members where `a` reports `b` connected.
    pub async fn connected_pairs(&self) -> anyhow::Result<BTreeSet<(String, String)>> {
        let mut out = BTreeSet::new();
        for (code, m) in &self.members {
            let peers = call(m.node.client(Role::Operator).get("/v1/peers", &[])).await?;
            for p in peers["peers"].as_array().into_iter().flatten() {
                if let (Some(x), true) = (p["member"].as_str(), p["connected"] == true) {
                    out.insert((code.clone(), x.to_owned()));
                }
            }
        }
        Ok(out)
    }

    /// Cut the network into `groups`: no packet crosses between two groups (dropped, not
    /// refused). The test's own link to every node stays up.
    pub fn partition(&self, groups: &[&[&str]]) -> anyhow::Result<()> {
        self.heal()?;
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for x in *a {
                    for y in *b {
                        let (sx, sy) = (self.member(x).addr.to_string(), self.member(y).addr.to_string());
                        in_ns(
                            &self.switch,
                            "iptables",
                            &["-A", PARTITION_CHAIN, "-s", &sx, "-d", &sy, "-j", "DROP"],
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Remove every partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        in_ns(&self.switch, "iptables", &["-F", PARTITION_CHAIN]).map(drop)
    }

    /// Set `member`'s link to the switch up or down.
    pub fn set_link(&self, member: &str, up: bool) -> anyhow::Result<()> {
        set_link_in(&self.switch, member, up)
    }

    /// Delay every packet between members by `delay_ms ± jitter_ms` (uniform) and lose a
    /// `loss` share of them, each way. Returns how: `"tc netem"` or `"tamga-netem"`.
    pub fn impair(
        &mut self,
        support: Support,
        delay_ms: u32,
        jitter_ms: u32,
        loss: f64,
    ) -> anyhow::Result<&'static str> {
        if support.netem {
            for code in self.members.keys() {
                let port = format!("p-{code}");
                let (d, j, l) =
                    (format!("{delay_ms}ms"), format!("{jitter_ms}ms"), format!("{}%", loss * 100.0));
                let args = ["qdisc", "replace", "dev", &port, "root", "netem", "delay", &d, &j, "loss", &l];
                in_ns(&self.switch, "tc", &args)?;
            }
            return Ok("tc netem");
        }
        anyhow::ensure!(support.nfqueue, "neither netem nor NFQUEUE is available");
        let bin = self.netem_bin.clone().ok_or_else(|| anyhow::anyhow!("no tamga-netem binary given"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.switch])
            .arg(&bin)
            .args([
                "--queue",
                QUEUE,
                "--delay-ms",
                &delay_ms.to_string(),
                "--jitter-ms",
                &jitter_ms.to_string(),
            ])
            .args(["--loss", &loss.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("tamga-netem exited at once: {status}");
        }
        self.delayer = Some(child);
        // Member-to-member traffic only: the test's own API calls pass undelayed.
        let root = self.addr(ROOT_HOST).to_string();
        let args =
            ["-I", "FORWARD", "1", "!", "-s", &root, "!", "-d", &root, "-j", "NFQUEUE", "--queue-num", QUEUE];
        in_ns(&self.switch, "iptables", &args)?;
        Ok("tamga-netem")
    }

    /// All nodes' API clients for `role`, by member.
    pub fn clients(&self, role: Role) -> BTreeMap<String, tamga_node::client::Client> {
        self.members.iter().map(|(c, m)| (c.clone(), m.node.client(role))).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            m.node.kill9();
        }
        if let Some(mut d) = self.delayer.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.namespaces.iter().rev() {
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for p in pids.split_whitespace() {
                    let _ = run("kill", &["-KILL", p]);
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
        // Its peer went with the switch namespace; delete it in case that is still pending.
        let _ = ip(&["link", "del", &self.root_if]);
    }
}

/// Set `member`'s port on the bridge of switch namespace `switch` up or down (usable from
/// a thread that does not hold the lab).
pub fn set_link_in(switch: &str, member: &str, up: bool) -> anyhow::Result<()> {
    let port = format!("p-{member}");
    ip(&["-n", switch, "link", "set", &port, if up { "up" } else { "down" }]).map(drop)
}

/// An API call with [`CALL_TIMEOUT`]: a node behind a link that is down does not answer.
pub async fn call<F>(f: F) -> anyhow::Result<Value>
where
    F: std::future::Future<Output = Result<Value, tamga_node::client::ClientError>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{e}")),
        Err(_) => anyhow::bail!("no answer within {CALL_TIMEOUT:?}"),
    }
}

/// One record of every category in every classification (public, non-confidential,
/// confidential), unique to `tag`, for `member`.
pub fn batch(member: &str, tag: &str) -> Vec<Value> {
    crate::record_mix(member, tag, &crate::example_categories())
}

/// Ingest `records` at `member`, retrying while its link is down (ingest is idempotent:
/// the same record has the same id); returns the acknowledged ids.
pub async fn ingest(
    lab: &Lab,
    member: &str,
    records: &[Value],
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let client = lab.member(member).node.client(Role::Operator);
    let t0 = Instant::now();
    loop {
        match call(client.post("/v1/records", &json!({ "records": records }))).await {
            Ok(v) => {
                let ids = v["ids"].as_array().ok_or_else(|| anyhow::anyhow!("no ids in {v}"))?;
                return ids
                    .iter()
                    .map(|x| x.as_str().map(String::from).ok_or_else(|| anyhow::anyhow!("id")))
                    .collect();
            }
            Err(e) if t0.elapsed() < within => {
                eprintln!("ingest at {member} retried: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("{member} did not acknowledge the records within {within:?}: {e}"),
        }
    }
}

/// Every record a node lists (live or not).
pub async fn records(lab: &Lab, member: &str) -> anyhow::Result<Vec<Value>> {
    // A list answers at most MAX_LIST_LIMIT records: asked origin by origin, a node's
    // holdings stay within it in every lab here, and one that reaches it is an error
    // rather than a cut list (which would look like records held that no policy allows).
    let client = lab.member(member).node.client(Role::Operator);
    let limit = tamga_node::api::MAX_LIST_LIMIT;
    let mut out = Vec::new();
    for origin in lab.members.keys() {
        let query = [("origin", origin.clone()), ("limit", limit.to_string())];
        let v = call(client.get("/v1/records", &query)).await?;
        let recs = v["records"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            recs.len() < limit,
            "{member} holds {limit} or more records of {origin}: the list is cut"
        );
        out.extend(recs);
    }
    Ok(out)
}

fn header_of(r: &Value) -> anyhow::Result<RecordHeader> {
    let s = |k: &str| r[k].as_str().ok_or_else(|| anyhow::anyhow!("record without {k}: {r}"));
    Ok(RecordHeader {
        category: s("category")?.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        classification: serde_json::from_value::<Classification>(r["classification"].clone())?,
        origin: s("origin")?.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        created_ms: tamga_node::api::parse_since(s("created")?, 0).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        supersedes: None,
        expires_ms: None,
    })
}

/// What every node should hold, from the files alone: for each record its origin lists,
/// the holders [`tamga_node::localfed::expected_holders`] gives.
pub async fn oracle(lab: &Lab) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut feds: BTreeMap<MemberCode, Federation> = BTreeMap::new();
    for (code, m) in &lab.members {
        let cfg = m.node.files.config()?;
        let fed = Federation::load(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        feds.insert(code.parse().map_err(|e| anyhow::anyhow!("{e}"))?, fed);
    }
    let now = tamga_node::writer::now_ms();
    let mut want: BTreeMap<String, BTreeSet<String>> =
        lab.members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for code in lab.members.keys() {
        for r in records(lab, code).await? {
            if r["origin"] != code.as_str() {
                continue;
            }
            let id = r["id"].as_str().ok_or_else(|| anyhow::anyhow!("record without id"))?.to_owned();
            for holder in tamga_node::localfed::expected_holders(&header_of(&r)?, &feds, now) {
                if let Some(set) = want.get_mut(holder.as_str()) {
                    set.insert(id.clone());
                }
            }
        }
    }
    Ok(want)
}

/// What every node holds now (live records), failing if a node lists one id twice.
pub async fn holdings(lab: &Lab) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    for code in lab.members.keys() {
        let recs = records(lab, code).await?;
        let ids: Vec<&str> = recs.iter().filter_map(|r| r["id"].as_str()).collect();
        let set: BTreeSet<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        anyhow::ensure!(
            set.len() == ids.len(),
            "{code} lists {} records but {} ids: a duplicate",
            ids.len(),
            set.len()
        );
        let live =
            recs.iter().filter(|r| r["state"] == "live").filter_map(|r| r["id"].as_str().map(String::from));
        out.insert(code.clone(), live.collect());
    }
    Ok(out)
}

/// Wait until every node holds exactly what the oracle says, failing at once if any node
/// holds a record it should not (even on the way). Returns the time it took.
pub async fn converge(lab: &Lab, within: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let want = oracle(lab).await?;
    loop {
        let held = match holdings(lab).await {
            Ok(h) => h,
            Err(e) if t0.elapsed() < within && e.to_string().contains("no answer") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        for (m, h) in &held {
            let extra: Vec<_> = h.difference(&want[m]).collect();
            anyhow::ensure!(extra.is_empty(), "{m} holds records the policies do not allow: {extra:?}");
        }
        if held == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > within {
            let diff: Vec<String> =
                held.iter().map(|(m, h)| format!("{m}: holds {} of {}", h.len(), want[m].len())).collect();
            anyhow::bail!("no convergence within {within:?}: {}", diff.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every node's audit chain verifies.
pub async fn audits_verify(lab: &Lab) -> anyhow::Result<()> {
    for (code, m) in &lab.members {
        let v = call(m.node.client(Role::Auditor).get("/v1/audit/verify", &[])).await?;
        anyhow::ensure!(v["ok"] == true, "{code}'s audit log does not verify: {v}");
    }
    Ok(())
}

/// How many record copies the oracle expects beyond the origins' own: the deliveries a
/// convergence consists of.
pub fn deliveries(want: &BTreeMap<String, BTreeSet<String>>, ingested: usize) -> usize {
    want.values().map(BTreeSet::len).sum::<usize>().saturating_sub(ingested)
}

//! The federation `tamga bench` replicates in: up to [`MAX_NODES`] members (the ten SCO
//! member states of today), each with its own data directory, demo identity, and its own
//! copy of the files, on free loopback ports. One agreement (the RMS memorandum, every
//! member a party) and one category (`rms.method`, public): every member shares it with
//! every other and accepts it from every other, so the replication figures measure the
//! dissemination path, not the policy's selectivity.
//!
//! Nodes are created through the same path as `tamga init` ([`crate::cli::create_node`])
//! and run either in-process ([`crate::localfed::LocalNode::start`]) or as a child
//! `tamga run` process ([`Child`]), which is how the bench measures one node's resident
//! memory honestly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tamga_protocol::MemberCode;

use crate::client::Client;
use crate::identity::{Role, Tokens};
use crate::localfed::{LocalFederation, LocalNode};

/// The bench federation's members, the origin first: the SCO member states of today.
pub const MEMBERS: [&str; 10] = ["RU", "CN", "KZ", "KG", "TJ", "UZ", "IN", "PK", "IR", "BY"];
/// Most nodes a bench federation can have.
pub const MAX_NODES: usize = MEMBERS.len();
/// Anti-entropy interval of bench nodes (seconds): what bounds how soon a restarted node
/// starts to catch up.
pub const ANTI_ENTROPY_SECS: u64 = 2;
/// How long a child node may take to answer its API after it was spawned.
pub const CHILD_START_TIMEOUT: Duration = Duration::from_secs(60);

const AGREEMENT: &str = r#"id = "sco-rms-2013"
title = "Memorandum on cooperation in the development and application of risk management systems"
signed = 2013-11-29
effective_from = 2014-01-01
parties = [PARTIES]
categories = ["rms.method", "rms.event"]
redact_tags = ["personal"]
relay = true
retention_days = 1095
"#;

/// A bench federation: the in-process nodes, plus each member's API address.
#[derive(Debug)]
pub struct BenchFederation {
    /// The nodes, by member; the origin is [`BenchFederation::origin`].
    pub fed: LocalFederation,
    /// Each member's API address (fixed in its node.toml, so a child process has it too).
    pub api: BTreeMap<MemberCode, std::net::SocketAddr>,
    /// The member whose node ingests.
    pub origin: MemberCode,
}

fn code(m: &str) -> MemberCode {
    m.parse().expect("the bench members are valid member codes")
}

/// Write the files of a federation of `members` (roster on `ports`) into `dir`.
fn write_files(dir: &Path, members: &[MemberCode], ports: &BTreeMap<MemberCode, u16>) -> Result<()> {
    std::fs::create_dir_all(dir.join("agreements"))?;
    std::fs::create_dir_all(dir.join("policies"))?;
    let catalog = crate::example::FILES
        .iter()
        .find(|(p, _)| *p == "catalog.toml")
        .map(|(_, t)| *t)
        .context("the example catalog is embedded")?;
    std::fs::write(dir.join("catalog.toml"), catalog)?;
    let mut roster = String::from("# tamga bench: DEMO ONLY keys.\n");
    for m in members {
        let peer = tamga_config::demo::demo_keypair(*m).public().to_peer_id();
        let port = ports.get(m).copied().context("a port per member")?;
        roster.push_str(&format!(
            "\n[[member]]\ncode = \"{m}\"\nname = \"Customs service {m}\"\nrole = \"member\"\n\
             peer_ids = [\"{peer}\"]\naddrs = [\"/ip4/127.0.0.1/tcp/{port}\"]\n"
        ));
    }
    std::fs::write(dir.join("roster.toml"), roster)?;
    let parties: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    std::fs::write(
        dir.join("agreements/sco-rms-2013.toml"),
        AGREEMENT.replace("PARTIES", &parties.join(", ")),
    )?;
    for m in members {
        std::fs::write(
            dir.join(format!("policies/{m}.toml")),
            format!(
                "member = \"{m}\"\n\n[[share]]\nagreement = \"sco-rms-2013\"\n\n\
                 [[accept]]\nagreement = \"sco-rms-2013\"\n"
            ),
        )?;
    }
    Ok(())
}

impl BenchFederation {
    /// Create (not start) a federation of `nodes` members under `root`.
    pub fn create(root: &Path, nodes: usize) -> Result<BenchFederation> {
        ensure!((2..=MAX_NODES).contains(&nodes), "--nodes must be from 2 to {MAX_NODES}, not {nodes}");
        let members: Vec<MemberCode> = MEMBERS.iter().take(nodes).map(|m| code(m)).collect();
        // Below the ephemeral range: a node restarted as a child process listens on the
        // same API port, which the bench's own outgoing connections must not take meanwhile.
        let free = crate::localfed::free_loopback_ports(2 * members.len())?;
        let (peer_ports, api_ports) = free.split_at(members.len());
        let ports: BTreeMap<MemberCode, u16> =
            members.iter().copied().zip(peer_ports.iter().copied()).collect();
        let mut api = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (m, api_port) in members.iter().zip(api_ports) {
            let base = root.join(m.as_str());
            let files = base.join("federation");
            write_files(&files, &members, &ports)?;
            let data = base.join("node");
            let api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], *api_port));
            crate::cli::create_node(&crate::cli::InitArgs {
                member: m.to_string(),
                data_dir: data.clone(),
                listen: format!("/ip4/127.0.0.1/tcp/{}", ports[m]),
                api: api_addr.to_string(),
                federation: Some(files),
                demo_identity: true,
                json: true,
            })?;
            let config_path = std::fs::canonicalize(&data)?.join("node.toml");
            let text = std::fs::read_to_string(&config_path)?
                .replace("[network]\n", &format!("[network]\nanti_entropy_secs = {ANTI_ENTROPY_SECS}\n"));
            std::fs::write(&config_path, text)?;
            let tokens = Tokens::load(&data.join("tokens.json"))?;
            api.insert(*m, api_addr);
            out.insert(*m, LocalNode { member: *m, config_path, tokens, node: None });
        }
        Ok(BenchFederation { fed: LocalFederation { nodes: out }, api, origin: members[0] })
    }

    /// Create and start every node in-process, and wait until all are connected.
    pub async fn start(root: &Path, nodes: usize) -> Result<BenchFederation> {
        let mut f = BenchFederation::create(root, nodes)?;
        f.fed.start_all().await?;
        f.fed.wait_connected(Duration::from_secs(120)).await?;
        Ok(f)
    }

    /// An operator client of `member`'s API.
    pub fn client(&self, member: MemberCode) -> Result<Client> {
        let n = self.fed.nodes.get(&member).context("a member of the bench federation")?;
        let addr = self.api.get(&member).context("an API address")?;
        Ok(Client::with_token(format!("http://{addr}"), n.tokens.token(Role::Operator)))
    }

    /// The running in-process nodes other than the origin.
    pub fn peers(&self) -> Vec<&crate::daemon::Node> {
        self.fed
            .nodes
            .iter()
            .filter(|(m, _)| **m != self.origin)
            .filter_map(|(_, n)| n.node.as_ref())
            .collect()
    }

    /// The member the catch-up measurement takes offline: the last by member code.
    pub fn laggard(&self) -> MemberCode {
        *self.fed.nodes.keys().rev().find(|m| **m != self.origin).unwrap_or(&self.origin)
    }

    /// `member`'s node.toml.
    pub fn config_path(&self, member: MemberCode) -> Result<PathBuf> {
        Ok(self.fed.nodes.get(&member).context("a member of the bench federation")?.config_path.clone())
    }
}

/// A node running as a child `tamga run` process (the bench's own executable), killed
/// with SIGKILL when dropped.
#[derive(Debug)]
pub struct Child {
    child: tokio::process::Child,
    /// An operator client of its API.
    pub client: Client,
}

impl Child {
    /// Spawn `tamga run --config <config>`; returns once the process is spawned (not yet
    /// serving: see [`Child::wait_up`]).
    pub fn spawn(config: &Path, client: Client) -> Result<Child> {
        let exe = std::env::current_exe().context("the path of the running tamga executable")?;
        let child = tokio::process::Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning a child `tamga run`")?;
        Ok(Child { child, client })
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Wait until its API answers.
    pub async fn wait_up(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CHILD_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the child node exited early: {status}");
            }
            if self.client.get("/v1/status", &[]).await.is_ok() {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the child node did not answer within {CHILD_START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A counter from its `/metrics` (0 while it does not answer).
    pub async fn metric(&self, name: &str) -> u64 {
        let Ok(bytes) = self.client.get_bytes("/metrics").await else { return 0 };
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse::<f64>().ok()))
            .map_or(0, |v| v as u64)
    }

    /// Its resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        self.pid().map_or(0, rss_of)
    }

    /// The CPU time its threads have used so far, from /proc.
    pub fn cpu_secs(&self) -> f64 {
        self.pid().map_or(0.0, cpu_secs_of)
    }

    /// Kill it with SIGKILL and reap it.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing the child node")
    }

    /// Stop it with SIGTERM, as an operator would (its store flushed and closed), and
    /// reap it. An error if it has not exited cleanly within [`CHILD_START_TIMEOUT`] (it
    /// is then killed as it is dropped).
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.pid().context("the child node has exited already")?;
        let kill = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        ensure!(kill.await.context("running kill")?.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(CHILD_START_TIMEOUT, self.child.wait()).await {
            Ok(status) => ensure!(status?.success(), "the child node stopped with an error"),
            Err(_) => anyhow::bail!("the child node did not stop within {CHILD_START_TIMEOUT:?}"),
        }
        Ok(())
    }
}

/// Resident memory of process `pid` (VmRSS in /proc/PID/status), in bytes; 0 if unknown.
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The clock ticks per second of the CPU times in /proc/PID/stat (`USER_HZ`, fixed at 100
/// in Linux's interface to user space).
const USER_HZ: f64 = 100.0;

/// CPU time (user and system, every thread, those ended included) of process `pid` so far,
/// in seconds, from /proc/PID/stat; 0 if unknown.
pub fn cpu_secs_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| cpu_secs_in(&s)).unwrap_or(0.0)
}

/// The user and system CPU time in a /proc/PID/stat line (its 14th and 15th fields), in
/// seconds.
fn cpu_secs_in(stat: &str) -> Option<f64> {
    // The command name, in parentheses, may hold spaces and parentheses: the fields are
    // counted from after its last `)`, where the 3rd field begins.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let (user, system): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    Some((user + system) as f64 / USER_HZ)
}

/// The start of a window over which this process's use of the cores is measured.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// When the window began.
    pub at: Instant,
    /// The process's CPU time then, in seconds.
    cpu_secs: f64,
}

impl CpuMark {
    /// A window beginning now.
    pub fn now() -> CpuMark {
        CpuMark { at: Instant::now(), cpu_secs: cpu_secs_of(std::process::id()) }
    }

    /// Cores this process used on average from the mark until now.
    pub fn cores_used(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        (cpu_secs_of(std::process::id()) - self.cpu_secs) / wall.max(f64::MIN_POSITIVE)
    }
}

/// Bytes of the files under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tamga (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100";
        assert_eq!(cpu_secs_in(stat), Some(3.25));
        assert_eq!(cpu_secs_in("4242 (tamga) S 1 2"), None, "too few fields");
        assert_eq!(cpu_secs_in("no command name"), None);
    }

    #[test]
    fn this_process_is_seen_using_cpu() {
        let mark = CpuMark::now();
        let mut x = 0u64;
        // 50 ms of CPU, or 10 s of waiting for the clock to show any.
        while cpu_secs_of(std::process::id()) < mark.cpu_secs + 0.05
            && mark.at.elapsed() < Duration::from_secs(10)
        {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        assert!(mark.cores_used() > 0.0);
    }
}

//! A federation of real nodes in one process, on loopback: what `tamga bench` (and the
//! demo) start. Each member gets its own data directory and its own copy of the example
//! federation's files, with the roster's addresses pointing at free loopback ports.
//!
//! It starts nodes through the same path as `tamga init` + `tamga run`.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tamga_config::Federation;
use tamga_protocol::{MemberCode, RecordHeader};

use crate::daemon::{Node, StartError};
use crate::identity::Tokens;
use crate::net::NetError;

/// The example federation's members, in roster order, with their example ports 7101….
pub const EXAMPLE_MEMBERS: [&str; 7] = ["CN", "KG", "KZ", "RU", "TJ", "UZ", "XS"];

/// One member's node.
#[derive(Debug)]
pub struct LocalNode {
    /// The member.
    pub member: MemberCode,
    /// Its node.toml.
    pub config_path: PathBuf,
    /// Its API tokens.
    pub tokens: Tokens,
    /// The running node, if started.
    pub node: Option<Node>,
}

impl LocalNode {
    /// (Re)start the node from its files.
    pub async fn start(&mut self) -> Result<()> {
        self.stop().await;
        let config = tamga_config::NodeConfig::load(&self.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.node = Some(Node::start(config).await?);
        Ok(())
    }

    /// Stop it cleanly.
    pub async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }
}

/// Nodes of a local federation, by member.
#[derive(Debug)]
pub struct LocalFederation {
    /// The nodes.
    pub nodes: BTreeMap<MemberCode, LocalNode>,
}

/// Free loopback ports, one per example member (held only while choosing).
pub fn free_ports() -> Result<BTreeMap<String, u16>> {
    let ports = free_loopback_ports(EXAMPLE_MEMBERS.len())?;
    Ok(EXAMPLE_MEMBERS.iter().map(|m| (*m).to_owned()).zip(ports).collect())
}

/// `n` distinct TCP ports free on loopback now, to be listened on a moment later.
///
/// They are taken below the kernel's ephemeral range (`ip_local_port_range`), from a
/// random start: a port the kernel handed out for `:0` and then released could be handed
/// to any other socket bound to `:0` before its listener binds it again, while a port below
/// the range is never handed out that way.
pub fn free_loopback_ports(n: usize) -> Result<Vec<u16>> {
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .filter(|low| *low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let start = rand::random::<u16>() % span;
    // Hold every listener until all are chosen, so that no port is chosen twice.
    let mut held = Vec::with_capacity(n);
    for k in 0..span {
        if held.len() == n {
            break;
        }
        let port = LOWEST + (start + k) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    anyhow::ensure!(held.len() == n, "found {} of {n} free loopback ports", held.len());
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// How many times [`on_free_ports`] starts again.
pub const PORT_ATTEMPTS: usize = 4;

/// Run `start`, which chooses free ports ([`free_loopback_ports`]), starts nodes on them,
/// and stops what it started when it fails. A port is free when it is chosen, but nothing
/// holds it until its node listens, and another program may take it meanwhile: when
/// `start` fails for that reason ([`port_taken`]), it is run again, up to
/// [`PORT_ATTEMPTS`] times in all.
pub async fn on_free_ports<T, Fut>(mut start: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e) => {
                tracing::debug!(error = %format!("{e:#}"), attempt, "a chosen port was taken; choosing others");
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Whether a node failed to start because one of its listen addresses (peer-to-peer or
/// API) was taken.
pub fn port_taken(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<StartError>() {
        Some(StartError::Bind { source, .. }) => source.kind() == std::io::ErrorKind::AddrInUse,
        Some(StartError::Net(NetError::Listen { reason, .. })) => reason.contains("in use"),
        _ => false,
    })
}

/// The oracle: the members that may hold a record — its origin, and every member of the
/// audience the origin's files give it under an agreement covering its category that
/// also accepts it by its own files, holding the same agreement terms (its text and the
/// catalog's definition of its categories).
/// `feds` are the members' federations as each loaded them (its own policy); members
/// absent from `feds` are not running and hold nothing. Computed from the files alone,
/// independently of what sync did: the demo and the federation tests compare every
/// node's holdings with it.
pub fn expected_holders<F: Borrow<Federation>>(
    header: &RecordHeader,
    feds: &BTreeMap<MemberCode, F>,
    now_ms: i64,
) -> BTreeSet<MemberCode> {
    let mut out = BTreeSet::from([header.origin]);
    let Some(fo) = feds.get(&header.origin).map(Borrow::borrow) else { return out };
    for a in fo.agreements_for(&header.category) {
        if !a.is_party(header.origin) {
            continue;
        }
        for x in tamga_config::audience(header, a, fo, now_ms) {
            let Some(fx) = feds.get(&x).map(Borrow::borrow) else { continue };
            let Some(ax) = fx.agreement(&a.id) else { continue };
            if ax.terms != a.terms {
                continue;
            }
            if tamga_config::decide_accept(header, ax, header.origin, fx, now_ms).is_ok() {
                out.insert(x);
            }
        }
    }
    out
}

/// Write the example federation into `dir` with the roster pointing at `ports`.
pub fn write_federation(dir: &Path, ports: &BTreeMap<String, u16>) -> Result<()> {
    crate::example::write_to(dir)?;
    let roster = dir.join("roster.toml");
    let mut text = std::fs::read_to_string(&roster)?;
    for (i, code) in EXAMPLE_MEMBERS.iter().enumerate() {
        let from = format!("\"/ip4/127.0.0.1/tcp/{}\"", 7101 + i);
        let port = ports.get(*code).copied().unwrap_or(1);
        text = text.replace(&from, &format!("\"/ip4/127.0.0.1/tcp/{port}\""));
    }
    std::fs::write(roster, text)?;
    Ok(())
}

impl LocalFederation {
    /// Create (not start) nodes for `members` under `root`, with anti-entropy every
    /// `anti_entropy_secs`.
    pub fn create(root: &Path, members: &[MemberCode], anti_entropy_secs: u64) -> Result<LocalFederation> {
        let ports = free_ports()?;
        let mut nodes = BTreeMap::new();
        for m in members {
            let base = root.join(m.as_str());
            let fed = base.join("federation");
            std::fs::create_dir_all(&fed)?;
            write_federation(&fed, &ports)?;
            let data = base.join("node");
            let port = ports.get(m.as_str()).copied().context("a member of the example federation")?;
            crate::cli::create_node(&crate::cli::InitArgs {
                member: m.to_string(),
                data_dir: data.clone(),
                listen: format!("/ip4/127.0.0.1/tcp/{port}"),
                api: "127.0.0.1:0".into(),
                federation: Some(fed),
                demo_identity: true,
                json: true,
            })?;
            let config_path = std::fs::canonicalize(&data)?.join("node.toml");
            let text = std::fs::read_to_string(&config_path)?
                .replace("[network]\n", &format!("[network]\nanti_entropy_secs = {anti_entropy_secs}\n"));
            std::fs::write(&config_path, text)?;
            let tokens = Tokens::load(&data.join("tokens.json"))?;
            nodes.insert(*m, LocalNode { member: *m, config_path, tokens, node: None });
        }
        Ok(LocalFederation { nodes })
    }

    /// Start every node.
    pub async fn start_all(&mut self) -> Result<()> {
        for n in self.nodes.values_mut() {
            n.start().await?;
        }
        Ok(())
    }

    /// Stop every node.
    pub async fn stop_all(&mut self) {
        for n in self.nodes.values_mut() {
            n.stop().await;
        }
    }

    /// Wait until every running node is connected to every other running one.
    pub async fn wait_connected(&self, within: std::time::Duration) -> Result<()> {
        let want = self.nodes.values().filter(|n| n.node.is_some()).count().saturating_sub(1);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all = true;
            for n in self.nodes.values() {
                if let Some(node) = &n.node {
                    let c = node.shared().net.connected().await.unwrap_or_default();
                    all &= c.len() >= want;
                }
            }
            if all {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the local federation did not connect within {within:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_told_apart_from_other_start_failures() {
        let listen = StartError::Net(NetError::Listen {
            addr: "/ip4/127.0.0.1/tcp/7101".parse().expect("multiaddr"),
            reason: "Address already in use (os error 98)".into(),
        });
        assert!(port_taken(&anyhow::Error::new(listen).context("starting CN")));
        let api = StartError::Bind {
            addr: "127.0.0.1:7201".parse().expect("address"),
            source: std::io::ErrorKind::AddrInUse.into(),
        };
        assert!(port_taken(&anyhow::Error::new(api)));
        let unroutable = StartError::Net(NetError::Listen {
            addr: "/ip4/10.9.9.9/tcp/7101".parse().expect("multiaddr"),
            reason: "Cannot assign requested address (os error 99)".into(),
        });
        assert!(!port_taken(&anyhow::Error::new(unroutable)));
        assert!(!port_taken(&anyhow::Error::new(StartError::Tls("no key".into()))));
        assert!(!port_taken(&anyhow::anyhow!("cannot listen on 127.0.0.1:7101: in use")));
    }

    fn taken() -> anyhow::Error {
        let source = std::io::ErrorKind::AddrInUse.into();
        anyhow::Error::new(StartError::Bind { addr: "127.0.0.1:7201".parse().expect("address"), source })
    }

    #[tokio::test]
    async fn a_start_that_lost_its_port_is_run_again_and_nothing_else_is() {
        let runs = std::cell::Cell::new(0);
        let started = on_free_ports(|| async {
            runs.set(runs.get() + 1);
            if runs.get() < 3 {
                Err(taken())
            } else {
                Ok(runs.get())
            }
        })
        .await;
        assert_eq!(started.expect("the third run starts"), 3);

        runs.set(0);
        let never = on_free_ports(|| async {
            runs.set(runs.get() + 1);
            Err::<(), _>(taken())
        })
        .await;
        assert!(never.is_err_and(|e| port_taken(&e)));
        assert_eq!(runs.get(), PORT_ATTEMPTS);

        runs.set(0);
        let other = on_free_ports(|| async {
            runs.set(runs.get() + 1);
            Err::<(), _>(anyhow::anyhow!("bad roster"))
        })
        .await;
        assert!(other.is_err());
        assert_eq!(runs.get(), 1, "only a taken port is tried again");
    }
}

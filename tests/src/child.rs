//! Nodes as child processes: a real `tamga run` that a test can kill with SIGKILL and
//! restart on the same data directory. The binary is the test package's `tamga-child`
//! (the same `tamga_node::cli::main`), passed in by the integration test as
//! `env!("CARGO_BIN_EXE_tamga-child")`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tamga_node::client::Client;
use tamga_node::identity::Role;

use crate::TestNode;

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range, so that no outgoing
/// connection takes it while a child that listens on it is restarted.
pub fn free_port() -> anyhow::Result<u16> {
    tamga_node::localfed::free_loopback_ports(1)?.pop().ok_or_else(|| anyhow::anyhow!("no free port"))
}

/// A node run as a child process.
#[derive(Debug)]
pub struct ChildNode {
    /// Data directory, node.toml and tokens (the in-process `node` field stays `None`).
    pub files: TestNode,
    /// The API address, fixed in node.toml so that it survives restarts.
    pub api: String,
    /// The `tamga` binary.
    pub bin: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Extra environment for the process (e.g. `TAMGA_LOG`).
    pub env: Vec<(String, String)>,
}

impl ChildNode {
    /// `tamga init` a node for `member` of the federation in `federation`, listening for
    /// peers on `listen`, with its API on a fixed free loopback port; `edit` changes
    /// node.toml. Not started.
    pub fn init(
        bin: &Path,
        member: &str,
        federation: &Path,
        listen: &str,
        edit: impl FnOnce(&mut String),
    ) -> anyhow::Result<ChildNode> {
        let api = format!("127.0.0.1:{}", free_port()?);
        let files = TestNode::init_in(member, federation, listen, |t| {
            *t = t.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{api}\""));
            edit(t);
        })?;
        let text = std::fs::read_to_string(&files.config_path)?;
        anyhow::ensure!(text.contains(&api), "node.toml does not carry the API address {api}:\n{text}");
        Ok(ChildNode { files, api, bin: bin.to_owned(), child: None, env: Vec::new() })
    }

    /// Start `tamga run` and wait until its API answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "already running");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--config"]).arg(&self.files.config_path);
        // The process's own log goes to `child.log` in its data directory (appended across
        // restarts), for a failing test to show.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        cmd.env("TAMGA_LOG", "warn").stdout(Stdio::null()).stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        self.wait_ready().await
    }

    /// Wait until `GET /v1/status` answers (or the process exits).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = self.client(Role::Operator);
        for _ in 0..300 {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("tamga run exited with {status} before its API answered");
                }
            }
            if client.get("/v1/status", &[]).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the node at {} did not come up", self.api)
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the process and wait for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow::anyhow!("not running"))?;
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(c.wait()?)
    }

    /// The API base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.api)
    }

    /// An API client with the token of `role`.
    pub fn client(&self, role: Role) -> Client {
        Client::with_token(self.base(), self.files.tokens.token(role))
    }
}

impl ChildNode {
    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        self.files.dir.path()
    }

    /// The store directory inside the data directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir().join(tamga_node::daemon::STORE_DIR)
    }

    /// Where the process's stderr is appended.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("child.log")
    }

    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is running; reaps it (and says how it ended) if it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// The federation (roster, catalog, agreements, policy) as this node loads it.
    pub fn federation(&self) -> anyhow::Result<tamga_config::Federation> {
        tamga_config::Federation::load(&self.files.config()?).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Child nodes of one federation on loopback: each member with its own copy of the example
/// federation's files, the roster pointing at fixed free ports (so that a restarted node
/// is found again), anti-entropy every second; `edit` changes a member's node.toml. Not
/// started.
pub fn federation(
    bin: &Path,
    members: &[&str],
    edit: impl Fn(&str, &mut String),
) -> anyhow::Result<BTreeMap<String, ChildNode>> {
    let ports = tamga_node::localfed::free_ports()?;
    let mut nodes = BTreeMap::new();
    for m in members {
        let fed_dir = tempfile::tempdir()?;
        tamga_node::localfed::write_federation(fed_dir.path(), &ports)?;
        let port = ports.get(*m).ok_or_else(|| anyhow::anyhow!("{m} is not an example member"))?;
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        let mut n = ChildNode::init(bin, m, fed_dir.path(), &listen, |t| {
            *t = t.replace("[network]\n", "[network]\nanti_entropy_secs = 1\n");
            edit(m, t);
        })?;
        n.files.federation = Some(fed_dir);
        nodes.insert((*m).to_owned(), n);
    }
    Ok(nodes)
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

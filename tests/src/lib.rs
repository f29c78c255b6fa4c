//! `tamga-tests`: a harness that starts real tamga nodes in-process, on 127.0.0.1:0 with
//! temporary directories, through the same code paths users hit (`tamga init`, then the
//! daemon's `Node::start`), and talks to them over their real HTTP API.

pub mod child;
pub mod netns;
pub mod reload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tamga_config::NodeConfig;
use tamga_node::client::Client;
use tamga_node::daemon::Node;
use tamga_node::identity::{Role, Tokens};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The example federation shipped in `deploy/example`.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example")
}

/// Install the process-wide rustls provider once (the binary does this in `main`).
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A node started in-process for a test.
#[derive(Debug)]
pub struct TestNode {
    /// The node's data directory (kept until the test ends).
    pub dir: tempfile::TempDir,
    /// Its node.toml.
    pub config_path: PathBuf,
    /// The running node, if running.
    pub node: Option<Node>,
    /// Its API tokens.
    pub tokens: Tokens,
    /// Its own copy of the federation's files, when the harness made one.
    pub federation: Option<tempfile::TempDir>,
}

impl TestNode {
    /// `tamga init` a node for `member` of the example federation (demo identity, API and
    /// peer ports chosen by the OS), with `edit` applied to node.toml, and start it.
    pub async fn start_with(member: &str, edit: impl FnOnce(&mut String)) -> anyhow::Result<TestNode> {
        let mut n = TestNode::init(member, edit)?;
        n.restart().await?;
        Ok(n)
    }

    /// `tamga init` a node without starting it.
    pub fn init(member: &str, edit: impl FnOnce(&mut String)) -> anyhow::Result<TestNode> {
        TestNode::init_in(member, &example_dir(), "/ip4/127.0.0.1/tcp/0", edit)
    }

    /// `tamga init` a node of the federation in `federation`, listening on `listen`.
    pub fn init_in(
        member: &str,
        federation: &Path,
        listen: &str,
        edit: impl FnOnce(&mut String),
    ) -> anyhow::Result<TestNode> {
        install_crypto();
        let dir = tempfile::tempdir()?;
        tamga_node::cli::create_node(&tamga_node::cli::InitArgs {
            member: member.to_owned(),
            data_dir: dir.path().to_owned(),
            listen: listen.to_owned(),
            api: "127.0.0.1:0".into(),
            federation: Some(federation.to_owned()),
            demo_identity: true,
            json: true,
        })?;
        let config_path = std::fs::canonicalize(dir.path())?.join("node.toml");
        let mut text = std::fs::read_to_string(&config_path)?;
        edit(&mut text);
        std::fs::write(&config_path, text)?;
        let tokens = Tokens::load(&dir.path().join("tokens.json"))?;
        Ok(TestNode { dir, config_path, node: None, tokens, federation: None })
    }

    /// Start a node with the default settings.
    pub async fn start(member: &str) -> anyhow::Result<TestNode> {
        TestNode::start_with(member, |_| {}).await
    }

    /// The node's settings.
    pub fn config(&self) -> anyhow::Result<NodeConfig> {
        NodeConfig::load(&self.config_path).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// (Re)start the node from its files.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
        self.node = Some(Node::start(self.config()?).await?);
        Ok(())
    }

    /// Stop the node cleanly.
    pub async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("the node is running")
    }

    /// The API base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.node().api_addr())
    }

    /// An API client with the token of `role`.
    pub fn client(&self, role: Role) -> Client {
        Client::with_token(self.base(), self.tokens.token(role))
    }
}

/// A valid body for `category`, built from the catalog's field types (every field set,
/// text fields carrying `tag` so records differ).
pub fn valid_body(catalog: &tamga_config::Catalog, category: &str, tag: &str) -> serde_json::Value {
    use tamga_config::FieldType;
    let id: tamga_protocol::CategoryId = category.parse().expect("a valid category id");
    let cat = catalog.category(&id).expect("the category is in the catalog");
    let mut body = serde_json::Map::new();
    for (name, f) in &cat.fields {
        let v = match f.ty {
            FieldType::Text => serde_json::json!(format!("{name} {tag}")),
            FieldType::Integer => serde_json::json!(42),
            FieldType::Decimal => serde_json::json!("1250.5"),
            FieldType::Bool => serde_json::json!(true),
            FieldType::Date => serde_json::json!("2026-11-01"),
            FieldType::Timestamp => serde_json::json!("2026-11-01T10:00:00Z"),
            FieldType::Enum => serde_json::json!(f.values.first().cloned().unwrap_or_default()),
            FieldType::TextList => serde_json::json!([format!("{tag}-a"), format!("{tag}-b")]),
        };
        let cut = |s: &str| -> String { f.max_len.map_or(s.to_owned(), |max| s.chars().take(max).collect()) };
        let v = match v {
            serde_json::Value::String(s) => serde_json::json!(cut(&s)),
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items.iter().map(|i| serde_json::json!(cut(i.as_str().unwrap_or_default()))).collect(),
            ),
            v => v,
        };
        body.insert(name.clone(), v);
    }
    serde_json::Value::Object(body)
}

/// The example federation's catalog.
pub fn example_catalog() -> tamga_config::Catalog {
    let fed = tamga_config::Federation::load_files(
        &example_dir().join("roster.toml"),
        &example_dir().join("catalog.toml"),
        &example_dir().join("agreements"),
        &example_dir().join("policies/RU.toml"),
        "RU".parse().expect("valid"),
    )
    .expect("the example federation loads");
    fed.catalog
}

/// An edit for [`TestFederation::start_with`]: KZ accepts projections under `agreement`
/// from CN only, and so declines the other parties' (`from = ["CN"]` in its accept rule).
pub fn kz_accepts_only_from_cn(agreement: &str) -> impl Fn(&str, &Path) {
    let accept = format!("[[accept]]\nagreement = \"{agreement}\"\n");
    move |m: &str, dir: &Path| {
        if m == "KZ" {
            let policy = dir.join("policies/KZ.toml");
            let text = std::fs::read_to_string(&policy).expect("reads");
            assert_eq!(text.matches(&accept).count(), 1);
            std::fs::write(&policy, text.replace(&accept, &format!("{accept}from = [\"CN\"]\n")))
                .expect("writes");
        }
    }
}

/// When the records the tests make were created (ms): the hour before the one this
/// process first asked in, so that every call in one run makes the same record, and none
/// is older than an agreement's retention on whatever day the tests run.
pub fn created_ms() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        now - now % 3_600_000 - 3_600_000
    })
}

/// A record for the API: category, classification, body.
pub fn record_json(
    catalog: &tamga_config::Catalog,
    category: &str,
    classification: &str,
    tag: &str,
) -> serde_json::Value {
    serde_json::json!({
        "category": category,
        "classification": classification,
        "body": valid_body(catalog, category, tag),
        "created": tamga_node::audit::rfc3339(created_ms()),
    })
}

/// Every category of the example catalog (`deploy/example/catalog.toml`), read from it.
pub fn example_categories() -> Vec<String> {
    example_catalog().categories().map(|c| c.id.to_string()).collect()
}

/// One record of each of `categories` in every classification (public, non-confidential,
/// confidential), created a minute apart and unique to `member` and `tag`.
pub fn record_mix<S: AsRef<str>>(member: &str, tag: &str, categories: &[S]) -> Vec<serde_json::Value> {
    let cat = example_catalog();
    let mut recs = Vec::new();
    for c in categories {
        for class in ["public", "non_confidential", "confidential"] {
            let mut r = record_json(&cat, c.as_ref(), class, &format!("{member}-{tag}"));
            let minutes = i64::try_from(recs.len()).unwrap_or(0);
            r["created"] =
                serde_json::json!(tamga_node::audit::rfc3339(created_ms() - 3_600_000 + minutes * 60_000));
            recs.push(r);
        }
    }
    recs
}

/// The peer-to-peer transports a test node listens on, and the one the roster gives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/ip4/127.0.0.1/tcp/PORT` only; the roster lists that address.
    Tcp,
    /// `/ip4/127.0.0.1/udp/PORT/quic-v1` only; the roster lists that address.
    Quic,
    /// Both; the roster lists the QUIC address only, so peers dial it over QUIC while the
    /// node itself still accepts TCP (and dials TCP peers over TCP).
    Both,
}

/// A federation of in-process nodes on loopback, each with its own copy of the example
/// federation's files (so a test can change one side's files).
#[derive(Debug)]
pub struct TestFederation {
    /// Nodes by member code.
    pub nodes: std::collections::BTreeMap<String, TestNode>,
    /// Each member's peer-to-peer TCP port (listened on unless the member is QUIC-only).
    pub ports: std::collections::BTreeMap<String, u16>,
    /// Each member's QUIC (UDP) port (listened on if the member's transport has QUIC).
    pub quic_ports: std::collections::BTreeMap<String, u16>,
}

/// Free loopback UDP ports, one per example member (held only while choosing), for QUIC.
pub fn free_udp_ports() -> anyhow::Result<std::collections::BTreeMap<String, u16>> {
    let sockets = tamga_node::localfed::EXAMPLE_MEMBERS
        .iter()
        .map(|m| std::net::UdpSocket::bind("127.0.0.1:0").map(|s| ((*m).to_owned(), s)))
        .collect::<std::io::Result<Vec<_>>>()?;
    sockets.iter().map(|(m, s)| Ok((m.clone(), s.local_addr()?.port()))).collect()
}

impl TestFederation {
    /// Start `members`; `edit` may change a member's federation directory before it starts.
    pub async fn start_with(members: &[&str], edit: impl Fn(&str, &Path)) -> anyhow::Result<TestFederation> {
        TestFederation::start_on(members, |_| Transport::Tcp, edit).await
    }

    /// Start `members`, each listening on the transports `transport` gives it, every
    /// roster pointing at each member's address of that transport (see [`Transport`]);
    /// `edit` may change a member's federation directory before it starts. Made again on
    /// other ports when a chosen one was taken meanwhile
    /// ([`tamga_node::localfed::on_free_ports`]).
    pub async fn start_on(
        members: &[&str],
        transport: impl Fn(&str) -> Transport,
        edit: impl Fn(&str, &Path),
    ) -> anyhow::Result<TestFederation> {
        let (transport, edit) = (&transport, &edit);
        tamga_node::localfed::on_free_ports(|| TestFederation::try_start_on(members, transport, edit)).await
    }

    async fn try_start_on(
        members: &[&str],
        transport: &impl Fn(&str) -> Transport,
        edit: &impl Fn(&str, &Path),
    ) -> anyhow::Result<TestFederation> {
        let ports = tamga_node::localfed::free_ports()?;
        let quic_ports = free_udp_ports()?;
        let tcp_addr = |m: &str| format!("/ip4/127.0.0.1/tcp/{}", ports[m]);
        let quic_addr = |m: &str| format!("/ip4/127.0.0.1/udp/{}/quic-v1", quic_ports[m]);
        let mut nodes = std::collections::BTreeMap::new();
        for m in members {
            let fed_dir = tempfile::tempdir()?;
            tamga_node::localfed::write_federation(fed_dir.path(), &ports)?;
            // Members with QUIC are listed in the roster at their QUIC address.
            let roster = fed_dir.path().join("roster.toml");
            let mut text = std::fs::read_to_string(&roster)?;
            for other in members.iter().filter(|o| transport(o) != Transport::Tcp) {
                anyhow::ensure!(
                    text.contains(&tcp_addr(other)),
                    "the roster lists {other} at {}",
                    tcp_addr(other)
                );
                text =
                    text.replace(&format!("\"{}\"", tcp_addr(other)), &format!("\"{}\"", quic_addr(other)));
            }
            std::fs::write(&roster, text)?;
            edit(m, fed_dir.path());
            let (listen, also) = match transport(m) {
                Transport::Tcp => (tcp_addr(m), None),
                Transport::Quic => (quic_addr(m), None),
                Transport::Both => (tcp_addr(m), Some(quic_addr(m))),
            };
            // Anti-entropy every second, so that relays and gaps heal within a test's wait.
            let mut n = TestNode::init_in(m, fed_dir.path(), &listen, |t| {
                *t = t.replace("[network]\n", "[network]\nanti_entropy_secs = 1\n");
                if let Some(also) = &also {
                    *t = t.replace(
                        &format!("listen = [\"{listen}\"]"),
                        &format!("listen = [\"{listen}\", \"{also}\"]"),
                    );
                }
            })?;
            let listening = n.config()?.network.listen.len();
            anyhow::ensure!(
                listening == 1 + usize::from(also.is_some()),
                "{m} listens on {listening} addresses"
            );
            n.federation = Some(fed_dir);
            nodes.insert((*m).to_owned(), n);
        }
        let mut fed = TestFederation { nodes, ports, quic_ports };
        for n in fed.nodes.values_mut() {
            if let Err(e) = n.restart().await {
                fed.stop().await;
                return Err(e);
            }
        }
        Ok(fed)
    }

    /// Start `members` with the example files as they are.
    pub async fn start(members: &[&str]) -> anyhow::Result<TestFederation> {
        TestFederation::start_with(members, |_, _| {}).await
    }

    /// One node.
    pub fn node(&self, member: &str) -> &TestNode {
        &self.nodes[member]
    }

    /// Stop every node.
    pub async fn stop(&mut self) {
        for n in self.nodes.values_mut() {
            n.stop().await;
        }
    }
}

/// Poll `check` every 100 ms until it returns true, or fail after [`WAIT`] with `what`.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

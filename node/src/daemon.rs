//! The daemon: loads and checks every file, opens the store, starts every task under one
//! [`CancellationToken`], and on shutdown awaits them all with a deadline.
//!
//! Tasks: `writer` (the write path), `api` (the local HTTP server), `reload` (replaces the
//! policy in force: [`crate::reload`]). Each is named, its
//! handle kept, its end logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tamga_config::{ConfigErrors, Federation, NodeConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::identity::{Identity, IdentityError, Tokens};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::writer::{now_ms, Writer, WriterTask};

/// How long shutdown waits for the tasks to finish before giving up on them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The name of the store directory inside the data directory.
pub const STORE_DIR: &str = "store";

/// Why the node did not start. Each variant is one thing for the operator to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file is invalid (every error, with path, line and column).
    #[error("{0}")]
    Config(ConfigErrors),
    /// The identity or tokens file is missing, unreadable or too open.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The node's PeerId is not the roster's for its member.
    #[error("this node's PeerId {peer_id} is not listed for {member} in the roster {roster}; add it to the roster and share the roster with the federation")]
    NotInRoster {
        /// The node's PeerId.
        peer_id: String,
        /// Its member code.
        member: String,
        /// The roster file.
        roster: PathBuf,
    },
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The store's audit log is another member's: its latest checkpoint names it.
    #[error("the store in {dir} holds {theirs}'s audit log (its latest checkpoint is signed as {theirs}), but this node is {member}; restore this node's own backup, or give it an empty data directory")]
    ForeignLog {
        /// The store directory.
        dir: PathBuf,
        /// The member the log's checkpoint names.
        theirs: String,
        /// This node's member.
        member: String,
    },
    /// The API address could not be bound.
    #[error("cannot listen on {addr} for the API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The peer-to-peer side could not start (a listen address taken or invalid).
    #[error("cannot start the peer-to-peer side: {0}")]
    Net(crate::net::NetError),
    /// The API's TLS certificate or key could not be loaded.
    #[error("cannot load the API's TLS certificate or key: {0}")]
    Tls(String),
}

/// The policy set in force, swapped whole on reload.
#[derive(Debug)]
pub struct PolicyCell(RwLock<Arc<Federation>>);

impl PolicyCell {
    /// A cell holding `fed` in force.
    pub fn new(fed: Federation) -> PolicyCell {
        PolicyCell(RwLock::new(Arc::new(fed)))
    }

    /// The federation in force now.
    pub fn get(&self) -> Arc<Federation> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put a new federation in force.
    pub fn set(&self, fed: Arc<Federation>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fed;
    }
}

/// What every part of a running node shares.
#[derive(Debug)]
pub struct Shared {
    /// The node's settings.
    pub config: NodeConfig,
    /// Its identity.
    pub identity: Identity,
    /// Its API tokens.
    pub tokens: Tokens,
    /// Its store (reads; writes go through the writer).
    pub store: Store,
    /// The write path.
    pub writer: Writer,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The policy set in force.
    pub policy: Arc<PolicyCell>,
    /// When it started (ms).
    pub started_ms: i64,
    /// Replaces the policy set in force (`tamga policy reload`, SIGHUP, file changes).
    pub reloader: crate::reload::Reloader,
    /// The handle to the network task.
    pub net: crate::net::NetHandle,
    /// What sync knows of each peer.
    pub sync: Arc<crate::sync::SyncState>,
    /// The API's refused calls per client address, this minute.
    pub api_refusals: crate::api::ApiRefusals,
}

/// Say so when the data directory, which holds every record (confidential ones too) and
/// the audit log, is open to the machine's other users: `tamga init` makes it 0700, and
/// one made otherwise is left as it is.
fn warn_if_open_to_others(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the data directory is open to other users of this machine, who can read its records and audit log; chmod 700 it"
            );
        }
    }
}

/// Audit, every few seconds, the API's refused calls counted past `[api]
/// refusals_per_min` in minutes that have ended ([`Node::shutdown`] audits those of the
/// minute under way).
fn spawn_refusal_summaries(shared: Arc<Shared>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            for ev in shared.api_refusals.due(now_ms(), false) {
                shared.writer.audit(ev).await;
            }
        }
    })
}

/// The roster as the network task takes it.
pub fn peer_entries(fed: &Federation) -> Vec<crate::net::PeerEntry> {
    fed.roster
        .members()
        .map(|m| crate::net::PeerEntry {
            member: m.code,
            peer_ids: m.peer_ids.clone(),
            addrs: m.addrs.clone(),
        })
        .collect()
}

impl Shared {
    /// The federation (roster, catalog, agreements, policy) in force now.
    pub fn fed(&self) -> Arc<Federation> {
        self.policy.get()
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// Stops the API alone, first ([`Node::shutdown`]); the node's `cancel` stops it too.
    api_stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    api_addr: SocketAddr,
}

/// Load and check every file a node needs, without starting anything.
pub fn load(config: &NodeConfig) -> Result<(Identity, Tokens, Federation), StartError> {
    let fed = Federation::load(config).map_err(StartError::Config)?;
    let identity = Identity::load(&config.identity)?;
    let tokens = Tokens::load(&config.tokens)?;
    let peer_id = identity.peer_id();
    if !fed.roster.lists(config.member, &peer_id) {
        return Err(StartError::NotInRoster {
            peer_id: peer_id.to_string(),
            member: config.member.to_string(),
            roster: config.roster.clone(),
        });
    }
    Ok((identity, tokens, fed))
}

impl Node {
    /// Start a node from its checked settings.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        let (identity, tokens, fed) = load(&config)?;
        warn_if_open_to_others(&config.data_dir);
        let dir = config.data_dir.join(STORE_DIR);
        let store = Store::open_with_cache(&dir, config.store.cache_mb)
            .map_err(|source| StartError::Store { dir: dir.clone(), source })?;
        // Its entries would go on another member's chain, signed as this one.
        let latest =
            store.latest_checkpoint().map_err(|source| StartError::Store { dir: dir.clone(), source })?;
        if let Some(cp) = latest.filter(|cp| cp.member != config.member) {
            return Err(StartError::ForeignLog {
                dir,
                theirs: cp.member.to_string(),
                member: config.member.to_string(),
            });
        }
        let cancel = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let policy = Arc::new(PolicyCell::new(fed));
        let (push_tx, push_rx) = tokio::sync::mpsc::channel(crate::sync::PUSH_QUEUE);
        let writer_task = WriterTask::new(
            store.clone(),
            config.member,
            policy.clone(),
            metrics.clone(),
            identity.signing.clone(),
            Some(push_tx),
        )
        .map_err(|source| StartError::Store { dir: dir.clone(), source })?
        .with_audit_config(&config.audit);
        let (writer, writer_handle) = writer_task.spawn(cancel.child_token());
        let mut tasks = vec![("writer", writer_handle)];

        let fed_now = policy.get();
        let net_config = crate::net::NetConfig {
            keypair: identity.keypair(),
            listen: config.network.listen.clone(),
            peers: peer_entries(&fed_now),
            max_connections: config.network.max_connections,
            dial_backoff_max: Duration::from_secs(config.network.dial_backoff_max_secs),
            limits: (&config.limits).into(),
            liveness: (&config.network).into(),
        };
        let (net, net_events, net_task) =
            crate::net::spawn(net_config, cancel.child_token()).map_err(StartError::Net)?;
        tasks.push(("net", net_task));

        let api_listener = std::net::TcpListener::bind(config.api.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| StartError::Bind { addr: config.api.listen, source })?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: config.api.listen, source })?;
        let tls = match config.api.tls_cert.as_ref().zip(config.api.tls_key.as_ref()) {
            Some((cert, key)) => Some({
                // The key is a secret as the identity is: its owner's alone.
                crate::identity::read_secret_file(key).map_err(|e| StartError::Tls(e.to_string()))?;
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| StartError::Tls(format!("{} / {}: {e}", cert.display(), key.display())))?
            }),
            None => None,
        };
        let reloader =
            crate::reload::Reloader::new(&config, identity.peer_id(), policy.clone(), writer.clone());
        let watch = crate::reload::WatchOptions { files: config.reload.watch_files, sighup: true };
        tasks.push(("reload", reloader.spawn(watch, cancel.child_token())));
        let shared = Arc::new(Shared {
            config,
            identity,
            tokens,
            store,
            writer: writer.clone(),
            metrics,
            policy,
            started_ms: now_ms(),
            reloader,
            net: net.clone(),
            sync: Arc::new(crate::sync::SyncState::default()),
            api_refusals: crate::api::ApiRefusals::default(),
        });
        let sync_task = crate::sync::spawn(
            shared.clone(),
            net,
            net_events,
            shared.reloader.subscribe(),
            push_rx,
            shared.sync.clone(),
            cancel.child_token(),
        );
        tasks.push(("sync", sync_task));
        let app = crate::api::router(shared.clone());
        let handle = axum_server::Handle::new();
        let api_stop = cancel.child_token();
        let api_cancel = api_stop.clone();
        let h2 = handle.clone();
        tokio::spawn(async move {
            api_cancel.cancelled().await;
            h2.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        tasks.push(("api refusals", spawn_refusal_summaries(shared.clone(), cancel.child_token())));
        let api_task = tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            let result = match tls {
                Some(tls) => axum_server::from_tcp_rustls(api_listener, tls).handle(handle).serve(svc).await,
                None => axum_server::from_tcp(api_listener).handle(handle).serve(svc).await,
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "API server failed");
            }
        });
        tasks.push(("api", api_task));

        writer
            .audit(
                AuditEvent::new(Action::NodeStarted, Outcome::Ok)
                    .reason(format!("tamga {} started", env!("CARGO_PKG_VERSION"))),
            )
            .await;
        tracing::info!(member = %shared.config.member, peer_id = %shared.identity.peer_id(), api = %api_addr, "node started");
        if shared.config.api.tls().is_none() && !api_addr.ip().is_loopback() {
            tracing::warn!(
                api = %api_addr,
                "the API listens beyond loopback without HTTPS: its tokens and records cross the network in the clear; set [api] tls_cert and tls_key"
            );
        }
        Ok(Node { shared, cancel, api_stop, tasks, api_addr })
    }

    /// The address the API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The node's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop every task, flush the store, and wait (up to [`SHUTDOWN_DEADLINE`]). The API
    /// stops first, its calls in flight answered while the writer still runs; then the
    /// refused calls it counted are audited, and the node's stop; then the rest.
    pub async fn shutdown(self) {
        let Node { shared, cancel, api_stop, tasks, .. } = self;
        api_stop.cancel();
        let (api, rest): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|(name, _)| *name == "api");
        join_tasks(api).await;
        for ev in shared.api_refusals.due(now_ms(), true) {
            shared.writer.audit(ev).await;
        }
        shared.writer.audit(AuditEvent::new(Action::NodeStopped, Outcome::Ok)).await;
        cancel.cancel();
        join_tasks(rest).await;
        if let Err(e) = shared.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!("node stopped");
    }

    /// Run until SIGINT, SIGTERM or the token is cancelled, then shut down.
    pub async fn run_until_signal(self) {
        let cancel = self.cancel.clone();
        tokio::select! {
            () = shutdown_signal() => tracing::info!("signal received; stopping"),
            () = cancel.cancelled() => {}
        }
        self.shutdown().await;
    }
}

/// Wait for each task to end, up to [`SHUTDOWN_DEADLINE`] each.
async fn join_tasks(tasks: Vec<(&'static str, JoinHandle<()>)>) {
    for (name, handle) in tasks {
        match tokio::time::timeout(SHUTDOWN_DEADLINE, handle).await {
            Ok(Ok(())) => tracing::debug!(task = name, "task stopped"),
            Ok(Err(e)) => tracing::error!(task = name, error = %e, "task failed"),
            Err(_) => tracing::error!(task = name, "task did not stop in time"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the node can still be stopped by its token.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

//! `node.toml`: one node's settings — which member it is, where its files and data are,
//! and the network, per-peer limits, API, store, audit and reload settings.
//!
//! This module owns the file format (every key with a doc comment and a named default,
//! in the manner of Garage's `util/config.rs`) and [`NodeConfig::load`]. Paths in the
//! file are relative to the directory of `node.toml` and come out resolved. It never
//! opens the files it names (the identity key, the token file, the data directory):
//! the node does, and [`crate::Federation::load`] reads the sharing files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use multiaddr::Multiaddr;
use serde::Deserialize;
use tamga_protocol::MemberCode;
use toml::Spanned;

use crate::error::{ConfigErrors, ErrorKind, SourceFile};
use crate::limits::{
    MAX_BODY_BYTES_LIMIT, MAX_BYTES_PER_SEC_LIMIT, MAX_CACHE_MB, MAX_CONNECTIONS_LIMIT, MAX_INTERVAL_SECS,
    MAX_LISTEN_ADDRS, MAX_MESSAGES_PER_SEC_LIMIT, MAX_OPEN_STREAMS_LIMIT, MAX_PING_FAILURES,
    MAX_STREAM_READ_SECS, MIN_BODY_BYTES, MIN_BYTES_PER_SEC, MIN_CACHE_MB, MIN_PENDING_PULLS,
};
use crate::parse::{self, AddrUse};

/// A node's settings, checked, with every path resolved against the directory of
/// `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The `node.toml` this was read from.
    pub path: PathBuf,
    /// The member this node speaks for (must match the policy's `member`).
    pub member: MemberCode,
    /// Directory of the node's store and audit log (created by the node).
    pub data_dir: PathBuf,
    /// The node's ed25519 identity key file (its PeerId must be in the roster).
    pub identity: PathBuf,
    /// The local API's bearer token file.
    pub tokens: PathBuf,
    /// The federation's `roster.toml`.
    pub roster: PathBuf,
    /// The federation's `catalog.toml`.
    pub catalog: PathBuf,
    /// Directory of agreement files, one `*.toml` per agreement.
    pub agreements: PathBuf,
    /// This node's `policy.toml`.
    pub policy: PathBuf,
    /// Peer-to-peer settings.
    pub network: NetworkConfig,
    /// What one roster peer may ask of this node.
    pub limits: LimitsConfig,
    /// Local HTTP API settings.
    pub api: ApiConfig,
    /// Local store settings.
    pub store: StoreConfig,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// `[reload]`.
    pub reload: ReloadConfig,
}

/// `[network]`: the peer-to-peer side, and the sync settings that ride on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on: `/ip4|ip6/ADDR/tcp/PORT` (TCP + TLS + yamux) or
    /// `/ip4|ip6/ADDR/udp/PORT/quic-v1` (QUIC v1); a node may list both and dials either
    /// kind of roster address whatever it listens on. Default: [`default_listen`].
    pub listen: Vec<Multiaddr>,
    /// Most simultaneous peer connections. Default: [`default_max_connections`].
    pub max_connections: u32,
    /// Longest wait between two dials of an unreachable peer, in seconds (the backoff
    /// doubles up to this). Default: [`default_dial_backoff_max_secs`].
    pub dial_backoff_max_secs: u64,
    /// Most projections in one push (at most the protocol's batch limit).
    /// Default: [`default_push_batch`].
    pub push_batch: usize,
    /// Seconds between two anti-entropy rounds with each connected peer.
    /// Default: [`default_anti_entropy_secs`].
    pub anti_entropy_secs: u64,
    /// Seconds between two pings on each peer connection (its liveness check).
    /// Default: [`default_ping_interval_secs`].
    pub ping_interval_secs: u64,
    /// Seconds after which an unanswered ping counts as failed.
    /// Default: [`default_ping_timeout_secs`].
    pub ping_timeout_secs: u64,
    /// Failed pings in a row that close a connection (the node then redials). libp2p's
    /// ping does not count the first failure, and on a dead link each later ping fails
    /// only once its new stream's 10 s opening timeout ends, so a link that stops
    /// carrying packets without closing is closed at most `interval + timeout +
    /// max_failures × (interval + 10 s)` after it stopped (110 s with the defaults).
    /// Default: [`default_ping_max_failures`].
    pub ping_max_failures: u32,
}

/// `[limits]`: what one roster peer may ask of this node. Every limit is per peer, on what
/// it sends this node; a request over one is refused with an error response and the abuse
/// is audited once per peer and limit per `report_secs`, not once per request. The defaults
/// are far above what an honest node sends (a push per commit, a summary and a few pulls
/// per anti-entropy round), so only a peer that misbehaves ever meets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Requests per second (a burst of one second's worth is allowed).
    /// Default: [`default_messages_per_sec`].
    pub messages_per_sec: u64,
    /// Request bytes per second. A request is refused while the peer is over its budget;
    /// one large request may overdraw it (it then waits for the budget to refill).
    /// Default: [`default_bytes_per_sec`].
    pub bytes_per_sec: u64,
    /// Requests of one peer awaiting this node's answer at once (the streams still being
    /// read are bounded per connection by the network layer and by `stream_read_secs`).
    /// Default: [`default_open_streams`].
    pub open_streams: u64,
    /// Pulls of one peer awaiting this node's answer at once (at most `open_streams`, at
    /// least [`MIN_PENDING_PULLS`]).
    /// Default: [`default_pending_pulls`].
    pub pending_pulls: u64,
    /// Seconds within which a request's bytes must all arrive once its stream is open; a
    /// stream left half-open longer is closed and counted as abuse.
    /// Default: [`default_stream_read_secs`].
    pub stream_read_secs: u64,
    /// At most one audit entry per peer and limit per this many seconds; it counts the
    /// refusals since the previous one. Default: [`default_report_secs`].
    pub report_secs: u64,
}

/// `[api]`: the local HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Socket address to listen on. Default: [`default_api_listen`] (loopback only).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes. Default: [`default_max_body_bytes`].
    pub max_body_bytes: usize,
    /// PEM certificate chain for HTTPS; HTTPS is on when this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Refused calls (a wrong or missing token, or a role that may not) audited one by
    /// one per client address and minute; past them the client is answered 429 and the
    /// rest of the minute is counted in one entry. Default: [`default_refusals_per_min`].
    pub refusals_per_min: u64,
}

/// `[store]`: the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store's page cache, in MiB: the most of the store it keeps decoded in memory,
    /// and so most of the node's resident memory once it holds more than this. A cache
    /// smaller than what writes touch makes them re-read pages from disk.
    /// Default: [`default_cache_mb`].
    pub cache_mb: u64,
}

/// `[audit]`: the local audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Sign a checkpoint of the log head after this many entries.
    /// Default: [`default_checkpoint_every`].
    pub checkpoint_every: u64,
    /// …or after this many seconds, whichever comes first.
    /// Default: [`default_checkpoint_secs`].
    pub checkpoint_secs: u64,
}

/// `[reload]`: how edited policy files come into force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Put the files in force when they change (polled). `false`: only `tamga policy
    /// reload` and SIGHUP do, so that an edit waits for someone to put it in force.
    /// Default: `true`.
    pub watch_files: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { watch_files: true }
    }
}

/// One `network.listen` address checked as `node.toml`'s are (`tamga init --listen` uses
/// it, so that init never writes a file that will not load): the address, or a message
/// naming what is wrong and the accepted forms.
pub fn parse_listen(s: &str) -> Result<Multiaddr, String> {
    parse::multiaddr(s, AddrUse::Listen)
}

/// Default `network.listen`: every IPv4 interface, TCP port 7100.
pub fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/7100".to_owned()]
}
/// Default `network.max_connections`: ample for a federation of ten.
pub fn default_max_connections() -> u32 {
    64
}
/// Default `network.dial_backoff_max_secs`: five minutes.
pub fn default_dial_backoff_max_secs() -> u64 {
    300
}
/// Default `network.push_batch`.
pub fn default_push_batch() -> usize {
    256
}
/// Default `network.ping_interval_secs`.
pub fn default_ping_interval_secs() -> u64 {
    15
}
/// Default `network.ping_timeout_secs`.
pub fn default_ping_timeout_secs() -> u64 {
    20
}
/// Default `network.ping_max_failures`.
pub fn default_ping_max_failures() -> u32 {
    3
}
/// Default `network.anti_entropy_secs`: one minute.
pub fn default_anti_entropy_secs() -> u64 {
    60
}
/// Default `limits.messages_per_sec`: ten times what a node pushing at full speed sends.
pub fn default_messages_per_sec() -> u64 {
    1000
}
/// Default `limits.bytes_per_sec`: 64 MiB.
pub fn default_bytes_per_sec() -> u64 {
    64 * 1024 * 1024
}
/// Default `limits.open_streams`: twice the requests an honest node keeps in flight to
/// one peer (16).
pub fn default_open_streams() -> u64 {
    32
}
/// Default `limits.pending_pulls`.
pub fn default_pending_pulls() -> u64 {
    8
}
/// Default `limits.stream_read_secs`.
pub fn default_stream_read_secs() -> u64 {
    20
}
/// Default `limits.report_secs`: one minute.
pub fn default_report_secs() -> u64 {
    60
}
/// Default `api.listen`: loopback, port 7180.
pub fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7180))
}
/// Default `api.max_body_bytes`: 1 MiB.
pub fn default_max_body_bytes() -> usize {
    1024 * 1024
}
/// Default `api.refusals_per_min`: one a second.
pub fn default_refusals_per_min() -> u64 {
    60
}
/// Default `store.cache_mb`.
pub fn default_cache_mb() -> u64 {
    64
}
/// Default `audit.checkpoint_every`.
pub fn default_checkpoint_every() -> u64 {
    1000
}
/// Default `audit.checkpoint_secs`: five minutes.
pub fn default_checkpoint_secs() -> u64 {
    300
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: default_listen()
                .iter()
                .filter_map(|s| parse::multiaddr(s, AddrUse::Listen).ok())
                .collect(),
            max_connections: default_max_connections(),
            dial_backoff_max_secs: default_dial_backoff_max_secs(),
            push_batch: default_push_batch(),
            anti_entropy_secs: default_anti_entropy_secs(),
            ping_interval_secs: default_ping_interval_secs(),
            ping_timeout_secs: default_ping_timeout_secs(),
            ping_max_failures: default_ping_max_failures(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            messages_per_sec: default_messages_per_sec(),
            bytes_per_sec: default_bytes_per_sec(),
            open_streams: default_open_streams(),
            pending_pulls: default_pending_pulls(),
            stream_read_secs: default_stream_read_secs(),
            report_secs: default_report_secs(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            max_body_bytes: default_max_body_bytes(),
            tls_cert: None,
            tls_key: None,
            refusals_per_min: default_refusals_per_min(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { cache_mb: default_cache_mb() }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: default_checkpoint_every(),
            checkpoint_secs: default_checkpoint_secs(),
        }
    }
}

impl ApiConfig {
    /// The certificate and key files when HTTPS is on.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }
}

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    member: Spanned<String>,
    data_dir: Spanned<String>,
    identity: Spanned<String>,
    tokens: Spanned<String>,
    roster: Spanned<String>,
    catalog: Spanned<String>,
    agreements: Spanned<String>,
    policy: Spanned<String>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    reload: RawReload,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    max_connections: Option<Spanned<i64>>,
    dial_backoff_max_secs: Option<Spanned<i64>>,
    push_batch: Option<Spanned<i64>>,
    anti_entropy_secs: Option<Spanned<i64>>,
    ping_interval_secs: Option<Spanned<i64>>,
    ping_timeout_secs: Option<Spanned<i64>>,
    ping_max_failures: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    messages_per_sec: Option<Spanned<i64>>,
    bytes_per_sec: Option<Spanned<i64>>,
    open_streams: Option<Spanned<i64>>,
    pending_pulls: Option<Spanned<i64>>,
    stream_read_secs: Option<Spanned<i64>>,
    report_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
    refusals_per_min: Option<Spanned<i64>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_mb: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_every: Option<Spanned<i64>>,
    checkpoint_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    watch_files: Option<bool>,
}

impl NodeConfig {
    /// Read and check `node.toml`. Every problem found is returned, with its position.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigErrors> {
        let src = SourceFile::read(path)?;
        NodeConfig::from_source(&src)
    }

    /// Check a `node.toml` already in memory; paths resolve against the directory of
    /// `src.path()`.
    pub fn from_source(src: &SourceFile) -> Result<NodeConfig, ConfigErrors> {
        let raw: RawNode = src.parse()?;
        let mut errs = Vec::new();
        let base = src.path().parent().map(Path::to_path_buf).unwrap_or_default();
        let mut path_of = |key: &str, raw: &Spanned<String>| -> PathBuf {
            if raw.get_ref().trim().is_empty() {
                errs.push(src.error(ErrorKind::Invalid, &raw.span(), format!("`{key}` is an empty path")));
            }
            base.join(raw.get_ref())
        };
        let data_dir = path_of("data_dir", &raw.data_dir);
        let identity = path_of("identity", &raw.identity);
        let tokens = path_of("tokens", &raw.tokens);
        let roster = path_of("roster", &raw.roster);
        let catalog = path_of("catalog", &raw.catalog);
        let agreements = path_of("agreements", &raw.agreements);
        let policy = path_of("policy", &raw.policy);
        let tls_cert = raw.api.tls_cert.as_ref().map(|p| path_of("api.tls_cert", p));
        let tls_key = raw.api.tls_key.as_ref().map(|p| path_of("api.tls_key", p));

        let member = parse::member_code(src, &raw.member).map(|m| m.value).map_err(|e| errs.push(e)).ok();

        let mut network = NetworkConfig::default();
        if let Some(listen) = &raw.network.listen {
            if listen.get_ref().is_empty() {
                errs.push(src.error(ErrorKind::Invalid, &listen.span(), "`network.listen` is empty"));
            }
            if listen.get_ref().len() > MAX_LISTEN_ADDRS {
                errs.push(src.error(
                    ErrorKind::TooMany,
                    &listen.span(),
                    format!("more than {MAX_LISTEN_ADDRS} listen addresses"),
                ));
            }
            network.listen = listen
                .get_ref()
                .iter()
                .filter_map(|a| match parse::multiaddr(a.get_ref(), AddrUse::Listen) {
                    Ok(m) => Some(m),
                    Err(msg) => {
                        errs.push(src.error(ErrorKind::Invalid, &a.span(), msg));
                        None
                    }
                })
                .collect();
        }
        let mut int = |key: &str, raw: &Option<Spanned<i64>>, min: u64, max: u64, default: u64| -> u64 {
            let Some(v) = raw else { return default };
            match u64::try_from(*v.get_ref()) {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    errs.push(src.error(
                        ErrorKind::Invalid,
                        &v.span(),
                        format!("`{key}` is {}, outside {min}..={max}", v.get_ref()),
                    ));
                    default
                }
            }
        };
        network.max_connections = u32::try_from(int(
            "network.max_connections",
            &raw.network.max_connections,
            1,
            u64::from(MAX_CONNECTIONS_LIMIT),
            u64::from(default_max_connections()),
        ))
        .unwrap_or(default_max_connections());
        network.dial_backoff_max_secs = int(
            "network.dial_backoff_max_secs",
            &raw.network.dial_backoff_max_secs,
            1,
            MAX_INTERVAL_SECS,
            default_dial_backoff_max_secs(),
        );
        network.push_batch = usize::try_from(int(
            "network.push_batch",
            &raw.network.push_batch,
            1,
            tamga_protocol::limits::MAX_BATCH as u64,
            default_push_batch() as u64,
        ))
        .unwrap_or(default_push_batch());
        network.anti_entropy_secs = int(
            "network.anti_entropy_secs",
            &raw.network.anti_entropy_secs,
            1,
            MAX_INTERVAL_SECS,
            default_anti_entropy_secs(),
        );
        network.ping_interval_secs = int(
            "network.ping_interval_secs",
            &raw.network.ping_interval_secs,
            1,
            MAX_INTERVAL_SECS,
            default_ping_interval_secs(),
        );
        network.ping_timeout_secs = int(
            "network.ping_timeout_secs",
            &raw.network.ping_timeout_secs,
            1,
            MAX_INTERVAL_SECS,
            default_ping_timeout_secs(),
        );
        network.ping_max_failures = u32::try_from(int(
            "network.ping_max_failures",
            &raw.network.ping_max_failures,
            1,
            u64::from(MAX_PING_FAILURES),
            u64::from(default_ping_max_failures()),
        ))
        .unwrap_or(default_ping_max_failures());
        let max_body_bytes = usize::try_from(int(
            "api.max_body_bytes",
            &raw.api.max_body_bytes,
            MIN_BODY_BYTES as u64,
            MAX_BODY_BYTES_LIMIT as u64,
            default_max_body_bytes() as u64,
        ))
        .unwrap_or(default_max_body_bytes());
        let refusals_per_min =
            int("api.refusals_per_min", &raw.api.refusals_per_min, 1, 1_000_000, default_refusals_per_min());
        let l = &raw.limits;
        let limits = LimitsConfig {
            messages_per_sec: int(
                "limits.messages_per_sec",
                &l.messages_per_sec,
                1,
                MAX_MESSAGES_PER_SEC_LIMIT,
                default_messages_per_sec(),
            ),
            bytes_per_sec: int(
                "limits.bytes_per_sec",
                &l.bytes_per_sec,
                MIN_BYTES_PER_SEC,
                MAX_BYTES_PER_SEC_LIMIT,
                default_bytes_per_sec(),
            ),
            open_streams: int(
                "limits.open_streams",
                &l.open_streams,
                1,
                MAX_OPEN_STREAMS_LIMIT,
                default_open_streams(),
            ),
            pending_pulls: int(
                "limits.pending_pulls",
                &l.pending_pulls,
                MIN_PENDING_PULLS,
                MAX_OPEN_STREAMS_LIMIT,
                default_pending_pulls(),
            ),
            stream_read_secs: int(
                "limits.stream_read_secs",
                &l.stream_read_secs,
                1,
                MAX_STREAM_READ_SECS,
                default_stream_read_secs(),
            ),
            report_secs: int(
                "limits.report_secs",
                &l.report_secs,
                1,
                MAX_INTERVAL_SECS,
                default_report_secs(),
            ),
        };
        let store = StoreConfig {
            cache_mb: int(
                "store.cache_mb",
                &raw.store.cache_mb,
                MIN_CACHE_MB,
                MAX_CACHE_MB,
                default_cache_mb(),
            ),
        };
        let audit = AuditConfig {
            checkpoint_every: int(
                "audit.checkpoint_every",
                &raw.audit.checkpoint_every,
                1,
                u64::from(u32::MAX),
                default_checkpoint_every(),
            ),
            checkpoint_secs: int(
                "audit.checkpoint_secs",
                &raw.audit.checkpoint_secs,
                1,
                MAX_INTERVAL_SECS,
                default_checkpoint_secs(),
            ),
        };

        if limits.pending_pulls > limits.open_streams {
            // Point at what the file says: pending_pulls, or open_streams when
            // pending_pulls is its default (both defaults keep the rule).
            let (span, message) = match (&l.pending_pulls, &l.open_streams) {
                (Some(p), _) => (
                    Some(p.span()),
                    format!(
                        "`limits.pending_pulls` is {}, more than `limits.open_streams` ({})",
                        limits.pending_pulls, limits.open_streams
                    ),
                ),
                (None, o) => (
                    o.as_ref().map(|o| o.span()),
                    format!(
                        "`limits.open_streams` is {}, less than `limits.pending_pulls` ({}, its default)",
                        limits.open_streams, limits.pending_pulls
                    ),
                ),
            };
            if let Some(span) = span {
                errs.push(src.error(ErrorKind::Invalid, &span, message).with_hint(
                    "a pull is one of the peer's open requests: raise open_streams or lower pending_pulls",
                ));
            }
        }
        let listen = match &raw.api.listen {
            None => default_api_listen(),
            Some(s) => s.get_ref().parse::<SocketAddr>().unwrap_or_else(|_| {
                errs.push(
                    src.error(
                        ErrorKind::Invalid,
                        &s.span(),
                        format!("`api.listen` {:?} is not a socket address", s.get_ref()),
                    )
                    .with_hint("write IP:PORT, e.g. 127.0.0.1:7180"),
                );
                default_api_listen()
            }),
        };
        match (&raw.api.tls_cert, &raw.api.tls_key) {
            (Some(s), None) | (None, Some(s)) => errs.push(
                src.error(ErrorKind::Invalid, &s.span(), "HTTPS needs both `tls_cert` and `tls_key`")
                    .with_hint("set both to serve HTTPS, or neither to serve plain HTTP on loopback"),
            ),
            _ => {}
        }

        match member {
            Some(member) if errs.is_empty() => Ok(NodeConfig {
                path: src.path().to_path_buf(),
                member,
                data_dir,
                identity,
                tokens,
                roster,
                catalog,
                agreements,
                policy,
                network,
                limits,
                api: ApiConfig { listen, max_body_bytes, tls_cert, tls_key, refusals_per_min },
                store,
                audit,
                reload: ReloadConfig { watch_files: raw.reload.watch_files.unwrap_or(true) },
            }),
            _ => Err(ConfigErrors::sorted(errs)),
        }
    }
}

//! The `tamga` command. Arguments are parsed into plain data first (clap), then checked
//! and turned into real objects in one place per command. Errors are one line plus a
//! hint; exit status 0 on success, 1 on failure, 2 on bad usage.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tamga_config::NodeConfig;
use tamga_protocol::{MemberCode, RecordId, VerifyingKey};

use crate::audit_cli::AuditCmd;
use crate::client::{Client, ClientError};
use crate::identity::{Identity, Role, Tokens};

/// tamga — a federated sharing node for customs services.
#[derive(Debug, Parser)]
#[command(name = "tamga", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  tamga init --member RU --data-dir /var/lib/tamga --federation deploy/example\n  tamga run --config /var/lib/tamga/node.toml\n  tamga records list --config /var/lib/tamga/node.toml --category ipr.infringement"
)]
pub struct Cli {
    /// Log format of `tamga run`: human on a terminal, JSON for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "TAMGA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Where the node's settings are.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The node's node.toml. Example: --config /var/lib/tamga/node.toml
    #[arg(long, short = 'c', env = "TAMGA_CONFIG", default_value = "node.toml")]
    pub config: PathBuf,
    /// For a command that calls the running node: a file holding the one token to call
    /// it with (its owner's alone), instead of the role's token from the node's tokens
    /// file, which holds every role's. Example: --token-file ~/.tamga/auditor.token
    #[arg(long, env = "TAMGA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a node's identity, API tokens and node.toml. Example: tamga init --member RU --data-dir ./ru
    Init(InitArgs),
    /// Run the node until SIGINT or SIGTERM. Example: tamga run --config ./ru/node.toml
    Run(ConfigArg),
    /// Ingest and read records. Example: tamga records list --config ./ru/node.toml
    #[command(subcommand)]
    Records(RecordsCmd),
    /// Show the node's status. Example: tamga status --config ./ru/node.toml
    Status(JsonArgs),
    /// Show every roster member: connected, last seen, agreements and whether their terms match, how
    /// far behind each of our streams it is. Example: tamga peers --config ./ru/node.toml
    Peers(JsonArgs),
    /// Query and verify the audit log. Example: tamga audit verify --config ./ru/node.toml
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Check, compare, explain and reload the sharing policy. Example: tamga policy check deploy/example
    #[command(subcommand)]
    Policy(crate::reload::commands::PolicyCmd),
    /// Take a consistent backup of a running node. Example: tamga backup --config ./ru/node.toml --out ru.backup
    Backup(BackupArgs),
    /// Rebuild a data directory's store from a backup. Example: tamga restore --data-dir ./ru ru.backup
    Restore(RestoreArgs),
    /// Measure throughput against the machine's limits. Example: tamga bench --records 100000
    Bench(BenchArgs),
    /// Start a local federation of the six 2013 members on loopback, exchange a realistic
    /// mix of records, and show what flowed where and why. Example: tamga demo --keep ./tamga-demo
    Demo(crate::demo::DemoArgs),
    /// Print shell completions. Example: tamga completions bash > /etc/bash_completion.d/tamga
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `tamga init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The member this node speaks for (ISO 3166 alpha-2). Example: --member RU
    #[arg(long)]
    pub member: String,
    /// The directory for the node's keys, settings and store (created). Example: --data-dir ./ru
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Peer-to-peer listen address: TCP (/ip4|ip6/ADDR/tcp/PORT) or QUIC
    /// (/ip4|ip6/ADDR/udp/PORT/quic-v1). Example: --listen /ip4/0.0.0.0/tcp/7100
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7100")]
    pub listen: String,
    /// Local API address. Example: --api 127.0.0.1:7180
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub api: String,
    /// Directory holding the federation's roster.toml, catalog.toml, agreements/ and
    /// policies/MEMBER.toml (or policy.toml). Example: --federation deploy/example
    #[arg(long)]
    pub federation: Option<PathBuf>,
    /// DEMO ONLY: use the example federation's published key for this member, so that
    /// deploy/example/roster.toml already lists this node. Never use it in production.
    #[arg(long)]
    pub demo_identity: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--config` and `--json`.
#[derive(Debug, Args)]
pub struct JsonArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `tamga bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Records per ingest, replication and catch-up measurement (at least 1000).
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Nodes of the local federation for replication (2 to 10).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Payload of the libp2p request-response echo baseline, in bytes (default: the size
    /// of one encoded projection). Example: --payload 4096
    #[arg(long)]
    payload: Option<usize>,
    /// Also measure replication and catch-up over a grid of records × nodes, and print how
    /// throughput, memory and disk per record change.
    #[arg(long)]
    sweep: bool,
    /// The sweep's record counts. Example: --sweep-records 1000,5000
    #[arg(long, value_delimiter = ',', default_values_t = crate::bench::SWEEP_RECORDS)]
    sweep_records: Vec<usize>,
    /// The sweep's node counts (2 to 10 each). Example: --sweep-nodes 3,6
    #[arg(long, value_delimiter = ',', default_values_t = crate::bench::SWEEP_NODES)]
    sweep_nodes: Vec<usize>,
    /// Entries of the scratch audit log built to time audit queries and verify (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    audit_entries: u64,
    /// Print one JSON object with every figure and its unit.
    #[arg(long)]
    json: bool,
}

/// `tamga records …`.
#[derive(Debug, Subcommand)]
pub enum RecordsCmd {
    /// Ingest one record. Example: tamga records add --category rms.method --classification public --body '{"title":"…"}'
    Add(AddArgs),
    /// Ingest records from a JSON-lines file, one record per line. Example: tamga records import seizures.jsonl
    Import(ImportArgs),
    /// List records, newest first. Example: tamga records list --category ipr.infringement --since 24h
    List(ListArgs),
    /// Show one record, its projections and receipts. Example: tamga records show 3fa2…
    Show(ShowArgs),
    /// Revoke one of this node's records: every holder purges it and sends a signed purge
    /// receipt. Example: tamga records revoke 3fa2…
    Revoke(ShowArgs),
    /// Answer a record received from a peer with signed feedback, for its origin only.
    /// Example: tamga records feedback 3fa2… --outcome seized --note "1,200 pairs at Dostyk"
    Feedback(FeedbackArgs),
}

/// `tamga records add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Catalog category. Example: --category ipr.infringement
    #[arg(long)]
    category: String,
    /// public, non_confidential, confidential or secret. Example: --classification non_confidential
    #[arg(long)]
    classification: String,
    /// The body as JSON. Example: --body '{"mark":"ACME"}'
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    body: Option<String>,
    /// Read the body from a JSON file. Example: --file body.json
    #[arg(long)]
    file: Option<PathBuf>,
    /// Creation time, RFC 3339 (makes retries idempotent). Example: --created 2026-11-28T10:00:00Z
    #[arg(long)]
    created: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// `tamga records import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A file with one JSON record per line (category, classification, body, optional created).
    file: PathBuf,
    /// Records per request (halved while the node finds a request over its body limit).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `tamga records list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this category. Example: --category rms.method
    #[arg(long)]
    category: Option<String>,
    /// Only this origin member. Example: --origin KZ
    #[arg(long)]
    origin: Option<String>,
    /// Only records created since (RFC 3339, or 30m, 24h, 7d). Example: --since 24h
    #[arg(long)]
    since: Option<String>,
    /// Most records shown (fetched page by page, up to 10,000 at a time).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Every record that matches, however many.
    #[arg(long, conflicts_with = "limit")]
    all: bool,
    /// Records fetched per call to the node.
    #[arg(long, default_value_t = PAGE_SIZE, value_parser = clap::value_parser!(u64).range(1..=PAGE_SIZE))]
    page_size: u64,
    /// Print JSON: one object, `{"records": [...]}`, a record to a line.
    #[arg(long)]
    json: bool,
}

/// The most `records list` asks for in one call: the API's largest page.
const PAGE_SIZE: u64 = crate::api::MAX_LIST_LIMIT as u64;

/// `tamga records feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The record id (64 hex characters).
    id: RecordId,
    /// seized, no_finding or false_positive.
    #[arg(long)]
    outcome: String,
    /// Free text for the origin.
    #[arg(long, default_value = "")]
    note: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `tamga records show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The record id (64 hex characters).
    id: RecordId,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `tamga backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where to write the backup. Example: --out ru-2026-11-28.backup
    #[arg(long)]
    out: PathBuf,
}

/// `tamga restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The data directory to rebuild (its store must not exist yet). The backup's audit log
    /// must be signed by the member and key of its node.toml (checked only when it holds
    /// one). Example: --data-dir ./ru
    #[arg(long)]
    data_dir: PathBuf,
    /// The backup file.
    file: PathBuf,
}

/// Parse arguments, run, print errors as one line with a hint, return the exit status.
pub fn main() -> i32 {
    // libp2p-tls builds its rustls configs with a key-log writer that reads
    // SSLKEYLOGFILE; the daemon must never write its session keys anywhere.
    std::env::remove_var("SSLKEYLOGFILE");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `tamga … | head`: a closed stdout ends the command quietly, as for any Unix tool,
    // instead of a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => 0,
        Err(e) => {
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            if let Some(hint) = hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            1
        }
    }
}

fn hint_for(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(ClientError::Unreachable { .. }) = e.downcast_ref::<ClientError>() {
        return Some("start the node with `tamga run --config node.toml`, or pass the right --config");
    }
    if let Some(ClientError::TimedOut { .. }) = e.downcast_ref::<ClientError>() {
        return Some("the node took the request and then went quiet; its log says what it was doing");
    }
    if let Some(ClientError::Api { status, .. }) = e.downcast_ref::<ClientError>() {
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Some(
                "the token comes from the tokens file named in node.toml; check that it is this node's",
            );
        }
    }
    None
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAMGA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

pub(crate) fn load_config(c: &ConfigArg) -> Result<NodeConfig> {
    NodeConfig::load(&c.config).map_err(|e| anyhow!("{e}"))
}

pub(crate) fn client(c: &ConfigArg, role: Role) -> Result<Client> {
    Ok(Client::for_role(&load_config(c)?, role, c.token_file.as_deref())?)
}

/// An output file written beside its destination (`NAME.partial`) and renamed over it only
/// by [`OutFile::commit`]: a command that fails part-way leaves an existing file as it
/// was, and its partial file is removed.
#[derive(Debug)]
pub(crate) struct OutFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    committed: bool,
}

impl OutFile {
    /// Create the partial file for `dest`.
    pub(crate) fn create(dest: &Path) -> Result<OutFile> {
        let mut name =
            dest.file_name().ok_or_else(|| anyhow!("{} is not a file name", dest.display()))?.to_owned();
        name.push(".partial");
        let tmp = dest.with_file_name(name);
        // Its owner's alone (a backup holds every record; an export, the audit log), and
        // never through a file or symlink left at its name.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(OutFile { dest: dest.to_owned(), tmp, file: std::io::BufWriter::new(file), committed: false })
    }

    /// Flush and sync what was written, put it in place of the destination, and sync the
    /// directory that holds it: the rename is durable only then.
    pub(crate) fn commit(mut self) -> Result<()> {
        let written = self.file.flush().and_then(|()| self.file.get_ref().sync_all());
        written.with_context(|| format!("writing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| format!("writing {}", self.dest.display()))?;
        self.committed = true;
        sync_dir(parent_dir(&self.dest))
    }
}

/// The directory that holds `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Sync a directory, which makes the entries created, renamed or removed in it durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// `std::fs::create_dir_all` for a data directory, which holds every record and the audit
/// log: each directory it creates is its owner's alone (mode 0700, whatever the umask),
/// and made durable by syncing the directory that holds it.
fn create_private_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    for made in missing.into_iter().rev() {
        sync_dir(parent_dir(made))?;
    }
    Ok(())
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write a backup the node sent to `out`, once checked for damage: its magic bytes,
/// length and digest ([`crate::backup::check_envelope`]), not whether this build reads its
/// version and schema. The node has already audited the backup as taken, and a `tamga`
/// older than the node would otherwise throw a sound one away; `tamga restore` says
/// whether it reads it.
fn save_backup(bytes: &[u8], out: &Path) -> Result<()> {
    crate::backup::check_envelope(bytes).context("the node sent a damaged backup")?;
    let mut file = OutFile::create(out)?;
    file.write_all(bytes).with_context(|| format!("writing {}", out.display()))?;
    file.commit()
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init(a),
        Command::Run(c) => {
            init_tracing(cli.log_format);
            let config = load_config(&c)?;
            let node = crate::daemon::Node::start(config).await?;
            node.run_until_signal().await;
            Ok(())
        }
        Command::Records(r) => records(r).await,
        Command::Status(a) => {
            let v = client(&a.config, Role::Operator)
                .or_else(|_| client(&a.config, Role::Auditor))?
                .get("/v1/status", &[])
                .await?;
            print_json_or(&v, a.json, |v| {
                for (k, val) in v.as_object().into_iter().flatten() {
                    println!("{k:>16}  {}", plain(val));
                }
            });
            Ok(())
        }
        Command::Peers(a) => {
            let v = client(&a.config, Role::Operator)?.get("/v1/peers", &[]).await?;
            print_json_or(&v, a.json, |v| {
                println!(
                    "{:<6} {:<9} {:<10} {:<24} {:>8} {:>11} {:>8} AGREEMENTS",
                    "MEMBER", "ROLE", "STATE", "LAST SEEN", "BEHIND", "UNRECEIPTED", "FEEDBACK"
                );
                for p in v["peers"].as_array().into_iter().flatten() {
                    let agreements: Vec<String> = p["agreements"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{}:{}", plain(&a["agreement"]), plain(&a["digest"])))
                        .collect();
                    let state = if p["connected"] == true { "connected" } else { "down" };
                    // The furthest it is behind any of our streams (unknown before its first summary).
                    let behind = p["streams"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| s["behind"].as_u64())
                        .try_fold(0u64, |m, b| b.map(|b| m.max(b)))
                        .map_or_else(|| "?".to_owned(), |b| b.to_string());
                    println!(
                        "{:<6} {:<9} {:<10} {:<24} {:>8} {:>11} {:>8} {}",
                        plain(&p["member"]),
                        plain(&p["role"]),
                        state,
                        plain(&p["last_seen"]),
                        behind,
                        plain(&p["receipts"]["outstanding"]),
                        plain(&p["feedback_waiting"]),
                        agreements.join(" ")
                    );
                }
            });
            Ok(())
        }
        Command::Audit(a) => crate::audit_cli::run(a).await,
        Command::Policy(p) => crate::reload::commands::run(p).await,
        Command::Backup(a) => {
            let bytes = client(&a.config, Role::Admin)?.get_bytes("/v1/backup").await?;
            save_backup(&bytes, &a.out)?;
            println!("backup written to {} ({} bytes)", a.out.display(), bytes.len());
            Ok(())
        }
        Command::Demo(a) => crate::demo::run(a).await,
        Command::Bench(a) => {
            let mut report = crate::bench::run(&crate::bench::Options {
                records: a.records,
                nodes: a.nodes,
                payload: a.payload,
                sweep: a.sweep,
                sweep_records: a.sweep_records,
                sweep_nodes: a.sweep_nodes,
            })
            .await?;
            crate::audit_bench::measure(&mut report, a.audit_entries)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Restore(a) => {
            println!("{}", restore_file(&a.data_dir, &a.file)?);
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tamga", &mut std::io::stdout());
            Ok(())
        }
    }
}

pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `records list`: the node's listing, page after page, until `--limit` records (with
/// `--all`, every one) are shown. Each page is printed as it comes, so a long listing is
/// never held whole.
async fn list(a: ListArgs) -> Result<()> {
    let client = client(&a.config, Role::Operator)?;
    let mut left = if a.all { usize::MAX } else { a.limit };
    let mut after: Option<String> = None;
    let mut shown = 0usize;
    if a.json {
        print!("{{\"records\": [");
    } else {
        println!("{:<16} {:<24} {:<6} {:<22} {:<16} SOURCE", "ID", "CREATED", "ORIGIN", "CATEGORY", "CLASS");
    }
    while left > 0 {
        let mut q = vec![("limit", left.min(a.page_size as usize).to_string())];
        for (k, v) in
            [("category", &a.category), ("origin", &a.origin), ("since", &a.since), ("after", &after)]
        {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        let v = client.get("/v1/records", &q).await?;
        let records = v["records"].as_array().map(Vec::as_slice).unwrap_or_default();
        for r in records {
            if a.json {
                print!("{}\n  {r}", if shown == 0 { "" } else { "," });
            } else {
                let id = r["id"].as_str().unwrap_or("");
                let source = match r["source"]["kind"].as_str() {
                    Some("received") => format!("from {}", plain(&r["source"]["from"])),
                    _ => "local".into(),
                };
                println!(
                    "{:<16} {:<24} {:<6} {:<22} {:<16} {source}",
                    &id[..16.min(id.len())],
                    plain(&r["created"]),
                    plain(&r["origin"]),
                    plain(&r["category"]),
                    plain(&r["classification"]),
                );
            }
            shown += 1;
        }
        left = left.saturating_sub(records.len());
        match v["next"].as_str() {
            Some(next) if !records.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    if a.json {
        println!("{}]}}", if shown == 0 { "" } else { "\n" });
    }
    Ok(())
}

fn print_json_or(v: &Value, json: bool, table: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        table(v);
    }
}

fn init(a: InitArgs) -> Result<()> {
    let out = create_node(&a)?;
    if a.json {
        println!("{out}");
    } else {
        for k in ["member", "peer_id", "listen", "api", "config"] {
            println!("{k:<8} {}", plain(&out[k]));
        }
        if a.federation.is_none() {
            println!(
                "next: put roster.toml, catalog.toml, agreements/ and policy.toml in {}",
                a.data_dir.display()
            );
        }
        if !a.demo_identity {
            println!("next: add this peer_id for {} to the federation's roster.toml", plain(&out["member"]));
        }
    }
    Ok(())
}

/// What `tamga init` does, without printing: create a node's identity, tokens and
/// node.toml; returns what init prints. Also used by `tamga bench` and the test harness.
pub fn create_node(a: &InitArgs) -> Result<Value> {
    let member: tamga_protocol::MemberCode = a.member.parse()?;
    // Checked as node.toml's `network.listen` is, so init never writes a file that will not load.
    let listen = tamga_config::node::parse_listen(&a.listen).map_err(|e| anyhow!("--listen: {e}"))?;
    let api: std::net::SocketAddr =
        a.api.parse().map_err(|e| anyhow!("--api {:?} is not an address like 127.0.0.1:7180: {e}", a.api))?;
    create_private_dirs(&a.data_dir)?;
    let dir = std::fs::canonicalize(&a.data_dir)?;
    let identity_path = dir.join("identity.key");
    let tokens_path = dir.join("tokens.json");
    let node_toml = dir.join("node.toml");
    // A store left by another node too: taken over by a new identity, its records would
    // be salted under another key and held twice. (A symlink counts, dangling or not.)
    for p in [&identity_path, &tokens_path, &node_toml, &dir.join("store")] {
        if p.symlink_metadata().is_ok() {
            bail!("{} already exists; refusing to overwrite a node (choose another --data-dir)", p.display());
        }
    }
    let (roster, catalog, agreements, policy) = match &a.federation {
        Some(f) => {
            let f = std::fs::canonicalize(f).with_context(|| format!("--federation {}", f.display()))?;
            let per_member = f.join("policies").join(format!("{member}.toml"));
            let policy = if per_member.exists() { per_member } else { f.join("policy.toml") };
            (f.join("roster.toml"), f.join("catalog.toml"), f.join("agreements"), policy)
        }
        None => (
            dir.join("roster.toml"),
            dir.join("catalog.toml"),
            dir.join("agreements"),
            dir.join("policy.toml"),
        ),
    };
    let identity = if a.demo_identity {
        Identity::from_secret(tamga_config::demo::demo_secret(member))
    } else {
        Identity::generate()
    };
    let q = |p: &Path| toml_string(&p.display().to_string());
    let text = format!(
        "# tamga node settings for {member}; paths are relative to this file.\n\
         member = {m}\ndata_dir = \".\"\nidentity = \"identity.key\"\ntokens = \"tokens.json\"\n\
         roster = {roster}\ncatalog = {catalog}\nagreements = {agreements}\npolicy = {policy}\n\n\
         [network]\nlisten = [{listen}]\n\n[api]\nlisten = {api}\n",
        m = toml_string(member.as_str()),
        roster = q(&roster),
        catalog = q(&catalog),
        agreements = q(&agreements),
        policy = q(&policy),
        listen = toml_string(&listen.to_string()),
        api = toml_string(&api.to_string()),
    );
    identity.create(&identity_path)?;
    let rest = Tokens::generate()
        .create(&tokens_path)
        .map_err(anyhow::Error::from)
        .and_then(|()| write_new_file(&node_toml, &text))
        .and_then(|()| sync_dir(&dir));
    if let Err(e) = rest {
        // Nothing half made is left: init can be run again on the same directory.
        for p in [&identity_path, &tokens_path, &node_toml] {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(json!({
        "member": member.as_str(),
        "peer_id": identity.peer_id().to_string(),
        "listen": listen.to_string(),
        "api": api.to_string(),
        "config": node_toml.display().to_string(),
    }))
}

/// Write `text` to a new file at `path` (never over a file or through a symlink there),
/// synced.
fn write_new_file(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

async fn records(cmd: RecordsCmd) -> Result<()> {
    match cmd {
        RecordsCmd::Add(a) => {
            let body_text = match (&a.body, &a.file) {
                (Some(b), _) => b.clone(),
                (None, Some(f)) => {
                    std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
                }
                (None, None) => bail!("give --body or --file"),
            };
            let body: Value = serde_json::from_str(&body_text).context("the body is not valid JSON")?;
            let mut rec = json!({ "category": a.category, "classification": a.classification, "body": body });
            if let Some(c) = a.created {
                rec["created"] = Value::String(c);
            }
            let v =
                client(&a.config, Role::Operator)?.post("/v1/records", &rec).await.map_err(detail_error)?;
            print_json_or(&v, a.json, |v| {
                let id = v["ids"][0].as_str().unwrap_or("?");
                let dup = v["duplicates"].as_u64() == Some(1);
                println!("{id}{}", if dup { "  (already held)" } else { "" });
            });
            Ok(())
        }
        RecordsCmd::Import(a) => import(a).await,
        RecordsCmd::List(a) => list(a).await,
        RecordsCmd::Revoke(a) => {
            let v = client(&a.config, Role::Operator)?
                .post(&format!("/v1/records/{}/revoke", a.id), &json!({}))
                .await?;
            print_json_or(&v, a.json, |v| {
                println!(
                    "revoked {}: {} revocation entries to send",
                    plain(&v["id"]),
                    plain(&v["revocations"])
                );
            });
            Ok(())
        }
        RecordsCmd::Feedback(a) => {
            let body = json!({ "outcome": a.outcome, "note": a.note });
            let v = client(&a.config, Role::Operator)?
                .post(&format!("/v1/records/{}/feedback", a.id), &body)
                .await?;
            print_json_or(&v, a.json, |v| {
                println!(
                    "feedback {} on {} queued for {}",
                    plain(&v["outcome"]),
                    plain(&v["record"]),
                    plain(&v["origin"])
                );
            });
            Ok(())
        }
        RecordsCmd::Show(a) => {
            let v = client(&a.config, Role::Operator)?.get(&format!("/v1/records/{}", a.id), &[]).await?;
            print_json_or(&v, a.json, |v| {
                let r = &v["record"];
                for k in ["id", "category", "classification", "origin", "created", "stored"] {
                    println!("{k:>15}  {}", plain(&r[k]));
                }
                println!("{:>15}  {}", "withheld", plain(&r["withheld_fields"]));
                for (k, val) in r["body"].as_object().into_iter().flatten() {
                    println!("{:>15}  {}", format!("body.{k}"), plain(val));
                }
                for p in v["projections"].as_array().into_iter().flatten() {
                    println!("{:>15}  {} #{}", "projected", plain(&p["agreement"]), plain(&p["seq"]));
                }
                for f in v["feedback"].as_array().into_iter().flatten() {
                    println!(
                        "{:>15}  {} from {}: {}",
                        "feedback",
                        plain(&f["outcome"]),
                        plain(&f["from"]),
                        plain(&f["note"])
                    );
                }
                for p in v["receipts"].as_array().into_iter().flatten() {
                    println!(
                        "{:>15}  {} {} #{} by {} at {}",
                        "receipt",
                        plain(&p["for"]),
                        plain(&p["agreement"]),
                        plain(&p["seq"]),
                        plain(&p["receiver"]),
                        plain(&p["received"])
                    );
                }
            });
            Ok(())
        }
    }
}

fn detail_error(e: ClientError) -> anyhow::Error {
    if let ClientError::Api { details: Some(d), .. } = &e {
        for item in d.as_array().into_iter().flatten() {
            for err in item["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", plain(err));
            }
        }
    }
    e.into()
}

async fn import(a: ImportArgs) -> Result<()> {
    let client = client(&a.config, Role::Operator)?;
    // Read as it is sent, never whole; each line as bytes, so that one that is not UTF-8 is
    // refused on its own, as one that is not JSON is.
    let lines = |file: &Path| -> Result<_> {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Ok(std::io::BufReader::new(f).split(b'\n').enumerate().map(|(i, l)| l.map(|l| (i + 1, l))))
    };
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let reading = || format!("reading {}", a.file.display());
    let tty = std::io::stderr().is_terminal();
    // The progress line's total, from a first pass that only counts.
    let mut total = 0usize;
    if tty {
        for l in lines(&a.file)? {
            total += usize::from(!blank(&l.with_context(reading)?.1));
        }
    }
    let mut refused: Vec<(usize, String)> = Vec::new();
    let (mut accepted, mut duplicates, mut done) = (0usize, 0usize, 0usize);
    let mut pending: Vec<(usize, Value)> = Vec::new();
    // Records per request: halved whenever a request is over the node's body limit, the
    // records it left out kept in `held` and sent first.
    let mut batch = a.batch.clamp(1, crate::api::MAX_BATCH_RECORDS);
    let mut held: VecDeque<(usize, Value)> = VecDeque::new();
    let mut it = lines(&a.file)?.filter(|l| l.as_ref().map_or(true, |(_, l)| !blank(l))).peekable();
    while it.peek().is_some() || !pending.is_empty() || !held.is_empty() {
        while pending.len() < batch {
            if let Some(record) = held.pop_front() {
                pending.push(record);
                continue;
            }
            let Some(line) = it.next() else { break };
            let (n, bytes) = line.with_context(reading)?;
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| format!("not UTF-8 text: {e}"))
                .and_then(|l| serde_json::from_str::<Value>(l).map_err(|e| format!("not JSON: {e}")));
            match parsed {
                Ok(v) => pending.push((n, v)),
                Err(why) => {
                    refused.push((n, why));
                    done += 1;
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        let body = json!({ "records": pending.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() });
        match client.post("/v1/records", &body).await {
            Ok(v) => {
                let new = v["new"].as_u64().unwrap_or(0) as usize;
                accepted += new;
                duplicates += pending.len() - new;
                done += pending.len();
                pending.clear();
            }
            Err(ClientError::Api { status: StatusCode::PAYLOAD_TOO_LARGE, message, .. }) => {
                if let [(n, _)] = pending[..] {
                    refused.push((n, format!("the record alone is too large for the node: {message}")));
                    done += 1;
                    pending.clear();
                } else {
                    batch = pending.len() / 2;
                    for record in pending.drain(batch..).rev() {
                        held.push_front(record);
                    }
                }
            }
            Err(ClientError::Api { details: Some(d), .. }) => {
                // Take the refused lines out and send the rest again.
                let mut bad: Vec<usize> = Vec::new();
                for item in d.as_array().into_iter().flatten() {
                    if let Some(i) = item["index"].as_u64() {
                        let i = i as usize;
                        if let Some((n, _)) = pending.get(i) {
                            let errs: Vec<String> =
                                item["errors"].as_array().into_iter().flatten().map(plain).collect();
                            refused.push((*n, errs.join("; ")));
                            bad.push(i);
                        }
                    }
                }
                if bad.is_empty() {
                    bail!("the node refused the batch without saying which records");
                }
                done += bad.len();
                let mut i = 0;
                pending.retain(|_| {
                    let keep = !bad.contains(&i);
                    i += 1;
                    keep
                });
            }
            Err(e) => return Err(e.into()),
        }
        if tty {
            eprint!("\rimporting {done}/{total} records ({} refused)", refused.len());
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    }
    refused.sort();
    let summary = json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "refused": refused.iter().map(|(n, e)| json!({"line": n, "error": e})).collect::<Vec<_>>(),
    });
    print_json_or(&summary, a.json, |_| {
        println!("{accepted} accepted, {duplicates} already held, {} refused", refused.len());
        for (n, e) in &refused {
            println!("  {}:{n}: {e}", a.file.display());
        }
    });
    if refused.is_empty() {
        Ok(())
    } else {
        bail!("{} lines of {} were refused", refused.len(), a.file.display())
    }
}

/// Whom a restored log's checkpoints must be signed by: the node that will run on the
/// store, as the node.toml `tamga init` writes into the data directory names it.
enum Signer {
    /// The node's member, and the keys it signs with: its identity's, and every key the
    /// roster lists for the member (one rotated since the backup was taken).
    Node { member: MemberCode, keys: Vec<VerifyingKey>, config: PathBuf },
    /// Why the restore cannot know.
    Unknown(String),
}

/// The signer of the node that will run on `data_dir`'s store. A node.toml there that
/// does not load is refused: the node would not start with it, and the restore cannot
/// tell whose log it may take.
fn restore_signer(data_dir: &Path) -> Result<Signer> {
    let path = data_dir.join("node.toml");
    if !path.exists() {
        return Ok(Signer::Unknown(format!("{} holds no node.toml", data_dir.display())));
    }
    let config = NodeConfig::load(&path).map_err(|e| {
        anyhow!("{e}: the restore checks the backup's audit log against the member and key it names")
    })?;
    let mut keys = Vec::new();
    let identity = crate::identity::Identity::load(&config.identity);
    if let Ok(id) = &identity {
        keys.push(id.signing.verifying_key());
    }
    if let Ok(fed) = tamga_config::Federation::load(&config) {
        for k in fed.roster.verifying_keys(config.member) {
            if !keys.contains(k) {
                keys.push(*k);
            }
        }
    }
    match identity {
        Err(e) if keys.is_empty() => {
            let roster = config.roster.display();
            Ok(Signer::Unknown(format!("neither the identity ({e}) nor the roster {roster} is readable")))
        }
        _ => Ok(Signer::Node { member: config.member, keys, config: path }),
    }
}

/// Whom a restored log's checkpoints were checked to be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// Every checkpoint verifies under the member's keys; the last covers entry `through`.
    Member {
        /// The member.
        member: MemberCode,
        /// Its checkpoints stored.
        checkpoints: u64,
        /// The entry the last one covers.
        through: u64,
    },
    /// The member's keys were known, but the log holds no checkpoint yet.
    NoCheckpoint(MemberCode),
    /// No signer was known, for this reason.
    Unchecked(String),
}

/// What `tamga restore` did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The store rebuilt.
    pub store: PathBuf,
    /// The keys loaded.
    pub keys: usize,
    /// The records held.
    pub records: u64,
    /// The audit entries whose chain verified.
    pub entries: u64,
    /// Whom its checkpoints were checked to be signed by.
    pub signed: SignedBy,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Restored { store, keys, records, entries, signed } = self;
        write!(f, "restored {keys} keys into {}: {records} records, ", store.display())?;
        match signed {
            SignedBy::Member { member, checkpoints, through } => write!(
                f,
                "audit log verified ({entries} entries; {checkpoints} checkpoints signed by {member}'s key, \
                 the last of entry {through})"
            ),
            SignedBy::NoCheckpoint(member) => write!(
                f,
                "audit log verified as a hash chain only ({entries} entries): it holds no checkpoint \
                 {member} signed yet, so the restore cannot check who signed the log"
            ),
            SignedBy::Unchecked(why) => write!(
                f,
                "audit log verified as a hash chain only ({entries} entries): its checkpoints' \
                 signatures were not checked, as {why}, so the restore cannot check who signed the log"
            ),
        }
    }
}

/// A store at `dir` loaded with `snap`, its audit log verified (its checkpoints against
/// `signer`) and flushed.
fn build_restored(dir: &Path, snap: crate::writer::Snapshot, signer: &Signer) -> Result<Restored> {
    let store = crate::store::Store::open(dir)?;
    let keys = snap.len();
    store.load_raw(snap)?;
    store.mark_restored()?;
    let opts = match signer {
        Signer::Node { member, keys, config } => {
            // Another member's log, as it signed it, is named as such rather than as a forgery.
            if let Some(cp) = store.checkpoints()?.into_iter().find(|cp| cp.member != *member) {
                bail!(
                    "the backup holds {0}'s audit log (its checkpoints are signed as {0}), not {member}'s, \
                     the member {1} names: a node restored from it would run as {member} on {0}'s log",
                    cp.member,
                    config.display()
                );
            }
            crate::audit::VerifyOptions { signer: Some((*member, keys.clone())), witness: Vec::new() }
        }
        Signer::Unknown(_) => crate::audit::VerifyOptions::default(),
    };
    // The indexes too: a backup carries them as they were, and a posting edited in the
    // file would hide entries from the restored node's queries while its chain verifies.
    let report = crate::audit::verify_store_and_indexes(&store, &opts);
    if !report.ok {
        bail!("the audit log does not verify: {}", report.error.unwrap_or_default());
    }
    let signed = match signer {
        Signer::Node { member, .. } => match store.latest_checkpoint()? {
            Some(cp) => {
                SignedBy::Member { member: *member, checkpoints: report.checkpoints, through: cp.seq }
            }
            None => SignedBy::NoCheckpoint(*member),
        },
        Signer::Unknown(why) => SignedBy::Unchecked(why.clone()),
    };
    store.flush_blocking()?;
    let records = store.record_count();
    Ok(Restored { store: dir.to_owned(), keys, records, entries: report.entries, signed })
}

/// What a file that is not a regular file is, for the message that refuses it.
fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// The bytes of the backup file `file`, its header read and checked first
/// ([`crate::backup::check_header`]) against the file's size: a device, a FIFO or a file
/// of other bytes is refused before more than a header of it is read.
fn read_backup(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let name = file.display();
    let regular = |meta: &std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            let kind = file_kind(meta.file_type());
            Err(anyhow!("{name} is not a regular file ({kind}); a backup is the file `tamga backup` writes"))
        }
    };
    // Looked at before it is opened: opening a FIFO waits for something to write to it.
    regular(&std::fs::metadata(file).with_context(|| format!("reading {name}"))?)?;
    let mut f = std::fs::File::open(file).with_context(|| format!("reading {name}"))?;
    // And again as opened, should another file have taken its name meanwhile.
    let meta = f.metadata().with_context(|| format!("reading {name}"))?;
    regular(&meta)?;
    let len = meta.len();
    let mut bytes = Vec::new();
    (&mut f)
        .take(crate::backup::HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name}"))?;
    crate::backup::check_header(&bytes, len).with_context(|| format!("{name}"))?;
    let rest = len.saturating_sub(bytes.len() as u64);
    let fits = usize::try_from(rest).ok().filter(|rest| bytes.try_reserve_exact(*rest).is_ok());
    if fits.is_none() {
        bail!("{name}: its {len} bytes do not fit in memory");
    }
    (&mut f).take(rest).read_to_end(&mut bytes).with_context(|| format!("reading {name}"))?;
    // Shorter or longer than its size said: another process is writing it.
    if bytes.len() as u64 != len || f.read(&mut [0u8; 1]).with_context(|| format!("reading {name}"))? != 0 {
        bail!("{name} changed while it was read ({len} bytes when opened)");
    }
    Ok(bytes)
}

/// `tamga restore`: rebuild the store of `data_dir` from a backup file and verify its
/// audit log, its checkpoints against the node that will run on it (see [`Restored`]).
pub fn restore_file(data_dir: &Path, file: &Path) -> Result<Restored> {
    let bytes = read_backup(file)?;
    let snap = crate::backup::decode(&bytes).with_context(|| format!("{}", file.display()))?;
    let dir = data_dir.join(crate::daemon::STORE_DIR);
    if dir.exists() {
        bail!("{} already exists; restore only into a data directory without a store", dir.display());
    }
    let signer = restore_signer(data_dir).with_context(|| format!("{} not restored", file.display()))?;
    // The outermost directory this restore creates, removed again if it is refused.
    let made = data_dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).last();
    create_private_dirs(data_dir)?;
    // Built and verified beside the store's place, and renamed into it only once it
    // verifies: a refused backup leaves no store that `tamga run` would open.
    let aside = data_dir.join(format!("{}.restoring", crate::daemon::STORE_DIR));
    if aside.exists() {
        std::fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))?;
    }
    let mut restored = match build_restored(&aside, snap, &signer) {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(made.unwrap_or(&aside));
            return Err(e.context(format!("{} not restored", file.display())));
        }
    };
    std::fs::rename(&aside, &dir)
        .with_context(|| format!("moving {} to {}", aside.display(), dir.display()))?;
    // The rename is durable only once the directory that holds it is synced.
    sync_dir(data_dir)?;
    restored.store = dir;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup in `dir` of a store that holds its schema marker only.
    fn empty_backup(dir: &Path) -> PathBuf {
        let file = dir.join("ru.backup");
        let snap =
            vec![(crate::store::SCHEMA_KEY.to_vec(), crate::store::SCHEMA_VERSION.to_be_bytes().to_vec())];
        std::fs::write(&file, crate::backup::encode(&snap)).expect("writes");
        file
    }

    // A data directory that cannot be made is named, not just the OS's reason.
    #[test]
    fn a_restore_that_cannot_make_the_data_directory_names_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = empty_backup(tmp.path());
        let data_dir = file.join("ru");
        let e = format!("{:#}", restore_file(&data_dir, &file).expect_err("a file is in the way"));
        assert!(e.contains(&data_dir.display().to_string()), "{e}");
    }

    // A node.toml in the data directory that does not load is refused before anything is
    // built: the restore cannot tell whose log the store may hold.
    #[test]
    fn a_restore_into_a_directory_whose_node_toml_does_not_load_builds_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = empty_backup(tmp.path());
        let node_toml = tmp.path().join("node.toml");
        std::fs::write(&node_toml, "member = \"RU\"\n").expect("writes");
        let e = format!("{:#}", restore_file(tmp.path(), &file).expect_err("refused"));
        assert!(e.contains("node.toml") && e.contains("not restored"), "{e}");
        let store = crate::daemon::STORE_DIR;
        for left in [store.to_owned(), format!("{store}.restoring")] {
            assert!(!tmp.path().join(&left).exists(), "{left} is left");
        }
    }

    // A restore reads a backup's header before the rest of it: /dev/zero (which never
    // ends), a FIFO (whose opening waits for a writer), a sparse 64 GiB file of other
    // bytes and a header counting more items than its file can hold are refused at once,
    // naming the file, and the data directory is not made.
    #[test]
    fn a_restore_from_a_device_a_fifo_or_other_bytes_is_refused_at_once_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("ru");
        let random = tmp.path().join("random.bin");
        let mut bytes = vec![0u8; 4096];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        bytes[0] = 0; // whatever the rest drew, not the magic bytes
        std::fs::write(&random, &bytes).expect("writes");
        let sparse = std::fs::File::options().write(true).open(&random).expect("opens");
        sparse.set_len(64 << 30).expect("a sparse 64 GiB file");
        let fifo = tmp.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());
        let counted = tmp.path().join("counted.backup");
        let mut header = crate::backup::MAGIC.to_vec();
        header.extend_from_slice(&crate::backup::VERSION.to_be_bytes());
        header.extend_from_slice(&crate::store::SCHEMA_VERSION.to_be_bytes());
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.resize(4096, 0);
        std::fs::write(&counted, &header).expect("writes");
        for (file, says) in [
            (Path::new("/dev/zero"), "not a regular file (a character device)"),
            (&fifo, "not a regular file (a FIFO)"),
            (&random, "not a tamga backup"),
            (&counted, "counts 1099511627776 items"),
        ] {
            let (tx, rx) = std::sync::mpsc::channel();
            let (d, f) = (data_dir.clone(), file.to_owned());
            std::thread::spawn(move || {
                let _ = tx.send(restore_file(&d, &f).map(|r| r.to_string()).map_err(|e| format!("{e:#}")));
            });
            let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
            let e = answer.unwrap_or_else(|_| panic!("{} not refused within 10 s", file.display()));
            let e = e.expect_err("refused");
            assert!(e.contains(&file.display().to_string()) && e.contains(says), "{}: {e}", file.display());
            assert!(!data_dir.exists(), "{} made the data directory", file.display());
        }
    }

    // A backup of a schema newer than this build reads is kept: the node has already
    // audited it as taken, and a newer `tamga` restores it. A damaged one is not.
    #[test]
    fn a_backup_of_a_newer_schema_is_saved_and_a_damaged_one_is_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let newer = crate::store::SCHEMA_VERSION + 1;
        let mut bytes =
            crate::backup::encode(&vec![(crate::store::SCHEMA_KEY.to_vec(), newer.to_be_bytes().to_vec())]);
        let schema = crate::backup::MAGIC.len() + 4;
        bytes[schema..schema + 4].copy_from_slice(&newer.to_be_bytes());
        let body = bytes.len() - 32;
        let digest = tamga_protocol::Digest::of(&bytes[..body]);
        bytes[body..].copy_from_slice(&digest.0);
        let out = tmp.path().join("ru.backup");
        save_backup(&bytes, &out).expect("a backup of a newer schema is saved");
        assert_eq!(std::fs::read(&out).expect("reads"), bytes);

        let damaged = tmp.path().join("damaged.backup");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let e = format!("{:#}", save_backup(&bytes, &damaged).expect_err("refused"));
        assert!(e.contains("damaged backup") && e.contains("digest"), "{e}");
        assert!(!damaged.exists() && !tmp.path().join("damaged.backup.partial").exists());
    }

    // A node that timed out after taking the request is running: the hint does not say
    // to start it.
    #[test]
    fn a_timeout_is_not_hinted_as_a_node_that_is_not_running() {
        let e = anyhow::Error::from(ClientError::TimedOut {
            url: "http://127.0.0.1:7180".into(),
            what: "sent no answer to GET /v1/backup for 600s".into(),
        });
        let hint = hint_for(&e).expect("a hint");
        assert!(!hint.contains("tamga run") && hint.contains("log"), "{hint}");
    }
}

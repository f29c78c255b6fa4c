//! `tamga audit …`: what an auditor runs. Every subcommand works against the running node
//! (its API, with the `auditor` token from the tokens file `node.toml` names) or, with
//! `--offline`, directly on a stopped node's data directory, read-only.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tamga_protocol::{Checkpoint, MemberCode, RecordId};

use crate::audit::{ExportedEntry, QueryParams, VerifyOptions, VerifyReport};
use crate::audit_index::{Counts, GroupBy, RawEntry};
use crate::cli::{client, load_config, plain, ConfigArg, OutFile};
use crate::identity::Role;
use crate::store::Store;

/// Entries asked for per page by `audit export` against a running node.
pub const EXPORT_PAGE: usize = 10_000;
/// Most checkpoints read from one witness file.
pub const MAX_WITNESS_CHECKPOINTS: usize = 1_000_000;

/// `tamga audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Query the audit log, or count entries. Example: tamga audit query --since 24h --action rejected
    Query(QueryArgs),
    /// The whole life of one record on this node. Example: tamga audit trace 9c1f…
    Trace(TraceArgs),
    /// Recompute the hash chain, check every signed checkpoint and any witnessed ones, and
    /// name the first bad entry; with --indexes, also check the indexes against the
    /// entries. Example: tamga audit verify --witness ru-seen-by-kz.jsonl
    Verify(VerifyArgs),
    /// Export entries with their hashes, exactly as stored. Example: tamga audit export --format jsonl --out audit.jsonl
    Export(ExportArgs),
    /// List this node's signed checkpoints, or write those a peer showed it (a witness
    /// file for that peer's auditor). Example: tamga audit checkpoints --member RU --out ru-seen-by-kz.jsonl
    Checkpoints(CheckpointsArgs),
}

/// Where to read: the running node, or a stopped node's data directory.
#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Read the data directory directly, read-only, instead of asking the running node
    /// (the node must be stopped).
    #[arg(long)]
    offline: bool,
}

/// The filters of `audit query` (all optional, combined with AND).
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Entries at or after (RFC 3339, or 30m, 24h, 7d back). Example: --since 24h
    #[arg(long)]
    since: Option<String>,
    /// Entries at or before (RFC 3339, or a duration back). Example: --until 2026-11-28T00:00:00Z
    #[arg(long)]
    until: Option<String>,
    /// Peer member code. Example: --peer KZ
    #[arg(long)]
    peer: Option<String>,
    /// Category. Example: --category ipr.infringement
    #[arg(long)]
    category: Option<String>,
    /// Agreement. Example: --agreement sco-ipr-2012
    #[arg(long)]
    agreement: Option<String>,
    /// Action (ingested, sent, delivered, received, rejected, withheld, …). Example: --action rejected
    #[arg(long)]
    action: Option<String>,
    /// Record id (64 hex characters).
    #[arg(long)]
    record: Option<String>,
    /// Outcome (ok, refused, failed). Example: --outcome refused
    #[arg(long)]
    outcome: Option<String>,
}

impl FilterArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        for (k, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("peer", &self.peer),
            ("category", &self.category),
            ("agreement", &self.agreement),
            ("action", &self.action),
            ("record", &self.record),
            ("outcome", &self.outcome),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q
    }

    fn params(&self, limit: Option<usize>) -> QueryParams {
        QueryParams {
            since: self.since.clone(),
            until: self.until.clone(),
            peer: self.peer.clone(),
            category: self.category.clone(),
            agreement: self.agreement.clone(),
            action: self.action.clone(),
            record: self.record.clone(),
            outcome: self.outcome.clone(),
            limit,
        }
    }
}

/// `tamga audit query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print counts instead of entries. Example: --count --by day
    #[arg(long)]
    count: bool,
    /// Group the counts by peer, category, action, agreement or day (UTC).
    #[arg(long, requires = "count")]
    by: Option<GroupBy>,
    /// Most entries printed (at most 100000).
    #[arg(long)]
    limit: Option<usize>,
    /// JSON lines: one `{"hash": …, "entry": {…}}` per entry (with --count, one object).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header line.
    #[arg(long)]
    csv: bool,
}

/// `tamga audit trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The record id (64 hex characters).
    record: RecordId,
    /// JSON lines, one entry per line.
    #[arg(long)]
    json: bool,
}

/// `tamga audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// A witness file: checkpoints of this node's log that a peer holds, written on the
    /// peer by `tamga audit checkpoints --member <this member> --out FILE`. May be repeated.
    #[arg(long, value_name = "FILE")]
    witness: Vec<PathBuf>,
    /// Also check that the indexes (what query, count and trace read) hold exactly the
    /// postings the entries imply, and name the first differences. Slower: every entry is
    /// read in full and every index key is read.
    #[arg(long)]
    indexes: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One `{"hash":"…","entry":<stored bytes>}` per line.
    Jsonl,
    /// A header, then one line per entry; the last column holds the stored bytes.
    Csv,
}

/// `tamga audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// jsonl or csv.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    format: ExportFormat,
    /// First sequence number. Example: --from 1000
    #[arg(long)]
    from: Option<u64>,
    /// Last sequence number.
    #[arg(long)]
    to: Option<u64>,
    /// Entries at or after (RFC 3339 or a duration back). Example: --since 7d
    #[arg(long)]
    since: Option<String>,
    /// Entries at or before.
    #[arg(long)]
    until: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `tamga audit checkpoints`.
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The checkpoints peer XX showed this node of XX's log (without it: this node's own).
    #[arg(long)]
    member: Option<String>,
    /// Write them as a witness file (JSON lines) for `audit verify --witness`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON lines on standard output.
    #[arg(long)]
    json: bool,
}

/// Open a stopped node's store for reading. Refuses a data directory without a store
/// (it would create one).
pub fn open_offline(c: &ConfigArg) -> Result<Store> {
    let config = load_config(c)?;
    let dir = config.data_dir.join(crate::daemon::STORE_DIR);
    if !dir.is_dir() {
        bail!("{} has no store (is --config the right node.toml?)", dir.display());
    }
    Store::open_to_read(&dir).with_context(|| {
        format!("opening {} (stop the node first, or drop --offline to ask the running node)", dir.display())
    })
}

/// The member and the keys that sign this node's checkpoints: the roster's, or failing
/// that (files unreadable) the node's own identity.
fn signer_offline(c: &ConfigArg) -> Result<Option<(MemberCode, Vec<tamga_protocol::VerifyingKey>)>> {
    let config = load_config(c)?;
    if let Ok(fed) = tamga_config::Federation::load(&config) {
        let keys = fed.roster.verifying_keys(config.member).to_vec();
        if !keys.is_empty() {
            return Ok(Some((config.member, keys)));
        }
    }
    match crate::identity::Identity::load(&config.identity) {
        Ok(id) => Ok(Some((config.member, vec![id.signing.verifying_key()]))),
        Err(e) => {
            eprintln!("note: checkpoint signatures not checked (neither the roster nor {e} is readable)");
            Ok(None)
        }
    }
}

/// Read a witness file: one checkpoint per line (blank lines skipped).
pub fn read_witness(path: &std::path::Path) -> Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cp: Checkpoint = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a checkpoint", path.display(), n + 1))?;
        out.push(cp);
        if out.len() > MAX_WITNESS_CHECKPOINTS {
            bail!("{}: more than {MAX_WITNESS_CHECKPOINTS} checkpoints", path.display());
        }
    }
    Ok(out)
}

fn now() -> i64 {
    crate::writer::now_ms()
}

/// Run one `tamga audit` subcommand.
pub async fn run(cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Query(a) => query(a).await,
        AuditCmd::Trace(a) => trace(a).await,
        AuditCmd::Verify(a) => verify(a).await,
        AuditCmd::Export(a) => export(a).await,
        AuditCmd::Checkpoints(a) => checkpoints(a).await,
    }
}

async fn query(a: QueryArgs) -> Result<()> {
    let src = &a.source;
    if a.count {
        let counts: Counts = if src.offline {
            let store = open_offline(&src.config)?;
            let filter = a.filter.params(None).into_filter(now()).map_err(|e| anyhow!(e))?;
            crate::audit_index::count(&store, &filter, a.by)?
        } else {
            let mut q = a.filter.pairs();
            if let Some(by) = a.by {
                q.push(("by", serde_json::to_value(by)?.as_str().unwrap_or_default().to_owned()));
            }
            let v = client(&src.config, Role::Auditor)?.get("/v1/audit/count", &q).await?;
            serde_json::from_value(v).context("the node sent counts this build cannot read")?
        };
        print_counts(&counts, a.json, a.csv);
        return Ok(());
    }
    let (entries, more): (Vec<ExportedEntry>, bool) = if src.offline {
        let store = open_offline(&src.config)?;
        let filter = a.filter.params(a.limit).into_filter(now()).map_err(|e| anyhow!(e))?;
        crate::audit_index::query_page(&store, &filter)?
    } else {
        let mut q = a.filter.pairs();
        if let Some(l) = a.limit {
            q.push(("limit", l.to_string()));
        }
        let (v, more) = client(&src.config, Role::Auditor)?.get_entries("/v1/audit", &q).await?;
        (serde_json::from_value(v).context("the node sent entries this build cannot read")?, more)
    };
    print_entries(&entries, a.json, a.csv);
    if more {
        eprintln!(
            "more entries match than these {}: narrow the query (--since, --until, --action, …), raise --limit, or use `tamga audit export`",
            entries.len()
        );
    }
    Ok(())
}

fn print_counts(c: &Counts, json: bool, csv: bool) {
    let by = c.by.and_then(|b| serde_json::to_value(b).ok()).map(|v| plain(&v));
    if json {
        println!("{}", serde_json::to_string(c).unwrap_or_default());
    } else if csv {
        match &by {
            Some(by) => {
                println!("{by},count");
                for g in &c.groups {
                    println!("{},{}", g.key, g.count);
                }
            }
            None => println!("count\n{}", c.total),
        }
    } else {
        match &by {
            Some(by) => {
                println!("{:<24} {:>10}", by.to_uppercase(), "COUNT");
                for g in &c.groups {
                    println!("{:<24} {:>10}", g.key, g.count);
                }
                println!("{:<24} {:>10}", "total", c.total);
            }
            None => println!("{}", c.total),
        }
    }
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_default()
}

fn print_entries(entries: &[ExportedEntry], json: bool, csv: bool) {
    if json {
        for e in entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else if csv {
        println!("seq,time,action,peer,record,category,agreement,policy,outcome,reason,hash");
        for x in entries {
            let e = &x.entry;
            let reason = opt(e.reason.clone()).replace('"', "\"\"");
            println!(
                "{},{},{},{},{},{},{},{},{},\"{reason}\",{}",
                e.seq,
                e.time,
                e.action.as_str(),
                opt(e.peer.map(|p| p.to_string())),
                opt(e.record.map(|r| r.to_hex())),
                opt(e.category.as_ref().map(|c| c.to_string())),
                opt(e.agreement.as_ref().map(|a| a.to_string())),
                e.policy.to_hex(),
                e.outcome.as_str(),
                x.hash.to_hex()
            );
        }
    } else {
        println!(
            "{:>7} {:<24} {:<18} {:<5} {:<16} {:<20} {:<8} REASON",
            "SEQ", "TIME", "ACTION", "PEER", "RECORD", "AGREEMENT", "OUTCOME"
        );
        for x in entries {
            let e = &x.entry;
            let rec = opt(e.record.map(|r| r.to_hex()));
            println!(
                "{:>7} {:<24} {:<18} {:<5} {:<16} {:<20} {:<8} {}",
                e.seq,
                e.time,
                e.action.as_str(),
                opt(e.peer.map(|p| p.to_string())),
                &rec[..16.min(rec.len())],
                opt(e.agreement.as_ref().map(|a| a.to_string())),
                e.outcome.as_str(),
                opt(e.reason.clone())
            );
        }
    }
}

async fn trace(a: TraceArgs) -> Result<()> {
    let id = a.record;
    let (entries, more): (Vec<ExportedEntry>, bool) = if a.source.offline {
        crate::audit_index::trace_page(&open_offline(&a.source.config)?, id)?
    } else {
        let path = format!("/v1/audit/trace/{id}");
        let (v, more) = client(&a.source.config, Role::Auditor)?.get_entries(&path, &[]).await?;
        (serde_json::from_value(v).context("the node sent entries this build cannot read")?, more)
    };
    if entries.is_empty() {
        bail!("the audit log has no entry about record {id}");
    }
    if more {
        eprintln!(
            "the record's entries go on past what one answer holds: these are the first {}; `tamga audit export` has them all",
            entries.len()
        );
    }
    if a.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    println!("record {id}");
    println!(
        "{:>7} {:<24} {:<17} {:<5} {:<20} {:<12} {:<8} DETAIL",
        "SEQ", "TIME", "ACTION", "PEER", "AGREEMENT", "POLICY", "OUTCOME"
    );
    for x in &entries {
        let e = &x.entry;
        let mut detail = Vec::new();
        if let Some(p) = &e.projection {
            detail.push(format!("{} #{}", p.origin, p.seq));
        }
        for r in e.receipts_for(id) {
            detail.push(format!(
                "receipt signed by {} at {}",
                r.receiver,
                crate::audit::rfc3339(r.received_ms)
            ));
        }
        if let Some(r) = &e.reason {
            detail.push(r.clone());
        }
        let policy = e.policy.to_hex();
        println!(
            "{:>7} {:<24} {:<17} {:<5} {:<20} {:<12} {:<8} {}",
            e.seq,
            e.time,
            e.action.as_str(),
            opt(e.peer.map(|p| p.to_string())),
            opt(e.agreement.as_ref().map(|a| a.to_string())),
            &policy[..12],
            e.outcome.as_str(),
            detail.join("; ")
        );
    }
    Ok(())
}

async fn verify(a: VerifyArgs) -> Result<()> {
    let mut witness = Vec::new();
    for f in &a.witness {
        witness.extend(read_witness(f)?);
    }
    let report: VerifyReport = if a.source.offline {
        let store = open_offline(&a.source.config)?;
        let signer = signer_offline(&a.source.config)?;
        let opts = VerifyOptions { signer, witness };
        if a.indexes {
            crate::audit::verify_store_and_indexes(&store, &opts)
        } else {
            crate::audit::verify_store_with(&store, &opts)
        }
    } else {
        let c = client(&a.source.config, Role::Auditor)?;
        // `indexes` only when asked, so that a node of an earlier build still answers.
        let mut body = json!({ "witness": witness });
        if a.indexes {
            body["indexes"] = Value::Bool(true);
        }
        let v = c.post("/v1/audit/verify", &body).await?;
        serde_json::from_value(v).context("the node sent a report this build cannot read")?
    };
    if a.indexes && report.ok && report.indexes.is_none() {
        bail!("the node did not check its indexes (a build without `audit verify --indexes`?)");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok {
        let indexes = report.indexes.as_ref().map_or(String::new(), |i| {
            format!("; the indexes hold exactly the {} postings of entries 1..={}", i.expected, i.through)
        });
        println!(
            "ok: {} entries verified, head {}; {} signed checkpoints and {} witnessed checkpoints match{indexes}",
            report.entries, report.head, report.checkpoints, report.witnessed
        );
    } else {
        match report.first_bad {
            Some(n) => println!("FAILED at entry {n}: {}", report.error.as_deref().unwrap_or("unknown")),
            None => println!("FAILED: {}", report.error.as_deref().unwrap_or("unknown")),
        }
        for d in report.indexes.iter().flat_map(|i| &i.differences) {
            println!("  {d}");
        }
    }
    match &report.indexes {
        _ if report.ok => Ok(()),
        Some(i) if !i.ok => bail!("the audit log's indexes disagree with its entries"),
        _ => bail!("the audit log does not verify"),
    }
}

async fn export(a: ExportArgs) -> Result<()> {
    // To a file: written aside and put in place only once the whole range is written.
    let mut file = a.out.as_deref().map(OutFile::create).transpose()?;
    let mut stdout;
    let w: &mut dyn Write = match &mut file {
        Some(f) => f,
        None => {
            stdout = std::io::BufWriter::new(std::io::stdout().lock());
            &mut stdout
        }
    };
    let mut n = 0u64;
    let mut emit = |w: &mut dyn Write, page: &[RawEntry]| -> Result<()> {
        for e in page {
            let line = match a.format {
                ExportFormat::Jsonl => crate::audit_index::jsonl_line(e),
                ExportFormat::Csv => crate::audit_index::csv_line(e),
            };
            writeln!(w, "{line}")?;
            n += 1;
        }
        Ok(())
    };
    if let ExportFormat::Csv = a.format {
        writeln!(w, "{}", crate::audit_index::CSV_HEADER)?;
    }
    // A relative time (`24h`) is read once, now: every page then covers the same range.
    let at = now();
    let t = |s: &Option<String>| {
        s.as_deref().map(|v| crate::api::parse_since(v, at)).transpose().map_err(|e| anyhow!(e))
    };
    let (since, until) = (t(&a.since)?, t(&a.until)?);
    if a.source.offline {
        let store = open_offline(&a.source.config)?;
        let (lo, hi) = crate::audit_index::seq_range(&store, since, until)?;
        let (mut from, to) = (lo.max(a.from.unwrap_or(1)), hi.min(a.to.unwrap_or(u64::MAX)));
        while from <= to {
            let page = crate::audit_index::export_page(&store, from, to, EXPORT_PAGE)?;
            let Some(last) = page.last().map(|e| e.seq) else { break };
            emit(w, &page)?;
            from = last + 1;
        }
    } else {
        let c = client(&a.source.config, Role::Auditor)?;
        let mut from = a.from.unwrap_or(1);
        loop {
            let mut q = vec![("from", from.to_string()), ("limit", EXPORT_PAGE.to_string())];
            for (k, ms) in
                [("since", since), ("until", until)].into_iter().filter_map(|(k, ms)| Some((k, ms?)))
            {
                let t = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| anyhow!("--{k}: the time is out of range"))?;
                q.push((k, t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
            }
            if let Some(to) = a.to {
                q.push(("to", to.to_string()));
            }
            let v: Value = c.get("/v1/audit/export", &q).await?;
            let page: Vec<RawEntry> = serde_json::from_value(v["entries"].clone())
                .context("the node sent entries this build cannot read")?;
            emit(w, &page)?;
            match v["next"].as_u64() {
                Some(next) if next > from => from = next,
                _ => break,
            }
        }
    }
    w.flush()?;
    if let (Some(f), Some(p)) = (file, &a.out) {
        f.commit()?;
        eprintln!("{n} entries written to {}", p.display());
    }
    Ok(())
}

async fn checkpoints(a: CheckpointsArgs) -> Result<()> {
    let member: Option<MemberCode> =
        a.member.as_deref().map(str::parse).transpose().map_err(|e| anyhow!("--member: {e}"))?;
    let cps: Vec<Checkpoint> = if a.source.offline {
        let store = open_offline(&a.source.config)?;
        match member {
            Some(m) => store.peer_checkpoints(Some(m))?,
            None => store.checkpoints()?,
        }
    } else {
        let mut q = Vec::new();
        if let Some(m) = member {
            q.push(("member", m.to_string()));
        }
        let v = client(&a.source.config, Role::Auditor)?.get("/v1/audit/checkpoints", &q).await?;
        serde_json::from_value(v["checkpoints"].clone())
            .context("the node sent checkpoints this build cannot read")?
    };
    if let Some(p) = &a.out {
        let mut text = String::new();
        for cp in &cps {
            text.push_str(&serde_json::to_string(cp)?);
            text.push('\n');
        }
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("{} checkpoints written to {}", cps.len(), p.display());
    } else if a.json {
        for cp in &cps {
            println!("{}", serde_json::to_string(cp)?);
        }
    } else {
        println!("{:<6} {:>9} {:<24} HEAD", "MEMBER", "SEQ", "SIGNED");
        for cp in &cps {
            println!("{:<6} {:>9} {:<24} {}", cp.member, cp.seq, crate::audit::rfc3339(cp.time_ms), cp.head);
        }
    }
    Ok(())
}

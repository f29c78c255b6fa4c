//! `tamga demo`: a local federation of real nodes on loopback, a realistic day of
//! exchanges, and the proof that every node ends up holding exactly what the files allow.
//!
//! What it does, in order:
//!
//! 1. creates one node per member ([`LocalFederation::create`]: own data directory, own
//!    copy of the example federation's files, demo identity), starts them all through the
//!    same path as `tamga run`, and waits until every node is connected to every other;
//! 2. plays six scenes, each one batch of records per member ingested through the node's
//!    real HTTP API with the operator token: IPR registers, IPR seizures, RMS methods and
//!    seminars, energy movements, RU–KZ enforcement alerts, and confidential records;
//! 3. while it plays, tails every node's audit log and prints one line per `received`,
//!    `withheld`, `rejected` and `digest_mismatch` entry — who gave what to whom under
//!    which agreement, with which fields withheld, or why not — and after each scene waits
//!    until every node holds what the oracle ([`expected_holders`]) says;
//! 4. prints the matrix member × category of what each node holds (own/received), checks
//!    it record by record against the oracle, asks every node for `audit verify`, and
//!    stops the nodes. It fails (exit 1) if any holding differs or any verify fails.
//!
//! The demo decides nothing: it reads what the nodes did (their stores and audit logs)
//! and compares it with what the files say ([`expected_holders`], computed from each
//! member's own files independently of sync). With `--keep DIR` the nodes live under DIR,
//! each node.toml gets a fixed free API port, and the commands printed at the end work
//! against them (the demo test runs every one).
//!
//! | constant                | value | why                                                   |
//! |-------------------------|-------|-------------------------------------------------------|
//! | [`ANTI_ENTROPY_SECS`]   | 1 s   | relays and gaps heal within a scene                   |
//! | [`CONNECT_WITHIN`]      | 20 s  | six nodes dial each other on loopback in under a second |
//! | [`SCENE_WITHIN`]        | 10 s  | a scene converges by push in well under a second      |
//! | [`DEMO_WITHIN`]         | 50 s  | the whole play, whatever happens: under a minute      |
//! | [`POLL`]                | 100 ms| how often the audit logs and holdings are read        |

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tamga_config::Federation;
use tamga_protocol::{Classification, MemberCode, RecordId};

use crate::audit::{Action, AuditEntry, VerifyReport};
use crate::client::Client;
use crate::daemon::Shared;
use crate::identity::Role;
use crate::localfed::{expected_holders, on_free_ports, LocalFederation, EXAMPLE_MEMBERS};
use crate::store::{RecordFilter, Source, StoredRecord};

mod records;
use records::{label, Dates, SCENES};

/// Anti-entropy period of the demo's nodes (seconds).
pub const ANTI_ENTROPY_SECS: u64 = 1;
/// How long the nodes may take to connect to each other.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(20);
/// How long one scene may take to reach what the policies allow.
pub const SCENE_WITHIN: Duration = Duration::from_secs(10);
/// How long the whole play (start to audit verify) may wait in all: scenes that have
/// not converged by then are not waited for, and the checks then fail.
pub const DEMO_WITHIN: Duration = Duration::from_secs(50);
/// How often the audit logs and the holdings are read.
pub const POLL: Duration = Duration::from_millis(100);
/// The members started when `--members` is not given: the six SCO members of 2013.
pub const DEFAULT_MEMBERS: &str = "CN,KG,KZ,RU,TJ,UZ";
/// The categories of the matrix, in column order, with their short column labels.
pub const COLUMNS: [(&str, &str); 6] = [
    ("ipr.protected_mark", "ipr.mark"),
    ("ipr.infringement", "ipr.seizure"),
    ("rms.method", "rms.method"),
    ("rms.event", "rms.event"),
    ("energy.transfer", "energy"),
    ("enforcement.alert", "alert"),
];

/// `tamga demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The members to start, comma-separated, from the example federation (CN, KG, KZ,
    /// RU, TJ, UZ and the observer XS). Example: --members KZ,RU,XS
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_MEMBERS)]
    pub members: Vec<String>,
    /// Create the nodes in DIR (new or empty) and keep their files after the demo, each
    /// node.toml with a fixed API port, to look around with the commands printed at the
    /// end. Example: --keep ./tamga-demo
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Print a JSON summary (matrix, checks, audit verify per node) on stdout; the live
    /// view goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// Run the demo. Ok only if every node holds exactly what the policies allow and every
/// audit log verifies.
pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let members = parse_members(&args.members)?;
    let out = Out::new(args.json);
    let (root, _tmp) = match &args.keep {
        Some(dir) => (prepare_keep(dir)?, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("tamga-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    let names: Vec<&str> = members.iter().map(MemberCode::as_str).collect();
    out.heading(&format!(
        "tamga demo: {} member nodes of the example SCO customs federation on loopback ({})",
        members.len(),
        names.join(", ")
    ));
    out.line(&format!("  data directories under {}", root.display()));
    let (mut fed, api_ports) = start_nodes(&root, &members, args.keep.is_some()).await?;
    // Ctrl-C stops the nodes cleanly (and removes the temporary directory).
    let played = tokio::select! {
        r = play(&fed, &out, started) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; the nodes were stopped")),
    };
    fed.stop_all().await;
    let summary = played?;
    let next = match &args.keep {
        Some(_) => next_commands(&fed, &api_ports),
        None => Vec::new(),
    };
    summary.print(&out, &members);
    if let Some(dir) = &args.keep {
        print_next(&out, &root, dir, &next, &api_ports);
    }
    let elapsed = started.elapsed();
    out.line(&format!("done in {:.1} s", elapsed.as_secs_f64()));
    if args.json {
        let mut v = summary.to_json(&members);
        v["elapsed_secs"] = json!((elapsed.as_secs_f64() * 10.0).round() / 10.0);
        v["kept"] = json!(args.keep.as_ref().map(|_| root.display().to_string()));
        v["next"] = Value::Array(next.iter().map(NextCommand::to_json).collect());
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    summary.verdict()
}

fn parse_members(given: &[String]) -> Result<Vec<MemberCode>> {
    let mut out = BTreeSet::new();
    for m in given.iter().map(|m| m.trim().to_ascii_uppercase()).filter(|m| !m.is_empty()) {
        if !EXAMPLE_MEMBERS.contains(&m.as_str()) {
            bail!(
                "--members: {m} is not a member of the example federation ({})",
                EXAMPLE_MEMBERS.join(", ")
            );
        }
        out.insert(m.parse::<MemberCode>().map_err(|e| anyhow!("--members: {e}"))?);
    }
    if out.len() < 2 {
        bail!("--members: give at least two members, e.g. --members KZ,RU");
    }
    Ok(out.into_iter().collect())
}

/// Create the nodes under `root` (with fixed API ports when `keep`) and start them, on
/// other ports when a chosen one was taken meanwhile ([`on_free_ports`]). When they do not
/// start, what started is stopped and the member directories are removed.
async fn start_nodes(
    root: &Path,
    members: &[MemberCode],
    keep: bool,
) -> Result<(LocalFederation, BTreeMap<MemberCode, u16>)> {
    on_free_ports(|| async move {
        let mut fed = LocalFederation::create(root, members, ANTI_ENTROPY_SECS)
            .with_context(|| format!("creating the nodes in {}", root.display()))?;
        let api_ports = if keep { fix_api_ports(&fed)? } else { BTreeMap::new() };
        if let Err(e) = fed.start_all().await {
            fed.stop_all().await;
            for m in members {
                let dir = root.join(m.as_str());
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
            return Err(e.context("starting the nodes"));
        }
        Ok((fed, api_ports))
    })
    .await
}

/// `--keep DIR`: new or empty, made absolute.
fn prepare_keep(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("--keep {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("--keep {}: the directory is not empty; give a new or empty directory", dir.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(std::fs::canonicalize(dir)?)
}

/// Write a fixed free loopback API port into every node.toml (instead of port 0), so that
/// a later `tamga run` listens where the printed commands will look.
fn fix_api_ports(fed: &LocalFederation) -> Result<BTreeMap<MemberCode, u16>> {
    let free = crate::localfed::free_loopback_ports(fed.nodes.len())?;
    let ports: BTreeMap<MemberCode, u16> = fed.nodes.keys().copied().zip(free).collect();
    for (m, n) in &fed.nodes {
        let text = std::fs::read_to_string(&n.config_path)?;
        let from = "[api]\nlisten = \"127.0.0.1:0\"";
        if !text.contains(from) {
            bail!("{}: no `[api] listen = \"127.0.0.1:0\"` to fix", n.config_path.display());
        }
        let to = format!("[api]\nlisten = \"127.0.0.1:{}\"", ports[m]);
        std::fs::write(&n.config_path, text.replacen(from, &to, 1))?;
    }
    Ok(ports)
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// Where the live view goes (stdout, or stderr under `--json`), and whether in colour
/// (only on a terminal, and never with `NO_COLOR` set).
#[derive(Debug, Clone, Copy)]
struct Out {
    to_stderr: bool,
    color: bool,
}

impl Out {
    fn new(json: bool) -> Out {
        let tty = if json { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
        Out { to_stderr: json, color: tty && std::env::var_os("NO_COLOR").is_none() }
    }

    fn line(&self, s: &str) {
        if self.to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }

    fn paint(&self, sgr: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn heading(&self, s: &str) {
        self.line(&self.paint("1", s));
    }
}

fn short(id: &RecordId) -> String {
    let hex = id.to_hex();
    format!("{}…", &hex[..8.min(hex.len())])
}

// ---------------------------------------------------------------------------------------
// The play
// ---------------------------------------------------------------------------------------

/// The running nodes' shared state, by member.
type Nodes = BTreeMap<MemberCode, Arc<Shared>>;

async fn play(fed: &LocalFederation, out: &Out, started: Instant) -> Result<Summary> {
    let all_within = tokio::time::Instant::from_std(started) + DEMO_WITHIN;
    fed.wait_connected(CONNECT_WITHIN).await?;
    let nodes: Nodes = fed
        .nodes
        .iter()
        .filter_map(|(m, n)| n.node.as_ref().map(|node| (*m, node.shared().clone())))
        .collect();
    let clients: BTreeMap<MemberCode, (Client, Client)> = fed
        .nodes
        .iter()
        .filter_map(|(m, n)| {
            let node = n.node.as_ref()?;
            let base = format!("http://{}", node.api_addr());
            Some((
                *m,
                (
                    Client::with_token(base.clone(), n.tokens.token(Role::Operator)),
                    Client::with_token(base, n.tokens.token(Role::Auditor)),
                ),
            ))
        })
        .collect();
    out.line(&format!(
        "  {} nodes started and connected to each other in {:.1} s (anti-entropy every {ANTI_ENTROPY_SECS} s)",
        nodes.len(),
        started.elapsed().as_secs_f64()
    ));
    let mut tail = Tail::new(&nodes);
    tail.poll(&nodes, out); // skip (but count) start-up entries
    let mut summary = Summary::default();
    let dates = Dates::now();
    for scene in SCENES {
        let mut batches = Vec::new();
        for m in nodes.keys() {
            let records = (scene.records)(m.as_str(), &dates);
            if !records.is_empty() {
                batches.push((*m, records));
            }
        }
        if batches.is_empty() {
            continue;
        }
        out.line("");
        out.heading(&format!("── {}", scene.title));
        out.line(&format!("   {}", scene.note));
        for (m, records) in batches {
            let (operator, _) = clients.get(&m).context("a client per node")?;
            let answer = operator
                .post("/v1/records", &json!({ "records": records }))
                .await
                .with_context(|| format!("ingesting at {m}"))?;
            let ids = answer["ids"].as_array().cloned().unwrap_or_default();
            for (r, id) in records.iter().zip(ids) {
                let id: RecordId =
                    id.as_str().unwrap_or_default().parse().context("the node answered a bad id")?;
                summary.ingested += 1;
                let class = r["classification"].as_str().unwrap_or("");
                out.line(&format!(
                    "{:<14} {class:<17} {:<18} {}  {}",
                    format!("{m} ingests"),
                    r["category"].as_str().unwrap_or(""),
                    short(&id),
                    label(r)
                ));
            }
        }
        let scene_started = Instant::now();
        let deadline = (tokio::time::Instant::now() + SCENE_WITHIN).min(all_within);
        loop {
            tail.poll(&nodes, out);
            let check = Check::now(&nodes)?;
            if check.mismatches.is_empty() {
                out.line(&format!(
                    "   every node now holds what the policies allow ({:.1} s)",
                    scene_started.elapsed().as_secs_f64()
                ));
                break;
            }
            if tokio::time::Instant::now() > deadline {
                out.line(&out.paint(
                    "31",
                    &format!(
                        "   this scene did not reach what the policies allow within {:.1} s",
                        scene_started.elapsed().as_secs_f64()
                    ),
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        tail.poll(&nodes, out);
    }
    // A last look: anything a peer refused after the last scene converged.
    tokio::time::sleep(POLL * 3).await;
    tail.poll(&nodes, out);
    summary.events = std::mem::take(&mut tail.events);
    summary.counts = tail.counts.clone();
    summary.check = Check::now(&nodes)?;
    for (m, (_, auditor)) in &clients {
        let v = auditor.get("/v1/audit/verify", &[]).await.with_context(|| format!("audit verify at {m}"))?;
        let report: VerifyReport =
            serde_json::from_value(v).with_context(|| format!("{m} sent a report this build cannot read"))?;
        summary.verify.insert(*m, report);
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------
// Live view: tailing the audit logs
// ---------------------------------------------------------------------------------------

/// One line of the live view, also kept for the JSON summary.
#[derive(Debug, Clone)]
struct Event {
    time_ms: i64,
    kind: Action,
    /// The node whose log has the entry.
    at: MemberCode,
    /// The other side (sender of a received/rejected projection, peer of a withheld one;
    /// none for "withheld from every party").
    peer: Option<MemberCode>,
    /// The record's origin, when known.
    origin: Option<MemberCode>,
    agreement: String,
    category: String,
    record: Option<RecordId>,
    /// Withheld fields of a received record; the reason of a withheld or rejected one.
    detail: String,
    fields: Vec<String>,
}

impl Event {
    fn render(&self, out: &Out) -> String {
        let id = self.record.as_ref().map(short).unwrap_or_default();
        let peer = self.peer.map_or_else(|| "all".to_owned(), |p| p.to_string());
        let (arrow, detail, sgr) = match self.kind {
            Action::Received => {
                let origin = self.origin.unwrap_or(self.at);
                let arrow = match self.peer {
                    Some(from) if from != origin => format!("{origin} → {} via {from}", self.at),
                    _ => format!("{origin} → {}", self.at),
                };
                let detail = if self.fields.is_empty() {
                    "(nothing withheld)".to_owned()
                } else {
                    format!("({} withheld)", self.fields.join(", "))
                };
                (arrow, detail, "32")
            }
            Action::Withheld => (format!("{} ✗ {peer}", self.at), format!("withheld: {}", self.detail), "33"),
            Action::Rejected => {
                (format!("{peer} ⊘ {}", self.at), format!("rejected by {}: {}", self.at, self.detail), "31")
            }
            _ => (format!("{} ≠ {peer}", self.at), format!("agreement terms differ: {}", self.detail), "31"),
        };
        out.paint(sgr, &format!("{arrow:<14} {:<17} {:<18} {id:<9}  {detail}", self.agreement, self.category))
    }

    fn to_json(&self) -> Value {
        json!({
            "kind": self.kind.as_str(),
            "at": self.at.as_str(),
            "peer": self.peer.map(|p| p.to_string()),
            "origin": self.origin.map(|p| p.to_string()),
            "agreement": self.agreement,
            "category": self.category,
            "record": self.record.map(|r| r.to_hex()),
            "reason": if self.detail.is_empty() { Value::Null } else { json!(self.detail) },
            "withheld_fields": self.fields,
        })
    }
}

/// Reads each node's audit log from where it last stopped.
#[derive(Debug, Default)]
struct Tail {
    next: BTreeMap<MemberCode, u64>,
    events: Vec<Event>,
    /// Entries seen, by action.
    counts: BTreeMap<&'static str, u64>,
}

impl Tail {
    fn new(nodes: &Nodes) -> Tail {
        Tail { next: nodes.keys().map(|m| (*m, 1)).collect(), ..Tail::default() }
    }

    /// Read every new entry of every log; print the interesting ones in time order.
    fn poll(&mut self, nodes: &Nodes, out: &Out) {
        let mut fresh = Vec::new();
        for (m, shared) in nodes {
            let next = self.next.entry(*m).or_insert(1);
            for item in shared.store.audit_entries(*next, u64::MAX) {
                let Ok((seq, _, raw)) = item else { break };
                *next = seq + 1;
                let Ok(e) = serde_json::from_slice::<AuditEntry>(&raw) else { continue };
                *self.counts.entry(e.action.as_str()).or_default() += 1;
                fresh.extend(events_of(*m, &e, nodes));
            }
        }
        fresh.sort_by_key(|e| (e.time_ms, e.at));
        for e in fresh {
            out.line(&e.render(out));
            self.events.push(e);
        }
    }
}

/// The live view's lines for one entry: one per record a `received` entry took in (it
/// lists what one push or pull brought in), one for a withheld, rejected or mismatch one.
fn events_of(at: MemberCode, e: &AuditEntry, nodes: &Nodes) -> Vec<Event> {
    if !matches!(e.action, Action::Received | Action::Withheld | Action::Rejected | Action::DigestMismatch) {
        return Vec::new();
    }
    let ev = event_of(at, e);
    if e.action != Action::Received {
        return vec![ev];
    }
    let taken: Vec<(RecordId, String)> = if e.projections.is_empty() {
        e.record.map(|id| (id, ev.category.clone())).into_iter().collect()
    } else {
        e.projections.iter().map(|p| (p.record, p.category.to_string())).collect()
    };
    taken
        .into_iter()
        .map(|(id, category)| received(at, Event { record: Some(id), category, ..ev.clone() }, nodes))
        .collect()
}

fn event_of(at: MemberCode, e: &AuditEntry) -> Event {
    let agreement = e.agreement.as_ref().map(|a| a.to_string()).unwrap_or_default();
    let category = e.category.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let reason = e.reason.clone().unwrap_or_default();
    let mut ev = Event {
        time_ms: e.time_ms,
        kind: e.action,
        at,
        peer: e.peer,
        origin: None,
        agreement,
        category,
        record: e.record,
        detail: reason.clone(),
        fields: Vec::new(),
    };
    if e.action == Action::Withheld {
        if let Some(rest) = reason.strip_prefix("from every party: ") {
            ev.detail = rest.to_owned();
        }
        ev.origin = Some(at);
    }
    ev
}

/// A received record's line: its origin, and the fields the receiver did not get (those
/// of the origin's whole record that it does not hold).
fn received(at: MemberCode, mut ev: Event, nodes: &Nodes) -> Event {
    let Some(id) = ev.record else { return ev };
    let held = nodes.get(&at).and_then(|s| s.store.record(&id).ok().flatten());
    ev.origin = held.as_ref().map(|r| r.header.origin);
    ev.detail = String::new();
    if let (Some(held), Some(origin)) = (&held, ev.origin.and_then(|o| nodes.get(&o))) {
        if let Ok(Some(whole)) = origin.store.record(&id) {
            ev.fields = whole.body.keys().filter(|k| !held.body.contains_key(*k)).cloned().collect();
        }
    }
    ev
}

// ---------------------------------------------------------------------------------------
// Holdings against the oracle
// ---------------------------------------------------------------------------------------

/// What one node holds that it should not, or lacks.
#[derive(Debug, Clone, Default)]
struct Mismatch {
    missing: Vec<RecordId>,
    extra: Vec<RecordId>,
}

/// Every node's records, the oracle's answer for them, and where they differ.
#[derive(Debug, Default)]
struct Check {
    held: BTreeMap<MemberCode, Vec<StoredRecord>>,
    expected: usize,
    mismatches: BTreeMap<MemberCode, Mismatch>,
}

impl Check {
    fn now(nodes: &Nodes) -> Result<Check> {
        let now = crate::writer::now_ms();
        let feds: BTreeMap<MemberCode, Arc<Federation>> = nodes.iter().map(|(m, s)| (*m, s.fed())).collect();
        let mut held = BTreeMap::new();
        for (m, s) in nodes {
            held.insert(*m, s.store.records(&RecordFilter::default(), usize::MAX)?);
        }
        let mut want: BTreeMap<MemberCode, BTreeSet<RecordId>> =
            nodes.keys().map(|m| (*m, BTreeSet::new())).collect();
        for (m, records) in &held {
            for r in records.iter().filter(|r| r.header.origin == *m && r.source == Source::Local) {
                for holder in expected_holders(&r.header, &feds, now) {
                    want.entry(holder).or_default().insert(r.id);
                }
            }
        }
        let mut mismatches = BTreeMap::new();
        for (m, should) in &want {
            let has: BTreeSet<RecordId> = held.get(m).into_iter().flatten().map(|r| r.id).collect();
            let missing: Vec<RecordId> = should.difference(&has).copied().collect();
            let extra: Vec<RecordId> = has.difference(should).copied().collect();
            if !missing.is_empty() || !extra.is_empty() {
                mismatches.insert(*m, Mismatch { missing, extra });
            }
        }
        Ok(Check { expected: want.values().map(BTreeSet::len).sum(), held, mismatches })
    }
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

/// One cell of the matrix.
#[derive(Debug, Clone, Default)]
struct Cell {
    own: u64,
    received: u64,
    /// Records held by origin (own ones included).
    by_origin: BTreeMap<MemberCode, u64>,
}

#[derive(Debug, Default)]
struct Summary {
    ingested: u64,
    events: Vec<Event>,
    counts: BTreeMap<&'static str, u64>,
    check: Check,
    verify: BTreeMap<MemberCode, VerifyReport>,
}

impl Summary {
    fn matrix(&self) -> BTreeMap<MemberCode, BTreeMap<String, Cell>> {
        let mut out = BTreeMap::new();
        for (m, records) in &self.check.held {
            let row: &mut BTreeMap<String, Cell> = out.entry(*m).or_default();
            for (c, _) in COLUMNS {
                row.insert(c.to_owned(), Cell::default());
            }
            for r in records {
                let cell = row.entry(r.header.category.to_string()).or_default();
                if r.header.origin == *m {
                    cell.own += 1;
                } else {
                    cell.received += 1;
                }
                *cell.by_origin.entry(r.header.origin).or_default() += 1;
            }
        }
        out
    }

    /// Confidential and secret records held by a node other than their origin.
    fn classified_elsewhere(&self) -> Vec<(MemberCode, RecordId)> {
        let mut out = Vec::new();
        for (m, records) in &self.check.held {
            for r in records {
                let classified =
                    matches!(r.header.classification, Classification::Confidential | Classification::Secret);
                if classified && r.header.origin != *m {
                    out.push((*m, r.id));
                }
            }
        }
        out
    }

    fn classified_count(&self) -> usize {
        self.check
            .held
            .iter()
            .flat_map(|(m, rs)| rs.iter().filter(move |r| r.header.origin == *m))
            .filter(|r| {
                matches!(r.header.classification, Classification::Confidential | Classification::Secret)
            })
            .count()
    }

    fn ok(&self) -> bool {
        self.check.mismatches.is_empty()
            && self.classified_elsewhere().is_empty()
            && !self.verify.is_empty()
            && self.verify.values().all(|r| r.ok)
    }

    fn print(&self, out: &Out, members: &[MemberCode]) {
        let count = |a: &str| self.counts.get(a).copied().unwrap_or(0);
        out.line("");
        out.heading("── What flowed");
        out.line(&format!(
            "   {} records ingested; audit entries: {} sent and {} delivered (each one push under one agreement, with a signed receipt per projection), {} received, {} withheld, {} rejected",
            self.ingested,
            count("sent"),
            count("delivered"),
            count("received"),
            count("withheld"),
            count("rejected"),
        ));
        out.line("");
        out.heading("── What each node holds (own/received)");
        let matrix = self.matrix();
        let mut header = format!("   {:<6}", "");
        for (_, label) in COLUMNS {
            header.push_str(&format!(" {label:>11}"));
        }
        out.line(&header);
        for m in members {
            let Some(row) = matrix.get(m) else { continue };
            let mut line = format!("   {:<6}", m.as_str());
            for (c, _) in COLUMNS {
                let cell = row.get(c).cloned().unwrap_or_default();
                line.push_str(&format!(" {:>11}", format!("{}/{}", cell.own, cell.received)));
            }
            out.line(&line);
        }
        let legend: Vec<String> =
            COLUMNS.iter().filter(|(c, l)| c != l).map(|(c, l)| format!("{l} = {c}")).collect();
        out.line(&format!("   ({})", legend.join(", ")));
        out.line("");
        out.heading("── Checks");
        let held: usize = self.check.held.values().map(Vec::len).sum();
        if self.check.mismatches.is_empty() {
            out.line(&format!(
                "   holdings: ok — every node holds exactly what the agreements and policies allow ({held} holdings checked against the files)"
            ));
        } else {
            for (m, mm) in &self.check.mismatches {
                let ids = |v: &[RecordId]| v.iter().map(short).collect::<Vec<_>>().join(" ");
                out.line(&out.paint(
                    "31",
                    &format!(
                        "   holdings: FAILED at {m}: {} missing [{}], {} not allowed [{}]",
                        mm.missing.len(),
                        ids(&mm.missing),
                        mm.extra.len(),
                        ids(&mm.extra)
                    ),
                ));
            }
        }
        let leaked = self.classified_elsewhere();
        if leaked.is_empty() {
            out.line(&format!(
                "   confidential: ok — {} confidential or secret records, each held by its origin only",
                self.classified_count()
            ));
        } else {
            for (m, id) in leaked {
                out.line(&out.paint(
                    "31",
                    &format!("   confidential: FAILED: {m} holds {} of another member", short(&id)),
                ));
            }
        }
        for (m, r) in &self.verify {
            if r.ok {
                out.line(&format!(
                    "   audit verify {m}: ok ({} entries, head {})",
                    r.entries,
                    short(&r.head)
                ));
            } else {
                out.line(&out.paint(
                    "31",
                    &format!(
                        "   audit verify {m}: FAILED at entry {}: {}",
                        r.first_bad.unwrap_or(0),
                        r.error.as_deref().unwrap_or("unknown")
                    ),
                ));
            }
        }
    }

    fn to_json(&self, members: &[MemberCode]) -> Value {
        let matrix = self.matrix();
        let rows: serde_json::Map<String, Value> = matrix
            .iter()
            .map(|(m, row)| {
                let cells: serde_json::Map<String, Value> = row
                    .iter()
                    .map(|(c, cell)| {
                        let by: serde_json::Map<String, Value> =
                            cell.by_origin.iter().map(|(o, n)| (o.to_string(), json!(n))).collect();
                        (c.clone(), json!({ "own": cell.own, "received": cell.received, "by_origin": by }))
                    })
                    .collect();
                (m.to_string(), Value::Object(cells))
            })
            .collect();
        let mismatches: serde_json::Map<String, Value> = self
            .check
            .mismatches
            .iter()
            .map(|(m, mm)| {
                let hex = |v: &[RecordId]| v.iter().map(|r| r.to_hex()).collect::<Vec<_>>();
                (m.to_string(), json!({ "missing": hex(&mm.missing), "extra": hex(&mm.extra) }))
            })
            .collect();
        let verify: serde_json::Map<String, Value> = self
            .verify
            .iter()
            .map(|(m, r)| {
                (
                    m.to_string(),
                    json!({ "ok": r.ok, "entries": r.entries, "first_bad": r.first_bad, "error": r.error }),
                )
            })
            .collect();
        json!({
            "ok": self.ok(),
            "members": members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "categories": COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            "ingested": self.ingested,
            "audit_counts": self.counts,
            "matrix": rows,
            "holdings": {
                "ok": self.check.mismatches.is_empty(),
                "checked": self.check.held.values().map(Vec::len).sum::<usize>(),
                "expected": self.check.expected,
                "mismatches": mismatches,
            },
            "confidential": {
                "ingested": self.classified_count(),
                "held_elsewhere": self.classified_elsewhere().len(),
            },
            "verify": verify,
            "events": self.events.iter().map(Event::to_json).collect::<Vec<_>>(),
        })
    }

    fn verdict(&self) -> Result<()> {
        if self.ok() {
            return Ok(());
        }
        let mut why = Vec::new();
        if !self.check.mismatches.is_empty() {
            let who: Vec<&str> = self.check.mismatches.keys().map(MemberCode::as_str).collect();
            why.push(format!("holdings differ from what the policies allow at {}", who.join(", ")));
        }
        if !self.classified_elsewhere().is_empty() {
            why.push("a confidential record left its node".to_owned());
        }
        let bad: Vec<&str> = self.verify.iter().filter(|(_, r)| !r.ok).map(|(m, _)| m.as_str()).collect();
        if !bad.is_empty() {
            why.push(format!("audit verify failed at {}", bad.join(", ")));
        }
        bail!("the demo federation is not what the policies allow: {}", why.join("; "))
    }
}

// ---------------------------------------------------------------------------------------
// --keep: what to try next
// ---------------------------------------------------------------------------------------

/// A command printed at the end of a `--keep` run.
#[derive(Debug, Clone)]
struct NextCommand {
    /// `tamga run`: a node that keeps running until Ctrl-C.
    runs_node: bool,
    /// Asks the running node (after its `tamga run`).
    needs_running: bool,
    argv: Vec<String>,
}

impl NextCommand {
    fn new(runs_node: bool, needs_running: bool, args: &[&str]) -> NextCommand {
        let mut argv = vec!["tamga".to_owned()];
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        NextCommand { runs_node, needs_running, argv }
    }

    fn text(&self) -> String {
        self.argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    fn to_json(&self) -> Value {
        json!({ "command": self.text(), "argv": self.argv, "runs_node": self.runs_node, "needs_running": self.needs_running })
    }
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn next_commands(fed: &LocalFederation, api_ports: &BTreeMap<MemberCode, u16>) -> Vec<NextCommand> {
    let code = |s: &str| s.parse::<MemberCode>().ok();
    let has = |m: Option<MemberCode>| m.filter(|m| fed.nodes.contains_key(m));
    let first = fed.nodes.keys().next().copied();
    let last = fed.nodes.keys().next_back().copied();
    let (Some(first), Some(last)) = (first, last) else { return Vec::new() };
    // Offline on one node (RU if it ran), online on another (KZ if it ran).
    let a = has(code("RU")).unwrap_or(first);
    let b = has(code("KZ")).filter(|b| *b != a).unwrap_or(if last != a { last } else { first });
    let cfg = |m: MemberCode| fed.nodes[&m].config_path.display().to_string();
    let (ca, cb) = (cfg(a), cfg(b));
    let mut v = vec![
        NextCommand::new(false, false, &["audit", "verify", "--config", &ca, "--offline"]),
        NextCommand::new(
            false,
            false,
            &["audit", "query", "--config", &ca, "--offline", "--action", "withheld"],
        ),
    ];
    let explain_peer = if a.as_str() == "RU" { "TJ".to_owned() } else { b.to_string() };
    let explain_category = if a.as_str() == "RU" { "energy.transfer" } else { "rms.event" };
    v.push(NextCommand::new(
        false,
        false,
        &["policy", "explain", "--config", &ca, "--category", explain_category, "--peer", &explain_peer],
    ));
    if api_ports.contains_key(&b) {
        v.push(NextCommand::new(true, false, &["run", "--config", &cb]));
        v.push(NextCommand::new(false, true, &["records", "list", "--config", &cb]));
        if a.as_str() == "RU" && b.as_str() == "KZ" {
            v.push(NextCommand::new(
                false,
                true,
                &["records", "list", "--config", &cb, "--category", "enforcement.alert", "--origin", "RU"],
            ));
        }
        v.push(NextCommand::new(false, true, &["audit", "query", "--config", &cb, "--action", "received"]));
        v.push(NextCommand::new(false, true, &["audit", "verify", "--config", &cb]));
    }
    v
}

fn print_next(out: &Out, root: &Path, given: &Path, next: &[NextCommand], ports: &BTreeMap<MemberCode, u16>) {
    out.line("");
    out.heading(&format!("── Kept in {}", given.display()));
    out.line(&format!(
        "   The nodes are stopped. Each member's node is in {}/XX/node (node.toml, keys, tokens, store)",
        root.display()
    ));
    out.line(&format!("   and its copy of the federation's files in {}/XX/federation.", root.display()));
    out.line("   On the stopped nodes, try:");
    for c in next.iter().filter(|c| !c.runs_node && !c.needs_running) {
        out.line(&format!("  {}", c.text()));
    }
    if let Some(run) = next.iter().find(|c| c.runs_node) {
        let port = ports
            .iter()
            .find(|(m, _)| run.text().contains(&format!("/{}/node/", m.as_str())))
            .map(|(_, p)| *p);
        out.line(&format!(
            "   Then start a node (its API listens on 127.0.0.1:{}; it runs until Ctrl-C; its peers stay down):",
            port.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ));
        out.line(&format!("  {}", run.text()));
        out.line("   and, in another terminal while it runs:");
        for c in next.iter().filter(|c| c.needs_running) {
            out.line(&format!("  {}", c.text()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_checked() {
        assert!(parse_members(&["RU".into()]).is_err());
        assert!(parse_members(&["RU".into(), "FR".into()]).is_err());
        let m = parse_members(&["ru".into(), "KZ".into(), "RU".into()]).expect("valid");
        assert_eq!(m.iter().map(MemberCode::as_str).collect::<Vec<_>>(), ["KZ", "RU"]);
    }

    fn report(ok: bool) -> VerifyReport {
        serde_json::from_value(json!({
            "ok": ok, "entries": 3, "head": "00".repeat(32), "first_bad": if ok { None } else { Some(2) },
            "error": if ok { None } else { Some("entry 2: its contents do not match its hash") },
        }))
        .expect("a report")
    }

    /// The exit status: ok only with matching holdings, nothing classified elsewhere, and
    /// every log verified; otherwise one line naming what failed where.
    #[test]
    fn verdict_fails_on_any_difference_or_bad_log() {
        let ru: MemberCode = "RU".parse().expect("valid");
        let kz: MemberCode = "KZ".parse().expect("valid");
        let mut s = Summary::default();
        assert!(s.verdict().is_err(), "no verify result is not a success");
        s.verify.insert(ru, report(true));
        s.verify.insert(kz, report(true));
        assert!(s.verdict().is_ok());
        s.check.mismatches.insert(kz, Mismatch { missing: vec![RecordId::of(b"x")], extra: Vec::new() });
        let e = s.verdict().expect_err("a missing record fails").to_string();
        assert!(e.contains("holdings differ") && e.contains("KZ"), "{e}");
        s.check.mismatches.clear();
        s.verify.insert(kz, report(false));
        let e = s.verdict().expect_err("a bad log fails").to_string();
        assert!(e.contains("audit verify failed at KZ"), "{e}");
        let v = s.to_json(&[kz, ru]);
        assert_eq!(v["ok"], false);
        assert_eq!(v["verify"]["KZ"]["first_bad"], 2);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/tmp/a/RU/node/node.toml"), "/tmp/a/RU/node/node.toml");
        assert_eq!(shell_quote("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}

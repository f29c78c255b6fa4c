//! `tamga policy check|diff|explain|reload`: the administrator's commands.
//!
//! `check`, `diff` and `explain --category` work offline on files (a federation directory
//! or the files a `node.toml` names); `diff` with one path, `explain --record` and
//! `reload` ask the running node through its local API (admin token; the record through
//! the operator token). Arguments are parsed into plain data by clap, then each command
//! loads what it needs in one place. The decisions come from `tamga-config` only; this
//! module formats them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tamga_config::check::{self, FileSet, Report};
use tamga_config::{
    ConfigError, ConfigErrors, ErrorKind, Explanation, Federation, NodeConfig, PolicyDiff, SourceFile,
    Sources, StepOutcome, Warning,
};
use tamga_protocol::{AgreementId, CategoryId, Classification, MemberCode, RecordHeader};

use crate::cli::ConfigArg;
use crate::client::{Client, ClientError};
use crate::identity::{Identity, Role, Tokens};
use crate::writer::now_ms;

/// `tamga policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check every file a node would load, offline, and print every error (path:line:column,
    /// with a hint) and every warning. Exit 0 only when there is no error.
    /// Example: tamga policy check deploy/example
    Check(CheckArgs),
    /// What replacing one set of policy files by another would change in practice, for
    /// each member and category. Example: tamga policy diff --config ./ru/node.toml ./edited
    Diff(DiffArgs),
    /// The decision for a record (or a category) and a peer, with every rule that led to
    /// it and its file and line. Example: tamga policy explain --category energy.transfer --peer TJ
    Explain(ExplainArgs),
    /// Make the running node re-read its policy files; if they are invalid it keeps the
    /// policy in force and the errors are printed. Example: tamga policy reload --config ./ru/node.toml
    Reload(ReloadArgs),
}

/// `tamga policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A federation directory (roster.toml, catalog.toml, agreements/, policies/XX.toml)
    /// or a node.toml. Default: the --config file.
    pub path: Option<PathBuf>,
    /// The node's node.toml, when no PATH is given. Example: --config ./ru/node.toml
    #[arg(long, short = 'c', env = "TAMGA_CONFIG", default_value = "node.toml")]
    pub config: PathBuf,
    /// With a directory: check this member's policy only (default: every policy in it).
    /// Example: --member RU
    #[arg(long)]
    pub member: Option<String>,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tamga policy diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// OLD NEW, each a federation directory or a node.toml; or only NEW, compared with
    /// the policy in force in the running node (--config).
    #[arg(num_args = 1..=2, required = true, value_names = ["OLD", "NEW"])]
    pub paths: Vec<PathBuf>,
    /// The node's node.toml, and the token to call it with.
    #[command(flatten)]
    pub node: ConfigArg,
    /// Whose policy (default: the node's member; for two directories, every member with a
    /// policy in NEW). Example: --member RU
    #[arg(long)]
    pub member: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tamga policy explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A record of the running node (64 hex characters). Example: --record 9c1f…
    #[arg(long, required_unless_present = "category", conflicts_with = "category")]
    pub record: Option<String>,
    /// A category, for a record of it created now (offline). Example: --category energy.transfer
    #[arg(long)]
    pub category: Option<String>,
    /// The receiving member. Example: --peer KZ
    #[arg(long)]
    pub peer: String,
    /// With --category: the classification (default: public and non_confidential).
    #[arg(long, requires = "category")]
    pub classification: Option<String>,
    /// Only this agreement (default: every agreement that covers the category).
    #[arg(long)]
    pub agreement: Option<String>,
    /// With --category: a federation directory instead of the files node.toml names.
    #[arg(long, requires = "category")]
    pub dir: Option<PathBuf>,
    /// With --dir: whose policy. Example: --member RU
    #[arg(long)]
    pub member: Option<String>,
    /// The node's node.toml, and the token to call it with.
    #[command(flatten)]
    pub node: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tamga policy reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The node's node.toml, and the token to call it with.
    #[command(flatten)]
    pub node: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run a `tamga policy` command.
pub async fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Check(a) => check_cmd(a),
        PolicyCmd::Diff(a) => diff_cmd(a).await,
        PolicyCmd::Explain(a) => explain_cmd(a).await,
        PolicyCmd::Reload(a) => reload_cmd(a).await,
    }
}

// ---- shared helpers ------------------------------------------------------------------

fn member(s: &str) -> Result<MemberCode> {
    s.parse().map_err(|e| anyhow!("{s:?} is not a member code: {e}"))
}

fn node_config(path: &Path) -> Result<NodeConfig> {
    NodeConfig::load(path).map_err(|e| anyhow!("{e}"))
}

/// An error as `check` and `reload` print it: `path:line:col: error: message`, and the
/// hint on the next line.
pub fn error_text(e: &ConfigError) -> String {
    let at = if e.line == 0 {
        e.path.display().to_string()
    } else {
        format!("{}:{}:{}", e.path.display(), e.line, e.col)
    };
    match &e.hint {
        Some(h) => format!("{at}: error: {}\n  hint: {h}", e.message),
        None => format!("{at}: error: {}", e.message),
    }
}

fn snake(kind: ErrorKind) -> String {
    let mut out = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// An error as JSON (`kind` in snake_case).
pub fn error_json(e: &ConfigError) -> Value {
    json!({
        "kind": snake(e.kind),
        "path": e.path.display().to_string(),
        "line": e.line,
        "col": e.col,
        "message": e.message,
        "hint": e.hint,
    })
}

fn warning_json(w: &Warning) -> Value {
    json!({
        "kind": w.kind.as_str(),
        "path": w.path.display().to_string(),
        "line": w.line,
        "col": w.col,
        "message": w.message,
        "hint": w.hint,
    })
}

fn short(d: &tamga_protocol::Digest) -> String {
    d.to_hex().chars().take(16).collect()
}

fn invalid(what: &str, errors: &ConfigErrors) -> anyhow::Error {
    for e in errors.iter() {
        println!("{}", error_text(e));
    }
    anyhow!(
        "{what} has {} error{}; nothing to compare (`tamga policy check` lists them)",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    )
}

// ---- check ---------------------------------------------------------------------------

/// The check of the files `node.toml` names, and of the node's own identity and tokens:
/// everything `tamga run` would load.
pub fn check_node(path: &Path, now: i64) -> Report {
    let cfg = match NodeConfig::load(path) {
        Ok(c) => c,
        Err(errs) => {
            let mut r = Report::default();
            r.add_errors(errs);
            return r;
        }
    };
    let mut r = check::check(&[FileSet::of_node(&cfg)], now);
    let whole =
        |path: &Path, e: &dyn std::fmt::Display| ConfigError::whole_file(ErrorKind::Io, path, e.to_string());
    if let Err(e) = Tokens::load(&cfg.tokens) {
        r.add_errors([whole(&cfg.tokens, &e)]);
    }
    match Identity::load(&cfg.identity) {
        Err(e) => r.add_errors([whole(&cfg.identity, &e)]),
        Ok(id) if r.ok() => {
            if let Ok(fed) = Federation::load(&cfg) {
                if let Err(e) = fed.roster.check_lists(cfg.member, &id.peer_id()) {
                    r.add_errors([e]);
                }
            }
        }
        Ok(_) => {}
    }
    r
}

fn check_cmd(a: CheckArgs) -> Result<()> {
    let now = now_ms();
    let only = a.member.as_deref().map(member).transpose()?;
    let target = a.path.clone().unwrap_or_else(|| a.config.clone());
    let report =
        if target.is_dir() { check::check_dir(&target, only, now) } else { check_node(&target, now) };
    if a.json {
        let v = json!({
            "ok": report.ok(),
            "errors": report.errors.iter().map(error_json).collect::<Vec<_>>(),
            "warnings": report.warnings.iter().map(warning_json).collect::<Vec<_>>(),
            "checked": report.checked.iter().map(|c| json!({
                "member": c.member.as_str(),
                "policy": c.policy.display().to_string(),
                "digest": c.digest.map(|d| d.to_hex()),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for e in &report.errors {
            println!("{}", error_text(e));
        }
        for w in &report.warnings {
            println!("{w}");
        }
        for c in &report.checked {
            match c.digest {
                Some(d) => println!("{}: {} ok, policy digest {}", c.member, c.policy.display(), short(&d)),
                None => println!("{}: {} not loadable", c.member, c.policy.display()),
            }
        }
        let (ne, nw) = (report.errors.len(), report.warnings.len());
        println!(
            "{ne} error{}, {nw} warning{}",
            if ne == 1 { "" } else { "s" },
            if nw == 1 { "" } else { "s" }
        );
    }
    if !report.ok() {
        bail!("the files are invalid: a node would refuse them (and keep its policy in force on reload)");
    }
    if a.deny_warnings && !report.warnings.is_empty() {
        bail!("warnings, and --deny-warnings");
    }
    Ok(())
}

// ---- diff ----------------------------------------------------------------------------

/// One side of a diff.
enum Side {
    /// A federation directory.
    Dir(PathBuf),
    /// The files a node.toml names.
    Node(NodeConfig),
    /// The policy in force in the running node.
    Running(NodeConfig, Option<PathBuf>),
}

impl Side {
    fn of(path: &Path) -> Result<Side> {
        if path.is_dir() {
            Ok(Side::Dir(path.to_owned()))
        } else if path.is_file() {
            Ok(Side::Node(node_config(path)?))
        } else {
            bail!("{} is neither a federation directory nor a node.toml", path.display())
        }
    }

    fn member(&self) -> Option<MemberCode> {
        match self {
            Side::Dir(_) => None,
            Side::Node(c) | Side::Running(c, _) => Some(c.member),
        }
    }

    fn name(&self) -> String {
        match self {
            Side::Dir(d) => d.display().to_string(),
            Side::Node(c) => c.path.display().to_string(),
            Side::Running(c, _) => format!("the policy in force in the node of {}", c.path.display()),
        }
    }

    async fn load(&self, m: MemberCode) -> Result<Federation> {
        let loaded = match self {
            Side::Dir(d) => {
                let f = FileSet::in_dir(&check::FederationDir::new(d), m);
                Federation::load_files(&f.roster, &f.catalog, &f.agreements, &f.policy, m)
            }
            Side::Node(c) => Federation::load(c),
            Side::Running(c, token_file) => {
                let v =
                    Client::for_role(c, Role::Admin, token_file.as_deref())?.get("/v1/policy", &[]).await?;
                Federation::from_sources(&sources_of(&v)?, m)
            }
        };
        loaded.map_err(|e| invalid(&self.name(), &e))
    }
}

/// The texts of a policy in force, from `GET /v1/policy`.
fn sources_of(v: &Value) -> Result<Sources> {
    let (mut roster, mut catalog, mut policy, mut agreements) = (None, None, None, Vec::new());
    for f in v["files"].as_array().into_iter().flatten() {
        let src = SourceFile::new(
            f["path"].as_str().unwrap_or_default(),
            f["text"].as_str().context("the node sent a file without its text")?,
        );
        match f["role"].as_str() {
            Some("roster") => roster = Some(src),
            Some("catalog") => catalog = Some(src),
            Some("policy") => policy = Some(src),
            Some("agreement") => agreements.push(src),
            _ => {}
        }
    }
    match (roster, catalog, policy) {
        (Some(roster), Some(catalog), Some(policy)) => Ok(Sources { roster, catalog, agreements, policy }),
        _ => bail!("the node did not send every file of the policy in force"),
    }
}

async fn diff_cmd(a: DiffArgs) -> Result<()> {
    let (old, new) = match a.paths.as_slice() {
        [new] => (Side::Running(node_config(&a.node.config)?, a.node.token_file.clone()), Side::of(new)?),
        [old, new] => (Side::of(old)?, Side::of(new)?),
        _ => bail!("give NEW, or OLD and NEW"),
    };
    let members: Vec<MemberCode> = match (a.member.as_deref(), old.member().or(new.member())) {
        (Some(m), _) => vec![member(m)?],
        (None, Some(m)) => vec![m],
        (None, None) => match &new {
            Side::Dir(d) => check::FederationDir::new(d)
                .policies()
                .map_err(|e| anyhow!("{}", error_text(&e)))?
                .into_iter()
                .map(|(m, _)| m)
                .collect(),
            _ => bail!("give --member"),
        },
    };
    let now = now_ms();
    let mut diffs: Vec<PolicyDiff> = Vec::new();
    for m in members {
        let (o, n) = (old.load(m).await?, new.load(m).await?);
        diffs.push(tamga_config::diff(&o, &n, now));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "diffs": diffs }))?);
    } else {
        for (i, d) in diffs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{d}");
        }
    }
    Ok(())
}

// ---- explain -------------------------------------------------------------------------

fn parse_time(field: &str, v: &Value) -> Result<Option<i64>> {
    match v.as_str() {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|e| anyhow!("the node sent a bad `{field}` {s:?}: {e}")),
    }
}

/// A record's header from `GET /v1/records/{id}`.
fn header_of(v: &Value) -> Result<RecordHeader> {
    let r = &v["record"];
    let text = |k: &str| r[k].as_str().with_context(|| format!("the node's answer has no `{k}`"));
    Ok(RecordHeader {
        category: text("category")?.parse().map_err(|e| anyhow!("category: {e}"))?,
        classification: serde_json::from_value(r["classification"].clone()).context("classification")?,
        origin: text("origin")?.parse().map_err(|e| anyhow!("origin: {e}"))?,
        created_ms: parse_time("created", &r["created"])?.context("the node's answer has no `created`")?,
        supersedes: r["supersedes"]
            .as_str()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow!("supersedes: {e}"))?,
        expires_ms: parse_time("expires", &r["expires"])?,
    })
}

fn outcome_str(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Pass => "pass",
        StepOutcome::Fail => "fail",
        StepOutcome::Skip => "skip",
        StepOutcome::Note => "note",
    }
}

fn explanation_json(agreement: &AgreementId, class: Classification, e: &Explanation) -> Value {
    json!({
        "agreement": agreement.as_str(),
        "classification": class,
        "decision": if e.decision.is_allow() { "allow" } else { "deny" },
        "reason": e.decision.reason().map(|r| r.as_str()),
        "withheld": e.decision.withheld().map(|w| w.iter().collect::<Vec<_>>()),
        "steps": e.steps.iter().map(|s| json!({
            "outcome": outcome_str(s.outcome),
            "text": s.text,
            "at": s.at.as_ref().map(|(p, l)| format!("{}:{l}", p.display())),
        })).collect::<Vec<_>>(),
    })
}

async fn explain_cmd(a: ExplainArgs) -> Result<()> {
    let peer = member(&a.peer)?;
    let only: Option<AgreementId> =
        a.agreement.as_deref().map(str::parse).transpose().map_err(|e| anyhow!("--agreement: {e}"))?;
    let now = now_ms();
    let mut note = None;
    let (fed, headers, record) = if let Some(id) = &a.record {
        let cfg = node_config(&a.node.config)?;
        let v = Client::for_role(&cfg, Role::Operator, a.node.token_file.as_deref())?
            .get(&format!("/v1/records/{id}"), &[])
            .await?;
        let header = header_of(&v)?;
        let fed = match Client::for_role(&cfg, Role::Admin, a.node.token_file.as_deref())?.get("/v1/policy", &[]).await {
            Ok(p) => Federation::from_sources(&sources_of(&p)?, cfg.member),
            Err(ClientError::Api { status, .. }) if status.as_u16() == 503 => {
                note = Some("the node does not know the texts of its policy in force; explained with the files on disk");
                Federation::load(&cfg)
            }
            Err(e) => return Err(e.into()),
        }
        .map_err(|e| invalid("the policy in force", &e))?;
        (fed, vec![header], Some(v["record"]["id"].as_str().unwrap_or(id).to_owned()))
    } else {
        let category: CategoryId = a
            .category
            .as_deref()
            .context("give --record or --category")?
            .parse()
            .map_err(|e| anyhow!("--category: {e}"))?;
        let fed = match &a.dir {
            Some(dir) => {
                let m = member(a.member.as_deref().context("with --dir, give --member")?)?;
                let f = FileSet::in_dir(&check::FederationDir::new(dir), m);
                Federation::load_files(&f.roster, &f.catalog, &f.agreements, &f.policy, m)
            }
            None => Federation::load(&node_config(&a.node.config)?),
        }
        .map_err(|e| invalid("the policy files", &e))?;
        if fed.catalog.category(&category).is_none() {
            bail!("category {category} is not in the catalog {}", fed.catalog.path().display());
        }
        let classes = match &a.classification {
            Some(c) => vec![c.parse::<Classification>().map_err(|e| anyhow!("--classification: {e}"))?],
            None => vec![Classification::Public, Classification::NonConfidential],
        };
        let headers = classes
            .into_iter()
            .map(|classification| RecordHeader {
                category: category.clone(),
                classification,
                origin: fed.me,
                created_ms: now,
                supersedes: None,
                expires_ms: None,
            })
            .collect();
        (fed, headers, None)
    };

    let mut out = Vec::new();
    for h in &headers {
        for agreement in fed.agreements_for(&h.category).filter(|x| only.as_ref().is_none_or(|o| *o == x.id))
        {
            out.push((agreement, h.classification, tamga_config::explain(h, agreement, peer, &fed, now)));
        }
    }
    let first = headers.first().context("nothing to explain")?;
    if a.json {
        let v = json!({
            "member": fed.me.as_str(),
            "peer": peer.as_str(),
            "policy_digest": fed.policy_digest.to_hex(),
            "record": record,
            "category": first.category.as_str(),
            "origin": first.origin.as_str(),
            "created": crate::audit::rfc3339(first.created_ms),
            "explanations": out.iter().map(|(ag, c, e)| explanation_json(&ag.id, *c, e)).collect::<Vec<_>>(),
            "note": note,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(n) = note {
        println!("note: {n}");
    }
    match &record {
        Some(id) => println!(
            "record {id}: {} {}, origin {}, created {}; to {peer}; policy {} of {}",
            first.classification,
            first.category,
            first.origin,
            crate::audit::rfc3339(first.created_ms),
            short(&fed.policy_digest),
            fed.me
        ),
        None => println!(
            "a {} record of {} created now; to {peer}; policy {} of {}",
            first.category,
            fed.me,
            short(&fed.policy_digest),
            fed.me
        ),
    }
    if out.is_empty() {
        match &only {
            Some(o) => {
                println!("agreement {o} does not cover {}: nothing is shared under it", first.category)
            }
            None => println!("no agreement covers {}: it is never shared (default deny)", first.category),
        }
    }
    for (agreement, class, e) in &out {
        let label = if headers.len() > 1 { format!(" ({class})") } else { String::new() };
        print!("under {} ({}:{}){label}: {e}", agreement.id, agreement.path.display(), agreement.line);
    }
    Ok(())
}

// ---- reload --------------------------------------------------------------------------

async fn reload_cmd(a: ReloadArgs) -> Result<()> {
    let c = Client::for_role(&node_config(&a.node.config)?, Role::Admin, a.node.token_file.as_deref())?;
    match c.post("/v1/policy/reload", &json!({})).await {
        Ok(v) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v["outcome"] == "loaded" {
                let files: Vec<String> = v["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect();
                println!(
                    "loaded: policy {} is in force from the next decision (was {}); changed: {}",
                    v["digest"].as_str().unwrap_or("?"),
                    v["previous"].as_str().unwrap_or("?"),
                    if files.is_empty() { "none".to_owned() } else { files.join(", ") }
                );
            } else {
                println!(
                    "unchanged: the files give the policy already in force ({})",
                    v["digest"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Err(ClientError::Api { status, message, details }) if status.as_u16() == 422 => {
            let details = details.unwrap_or(Value::Null);
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"outcome": "refused", "error": message, "details": details})
                    )?
                );
            } else {
                for d in details.as_array().into_iter().flatten() {
                    let at = match (d["line"].as_u64(), d["col"].as_u64()) {
                        (Some(l), Some(c)) if l > 0 => {
                            format!("{}:{l}:{c}", d["path"].as_str().unwrap_or("?"))
                        }
                        _ => d["path"].as_str().unwrap_or("?").to_owned(),
                    };
                    println!("{at}: error: {}", d["message"].as_str().unwrap_or("?"));
                    if let Some(h) = d["hint"].as_str() {
                        println!("  hint: {h}");
                    }
                }
            }
            bail!("{message}")
        }
        Err(e) => Err(e.into()),
    }
}

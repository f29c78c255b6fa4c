//! `tamga policy check`: every error of a set of files (see [`crate::error`]) and, on
//! top, **warnings** — things that load fine but are most likely mistakes.
//!
//! This module owns the warning kinds ([`WarningKind`]) and the analysis behind each
//! ([`warnings`], pure: the caller passes `now_ms`), the layout of a federation directory
//! ([`FederationDir`]: `roster.toml`, `catalog.toml`, `agreements/`, and `policies/XX.toml`
//! or `policy.toml`), and checking several members' policies over the same files at once
//! ([`check`]), each problem reported once. Errors stop a load; warnings never do. It
//! reads files only in [`check`] and [`FederationDir::policies`], and decides nothing
//! about records.
//!
//! | kind                        | where                 | what it means                                        |
//! |-----------------------------|-----------------------|------------------------------------------------------|
//! | `category_in_no_agreement`  | catalog category      | records of the category can never be shared          |
//! | `agreement_ended`           | `effective_until`     | nothing is shared under it any more                  |
//! | `member_in_no_agreement`    | roster member         | nothing can ever be shared with or by it             |
//! | `not_in_roster`             | `policies/XX.toml`    | a policy for a member the roster does not list       |
//! | `rule_never_matches`        | `[[share]]`/`[[accept]]` | the rule can never allow anything                 |
//!
//! A member that an agreement or a policy names but the roster does not list is an
//! *error* (`UnknownMember`), not a warning: such a file would not load. A policy file in a
//! federation directory for a member the roster does not list is only a warning when the
//! whole directory is checked (no member's node would load it).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use tamga_protocol::{CategoryId, Digest, MemberCode};

use crate::error::{ConfigError, ErrorKind, SourceFile};
use crate::federation::Federation;
use crate::policy::Members;

/// What kind of likely mistake a [`Warning`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningKind {
    /// A catalog category that no agreement covers: its records are never shared.
    CategoryInNoAgreement,
    /// An agreement whose end date has passed: nothing is shared under it.
    AgreementEnded,
    /// A roster member that is a party to no agreement.
    MemberInNoAgreement,
    /// A policy file in a federation directory for a member the roster does not list.
    NotInRoster,
    /// A share or accept rule that can never allow anything.
    RuleNeverMatches,
    /// A rule that names a category its agreement does not cover, or a member that is not
    /// its party: that part of the rule does nothing.
    OutsideAgreement,
}

impl WarningKind {
    /// Every kind.
    pub const ALL: [WarningKind; 6] = [
        WarningKind::CategoryInNoAgreement,
        WarningKind::AgreementEnded,
        WarningKind::MemberInNoAgreement,
        WarningKind::NotInRoster,
        WarningKind::RuleNeverMatches,
        WarningKind::OutsideAgreement,
    ];

    /// A stable snake_case name (JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::CategoryInNoAgreement => "category_in_no_agreement",
            WarningKind::AgreementEnded => "agreement_ended",
            WarningKind::MemberInNoAgreement => "member_in_no_agreement",
            WarningKind::NotInRoster => "not_in_roster",
            WarningKind::RuleNeverMatches => "rule_never_matches",
            WarningKind::OutsideAgreement => "outside_agreement",
        }
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something legal but most likely a mistake, at a file, line and column. Shown as
/// `path:line:col: warning: message`, and `  hint: …` on the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// The file.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
    /// What is likely wrong, naming the item.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Warning {
    fn new(
        kind: WarningKind,
        path: &Path,
        line: usize,
        col: usize,
        message: String,
        hint: String,
    ) -> Warning {
        Warning { kind, path: path.to_path_buf(), line, col, message, hint: Some(hint) }
    }

    fn key(&self) -> (&Path, usize, usize, &str) {
        (&self.path, self.line, self.col, &self.message)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: warning: {}", self.path.display(), self.line, self.col, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The warnings about a loaded federation at `now_ms`, sorted by file, line and column.
pub fn warnings(fed: &Federation, now_ms: i64) -> Vec<Warning> {
    let mut out = Vec::new();
    let policy = &fed.policy;

    for c in fed.catalog.categories() {
        if fed.agreements_for(&c.id).next().is_none() {
            out.push(Warning::new(
                WarningKind::CategoryInNoAgreement,
                fed.catalog.path(),
                c.line,
                1,
                format!("category {} is covered by no agreement: its records are never shared", c.id),
                "add it to the `categories` of the agreement it is exchanged under, or remove it from the catalog"
                    .to_owned(),
            ));
        }
    }

    for a in fed.agreements.values() {
        let (Some(until), Some(until_ms)) = (a.effective_until, a.effective_until_ms()) else {
            continue;
        };
        if now_ms < until_ms {
            continue;
        }
        let pos = a.until_pos.unwrap_or(crate::error::Pos { line: a.line, col: 1 });
        let rules: Vec<String> = policy
            .share
            .iter()
            .filter(|r| r.agreement == a.id)
            .map(|r| format!("{}:{}", policy.path.display(), r.line))
            .collect();
        let mut hint = "if the parties renewed it, move `effective_until`; otherwise remove the file and the rules that name it".to_owned();
        if !rules.is_empty() {
            hint.push_str(&format!("; share rules that name it: {}", rules.join(", ")));
        }
        out.push(Warning::new(
            WarningKind::AgreementEnded,
            &a.path,
            pos.line,
            pos.col,
            format!("agreement {} ended on {until}: nothing is shared under it any more", a.id),
            hint,
        ));
    }

    for m in fed.roster.members() {
        if !fed.agreements.values().any(|a| a.is_party(m.code)) {
            out.push(Warning::new(
                WarningKind::MemberInNoAgreement,
                fed.roster.path(),
                m.line,
                1,
                format!(
                    "member {} is a party to no agreement: nothing can be shared with it or by it",
                    m.code
                ),
                "add it to the `parties` of the agreements it signed, or remove it from the roster"
                    .to_owned(),
            ));
        }
    }

    let me = fed.me;
    outside_agreements(fed, &mut out);
    for rule in &policy.share {
        let Some(a) = fed.agreement(&rule.agreement) else { continue };
        if !a.is_party(me) {
            continue; // Reported by `outside_agreements`.
        }
        if a.effective_until_ms().is_some_and(|u| now_ms >= u) {
            // Reported once, on the agreement.
            continue;
        }
        let targets: Vec<MemberCode> =
            a.parties.iter().copied().filter(|&p| p != me && rule.to.contains(p)).collect();
        let categories: Vec<&CategoryId> = match &rule.categories {
            Some(cs) => cs.iter().filter(|c| a.covers(c)).collect(),
            None => a.categories.iter().collect(),
        };
        let paused_by = |cat: &CategoryId, peer: MemberCode| -> Vec<usize> {
            policy
                .share
                .iter()
                .filter(|r| r.covers(&a.id, cat) && r.except.contains(&peer))
                .map(|r| r.line)
                .collect()
        };
        if targets.is_empty() && matches!(&rule.to, Members::Only(to) if to.iter().any(|&m| m != me)) {
            continue; // It names others, who are not parties: reported by `outside_agreements`.
        }
        let message = if targets.is_empty() {
            format!("share rule under {} shares only to {me} itself: it can never send anything", a.id)
        } else {
            let live = categories.iter().any(|&c| targets.iter().any(|&p| paused_by(c, p).is_empty()));
            if live {
                continue;
            }
            let lines: BTreeSet<usize> =
                categories.iter().flat_map(|&c| targets.iter().flat_map(move |&p| paused_by(c, p))).collect();
            let rules = if lines.len() == 1 { "the rule at line" } else { "the rules at lines" };
            format!(
                "share rule under {} can never send anything: every member it shares to ({}) is paused by `except` in {rules} {}",
                a.id,
                join(&targets),
                join(lines)
            )
        };
        out.push(Warning::new(
            WarningKind::RuleNeverMatches,
            &policy.path,
            rule.line,
            1,
            message,
            "a pause in any rule for the same agreement and category wins; name in `to` someone who is not paused, or remove the rule"
                .to_owned(),
        ));
    }
    for rule in &policy.accept {
        if let Members::Only(from) = &rule.from {
            if !from.is_empty() && from.iter().all(|&m| m == me) {
                out.push(Warning::new(
                    WarningKind::RuleNeverMatches,
                    &policy.path,
                    rule.line,
                    1,
                    format!(
                        "accept rule under {} takes only {me}'s own records, which never come in from a peer",
                        rule.agreement
                    ),
                    "`from` names the origins whose records are accepted; name other parties, or write [\"*\"]"
                        .to_owned(),
                ));
            }
        }
    }
    sort_warnings(&mut out);
    out
}

/// The rules that name what their agreement does not: the agreement itself (no file
/// defines it, or this member is not its party), a category it does not cover, a member
/// who is not its party. Legal, as each can only narrow what is shared (see
/// `federation::check_rule`), and most likely left behind by a change of the agreement.
fn outside_agreements(fed: &Federation, out: &mut Vec<Warning>) {
    let policy = &fed.policy;
    let me = fed.me;
    let share = policy.share.iter().map(|r| {
        let mut named: Vec<MemberCode> = r.except.clone();
        if let Members::Only(to) = &r.to {
            named.extend(to.iter().copied());
        }
        ("share", &r.agreement, r.categories.as_ref(), named, r.line)
    });
    let accept = policy.accept.iter().map(|r| {
        let named = match &r.from {
            Members::Only(from) => from.clone(),
            Members::All => Vec::new(),
        };
        ("accept", &r.agreement, r.categories.as_ref(), named, r.line)
    });
    for (kind, id, categories, named, line) in share.chain(accept) {
        let warn = |kind_of: WarningKind, message: String, hint: String| {
            Warning::new(kind_of, &policy.path, line, 1, message, hint)
        };
        let Some(a) = fed.agreement(id) else {
            out.push(warn(
                WarningKind::RuleNeverMatches,
                format!("{kind} rule under {id}: no agreement file defines {id}, so it matches nothing"),
                format!("agreements: {}; remove the rule if {id} was withdrawn", join(fed.agreements.keys())),
            ));
            continue;
        };
        let parties = || format!("parties to {id}: {}", join(a.parties.iter()));
        if !a.is_party(me) {
            out.push(warn(
                WarningKind::RuleNeverMatches,
                format!("{kind} rule under {id}: {me} is not a party to {id}, so it matches nothing"),
                format!("{}; remove the rule if {me} left the agreement", parties()),
            ));
            continue;
        }
        for c in categories.into_iter().flatten().filter(|c| !a.covers(c)) {
            out.push(warn(
                WarningKind::OutsideAgreement,
                format!("{kind} rule under {id} names category {c}, which {id} does not cover"),
                format!("{id} covers: {}", join(a.categories.iter())),
            ));
        }
        let mut outside: Vec<MemberCode> = named.into_iter().filter(|&m| !a.is_party(m)).collect();
        outside.sort();
        outside.dedup();
        if !outside.is_empty() {
            out.push(warn(
                WarningKind::OutsideAgreement,
                format!("{kind} rule under {id} names {}, not a party to {id}", join(&outside)),
                format!("{}; nothing is shared with or taken from a member that is not", parties()),
            ));
        }
    }
}

fn sort_warnings(w: &mut Vec<Warning>) {
    w.sort_by(|a, b| a.key().cmp(&b.key()));
    w.dedup_by(|a, b| a.key() == b.key());
}

fn sort_errors(e: &mut Vec<ConfigError>) {
    let key = |e: &ConfigError| (e.path.clone(), e.line, e.col, e.message.clone());
    e.sort_by_key(key);
    e.dedup_by(|a, b| key(a) == key(b));
}

/// The files of a federation directory, as `tamga init --federation` lays them out:
/// `roster.toml`, `catalog.toml`, `agreements/*.toml`, and each member's policy in
/// `policies/XX.toml` (or a single `policy.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationDir {
    /// The directory.
    pub dir: PathBuf,
    /// `roster.toml`.
    pub roster: PathBuf,
    /// `catalog.toml`.
    pub catalog: PathBuf,
    /// `agreements/`.
    pub agreements: PathBuf,
}

impl FederationDir {
    /// The layout of `dir` (nothing is read).
    pub fn new(dir: &Path) -> FederationDir {
        FederationDir {
            dir: dir.to_path_buf(),
            roster: dir.join("roster.toml"),
            catalog: dir.join("catalog.toml"),
            agreements: dir.join("agreements"),
        }
    }

    /// The policy file of `member`: `policies/XX.toml` if it exists, else `policy.toml`.
    pub fn policy_of(&self, member: MemberCode) -> PathBuf {
        let per_member = self.dir.join("policies").join(format!("{member}.toml"));
        if per_member.exists() {
            per_member
        } else {
            self.dir.join("policy.toml")
        }
    }

    /// Every policy in the directory with its member: `policies/XX.toml` for each file
    /// named after a member code, or else `policy.toml` with the member it names.
    pub fn policies(&self) -> Result<Vec<(MemberCode, PathBuf)>, ConfigError> {
        let dir = self.dir.join("policies");
        let mut out = Vec::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|e| crate::error::io_error(&dir, &e))?;
            for entry in entries {
                let path = entry.map_err(|e| crate::error::io_error(&dir, &e))?.path();
                let code = path
                    .extension()
                    .filter(|x| *x == "toml")
                    .and(path.file_stem())
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<MemberCode>().ok());
                if let Some(code) = code {
                    out.push((code, path));
                }
            }
            out.sort();
        }
        if out.is_empty() {
            let single = self.dir.join("policy.toml");
            let src = SourceFile::read(&single)?;
            let member = toml::from_str::<toml::Table>(src.text())
                .ok()
                .and_then(|t| t.get("member").and_then(|m| m.as_str()).and_then(|m| m.parse().ok()));
            match member {
                Some(m) => out.push((m, single)),
                None => {
                    return Err(ConfigError::whole_file(
                        ErrorKind::MissingKey,
                        &single,
                        "cannot tell whose policy this is (no valid `member`)",
                    )
                    .with_hint("give the member with --member"))
                }
            }
        }
        Ok(out)
    }
}

/// The files one node loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// The member.
    pub member: MemberCode,
    /// `roster.toml`.
    pub roster: PathBuf,
    /// `catalog.toml`.
    pub catalog: PathBuf,
    /// The agreements directory.
    pub agreements: PathBuf,
    /// The member's policy.
    pub policy: PathBuf,
}

impl FileSet {
    /// The files of `member` in a federation directory.
    pub fn in_dir(dir: &FederationDir, member: MemberCode) -> FileSet {
        FileSet {
            member,
            roster: dir.roster.clone(),
            catalog: dir.catalog.clone(),
            agreements: dir.agreements.clone(),
            policy: dir.policy_of(member),
        }
    }

    /// The files a `node.toml` names.
    pub fn of_node(cfg: &crate::NodeConfig) -> FileSet {
        FileSet {
            member: cfg.member,
            roster: cfg.roster.clone(),
            catalog: cfg.catalog.clone(),
            agreements: cfg.agreements.clone(),
            policy: cfg.policy.clone(),
        }
    }
}

/// One member's result in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The member.
    pub member: MemberCode,
    /// Its policy file.
    pub policy: PathBuf,
    /// The policy digest, when everything loaded.
    pub digest: Option<Digest>,
}

/// What [`check`] found: every error and every warning, each once, sorted by file, line
/// and column.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Each member checked.
    pub checked: Vec<Checked>,
    /// Every error.
    pub errors: Vec<ConfigError>,
    /// Every warning.
    pub warnings: Vec<Warning>,
}

impl Report {
    /// Whether there is no error (warnings do not count).
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Add errors found elsewhere (such as in `node.toml`).
    pub fn add_errors(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
        sort_errors(&mut self.errors);
    }

    /// Add warnings found elsewhere.
    pub fn add_warnings(&mut self, warnings: impl IntoIterator<Item = Warning>) {
        self.warnings.extend(warnings);
        sort_warnings(&mut self.warnings);
    }
}

/// Load every set of files, and collect each error and warning once (the roster, catalog
/// and agreements are usually shared by every set).
pub fn check(sets: &[FileSet], now_ms: i64) -> Report {
    let mut report = Report::default();
    for set in sets {
        let loaded =
            Federation::load_files(&set.roster, &set.catalog, &set.agreements, &set.policy, set.member);
        let digest = match loaded {
            Ok(fed) => {
                report.warnings.extend(warnings(&fed, now_ms));
                Some(fed.policy_digest)
            }
            Err(errs) => {
                report.errors.extend(errs);
                None
            }
        };
        report.checked.push(Checked { member: set.member, policy: set.policy.clone(), digest });
    }
    sort_errors(&mut report.errors);
    sort_warnings(&mut report.warnings);
    report
}

/// Check a federation directory: `member`'s policy, or every policy in it. When every
/// policy is checked, a policy for a member the roster does not list is a
/// [`WarningKind::NotInRoster`] warning (no node would load it) and is not checked
/// further.
pub fn check_dir(dir: &Path, member: Option<MemberCode>, now_ms: i64) -> Report {
    let layout = FederationDir::new(dir);
    if let Some(m) = member {
        return check(&[FileSet::in_dir(&layout, m)], now_ms);
    }
    let policies = match layout.policies() {
        Ok(p) => p,
        Err(e) => {
            let mut r = Report::default();
            r.add_errors([e]);
            return r;
        }
    };
    let roster_codes: Option<BTreeSet<MemberCode>> = SourceFile::read(&layout.roster)
        .ok()
        .and_then(|src| crate::roster::parse(&src).0)
        .map(|r| r.codes().collect());
    let mut sets = Vec::new();
    let mut extra = Vec::new();
    for (m, path) in policies {
        if roster_codes.as_ref().is_some_and(|codes| !codes.contains(&m)) {
            let pos = SourceFile::read(&path)
                .ok()
                .and_then(|src| crate::policy::parse(&src).0.and_then(|p| p.member.map(|at| at.pos)))
                .unwrap_or(crate::error::Pos { line: 1, col: 1 });
            extra.push(Warning::new(
                WarningKind::NotInRoster,
                &path,
                pos.line,
                pos.col,
                format!("policy for {m}, a member the roster does not list: no node will load it"),
                format!(
                    "add {m} to {} if it joined, or remove the file; roster members: {}",
                    layout.roster.display(),
                    join(roster_codes.iter().flatten())
                ),
            ));
            continue;
        }
        sets.push(FileSet::in_dir(&layout, m));
    }
    let mut report = check(&sets, now_ms);
    report.add_warnings(extra);
    report
}

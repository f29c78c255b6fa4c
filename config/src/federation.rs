//! The federation as one node sees it: roster, catalog, agreements and local policy,
//! loaded together, checked against each other, and compiled for fast decisions.
//!
//! This module owns loading (from files or from text in memory), every cross-file check
//! (parties in the roster, categories and tags in the catalog, agreement ids unique
//! across files, policy rules within their agreements), and the digests of what is in
//! force. It reports every problem in every file at once; a file that does not parse
//! stops only itself, and checks that depend on it are skipped so that one mistake is
//! reported once. It never reads `node.toml` (see [`crate::node`]) nor decides anything
//! (see [`mod@crate::decide`]).
//!
//! # The policy digest
//!
//! [`Federation::policy_digest`] names the whole set of files in force, so that an
//! audit entry "policy loaded" says exactly what was loaded. It is the SHA-256 of the
//! canonical encoding (see `tamga_protocol::canonical`):
//!
//! ```text
//! str("tamga.policy-digest.v1") str(me)
//! raw32(roster digest) raw32(catalog digest)
//! list(str(agreement id) raw32(agreement digest), sorted by agreement id)
//! raw32(policy file digest)
//! ```
//!
//! where each file digest is the SHA-256 of the file's exact bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tamga_protocol::canonical::Canonical;
use tamga_protocol::{AgreementId, CategoryId, Digest, MemberCode};

use crate::agreement::{self, Agreement};
use crate::catalog::{self, Catalog};
use crate::decide;
use crate::error::{At, ConfigError, ConfigErrors, ErrorKind, SourceFile};
use crate::limits::MAX_AGREEMENTS;
use crate::node::NodeConfig;
use crate::policy::{self, AcceptRule, Policy, RuleRefs, ShareRule};
use crate::roster::{self, Roster};

/// Everything a node needs to decide: checked, cross-checked and compiled.
#[derive(Debug, Clone)]
pub struct Federation {
    /// The member this node speaks for.
    pub me: MemberCode,
    /// The members.
    pub roster: Roster,
    /// The categories.
    pub catalog: Catalog,
    /// The agreements, by id, each with this node's policy for it compiled in.
    pub agreements: BTreeMap<AgreementId, Agreement>,
    /// This node's policy.
    pub policy: Policy,
    /// The digest of everything in force (see the module documentation).
    pub policy_digest: Digest,
    /// Every file read, with the SHA-256 of its bytes.
    pub file_digests: BTreeMap<PathBuf, Digest>,
    by_category: BTreeMap<CategoryId, Vec<AgreementId>>,
}

/// The text of every file of a federation, for [`Federation::from_sources`].
#[derive(Debug, Clone)]
pub struct Sources {
    /// `roster.toml`.
    pub roster: SourceFile,
    /// `catalog.toml`.
    pub catalog: SourceFile,
    /// The agreement files.
    pub agreements: Vec<SourceFile>,
    /// The node's `policy.toml`.
    pub policy: SourceFile,
}

impl Federation {
    /// Load the files `node.toml` names, for its member.
    pub fn load(cfg: &NodeConfig) -> Result<Federation, ConfigErrors> {
        Federation::load_files(&cfg.roster, &cfg.catalog, &cfg.agreements, &cfg.policy, cfg.member)
    }

    /// Load a federation from its files, for `member`: the roster, the catalog, every
    /// `*.toml` in `agreements_dir`, and the member's policy.
    pub fn load_files(
        roster: &Path,
        catalog: &Path,
        agreements_dir: &Path,
        policy: &Path,
        member: MemberCode,
    ) -> Result<Federation, ConfigErrors> {
        Federation::load_files_with_sources(roster, catalog, agreements_dir, policy, member).map(|(f, _)| f)
    }

    /// [`Federation::load_files`], also giving back the exact text of every file read, so
    /// that what is in force can be shown or compared later (`tamga policy diff` against
    /// a running node) even after the files on disk have changed.
    pub fn load_files_with_sources(
        roster: &Path,
        catalog: &Path,
        agreements_dir: &Path,
        policy: &Path,
        member: MemberCode,
    ) -> Result<(Federation, Sources), ConfigErrors> {
        let mut errs = Vec::new();
        let mut read = |p: &Path| SourceFile::read(p).map_err(|e| errs.push(e)).ok();
        let roster = read(roster);
        let catalog = read(catalog);
        let policy = read(policy);
        let mut agreements = Vec::new();
        match agreement::list_dir(agreements_dir) {
            Ok(files) => {
                if files.len() > MAX_AGREEMENTS {
                    errs.push(ConfigError::whole_file(
                        ErrorKind::TooMany,
                        agreements_dir,
                        format!("{} agreement files, more than the limit of {MAX_AGREEMENTS}", files.len()),
                    ));
                }
                for f in files.iter().take(MAX_AGREEMENTS) {
                    match SourceFile::read(f) {
                        Ok(s) => agreements.push(s),
                        Err(e) => errs.push(e),
                    }
                }
            }
            Err(e) => errs.push(e),
        }
        let input = Input {
            roster: roster.as_ref(),
            catalog: catalog.as_ref(),
            agreements: &agreements,
            policy: policy.as_ref(),
        };
        let fed = build(input, member, errs)?;
        match (roster, catalog, policy) {
            (Some(roster), Some(catalog), Some(policy)) => {
                Ok((fed, Sources { roster, catalog, agreements, policy }))
            }
            // Unreachable: a file that could not be read is an error, and build failed.
            _ => Err(ConfigErrors(vec![ConfigError::whole_file(
                ErrorKind::Io,
                Path::new("."),
                "the federation could not be loaded",
            )])),
        }
    }

    /// Check a federation from text in memory (tests, `tamga policy check` of an edited
    /// file before it replaces the one in force).
    pub fn from_sources(sources: &Sources, member: MemberCode) -> Result<Federation, ConfigErrors> {
        let input = Input {
            roster: Some(&sources.roster),
            catalog: Some(&sources.catalog),
            agreements: &sources.agreements,
            policy: Some(&sources.policy),
        };
        build(input, member, Vec::new())
    }

    /// An agreement by id.
    pub fn agreement(&self, id: &AgreementId) -> Option<&Agreement> {
        self.agreements.get(id)
    }

    /// The agreements that cover a category, in id order (a record of that category is
    /// projected once under each of them that the policy allows).
    pub fn agreements_for<'a>(&'a self, category: &CategoryId) -> impl Iterator<Item = &'a Agreement> + 'a {
        self.by_category.get(category).into_iter().flatten().filter_map(|id| self.agreements.get(id))
    }

    /// The agreements this node's member is a party to, in id order.
    pub fn my_agreements(&self) -> impl Iterator<Item = &Agreement> {
        self.agreements.values().filter(|a| a.is_party(self.me))
    }

    /// `(id, terms)` of the agreements this node's member is a party to, in id order:
    /// what a hello announces ([`Agreement::terms`]).
    pub fn agreement_terms(&self) -> Vec<(AgreementId, Digest)> {
        self.my_agreements().map(|a| (a.id.clone(), a.terms)).collect()
    }
}

/// The files to check; `None` for a file that could not be read (its error is already
/// recorded).
struct Input<'a> {
    roster: Option<&'a SourceFile>,
    catalog: Option<&'a SourceFile>,
    agreements: &'a [SourceFile],
    policy: Option<&'a SourceFile>,
}

fn build(input: Input<'_>, me: MemberCode, mut errs: Vec<ConfigError>) -> Result<Federation, ConfigErrors> {
    let roster = input.roster.and_then(|src| {
        let (r, e) = roster::parse(src);
        errs.extend(e);
        r
    });
    let catalog = input.catalog.and_then(|src| {
        let (c, e) = catalog::parse(src);
        errs.extend(e);
        c
    });

    // Agreements: each file alone, then against the roster and the catalog, then ids
    // across files.
    let mut agreements: BTreeMap<AgreementId, agreement::Parsed> = BTreeMap::new();
    for src in input.agreements {
        let (parsed, e) = agreement::parse(src);
        errs.extend(e);
        let Some(mut parsed) = parsed else { continue };
        let before = errs.len();
        if let Some(roster) = &roster {
            for p in &parsed.parties {
                if !roster.contains(p.value) {
                    errs.push(unknown_member(src, p, roster));
                }
            }
        }
        if let Some(catalog) = &catalog {
            for c in &parsed.categories {
                if catalog.category(&c.value).is_none() {
                    errs.push(unknown_category(src, c, catalog));
                }
            }
            for t in &parsed.redact_tags {
                if !catalog.has_tag(&t.value) {
                    errs.push(
                        src.error_at(
                            ErrorKind::UnknownTag,
                            t.pos,
                            format!("no field of the catalog is tagged `{}`", t.value),
                        )
                        .with_hint(format!("tags in the catalog: {}", join(catalog.tags().iter()))),
                    );
                }
            }
        }
        parsed.broken |= errs.len() > before;
        if let Some(first) = agreements.get(&parsed.id.value) {
            errs.push(
                src.error_at(
                    ErrorKind::Duplicate,
                    parsed.id.pos,
                    format!(
                        "agreement id {} is also defined in {}:{}",
                        parsed.id.value,
                        first.agreement.path.display(),
                        first.agreement.line
                    ),
                )
                .with_hint("each agreement has its own file and its own id"),
            );
            continue;
        }
        agreements.insert(parsed.id.value.clone(), parsed);
    }

    // The policy, against everything else.
    let policy = input.policy.and_then(|src| {
        let (p, e) = policy::parse(src);
        errs.extend(e);
        p.map(|p| (src, p))
    });
    let policy = policy.and_then(|(src, parsed)| {
        let ctx = PolicyCheck {
            src,
            me,
            roster: roster.as_ref(),
            catalog: catalog.as_ref(),
            agreements: &agreements,
        };
        check_policy(&ctx, parsed, &mut errs)
    });
    if let Some(roster) = &roster {
        if !roster.contains(me) {
            errs.push(
                ConfigError::whole_file(
                    ErrorKind::UnknownMember,
                    roster.path(),
                    format!("this node's member {me} is not in the roster"),
                )
                .with_hint(format!("roster members: {}", join(roster.codes()))),
            );
        }
    }

    let (Some(roster), Some(catalog), Some(policy), true) = (roster, catalog, policy, errs.is_empty()) else {
        if errs.is_empty() {
            // Unreachable in practice: a missing part always comes with its error.
            errs.push(ConfigError::whole_file(
                ErrorKind::Io,
                Path::new("."),
                "the federation could not be loaded",
            ));
        }
        return Err(ConfigErrors::sorted(errs));
    };

    let mut file_digests = BTreeMap::new();
    file_digests.insert(roster.path().to_path_buf(), roster.digest());
    file_digests.insert(catalog.path().to_path_buf(), catalog.digest());
    file_digests.insert(policy.path.clone(), policy.digest);
    let mut by_category: BTreeMap<CategoryId, Vec<AgreementId>> = BTreeMap::new();
    let agreements: BTreeMap<AgreementId, Agreement> = agreements
        .into_iter()
        .map(|(id, parsed)| {
            let mut a = parsed.agreement;
            a.compiled = decide::compile(&a, me, &policy, &catalog);
            a.terms = terms(&a, &catalog);
            file_digests.insert(a.path.clone(), a.digest);
            for c in &a.categories {
                by_category.entry(c.clone()).or_default().push(id.clone());
            }
            (id, a)
        })
        .collect();

    let mut c = Canonical::new();
    c.str("tamga.policy-digest.v1")
        .str(me.as_str())
        .raw32(&roster.digest())
        .raw32(&catalog.digest())
        .count(agreements.len());
    for (id, a) in &agreements {
        c.str(id.as_str()).raw32(&a.digest);
    }
    c.raw32(&policy.digest);

    Ok(Federation {
        me,
        roster,
        catalog,
        agreements,
        policy,
        policy_digest: c.digest(),
        file_digests,
        by_category,
    })
}

/// [`Agreement::terms`]: the text's digest and the catalog's definition of each category
/// the agreement covers.
fn terms(a: &Agreement, catalog: &Catalog) -> Digest {
    let mut c = Canonical::new();
    c.str("tamga.agreement-terms.v1").raw32(&a.digest).count(a.categories.len());
    for category in &a.categories {
        catalog.canonical_category(category, &mut c);
    }
    c.digest()
}

struct PolicyCheck<'a> {
    src: &'a SourceFile,
    me: MemberCode,
    roster: Option<&'a Roster>,
    catalog: Option<&'a Catalog>,
    agreements: &'a BTreeMap<AgreementId, agreement::Parsed>,
}

fn check_policy(
    ctx: &PolicyCheck<'_>,
    parsed: policy::Parsed,
    errs: &mut Vec<ConfigError>,
) -> Option<Policy> {
    let src = ctx.src;
    let before = errs.len();
    if let Some(m) = &parsed.member {
        if m.value != ctx.me {
            errs.push(
                src.error_at(
                    ErrorKind::MemberMismatch,
                    m.pos,
                    format!("this policy is for {}, but this node is {}", m.value, ctx.me),
                )
                .with_hint("each node loads its own member's policy; check `member` here and in node.toml"),
            );
        }
    }
    for (rule, refs) in &parsed.share {
        check_rule(ctx, &rule.agreement, refs, errs);
    }
    for (rule, refs) in &parsed.accept {
        check_rule(ctx, &rule.agreement, refs, errs);
    }
    if errs.len() > before || parsed.member.is_none() {
        return None;
    }
    let share: Vec<ShareRule> = parsed.share.into_iter().map(|(r, _)| r).collect();
    let accept: Vec<AcceptRule> = parsed.accept.into_iter().map(|(r, _)| r).collect();
    Some(Policy { member: ctx.me, share, accept, digest: parsed.digest, path: parsed.path })
}

fn check_rule(ctx: &PolicyCheck<'_>, agreement: &AgreementId, refs: &RuleRefs, errs: &mut Vec<ConfigError>) {
    let src = ctx.src;
    // Checks that do not depend on the agreement come first, so that they are made even
    // when the agreement's file is broken.
    if let Some(roster) = ctx.roster {
        for m in refs.members.iter().filter(|m| !roster.contains(m.value)) {
            errs.push(unknown_member(src, m, roster));
        }
    }
    if let Some(catalog) = ctx.catalog {
        // A category no catalog defines is a mistake, not a narrowing: a pause or a
        // redaction under a misspelt category would silently do nothing.
        for c in refs.categories.iter().filter(|c| catalog.category(&c.value).is_none()) {
            errs.push(unknown_category(src, c, catalog));
        }
        for t in refs.redact_tags.iter().filter(|t| !catalog.has_tag(&t.value)) {
            errs.push(
                src.error_at(
                    ErrorKind::UnknownTag,
                    t.pos,
                    format!("no field of the catalog is tagged `{}`", t.value),
                )
                .with_hint(format!("tags in the catalog: {}", join(catalog.tags().iter()))),
            );
        }
    }
    // A rule may name what its agreement does not (yet, or any more): an agreement no file
    // defines, one this member is not a party to, a category of the catalog it does not
    // cover (and that category's fields in `redact_fields`), a member not its party. Such
    // a reference can only narrow what is shared, and is a warning
    // (`check::warnings`), not an error: an agreement's text that drops a party, a
    // category or itself must be able to come into force while a rule still names it,
    // or the wider text before would stay in force.
    if refs.agreement.is_none() {
        return;
    }
    let Some(parsed) = ctx.agreements.get(agreement) else { return };
    if parsed.broken || !parsed.agreement.is_party(ctx.me) {
        return;
    }
    let a = &parsed.agreement;
    if let Some(catalog) = ctx.catalog {
        let rule_categories: Vec<&CategoryId> = if refs.categories.is_empty() {
            a.categories.iter().collect()
        } else {
            refs.categories.iter().map(|c| &c.value).collect()
        };
        let fields: BTreeSet<&str> = rule_categories
            .iter()
            .filter_map(|c| catalog.category(c))
            .flat_map(|c| c.fields.keys().map(String::as_str))
            .collect();
        for f in refs.redact_fields.iter().filter(|f| !fields.contains(f.value.as_str())) {
            errs.push(
                src.error_at(
                    ErrorKind::UnknownField,
                    f.pos,
                    format!("redact_fields: no category of this rule has a field `{}`", f.value),
                )
                .with_hint(format!("fields of this rule's categories: {}", join(fields.iter()))),
            );
        }
    }
}

fn unknown_member(src: &SourceFile, m: &At<MemberCode>, roster: &Roster) -> ConfigError {
    src.error_at(ErrorKind::UnknownMember, m.pos, format!("member {} is not in the roster", m.value))
        .with_hint(format!("roster members: {}", join(roster.codes())))
}

fn unknown_category(src: &SourceFile, c: &At<CategoryId>, catalog: &Catalog) -> ConfigError {
    src.error_at(ErrorKind::UnknownCategory, c.pos, format!("category {} is not in the catalog", c.value))
        .with_hint(format!("catalog categories: {}", join(catalog.categories().map(|c| &c.id))))
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

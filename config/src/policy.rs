//! `policy.toml`: one node's local sharing policy, edited by its administrator.
//!
//! This module owns the policy format and the checks the file can make alone: member
//! codes and ids well formed, `"*"` used alone, and above all that no rule lists
//! `confidential` or `secret` (invariant 2: such a policy is refused when loaded). The
//! checks against the agreements and the catalog are made by [`crate::federation`], and
//! the rules are compiled for fast decisions by [`mod@crate::decide`]. Nothing is shared or
//! accepted without a rule: default deny.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use tamga_protocol::{AgreementId, CategoryId, Classification, Digest, MemberCode};
use toml::Spanned;

use crate::error::{At, ConfigError, ErrorKind, Pos, SourceFile};
use crate::limits::MAX_RULES;
use crate::parse;

/// Which members a rule names: all parties of the agreement (`["*"]`), or some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Every party of the agreement.
    All,
    /// These members, sorted.
    Only(Vec<MemberCode>),
}

impl Members {
    /// Whether the member is named.
    pub fn contains(&self, member: MemberCode) -> bool {
        match self {
            Members::All => true,
            Members::Only(list) => list.binary_search(&member).is_ok(),
        }
    }
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Members::All => f.write_str("all parties"),
            Members::Only(list) => {
                let names: Vec<&str> = list.iter().map(MemberCode::as_str).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// A `[[share]]` rule: what this node sends out under an agreement, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRule {
    /// The agreement.
    pub agreement: AgreementId,
    /// The categories, sorted; `None` means all of the agreement's.
    pub categories: Option<Vec<CategoryId>>,
    /// The receivers; default all parties.
    pub to: Members,
    /// Paused members, sorted: nothing is sent to them under this agreement and these
    /// categories, whatever another rule says.
    pub except: Vec<MemberCode>,
    /// Extra fields withheld, on top of the agreement's redactions.
    pub redact_fields: BTreeSet<String>,
    /// Extra tags withheld, on top of the agreement's.
    pub redact_tags: BTreeSet<String>,
    /// The classifications shared: `public` and/or `non_confidential` (never more).
    pub classifications: Vec<Classification>,
    /// The administrator's note.
    pub note: Option<String>,
    /// Line of the rule's `[[share]]` header.
    pub line: usize,
}

impl ShareRule {
    /// Whether the rule is about this agreement and category.
    pub fn covers(&self, agreement: &AgreementId, category: &CategoryId) -> bool {
        &self.agreement == agreement && self.categories.as_ref().is_none_or(|cs| cs.contains(category))
    }
}

/// An `[[accept]]` rule: what this node takes in under an agreement, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRule {
    /// The agreement.
    pub agreement: AgreementId,
    /// The categories, sorted; `None` means all of the agreement's.
    pub categories: Option<Vec<CategoryId>>,
    /// The origins accepted (whose records); default all parties.
    pub from: Members,
    /// The administrator's note.
    pub note: Option<String>,
    /// Line of the rule's `[[accept]]` header.
    pub line: usize,
}

impl AcceptRule {
    /// Whether the rule is about this agreement and category.
    pub fn covers(&self, agreement: &AgreementId, category: &CategoryId) -> bool {
        &self.agreement == agreement && self.categories.as_ref().is_none_or(|cs| cs.contains(category))
    }
}

/// A node's local policy, checked against the agreements and the catalog.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The member the policy is for.
    pub member: MemberCode,
    /// The share rules, in file order.
    pub share: Vec<ShareRule>,
    /// The accept rules, in file order.
    pub accept: Vec<AcceptRule>,
    /// SHA-256 of the file's bytes.
    pub digest: Digest,
    /// The file it was read from.
    pub path: PathBuf,
}

/// The classifications a share rule covers when it does not say.
pub const DEFAULT_CLASSIFICATIONS: [Classification; 2] =
    [Classification::Public, Classification::NonConfidential];

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    member: Spanned<String>,
    #[serde(default)]
    share: Vec<Spanned<RawShare>>,
    #[serde(default)]
    accept: Vec<Spanned<RawAccept>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    agreement: Spanned<String>,
    categories: Option<Spanned<Vec<Spanned<String>>>>,
    to: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    except: Vec<Spanned<String>>,
    #[serde(default)]
    redact_fields: Vec<Spanned<String>>,
    #[serde(default)]
    redact_tags: Vec<Spanned<String>>,
    classifications: Option<Spanned<Vec<Spanned<String>>>>,
    note: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccept {
    agreement: Spanned<String>,
    categories: Option<Spanned<Vec<Spanned<String>>>>,
    from: Option<Spanned<Vec<Spanned<String>>>>,
    note: Option<Spanned<String>>,
}

/// A rule's lists with their positions, for the checks against agreements and catalog.
#[derive(Debug, Default)]
pub(crate) struct RuleRefs {
    pub(crate) agreement: Option<At<AgreementId>>,
    pub(crate) categories: Vec<At<CategoryId>>,
    pub(crate) members: Vec<At<MemberCode>>,
    pub(crate) redact_fields: Vec<At<String>>,
    pub(crate) redact_tags: Vec<At<String>>,
    pub(crate) pos: Pos,
}

/// A policy as the file states it: the rules (valid where the file alone can tell) and
/// the references to check against other files.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) member: Option<At<MemberCode>>,
    pub(crate) share: Vec<(ShareRule, RuleRefs)>,
    pub(crate) accept: Vec<(AcceptRule, RuleRefs)>,
    pub(crate) digest: Digest,
    pub(crate) path: PathBuf,
}

/// Parse one policy file and make the checks it can make alone.
pub(crate) fn parse(src: &SourceFile) -> (Option<Parsed>, Vec<ConfigError>) {
    let raw: RawPolicy = match src.parse() {
        Ok(r) => r,
        Err(e) => return (None, vec![e]),
    };
    let mut errs = Vec::new();
    let member = parse::member_code(src, &raw.member).map_err(|e| errs.push(e)).ok();
    if raw.share.len() + raw.accept.len() > MAX_RULES {
        errs.push(src.error_at(
            ErrorKind::TooMany,
            Pos { line: 1, col: 1 },
            format!("more than {MAX_RULES} rules"),
        ));
    }
    let mut share = Vec::new();
    for table in &raw.share {
        let r = table.get_ref();
        let mut refs = RuleRefs { pos: src.pos(table.span().start), ..RuleRefs::default() };
        refs.agreement = parse::identifier(src, &r.agreement).map_err(|e| errs.push(e)).ok();
        let categories = categories(src, &r.categories, &mut refs, &mut errs);
        let to = members(src, "to", &r.to, &mut refs, &mut errs);
        let mut except = Vec::new();
        for m in &r.except {
            if m.get_ref() == "*" {
                errs.push(
                    src.error(ErrorKind::Invalid, &m.span(), "`except` cannot be \"*\"")
                        .with_hint("to stop sharing under this agreement altogether, remove the rule"),
                );
                continue;
            }
            if let Ok(code) = parse::member_code(src, m).map_err(|e| errs.push(e)) {
                except.push(code.value);
                refs.members.push(code);
            }
        }
        except.sort_unstable();
        except.dedup();
        for f in &r.redact_fields {
            if let Ok(name) = parse::name(src, "field name", f).map_err(|e| errs.push(e)) {
                refs.redact_fields.push(name);
            }
        }
        for t in &r.redact_tags {
            if let Ok(tag) = parse::name(src, "tag", t).map_err(|e| errs.push(e)) {
                refs.redact_tags.push(tag);
            }
        }
        let classifications = classifications(src, &r.classifications, &mut errs);
        let note = r.note.as_ref().and_then(|n| parse::title(src, "note", n).map_err(|e| errs.push(e)).ok());
        let Some(agreement) = refs.agreement.as_ref().map(|a| a.value.clone()) else {
            continue;
        };
        let rule = ShareRule {
            agreement,
            categories,
            to,
            except,
            redact_fields: refs.redact_fields.iter().map(|f| f.value.clone()).collect(),
            redact_tags: refs.redact_tags.iter().map(|t| t.value.clone()).collect(),
            classifications,
            note,
            line: refs.pos.line,
        };
        share.push((rule, refs));
    }
    let mut accept = Vec::new();
    for table in &raw.accept {
        let r = table.get_ref();
        let mut refs = RuleRefs { pos: src.pos(table.span().start), ..RuleRefs::default() };
        refs.agreement = parse::identifier(src, &r.agreement).map_err(|e| errs.push(e)).ok();
        let categories = categories(src, &r.categories, &mut refs, &mut errs);
        let from = members(src, "from", &r.from, &mut refs, &mut errs);
        let note = r.note.as_ref().and_then(|n| parse::title(src, "note", n).map_err(|e| errs.push(e)).ok());
        let Some(agreement) = refs.agreement.as_ref().map(|a| a.value.clone()) else {
            continue;
        };
        let rule = AcceptRule { agreement, categories, from, note, line: refs.pos.line };
        accept.push((rule, refs));
    }
    let parsed = Parsed { member, share, accept, digest: src.digest(), path: src.path().to_path_buf() };
    (Some(parsed), errs)
}

fn categories(
    src: &SourceFile,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    refs: &mut RuleRefs,
    errs: &mut Vec<ConfigError>,
) -> Option<Vec<CategoryId>> {
    let list = raw.as_ref()?;
    if list.get_ref().is_empty() {
        errs.push(
            src.error(ErrorKind::Invalid, &list.span(), "`categories` is empty")
                .with_hint("leave `categories` out to mean all of the agreement's categories"),
        );
    }
    let mut out = Vec::new();
    for c in list.get_ref() {
        if let Ok(cat) = parse::identifier::<CategoryId>(src, c).map_err(|e| errs.push(e)) {
            out.push(cat.value.clone());
            refs.categories.push(cat);
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

fn members(
    src: &SourceFile,
    key: &str,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    refs: &mut RuleRefs,
    errs: &mut Vec<ConfigError>,
) -> Members {
    let Some(list) = raw else {
        return Members::All;
    };
    let items = list.get_ref();
    if items.is_empty() {
        errs.push(
            src.error(ErrorKind::Invalid, &list.span(), format!("`{key}` is empty"))
                .with_hint(format!("write {key} = [\"*\"] for all parties, or leave `{key}` out")),
        );
        return Members::Only(Vec::new());
    }
    if items.iter().any(|m| m.get_ref() == "*") {
        if items.len() > 1 {
            errs.push(src.error(
                ErrorKind::Invalid,
                &list.span(),
                format!("`{key}` mixes \"*\" with member codes; \"*\" already means every party"),
            ));
        }
        return Members::All;
    }
    let mut out = Vec::new();
    for m in items {
        if let Ok(code) = parse::member_code(src, m).map_err(|e| errs.push(e)) {
            out.push(code.value);
            refs.members.push(code);
        }
    }
    out.sort_unstable();
    out.dedup();
    Members::Only(out)
}

fn classifications(
    src: &SourceFile,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    errs: &mut Vec<ConfigError>,
) -> Vec<Classification> {
    let Some(list) = raw else {
        return DEFAULT_CLASSIFICATIONS.to_vec();
    };
    if list.get_ref().is_empty() {
        errs.push(
            src.error(ErrorKind::Invalid, &list.span(), "`classifications` is empty")
                .with_hint("leave it out to share public and non_confidential records"),
        );
    }
    let mut out = Vec::new();
    for c in list.get_ref() {
        match c.get_ref().parse::<Classification>() {
            Ok(level) if level.may_leave_node() => out.push(level),
            Ok(level) => errs.push(
                src.error(
                    ErrorKind::Classified,
                    &c.span(),
                    format!("a policy may not share {level} records"),
                )
                .with_hint("confidential and secret records never leave the node (invariant 2); share only public and non_confidential"),
            ),
            Err(e) => errs.push(src.error(ErrorKind::Invalid, &c.span(), e.to_string())),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

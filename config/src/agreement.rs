//! Agreement files (`agreements/*.toml`, one agreement each): the text every party holds.
//!
//! This module owns the agreement format and the checks one file can make on its own
//! (dates in order, at least two distinct parties, no duplicates, limits). The checks
//! against other files (parties in the roster, categories and tags in the catalog,
//! unique ids across files) are made by [`crate::federation`]. Every party holds the same
//! file, so the digest is of the exact bytes; this module never alters or normalises it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;
use tamga_protocol::{AgreementId, CategoryId, Digest, MemberCode, RecordHeader};
use toml::Spanned;

use crate::decide::Compiled;
use crate::error::{At, ConfigError, ErrorKind, Pos, SourceFile};
use crate::limits::{MAX_PARTIES, MAX_RETENTION_DAYS, MS_PER_DAY};
use crate::parse::{self, RawDate};

/// One agreement, checked against the roster and the catalog, with the node's local
/// policy for it compiled in (see [`mod@crate::decide`]).
#[derive(Debug, Clone)]
pub struct Agreement {
    /// The agreement's id, such as `sco-ipr-2012`.
    pub id: AgreementId,
    /// Its title.
    pub title: String,
    /// The date it was signed.
    pub signed: NaiveDate,
    /// The first day it is in force (from 00:00 UTC).
    pub effective_from: NaiveDate,
    /// The last day it is in force (until 24:00 UTC), if it ends.
    pub effective_until: Option<NaiveDate>,
    /// The parties, sorted, without duplicates (at least two).
    pub parties: Vec<MemberCode>,
    /// The categories it covers, sorted, without duplicates.
    pub categories: Vec<CategoryId>,
    /// Tags whose fields are always withheld under this agreement (e.g. `personal`).
    pub redact_tags: BTreeSet<String>,
    /// Whether a party may forward a projection to the rest of its audience.
    pub relay: bool,
    /// How long a receiver keeps a record, in days from its creation.
    pub retention_days: u32,
    /// Whether records created before `effective_from` may be shared.
    pub backfill: bool,
    /// SHA-256 of the file's bytes.
    pub digest: Digest,
    /// The terms the parties compare when they meet (a hello carries them): the digest of
    /// the text and of the catalog's definition of each category it covers (see
    /// [`Catalog::canonical_category`](crate::Catalog::canonical_category)). Peers share
    /// nothing under an agreement whose terms differ: a field tagged `personal` in one
    /// party's catalog and not in the other's would be redacted by one and sent by the
    /// other. Until the agreement is checked against a catalog, the text's digest.
    pub terms: Digest,
    /// The file it was read from.
    pub path: PathBuf,
    /// Line of `id` in the file.
    pub line: usize,
    pub(crate) from_ms: i64,
    pub(crate) until_ms: Option<i64>,
    /// Position of `effective_until` in the file, when it is set (for warnings).
    pub(crate) until_pos: Option<Pos>,
    pub(crate) compiled: Compiled,
}

impl Agreement {
    /// Whether the member is a party.
    pub fn is_party(&self, member: MemberCode) -> bool {
        self.parties.binary_search(&member).is_ok()
    }

    /// Whether the agreement covers the category.
    pub fn covers(&self, category: &CategoryId) -> bool {
        self.categories.binary_search_by(|c| c.as_str().cmp(category.as_str())).is_ok()
    }

    /// First instant in force, milliseconds since the Unix epoch (UTC).
    pub fn effective_from_ms(&self) -> i64 {
        self.from_ms
    }

    /// First instant no longer in force, if the agreement ends.
    pub fn effective_until_ms(&self) -> Option<i64> {
        self.until_ms
    }

    /// Whether the agreement is in force at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        now_ms >= self.from_ms && self.until_ms.is_none_or(|u| now_ms < u)
    }

    /// When every holder must purge a record shared under this agreement: its own
    /// expiry or the end of the retention period, whichever is earlier.
    pub fn purge_at_ms(&self, header: &RecordHeader) -> i64 {
        let retention =
            header.created_ms.saturating_add(i64::from(self.retention_days).saturating_mul(MS_PER_DAY));
        header.expires_ms.map_or(retention, |e| e.min(retention))
    }
}

/// An agreement as one file states it, with positions for the cross-file checks.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) id: At<AgreementId>,
    pub(crate) parties: Vec<At<MemberCode>>,
    pub(crate) categories: Vec<At<CategoryId>>,
    pub(crate) redact_tags: Vec<At<String>>,
    pub(crate) agreement: Agreement,
    /// Whether the file had problems of its own (then rules that name it are only
    /// checked for existence, so one mistake does not cascade).
    pub(crate) broken: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreement {
    id: Spanned<String>,
    title: Spanned<String>,
    signed: Spanned<RawDate>,
    effective_from: Spanned<RawDate>,
    effective_until: Option<Spanned<RawDate>>,
    parties: Spanned<Vec<Spanned<String>>>,
    categories: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    redact_tags: Vec<Spanned<String>>,
    relay: bool,
    retention_days: Spanned<i64>,
    #[serde(default)]
    backfill: bool,
}

fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(i64::MAX)
}

/// Parse one agreement file and make the checks it can make alone.
pub(crate) fn parse(src: &SourceFile) -> (Option<Parsed>, Vec<ConfigError>) {
    let raw: RawAgreement = match src.parse() {
        Ok(r) => r,
        Err(e) => return (None, vec![e]),
    };
    let mut errs = Vec::new();
    let id = parse::identifier::<AgreementId>(src, &raw.id).map_err(|e| errs.push(e)).ok();
    let title = parse::title(src, "title", &raw.title).map_err(|e| errs.push(e)).ok();
    let signed = parse::date(src, "signed", &raw.signed).map_err(|e| errs.push(e)).ok();
    let from = parse::date(src, "effective_from", &raw.effective_from).map_err(|e| errs.push(e)).ok();
    let until = match &raw.effective_until {
        None => Some(None),
        Some(u) => parse::date(src, "effective_until", u).map(Some).map_err(|e| errs.push(e)).ok(),
    };
    if let (Some(signed), Some(from)) = (signed, from) {
        if from < signed {
            errs.push(
                src.error(
                    ErrorKind::DateOrder,
                    &raw.effective_from.span(),
                    format!("effective_from {from} is before the signature date {signed}"),
                )
                .with_hint("an agreement comes into force on or after the day it is signed"),
            );
        }
    }
    if let (Some(from), Some(Some(until)), Some(u)) = (from, until, &raw.effective_until) {
        if until < from {
            errs.push(src.error(
                ErrorKind::DateOrder,
                &u.span(),
                format!("effective_until {until} is before effective_from {from}"),
            ));
        }
    }

    let mut parties: Vec<At<MemberCode>> = Vec::new();
    for p in raw.parties.get_ref() {
        match parse::member_code(src, p) {
            Ok(code) => {
                if parties.iter().any(|q| q.value == code.value) {
                    errs.push(src.error_at(
                        ErrorKind::Duplicate,
                        code.pos,
                        format!("party {} is listed twice", code.value),
                    ));
                } else {
                    parties.push(code);
                }
            }
            Err(e) => errs.push(e),
        }
    }
    let distinct: BTreeSet<&str> = raw.parties.get_ref().iter().map(|p| p.get_ref().as_str()).collect();
    if distinct.len() < 2 {
        errs.push(
            src.error(
                ErrorKind::TooFewParties,
                &raw.parties.span(),
                format!("an agreement needs at least two parties; this one has {}", distinct.len()),
            )
            .with_hint("list every member service that signed it, e.g. parties = [\"KZ\", \"RU\"]"),
        );
    }
    if parties.len() > MAX_PARTIES {
        errs.push(src.error(
            ErrorKind::TooMany,
            &raw.parties.span(),
            format!("{} parties, more than the limit of {MAX_PARTIES}", parties.len()),
        ));
    }

    let mut categories: Vec<At<CategoryId>> = Vec::new();
    for c in raw.categories.get_ref() {
        match parse::identifier::<CategoryId>(src, c) {
            Ok(cat) => {
                if categories.iter().any(|d| d.value == cat.value) {
                    errs.push(src.error_at(
                        ErrorKind::Duplicate,
                        cat.pos,
                        format!("category {} is listed twice", cat.value),
                    ));
                } else {
                    categories.push(cat);
                }
            }
            Err(e) => errs.push(e),
        }
    }
    if raw.categories.get_ref().is_empty() {
        errs.push(src.error(ErrorKind::Invalid, &raw.categories.span(), "`categories` is empty"));
    }
    let mut redact_tags: Vec<At<String>> = Vec::new();
    for t in &raw.redact_tags {
        match parse::name(src, "tag", t) {
            Ok(tag) if !redact_tags.iter().any(|u| u.value == tag.value) => redact_tags.push(tag),
            Ok(_) => {}
            Err(e) => errs.push(e),
        }
    }
    let retention_days = match u32::try_from(*raw.retention_days.get_ref()) {
        Ok(d) if (1..=MAX_RETENTION_DAYS).contains(&d) => Some(d),
        _ => {
            errs.push(src.error(
                ErrorKind::Invalid,
                &raw.retention_days.span(),
                format!(
                    "retention_days {} is outside 1..={MAX_RETENTION_DAYS}",
                    raw.retention_days.get_ref()
                ),
            ));
            None
        }
    };

    let broken = !errs.is_empty();
    // Without an id the agreement cannot be referred to. Anything else missing was
    // reported above; stand-ins keep the agreement known to the cross-file checks (a
    // broken agreement is never put in force: the load fails).
    let Some(id) = id else {
        return (None, errs);
    };
    let title = title.unwrap_or_default();
    let from = from.or(signed).unwrap_or_default();
    let signed = signed.unwrap_or(from);
    let until = until.unwrap_or_default();
    let retention_days = retention_days.unwrap_or(1);
    let mut party_codes: Vec<MemberCode> = parties.iter().map(|p| p.value).collect();
    party_codes.sort_unstable();
    let mut cat_ids: Vec<CategoryId> = categories.iter().map(|c| c.value.clone()).collect();
    cat_ids.sort_unstable();
    let agreement = Agreement {
        id: id.value.clone(),
        title,
        signed,
        effective_from: from,
        effective_until: until,
        parties: party_codes,
        categories: cat_ids,
        redact_tags: redact_tags.iter().map(|t| t.value.clone()).collect(),
        relay: raw.relay,
        retention_days,
        backfill: raw.backfill,
        digest: src.digest(),
        terms: src.digest(),
        path: src.path().to_path_buf(),
        line: id.pos.line,
        from_ms: day_start_ms(from),
        until_ms: until.and_then(|u| u.succ_opt()).map(day_start_ms),
        until_pos: raw.effective_until.as_ref().map(|u| src.pos(u.span().start)),
        compiled: Compiled::default(),
    };
    let parsed = Parsed { id, parties, categories, redact_tags, agreement, broken };
    (Some(parsed), errs)
}

/// The `*.toml` files of an agreements directory, sorted by name.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| crate::error::io_error(dir, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| crate::error::io_error(dir, &e))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

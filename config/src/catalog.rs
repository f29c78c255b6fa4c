//! `catalog.toml`: the record categories and their typed, tagged fields.
//!
//! This module owns the catalog format, the checking of a record body that the local API
//! receives as JSON ([`Catalog::validate_body`]: every problem named, values normalised
//! into protocol [`Value`]s), and the field/tag lookups that redaction is computed from.
//! It never decides who may see a field: agreements and policies say which tags and
//! fields are withheld, and [`mod@crate::decide`] applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value as Json;
use tamga_protocol::canonical::Canonical;
use tamga_protocol::{CategoryId, Digest, Value};
use toml::Spanned;

use crate::error::{ConfigError, ErrorKind, Pos, SourceFile};
use crate::limits::{
    MAX_CATEGORIES, MAX_DECIMAL_DIGITS, MAX_ENUM_VALUES, MAX_FIELDS_PER_CATEGORY, MAX_FIELD_LEN,
    MAX_LIST_ITEMS, MAX_TAGS_PER_FIELD,
};
use crate::parse;

/// The type of a catalog field, and so the JSON a body may give for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// A JSON string, kept as is.
    Text,
    /// A JSON integer (signed 64-bit).
    Integer,
    /// A string of decimal digits, normalised (`"012.50"` → `"12.5"`), or a JSON number
    /// that is an integer in i64 or u64 or has at most 15 significant digits: JSON numbers
    /// are read as binary floats, and only strings are exact.
    Decimal,
    /// A JSON boolean.
    Bool,
    /// A `YYYY-MM-DD` string.
    Date,
    /// An RFC 3339 string, normalised to UTC with a `Z`.
    Timestamp,
    /// A string from the field's `values`.
    Enum,
    /// A JSON array of strings.
    TextList,
}

impl FieldType {
    /// Every type, as written in the catalog.
    pub const ALL: [FieldType; 8] = [
        FieldType::Text,
        FieldType::Integer,
        FieldType::Decimal,
        FieldType::Bool,
        FieldType::Date,
        FieldType::Timestamp,
        FieldType::Enum,
        FieldType::TextList,
    ];

    /// The name used in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
            FieldType::Enum => "enum",
            FieldType::TextList => "text_list",
        }
    }

    /// What a body must give, for error messages.
    fn expected(self) -> &'static str {
        match self {
            FieldType::Text => "a string",
            FieldType::Integer => "an integer",
            FieldType::Decimal => "a decimal number (a JSON number or a string such as \"12.50\")",
            FieldType::Bool => "true or false",
            FieldType::Date => "a date string YYYY-MM-DD",
            FieldType::Timestamp => "an RFC 3339 timestamp string",
            FieldType::Enum => "one of the allowed strings",
            FieldType::TextList => "an array of strings",
        }
    }

    /// Whether `max_len` means something for this type.
    fn has_len(self) -> bool {
        matches!(self, FieldType::Text | FieldType::TextList)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field of a category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name (a-z, 0-9, `_`).
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// Whether every record of the category must have it.
    pub required: bool,
    /// Tags such as `personal`, which agreements and policies redact by.
    pub tags: BTreeSet<String>,
    /// Longest text (per item for `text_list`), in characters.
    pub max_len: Option<usize>,
    /// The allowed values of an `enum` field (empty otherwise).
    pub values: Vec<String>,
    /// Line of the field's table in the catalog.
    pub line: usize,
}

/// One record category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// The category id, such as `ipr.protected_mark`.
    pub id: CategoryId,
    /// A human-readable title.
    pub title: Option<String>,
    /// Its fields, by name.
    pub fields: BTreeMap<String, Field>,
    /// Line of the category's table in the catalog.
    pub line: usize,
}

/// The federation's record categories.
#[derive(Debug, Clone)]
pub struct Catalog {
    categories: BTreeMap<CategoryId, Category>,
    tags: BTreeSet<String>,
    digest: Digest,
    path: PathBuf,
}

/// Why a record body does not fit its category. Every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The catalog has no such category.
    #[error("unknown category `{0}`")]
    UnknownCategory(String),
    /// The body has more fields than any record may.
    #[error("the body has {count} fields, more than the limit of {max}")]
    TooManyFields {
        /// How many fields the body has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The category has no such field.
    #[error("unknown field `{field}` (fields of {category}: {known})")]
    UnknownField {
        /// The field as given.
        field: String,
        /// The category.
        category: String,
        /// The category's fields, comma-separated.
        known: String,
    },
    /// A required field is absent (or null).
    #[error("missing required field `{field}`")]
    MissingField {
        /// The field.
        field: String,
    },
    /// The JSON value has the wrong type.
    #[error("field `{field}` must be {expected}, not {got}")]
    WrongType {
        /// The field.
        field: String,
        /// What the field's type wants.
        expected: &'static str,
        /// The JSON type given.
        got: &'static str,
    },
    /// An `enum` value that is not allowed.
    #[error("field `{field}`: {value:?} is not one of {allowed}")]
    NotAllowed {
        /// The field.
        field: String,
        /// The value given.
        value: String,
        /// The allowed values, comma-separated.
        allowed: String,
    },
    /// A text longer than the field's `max_len`.
    #[error("field `{field}` is {len} characters long, more than its limit of {max}")]
    TooLong {
        /// The field.
        field: String,
        /// The length given, in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text whose UTF-8 bytes pass the protocol's limit on a value, within its
    /// `max_len` of characters (characters of several bytes each).
    #[error("field `{field}` is {len} bytes long in UTF-8, more than the {max} bytes a value may have")]
    TooManyBytes {
        /// The field.
        field: String,
        /// The length given, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A list with too many items.
    #[error("field `{field}` has {len} items, more than the limit of {max}")]
    TooManyItems {
        /// The field.
        field: String,
        /// How many items.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A malformed value: a bad date, timestamp or decimal, an integer out of range.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl BodyError {
    /// The field concerned, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            BodyError::UnknownCategory(_) | BodyError::TooManyFields { .. } => None,
            BodyError::UnknownField { field, .. }
            | BodyError::MissingField { field }
            | BodyError::WrongType { field, .. }
            | BodyError::NotAllowed { field, .. }
            | BodyError::TooLong { field, .. }
            | BodyError::TooManyBytes { field, .. }
            | BodyError::TooManyItems { field, .. }
            | BodyError::Invalid { field, .. } => Some(field),
        }
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

impl Catalog {
    /// A category by id.
    pub fn category(&self, id: &CategoryId) -> Option<&Category> {
        self.categories.get(id)
    }

    /// Whether the category lists this field (a field it does not list has no tags, so
    /// nothing can be decided about it: such a field is never revealed).
    pub fn lists(&self, category: &CategoryId, field: &str) -> bool {
        self.category(category).is_some_and(|c| c.fields.contains_key(field))
    }

    /// Every category, by id.
    pub fn categories(&self) -> impl Iterator<Item = &Category> {
        self.categories.values()
    }

    /// Whether any field of the catalog carries this tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// Every tag used in the catalog.
    pub fn tags(&self) -> &BTreeSet<String> {
        &self.tags
    }

    /// SHA-256 of the catalog file's bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write into `c` what the parties to an agreement covering `category` must define
    /// alike: each of its fields, with its type, whether it is required, its tags, its
    /// length bound and its values (not the category's title, nor the lines it is on). An
    /// unknown category is written as absent.
    pub fn canonical_category(&self, category: &CategoryId, c: &mut Canonical) {
        c.str(category.as_str());
        let Some(cat) = self.categories.get(category) else {
            c.u8(0);
            return;
        };
        c.u8(1).count(cat.fields.len());
        for f in cat.fields.values() {
            c.str(&f.name).str(f.ty.as_str()).u8(u8::from(f.required)).count(f.tags.len());
            for t in &f.tags {
                c.str(t);
            }
            match f.max_len {
                Some(n) => c.u8(1).u64(n as u64),
                None => c.u8(0),
            };
            let values: BTreeSet<&str> = f.values.iter().map(String::as_str).collect();
            c.count(values.len());
            for v in values {
                c.str(v);
            }
        }
    }

    /// The names of the category's fields that carry at least one of `tags` (empty for
    /// an unknown category).
    pub fn fields_with_tags<I, S>(&self, category: &CategoryId, tags: I) -> BTreeSet<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let Some(cat) = self.categories.get(category) else {
            return BTreeSet::new();
        };
        let tags: Vec<S> = tags.into_iter().collect();
        cat.fields
            .values()
            .filter(|f| tags.iter().any(|t| f.tags.contains(t.as_ref())))
            .map(|f| f.name.clone())
            .collect()
    }

    /// Check a record body (as the local API receives it) against its category and
    /// normalise it into protocol values: `text`, `decimal`, `date`, `timestamp` and
    /// `enum` become [`Value::Text`] in normal form, `integer` [`Value::Int`], `bool`
    /// [`Value::Bool`], `text_list` [`Value::TextList`]. A `null` counts as absent.
    /// Every problem is reported, each naming its field.
    pub fn validate_body(
        &self,
        category: &CategoryId,
        body: &serde_json::Map<String, Json>,
    ) -> Result<BTreeMap<String, Value>, Vec<BodyError>> {
        let Some(cat) = self.categories.get(category) else {
            return Err(vec![BodyError::UnknownCategory(category.to_string())]);
        };
        if body.len() > MAX_FIELDS_PER_CATEGORY {
            return Err(vec![BodyError::TooManyFields { count: body.len(), max: MAX_FIELDS_PER_CATEGORY }]);
        }
        let mut errors = Vec::new();
        let mut out = BTreeMap::new();
        for (name, json) in body {
            let Some(field) = cat.fields.get(name) else {
                errors.push(BodyError::UnknownField {
                    field: name.clone(),
                    category: category.to_string(),
                    known: cat.fields.keys().cloned().collect::<Vec<_>>().join(", "),
                });
                continue;
            };
            if json.is_null() {
                continue;
            }
            match normalise(field, json) {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        for field in cat.fields.values().filter(|f| f.required) {
            if body.get(&field.name).is_none_or(Json::is_null) {
                errors.push(BodyError::MissingField { field: field.name.clone() });
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Whether `value`, which another member signed for field `name` of `category`, is
    /// what ingest here would have made of it: of the field's type, within its limits and
    /// in normal form. A received value is held to the rules of one ingested here, which
    /// both sides' agreement terms cover (each digest covers the catalog's definitions of
    /// the agreement's categories).
    pub fn check_value(&self, category: &CategoryId, name: &str, value: &Value) -> Result<(), BodyError> {
        let Some(cat) = self.categories.get(category) else {
            return Err(BodyError::UnknownCategory(category.to_string()));
        };
        let Some(field) = cat.fields.get(name) else {
            return Err(BodyError::UnknownField {
                field: name.to_owned(),
                category: category.to_string(),
                known: cat.fields.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        if normalise(field, &value.to_json())? == *value {
            Ok(())
        } else {
            Err(BodyError::Invalid {
                field: name.to_owned(),
                reason: format!("{} is not in the normal form of a {} field", value.to_json(), field.ty),
            })
        }
    }
}

/// Whether a time falls in the years 0000 to 9999 in UTC. The normal form of a time is
/// UTC RFC 3339, which has four-digit years: an offset can carry
/// 9999-12-31T23:59:59-01:00 into year 10000 (or 0000-01-01T00:00:00+01:00 into year -1),
/// whose normal form no node would accept back.
pub fn in_rfc3339_years(t: &DateTime<Utc>) -> bool {
    (0..=9999).contains(&t.year())
}

/// One field's JSON value, checked and in normal form.
fn normalise(field: &Field, json: &Json) -> Result<Value, BodyError> {
    let name = &field.name;
    let wrong =
        || BodyError::WrongType { field: name.clone(), expected: field.ty.expected(), got: json_type(json) };
    let invalid = |reason: String| BodyError::Invalid { field: name.clone(), reason };
    let max_chars = field.max_len.unwrap_or(MAX_FIELD_LEN);
    let check_len = |s: &str| {
        let n = s.chars().count();
        let max_bytes = tamga_protocol::limits::MAX_VALUE_BYTES;
        if n > max_chars {
            Err(BodyError::TooLong { field: name.clone(), len: n, max: max_chars })
        } else if s.len() > max_bytes {
            Err(BodyError::TooManyBytes { field: name.clone(), len: s.len(), max: max_bytes })
        } else {
            Ok(())
        }
    };
    match field.ty {
        FieldType::Text => {
            let s = json.as_str().ok_or_else(wrong)?;
            check_len(s)?;
            Ok(Value::Text(s.to_owned()))
        }
        FieldType::Integer => match json {
            Json::Number(n) => match n.as_i64() {
                Some(i) => Ok(Value::Int(i)),
                None if n.is_u64() => Err(invalid(format!("{n} is out of the 64-bit integer range"))),
                None => Err(invalid(format!("{n} is not a whole number"))),
            },
            _ => Err(wrong()),
        },
        FieldType::Decimal => {
            let text = match json {
                Json::Number(n) => decimal_of_number(n).map_err(invalid)?,
                Json::String(s) => s.clone(),
                _ => return Err(wrong()),
            };
            normalise_decimal(&text).map(Value::Text).map_err(invalid)
        }
        FieldType::Bool => json.as_bool().map(Value::Bool).ok_or_else(wrong),
        FieldType::Date => {
            let s = json.as_str().ok_or_else(wrong)?;
            parse::parse_date(s)
                .map(|d| Value::Text(d.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| invalid(format!("{s:?} is not a date YYYY-MM-DD")))
        }
        FieldType::Timestamp => {
            let s = json.as_str().ok_or_else(wrong)?;
            if s.len() > 64 {
                return Err(invalid("is not an RFC 3339 timestamp".to_owned()));
            }
            let utc = DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                invalid(format!("{s:?} is not an RFC 3339 timestamp such as 2013-08-13T09:30:00+04:00"))
            })?;
            if !in_rfc3339_years(&utc) {
                return Err(invalid(format!("{s:?} falls outside the years 0000 to 9999 in UTC")));
            }
            Ok(Value::Text(utc.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        }
        FieldType::Enum => {
            let s = json.as_str().ok_or_else(wrong)?;
            if field.values.iter().any(|v| v == s) {
                Ok(Value::Text(s.to_owned()))
            } else {
                Err(BodyError::NotAllowed {
                    field: name.clone(),
                    value: s.chars().take(64).collect(),
                    allowed: field.values.join(", "),
                })
            }
        }
        FieldType::TextList => {
            let items = json.as_array().ok_or_else(wrong)?;
            if items.len() > MAX_LIST_ITEMS {
                return Err(BodyError::TooManyItems {
                    field: name.clone(),
                    len: items.len(),
                    max: MAX_LIST_ITEMS,
                });
            }
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let s = item.as_str().ok_or_else(|| BodyError::WrongType {
                    field: name.clone(),
                    expected: "an array of strings",
                    got: "an array with a non-string item",
                })?;
                check_len(s)?;
                list.push(s.to_owned());
            }
            let value = Value::TextList(list);
            let bytes = value.text_len();
            if bytes > tamga_protocol::limits::MAX_VALUE_BYTES {
                return Err(BodyError::TooLong {
                    field: name.clone(),
                    len: bytes,
                    max: tamga_protocol::limits::MAX_VALUE_BYTES,
                });
            }
            Ok(value)
        }
    }
}

/// The most significant digits a JSON number may carry into a `decimal` field: every
/// decimal of at most 15 significant digits reads back from the nearest f64 as itself.
const MAX_EXACT_NUMBER_DIGITS: usize = 15;

/// The text of a JSON number given for a `decimal` field, refused unless it is certainly
/// the value sent. Integers in i64 or u64 are exact. Any other number has been read as
/// an f64: it is kept only if the shortest text that reads back as that f64 has at most
/// [`MAX_EXACT_NUMBER_DIGITS`] significant digits, and then in positional form (`1e3` →
/// `1000`), so the digit limit of [`normalise_decimal`] applies as to a string. A number
/// of more digits may have been rounded, and the record would cover a value never sent.
///
/// Only strings are exact: without its text, a number that rounds to the same f64 as a
/// short one cannot be told from it (`0.1000000000000000055511151231257827` is kept as
/// `0.1`).
fn decimal_of_number(n: &serde_json::Number) -> Result<String, String> {
    if let Some(i) = n.as_i64() {
        return Ok(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        return Ok(u.to_string());
    }
    let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| format!("{n} is not a finite number"))?;
    // `{:e}` is the shortest text that reads back as `f`, such as `1.2345678901234568e29`.
    let shortest = format!("{f:e}");
    let mantissa = shortest.split_once('e').map_or(shortest.as_str(), |(m, _)| m);
    if mantissa.bytes().filter(u8::is_ascii_digit).count() > MAX_EXACT_NUMBER_DIGITS {
        return Err(format!(
            "the number {n} may have lost digits in transit as a JSON number; send decimals of \
             more than {MAX_EXACT_NUMBER_DIGITS} significant digits as a string"
        ));
    }
    // `{}` is the same shortest digits, never in exponent form.
    Ok(format!("{f}"))
}

/// A decimal in normal form: optional `-`, no leading zeros (but one before the point),
/// no trailing zeros after the point, no point without digits after it, no `-0`.
pub fn normalise_decimal(s: &str) -> Result<String, String> {
    let bad =
        || format!("{:?} is not a decimal number such as 12.50", s.chars().take(64).collect::<String>());
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let significant = int.len() + frac.len();
    if significant > MAX_DECIMAL_DIGITS {
        return Err(format!("more than {MAX_DECIMAL_DIGITS} significant digits"));
    }
    let mut out = String::with_capacity(significant + 3);
    if neg && significant > 0 {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Ok(out)
}

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    // Not `Spanned<RawCategory>`: toml 0.8 cannot span a table that is only implied by
    // a dotted header such as `[category."x".fields.y]`; positions come from the keys.
    category: BTreeMap<Spanned<String>, RawCategory>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    title: Option<Spanned<String>>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, RawField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    ty: Spanned<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    max_len: Option<Spanned<i64>>,
    values: Option<Spanned<Vec<Spanned<String>>>>,
    #[allow(dead_code)] // documentation for the reader of the file; not used by tamga
    description: Option<String>,
}

/// Parse and check a catalog. Returns the catalog (if the file parsed) and every problem.
pub(crate) fn parse(src: &SourceFile) -> (Option<Catalog>, Vec<ConfigError>) {
    let raw: RawCatalog = match src.parse() {
        Ok(r) => r,
        Err(e) => return (None, vec![e]),
    };
    let mut errs = Vec::new();
    if raw.category.is_empty() {
        errs.push(
            src.error_at(ErrorKind::Invalid, Pos { line: 1, col: 1 }, "the catalog defines no categories")
                .with_hint(
                    "add a [category.\"name\"] table with its [category.\"name\".fields.FIELD] tables",
                ),
        );
    }
    if raw.category.len() > MAX_CATEGORIES {
        errs.push(src.error_at(
            ErrorKind::TooMany,
            Pos { line: 1, col: 1 },
            format!("{} categories, more than the limit of {MAX_CATEGORIES}", raw.category.len()),
        ));
    }
    let mut categories = BTreeMap::new();
    let mut all_tags = BTreeSet::new();
    for (key, table) in &raw.category {
        let id = match parse::identifier::<CategoryId>(src, key) {
            Ok(id) => id.value,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        let line = src.pos(key.span().start).line;
        let c = table;
        let title =
            c.title.as_ref().and_then(|t| parse::title(src, "title", t).map_err(|e| errs.push(e)).ok());
        if c.fields.is_empty() {
            errs.push(src.error(ErrorKind::Invalid, &key.span(), format!("category {id} has no fields")));
        }
        if c.fields.len() > MAX_FIELDS_PER_CATEGORY {
            errs.push(src.error(
                ErrorKind::TooMany,
                &key.span(),
                format!(
                    "category {id} has {} fields, more than the limit of {MAX_FIELDS_PER_CATEGORY}",
                    c.fields.len()
                ),
            ));
        }
        let mut fields = BTreeMap::new();
        for (fkey, ftable) in &c.fields {
            if let Some(f) = field(src, fkey, ftable, &mut errs) {
                all_tags.extend(f.tags.iter().cloned());
                fields.insert(f.name.clone(), f);
            }
        }
        categories.insert(id.clone(), Category { id, title, fields, line });
    }
    let catalog =
        Catalog { categories, tags: all_tags, digest: src.digest(), path: src.path().to_path_buf() };
    (Some(catalog), errs)
}

fn field(
    src: &SourceFile,
    key: &Spanned<String>,
    f: &RawField,
    errs: &mut Vec<ConfigError>,
) -> Option<Field> {
    let name = parse::name(src, "field name", key).map_err(|e| errs.push(e)).ok()?;
    let line = src.pos(key.span().start).line;
    let Some(ty) = FieldType::ALL.into_iter().find(|t| t.as_str() == f.ty.get_ref()) else {
        errs.push(
            src.error(
                ErrorKind::Invalid,
                &f.ty.span(),
                format!("field {}: type {:?} is not a field type", name.value, f.ty.get_ref()),
            )
            .with_hint(format!("field types: {}", FieldType::ALL.map(FieldType::as_str).join(", "))),
        );
        return None;
    };
    if f.tags.len() > MAX_TAGS_PER_FIELD {
        errs.push(src.error(
            ErrorKind::TooMany,
            &key.span(),
            format!("field {}: more than {MAX_TAGS_PER_FIELD} tags", name.value),
        ));
    }
    let mut tags = BTreeSet::new();
    for t in &f.tags {
        if let Ok(tag) = parse::name(src, "tag", t).map_err(|e| errs.push(e)) {
            tags.insert(tag.value);
        }
    }
    let max_len = match &f.max_len {
        None => None,
        Some(m) if !ty.has_len() => {
            errs.push(src.error(
                ErrorKind::Invalid,
                &m.span(),
                format!("field {}: `max_len` applies to text and text_list fields, not {ty}", name.value),
            ));
            None
        }
        Some(m) => match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=MAX_FIELD_LEN).contains(&n) => Some(n),
            _ => {
                errs.push(src.error(
                    ErrorKind::Invalid,
                    &m.span(),
                    format!("field {}: `max_len` {} is outside 1..={MAX_FIELD_LEN}", name.value, m.get_ref()),
                ));
                None
            }
        },
    };
    let mut values = Vec::new();
    match (&f.values, ty) {
        (None, FieldType::Enum) => errs.push(src.error(
            ErrorKind::MissingKey,
            &key.span(),
            format!("field {}: an enum field needs `values`", name.value),
        )),
        (Some(v), FieldType::Enum) => {
            if v.get_ref().is_empty() || v.get_ref().len() > MAX_ENUM_VALUES {
                errs.push(src.error(
                    ErrorKind::Invalid,
                    &v.span(),
                    format!("field {}: `values` must list 1 to {MAX_ENUM_VALUES} values", name.value),
                ));
            }
            for item in v.get_ref() {
                let s = item.get_ref();
                if s.is_empty() || s.len() > tamga_protocol::limits::MAX_IDENTIFIER_LEN {
                    errs.push(src.error(
                        ErrorKind::Invalid,
                        &item.span(),
                        format!("field {}: enum value {s:?} must be 1 to 64 bytes", name.value),
                    ));
                } else if values.contains(s) {
                    errs.push(src.error(
                        ErrorKind::Duplicate,
                        &item.span(),
                        format!("field {}: enum value {s:?} is listed twice", name.value),
                    ));
                } else {
                    values.push(s.clone());
                }
            }
        }
        (Some(v), _) => errs.push(src.error(
            ErrorKind::Invalid,
            &v.span(),
            format!("field {}: `values` applies to enum fields, not {ty}", name.value),
        )),
        (None, _) => {}
    }
    Some(Field { name: name.value, ty, required: f.required, tags, max_len, values, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_normalise() {
        for (input, want) in [
            ("12.50", "12.5"),
            ("0012", "12"),
            ("0.000", "0"),
            ("-0.0", "0"),
            ("-001.010", "-1.01"),
            ("0.5", "0.5"),
            ("100", "100"),
        ] {
            assert_eq!(normalise_decimal(input).as_deref(), Ok(want), "{input}");
        }
        for bad in ["", "-", ".5", "5.", "1e3", "+1", "1.2.3", " 1", "١"] {
            assert!(normalise_decimal(bad).is_err(), "{bad:?}");
        }
    }
}

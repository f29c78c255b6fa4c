//! Errors in tamga's files, and the source text they point into.
//!
//! This module owns [`ConfigError`] (one problem: file, line, column, message, hint),
//! [`ConfigErrors`] (every problem found in one load), [`SourceFile`] (a file's path and
//! text, with the byte-offset to line/column mapping) and the translation of `toml`
//! errors into ours. It never decides what happens next: the node prints, audits or
//! refuses; this module only describes.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tamga_protocol::Digest;

use crate::limits::MAX_FILE_BYTES;

/// What kind of problem a [`ConfigError`] reports. The message says which item; the kind
/// lets a caller (or a test) tell problems apart without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file or directory could not be read (missing, unreadable, not UTF-8, too big).
    Io,
    /// The file is not valid TOML, or a value has the wrong TOML type.
    Syntax,
    /// A key that this table does not have (a typo, or a setting of another file).
    UnknownKey,
    /// A key that this table must have is absent.
    MissingKey,
    /// A value is malformed or out of range (a bad code, address, date, number).
    Invalid,
    /// Something that must be unique appears twice (member code, PeerId, agreement id, …).
    Duplicate,
    /// A member code that the roster does not list.
    UnknownMember,
    /// A category that the catalog does not define.
    UnknownCategory,
    /// A field name that the category does not define.
    UnknownField,
    /// A tag that no field of the catalog carries.
    UnknownTag,
    /// Dates in the wrong order (effective before signed, until before from).
    DateOrder,
    /// An agreement with fewer than two parties.
    TooFewParties,
    /// A policy that would share `confidential` or `secret` records (invariant 2).
    Classified,
    /// A PeerId whose ed25519 key is weak (of small order).
    WeakKey,
    /// A PeerId that is not an inlined ed25519 key.
    NotEd25519,
    /// Two files disagree on which member this node is.
    MemberMismatch,
    /// More items than a named limit allows.
    TooMany,
}

/// One problem in one file. Shown as `path:line:col: message`, and `  hint: …` on the
/// next line when there is a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// The file (as the loader was given it, joined to the directory of `node.toml`).
    pub path: PathBuf,
    /// Line, from 1. `0` when the problem concerns the whole file (it could not be read).
    pub line: usize,
    /// Column in characters, from 1. `0` together with `line`.
    pub col: usize,
    /// What is wrong, naming the item.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl ConfigError {
    /// A problem with a whole file or directory (no position).
    pub fn whole_file(kind: ErrorKind, path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError { kind, path: path.to_path_buf(), line: 0, col: 0, message: message.into(), hint: None }
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)?;
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.col, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found while loading a set of files, sorted by file, line and column.
/// Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> ConfigErrors {
        errors.sort_by(|a, b| (&a.path, a.line, a.col).cmp(&(&b.path, b.line, b.col)));
        errors.dedup();
        ConfigErrors(errors)
    }

    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never true for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A position in a file: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

/// A configuration file's path and text, with what is needed to turn byte spans
/// into lines and columns. The digest of a file is the SHA-256 of exactly these bytes.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// A file from text already in memory (tests, `policy check` of an edited file).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { path: path.into(), text, line_starts }
    }

    /// Read a file, refusing what is not a regular file, files over [`MAX_FILE_BYTES`]
    /// (also one that grows past it while read) and text that is not UTF-8 (at the line
    /// and column of its first byte that is not).
    pub fn read(path: &Path) -> Result<SourceFile, ConfigError> {
        use std::io::Read;
        let too_big = |len: u64| {
            ConfigError::whole_file(
                ErrorKind::Io,
                path,
                format!("file is {len} bytes, more than the limit of {MAX_FILE_BYTES}"),
            )
        };
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
        if !meta.is_file() {
            // A FIFO would block the read (and a reload with it) until someone writes.
            return Err(ConfigError::whole_file(ErrorKind::Io, path, "not a regular file"));
        }
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(too_big(meta.len()));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| io_error(path, &e))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(too_big(bytes.len() as u64));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let byte = bytes.get(valid).copied().unwrap_or(0);
            let before = SourceFile::new(path, String::from_utf8_lossy(&bytes[..valid]).into_owned());
            before.error_at(
                ErrorKind::Io,
                before.pos(valid),
                format!("file is not UTF-8 text: byte 0x{byte:02x} is not valid there"),
            )
        })?;
        Ok(SourceFile::new(path, text))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the file's bytes.
    pub fn digest(&self) -> Digest {
        Digest::of(self.text.as_bytes())
    }

    /// Line and column (from 1, column in characters) of a byte offset.
    pub fn pos(&self, byte: usize) -> Pos {
        let byte = byte.min(self.text.len());
        let line_idx = self.line_starts.partition_point(|&s| s <= byte).saturating_sub(1);
        let start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let col = match self.text.get(start..byte) {
            Some(s) => s.chars().count() + 1,
            None => byte - start + 1,
        };
        Pos { line: line_idx + 1, col }
    }

    /// An error at the start of a byte span.
    pub(crate) fn error(
        &self,
        kind: ErrorKind,
        span: &Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at(kind, self.pos(span.start), message)
    }

    /// An error at a position.
    pub(crate) fn error_at(&self, kind: ErrorKind, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            path: self.path.clone(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
            hint: None,
        }
    }

    /// Parse the text as TOML into `T`. A syntax error, a wrong type, an unknown or a
    /// missing key stops this file: the one error is returned.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str::<T>(&self.text).map_err(|e| self.toml_error(&e))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or("");
            let allowed = rest.split_once("expected").map(|(_, list)| backticked(list)).unwrap_or_default();
            let hint = if allowed.is_empty() {
                "no keys are allowed here".to_owned()
            } else {
                format!("allowed keys here: {}", allowed.join(", "))
            };
            return self.error(ErrorKind::UnknownKey, &span, format!("unknown key `{key}`")).with_hint(hint);
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or("");
            return self.error(ErrorKind::MissingKey, &span, format!("missing key `{key}`"));
        }
        if message.is_empty() {
            // The toml crate gives some syntax errors no message (a control character in
            // a comment, for one): say what is at the position instead of nothing.
            return self.error(ErrorKind::Syntax, &span, self.unexpected_at(span.start));
        }
        self.error(ErrorKind::Syntax, &span, message.replace('\n', "; "))
    }

    /// What is at a byte offset where the TOML parser stopped without saying why.
    fn unexpected_at(&self, byte: usize) -> String {
        match self.text.get(byte..).and_then(|rest| rest.chars().next()) {
            Some(c) if c.is_control() => format!(
                "control character U+{:04X} is not allowed here (TOML allows only tab and newlines outside escaped strings)",
                u32::from(c)
            ),
            Some(c) => format!("invalid TOML: unexpected {c:?}"),
            None => "invalid TOML: unexpected end of file".to_owned(),
        }
    }
}

/// The names between backticks in serde's "expected `a`, `b` or `c`".
fn backticked(list: &str) -> Vec<&str> {
    list.split('`').skip(1).step_by(2).collect()
}

pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> ConfigError {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => Some("paths in node.toml are relative to the directory of node.toml"),
        _ => None,
    };
    let err = ConfigError::whole_file(ErrorKind::Io, path, format!("cannot read: {e}"));
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// A value with the position it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) pos: Pos,
}

#[cfg(test)]
mod tests {
    use super::*;

    // A file that is not UTF-8 is refused at the line and column of its first invalid
    // byte; one that is not a regular file (a FIFO would block the read) is refused too.
    #[test]
    fn a_file_that_is_not_utf8_text_is_refused_where_it_stops_being() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("roster.toml");
        std::fs::write(&path, b"member = \"RU\"\nname = \"R\xc3\xa9\xff\"\n").expect("writes");
        let e = SourceFile::read(&path).expect_err("not UTF-8");
        assert_eq!((e.line, e.col), (2, 11), "{e}");
        assert!(e.message.contains("not UTF-8 text: byte 0xff"), "{e}");
        let e = SourceFile::read(dir.path()).expect_err("a directory");
        assert!(e.message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = SourceFile::new("x.toml", "a = 1\nné = \"x\"\n");
        assert_eq!(src.pos(0), Pos { line: 1, col: 1 });
        assert_eq!(src.pos(6), Pos { line: 2, col: 1 });
        // 'é' is two bytes: the space after it is byte 9, column 3.
        assert_eq!(src.pos(9), Pos { line: 2, col: 3 });
        assert_eq!(src.pos(1000).line, 3);
    }

    #[test]
    fn display_has_position_and_hint() {
        let e = SourceFile::new("p.toml", "x").error_at(ErrorKind::Invalid, Pos { line: 3, col: 7 }, "bad");
        assert_eq!(e.with_hint("fix it").to_string(), "p.toml:3:7: bad\n  hint: fix it");
        let e = ConfigError::whole_file(ErrorKind::Io, Path::new("q.toml"), "cannot read");
        assert_eq!(e.to_string(), "q.toml: cannot read");
    }
}

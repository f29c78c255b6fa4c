//! The data model shared by every part of tamga: members, categories, agreements,
//! classifications, field values, records and the digests that name them.
//!
//! Every type here validates on construction from untrusted text (`FromStr`, `TryFrom`)
//! and on deserialization, so a value of one of these types is always well formed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::limits;

/// Why a piece of text is not a valid identifier, code or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A member code must be two ASCII capital letters (ISO 3166 alpha-2, or a user-assigned code such as `XS`).
    #[error("member code {0:?} is not two capital letters (ISO 3166 alpha-2, e.g. RU)")]
    MemberCode(String),
    /// Category and agreement identifiers are lowercase ASCII letters, digits, `.`, `_` and `-`.
    #[error(
        "identifier {0:?} must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter"
    )]
    Identifier(String),
    /// The classification is not one of the four levels.
    #[error("classification {0:?} is not one of public, non_confidential, confidential, secret")]
    Classification(String),
    /// A digest must be 64 hexadecimal characters.
    #[error("{0:?} is not a digest (64 hexadecimal characters)")]
    Digest(String),
}

/// A member of the federation: a customs service, named by its ISO 3166 alpha-2 code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberCode([u8; 2]);

impl MemberCode {
    /// The code as a string slice (always two ASCII capital letters).
    pub fn as_str(&self) -> &str {
        // Construction only admits ASCII capitals, which are valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two bytes of the code.
    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }
}

impl FromStr for MemberCode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(MemberCode([*a, *b])),
            _ => Err(ParseError::MemberCode(s.to_owned())),
        }
    }
}

impl fmt::Display for MemberCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MemberCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MemberCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MemberCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn valid_identifier(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= limits::MAX_IDENTIFIER_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if valid_identifier(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(ParseError::Identifier(s.to_owned()))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A record category from the catalog, such as `ipr.protected_mark`.
    CategoryId
);
identifier!(
    /// An agreement's identifier, such as `sco-ipr-2012`.
    AgreementId
);

/// How sensitive a record is. Only `public` and `non_confidential` records are ever
/// projected to a peer (invariant 2); the other two never leave the node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// Open information.
    Public,
    /// Not confidential; may be shared under an agreement.
    NonConfidential,
    /// Never leaves the node.
    Confidential,
    /// Never leaves the node.
    Secret,
}

impl Classification {
    /// All four levels, from least to most sensitive.
    pub const ALL: [Classification; 4] = [
        Classification::Public,
        Classification::NonConfidential,
        Classification::Confidential,
        Classification::Secret,
    ];

    /// Whether a record of this level may ever cross the wire.
    pub fn may_leave_node(self) -> bool {
        matches!(self, Classification::Public | Classification::NonConfidential)
    }

    /// The name used in files, the API and the canonical encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::NonConfidential => "non_confidential",
            Classification::Confidential => "confidential",
            Classification::Secret => "secret",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Classification::Public => 0,
            Classification::NonConfidential => 1,
            Classification::Confidential => 2,
            Classification::Secret => 3,
        }
    }
}

impl FromStr for Classification {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Classification::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseError::Classification(s.to_owned()))
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SHA-256 digest. Shown as 64 lowercase hexadecimal characters in text and JSON,
/// carried as 32 raw bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lowercase hexadecimal form.
    pub fn to_hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// The lowercase hexadecimal form as ASCII bytes, on the stack: digests are shown in
    /// every audit entry, so showing one allocates nothing.
    pub fn hex_bytes(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        out
    }

    /// `f` of the lowercase hexadecimal form.
    fn with_hex<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(std::str::from_utf8(&self.hex_bytes()).expect("hexadecimal is ASCII"))
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseError::Digest(s.to_owned()))?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_hex(|h| f.write_str(h))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_hex(|h| f.write_str(&h[..16]))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.with_hex(|h| s.serialize_str(h))
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Digest(<[u8; 32]>::deserialize(d)?))
        }
    }
}

/// The identity of a record: the digest of its header and its sorted field digests.
/// The same record has the same id on every node, whatever was redacted.
pub type RecordId = Digest;

/// A field value. Catalog types map onto these four shapes; dates, timestamps and
/// decimals are carried as text in their normalised form (the catalog normalises them).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Value {
    /// `true` or `false`.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// UTF-8 text (also dates, timestamps, decimals and enumerations, normalised).
    Text(String),
    /// A list of texts.
    #[serde(deserialize_with = "crate::bounded::seq")]
    TextList(Vec<String>),
}

impl Value {
    /// The value as plain JSON (what the local API shows and accepts).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::TextList(l) => {
                serde_json::Value::Array(l.iter().map(|s| serde_json::Value::String(s.clone())).collect())
            }
        }
    }

    /// Bytes of text this value holds, for size limits.
    pub fn text_len(&self) -> usize {
        match self {
            Value::Bool(_) | Value::Int(_) => 8,
            Value::Text(s) => s.len(),
            Value::TextList(l) => l.iter().map(|s| s.len() + 4).sum(),
        }
    }
}

/// The part of a record every projection reveals: what it is, how sensitive, whose and when.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RecordHeader {
    /// The catalog category.
    pub category: CategoryId,
    /// The sensitivity level.
    pub classification: Classification,
    /// The member whose node created the record.
    pub origin: MemberCode,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub created_ms: i64,
    /// A record of the same origin this one replaces, if any.
    pub supersedes: Option<RecordId>,
    /// When the record stops being valid, milliseconds since the Unix epoch, if ever.
    pub expires_ms: Option<i64>,
}

/// A whole record as its origin holds it: header and every body field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The header.
    pub header: RecordHeader,
    /// The body fields by name (names are catalog field names).
    pub body: BTreeMap<String, Value>,
}

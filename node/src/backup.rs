//! The backup format: the project's own, versioned, independent of sled's on-disk format.
//!
//! ```text
//! magic    "TAMGA-BACKUP\n"        13 bytes
//! version  u32 BE (1)
//! schema   u32 BE (the store schema the keys follow)
//! count    u64 BE
//! count ×  key length u32 BE, key, value length u32 BE, value
//! digest   SHA-256 of every byte before it, 32 bytes
//! ```
//!
//! A backup is taken by the writer task between two write groups, so it holds a
//! prefix-consistent state: every record with its indexes and audit entries, or none.
//!
//! The schema is written twice: in the header, and as the store's own schema marker
//! (`Mschema`) among the keys, which a restore writes over the new store's. A backup whose
//! two disagree is refused, since the store restored from it would be marked a schema its
//! keys do not follow (or one `tamga run` refuses).
//!
//! A file is read header first ([`check_header`]): the magic bytes, the version and a
//! count of items its length can hold, before anything else of it is read, so that a file
//! of other bytes is refused without being read whole.
//!
//! The magic bytes and the closing digest are the envelope every format version keeps:
//! [`check_envelope`] checks them and only them, so that a `tamga` older than the node
//! that sent a backup can tell a damaged one from one it cannot read. Whether this build
//! reads its version and schema is for [`decode`], at restore.

use tamga_protocol::Digest;

use crate::store::{schema_readable, SCHEMA_KEY, SCHEMA_VERSION, UPGRADES_FROM};
use crate::writer::Snapshot;

/// The magic bytes that open a backup.
pub const MAGIC: &[u8; 13] = b"TAMGA-BACKUP\n";
/// The backup format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest key or value accepted when reading a backup.
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of the header: magic, version, schema and count.
pub const HEADER_BYTES: usize = MAGIC.len() + 4 + 4 + 8;
/// Bytes of the digest that closes a backup.
const DIGEST_BYTES: usize = 32;
/// The shortest backup: a header and a digest, no items.
const MIN_BYTES: usize = HEADER_BYTES + DIGEST_BYTES;

/// Why a backup could not be read. Nothing was restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a tamga backup.
    #[error("not a tamga backup (bad magic bytes)")]
    Magic,
    /// Another format version.
    #[error("backup format version {0} is not supported by this build (it reads {VERSION})")]
    Version(u32),
    /// Another store schema.
    #[error("backup of store schema {0}; this build reads schema {SCHEMA_VERSION} and upgrades the older schemas from {UPGRADES_FROM}")]
    Schema(u32),
    /// The file opens as a backup but is shorter than a header and digest.
    #[error("the backup is truncated: {0} bytes, fewer than the {MIN_BYTES} of its header and digest")]
    Short(u64),
    /// The header counts more items than the file's length can hold (each is at least its
    /// two lengths).
    #[error(
        "the backup's header counts {count} items, more than its {len} bytes can hold: truncated or damaged"
    )]
    Count {
        /// The items the header counts.
        count: u64,
        /// The file's length.
        len: u64,
    },
    /// The items end before the count of the header does.
    #[error("the backup is truncated: it ends before the last of the items its header counts")]
    Truncated,
    /// There are bytes between the last item and the digest.
    #[error("the backup has bytes after the last of the items its header counts")]
    Trailing,
    /// A key or value longer than [`MAX_ITEM_BYTES`].
    #[error("the backup holds a key or value of {0} bytes, over the limit of {MAX_ITEM_BYTES} bytes")]
    ItemTooLarge(usize),
    /// The digest does not match: the file was changed or damaged.
    #[error("the backup's digest does not match its contents (damaged or altered)")]
    Digest,
    /// The schema marker among the keys is not the schema of the header.
    #[error(
        "the backup's header says store schema {header} but {marker}: the backup was altered or damaged"
    )]
    SchemaMarker {
        /// The schema the header gives.
        header: u32,
        /// What the keys hold instead.
        marker: Marker,
    },
}

/// A backup's schema marker (its `Mschema` pair) where it is not the header's schema.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    /// No marker: every store holds one, so every backup taken of one does.
    Missing,
    /// Another schema number.
    Schema(u32),
    /// A value of this many bytes, which is no schema number (4 bytes).
    Length(usize),
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Marker::Missing => write!(f, "it holds no schema marker (Mschema)"),
            Marker::Schema(n) => write!(f, "its schema marker (Mschema) says schema {n}"),
            Marker::Length(n) => {
                write!(f, "its schema marker (Mschema) is {n} bytes long, not a 4-byte schema number")
            }
        }
    }
}

/// Whether the schema marker among `pairs` is the header's `schema`, once or more.
fn check_marker(schema: u32, pairs: &Snapshot) -> Result<(), BackupError> {
    let mut found = false;
    for (_, v) in pairs.iter().filter(|(k, _)| k.as_slice() == SCHEMA_KEY) {
        let marker = match <[u8; 4]>::try_from(v.as_slice()) {
            Ok(b) if u32::from_be_bytes(b) == schema => {
                found = true;
                continue;
            }
            Ok(b) => Marker::Schema(u32::from_be_bytes(b)),
            Err(_) => Marker::Length(v.len()),
        };
        return Err(BackupError::SchemaMarker { header: schema, marker });
    }
    if found {
        Ok(())
    } else {
        Err(BackupError::SchemaMarker { header: schema, marker: Marker::Missing })
    }
}

/// What a backup's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The store schema its keys follow (not checked here: see [`decode`]).
    pub schema: u32,
    /// The items it counts.
    pub count: u64,
}

/// Whether `head` opens with the magic bytes, or with as many of them as it holds: a file
/// cut inside its magic bytes is a backup cut short too.
fn opens_with_magic(head: &[u8]) -> bool {
    MAGIC.starts_with(&head[..head.len().min(MAGIC.len())])
}

/// Check the header of a backup of `len` bytes from its first bytes, `head` (its first
/// [`HEADER_BYTES`], or all of it if shorter; more are ignored): the magic bytes, the
/// format version, and a count of items `len` can hold. Nothing after the header is read.
pub fn check_header(head: &[u8], len: u64) -> Result<Header, BackupError> {
    let head = &head[..head.len().min(HEADER_BYTES)];
    if !opens_with_magic(head) {
        return Err(BackupError::Magic);
    }
    if len < MIN_BYTES as u64 {
        return Err(BackupError::Short(len));
    }
    let mut r = Reader { b: head.get(MAGIC.len()..).ok_or(BackupError::Truncated)? };
    let version = r.u32()?;
    if version != VERSION {
        return Err(BackupError::Version(version));
    }
    let schema = r.u32()?;
    let count = r.u64()?;
    let least = count.checked_mul(8).and_then(|items| items.checked_add(MIN_BYTES as u64));
    if least.is_none_or(|least| least > len) {
        return Err(BackupError::Count { count, len });
    }
    Ok(Header { schema, count })
}

/// Check a backup's envelope, which every format version keeps: the magic bytes, a length
/// of at least a header and a digest, and the digest over everything before it. What the
/// CLI checks of a backup the node sent before keeping it; whether this build can read its
/// version and schema is left to [`decode`].
pub fn check_envelope(bytes: &[u8]) -> Result<(), BackupError> {
    if !opens_with_magic(bytes) {
        return Err(BackupError::Magic);
    }
    if bytes.len() < MIN_BYTES {
        return Err(BackupError::Short(bytes.len() as u64));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
    if Digest::of(body).0 != digest {
        return Err(BackupError::Digest);
    }
    Ok(())
}

/// Encode a snapshot.
pub fn encode(snap: &Snapshot) -> Vec<u8> {
    let size: usize = snap.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(64 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    out.extend_from_slice(&(snap.len() as u64).to_be_bytes());
    for (k, v) in snap {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    let d = Digest::of(&out);
    out.extend_from_slice(&d.0);
    out
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        if self.b.len() < n {
            return Err(BackupError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, BackupError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, BackupError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn item(&mut self) -> Result<Vec<u8>, BackupError> {
        let n = self.u32()? as usize;
        if n > MAX_ITEM_BYTES {
            return Err(BackupError::ItemTooLarge(n));
        }
        Ok(self.take(n)?.to_vec())
    }
}

/// Decode and check a backup.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, BackupError> {
    let Header { schema, count } = check_header(bytes, bytes.len() as u64)?;
    check_envelope(bytes)?;
    if !schema_readable(schema) {
        return Err(BackupError::Schema(schema));
    }
    let items = bytes.get(HEADER_BYTES..bytes.len() - DIGEST_BYTES).ok_or(BackupError::Truncated)?;
    let mut r = Reader { b: items };
    let mut out = Vec::new();
    for _ in 0..count {
        let k = r.item()?;
        let v = r.item()?;
        out.push((k, v));
    }
    if !r.b.is_empty() {
        return Err(BackupError::Trailing);
    }
    check_marker(schema, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of this schema, with one other key.
    fn snap() -> Snapshot {
        vec![
            (SCHEMA_KEY.to_vec(), SCHEMA_VERSION.to_be_bytes().to_vec()),
            (b"Rx".to_vec(), b"value".to_vec()),
        ]
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let b = encode(&snap());
        assert_eq!(decode(&b).expect("decodes"), snap());
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(decode(&c).is_err(), "flip at {i} accepted");
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }

    // A restore writes the backup's marker over the new store's: one that is not the
    // header's schema would leave a store marked a schema its keys do not follow.
    #[test]
    fn a_schema_marker_other_than_the_headers_is_refused_naming_both() {
        let with = |marker: Option<Vec<u8>>| {
            let mut s = snap();
            match marker {
                Some(m) => s[0].1 = m,
                None => {
                    s.remove(0);
                }
            }
            decode(&encode(&s)).expect_err("refused").to_string()
        };
        let header = format!("header says store schema {SCHEMA_VERSION}");
        for (marker, named) in [
            (Some(99u32.to_be_bytes().to_vec()), "says schema 99"),
            (
                Some((SCHEMA_VERSION - 1).to_be_bytes().to_vec()),
                &format!("says schema {}", SCHEMA_VERSION - 1),
            ),
            (Some(vec![0, 8]), "is 2 bytes long"),
            (None, "holds no schema marker"),
        ] {
            let e = with(marker);
            assert!(e.contains(&header) && e.contains(named), "{e}");
        }
        let mut twice = snap();
        twice.push((SCHEMA_KEY.to_vec(), 99u32.to_be_bytes().to_vec()));
        assert!(matches!(
            decode(&encode(&twice)),
            Err(BackupError::SchemaMarker { marker: Marker::Schema(99), .. })
        ));
    }

    // A file that opens with the magic bytes but ends before its header and digest do
    // is a backup cut short, not some other file.
    #[test]
    fn a_backup_cut_inside_its_header_is_truncated_not_another_file() {
        let b = encode(&snap());
        for cut in [0, 5, MAGIC.len(), MAGIC.len() + 10, MAGIC.len() + 16 + 31] {
            let e = decode(&b[..cut]).expect_err("refused").to_string();
            assert!(e.contains("truncated") && !e.contains("magic"), "cut at {cut}: {e}");
        }
        let mut other = b"NOT-A-BACKUP\n".to_vec();
        other.extend_from_slice(&b[MAGIC.len()..]);
        for e in [decode(&other), decode(&other[..5]), decode(b"{\"records\"")] {
            assert!(e.expect_err("refused").to_string().contains("magic"));
        }
    }

    // An item longer than the limit is refused by the limit, before anything is read of it.
    #[test]
    fn an_item_over_the_limit_names_the_limit() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&(MAX_ITEM_BYTES as u32 + 1).to_be_bytes());
        // As long as the smallest item the header counts, so that the count passes.
        b.extend_from_slice(b"a key");
        let d = Digest::of(&b);
        b.extend_from_slice(&d.0);
        let e = decode(&b).expect_err("refused").to_string();
        assert!(e.contains(&format!("{} bytes", MAX_ITEM_BYTES + 1)), "{e}");
        assert!(e.contains(&format!("limit of {MAX_ITEM_BYTES} bytes")), "{e}");
    }

    /// A backup of `snap` whose header says format `version` and store `schema`, its
    /// digest made again to match.
    fn resealed(snap: &Snapshot, version: u32, schema: u32) -> Vec<u8> {
        let mut b = encode(snap);
        b[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&version.to_be_bytes());
        b[MAGIC.len() + 4..MAGIC.len() + 8].copy_from_slice(&schema.to_be_bytes());
        let body = b.len() - DIGEST_BYTES;
        let d = Digest::of(&b[..body]);
        b[body..].copy_from_slice(&d.0);
        b
    }

    // The envelope is what a `tamga` older than the node can check of a backup: another
    // version or schema passes it, any change of a byte does not.
    #[test]
    fn the_envelope_passes_any_version_and_schema_and_no_damage() {
        let newer = resealed(&snap(), VERSION + 1, SCHEMA_VERSION + 1);
        check_envelope(&newer).expect("a newer backup's envelope is whole");
        assert!(matches!(decode(&newer), Err(BackupError::Version(_))));
        let schema = resealed(&snap(), VERSION, SCHEMA_VERSION + 1);
        check_envelope(&schema).expect("a newer schema's envelope is whole");
        assert!(matches!(decode(&schema), Err(BackupError::Schema(s)) if s == SCHEMA_VERSION + 1));
        for i in 0..newer.len() {
            let mut c = newer.clone();
            c[i] ^= 1;
            assert!(check_envelope(&c).is_err(), "flip at {i} accepted");
        }
        for cut in 0..newer.len() {
            assert!(check_envelope(&newer[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    // The header alone tells a file of other bytes, another version, or a count of items
    // the file's length cannot hold: nothing after it is needed.
    #[test]
    fn the_header_alone_refuses_other_bytes_and_counts_the_length_cannot_hold() {
        let b = encode(&snap());
        let len = b.len() as u64;
        let head = &b[..HEADER_BYTES];
        assert_eq!(check_header(head, len).expect("checks"), Header { schema: SCHEMA_VERSION, count: 2 });
        assert!(matches!(check_header(b"\0\0\0\0", 1 << 40), Err(BackupError::Magic)));
        let other = resealed(&snap(), VERSION + 1, SCHEMA_VERSION);
        assert!(
            matches!(check_header(&other[..HEADER_BYTES], len), Err(BackupError::Version(v)) if v == VERSION + 1)
        );
        // Two items are at least 16 bytes: 15 fewer than the file's are one short.
        let e = check_header(head, MIN_BYTES as u64 + 15).expect_err("refused").to_string();
        assert!(e.contains("counts 2 items") && e.contains(&format!("its {} bytes", MIN_BYTES + 15)), "{e}");
        let mut huge = head.to_vec();
        huge[MAGIC.len() + 8..].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(check_header(&huge, u64::MAX), Err(BackupError::Count { count: u64::MAX, .. })));
    }
}

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
const HEADER_BYTES: usize = MAGIC.len() + 4 + 4 + 8;
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
    Short(usize),
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
    // A file cut inside its magic bytes is a backup cut short too.
    if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
        return Err(BackupError::Magic);
    }
    if bytes.len() < MIN_BYTES {
        return Err(BackupError::Short(bytes.len()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
    let mut r = Reader { b: &body[MAGIC.len()..] };
    let version = r.u32()?;
    if version != VERSION {
        return Err(BackupError::Version(version));
    }
    if Digest::of(body).0 != digest {
        return Err(BackupError::Digest);
    }
    let schema = r.u32()?;
    if !schema_readable(schema) {
        return Err(BackupError::Schema(schema));
    }
    let count = r.u64()?;
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
        b.extend_from_slice(b"key");
        let d = Digest::of(&b);
        b.extend_from_slice(&d.0);
        let e = decode(&b).expect_err("refused").to_string();
        assert!(e.contains(&format!("{} bytes", MAX_ITEM_BYTES + 1)), "{e}");
        assert!(e.contains(&format!("limit of {MAX_ITEM_BYTES} bytes")), "{e}");
    }
}

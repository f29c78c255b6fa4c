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

use tamga_protocol::Digest;

use crate::store::{schema_readable, SCHEMA_VERSION, UPGRADES_FROM};
use crate::writer::Snapshot;

/// The magic bytes that open a backup.
pub const MAGIC: &[u8; 13] = b"TAMGA-BACKUP\n";
/// The backup format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest key or value accepted when reading a backup.
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;

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
    /// The file is cut short or has bytes after its digest.
    #[error("the backup is truncated or has trailing bytes")]
    Truncated,
    /// The digest does not match: the file was changed or damaged.
    #[error("the backup's digest does not match its contents (damaged or altered)")]
    Digest,
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
            return Err(BackupError::Truncated);
        }
        Ok(self.take(n)?.to_vec())
    }
}

/// Decode and check a backup.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, BackupError> {
    if bytes.len() < MAGIC.len() + 16 + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::Magic);
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
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
        return Err(BackupError::Truncated);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let snap = vec![(b"Mschema".to_vec(), vec![0, 0, 0, 1]), (b"Rx".to_vec(), b"value".to_vec())];
        let b = encode(&snap);
        assert_eq!(decode(&b).expect("decodes"), snap);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(decode(&c).is_err(), "flip at {i} accepted");
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }
}

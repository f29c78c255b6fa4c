//! The values files: append-only files beside the sled tree that hold the bytes of the
//! store's large values (the records, the projections and the audit entries). sled
//! keeps, under their keys, only where those bytes lie ([`Place`], 12 bytes). A value's
//! bytes are written once here, while a value inside sled's tree is written again each
//! time sled rewrites the page that holds it. A value changed is appended anew.
//!
//! Each [`Lane`] (a keyspace) has its own files, `values/<lane>-<segment>`, a new one
//! begun once the last passes [`SEGMENT_BYTES`]. A file starts with [`HEADER`]; each
//! value follows as its length (u32 BE), the CRC-32 of its bytes (u32 BE), then the bytes.
//!
//! - Appends are made durable before the keys that point at them are applied to the tree
//!   ([`Values::sync`]), so a key committed never points at bytes a crash could lose.
//!   Bytes after the last value a key points at (a commit that failed, or one cut short by
//!   a crash) are never read, and later appends overwrite or follow them.
//! - The store counts, per file, the bytes of the values its keys point at (in the tree,
//!   in the same batch as the keys). A value whose key is removed or rewritten is
//!   overwritten with zeros, and a file no key points at any more is deleted, but only
//!   once the tree no longer pointing at them is durable ([`Values::after_flush`]): until
//!   then a crash could bring the key back. The store lists such a value in the tree in
//!   the same batch, so that one a crash kept from being overwritten is at the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::StoreError;

/// The first bytes of a values file: what it is, and its format's version.
pub(super) const HEADER: &[u8; 16] = b"tamga values 1\n\0";

/// The directory of the values files, in the store's directory.
pub(super) const DIR_NAME: &str = "values";

/// A file is closed to appends once it holds this many bytes (a single larger value
/// still goes whole into a file of its own).
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes before each value: its length and its CRC-32.
const FRAME: u64 = 8;

/// What a scan reads from a file at once when it reads forwards.
const WINDOW: usize = 1 << 20;

/// A keyspace whose values are kept in the values files, each in files of its own (so
/// that the projections' files can go once they expire, while the audit log's stay).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Lane {
    /// The audit entries (`A`): never removed.
    Audit,
    /// The projections (`P`): removed when purged.
    Projections,
    /// The records (`R`): rewritten when one changes (revoked, shared further).
    Records,
}

impl Lane {
    /// The lane of a store key, if its value is kept in the values files.
    pub(super) fn of_key(k: &[u8]) -> Option<Lane> {
        match k.first() {
            Some(b'A') => Some(Lane::Audit),
            Some(b'P') => Some(Lane::Projections),
            Some(b'R') => Some(Lane::Records),
            _ => None,
        }
    }

    /// Its byte in file names and in the keys of the counts.
    pub(super) fn byte(self) -> u8 {
        match self {
            Lane::Audit => b'a',
            Lane::Projections => b'p',
            Lane::Records => b'r',
        }
    }

    /// The lane whose byte is `b`.
    pub(super) fn of_byte(b: u8) -> Option<Lane> {
        [Lane::Audit, Lane::Projections, Lane::Records].into_iter().find(|l| l.byte() == b)
    }
}

/// Where a value's bytes lie in its lane's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    /// The file (segment) number.
    pub(super) segment: u32,
    at: u32,
    len: u32,
}

impl Place {
    /// How a place is kept as a sled value.
    pub(super) const ENCODED_LEN: usize = 12;

    /// The place as kept in the tree: segment, offset, length (u32 BE each).
    pub(super) fn encode(self) -> Vec<u8> {
        [self.segment.to_be_bytes(), self.at.to_be_bytes(), self.len.to_be_bytes()].concat()
    }

    /// Read a place kept in the tree (`None` unless it is [`Place::ENCODED_LEN`] bytes).
    pub(super) fn decode(v: &[u8]) -> Option<Place> {
        if v.len() != Place::ENCODED_LEN {
            return None;
        }
        let u = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        Some(Place { segment: u(0), at: u(4), len: u(8) })
    }

    /// The bytes it takes in its file, frame included.
    pub(super) fn footprint(self) -> u64 {
        FRAME + u64::from(self.len)
    }
}

/// Work that waits until the tree is durable: values to overwrite with zeros, files to
/// delete.
#[derive(Clone, Debug, Default)]
pub(super) struct AfterFlush {
    zero: Vec<(Lane, Place)>,
    delete: Vec<(Lane, u32)>,
}

impl AfterFlush {
    /// The values it overwrites.
    pub(super) fn zeroed(&self) -> &[(Lane, Place)] {
        &self.zero
    }
}

/// The values files of one store.
#[derive(Debug)]
pub(super) struct Values {
    dir: PathBuf,
    writing: bool,
    /// [`SEGMENT_BYTES`], but in tests.
    segment_bytes: u64,
    files: RwLock<BTreeMap<(Lane, u32), Arc<File>>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per lane, the file appended to and where its next value goes.
    heads: BTreeMap<Lane, (u32, u64)>,
    /// Per file, its size.
    sizes: BTreeMap<(Lane, u32), u64>,
    /// Per file, the bytes the committed tree points at.
    live: BTreeMap<(Lane, u32), u64>,
    /// What the next flush makes safe to do.
    pending: AfterFlush,
    /// The files written since the last [`Values::sync`].
    unsynced: BTreeSet<(Lane, u32)>,
}

impl Values {
    /// Open the values files in `dir` (the store's directory), creating the directory
    /// when `writing`. `live`: the counts the tree holds, per file. A file no key points
    /// at, but the one appended to last of its lane, is deleted (when `writing`).
    pub(super) fn open(
        dir: &Path,
        writing: bool,
        live: BTreeMap<(Lane, u32), u64>,
    ) -> Result<Values, StoreError> {
        let dir = dir.join(DIR_NAME);
        let io = io_error(&dir);
        let values = Values {
            dir: dir.clone(),
            writing,
            segment_bytes: SEGMENT_BYTES,
            files: RwLock::default(),
            state: Mutex::new(State::default()),
        };
        if writing && !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(&io)?;
            sync_dir(dir.parent().unwrap_or(&dir)).map_err(&io)?;
        }
        let mut found: BTreeMap<(Lane, u32), PathBuf> = BTreeMap::new();
        if !dir.exists() {
            values.check_none_missing(&live, &found)?;
            return Ok(values);
        }
        for entry in std::fs::read_dir(&dir).map_err(&io)? {
            let path = entry.map_err(&io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let parsed = name
                .split_once('-')
                .and_then(|(l, n)| Some((Lane::of_byte(*l.as_bytes().first()?)?, n.parse::<u32>().ok()?)));
            match parsed {
                Some(id) if is_segment_name(&name) => {
                    found.insert(id, path);
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        why: "not a values file of this store".into(),
                    })
                }
            }
        }
        values.check_none_missing(&live, &found)?;
        let last: BTreeMap<Lane, u32> = found.keys().map(|(l, n)| (*l, *n)).collect();
        let mut state = State { live, ..State::default() };
        let mut files = BTreeMap::new();
        for ((lane, n), path) in found {
            let head = last.get(&lane) == Some(&n);
            if writing && !head && state.live.get(&(lane, n)).copied().unwrap_or(0) == 0 {
                std::fs::remove_file(&path).map_err(&io)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(writing).open(&path).map_err(&io)?;
            let mut len = file.metadata().map_err(&io)?.len();
            if len < HEADER.len() as u64 && head {
                // Begun by a commit cut short before its header was durable: nothing in
                // it is pointed at.
                if writing {
                    file.set_len(0).map_err(&io)?;
                    file.write_all_at(HEADER, 0).map_err(&io)?;
                    file.sync_all().map_err(&io)?;
                    len = HEADER.len() as u64;
                }
            } else {
                let mut h = [0u8; 16];
                let read = file.read_exact_at(&mut h, 0);
                if read.is_err() || &h != HEADER {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        why: "not a tamga values file of a version this build reads".into(),
                    });
                }
            }
            if head {
                state.heads.insert(lane, (n, len));
            }
            state.sizes.insert((lane, n), len);
            files.insert((lane, n), Arc::new(file));
        }
        *values.files.write().unwrap_or_else(|e| e.into_inner()) = files;
        *values.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(values)
    }

    /// A file the tree points into (its count above zero) that is not there: lost or
    /// moved. Opened without it, a lane left with no file would number its next file as the
    /// lost one, and keys of the lost values would read new ones.
    fn check_none_missing(
        &self,
        live: &BTreeMap<(Lane, u32), u64>,
        found: &BTreeMap<(Lane, u32), PathBuf>,
    ) -> Result<(), StoreError> {
        match live.iter().find(|(id, count)| **count > 0 && !found.contains_key(*id)) {
            Some(((lane, n), count)) => Err(StoreError::Corrupt {
                key: self.path(*lane, *n).display().to_string(),
                why: format!("missing, while the store points at {count} bytes of values in it"),
            }),
            None => Ok(()),
        }
    }

    /// Append `values` to `lane`'s files and make them durable; their places, in order.
    pub(super) fn append(&self, lane: Lane, values: &[&[u8]]) -> Result<Vec<Place>, StoreError> {
        let places = self.append_unsynced(lane, values)?;
        self.sync()?;
        Ok(places)
    }

    /// Append `values` to `lane`'s files; their places, in order. They are durable once
    /// [`Values::sync`] has returned, which must come before any key points at them.
    /// On an error nothing is taken as written, and the next append follows what this one
    /// may have left: a range is never written twice, so a reader's window of a file never
    /// holds bytes that are written over later.
    pub(super) fn append_unsynced(&self, lane: Lane, values: &[&[u8]]) -> Result<Vec<Place>, StoreError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        if !self.writing {
            return Err(StoreError::Engine("the store was opened only to read".into()));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut segment, mut end) = match state.heads.get(&lane) {
            Some(h) => *h,
            None => self.begin(&mut state, lane, 1, false)?,
        };
        let mut places = Vec::with_capacity(values.len());
        let mut buf = Vec::new();
        for v in values {
            let len = u32::try_from(v.len())
                .ok()
                .filter(|l| u64::from(*l) + FRAME < SEGMENT_BYTES)
                .ok_or_else(|| StoreError::Engine(format!("a value of {} bytes is too large", v.len())))?;
            let full = end + buf.len() as u64 + FRAME + u64::from(len) > self.segment_bytes;
            if full && (end + buf.len() as u64) > HEADER.len() as u64 {
                // A file that takes values of this append is pointed at once it is
                // committed; one that takes none may be pointed at no more.
                let takes_values = !buf.is_empty();
                if takes_values {
                    self.write(&mut state, lane, segment, end, &buf)?;
                    buf.clear();
                }
                (segment, end) = self.begin(&mut state, lane, segment + 1, !takes_values)?;
            }
            let at = u32::try_from(end + buf.len() as u64)
                .map_err(|_| StoreError::Engine("values file too large".into()))?;
            places.push(Place { segment, at, len });
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc32fast::hash(v).to_be_bytes());
            buf.extend_from_slice(v);
        }
        self.write(&mut state, lane, segment, end, &buf)?;
        Ok(places)
    }

    /// Make durable what was appended since the last sync: the files written, each
    /// synced on a thread of its own (a write group appends to up to three lanes).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let written = std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).unsynced);
        // A file deleted since (no key points at it) has nothing left to make durable.
        let files: Vec<(Arc<File>, Lane, u32)> = {
            let open = self.files.read().unwrap_or_else(|e| e.into_inner());
            written
                .into_iter()
                .filter_map(|(lane, n)| Some((open.get(&(lane, n))?.clone(), lane, n)))
                .collect()
        };
        crate::par::each_on_a_thread(&files, |(file, lane, n)| {
            file.sync_data().map_err(|e| io_error(&self.path(*lane, *n))(e))
        })
        .into_iter()
        .collect()
    }

    /// Write `buf` at `at` in a head file (durable at the next [`Values::sync`]); the
    /// lane's head then follows it, written or not.
    fn write(
        &self,
        state: &mut State,
        lane: Lane,
        segment: u32,
        at: u64,
        buf: &[u8],
    ) -> Result<(), StoreError> {
        let to = at + buf.len() as u64;
        state.heads.insert(lane, (segment, to));
        state.sizes.insert((lane, segment), to);
        state.unsynced.insert((lane, segment));
        let file = self.file(lane, segment)?;
        file.write_all_at(buf, at).map_err(|e| io_error(&self.path(lane, segment))(e))
    }

    /// Begin file `segment` of a lane (its header durable); the lane's head then. The file
    /// appended to before goes after the next flush if no key points at it and
    /// `before_may_go`.
    fn begin(
        &self,
        state: &mut State,
        lane: Lane,
        segment: u32,
        before_may_go: bool,
    ) -> Result<(u32, u64), StoreError> {
        let path = self.path(lane, segment);
        let io = io_error(&path);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(&io)?;
        file.write_all_at(HEADER, 0).map_err(&io)?;
        file.sync_all().map_err(&io)?;
        sync_dir(&self.dir).map_err(&io)?;
        self.files.write().unwrap_or_else(|e| e.into_inner()).insert((lane, segment), Arc::new(file));
        if let Some((before, _)) = state.heads.get(&lane).copied().filter(|_| before_may_go) {
            if state.live.get(&(lane, before)).copied().unwrap_or(0) == 0 {
                state.pending.delete.push((lane, before));
            }
        }
        let head = (segment, HEADER.len() as u64);
        state.heads.insert(lane, head);
        state.sizes.insert((lane, segment), head.1);
        Ok(head)
    }

    /// The counts of the files that `added` and `removed` change, as they will be once
    /// the batch that adds and removes them is committed (see [`Values::committed`]).
    pub(super) fn counts_after(
        &self,
        added: &[(Lane, Place)],
        removed: &[(Lane, Place)],
    ) -> BTreeMap<(Lane, u32), u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<(Lane, u32), u64> = BTreeMap::new();
        for (lane, p) in added.iter().chain(removed) {
            out.entry((*lane, p.segment))
                .or_insert_with(|| state.live.get(&(*lane, p.segment)).copied().unwrap_or(0));
        }
        for (lane, p) in added {
            out.entry((*lane, p.segment)).and_modify(|c| *c += p.footprint());
        }
        for (lane, p) in removed {
            out.entry((*lane, p.segment)).and_modify(|c| *c = c.saturating_sub(p.footprint()));
        }
        out
    }

    /// The batch carrying `counts` (from [`Values::counts_after`]) was applied: take them
    /// in, and once the tree is durable overwrite the `removed` values and delete the
    /// files no key points at any more.
    pub(super) fn committed(&self, counts: BTreeMap<(Lane, u32), u64>, removed: Vec<(Lane, Place)>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (id, count) in counts {
            let head = state.heads.get(&id.0).map(|h| h.0) == Some(id.1);
            if count == 0 && !head {
                state.pending.delete.push(id);
            }
            state.live.insert(id, count);
        }
        state.pending.zero.extend(removed);
    }

    /// What waits for the tree to be durable: take it before flushing the tree, and pass
    /// it to [`Values::after_flush`] once flushed (or back to [`Values::put_back`] if the
    /// flush failed).
    pub(super) fn take_pending(&self) -> AfterFlush {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).pending)
    }

    /// Work taken by [`Values::take_pending`] that a failed flush did not make safe.
    pub(super) fn put_back(&self, work: AfterFlush) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.zero.extend(work.zero);
        state.pending.delete.extend(work.delete);
    }

    /// Carry out `work` (from [`Values::take_pending`]), the tree being durable: the values
    /// no key points at are overwritten with zeros, the files no key points at deleted.
    pub(super) fn after_flush(&self, work: AfterFlush) -> Result<(), StoreError> {
        for (lane, n) in work.delete {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Appended to again meanwhile (it was the head), or pointed at again: keep it
            // (its values to overwrite are overwritten below).
            let head = state.heads.get(&lane).map(|h| h.0) == Some(n);
            if head || state.live.get(&(lane, n)).copied().unwrap_or(0) != 0 {
                continue;
            }
            state.sizes.remove(&(lane, n));
            drop(state);
            self.files.write().unwrap_or_else(|e| e.into_inner()).remove(&(lane, n));
            let path = self.path(lane, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        self.zero(&work.zero)
    }

    /// Overwrite the values at `places` with zeros, durably; those in a file deleted need
    /// nothing more.
    pub(super) fn zero(&self, places: &[(Lane, Place)]) -> Result<(), StoreError> {
        let mut synced = std::collections::BTreeSet::new();
        for (lane, p) in places {
            let Ok(file) = self.file(*lane, p.segment) else { continue };
            let io = io_error(&self.path(*lane, p.segment));
            file.write_all_at(&vec![0u8; p.footprint() as usize], u64::from(p.at)).map_err(&io)?;
            synced.insert((*lane, p.segment));
        }
        for (lane, n) in synced {
            if let Ok(file) = self.file(lane, n) {
                file.sync_data().map_err(io_error(&self.path(lane, n)))?;
            }
        }
        Ok(())
    }

    /// The bytes of the value at `p` in `lane`'s files.
    pub(super) fn read(&self, lane: Lane, p: Place) -> Result<Vec<u8>, StoreError> {
        self.plausible(lane, p)?;
        let file = self.file(lane, p.segment)?;
        let mut buf = vec![0u8; p.footprint() as usize];
        file.read_exact_at(&mut buf, u64::from(p.at))
            .map_err(|e| self.unreadable(lane, p, &e.to_string()))?;
        self.check(lane, p, &buf)?;
        buf.drain(..FRAME as usize);
        Ok(buf)
    }

    /// A reader for many places (a scan of the keys that point here), which reads a
    /// window of a file at a time while the places follow each other in it.
    pub(super) fn scan(&self) -> Scan<'_> {
        Scan { values: self, buf: Vec::new(), window: None, last_end: None }
    }

    /// Bytes the files occupy.
    pub(super) fn size(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).sizes.values().sum()
    }

    /// How many files there are.
    #[cfg(test)]
    pub(super) fn files(&self) -> usize {
        self.files.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Files closed at `bytes` instead of [`SEGMENT_BYTES`].
    #[cfg(test)]
    pub(super) fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }

    fn file(&self, lane: Lane, segment: u32) -> Result<Arc<File>, StoreError> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files.get(&(lane, segment)).cloned().ok_or_else(|| StoreError::Corrupt {
            key: self.path(lane, segment).display().to_string(),
            why: "the values file is missing".into(),
        })
    }

    fn path(&self, lane: Lane, segment: u32) -> PathBuf {
        self.dir.join(format!("{}-{segment:08}", lane.byte() as char))
    }

    /// Refuse a place no append could have made (a damaged key) before reading it.
    fn plausible(&self, lane: Lane, p: Place) -> Result<(), StoreError> {
        if p.footprint() > SEGMENT_BYTES || u64::from(p.at) < HEADER.len() as u64 {
            return Err(self.unreadable(lane, p, "no value can lie there"));
        }
        Ok(())
    }

    /// Check a frame read at `p`: its length and its CRC-32.
    fn check(&self, lane: Lane, p: Place, frame: &[u8]) -> Result<(), StoreError> {
        let u = |i: usize| frame.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let bytes = frame.get(FRAME as usize..).unwrap_or_default();
        if u(0) != Some(p.len) || bytes.len() != p.len as usize {
            return Err(self.unreadable(lane, p, "its length does not match the key's"));
        }
        if u(4) != Some(crc32fast::hash(bytes)) {
            return Err(self.unreadable(lane, p, "its checksum does not match"));
        }
        Ok(())
    }

    fn unreadable(&self, lane: Lane, p: Place, why: &str) -> StoreError {
        StoreError::Corrupt {
            key: format!("{} at {}", self.path(lane, p.segment).display(), p.at),
            why: format!("value of {} bytes unreadable: {why}", p.len),
        }
    }
}

/// Whether a file name is a values file's: lane byte, '-', eight digits.
fn is_segment_name(name: &str) -> bool {
    name.len() >= 10 && name.as_bytes()[1] == b'-' && name[2..].bytes().all(|b| b.is_ascii_digit())
}

/// An I/O error on `path`, as the store reports it: the path, then the cause.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |e| StoreError::Engine(format!("{path}: {e}"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads places through one window of a file at a time.
#[derive(Debug)]
pub(super) struct Scan<'a> {
    values: &'a Values,
    buf: Vec<u8>,
    /// The file and offset `buf` holds.
    window: Option<(Lane, u32, u64)>,
    /// Where the last value read ended.
    last_end: Option<(Lane, u32, u64)>,
}

impl Scan<'_> {
    /// The bytes of the value at `p` in `lane`'s files, checked.
    pub(super) fn read(&mut self, lane: Lane, p: Place) -> Result<&[u8], StoreError> {
        self.values.plausible(lane, p)?;
        let (at, need) = (u64::from(p.at), p.footprint());
        let within = match self.window {
            Some((l, n, from)) => {
                l == lane && n == p.segment && at >= from && at + need <= from + self.buf.len() as u64
            }
            None => false,
        };
        // A window read while the value was being appended holds what was there then:
        // read it again, alone.
        let stale = within && self.framed(lane, p).is_err();
        if !within || stale {
            // Reading forwards (the next value follows closely): a window; else the value.
            let forwards = matches!(self.last_end, Some((l, n, end))
                if l == lane && n == p.segment && at >= end && at - end < 64 << 10);
            let want = if forwards && !stale { (need as usize).max(WINDOW) } else { need as usize };
            self.window = None;
            let file = self.values.file(lane, p.segment)?;
            self.buf.resize(want, 0);
            let got = read_up_to(&file, &mut self.buf, at)
                .map_err(|e| self.values.unreadable(lane, p, &e.to_string()))?;
            self.buf.truncate(got);
            self.window = Some((lane, p.segment, at));
        }
        self.last_end = Some((lane, p.segment, at + need));
        self.framed(lane, p)
    }

    /// The value at `p` from the window, checked.
    fn framed(&self, lane: Lane, p: Place) -> Result<&[u8], StoreError> {
        let from = self.window.map_or(0, |w| (u64::from(p.at) - w.2) as usize);
        let frame = self.buf.get(from..from + p.footprint() as usize).unwrap_or_default();
        self.values.check(lane, p, frame)?;
        Ok(&frame[FRAME as usize..])
    }
}

/// Read into `buf` from `at` until it is full or the file ends; how much was read.
fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, live: &BTreeMap<(Lane, u32), u64>) -> Values {
        let mut v = Values::open(dir, true, live.clone()).expect("opens");
        v.set_segment_bytes(4096);
        v
    }

    /// Commit `added` and `removed` as the store does; the counts the tree would hold.
    fn commit(v: &Values, live: &mut BTreeMap<(Lane, u32), u64>, added: &[Place], removed: &[Place]) {
        let tag = |ps: &[Place]| ps.iter().map(|p| (Lane::Projections, *p)).collect::<Vec<_>>();
        let counts = v.counts_after(&tag(added), &tag(removed));
        live.extend(counts.clone());
        v.committed(counts, tag(removed));
    }

    fn files_on_disk(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(DIR_NAME))
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn values_are_read_back_where_they_were_appended_and_damage_is_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lane = Lane::Audit;
        let places = {
            let v = open(dir.path(), &BTreeMap::new());
            let places = v.append(lane, &[b"one".as_slice(), b"", &[7u8; 3000]]).expect("appends");
            assert_eq!(v.read(lane, places[0]).expect("reads"), b"one");
            assert_eq!(v.read(lane, places[1]).expect("reads"), b"");
            places
        };
        // Reopened: the same bytes, and the next append follows them (in a new file: the
        // first is past 4 KiB with the next value).
        let v = open(dir.path(), &[((lane, 1), 1)].into());
        assert_eq!(v.read(lane, places[2]).expect("reads"), vec![7u8; 3000]);
        let more = v.append(lane, &[&[8u8; 2000], b"two"]).expect("appends");
        assert_eq!((more[0].segment, more[1].segment), (2, 2));
        let mut scan = v.scan();
        for (p, want) in
            places.iter().chain(&more).zip([&b"one"[..], b"", &[7u8; 3000], &[8u8; 2000], b"two"])
        {
            assert_eq!(scan.read(lane, *p).expect("scans"), want);
        }
        assert_eq!(Place::decode(&places[2].encode()), Some(places[2]));
        assert_eq!(Place::decode(b"short"), None);

        // A flipped byte, or a place beyond the end, is an error naming the file.
        let path = v.path(lane, 1);
        drop(v);
        let mut bytes = std::fs::read(&path).expect("reads");
        bytes[places[0].at as usize + FRAME as usize] ^= 1;
        std::fs::write(&path, &bytes).expect("writes");
        let v = open(dir.path(), &[((lane, 1), 1), ((lane, 2), 1)].into());
        let e = v.read(lane, places[0]).expect_err("damaged");
        assert!(e.to_string().contains("checksum") && e.to_string().contains("a-00000001"), "{e}");
        assert!(v.scan().read(lane, places[0]).is_err());
        let beyond = Place { segment: 2, at: 4000, len: 4 };
        assert!(v.read(lane, beyond).is_err() && v.scan().read(lane, beyond).is_err());
        assert!(v.read(Lane::Projections, places[0]).is_err(), "another lane's files");
        drop(v);

        // Not a values file: refused, not overwritten.
        std::fs::write(&path, b"something else entirely").expect("writes");
        let e = Values::open(dir.path(), true, [((lane, 1), 1), ((lane, 2), 1)].into()).expect_err("refused");
        assert!(e.to_string().contains("not a tamga values file"), "{e}");
        assert_eq!(std::fs::read(&path).expect("reads"), b"something else entirely");
    }

    #[test]
    fn a_value_no_key_points_at_is_zeroed_and_a_file_no_key_points_at_is_deleted_after_the_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut live = BTreeMap::new();
        let v = open(dir.path(), &live);
        let secret = [0x5au8; 1500];
        let first = v.append(Lane::Projections, &[&secret, &secret]).expect("appends");
        commit(&v, &mut live, &first, &[]);
        let second = v.append(Lane::Projections, &[&secret, b"kept"]).expect("appends");
        commit(&v, &mut live, &second, &[]);
        assert_eq!((first[0].segment, first[1].segment, second[0].segment), (1, 1, 2));
        assert_eq!(files_on_disk(dir.path()), ["p-00000001", "p-00000002"]);

        // Removed from the tree: nothing happens until the tree is durable.
        commit(&v, &mut live, &[], &[first[0], first[1], second[0]]);
        assert_eq!(v.read(Lane::Projections, second[0]).expect("still there"), secret);
        let work = v.take_pending();
        v.after_flush(work).expect("carried out");
        // File 1 held nothing else: gone. In file 2 (appended to), the value is zeros.
        assert_eq!(files_on_disk(dir.path()), ["p-00000002"]);
        assert!(v.read(Lane::Projections, first[0]).is_err());
        let raw = std::fs::read(v.path(Lane::Projections, 2)).expect("reads");
        assert!(!raw.windows(64).any(|w| w == &secret[..64]), "the removed bytes are overwritten");
        assert_eq!(v.read(Lane::Projections, second[1]).expect("reads"), b"kept");
        assert_eq!(v.size(), raw.len() as u64);

        // A flush that failed gives its work back for the next one.
        commit(&v, &mut live, &[], &[second[1]]);
        let work = v.take_pending();
        v.put_back(work);
        v.after_flush(v.take_pending()).expect("carried out");
        assert!(v.read(Lane::Projections, second[1]).is_err());
        assert_eq!(files_on_disk(dir.path()), ["p-00000002"], "the file appended to stays");
    }

    #[test]
    fn opening_deletes_the_files_no_key_points_at_but_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = open(dir.path(), &BTreeMap::new());
        let places =
            v.append(Lane::Projections, &[&[1u8; 3000], &[2u8; 3000], &[3u8; 3000]]).expect("appends");
        assert_eq!(places.iter().map(|p| p.segment).collect::<Vec<_>>(), [1, 2, 3]);
        drop(v);
        // The tree (as a crash left it) points only into file 2.
        let live = [((Lane::Projections, 2), places[1].footprint())].into();
        let v = open(dir.path(), &live);
        assert_eq!(files_on_disk(dir.path()), ["p-00000002", "p-00000003"]);
        assert_eq!(v.read(Lane::Projections, places[1]).expect("reads"), vec![2u8; 3000]);
        assert_eq!(v.files(), 2);
    }

    #[test]
    fn a_store_opened_to_read_without_values_files_creates_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = Values::open(dir.path(), false, BTreeMap::new()).expect("opens");
        assert!(!dir.path().join(DIR_NAME).exists());
        assert!(v.read(Lane::Audit, Place { segment: 1, at: 16, len: 1 }).is_err());
        assert!(v.append(Lane::Audit, &[b"x".as_slice()]).is_err());
    }
}

//! Where the projections of a stream lie, [`SEQS`] numbers to a tree key. A sled key
//! costs far more on disk than its bytes, and a stream's numbers come in order: so the
//! places of projections `64·b .. 64·b + 63` of a stream are kept under one key,
//! `S`, origin, agreement, 0, b (u64 BE), whose value lists them, [`ENTRY`] bytes each:
//! the number's offset in its block, then its [`Place`] in the values files, in order.
//!
//! The rest of the store speaks of a projection by its key as schemas before 7 kept it
//! (`P`, origin, agreement, 0, seq): a [`super::WriteBatch`] writes those keys, a backup
//! holds those pairs, and sealing a batch turns its writes into changes of the blocks.

use std::collections::BTreeMap;

use super::values::Place;
use super::{key, StoreError};

/// Numbers of a stream per block key.
pub(super) const SEQS: u64 = 64;

/// One entry of a block: the offset, then the place.
const ENTRY: usize = 1 + Place::ENCODED_LEN;

/// A projection's key (`P`, stream, seq) is this long past its stream's part.
const SEQ_LEN: usize = 8;

/// The places a block lists, by offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Block(BTreeMap<u8, Place>);

impl Block {
    /// Read block key `k`'s value: entries in increasing offset, each below [`SEQS`].
    pub(super) fn decode(k: &[u8], v: &[u8]) -> Result<Block, StoreError> {
        let bad = || bad_block(k);
        if !v.len().is_multiple_of(ENTRY) {
            return Err(bad());
        }
        let mut out = BTreeMap::new();
        let mut last = None;
        for e in v.chunks_exact(ENTRY) {
            let offset = e[0];
            let place = Place::decode(&e[1..]).ok_or_else(bad)?;
            if u64::from(offset) >= SEQS || last.is_some_and(|l| l >= offset) {
                return Err(bad());
            }
            last = Some(offset);
            out.insert(offset, place);
        }
        Ok(Block(out))
    }

    /// The value to keep under its key.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() * ENTRY);
        for (offset, place) in &self.0 {
            v.push(*offset);
            v.extend_from_slice(&place.encode());
        }
        v
    }

    /// Where number `seq` lies, if the block lists it.
    pub(super) fn get(&self, seq: u64) -> Option<Place> {
        self.0.get(&offset(seq)).copied()
    }

    /// Where number `seq` lies, if block key `k`'s value `v` lists it: read from `v`
    /// without decoding the rest of the block (the lookup of every number received).
    pub(super) fn find(k: &[u8], v: &[u8], seq: u64) -> Result<Option<Place>, StoreError> {
        let bad = || bad_block(k);
        if !v.len().is_multiple_of(ENTRY) {
            return Err(bad());
        }
        match v.chunks_exact(ENTRY).find(|e| e[0] == offset(seq)) {
            Some(e) => Place::decode(&e[1..]).map(Some).ok_or_else(bad),
            None => Ok(None),
        }
    }

    /// List number `seq` at `place`, or not at all (`None`); where it lay before.
    pub(super) fn set(&mut self, seq: u64, place: Option<Place>) -> Option<Place> {
        match place {
            Some(p) => self.0.insert(offset(seq), p),
            None => self.0.remove(&offset(seq)),
        }
    }

    /// The numbers listed, in order, with their places, for a block whose first number
    /// is `first` ([`first_seq`]).
    pub(super) fn entries(&self, first: u64) -> impl Iterator<Item = (u64, Place)> + '_ {
        self.0.iter().map(move |(o, p)| (first + u64::from(*o), *p))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn bad_block(k: &[u8]) -> StoreError {
    StoreError::Corrupt { key: hex::encode(k), why: "bad projection block".into() }
}

fn offset(seq: u64) -> u8 {
    (seq % SEQS) as u8
}

/// The block key of number `seq` of the stream whose keys in `S` begin with `stream`
/// (`S`, origin, agreement, 0).
pub(super) fn block_key(stream: &[u8], seq: u64) -> Vec<u8> {
    key(&[stream, &(seq / SEQS).to_be_bytes()])
}

/// The block key and number of a projection's key (`P`, origin, agreement, 0, seq), if
/// `k` is one.
pub(super) fn slot_of(k: &[u8]) -> Option<(Vec<u8>, u64)> {
    if k.first() != Some(&b'P') || k.len() < 1 + 2 + 1 + SEQ_LEN {
        return None;
    }
    let (stream, seq) = k.split_at(k.len() - SEQ_LEN);
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    Some((key(&[b"S", &stream[1..], &(seq / SEQS).to_be_bytes()]), seq))
}

/// The first number block key `k` can list.
pub(super) fn first_seq(k: &[u8]) -> Result<u64, StoreError> {
    k.len()
        .checked_sub(SEQ_LEN)
        .filter(|_| k.first() == Some(&b'S'))
        .and_then(|at| <[u8; 8]>::try_from(&k[at..]).ok())
        .and_then(|b| u64::from_be_bytes(b).checked_mul(SEQS))
        .ok_or_else(|| StoreError::Corrupt { key: hex::encode(k), why: "bad projection block key".into() })
}

/// The key of projection `seq` (`P`, origin, agreement, 0, seq) of block key `k`'s stream.
pub(super) fn projection_key_of(k: &[u8], seq: u64) -> Vec<u8> {
    let stream = &k[1..k.len().saturating_sub(SEQ_LEN).max(1)];
    key(&[b"P", stream, &seq.to_be_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projection_key_maps_to_its_block_and_back() {
        let stream = b"RUipr\0";
        let p = key(&[b"P", stream, &130u64.to_be_bytes()]);
        let (b, seq) = slot_of(&p).expect("a projection key");
        assert_eq!((b.clone(), seq), (block_key(&key(&[b"S", stream]), 130), 130));
        assert_eq!(first_seq(&b).expect("a block key"), 128);
        assert_eq!(projection_key_of(&b, 130), p);
        assert_eq!(slot_of(b"Q\0"), None);
        assert!(first_seq(b"S").is_err());
        assert!(first_seq(&key(&[b"S", stream, &u64::MAX.to_be_bytes()])).is_err(), "past the last block");
    }

    #[test]
    fn a_block_round_trips_and_refuses_damage() {
        let k = b"S-key";
        let mut b = Block::default();
        let place = |n| Place::decode(&[n; Place::ENCODED_LEN]).expect("12 bytes");
        assert_eq!(b.set(65, Some(place(1))), None);
        assert_eq!(b.set(127, Some(place(2))), None);
        assert_eq!(b.set(65, Some(place(3))), Some(place(1)));
        let v = b.encode();
        assert_eq!(Block::decode(k, &v).expect("decodes"), b);
        assert_eq!(b.entries(64).collect::<Vec<_>>(), vec![(65, place(3)), (127, place(2))]);
        assert_eq!(b.get(127), Some(place(2)));
        assert_eq!(b.get(66), None);
        assert_eq!(Block::find(k, &v, 127).expect("reads"), Some(place(2)));
        assert_eq!(Block::find(k, &v, 66).expect("reads"), None);
        assert!(Block::find(k, &v[1..], 127).is_err());
        // Cut short, out of order, an offset past the block.
        assert!(Block::decode(k, &v[..v.len() - 1]).is_err());
        let swapped = [&v[ENTRY..], &v[..ENTRY]].concat();
        assert!(Block::decode(k, &swapped).is_err());
        let mut past = v.clone();
        past[0] = SEQS as u8;
        assert!(Block::decode(k, &past).is_err());
        assert_eq!(b.set(65, None), Some(place(3)));
        assert_eq!(b.set(127, None), Some(place(2)));
        assert!(b.is_empty());
    }
}

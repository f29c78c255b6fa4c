//! Selective disclosure of records, in the manner of SD-JWT, and the signed projections
//! that cross the wire.
//!
//! Each body field gets a 256-bit salt derived from a secret that never leaves the origin
//! node (`HMAC-SHA256(salt key, header, field name)`), so ingest is idempotent and nobody
//! without the key can test guesses against a withheld field's digest. The record id is
//! the digest of the header and the sorted field digests (see [`crate::canonical`]), so a
//! projection that reveals some fields and carries only the digests of the others still
//! proves which record it is, and two projections of one record under different
//! agreements carry the same id.
//!
//! A [`Projection`] is signed by the origin over the record id and the [`Envelope`]
//! (agreement, audience, sequence number, expiry). Anyone holding the origin's public key
//! can verify it without the withheld fields; relays forward it untouched.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::canonical::Canonical;
use crate::limits;
use crate::types::{AgreementId, Classification, Digest, MemberCode, Record, RecordHeader, RecordId, Value};

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…)", stringify!($name), &hex::encode(self.0)[..12])
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let mut out = [0u8; $len];
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    hex::decode_to_slice(s.as_bytes(), &mut out).map_err(|_| {
                        serde::de::Error::custom(concat!(
                            stringify!($name),
                            " must be ",
                            stringify!($len),
                            " bytes of hex"
                        ))
                    })?;
                } else {
                    let v = serde_bytes_buf(d)?;
                    if v.len() != $len {
                        return Err(serde::de::Error::invalid_length(v.len(), &stringify!($len)));
                    }
                    out.copy_from_slice(&v);
                }
                Ok($name(out))
            }
        }
    };
}

fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    d.deserialize_byte_buf(V)
}

fixed_bytes!(
    /// A field's salt: 256 bits derived from the origin's salt key.
    Salt,
    32
);
fixed_bytes!(
    /// An ed25519 signature.
    Sig,
    64
);

/// The secret from which an origin derives its field salts. It never leaves the node.
#[derive(Clone)]
pub struct SaltKey([u8; 32]);

impl SaltKey {
    /// Wrap 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SaltKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        SaltKey(b)
    }

    /// The secret bytes, for storing in the node's key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// `salt(k, h, name)` of the canonical encoding.
    pub fn salt(&self, header: &RecordHeader, name: &str) -> Salt {
        // HMAC accepts keys of any length; a 32-byte key cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        let mut c = Canonical::new();
        c.str("tamga.salt.v1").header(header).str(name);
        mac.update(c.as_bytes());
        Salt(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltKey(…)")
    }
}

/// `field_digest` of the canonical encoding.
pub fn field_digest(salt: &Salt, name: &str, value: &Value) -> Digest {
    let mut c = Canonical::new();
    c.str("tamga.field.v1").bytes(&salt.0).str(name).value(value);
    c.digest()
}

/// `record_id` of the canonical encoding; `digests` must be sorted ascending.
fn record_id_of(header: &RecordHeader, sorted_digests: &[Digest]) -> RecordId {
    let mut c = Canonical::new();
    c.str("tamga.record.v1").header(header).count(sorted_digests.len());
    for d in sorted_digests {
        c.raw32(d);
    }
    c.digest()
}

/// A record with its salts and field digests computed: what the origin stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaltedRecord {
    /// The record.
    pub record: Record,
    /// The salt of each body field, by name.
    pub salts: BTreeMap<String, Salt>,
    /// The record id.
    pub id: RecordId,
}

impl SaltedRecord {
    /// Salt every field with `key` and compute the record id. Deterministic: the same
    /// record and key always give the same salts and id.
    pub fn new(record: Record, key: &SaltKey) -> SaltedRecord {
        let salts: BTreeMap<String, Salt> =
            record.body.keys().map(|name| (name.clone(), key.salt(&record.header, name))).collect();
        let id = Self::compute_id(&record, &salts);
        SaltedRecord { record, salts, id }
    }

    fn compute_id(record: &Record, salts: &BTreeMap<String, Salt>) -> RecordId {
        let mut digests: Vec<Digest> = record
            .body
            .iter()
            .filter_map(|(name, value)| salts.get(name).map(|s| field_digest(s, name, value)))
            .collect();
        digests.sort_unstable();
        record_id_of(&record.header, &digests)
    }

    /// Check that the stored salts cover the body and give the stored id (after reading
    /// a record back from disk or a backup).
    pub fn is_consistent(&self) -> bool {
        self.salts.len() == self.record.body.len()
            && self.record.body.keys().all(|k| self.salts.contains_key(k))
            && Self::compute_id(&self.record, &self.salts) == self.id
    }

    /// Build and sign the projection of this record under one agreement: fields for which
    /// `withhold` answers true are replaced by their digests. Refuses records that may
    /// never leave the node (invariant 2), whatever the caller decided.
    pub fn project(
        &self,
        withhold: impl Fn(&str) -> bool,
        envelope: Envelope,
        key: &SigningKey,
    ) -> Result<Projection, ProjectError> {
        if !self.record.header.classification.may_leave_node() {
            return Err(ProjectError::Classified(self.record.header.classification));
        }
        if envelope.audience.is_empty() {
            return Err(ProjectError::EmptyAudience);
        }
        let mut envelope = envelope;
        envelope.audience.sort_unstable();
        envelope.audience.dedup();
        let mut revealed = Vec::new();
        let mut withheld = Vec::new();
        for (name, value) in &self.record.body {
            let salt = self.salts.get(name).ok_or(ProjectError::MissingSalt)?;
            if withhold(name) {
                withheld.push(field_digest(salt, name, value));
            } else {
                revealed.push(RevealedField { name: name.clone(), salt: *salt, value: value.clone() });
            }
        }
        withheld.sort_unstable();
        let message = projection_message(&self.id, &envelope);
        let signature = Sig(key.sign(&message).to_bytes());
        Ok(Projection { header: self.record.header.clone(), revealed, withheld, envelope, signature })
    }
}

impl SaltedRecord {
    /// The revocation of this record in a stream: every field withheld, the original's
    /// agreement, audience and expiry, a new sequence number, signed by the origin.
    pub fn revocation(
        &self,
        original: &Envelope,
        seq: u64,
        key: &SigningKey,
    ) -> Result<Projection, ProjectError> {
        let envelope = Envelope { seq, kind: EntryKind::Revoke, ..original.clone() };
        self.project(|_| true, envelope, key)
    }
}

/// Why a record could not be projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// Confidential and secret records are never projected.
    #[error("a {0} record is never projected")]
    Classified(Classification),
    /// A projection must name at least one receiver.
    #[error("the audience is empty")]
    EmptyAudience,
    /// The stored salts do not cover the body (a corrupted record).
    #[error("a body field has no salt")]
    MissingSalt,
}

/// A revealed field: its name, salt and value, from which the receiver recomputes its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedField {
    /// The catalog field name.
    pub name: String,
    /// The salt the origin used.
    pub salt: Salt,
    /// The value.
    pub value: Value,
}

/// What a stream entry does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Shares the record's revealed fields.
    #[default]
    Share,
    /// Revokes the record: every holder purges its body and keeps a tombstone. Carries no
    /// revealed field (all are digests), so it proves which record without repeating it.
    Revoke,
}

impl EntryKind {
    fn tag(self) -> u8 {
        match self {
            EntryKind::Share => 0,
            EntryKind::Revoke => 1,
        }
    }
}

/// The sharing envelope: under which agreement, to whom, where in the stream, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The agreement the projection is shared under.
    pub agreement: AgreementId,
    /// The members the origin decided may receive it, sorted, without duplicates.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub audience: Vec<MemberCode>,
    /// Sequence number in the stream (origin, agreement), from 1.
    pub seq: u64,
    /// When every holder must purge it, milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// A share or a revocation.
    pub kind: EntryKind,
}

/// `projection_message` of the canonical encoding.
fn projection_message(id: &RecordId, e: &Envelope) -> Vec<u8> {
    let mut c = Canonical::new();
    c.str("tamga.projection.v1").raw32(id).str(e.agreement.as_str()).count(e.audience.len());
    for m in &e.audience {
        c.str(m.as_str());
    }
    c.u64(e.seq).i64(e.expires_ms).u8(e.kind.tag());
    c.as_bytes().to_vec()
}

/// What crosses the wire for one record under one agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    /// The record header (always revealed).
    pub header: RecordHeader,
    /// The revealed fields, sorted by name.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub revealed: Vec<RevealedField>,
    /// The digests of the withheld fields, sorted.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub withheld: Vec<Digest>,
    /// The sharing envelope.
    pub envelope: Envelope,
    /// The origin's signature over the record id and the envelope.
    pub signature: Sig,
}

/// Why a projection does not verify. Every variant means: refuse it, store nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Revealed fields must be sorted by name without duplicates.
    #[error("revealed fields are not sorted by name or repeat a name")]
    RevealedOrder,
    /// Withheld digests must be sorted without duplicates.
    #[error("withheld digests are not sorted or repeat")]
    WithheldOrder,
    /// The audience must be non-empty, sorted, without duplicates.
    #[error("the audience is empty, unsorted or repeats a member")]
    Audience,
    /// Too many fields, or a field too large.
    #[error("the projection exceeds a size limit: {0}")]
    TooLarge(&'static str),
    /// Confidential and secret records never travel; a projection of one is forged or a bug.
    #[error("a {0} record was projected")]
    Classified(Classification),
    /// Sequence numbers start at 1.
    #[error("sequence number 0")]
    ZeroSeq,
    /// A revocation must not reveal any field.
    #[error("a revocation reveals a field")]
    RevocationReveals,
    /// The signature does not match the origin's key.
    #[error("the origin's signature does not verify")]
    BadSignature,
}

impl Projection {
    /// Check the structure and recompute the record id, without the signature.
    pub fn record_id(&self) -> Result<RecordId, VerifyError> {
        if !self.header.classification.may_leave_node() {
            return Err(VerifyError::Classified(self.header.classification));
        }
        if self.revealed.len() + self.withheld.len() > limits::MAX_FIELDS {
            return Err(VerifyError::TooLarge("field count"));
        }
        if self.envelope.seq == 0 {
            return Err(VerifyError::ZeroSeq);
        }
        if self.envelope.kind == EntryKind::Revoke && !self.revealed.is_empty() {
            return Err(VerifyError::RevocationReveals);
        }
        if self.envelope.audience.is_empty()
            || self.envelope.audience.len() > limits::MAX_AUDIENCE
            || !self.envelope.audience.windows(2).all(|w| w[0] < w[1])
        {
            return Err(VerifyError::Audience);
        }
        if !self.revealed.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(VerifyError::RevealedOrder);
        }
        if !self.withheld.windows(2).all(|w| w[0] < w[1]) {
            return Err(VerifyError::WithheldOrder);
        }
        let mut digests: Vec<Digest> = Vec::with_capacity(self.revealed.len() + self.withheld.len());
        for f in &self.revealed {
            if f.name.len() > limits::MAX_IDENTIFIER_LEN || f.value.text_len() > limits::MAX_VALUE_BYTES {
                return Err(VerifyError::TooLarge("field"));
            }
            digests.push(field_digest(&f.salt, &f.name, &f.value));
        }
        digests.extend_from_slice(&self.withheld);
        digests.sort_unstable();
        if digests.windows(2).any(|w| w[0] == w[1]) {
            return Err(VerifyError::WithheldOrder);
        }
        Ok(record_id_of(&self.header, &digests))
    }

    /// The bytes the origin signed, given the record id.
    fn message(&self, id: &RecordId) -> Vec<u8> {
        projection_message(id, &self.envelope)
    }

    /// Verify the structure and the origin's signature; returns the record id.
    ///
    /// The signature check is the cofactored one of [`crate::batch`] (`s` reduced, `R` a
    /// point not of small order, the key not weak, `[8]([s]B − R − [h]A) = 0`), the same
    /// as [`verify_many`]'s batches apply, so a projection verifies alone exactly when it
    /// verifies in a batch, and every node takes or refuses it alike. It is not
    /// ed25519-dalek's `verify_strict`, which refuses a signature whose `R` has a torsion
    /// component.
    pub fn verify(&self, origin_key: &VerifyingKey) -> Result<RecordId, VerifyError> {
        let id = self.record_id()?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        if !crate::batch::verify_one(&self.message(&id), &sig, origin_key) {
            return Err(VerifyError::BadSignature);
        }
        Ok(id)
    }

    /// Withhold the revealed fields `withhold` names: each is replaced by its digest, so
    /// the record id and the origin's signature still verify. Any holder can withhold
    /// more than the origin did, never less. Returns how many fields were withheld.
    pub fn withhold(&mut self, withhold: impl Fn(&str) -> bool) -> usize {
        let before = self.revealed.len();
        let mut added = Vec::new();
        self.revealed.retain(|f| {
            let keep = !withhold(&f.name);
            if !keep {
                added.push(field_digest(&f.salt, &f.name, &f.value));
            }
            keep
        });
        if !added.is_empty() {
            self.withheld.extend(added);
            self.withheld.sort_unstable();
        }
        before - self.revealed.len()
    }

    /// The revealed fields as a map, for storing and showing.
    pub fn revealed_body(&self) -> BTreeMap<String, Value> {
        self.revealed.iter().map(|f| (f.name.clone(), f.value.clone())).collect()
    }
}

/// Verify many projections at once. Batch verification (summed by key: [`crate::batch`])
/// checks one origin's projections about four times as fast as one by one when all are
/// good; when the batch fails, each is checked alone so that the bad ones are named.
/// Alone and in the batch the check is the same cofactored one, so each result is the one
/// [`Projection::verify`] gives. Returns one result per input, in order.
pub fn verify_many(items: &[(&Projection, &VerifyingKey)]) -> Vec<Result<RecordId, VerifyError>> {
    let prepared: Vec<Result<(RecordId, Vec<u8>), VerifyError>> =
        items.iter().map(|(p, _)| p.record_id().map(|id| (id, p.message(&id)))).collect();
    let signed: Vec<(&[u8], ed25519_dalek::Signature, &VerifyingKey)> = items
        .iter()
        .zip(&prepared)
        .filter_map(|((p, k), prep)| {
            let (_, m) = prep.as_ref().ok()?;
            Some((m.as_slice(), ed25519_dalek::Signature::from_bytes(&p.signature.0), *k))
        })
        .collect();
    let batch_ok = !signed.is_empty() && crate::batch::verify_batch(&signed);
    items
        .iter()
        .zip(prepared)
        .map(|((p, k), prep)| {
            let (id, m) = prep?;
            if batch_ok {
                return Ok(id);
            }
            let sig = ed25519_dalek::Signature::from_bytes(&p.signature.0);
            if !crate::batch::verify_one(&m, &sig, k) {
                return Err(VerifyError::BadSignature);
            }
            Ok(id)
        })
        .collect()
}

/// One step of a receipt's inclusion path: a sibling's hash, and whether it sits on the
/// left of the path at that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStep {
    /// The sibling is the left child (the path is the right one).
    pub left: bool,
    /// The sibling's hash.
    pub hash: Digest,
}

/// A signed acknowledgement that a receiver stored one projection.
///
/// A receiver answers a whole push with one signature: each receipt's leaf hash (over
/// every field but the path and the signature) is a leaf of a binary hash tree, and the
/// receiver signs the tree's root. Each receipt carries the path from its leaf to that root,
/// so it verifies on its own (hash up the path, check the signature on the root), while the
/// receiver signs, and the sender verifies, once per push rather than once per projection.
/// Leaves and inner nodes are hashed under different labels, so no inner node passes for a
/// leaf. A receipt signed alone has an empty path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The record.
    pub record: RecordId,
    /// The agreement the projection was shared under.
    pub agreement: AgreementId,
    /// The record's origin.
    pub origin: MemberCode,
    /// The projection's sequence number in (origin, agreement).
    pub seq: u64,
    /// The member that stored it and signs this receipt.
    pub receiver: MemberCode,
    /// When it was stored, milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// From this receipt's leaf up to the signed root, leaf side first.
    #[serde(deserialize_with = "crate::bounded::seq")]
    pub path: Vec<PathStep>,
    /// The receiver's signature over the root.
    pub signature: Sig,
}

/// What a receiver acknowledges, before signing: one stored projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptItem {
    /// The record.
    pub record: RecordId,
    /// The agreement the projection was shared under.
    pub agreement: AgreementId,
    /// The record's origin.
    pub origin: MemberCode,
    /// The projection's sequence number in (origin, agreement).
    pub seq: u64,
}

impl ReceiptItem {
    /// The item acknowledging a projection with this record id.
    pub fn of(record: RecordId, p: &Projection) -> ReceiptItem {
        ReceiptItem {
            record,
            agreement: p.envelope.agreement.clone(),
            origin: p.header.origin,
            seq: p.envelope.seq,
        }
    }
}

fn receipt_leaf(item: &ReceiptItem, receiver: MemberCode, received_ms: i64) -> Digest {
    let mut c = Canonical::new();
    c.str("tamga.receipt.v2")
        .raw32(&item.record)
        .str(item.agreement.as_str())
        .str(item.origin.as_str())
        .u64(item.seq)
        .str(receiver.as_str())
        .i64(received_ms);
    c.digest()
}

fn receipt_node(left: &Digest, right: &Digest) -> Digest {
    let mut c = Canonical::new();
    c.str("tamga.receipt.node.v2").raw32(left).raw32(right);
    c.digest()
}

fn receipt_root_message(root: &Digest) -> Vec<u8> {
    let mut c = Canonical::new();
    c.str("tamga.receipt.root.v2").raw32(root);
    c.as_bytes().to_vec()
}

impl Receipt {
    /// Sign receipts for `items` stored by `receiver`, with one signature over the root of
    /// their hash tree. The receipts come back in the order of `items`.
    pub fn sign_batch(
        items: Vec<ReceiptItem>,
        receiver: MemberCode,
        received_ms: i64,
        key: &SigningKey,
    ) -> Vec<Receipt> {
        if items.is_empty() {
            return Vec::new();
        }
        let mut level: Vec<Digest> = items.iter().map(|i| receipt_leaf(i, receiver, received_ms)).collect();
        let mut paths: Vec<Vec<PathStep>> = vec![Vec::new(); items.len()];
        // Where each leaf's ancestor sits in the current level.
        let mut at: Vec<usize> = (0..items.len()).collect();
        while level.len() > 1 {
            for (leaf, pos) in at.iter_mut().enumerate() {
                let sibling = *pos ^ 1;
                if sibling < level.len() {
                    paths[leaf].push(PathStep { left: sibling < *pos, hash: level[sibling] });
                }
                *pos /= 2;
            }
            // Pairs hash into their parent; an odd last node goes up unchanged.
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => receipt_node(l, r),
                    [one] => *one,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
        }
        let signature = Sig(key.sign(&receipt_root_message(&level[0])).to_bytes());
        items
            .into_iter()
            .zip(paths)
            .map(|(i, path)| Receipt {
                record: i.record,
                agreement: i.agreement,
                origin: i.origin,
                seq: i.seq,
                receiver,
                received_ms,
                path,
                signature,
            })
            .collect()
    }

    /// Sign a receipt for one stored projection alone.
    pub fn sign(
        record: RecordId,
        envelope: &Envelope,
        origin: MemberCode,
        receiver: MemberCode,
        received_ms: i64,
        key: &SigningKey,
    ) -> Receipt {
        let item = ReceiptItem { record, agreement: envelope.agreement.clone(), origin, seq: envelope.seq };
        Self::sign_batch(vec![item], receiver, received_ms, key).remove(0)
    }

    /// The root this receipt's path leads to (what the receiver signed).
    pub fn root(&self) -> Digest {
        let item = ReceiptItem {
            record: self.record,
            agreement: self.agreement.clone(),
            origin: self.origin,
            seq: self.seq,
        };
        self.path.iter().fold(receipt_leaf(&item, self.receiver, self.received_ms), |h, step| {
            if step.left {
                receipt_node(&step.hash, &h)
            } else {
                receipt_node(&h, &step.hash)
            }
        })
    }

    /// Verify the receiver's signature.
    pub fn verify(&self, receiver_key: &VerifyingKey) -> Result<(), VerifyError> {
        verify_root(&self.root(), &self.signature, receiver_key)
    }
}

fn verify_root(root: &Digest, signature: &Sig, key: &VerifyingKey) -> Result<(), VerifyError> {
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(&receipt_root_message(root), &sig).map_err(|_| VerifyError::BadSignature)
}

/// Verify many receipts from one receiver against its roster keys, checking each distinct
/// signed root once (a push's receipts share one): per receipt, whether it verifies.
pub fn verify_receipts(receipts: &[Receipt], keys: &[VerifyingKey]) -> Vec<bool> {
    let mut checked: Vec<(Digest, Sig, bool)> = Vec::new();
    receipts
        .iter()
        .map(|r| {
            let root = r.root();
            if let Some((_, _, ok)) = checked.iter().find(|(d, s, _)| *d == root && *s == r.signature) {
                return *ok;
            }
            let ok = keys.iter().any(|k| verify_root(&root, &r.signature, k).is_ok());
            checked.push((root, r.signature, ok));
            ok
        })
        .collect()
}

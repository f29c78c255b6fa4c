//! Structured fuzzing of selective disclosure: an arbitrary record is salted, projected
//! under an arbitrary envelope with arbitrary fields withheld, signed by its origin's key,
//! sent through the codec and verified.
//!
//! Invariants: salting is deterministic and consistent; a projection is refused exactly
//! for confidential and secret records and empty audiences; a signed projection verifies
//! to the record's id unless it breaks a size or sequence limit (and then it fails for
//! that reason, never for its signature); withholding more fields keeps the id and the
//! signature; a revocation verifies with the same id; a change to any revealed value,
//! header field or envelope field breaks the signature.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tamga_fuzz::{members, signing_key, verifying_key};
use tamga_protocol::codec::{decode_stored, encode_stored};
use tamga_protocol::disclosure::{ProjectError, VerifyError};
use tamga_protocol::{
    Classification, Digest, EntryKind, Envelope, Projection, Record, RecordHeader, SaltKey, SaltedRecord,
    Value,
};

const CATEGORIES: [&str; 6] = [
    "ipr.protected_mark",
    "ipr.infringement",
    "rms.method",
    "rms.event",
    "energy.transfer",
    "enforcement.alert",
];
const AGREEMENTS: [&str; 4] = ["sco-ipr-2012", "sco-rms-2013", "sco-energy-2008", "ru-kz-enforcement"];

#[derive(Debug, Arbitrary)]
enum FieldValue {
    Bool(bool),
    Int(i64),
    Text(String),
    TextList(Vec<String>),
}

impl From<FieldValue> for Value {
    fn from(v: FieldValue) -> Value {
        match v {
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Int(i) => Value::Int(i),
            FieldValue::Text(s) => Value::Text(s),
            FieldValue::TextList(l) => Value::TextList(l),
        }
    }
}

/// What to change in a signed projection before verifying it again.
#[derive(Debug, Arbitrary)]
enum Tamper {
    Value(u8),
    Category,
    Classification,
    Created,
    Supersedes,
    Agreement,
    Audience(u8),
    Seq,
    Expiry,
    Kind,
    Withheld(u8),
    Signature(u8, u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    key: [u8; 32],
    category: u8,
    classification: u8,
    origin: u8,
    created_ms: i64,
    supersedes: Option<[u8; 32]>,
    expires_ms: Option<i64>,
    fields: Vec<(String, FieldValue)>,
    withhold: u64,
    agreement: u8,
    audience: Vec<u8>,
    seq: u64,
    envelope_expires_ms: i64,
    tamper: Tamper,
}

fn pick<T: Copy>(items: &[T], i: u8) -> T {
    items[usize::from(i) % items.len()]
}

fn tamper(p: &Projection, t: &Tamper) -> Option<Projection> {
    let mut p = p.clone();
    match *t {
        Tamper::Value(i) => {
            let n = p.revealed.len();
            let f = p.revealed.get_mut(usize::from(i) % n.max(1))?;
            f.value = match &f.value {
                Value::Bool(b) => Value::Bool(!b),
                Value::Int(i) => Value::Int(i.wrapping_add(1)),
                Value::Text(s) => Value::Text(format!("{s}x")),
                Value::TextList(l) => Value::TextList(l.iter().cloned().chain(["x".to_owned()]).collect()),
            };
        }
        Tamper::Category => {
            let next = CATEGORIES.iter().position(|c| *c == p.header.category.as_str()).map_or(0, |i| i + 1);
            p.header.category = pick(&CATEGORIES, next as u8).parse().ok()?;
        }
        Tamper::Classification => {
            p.header.classification = match p.header.classification {
                Classification::Public => Classification::NonConfidential,
                _ => Classification::Public,
            }
        }
        Tamper::Created => p.header.created_ms = p.header.created_ms.wrapping_add(1),
        Tamper::Supersedes => {
            p.header.supersedes = match p.header.supersedes {
                Some(_) => None,
                None => Some(Digest([7; 32])),
            }
        }
        Tamper::Agreement => p.envelope.agreement = format!("{}-x", p.envelope.agreement).parse().ok()?,
        Tamper::Audience(i) => {
            let m = pick(&members(), i);
            match p.envelope.audience.binary_search(&m) {
                Ok(at) if p.envelope.audience.len() > 1 => {
                    p.envelope.audience.remove(at);
                }
                Ok(_) => return None,
                Err(at) => p.envelope.audience.insert(at, m),
            }
        }
        Tamper::Seq => p.envelope.seq = p.envelope.seq.wrapping_add(1).max(1),
        Tamper::Expiry => p.envelope.expires_ms = p.envelope.expires_ms.wrapping_add(1),
        Tamper::Kind => {
            if !p.revealed.is_empty() {
                return None;
            }
            p.envelope.kind = match p.envelope.kind {
                EntryKind::Share => EntryKind::Revoke,
                EntryKind::Revoke => EntryKind::Share,
            }
        }
        Tamper::Withheld(i) => {
            let n = p.withheld.len();
            let d = p.withheld.get_mut(usize::from(i) % n.max(1))?;
            d.0[0] ^= 1;
            p.withheld.sort_unstable();
        }
        Tamper::Signature(byte, bit) => p.signature.0[usize::from(byte) % 64] ^= 1 << (bit % 8),
    }
    Some(p)
}

fuzz_target!(|input: Input| {
    let origin = pick(&members(), input.origin);
    let header = RecordHeader {
        category: pick(&CATEGORIES, input.category).parse().expect("catalog category"),
        classification: pick(&Classification::ALL, input.classification),
        origin,
        created_ms: input.created_ms,
        supersedes: input.supersedes.map(Digest),
        expires_ms: input.expires_ms,
    };
    let body: BTreeMap<String, Value> = input.fields.into_iter().map(|(k, v)| (k, v.into())).collect();
    let names: Vec<String> = body.keys().cloned().collect();
    let salt_key = SaltKey::from_bytes(input.key);
    let record = Record { header, body };
    let salted = SaltedRecord::new(record.clone(), &salt_key);
    assert!(salted.is_consistent(), "a freshly salted record is inconsistent");
    assert_eq!(SaltedRecord::new(record, &salt_key), salted, "salting is not deterministic");

    let audience: Vec<_> = input.audience.iter().map(|i| pick(&members(), *i)).collect();
    let envelope = Envelope {
        agreement: pick(&AGREEMENTS, input.agreement).parse().expect("example agreement"),
        audience: audience.clone(),
        seq: input.seq,
        expires_ms: input.envelope_expires_ms,
        kind: EntryKind::Share,
    };
    let withheld_name = |name: &str| {
        names.iter().position(|n| n == name).is_some_and(|i| i < 64 && input.withhold & (1 << i) != 0)
    };
    let sk = signing_key(origin);
    let p = match salted.project(withheld_name, envelope.clone(), &sk) {
        Ok(p) => p,
        Err(ProjectError::Classified(c)) => {
            assert!(!c.may_leave_node());
            return;
        }
        Err(ProjectError::EmptyAudience) => {
            assert!(audience.is_empty());
            return;
        }
        Err(e) => panic!("projecting a consistent record failed: {e}"),
    };
    assert!(salted.record.header.classification.may_leave_node(), "a classified record was projected");
    let key = verifying_key(origin);
    let id = match p.verify(&key) {
        Ok(id) => id,
        Err(VerifyError::ZeroSeq) => return assert_eq!(input.seq, 0),
        Err(VerifyError::TooLarge(_)) | Err(VerifyError::Audience) => return,
        Err(e) => panic!("a projection signed by its origin fails to verify: {e} ({p:?})"),
    };
    assert_eq!(id, salted.id, "the projection proves another record id");

    // Through the wire codec.
    let bytes = encode_stored(&p).expect("a projection encodes");
    let wire: Projection = decode_stored(&bytes).expect("an encoded projection decodes");
    assert_eq!(wire.verify(&key), Ok(id));

    // Withholding every field: same id, still signed.
    let all = salted.project(|_| true, envelope.clone(), &sk).expect("projects with everything withheld");
    assert_eq!(all.verify(&key), Ok(id), "withholding more changed the id or broke the signature");
    assert!(all.revealed.is_empty());
    let revoke = salted.revocation(&p.envelope, input.seq.wrapping_add(1).max(1), &sk).expect("revocation");
    assert_eq!(revoke.verify(&key), Ok(id), "a revocation does not verify to the record's id");
    // Someone else's key.
    let other = pick(&members(), input.origin.wrapping_add(1));
    assert!(p.verify(&verifying_key(other)).is_err(), "verifies under another member's key");

    if let Some(t) = tamper(&p, &input.tamper) {
        assert!(t.verify(&key).is_err(), "a projection changed by {:?} still verifies", input.tamper);
    }
});

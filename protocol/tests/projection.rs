//! Selective disclosure: ids, signatures, tampering, redaction.

mod common;

use common::*;
use tamga_protocol::*;

#[test]
fn projection_verifies_and_names_the_record() {
    let (p, k) = projection();
    let salted = SaltedRecord::new(record(), &SaltKey::from_bytes([9; 32]));
    assert_eq!(p.verify(&k.verifying_key()), Ok(salted.id));
    assert!(salted.is_consistent());
}

#[test]
fn ingest_is_idempotent_and_salt_key_dependent() {
    let a = SaltedRecord::new(record(), &SaltKey::from_bytes([9; 32]));
    let b = SaltedRecord::new(record(), &SaltKey::from_bytes([9; 32]));
    let c = SaltedRecord::new(record(), &SaltKey::from_bytes([10; 32]));
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id, "salts come from the node's secret");
    assert_ne!(a.salts, c.salts);
}

#[test]
fn same_record_id_under_two_agreements_and_redactions() {
    let k = key(7);
    let salted = SaltedRecord::new(record(), &SaltKey::generate());
    let p1 = salted.project(|n| n == "holder_name", envelope("sco-ipr-2012", 1), &k).expect("projects");
    let p2 = salted
        .project(|n| n == "quantity" || n == "mark", envelope("other-agreement", 42), &k)
        .expect("projects");
    let vk = k.verifying_key();
    assert_eq!(p1.verify(&vk), Ok(salted.id));
    assert_eq!(p2.verify(&vk), Ok(salted.id));
    assert_ne!(p1.signature, p2.signature);
}

#[test]
fn redacted_fields_do_not_cross_the_wire() {
    let (p, _) = projection();
    assert!(p.revealed.iter().all(|f| f.name != "holder_name"));
    assert_eq!(p.withheld.len(), 1);
    let frame = codec::encode_request(&Request::Push(Push { projections: vec![p] })).expect("encodes");
    let needle = b"Ivan Petrov";
    assert!(!frame.windows(needle.len()).any(|w| w == needle), "withheld value on the wire");
    assert!(!frame.windows(11).any(|w| w == b"holder_name"), "withheld field name on the wire");
}

#[test]
fn a_holder_can_withhold_more_and_the_projection_still_verifies() {
    let k = key(7);
    let salted = SaltedRecord::new(record(), &SaltKey::generate());
    let envelope = envelope("sco-ipr-2012", 3);
    let mut p = salted.project(|n| n == "holder_name", envelope.clone(), &k).expect("projects");
    let tighter = salted.project(|n| n == "holder_name" || n == "mark", envelope, &k).expect("projects");
    assert_eq!(p.withhold(|n| n == "mark" || n == "holder_name" || n == "no_such_field"), 1);
    assert_eq!(p.verify(&k.verifying_key()), Ok(salted.id));
    assert_eq!((&p.revealed, &p.withheld), (&tighter.revealed, &tighter.withheld));
    assert_eq!(p.withhold(|n| n == "mark"), 0, "withholding twice changes nothing");
}

#[test]
fn confidential_and_secret_are_never_projected() {
    for c in [Classification::Confidential, Classification::Secret] {
        let mut r = record();
        r.header.classification = c;
        let salted = SaltedRecord::new(r, &SaltKey::generate());
        assert_eq!(
            salted.project(|_| false, envelope("a", 1), &key(1)).err(),
            Some(disclosure::ProjectError::Classified(c))
        );
    }
}

#[test]
fn forged_classification_is_refused_on_verify() {
    let (mut p, k) = projection();
    p.header.classification = Classification::Secret;
    assert!(matches!(p.verify(&k.verifying_key()), Err(disclosure::VerifyError::Classified(_))));
}

#[test]
fn wrong_origin_key_fails() {
    let (p, _) = projection();
    assert_eq!(p.verify(&key(8).verifying_key()), Err(disclosure::VerifyError::BadSignature));
}

/// Flip one byte at every position of every revealed value, salt, withheld digest and
/// envelope field: the projection must fail to verify each time.
#[test]
fn any_single_byte_change_breaks_verification() {
    let (p, k) = projection();
    let vk = k.verifying_key();
    let mut variants: Vec<Projection> = Vec::new();
    for (i, f) in p.revealed.iter().enumerate() {
        for b in 0..32 {
            let mut q = p.clone();
            q.revealed[i].salt.0[b] ^= 1;
            variants.push(q);
        }
        let mut q = p.clone();
        q.revealed[i].value = match &f.value {
            Value::Bool(x) => Value::Bool(!x),
            Value::Int(x) => Value::Int(x ^ 1),
            Value::Text(s) => {
                let mut bytes = s.clone().into_bytes();
                bytes[0] ^= 1;
                Value::Text(String::from_utf8(bytes).expect("ascii"))
            }
            Value::TextList(l) => {
                let mut l = l.clone();
                l[0].push('x');
                Value::TextList(l)
            }
        };
        variants.push(q);
    }
    for i in 0..p.withheld.len() {
        for b in 0..32 {
            let mut q = p.clone();
            q.withheld[i].0[b] ^= 0x80;
            variants.push(q);
        }
    }
    let mut q = p.clone();
    q.envelope.seq += 1;
    variants.push(q);
    let mut q = p.clone();
    q.envelope.expires_ms += 1;
    variants.push(q);
    let mut q = p.clone();
    q.envelope.agreement = "sco-ipr-2013".parse().expect("valid");
    variants.push(q);
    let mut q = p.clone();
    q.envelope.audience.push("UZ".parse().expect("valid"));
    variants.push(q);
    let mut q = p.clone();
    q.header.created_ms += 1;
    variants.push(q);
    let mut q = p.clone();
    q.header.origin = "KZ".parse().expect("valid");
    variants.push(q);
    for b in 0..64 {
        let mut q = p.clone();
        q.signature.0[b] ^= 1;
        variants.push(q);
    }
    assert!(variants.len() > 200);
    for (n, q) in variants.iter().enumerate() {
        assert!(q.verify(&vk).is_err(), "variant {n} verified: {q:?}");
    }
    let results = verify_many(&variants.iter().map(|q| (q, &vk)).collect::<Vec<_>>());
    assert!(results.iter().all(|r| r.is_err()));
}

#[test]
fn batch_verification_names_the_bad_one() {
    let (p, k) = projection();
    let vk = k.verifying_key();
    let mut bad = p.clone();
    bad.signature.0[3] ^= 4;
    let items = vec![(&p, &vk), (&bad, &vk), (&p, &vk)];
    let r = verify_many(&items);
    assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok());
    let good = verify_many(&[(&p, &vk), (&p, &vk)]);
    assert!(good.iter().all(|r| r.is_ok()));
}

/// A withheld value cannot be recovered by trying likely values: without the origin's
/// salt key the digest of a guess never matches, even when the guess is right.
#[test]
fn withheld_value_cannot_be_guessed() {
    let (p, _) = projection();
    let target = p.withheld[0];
    // The attacker knows the field name and the true value, and tries salts it can derive.
    let guesses = ["Ivan Petrov", "Ivan  Petrov", "I. Petrov", "ivan petrov"];
    for g in guesses {
        for salt in [[0u8; 32], [9u8; 32], [7u8; 32]] {
            let d = disclosure::field_digest(&Salt(salt), "holder_name", &Value::Text(g.into()));
            assert_ne!(d, target);
        }
        // Even a salt key derived for another record of the same origin does not help.
        let other = SaltKey::generate().salt(&record().header, "holder_name");
        assert_ne!(disclosure::field_digest(&other, "holder_name", &Value::Text(g.into())), target);
    }
    // Salts are 256 bits; two fields of one record never share one.
    let salted = SaltedRecord::new(record(), &SaltKey::generate());
    let salts: std::collections::BTreeSet<_> = salted.salts.values().map(|s| s.0).collect();
    assert_eq!(salts.len(), salted.salts.len());
}

#[test]
fn receipts_and_checkpoints_sign_and_verify() {
    let (p, _) = projection();
    let id = p.record_id().expect("structurally fine");
    let rk = key(3);
    let r = Receipt::sign(id, &p.envelope, p.header.origin, "KZ".parse().expect("valid"), 5, &rk);
    assert!(r.verify(&rk.verifying_key()).is_ok());
    let mut forged = r.clone();
    forged.seq += 1;
    assert!(forged.verify(&rk.verifying_key()).is_err());
    let c = Checkpoint::sign("RU".parse().expect("valid"), 10, id, 99, &rk);
    assert!(c.verify(&rk.verifying_key()).is_ok());
    assert!(c.verify(&key(4).verifying_key()).is_err());
}

#[test]
fn a_batch_of_receipts_carries_one_signature_and_each_verifies_alone() {
    let (p, _) = projection();
    let id = p.record_id().expect("structurally fine");
    let (rk, kz) = (key(3), "KZ".parse::<MemberCode>().expect("valid"));
    for n in 1..=17u64 {
        let items: Vec<ReceiptItem> =
            (0..n).map(|i| ReceiptItem { seq: p.envelope.seq + i, ..ReceiptItem::of(id, &p) }).collect();
        let rs = Receipt::sign_batch(items, kz, 5, &rk);
        assert_eq!(rs.len() as u64, n);
        assert!(rs.iter().all(|r| r.signature == rs[0].signature && r.root() == rs[0].root()));
        for r in &rs {
            assert!(r.verify(&rk.verifying_key()).is_ok(), "batch of {n}, seq {}", r.seq);
            assert!(r.path.len() <= limits::MAX_RECEIPT_PATH);
            // Any change to what it acknowledges, or to its path, breaks it.
            let mut forged = r.clone();
            forged.seq += 1000;
            assert!(forged.verify(&rk.verifying_key()).is_err());
            let mut forged = r.clone();
            forged.received_ms += 1;
            assert!(forged.verify(&rk.verifying_key()).is_err());
            if let Some(step) = forged.path.first_mut() {
                let mut moved = r.clone();
                moved.path[0].left = !moved.path[0].left;
                assert!(moved.verify(&rk.verifying_key()).is_err());
                step.hash.0[0] ^= 1;
                forged.received_ms -= 1;
                assert!(forged.verify(&rk.verifying_key()).is_err());
            }
            assert!(r.verify(&key(4).verifying_key()).is_err());
        }
        assert_eq!(
            verify_receipts(&rs, &[key(4).verifying_key(), rk.verifying_key()]),
            vec![true; n as usize]
        );
    }
    // A receipt cannot borrow another batch's signature.
    let one = Receipt::sign_batch(vec![ReceiptItem::of(id, &p)], kz, 5, &rk).remove(0);
    let mut other = Receipt::sign_batch(vec![ReceiptItem { seq: 99, ..ReceiptItem::of(id, &p) }], kz, 5, &rk);
    other[0].signature = one.signature;
    assert_eq!(verify_receipts(&[one, other.remove(0)], &[rk.verifying_key()]), vec![true, false]);
}

#[test]
fn json_form_is_readable() {
    let (p, _) = projection();
    let j = serde_json::to_value(&p).expect("serializes");
    assert_eq!(j["header"]["origin"], "RU");
    assert_eq!(j["header"]["classification"], "non_confidential");
    assert_eq!(j["withheld"][0].as_str().map(str::len), Some(64));
    let back: Projection = serde_json::from_value(j).expect("round-trips");
    assert_eq!(back, p);
}

#[test]
fn revocations_prove_the_record_without_revealing_it() {
    let k = key(7);
    let salted = SaltedRecord::new(record(), &SaltKey::from_bytes([9; 32]));
    let share = salted.project(|n| n == "holder_name", envelope("sco-ipr-2012", 1), &k).expect("projects");
    let rev = salted.revocation(&share.envelope, 2, &k).expect("revokes");
    assert_eq!(rev.envelope.kind, EntryKind::Revoke);
    assert!(rev.revealed.is_empty(), "a revocation reveals nothing");
    assert_eq!(rev.verify(&k.verifying_key()), Ok(salted.id), "same record id");
    // Turning a share into a revocation (or back) breaks the signature.
    let mut forged = share.clone();
    forged.envelope.kind = EntryKind::Revoke;
    forged.revealed.clear();
    assert!(forged.verify(&k.verifying_key()).is_err());
    let mut reveals = rev.clone();
    reveals.revealed = share.revealed.clone();
    assert_eq!(reveals.verify(&k.verifying_key()), Err(disclosure::VerifyError::RevocationReveals));
}

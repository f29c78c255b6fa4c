//! The projection verifier on bytes from the wire: decode a projection as a push or a
//! pull reply carries it, check its structure, verify it against the origin's roster key.
//!
//! Invariants: nothing panics; `verify` succeeds only with the id `record_id` computes;
//! `verify_many` agrees with `verify`, alone and in a batch; a projection that verifies
//! under its origin's key verifies under no other member's key, re-encodes to bytes that
//! decode and verify to the same record id, and stops verifying when its envelope
//! changes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tamga_fuzz::{members, verifying_key};
use tamga_protocol::codec::{decode_stored, encode_stored};
use tamga_protocol::disclosure::VerifyError;
use tamga_protocol::{verify_many, Projection};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode_stored::<Projection>(data) else { return };
    let structure = p.record_id();
    let key = verifying_key(p.header.origin);
    let verified = p.verify(&key);
    match (&structure, &verified) {
        (Ok(id), Ok(v)) => assert_eq!(id, v, "verify and record_id disagree on the id"),
        (Err(s), Err(v)) => assert_eq!(s, v, "a structural error is reported as itself"),
        (Ok(_), Err(v)) => {
            assert_eq!(v, &VerifyError::BadSignature, "only the signature fails after the structure")
        }
        (Err(s), Ok(_)) => panic!("a projection with a structural error ({s}) verified"),
    }
    let many = verify_many(&[(&p, &key)]);
    assert_eq!(many.first(), Some(&verified), "verify_many of one disagrees with verify");

    let Ok(id) = verified else { return };
    // A good projection next to itself: the batch path.
    let many = verify_many(&[(&p, &key), (&p, &key)]);
    assert!(many.iter().all(|r| r == &Ok(id)), "a good batch of two failed: {many:?}");
    for m in members().into_iter().filter(|m| *m != p.header.origin) {
        let other = verifying_key(m);
        assert!(p.verify(&other).is_err(), "a projection of {} verifies under {m}'s key", p.header.origin);
        // In a batch with a good one, only the bad one is named.
        let mixed = verify_many(&[(&p, &key), (&p, &other)]);
        assert_eq!(mixed.first(), Some(&Ok(id)));
        assert_eq!(mixed.get(1), Some(&Err(VerifyError::BadSignature)));
    }
    let bytes = encode_stored(&p).expect("a verified projection re-encodes");
    let again: Projection = decode_stored(&bytes).expect("a re-encoded projection decodes");
    assert_eq!(again, p);
    assert_eq!(again.verify(&key), Ok(id), "a re-encoded projection no longer verifies");
    let mut forged = p.clone();
    forged.envelope.seq = forged.envelope.seq.wrapping_add(1).max(1);
    assert!(forged.verify(&key).is_err(), "a projection with another sequence number verifies");
    let mut forged = p.clone();
    forged.envelope.expires_ms = forged.envelope.expires_ms.wrapping_add(1);
    assert!(forged.verify(&key).is_err(), "a projection with another expiry verifies");
});

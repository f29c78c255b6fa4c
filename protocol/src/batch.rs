//! Verification of the ed25519 signatures on projections: one at a time, and in batches
//! summed by key.
//!
//! Both checks are cofactored, as ZIP-215 has it, so that they accept the same signatures
//! and every node takes or refuses a projection alike, whether it was checked in a batch
//! (`verify_many`) or alone (`Projection::verify`, or each of a failed batch). A signature `(R, s)` by key
//! `A` on message `M` verifies when `s` is reduced (below ℓ), `R` decodes to a point that
//! is not of small order, `A` is not of small order (weak), and, with
//! `h = SHA-512(R ‖ A ‖ M) mod ℓ` over the encodings as given,
//!
//! ```text
//! [8]([s]·B − R − [h]·A) = 0
//! ```
//!
//! The factor 8 clears any torsion component of `R` or `A`. Without it the single check
//! (ed25519-dalek's `verify_strict`, which recomputes `R` and compares encodings) refuses
//! an `R = [r]B + T` with `T` a torsion point, while a batch, whose random weight `z`
//! multiplies `T` too, takes it whenever `z·T` vanishes: for `T` of order 2, one batch in
//! two. Honest signatures (`R = [r]B`, `A = [a]B`) have no torsion and verify either way.
//!
//! The batch equation is the one ed25519-dalek's `verify_batch` checks (which derives its
//! weights from a transcript of the batch; these come from the thread's CSPRNG), times the
//! cofactor: with a random 128-bit `z_i` for each signature,
//!
//! ```text
//! [8]([-Σ z_i·s_i]·B + Σ z_i·R_i + Σ (z_i·h_i)·A_i) = 0
//! ```
//!
//! which holds for every choice of the `z_i` when each signature verifies alone, and, once
//! multiplied by 8 (the sum then lies in the subgroup of prime order ℓ), for random ones
//! with probability about 2⁻¹²⁸ otherwise. The preconditions (`s` reduced, `R` a point
//! not of small order, `A` not weak) are checked for each signature, as alone. A push or a
//! pull reply carries the projections of one origin, or of a few, so the terms of one key
//! are summed first, `Σ_k (Σ_{i by k} z_i·h_i)·A_k`: the multiscalar multiplication then
//! takes `n + k + 1` points instead of `2n + 1`.
//!
//! Receipts, feedback and checkpoints are never batched and keep `verify_strict`.

use std::collections::BTreeMap;
use std::iter::once;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest as _, Sha512};

/// `s` if reduced, `R` if a point not of small order, and `h = SHA-512(R ‖ A ‖ M) mod ℓ`:
/// what both checks need of one signature, or `None` if it fails a precondition. The key's
/// weakness is checked by the callers (the batch once per key).
fn parts(message: &[u8], sig: &Signature, key: &VerifyingKey) -> Option<(Scalar, EdwardsPoint, Scalar)> {
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes()))?;
    let r = CompressedEdwardsY(*sig.r_bytes()).decompress().filter(|r| !r.is_small_order())?;
    let h = Sha512::new().chain_update(sig.r_bytes()).chain_update(key.as_bytes()).chain_update(message);
    Some((s, r, Scalar::from_bytes_mod_order_wide(&h.finalize().into())))
}

/// Whether one signature verifies, cofactored (see the module doc): what a projection's
/// signature is checked with alone, so that it agrees with [`verify_batch`].
pub(crate) fn verify_one(message: &[u8], sig: &Signature, key: &VerifyingKey) -> bool {
    if key.is_weak() {
        return false;
    }
    let Some((s, r, h)) = parts(message, sig, key) else {
        return false;
    };
    // [s]B − [h]A − R, times 8.
    let sb_ha = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-h, &key.to_edwards(), &s);
    (sb_ha - r).mul_by_cofactor().is_identity()
}

/// Whether every `(message, signature, key)` verifies, as [`verify_one`] would have each:
/// false if one does not, if one is malformed (`s` not reduced, `R` not a point or of
/// small order), or if a key is weak. Says nothing of which one.
pub(crate) fn verify_batch(items: &[(&[u8], Signature, &VerifyingKey)]) -> bool {
    let mut rng = rand::thread_rng();
    let mut b = Scalar::ZERO;
    let (mut zs, mut rs) = (Vec::with_capacity(items.len()), Vec::with_capacity(items.len()));
    let mut by_key: BTreeMap<[u8; 32], (EdwardsPoint, Scalar)> = BTreeMap::new();
    for (message, sig, key) in items {
        let Some((s, r, h)) = parts(message, sig, key) else {
            return false;
        };
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b += z * s;
        zs.push(z);
        rs.push(r);
        match by_key.get_mut(key.as_bytes()) {
            Some((_, c)) => *c += z * h,
            None if key.is_weak() => return false,
            None => {
                by_key.insert(*key.as_bytes(), (key.to_edwards(), z * h));
            }
        }
    }
    let scalars = once(-b).chain(zs).chain(by_key.values().map(|(_, c)| *c));
    let points = once(ED25519_BASEPOINT_POINT).chain(rs).chain(by_key.values().map(|(a, _)| *a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).mul_by_cofactor().is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Signatures by three keys, interleaved: (message, signature, key index).
    fn signed(n: usize) -> (Vec<Vec<u8>>, Vec<Signature>, Vec<VerifyingKey>, Vec<usize>) {
        let keys: Vec<SigningKey> = (1..=3).map(key).collect();
        let messages: Vec<Vec<u8>> = (0..n).map(|i| format!("message {i}").into_bytes()).collect();
        let by: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let sigs = messages.iter().zip(&by).map(|(m, k)| keys[*k].sign(m)).collect();
        (messages, sigs, keys.iter().map(SigningKey::verifying_key).collect(), by)
    }

    fn batch<'a>(
        messages: &'a [Vec<u8>],
        sigs: &[Signature],
        keys: &'a [VerifyingKey],
        by: &[usize],
    ) -> Vec<(&'a [u8], Signature, &'a VerifyingKey)> {
        messages.iter().zip(sigs).zip(by).map(|((m, s), k)| (m.as_slice(), *s, &keys[*k])).collect()
    }

    /// The order-2 point (0, −1): y = p − 1 = 2²⁵⁵ − 20, little-endian, sign bit clear.
    fn order_two() -> EdwardsPoint {
        let mut y = [0xff; 32];
        y[0] = 0xec;
        y[31] = 0x7f;
        let t = CompressedEdwardsY(y).decompress().expect("(0, -1) is on the curve");
        assert!(!t.is_identity() && (t + t).is_identity(), "of order 2");
        t
    }

    fn random_scalar() -> Scalar {
        let mut wide = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut wide);
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    /// A key made by hand, `A = [a]B + extra`, and its secret scalar `a`.
    fn hand_key(extra: EdwardsPoint) -> (Scalar, VerifyingKey) {
        let a = random_scalar();
        let key = VerifyingKey::from_bytes(&(a * ED25519_BASEPOINT_POINT + extra).compress().to_bytes())
            .expect("a point");
        (a, key)
    }

    /// A signature by `a` whose `R` is `[r]B + extra`: `s = r + h·a`, `h` over that `R`'s
    /// encoding, as a signer that adds a torsion point to its nonce point would make it.
    fn sign_with(message: &[u8], a: Scalar, key: &VerifyingKey, r: Scalar, extra: EdwardsPoint) -> Signature {
        let r_bytes = (r * ED25519_BASEPOINT_POINT + extra).compress().to_bytes();
        let h = Sha512::new().chain_update(r_bytes).chain_update(key.as_bytes()).chain_update(message);
        let h = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&r_bytes);
        bytes[32..].copy_from_slice((r + h * a).as_bytes());
        Signature::from_bytes(&bytes)
    }

    #[test]
    fn a_torsion_component_in_r_gets_the_same_answer_alone_and_in_every_batch() {
        let (messages, sigs, keys, by) = signed(6);
        let (a, key) = hand_key(EdwardsPoint::default());
        let message = b"a projection with a torsion component in R";
        let sig = sign_with(message, a, &key, random_scalar(), order_two());
        // [s]B - R - [h]A = -T: the strict single check refuses it, the cofactored one takes it.
        assert!(key.verify_strict(message, &sig).is_err());
        assert!(verify_one(message, &sig, &key), "[8](-T) = 0");
        // Each batch draws its own weights; without the cofactor the batch took it exactly
        // when the weight z was even (z·T = 0), about one batch in two.
        for round in 0..64 {
            let mut items = batch(&messages, &sigs, &keys, &by);
            items.insert(round % (items.len() + 1), (message.as_slice(), sig, &key));
            assert_eq!(verify_batch(&items), verify_one(message, &sig, &key), "batch {round}");
        }
        // An honest signature by the same hand-made key verifies every way.
        let honest = sign_with(message, a, &key, random_scalar(), EdwardsPoint::default());
        assert!(key.verify_strict(message, &honest).is_ok());
        assert!(verify_one(message, &honest, &key));
        assert!(verify_batch(&[(message.as_slice(), honest, &key)]));
    }

    #[test]
    fn a_torsion_component_in_the_key_gets_the_same_answer_alone_and_in_every_batch() {
        let (messages, sigs, keys, by) = signed(6);
        // A = [a]B + T, not of small order, so not weak: [s]B - R - [h]A = -[h]T.
        let (a, key) = hand_key(order_two());
        assert!(!key.is_weak());
        let message = b"a projection by a key with a torsion component";
        let sig = sign_with(message, a, &key, random_scalar(), EdwardsPoint::default());
        assert!(verify_one(message, &sig, &key));
        for round in 0..64 {
            let mut items = batch(&messages, &sigs, &keys, &by);
            items.insert(round % (items.len() + 1), (message.as_slice(), sig, &key));
            assert_eq!(verify_batch(&items), verify_one(message, &sig, &key), "batch {round}");
        }
    }

    #[test]
    fn a_small_order_r_is_refused_alone_and_in_a_batch() {
        let (messages, sigs, keys, by) = signed(6);
        let (a, key) = hand_key(EdwardsPoint::default());
        let message = b"R of small order";
        // r = 0, so R = T and s = h·a: [8]([s]B - R - [h]A) = 0, and only the check that R
        // is not of small order refuses it.
        for extra in [EdwardsPoint::default(), order_two()] {
            let sig = sign_with(message, a, &key, Scalar::ZERO, extra);
            assert!(key.verify_strict(message, &sig).is_err());
            assert!(!verify_one(message, &sig, &key));
            let mut items = batch(&messages, &sigs, &keys, &by);
            items.push((message.as_slice(), sig, &key));
            assert!(!verify_batch(&items));
        }
    }

    #[test]
    fn good_signatures_by_several_keys_verify_together() {
        let (messages, sigs, keys, by) = signed(40);
        assert!(verify_batch(&batch(&messages, &sigs, &keys, &by)));
        assert!(verify_batch(&[]), "nothing to check");
        for ((m, s), k) in messages.iter().zip(&sigs).zip(&by) {
            assert!(verify_one(m, s, &keys[*k]));
        }
    }

    #[test]
    fn one_bad_signature_message_or_key_fails_the_batch_and_alone() {
        let (messages, sigs, keys, by) = signed(40);
        for i in [0, 17, 39] {
            let mut m = messages.clone();
            m[i][0] ^= 1;
            assert!(!verify_one(&m[i], &sigs[i], &keys[by[i]]), "message {i} changed");
            assert!(!verify_batch(&batch(&m, &sigs, &keys, &by)), "message {i} changed");
            for byte in [0, 31, 32, 63] {
                let mut s = sigs.clone();
                let mut bytes = s[i].to_bytes();
                bytes[byte] ^= 1;
                s[i] = Signature::from_bytes(&bytes);
                assert!(!verify_one(&messages[i], &s[i], &keys[by[i]]), "signature {i} byte {byte}");
                assert!(!verify_batch(&batch(&messages, &s, &keys, &by)), "signature {i} byte {byte}");
            }
            let mut wrong = by.clone();
            wrong[i] = (wrong[i] + 1) % 3;
            assert!(!verify_one(&messages[i], &sigs[i], &keys[wrong[i]]), "item {i} by another key");
            assert!(!verify_batch(&batch(&messages, &sigs, &keys, &wrong)), "item {i} by another key");
        }
    }

    #[test]
    fn an_unreduced_s_is_refused_alone_and_in_a_batch() {
        let (messages, sigs, keys, by) = signed(5);
        // s + ℓ: the same point equation, but s not reduced; the single check refuses it.
        let mut bytes = sigs[2].to_bytes();
        // ℓ, the order of the base point, little-endian.
        let mut l = [0u8; 32];
        l[..16].copy_from_slice(&[
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
        ]);
        l[31] = 0x10;
        let mut carry = 0u16;
        for (b, l) in bytes[32..].iter_mut().zip(l) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        let same: [u8; 32] = bytes[32..].try_into().expect("32 bytes");
        assert_eq!(Scalar::from_bytes_mod_order(same).to_bytes(), *sigs[2].s_bytes(), "s + ℓ ≡ s");
        let mut s = sigs.clone();
        s[2] = Signature::from_bytes(&bytes);
        assert!(keys[by[2]].verify_strict(&messages[2], &s[2]).is_err());
        assert!(!verify_one(&messages[2], &s[2], &keys[by[2]]));
        assert!(!verify_batch(&batch(&messages, &s, &keys, &by)));
    }

    #[test]
    fn a_weak_key_is_refused_alone_and_in_a_batch() {
        let (messages, sigs, keys, by) = signed(5);
        // A key of small order (the identity, or T of order 2), R = [r]B and s = r: then
        // [8]([s]B - R - [h]A) = [8](-[h]A) = 0 for every message, so only the check that
        // the key is not weak refuses it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak_keys = [identity, order_two().compress().to_bytes()]
            .map(|a| VerifyingKey::from_bytes(&a).expect("a point"));
        for weak in &weak_keys {
            assert!(weak.is_weak());
            let r = random_scalar();
            let mut forged = [0u8; 64];
            forged[..32].copy_from_slice(&(r * ED25519_BASEPOINT_POINT).compress().to_bytes());
            forged[32..].copy_from_slice(r.as_bytes());
            let forged = Signature::from_bytes(&forged);
            assert!(weak.verify_strict(b"anything", &forged).is_err());
            assert!(!verify_one(b"anything", &forged, weak));
            let mut items = batch(&messages, &sigs, &keys, &by);
            items.push((b"anything", forged, weak));
            assert!(!verify_batch(&items));
        }
    }
}

//! Batch verification of ed25519 signatures that a few keys made.
//!
//! The equation is the one ed25519-dalek's `verify_batch` checks (which derives its
//! weights from a transcript of the batch; these come from the thread's CSPRNG): with a
//! random 128-bit `z_i` for each signature `(R_i, s_i)` of message `M_i` by key `A_i`, and
//! `h_i = SHA-512(R_i ‖ A_i ‖ M_i)`,
//!
//! ```text
//! [-Σ z_i·s_i]·B + Σ z_i·R_i + Σ (z_i·h_i)·A_i = 0
//! ```
//!
//! which holds for every choice of the `z_i` when each signature verifies, and for a
//! random one with probability about 2⁻¹²⁸ otherwise. A push or a pull reply carries the
//! projections of one origin, or of a few, so the terms of one key are summed first,
//! `Σ_k (Σ_{i by k} z_i·h_i)·A_k`: the multiscalar multiplication then takes `n + k + 1`
//! points instead of `2n + 1`.

use std::collections::BTreeMap;
use std::iter::once;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest as _, Sha512};

/// Whether every `(message, signature, key)` verifies. False if one does not, if one is
/// malformed (`s` not reduced, `R` not a point), or if a key is weak (of small order:
/// the single check, `verify_strict`, refuses those too). Says nothing of which one.
pub(crate) fn verify_batch(items: &[(&[u8], Signature, &VerifyingKey)]) -> bool {
    let mut rng = rand::thread_rng();
    let mut b = Scalar::ZERO;
    let (mut zs, mut rs) = (Vec::with_capacity(items.len()), Vec::with_capacity(items.len()));
    let mut by_key: BTreeMap<[u8; 32], (EdwardsPoint, Scalar)> = BTreeMap::new();
    for (message, sig, key) in items {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let h = Sha512::new().chain_update(sig.r_bytes()).chain_update(key.as_bytes()).chain_update(message);
        let h = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b += z * s;
        zs.push(z);
        rs.push(CompressedEdwardsY(*sig.r_bytes()).decompress());
        match by_key.get_mut(key.as_bytes()) {
            Some((_, c)) => *c += z * h,
            None if key.is_weak() => return false,
            None => {
                by_key.insert(*key.as_bytes(), (key.to_edwards(), z * h));
            }
        }
    }
    let scalars = once(-b).chain(zs).chain(by_key.values().map(|(_, c)| *c));
    let points = once(Some(ED25519_BASEPOINT_POINT)).chain(rs).chain(by_key.values().map(|(a, _)| Some(*a)));
    EdwardsPoint::optional_multiscalar_mul(scalars, points).is_some_and(|p| p.is_identity())
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

    #[test]
    fn good_signatures_by_several_keys_verify_together() {
        let (messages, sigs, keys, by) = signed(40);
        assert!(verify_batch(&batch(&messages, &sigs, &keys, &by)));
        assert!(verify_batch(&[]), "nothing to check");
    }

    #[test]
    fn one_bad_signature_message_or_key_fails_the_batch() {
        let (messages, sigs, keys, by) = signed(40);
        for i in [0, 17, 39] {
            let mut m = messages.clone();
            m[i][0] ^= 1;
            assert!(!verify_batch(&batch(&m, &sigs, &keys, &by)), "message {i} changed");
            for byte in [0, 31, 32, 63] {
                let mut s = sigs.clone();
                let mut bytes = s[i].to_bytes();
                bytes[byte] ^= 1;
                s[i] = Signature::from_bytes(&bytes);
                assert!(!verify_batch(&batch(&messages, &s, &keys, &by)), "signature {i} byte {byte}");
            }
            let mut wrong = by.clone();
            wrong[i] = (wrong[i] + 1) % 3;
            assert!(!verify_batch(&batch(&messages, &sigs, &keys, &wrong)), "item {i} by another key");
        }
    }

    #[test]
    fn an_unreduced_s_is_refused_as_the_single_check_refuses_it() {
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
        assert!(!verify_batch(&batch(&messages, &s, &keys, &by)));
    }

    #[test]
    fn a_weak_key_is_refused_as_the_single_check_refuses_it() {
        let (messages, sigs, keys, by) = signed(5);
        // The identity as the key, R the identity and s = 0: the batch equation holds
        // for every weight, so only the weak-key check refuses it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).expect("the identity is a point");
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let forged = Signature::from_bytes(&forged);
        assert!(weak.verify_strict(b"anything", &forged).is_err());
        let mut items = batch(&messages, &sigs, &keys, &by);
        items.push((b"anything", forged, &weak));
        assert!(!verify_batch(&items));
    }
}

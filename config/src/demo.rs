//! **DEMO ONLY.** Deterministic node keys for the example federation in
//! `deploy/example/`, so that its roster can list fixed PeerIds and `tamga demo` can
//! start every member's node without generating and distributing keys.
//!
//! The secret of member `XX` is SHA-256 of the text `"tamga demo key XX"`: anyone can
//! compute it. A real deployment must never use these keys; every real node generates its
//! own key (`tamga init`). This module owns nothing else and is used by nothing in the
//! decision path.

use libp2p_identity::{Keypair, PeerId};
use sha2::{Digest as _, Sha256};
use tamga_protocol::MemberCode;

/// The text prefix hashed with the member code.
pub const DEMO_KEY_PREFIX: &str = "tamga demo key ";

/// **DEMO ONLY**: the publicly known ed25519 secret of a member's demo node.
pub fn demo_secret(code: MemberCode) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DEMO_KEY_PREFIX.as_bytes());
    h.update(code.as_str().as_bytes());
    h.finalize().into()
}

/// **DEMO ONLY**: the libp2p keypair of a member's demo node.
pub fn demo_keypair(code: MemberCode) -> Keypair {
    let mut secret = demo_secret(code);
    Keypair::ed25519_from_bytes(&mut secret).expect("any 32 bytes are a valid ed25519 secret key")
}

/// **DEMO ONLY**: the signing key of a member's demo node (the same key as
/// [`demo_keypair`], as the protocol crate uses it).
pub fn demo_signing_key(code: MemberCode) -> tamga_protocol::SigningKey {
    tamga_protocol::SigningKey::from_bytes(&demo_secret(code))
}

/// **DEMO ONLY**: the PeerId of a member's demo node.
pub fn demo_peer_id(code: MemberCode) -> PeerId {
    demo_keypair(code).public().to_peer_id()
}

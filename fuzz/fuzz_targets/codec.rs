//! The wire codec: every decode entry point of `tamga_protocol::codec` on the same bytes.
//!
//! Invariants: nothing panics; a parsed header's length is within the kind's limit; a
//! decoded request or response re-encodes, the re-encoding decodes to the same message
//! and re-encodes to the same bytes (the encoding is a fixed point); a decoded stored
//! value of every protocol type the store keeps does the same through `encode_stored`.
//!
//! Not an invariant: that a decoded frame re-encodes to its own bytes. bincode accepts
//! integers in a longer varint form than needed (`[251, 5, 0]` decodes as 5), so several
//! frames decode to one message. Nothing hashes or signs wire bytes (signatures cover the
//! canonical encoding of `tamga_protocol::canonical`, and the store re-encodes), so this
//! costs nothing; the fixed-point check above guards the encoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tamga_protocol::codec::{
    decode_request, decode_response, decode_stored, encode_request, encode_response, encode_stored,
    parse_header, HEADER_LEN,
};
use tamga_protocol::limits::frame;
use tamga_protocol::{Checkpoint, Feedback, Projection, Receipt, Record, SaltedRecord};

fn stored<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(v) = decode_stored::<T>(data) else { return };
    let bytes = encode_stored(&v).expect("a decoded stored value re-encodes");
    assert!(bytes.len() <= data.len(), "re-encoding grew from {} to {} bytes", data.len(), bytes.len());
    let again = decode_stored::<T>(&bytes).expect("a re-encoded stored value decodes");
    assert_eq!(again, v, "stored value changed through encode/decode");
    assert_eq!(encode_stored(&again).expect("re-encodes"), bytes, "stored encoding is not a fixed point");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_header(data) {
        assert!(h.len <= frame::MAX, "header admits {} bytes", h.len);
    }
    if let Ok(r) = decode_request(data) {
        assert!(data.len() >= HEADER_LEN);
        let bytes = encode_request(&r).expect("a decoded request re-encodes");
        let again = decode_request(&bytes).expect("a re-encoded request decodes");
        assert_eq!(again, r, "request changed through encode/decode");
        assert_eq!(
            encode_request(&again).expect("re-encodes"),
            bytes,
            "request encoding is not a fixed point"
        );
        // The same bytes never also decode as a response (the kind byte tells them apart).
        assert!(decode_response(data).is_err(), "one frame decodes as a request and a response");
    }
    if let Ok(r) = decode_response(data) {
        let bytes = encode_response(&r).expect("a decoded response re-encodes");
        let again = decode_response(&bytes).expect("a re-encoded response decodes");
        assert_eq!(again, r, "response changed through encode/decode");
        assert_eq!(
            encode_response(&again).expect("re-encodes"),
            bytes,
            "response encoding is not a fixed point"
        );
    }
    stored::<Projection>(data);
    stored::<Receipt>(data);
    stored::<Checkpoint>(data);
    stored::<Feedback>(data);
    stored::<SaltedRecord>(data);
    stored::<Record>(data);
});

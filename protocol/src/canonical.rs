//! The canonical encoding: the one byte string that is hashed or signed for each
//! object. It is defined here and nowhere else, and it is independent of the wire codec
//! (bincode), so that a change of wire format never changes a record id or a signature.
//!
//! # Byte by byte (version 1)
//!
//! Primitives:
//!
//! | notation    | bytes                                                              |
//! |-------------|--------------------------------------------------------------------|
//! | `u8(x)`     | one byte                                                           |
//! | `u64(x)`    | 8 bytes, big-endian                                                |
//! | `i64(x)`    | 8 bytes, big-endian two's complement                               |
//! | `bytes(b)`  | `u32` big-endian length of `b`, then `b`                           |
//! | `str(s)`    | `bytes` of the UTF-8 encoding of `s`                               |
//! | `raw32(d)`  | the 32 bytes of a digest, no length                                |
//! | `opt(x)`    | `0x00` when absent; `0x01` followed by `x` when present            |
//! | `list(xs)`  | `u32` big-endian count, then each item                             |
//!
//! Composites:
//!
//! ```text
//! value(Bool b)      = u8(0x01) u8(b ? 1 : 0)
//! value(Int i)       = u8(0x02) i64(i)
//! value(Text s)      = u8(0x03) str(s)
//! value(TextList l)  = u8(0x04) list(str(s) for s in l)
//!
//! header(h)          = str(h.category) u8(class) str(h.origin) i64(h.created_ms)
//!                      opt(raw32(h.supersedes)) opt(i64(h.expires_ms))
//!                      where class: public 0, non_confidential 1, confidential 2, secret 3
//!
//! salt(k, h, name)   = HMAC-SHA256(key k, str("tamga.salt.v1") header(h) str(name))
//! field_digest       = SHA-256( str("tamga.field.v1") bytes(salt) str(name) value(v) )
//! record_id          = SHA-256( str("tamga.record.v1") header(h)
//!                               list(raw32(d) for d in field digests, sorted ascending) )
//!
//! envelope(e)        = str(e.agreement) list(str(m) for m in e.audience, sorted)
//!                      u64(e.seq) i64(e.expires_ms) u8(kind)
//!                      where kind: share 0, revoke 1
//! projection_message = str("tamga.projection.v1") raw32(record_id) envelope(e)
//! receipt_message    = str("tamga.receipt.v1") raw32(record_id) str(agreement) str(origin)
//!                      u64(seq) str(receiver) i64(received_ms)
//! ```
//!
//! Signatures are ed25519 over the message bytes above, by the key of the member that
//! signs (the origin for a projection, the receiver for a receipt).

use crate::types::{Digest, RecordHeader, Value};

/// An append-only buffer of canonical bytes.
#[derive(Debug, Default, Clone)]
pub struct Canonical {
    buf: Vec<u8>,
}

impl Canonical {
    /// An empty buffer.
    pub fn new() -> Self {
        Canonical { buf: Vec::with_capacity(256) }
    }

    /// `u8(x)`.
    pub fn u8(&mut self, x: u8) -> &mut Self {
        self.buf.push(x);
        self
    }

    /// `u64(x)`.
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.buf.extend_from_slice(&x.to_be_bytes());
        self
    }

    /// `i64(x)`.
    pub fn i64(&mut self, x: i64) -> &mut Self {
        self.buf.extend_from_slice(&x.to_be_bytes());
        self
    }

    fn len32(&mut self, n: usize) {
        // Every input is bounded far below 4 GiB by the codec limits; saturate rather than wrap.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    /// `bytes(b)`.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.len32(b.len());
        self.buf.extend_from_slice(b);
        self
    }

    /// `str(s)`.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// `raw32(d)`.
    pub fn raw32(&mut self, d: &Digest) -> &mut Self {
        self.buf.extend_from_slice(&d.0);
        self
    }

    /// `list(...)` header: the item count. The caller then writes each item.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.len32(n);
        self
    }

    /// `value(v)`.
    pub fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::Bool(b) => self.u8(0x01).u8(u8::from(*b)),
            Value::Int(i) => self.u8(0x02).i64(*i),
            Value::Text(s) => self.u8(0x03).str(s),
            Value::TextList(l) => {
                self.u8(0x04).count(l.len());
                for s in l {
                    self.str(s);
                }
                self
            }
        }
    }

    /// `header(h)`.
    pub fn header(&mut self, h: &RecordHeader) -> &mut Self {
        self.str(h.category.as_str()).u8(h.classification.tag()).str(h.origin.as_str()).i64(h.created_ms);
        match &h.supersedes {
            None => self.u8(0),
            Some(d) => self.u8(1).raw32(d),
        };
        match h.expires_ms {
            None => self.u8(0),
            Some(t) => self.u8(1).i64(t),
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// SHA-256 of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_are_big_endian_and_length_prefixed() {
        let mut c = Canonical::new();
        c.u8(7).u64(1).i64(-1).str("ab");
        assert_eq!(
            c.as_bytes(),
            &[
                7, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, b'a',
                b'b'
            ]
        );
    }

    #[test]
    fn values_are_tagged() {
        let mut c = Canonical::new();
        c.value(&Value::TextList(vec!["x".into()]));
        assert_eq!(c.as_bytes(), &[4, 0, 0, 0, 1, 0, 0, 0, 1, b'x']);
    }
}

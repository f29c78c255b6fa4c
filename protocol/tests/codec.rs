//! The frame codec: every kind round-trips; every malformed input is an error, never a
//! panic, never an allocation beyond the kind's limit.

mod common;

use common::*;
use proptest::prelude::*;
use tamga_protocol::codec::{self, CodecError, HEADER_LEN};
use tamga_protocol::*;

fn stream() -> StreamKey {
    StreamKey { origin: "RU".parse().expect("valid"), agreement: "sco-ipr-2012".parse().expect("valid") }
}

fn requests() -> Vec<Request> {
    let (p, k) = projection();
    let id = p.record_id().expect("fine");
    vec![
        Request::Hello(Hello {
            member: "RU".parse().expect("valid"),
            roster_digest: Digest::of(b"roster"),
            agreements: vec![("sco-ipr-2012".parse().expect("valid"), Digest::of(b"a"))],
            checkpoint: Some(Checkpoint::sign("RU".parse().expect("valid"), 3, id, 4, &k)),
        }),
        Request::Push(Push { projections: vec![p.clone(), p] }),
        Request::Summary(Summary {
            streams: vec![StreamSummary { stream: stream(), contiguous: 10, above: vec![12, 15] }],
        }),
        Request::Pull(Pull { ranges: vec![SeqRange { stream: stream(), from: 11, to: 11 }] }),
        Request::Feedback(Feedback::sign(
            id,
            "sco-ipr-2012".parse().expect("valid"),
            "RU".parse().expect("valid"),
            "KZ".parse().expect("valid"),
            FeedbackOutcome::Seized,
            "1,200 pairs seized at Dostyk".into(),
            5,
            &k,
        )),
    ]
}

fn responses() -> Vec<Response> {
    let (p, k) = projection();
    let id = p.record_id().expect("fine");
    let receipt = Receipt::sign(id, &p.envelope, p.header.origin, "KZ".parse().expect("valid"), 1, &k);
    vec![
        Response::Hello(Hello {
            member: "KZ".parse().expect("valid"),
            roster_digest: Digest::of(b"r"),
            agreements: vec![],
            checkpoint: None,
        }),
        Response::Push(PushReply {
            receipts: vec![receipt],
            refused: vec![Refusal { index: 1, reason: "bad signature".into() }],
        }),
        Response::Summary(Summary { streams: vec![] }),
        Response::Pull(PullReply {
            projections: vec![p],
            withheld: vec![SeqRange { stream: stream(), from: 2, to: 5 }],
        }),
        Response::Error("rate limited".into()),
        Response::FeedbackStored,
    ]
}

#[test]
fn every_kind_round_trips() {
    for r in requests() {
        let f = codec::encode_request(&r).expect("encodes");
        assert_eq!(codec::decode_request(&f).expect("decodes"), r);
        // A request frame is not a response.
        assert!(matches!(codec::decode_response(&f), Err(CodecError::Kind(_))));
    }
    for r in responses() {
        let f = codec::encode_response(&r).expect("encodes");
        assert_eq!(codec::decode_response(&f).expect("decodes"), r);
        assert!(matches!(codec::decode_request(&f), Err(CodecError::Kind(_))));
    }
}

#[test]
fn payload_len_is_what_a_frame_carries() {
    let (p, _) = projection();
    let one = codec::payload_len(&p).expect("counts");
    let push = Push { projections: vec![p.clone(), p.clone(), p] };
    let frame = codec::encode_request(&Request::Push(push.clone())).expect("encodes");
    assert_eq!(codec::payload_len(&push).expect("counts"), frame.len() - HEADER_LEN);
    // Three projections and the list's length, one byte below 251 items.
    assert_eq!(frame.len() - HEADER_LEN, 3 * one + 1);
}

#[test]
fn feedback_is_signed_by_its_giver() {
    let Request::Feedback(fb) = requests().pop().expect("a feedback request") else { panic!("not feedback") };
    let k = key(7);
    assert!(fb.verify(&k.verifying_key()).is_ok());
    let mut forged = fb.clone();
    forged.outcome = FeedbackOutcome::FalsePositive;
    assert!(forged.verify(&k.verifying_key()).is_err());
    assert!(fb.verify(&key(8).verifying_key()).is_err());
}

#[test]
fn truncated_frames_are_errors() {
    for r in requests() {
        let f = codec::encode_request(&r).expect("encodes");
        for cut in 0..f.len() {
            assert!(codec::decode_request(&f[..cut]).is_err(), "cut at {cut} decoded");
        }
    }
}

#[test]
fn trailing_bytes_are_errors() {
    let f = codec::encode_request(&requests()[0]).expect("encodes");
    let mut g = f.clone();
    g.push(0);
    assert!(matches!(codec::decode_request(&g), Err(CodecError::Trailing(1))));
    // Trailing bytes inside the announced payload are refused too.
    let mut h = f.clone();
    h.push(0);
    let len = u32::from_be_bytes([h[6], h[7], h[8], h[9]]) + 1;
    h[6..10].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(codec::decode_request(&h), Err(CodecError::Trailing(1))));
}

#[test]
fn wrong_magic_version_and_kind_are_errors() {
    let f = codec::encode_request(&requests()[1]).expect("encodes");
    let mut m = f.clone();
    m[0] = b'X';
    assert!(matches!(codec::decode_request(&m), Err(CodecError::Magic)));
    let mut v = f.clone();
    v[4] = 2;
    assert!(matches!(codec::decode_request(&v), Err(CodecError::Version(2))));
    let mut k = f.clone();
    k[5] = 0x42;
    assert!(matches!(codec::decode_request(&k), Err(CodecError::Kind(0x42))));
}

#[test]
fn oversized_frames_are_refused_from_the_header() {
    let mut h = Vec::from(codec::MAGIC);
    h.extend_from_slice(&[codec::VERSION, 0x01]);
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(codec::parse_header(&h), Err(CodecError::Oversized { .. })));
    assert!(matches!(codec::decode_request(&h), Err(CodecError::Oversized { .. })));
    // Exactly one byte over the hello limit.
    let mut h2 = h.clone();
    h2[6..10].copy_from_slice(&((limits::frame::HELLO as u32) + 1).to_be_bytes());
    assert!(matches!(codec::parse_header(&h2), Err(CodecError::Oversized { .. })));
}

/// A payload that claims a huge collection length must fail without allocating it.
#[test]
fn huge_claimed_lengths_do_not_allocate() {
    // bincode varint: 0xfd then u64 little-endian. A push claiming 2^62 projections.
    let mut payload = vec![0xfd];
    payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let mut f = Vec::from(codec::MAGIC);
    f.extend_from_slice(&[codec::VERSION, 0x02]);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    assert!(codec::decode_request(&f).is_err());
    // An error reply claiming a 2^40-byte string.
    let mut payload = vec![0xfd];
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let mut f = Vec::from(codec::MAGIC);
    f.extend_from_slice(&[codec::VERSION, 0xff]);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    assert!(codec::decode_response(&f).is_err());
}

#[test]
fn count_limits_are_enforced_after_decoding() {
    let (p, _) = projection();
    let too_many = Request::Push(Push { projections: vec![p; limits::MAX_BATCH + 1] });
    // The encoder refuses nothing here (it only bounds bytes), the decoder refuses the count.
    let f = codec::encode_request(&too_many).expect("within the byte limit");
    assert!(matches!(codec::decode_request(&f), Err(CodecError::Limit(_))));
}

#[test]
fn invalid_identifiers_inside_a_valid_frame_are_refused() {
    let f = codec::encode_request(&requests()[3]).expect("encodes");
    // Replace the origin "RU" by "r!" inside the payload.
    let pos = f.windows(2).position(|w| w == b"RU").expect("origin present");
    let mut g = f.clone();
    g[pos] = b'r';
    g[pos + 1] = b'!';
    assert!(matches!(codec::decode_request(&g), Err(CodecError::Malformed(_))));
}

/// A projection whose one revealed list holds `items` empty strings: one byte each on the
/// wire, a `String` each in memory.
fn with_empty_strings(items: usize) -> Projection {
    let (mut p, _) = projection();
    let list = p.revealed.iter_mut().find(|f| f.name == "hs_codes").expect("hs_codes is revealed");
    list.value = Value::TextList(vec![String::new(); items]);
    p
}

#[test]
fn lists_whose_elements_would_take_many_times_their_bytes_are_refused_before_allocation() {
    // 4 MB on the wire, half a push's frame; 96 MB as strings in memory.
    let p = with_empty_strings(4_000_000);
    let frames = [
        codec::encode_request(&Request::Push(Push { projections: vec![p.clone()] })).expect("encodes"),
        codec::encode_response(&Response::Pull(PullReply { projections: vec![p], withheld: vec![] }))
            .expect("encodes"),
    ];
    for (i, frame) in frames.iter().enumerate() {
        let got = if i == 0 {
            codec::decode_request(frame).map(|_| ())
        } else {
            codec::decode_response(frame).map(|_| ())
        };
        match got {
            Err(CodecError::Malformed(m)) => assert!(m.contains("exceeds the memory"), "{m}"),
            other => panic!("frame {i}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_stored_list_announcing_more_items_than_memory_holds_is_an_error() {
    // A text list (variant 3) announcing 2^64 - 1 items (253: a u64 follows), and none there.
    let mut bytes = vec![3u8, 253];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(codec::decode_stored::<Value>(&bytes).is_err());
}

#[test]
fn a_projection_decodes_exactly_when_its_frame_share_is_within_its_budget() {
    // The memory a push's decoding may take for its lists is twice its frame limit: find
    // the projection whose frame share is the largest within it.
    let budget = 2 * tamga_protocol::limits::frame::PUSH;
    let share = |n| codec::frame_share(&with_empty_strings(n)).expect("counts");
    let per_item = share(1001) - share(1000);
    assert_eq!(per_item, std::mem::size_of::<String>(), "an empty string is charged a String");
    let fits = 1000 + (budget - share(1000)) / per_item;
    for (items, decodes) in [(fits, true), (fits + 1, false)] {
        let push = Request::Push(Push { projections: vec![with_empty_strings(items)] });
        let frame = codec::encode_request(&push).expect("encodes");
        assert_eq!(codec::decode_request(&frame).is_ok(), decodes, "{items} items, share {}", share(items));
    }
}

#[test]
fn a_batch_whose_frame_shares_fit_its_frame_decodes() {
    // Projections heavy in small list items, batched as senders do: by frame share.
    let p = with_empty_strings(20_000);
    let each = codec::frame_share(&p).expect("counts");
    assert!(each > codec::payload_len(&p).expect("counts"), "its memory, not its bytes, is its share");
    let n = tamga_protocol::limits::frame::PUSH / each;
    let frame = codec::encode_request(&Request::Push(Push { projections: vec![p; n] })).expect("encodes");
    match codec::decode_request(&frame) {
        Ok(Request::Push(push)) => assert_eq!(push.projections.len(), n),
        other => panic!("expected the push, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_digest_is_shown_as_lowercase_hex_and_read_back(bytes in any::<[u8; 32]>()) {
        let d = Digest(bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        prop_assert_eq!(d.to_hex(), hex.clone());
        prop_assert_eq!(d.to_string(), hex.clone());
        prop_assert_eq!(&d.hex_bytes()[..], hex.as_bytes());
        prop_assert_eq!(format!("{d:?}"), hex[..16].to_owned());
        prop_assert_eq!(serde_json::to_string(&d).expect("serialises"), format!("\"{hex}\""));
        prop_assert_eq!(hex.parse::<Digest>().expect("parses"), d);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode_request(&bytes);
        let _ = codec::decode_response(&bytes);
        let _ = codec::parse_header(&bytes);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        kind in prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x84, 0xff]),
        payload in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut f = Vec::from(codec::MAGIC);
        f.extend_from_slice(&[codec::VERSION, kind]);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        let _ = codec::decode_request(&f);
        let _ = codec::decode_response(&f);
    }

    #[test]
    fn mutated_valid_frames_never_panic(idx in 0usize..5, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let f = codec::encode_request(&requests()[idx]).expect("encodes");
        let mut g = f.clone();
        let i = pos.index(g.len());
        g[i] = byte;
        if let Ok(Request::Push(p)) = codec::decode_request(&g) {
            // A mutated push that still decodes must not verify unless unchanged.
            let k = key(7).verifying_key();
            for q in &p.projections {
                if g != f { let _ = q.verify(&k); }
            }
        }
        prop_assert!(HEADER_LEN == 10);
    }
}

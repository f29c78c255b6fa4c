#![allow(dead_code, unreachable_pub)]
//! Fixtures shared by the protocol tests.

use std::collections::BTreeMap;

use tamga_protocol::*;

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn record() -> Record {
    let mut body = BTreeMap::new();
    body.insert("mark".to_string(), Value::Text("ACME".into()));
    body.insert("holder_name".to_string(), Value::Text("Ivan Petrov".into()));
    body.insert("quantity".to_string(), Value::Int(1200));
    body.insert("hs_codes".to_string(), Value::TextList(vec!["6403".into(), "6404".into()]));
    body.insert("seized".to_string(), Value::Bool(true));
    Record {
        header: RecordHeader {
            category: "ipr.infringement".parse().expect("valid"),
            classification: Classification::NonConfidential,
            origin: "RU".parse().expect("valid"),
            created_ms: 1_700_000_000_000,
            supersedes: None,
            expires_ms: None,
        },
        body,
    }
}

pub fn envelope(agreement: &str, seq: u64) -> Envelope {
    Envelope {
        kind: EntryKind::Share,
        agreement: agreement.parse().expect("valid"),
        audience: vec!["KZ".parse().expect("valid"), "CN".parse().expect("valid")],
        seq,
        expires_ms: 1_800_000_000_000,
    }
}

pub fn projection() -> (Projection, SigningKey) {
    let k = key(7);
    let salted = SaltedRecord::new(record(), &SaltKey::from_bytes([9; 32]));
    let p = salted
        .project(|name| name == "holder_name", envelope("sco-ipr-2012", 1), &k)
        .expect("non-confidential projects");
    (p, k)
}

//! Writes the seed corpora under `fuzz/corpus/<target>/` from real inputs: the files of
//! `deploy/example`, ingest bodies for each category of its catalog, and frames and
//! stored values encoded by the protocol crate from records of that catalog, projected
//! under the example agreements and signed with the demo keys.
//!
//! Deterministic: run again, it writes the same bytes (fixed salt key, fixed times).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use tamga_config::{decide, Decision, Federation};
use tamga_fuzz::{code, example, example_federation, signing_key, NOW_MS};
use tamga_protocol::codec::{encode_request, encode_response, encode_stored};
use tamga_protocol::{
    Checkpoint, Digest, EntryKind, Envelope, Feedback, FeedbackOutcome, Hello, Projection, Pull, PullReply,
    Push, PushReply, Receipt, Record, RecordHeader, Refusal, Request, Response, SaltKey, SaltedRecord,
    SeqRange, StreamKey, StreamSummary, Summary,
};

/// One valid ingest body per category of the example catalog.
fn bodies() -> Vec<Json> {
    vec![
        json!({"category": "ipr.protected_mark", "classification": "public", "body": {
            "register_number": "KZ-IPR-0089", "mark_name": "RAHAT", "mark_kind": "combined",
            "nice_classes": ["30"], "goods_description": "Chocolate and confectionery",
            "protected_from": "2009-11-02", "protected_until": "2029-11-01", "status": "active",
            "right_holder_name": "Rakhat JSC", "right_holder_contact": "ipr@rakhat.example"}}),
        json!({"category": "ipr.infringement", "classification": "non_confidential",
            "created": "2014-05-28T06:00:00+06:00", "body": {
            "detained_on": "2014-05-27", "customs_office": "Khorgos customs post", "mark_name": "ADIDAS",
            "goods_description": "Sports footwear", "hs_code": "6404.11", "quantity": 4800, "unit": "pairs",
            "estimated_value_usd": "96000.00", "country_of_origin": "CN", "route": ["CN", "KZ"],
            "outcome": "seized", "declarant_name": "Ili Trading", "driver_name": "Ma Jun"}}),
        json!({"category": "rms.method", "classification": "public", "body": {
            "title": "Selectivity by route and HS chapter", "method_type": "selectivity",
            "summary": "Risk scoring of declarations from the route and the HS chapter.",
            "customs_procedures": ["import", "transit"], "in_use_since": "2011-01-01",
            "author_name": "Petrova Irina"}}),
        json!({"category": "rms.event", "classification": "public", "expires": "2015-01-01T00:00:00Z",
            "body": {"title": "Seminar on post-clearance audit", "event_kind": "seminar",
            "starts_on": "2014-09-15", "ends_on": "2014-09-17", "location": "Almaty", "host": "KZ",
            "languages": ["ru", "zh", "en"], "places": 40}}),
        json!({"category": "energy.transfer", "classification": "non_confidential", "body": {
            "period_start": "2014-04-01", "period_end": "2014-04-30", "crossing_point": "Alashankou",
            "direction": "export", "energy_type": "crude_oil", "volume": 1012345.5, "unit": "tonnes",
            "country_from": "KZ", "country_to": "CN", "reported_at": "2014-05-02T09:30:00+04:00",
            "contract_reference": "KC-2014-04", "contract_price": "742.10", "counterparty": "CNPC"}}),
        json!({"category": "enforcement.alert", "classification": "non_confidential", "body": {
            "alert_kind": "undervaluation", "summary": "Electronics declared at a tenth of their value.",
            "detected_at": "2014-05-30T14:05:00Z", "customs_office": "Dostyk", "case_number": "KZ-14-0031",
            "hs_codes": ["8517.12"], "route": ["CN", "KZ"], "risk_level": "high",
            "vehicle_plate": "777 ABA 02", "suspect_name": "Ivanov Ivan", "suspect_document": "N1234567"}}),
    ]
}

/// Ingest bodies the API must refuse, each for another reason.
fn bad_bodies() -> Vec<Json> {
    vec![
        json!({"category": "rms.event", "classification": "public", "body": {
            "title": "x", "event_kind": "party", "starts_on": "2014-02-30", "location": "Almaty",
            "host": "KAZ", "places": 1.5}}),
        json!({"category": "energy.transfer", "classification": "public", "body": {
            "period_start": "2014-04-01", "period_end": "2014-04-30", "crossing_point": "x",
            "direction": "export", "energy_type": "lng", "volume": "-0012.3400", "unit": "mwh",
            "reported_at": "9999-12-31T23:59:59-23:59"}}),
        json!({"category": "no.such", "classification": "secret", "body": {}}),
        json!({"category": "rms.method", "classification": "confidential", "created": "yesterday",
            "supersedes": "00", "body": {"title": null, "extra": [1, 2]}}),
    ]
}

/// The example records, validated and normalised by the catalog as the API does.
fn records(fed: &Federation) -> Vec<Record> {
    bodies()
        .into_iter()
        .map(|b| {
            let category = b["category"].as_str().expect("category").parse().expect("category id");
            let body = b["body"].as_object().expect("body");
            let body = fed.catalog.validate_body(&category, body).expect("example body is valid");
            Record {
                header: RecordHeader {
                    category,
                    classification: b["classification"].as_str().expect("class").parse().expect("class"),
                    origin: code("KZ"),
                    created_ms: NOW_MS - 86_400_000,
                    supersedes: None,
                    expires_ms: None,
                },
                body,
            }
        })
        .collect()
}

/// Each record projected under each agreement that lets KZ share it, as its policy says.
fn projections(fed: &Federation, salted: &[SaltedRecord]) -> Vec<Projection> {
    let key = signing_key(code("KZ"));
    let mut out = Vec::new();
    for s in salted {
        for (seq, a) in (1..).zip(fed.agreements_for(&s.record.header.category)) {
            let mut audience = Vec::new();
            let mut withheld = None;
            for peer in fed.roster.codes() {
                if let Decision::Allow { withheld: w } = decide(&s.record.header, a, peer, fed, NOW_MS) {
                    audience.push(peer);
                    withheld = Some(w);
                }
            }
            let Some(withheld) = withheld else { continue };
            let envelope = Envelope {
                agreement: a.id.clone(),
                audience,
                seq,
                expires_ms: NOW_MS + 365 * 86_400_000,
                kind: EntryKind::Share,
            };
            let p = s.project(|f| withheld.contains(f), envelope, &key).expect("projects");
            out.push(p);
        }
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let fed = example_federation();
    let salt_key = SaltKey::from_bytes([42; 32]);
    let salted: Vec<SaltedRecord> =
        records(fed).into_iter().map(|r| SaltedRecord::new(r, &salt_key)).collect();
    let projections = projections(fed, &salted);
    assert!(projections.len() >= 4, "the example shares at least one record per agreement");
    let kz = code("KZ");
    let ru = code("RU");
    let first = &projections[0];
    let receipt = Receipt::sign(salted[0].id, &first.envelope, kz, ru, NOW_MS + 1000, &signing_key(ru));
    let checkpoint = Checkpoint::sign(kz, 1234, Digest::of(b"head"), NOW_MS, &signing_key(kz));
    let feedback = Feedback::sign(
        salted[1].id,
        "sco-ipr-2012".parse().expect("agreement id"),
        kz,
        ru,
        FeedbackOutcome::Seized,
        "1,200 pairs seized at Troitsk".to_owned(),
        NOW_MS + 5000,
        &signing_key(ru),
    );
    let stream = |a: &str| StreamKey { origin: kz, agreement: a.parse().expect("agreement id") };
    let revocation =
        salted[0].revocation(&first.envelope, 99, &signing_key(kz)).expect("revocation of a shared record");

    // ---- codec: request and response frames, and stored values ----
    let dir = root.join("codec");
    let requests = [
        (
            "request-hello",
            Request::Hello(Hello {
                member: kz,
                roster_digest: fed.roster.digest(),
                agreements: fed.agreement_terms(),
                checkpoint: Some(checkpoint.clone()),
            }),
        ),
        ("request-push-1", Request::Push(Push { projections: vec![first.clone()] })),
        ("request-push-all", Request::Push(Push { projections: projections.clone() })),
        (
            "request-summary",
            Request::Summary(Summary {
                streams: vec![
                    StreamSummary {
                        stream: stream("sco-ipr-2012"),
                        contiguous: 12,
                        above: vec![14, 15, 300],
                    },
                    StreamSummary { stream: stream("ru-kz-enforcement"), contiguous: 0, above: vec![] },
                ],
            }),
        ),
        (
            "request-pull",
            Request::Pull(Pull {
                ranges: vec![
                    SeqRange { stream: stream("sco-ipr-2012"), from: 13, to: 13 },
                    SeqRange { stream: stream("sco-energy-2008"), from: 1, to: u64::MAX },
                ],
            }),
        ),
        ("request-feedback", Request::Feedback(feedback.clone())),
    ];
    for (name, r) in &requests {
        write(&dir, name, &encode_request(r).expect("encodes"));
    }
    let responses = [
        (
            "response-hello",
            Response::Hello(Hello {
                member: ru,
                roster_digest: fed.roster.digest(),
                agreements: fed.agreement_terms(),
                checkpoint: None,
            }),
        ),
        (
            "response-push",
            Response::Push(PushReply {
                receipts: vec![receipt.clone()],
                refused: vec![Refusal { index: 1, reason: "not in the audience".to_owned() }],
            }),
        ),
        (
            "response-summary",
            Response::Summary(Summary {
                streams: vec![StreamSummary {
                    stream: stream("sco-rms-2013"),
                    contiguous: 3,
                    above: vec![5],
                }],
            }),
        ),
        (
            "response-pull",
            Response::Pull(PullReply {
                projections: vec![first.clone(), revocation.clone()],
                withheld: vec![SeqRange { stream: stream("sco-ipr-2012"), from: 2, to: 7 }],
            }),
        ),
        ("response-error", Response::Error("rate limit: 100 summaries per minute".to_owned())),
        ("response-feedback-stored", Response::FeedbackStored),
    ];
    for (name, r) in &responses {
        write(&dir, name, &encode_response(r).expect("encodes"));
    }
    write(&dir, "stored-projection", &encode_stored(first).expect("encodes"));
    write(&dir, "stored-receipt", &encode_stored(&receipt).expect("encodes"));
    write(&dir, "stored-checkpoint", &encode_stored(&checkpoint).expect("encodes"));
    write(&dir, "stored-feedback", &encode_stored(&feedback).expect("encodes"));
    write(&dir, "stored-salted-record", &encode_stored(&salted[4]).expect("encodes"));
    write(&dir, "stored-record", &encode_stored(&salted[3].record).expect("encodes"));

    // ---- projection_verify: signed projections as stored and sent ----
    let dir = root.join("projection_verify");
    for p in &projections {
        let name = format!("{}-{}", p.envelope.agreement, p.header.category);
        write(&dir, &name, &encode_stored(p).expect("encodes"));
    }
    write(&dir, "revocation", &encode_stored(&revocation).expect("encodes"));
    let mut forged = first.clone();
    forged.envelope.audience.retain(|m| *m != ru);
    write(&dir, "forged-audience", &encode_stored(&forged).expect("encodes"));

    // ---- projection_sign: structured input, seeded with deterministic bytes ----
    let dir = root.join("projection_sign");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, len) in [48usize, 96, 160, 256, 400, 640, 1024, 2048].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        write(&dir, &format!("random-{i}"), &bytes);
    }

    // ---- config_files: every file of the example federation ----
    let dir = root.join("config_files");
    write(&dir, "roster.toml", example::ROSTER.as_bytes());
    write(&dir, "catalog.toml", example::CATALOG.as_bytes());
    for (name, text) in example::AGREEMENTS {
        write(&dir, &format!("agreement-{name}"), text.as_bytes());
    }
    for (m, text) in example::POLICIES {
        write(&dir, &format!("policy-{m}.toml"), text.as_bytes());
    }
    for (m, text) in example::NODES {
        write(&dir, &format!("node-{m}.toml"), text.as_bytes());
    }

    // ---- ingest_json: the API's bodies, good and bad ----
    let dir = root.join("ingest_json");
    for b in bodies() {
        let name = format!("one-{}", b["category"].as_str().expect("category"));
        write(&dir, &name, serde_json::to_string_pretty(&b).expect("json").as_bytes());
    }
    write(&dir, "batch", json!({ "records": bodies() }).to_string().as_bytes());
    for (i, b) in bad_bodies().into_iter().enumerate() {
        write(&dir, &format!("bad-{i}"), b.to_string().as_bytes());
    }
    let confidential = BTreeMap::from([("category", "rms.method"), ("classification", "secret")]);
    write(&dir, "bad-no-body", serde_json::to_string(&confidential).expect("json").as_bytes());
    println!("seed corpora written under {}", root.display());
}

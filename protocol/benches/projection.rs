//! Projection sign and verify, single and batched, and the frame codec.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tamga_protocol::*;

fn record(i: i64) -> Record {
    let mut body = BTreeMap::new();
    body.insert("mark".to_string(), Value::Text(format!("MARK-{i}")));
    body.insert("holder_name".to_string(), Value::Text("Right Holder LLC".into()));
    body.insert("quantity".to_string(), Value::Int(i));
    body.insert("description".to_string(), Value::Text("x".repeat(200)));
    Record {
        header: RecordHeader {
            category: "ipr.infringement".parse().expect("valid"),
            classification: Classification::NonConfidential,
            origin: "RU".parse().expect("valid"),
            created_ms: 1_700_000_000_000 + i,
            supersedes: None,
            expires_ms: None,
        },
        body,
    }
}

fn envelope(seq: u64) -> Envelope {
    Envelope {
        kind: EntryKind::Share,
        agreement: "sco-ipr-2012".parse().expect("valid"),
        audience: ["CN", "KG", "KZ", "TJ", "UZ"].iter().map(|c| c.parse().expect("valid")).collect(),
        seq,
        expires_ms: 1_900_000_000_000,
    }
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[5; 32]);
    let vk = key.verifying_key();
    let salt_key = SaltKey::from_bytes([1; 32]);
    let salted = SaltedRecord::new(record(1), &salt_key);
    let p = salted.project(|n| n == "holder_name", envelope(1), &key).expect("projects");

    let mut g = c.benchmark_group("projection");
    g.throughput(Throughput::Elements(1));
    g.bench_function("salt+id", |b| b.iter(|| SaltedRecord::new(black_box(record(1)), &salt_key)));
    g.bench_function("project+sign", |b| {
        b.iter(|| salted.project(|n| n == "holder_name", envelope(1), &key))
    });
    g.bench_function("verify", |b| b.iter(|| black_box(&p).verify(&vk)));
    g.bench_function("record_id (encode+hash)", |b| b.iter(|| black_box(&p).record_id()));
    g.finish();

    let batch: Vec<Projection> = (0..64)
        .map(|i| {
            SaltedRecord::new(record(i), &salt_key)
                .project(|n| n == "holder_name", envelope(i as u64 + 1), &key)
                .expect("projects")
        })
        .collect();
    let items: Vec<(&Projection, &VerifyingKey)> = batch.iter().map(|p| (p, &vk)).collect();
    let mut g = c.benchmark_group("verify_batch_64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("verify_many", |b| b.iter(|| verify_many(black_box(&items))));
    g.finish();

    let frame = codec::encode_request(&Request::Push(Push { projections: batch.clone() })).expect("encodes");
    let mut g = c.benchmark_group("codec_push_64");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| codec::encode_request(&Request::Push(Push { projections: batch.clone() })))
    });
    g.bench_function("decode", |b| b.iter(|| codec::decode_request(black_box(&frame))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The cost of the sharing decision on the example federation (`deploy/example`, RU's
//! node): one `decide`, one `audience` over all parties, one `decide_accept`, and one
//! `explain` for comparison. Run with
//! `cargo bench -p tamga-config --bench decide -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use tamga_config::{audience, decide, decide_accept, explain, Federation};
use tamga_protocol::{Classification, MemberCode, RecordHeader};

/// 2014-06-01T00:00:00Z: every example agreement is in force.
const NOW: i64 = 1_401_580_800_000;

fn code(s: &str) -> MemberCode {
    s.parse().expect("member code")
}

fn load(member: &str) -> Federation {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example");
    Federation::load_files(
        &dir.join("roster.toml"),
        &dir.join("catalog.toml"),
        &dir.join("agreements"),
        &dir.join(format!("policies/{member}.toml")),
        code(member),
    )
    .unwrap_or_else(|e| panic!("example federation: {e}"))
}

fn header(category: &str, origin: &str) -> RecordHeader {
    RecordHeader {
        category: category.parse().expect("category"),
        classification: Classification::NonConfidential,
        origin: code(origin),
        created_ms: NOW - 60_000,
        supersedes: None,
        expires_ms: None,
    }
}

fn bench(c: &mut Criterion) {
    let ru = load("RU");
    let ipr = ru.agreement(&"sco-ipr-2012".parse().expect("id")).expect("ipr agreement");
    let energy = ru.agreement(&"sco-energy-2008".parse().expect("id")).expect("energy agreement");
    let infringement = header("ipr.infringement", "RU");
    let transfer = header("energy.transfer", "RU");
    let kz = code("KZ");
    let tj = code("TJ");

    assert!(decide(&infringement, ipr, kz, &ru, NOW).is_allow());
    assert!(!decide(&transfer, energy, tj, &ru, NOW).is_allow());

    let mut g = c.benchmark_group("decide");
    g.bench_function("decide/allow", |b| {
        b.iter(|| {
            decide(black_box(&infringement), black_box(ipr), black_box(kz), black_box(&ru), black_box(NOW))
        })
    });
    g.bench_function("decide/deny_paused", |b| {
        b.iter(|| {
            decide(black_box(&transfer), black_box(energy), black_box(tj), black_box(&ru), black_box(NOW))
        })
    });
    g.bench_function("audience/6_parties", |b| {
        b.iter(|| audience(black_box(&infringement), black_box(ipr), black_box(&ru), black_box(NOW)))
    });
    let inbound = header("ipr.infringement", "KZ");
    g.bench_function("decide_accept", |b| {
        b.iter(|| {
            decide_accept(black_box(&inbound), black_box(ipr), black_box(kz), black_box(&ru), black_box(NOW))
        })
    });
    g.bench_function("explain", |b| {
        b.iter(|| {
            explain(black_box(&infringement), black_box(ipr), black_box(kz), black_box(&ru), black_box(NOW))
        })
    });
    g.finish();

    c.bench_function("federation/load_example", |b| b.iter(|| load(black_box("RU"))));
}

criterion_group!(benches, bench);
criterion_main!(benches);

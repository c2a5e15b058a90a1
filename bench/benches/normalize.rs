//! Parse + normalize + content hash of one signal: the per-signal CPU cost of ingestion.
//! Baseline in the same run: `serde_json` parsing alone, the floor any JSON ingest pays.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use trailspark_bench::sample_payloads;
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::tenancy::OrgId;
use trailspark_sources::parse::parse_object;

fn bench(c: &mut Criterion) {
    let ctx = Context {
        org_id: OrgId(1),
        api_key_id: 1,
        received_at: 1_700_000_000_000,
        ..Default::default()
    };
    let mut g = c.benchmark_group("trailspark_core::normalize");
    for (name, payload) in sample_payloads() {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("serde_json_parse_only", name),
            &payload,
            |b, p| {
                b.iter(|| {
                    black_box(serde_json::from_slice::<serde_json::Value>(p.as_bytes()).unwrap())
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("parse_normalize_hash", name),
            &payload,
            |b, p| {
                b.iter(|| {
                    let v = parse_object(black_box(p.as_bytes()), "").unwrap();
                    black_box(normalize(&ctx, &v, p.clone()))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

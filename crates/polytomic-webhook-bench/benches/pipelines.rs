//! Criterion benchmarks: every pipeline at every batch size, one at a time.
//!
//! `cargo bench -p polytomic-webhook-bench`. For ratios that hold on a noisy machine, prefer the
//! `report` binary, which interleaves the pipelines.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use polytomic_webhook_bench::payload::{Payload, SIZES};
use polytomic_webhook_bench::pipelines::{Pipeline, SECRET, pipelines, request};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("runtime: {error}"));
    let pipelines = pipelines();
    for size in SIZES {
        let payload = Payload::generate(size);
        for pipeline in Pipeline::ALL {
            if let Err(error) = runtime.block_on(pipelines.verify(pipeline, &payload)) {
                panic!("{error}");
            }
        }
        let mut group = c.benchmark_group(format!("{size}_records"));
        group.throughput(Throughput::Bytes(payload.json.len() as u64));
        if size >= 10_000 {
            group.sample_size(20);
        }
        for pipeline in Pipeline::ALL {
            let id = BenchmarkId::from_parameter(pipeline.name());
            if pipeline.is_http() {
                group.bench_function(id, |b| {
                    b.iter_batched(
                        || request(&payload.gzip, SECRET),
                        |request| runtime.block_on(pipelines.call(pipeline, request)),
                        BatchSize::SmallInput,
                    );
                });
            } else {
                group.bench_function(id, |b| {
                    b.iter(|| pipeline.run_floor(black_box(&payload.gzip)));
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Emulated instructions per second on pre-decoded code, and decode +
//! analysis time per section (`Program::decode`).
//!
//! `cargo bench -p rseq-emu-aarch64 --bench exec`; the best-of-N figures a
//! loaded machine disturbs less: `cargo run --release -p rseq-emu-aarch64
//! --example exec_speed`.

mod common;

use common::*;
use criterion::{black_box, criterion_main, Criterion, Throughput};
use rseq_emu_aarch64::Aarch64;
use rseq_emu_core::Program;

fn bench(c: &mut Criterion) {
    let copy = program(COPY);
    let qcopy = program(QCOPY);
    let counter = program(COUNTER);
    let mut g = c.benchmark_group("execute");
    g.throughput(Throughput::Elements(COPY_STEPS));
    g.bench_function("byte_copy_1000", |b| {
        let mut mem = memory();
        b.iter(|| black_box(run_copy(&copy, &mut mem)))
    });
    g.bench_function("byte_copy_1000_flat_memory", |b| {
        let mut mem = flat();
        b.iter(|| black_box(run_copy(&copy, &mut mem)))
    });
    g.throughput(Throughput::Elements(QCOPY_STEPS));
    g.bench_function("q_copy_4096_bytes", |b| {
        let mut mem = memory();
        b.iter(|| black_box(run_qcopy(&qcopy, &mut mem)))
    });
    g.throughput(Throughput::Elements(6));
    g.bench_function("counter_section", |b| {
        let mut mem = memory();
        b.iter(|| black_box(run_counter(&counter, &mut mem)))
    });
    g.finish();
    let mut g = c.benchmark_group("decode");
    for (name, words) in [("byte_copy_section", COPY), ("counter_section", COUNTER)] {
        let bytes = code(words);
        g.bench_function(name, |b| {
            b.iter(|| {
                Program::<Aarch64>::decode(black_box(&bytes), BASE, BASE, BASE + bytes.len() as u64)
                    .unwrap()
            })
        });
    }
    g.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);

//! Emulated instructions per second on pre-decoded code, and decode +
//! analysis time per section (`Program::decode`).
//!
//! `cargo bench -p rseq-emu-x86_64 --bench exec -- --warm-up-time 1 --measurement-time 4`
//!
//! On a shared machine the means move with the load; `cargo run --release
//! -p rseq-emu-x86_64 --example exec_speed` reports best-of-N times of the
//! same work.

mod common;

use common::*;
use criterion::{black_box, criterion_main, Criterion, Throughput};
use rseq_emu_core::Program;
use rseq_emu_x86_64::X86_64;

fn bench(c: &mut Criterion) {
    let copy = copy_program();
    let mut g = c.benchmark_group("execute");
    g.throughput(Throughput::Elements(COPY_STEPS));
    g.bench_function("byte_copy_1000", |b| {
        let mut mem = memory();
        assert_eq!(run_copy(&copy, &mut mem), COPY_STEPS);
        b.iter(|| black_box(run_copy(&copy, &mut mem)))
    });
    g.bench_function("byte_copy_1000_flat_memory", |b| {
        let mut mem = flat();
        assert_eq!(run_copy(&copy, &mut mem), COPY_STEPS);
        b.iter(|| black_box(run_copy(&copy, &mut mem)))
    });
    let counter = counter_program();
    g.throughput(Throughput::Elements(6));
    g.bench_function("counter_section", |b| {
        let mut mem = memory();
        assert_eq!(run_counter(&counter, &mut mem), 6);
        b.iter(|| black_box(run_counter(&counter, &mut mem)))
    });
    g.finish();
    let mut g = c.benchmark_group("decode");
    g.bench_function("byte_copy_section", |b| {
        b.iter(|| Program::<X86_64>::decode(black_box(COPY), BASE, BASE, BASE + 21).unwrap())
    });
    g.bench_function("counter_section", |b| {
        b.iter(|| Program::<X86_64>::decode(black_box(COUNTER), BASE, BASE, BASE + 22).unwrap())
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);

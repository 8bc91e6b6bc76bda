//! Best-of-N timing of the `exec` bench's work: the fastest of many short
//! batches, which a shared machine's load disturbs far less than a mean.
//!
//! `cargo run --release -p rseq-emu-aarch64 --example exec_speed`

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::*;
use rseq_emu_aarch64::Aarch64;
use rseq_emu_core::bench::{best, report};
use rseq_emu_core::Program;

fn main() {
    let copy = program(COPY);
    let mut mem = memory();
    let t = best(40, 50, || run_copy(&copy, &mut mem));
    report("execute/byte_copy_1000", t, COPY_STEPS);
    let mut fl = flat();
    let t = best(40, 50, || run_copy(&copy, &mut fl));
    report("execute/byte_copy_1000_flat_memory", t, COPY_STEPS);
    let qcopy = program(QCOPY);
    let mut mem = memory();
    let t = best(40, 50, || run_qcopy(&qcopy, &mut mem));
    report("execute/q_copy_4096_bytes", t, QCOPY_STEPS);
    let counter = program(COUNTER);
    let mut mem = memory();
    let t = best(200, 2000, || run_counter(&counter, &mut mem));
    report("execute/counter_section", t, 6);
    for (name, words) in [
        ("decode/byte_copy_section", COPY),
        ("decode/counter_section", COUNTER),
    ] {
        let bytes = code(words);
        let t = best(20, 200, || {
            let p = Program::<Aarch64>::decode(
                black_box(&bytes),
                BASE,
                BASE,
                BASE + bytes.len() as u64,
            )
            .unwrap();
            p.insns().len() as u64
        });
        println!("{name:<40} {:>9.2} us", t * 1e6);
    }
}

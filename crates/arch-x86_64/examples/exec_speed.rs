//! Best-of-N timing of the `exec` bench's work: the fastest of many short
//! batches, which a shared machine's load disturbs far less than a mean.
//!
//! `cargo run --release -p rseq-emu-x86_64 --example exec_speed`

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::*;
use rseq_emu_core::bench::{best, report};
use rseq_emu_core::Program;
use rseq_emu_x86_64::X86_64;

fn main() {
    let copy = copy_program();
    let mut mem = memory();
    let t = best(40, 50, || run_copy(&copy, &mut mem));
    report("execute/byte_copy_1000", t, COPY_STEPS);
    let mut fl = flat();
    let t = best(40, 50, || run_copy(&copy, &mut fl));
    report("execute/byte_copy_1000_flat_memory", t, COPY_STEPS);
    let counter = counter_program();
    let mut mem = memory();
    let t = best(200, 2000, || run_counter(&counter, &mut mem));
    report("execute/counter_section", t, 6);
    for (name, code, end) in [
        ("decode/byte_copy_section", COPY, 21u64),
        ("decode/counter_section", COUNTER, 22),
    ] {
        let t = best(20, 200, || {
            let p = Program::<X86_64>::decode(black_box(code), BASE, BASE, BASE + end).unwrap();
            p.insns().len() as u64
        });
        println!("{name:<40} {:>9.2} us", t * 1e6);
    }
}

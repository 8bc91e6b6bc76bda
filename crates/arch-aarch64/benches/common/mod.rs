//! The sections and memories both speed measurements run: the criterion
//! bench (`benches/exec.rs`) and the best-of-N timer
//! (`examples/exec_speed.rs`), so their figures describe the same work.

#![allow(dead_code)]

use rseq_emu_aarch64::{A64State, Aarch64};
pub use rseq_emu_core::bench::Flat;
use rseq_emu_core::{Memory, Outcome, Program, SparseMemory};

pub const BASE: u64 = 0x40_0000;
pub const DATA: u64 = 0x10_0000;

/// The backwards byte-copy loop of librseq's memcpy sections:
/// cbz x2, end; 1: sub x2, x2, #1; ldrb w9, [x1, x2]; strb w9, [x0, x2];
/// cbnz x2, 1b; end:
pub const COPY: &[u32] = &[
    0xb400_00a2,
    0xd100_0442,
    0x3862_6829,
    0x3822_6809,
    0xb5ff_ffa2,
];
/// Bytes copied per run.
pub const COPY_N: u64 = 1000;
/// Instructions per run: cbz, then 4 per byte.
pub const COPY_STEPS: u64 = 1 + 4 * COPY_N;

/// A 16-byte SIMD copy loop: 1: ldr q0, [x1], #16; str q0, [x0], #16;
/// subs x2, x2, #1; b.ne 1b
pub const QCOPY: &[u32] = &[0x3cc1_0420, 0x3c81_0400, 0xf100_0442, 0x54ff_ffa1];
/// 16-byte blocks copied per run.
pub const QCOPY_N: u64 = 256;
/// Instructions per run.
pub const QCOPY_STEPS: u64 = 4 * QCOPY_N;

/// The per-CPU counter section: cpu_id from the rseq area, compare,
/// indexed load, add, indexed store commit (run to its commit).
pub const COUNTER: &[u32] = &[
    0xb940_040a, // ldr w10, [x0, #4]
    0x6b01_015f, // cmp w10, w1
    0x5400_0801, // b.ne abort
    0xf861_586b, // ldr x11, [x3, w1, uxtw #3]
    0x8b02_016b, // add x11, x11, x2
    0xf821_586b, // str x11, [x3, w1, uxtw #3]
];

/// Little-endian bytes of instruction words.
pub fn code(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A section covering all of `words`.
pub fn program(words: &[u32]) -> Program<Aarch64> {
    let c = code(words);
    Program::<Aarch64>::decode(&c, BASE, BASE, BASE + c.len() as u64).unwrap()
}

/// 16 KiB of writable data at `DATA` (all 7s, the cpu_id word of the
/// counter's rseq area at `DATA + 0x104` zero).
pub fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    let mut bytes = vec![7u8; 0x4000];
    bytes[0x104..0x108].fill(0);
    m.map(DATA, bytes, true).unwrap();
    m
}

/// The same contents as one flat region.
pub fn flat() -> Flat {
    let mut bytes = vec![7u8; 0x4000];
    bytes[0x104..0x108].fill(0);
    Flat { base: DATA, bytes }
}

fn copy_state(n: u64) -> A64State {
    let mut st = A64State {
        pc: BASE,
        ..A64State::default()
    };
    st.x[0] = DATA + 0x2000;
    st.x[1] = DATA;
    st.x[2] = n;
    st
}

/// Run the byte copy once; returns the steps (checked to commit).
#[inline]
pub fn run_copy<M: Memory>(p: &Program<Aarch64>, mem: &mut M) -> u64 {
    let mut st = copy_state(COPY_N);
    let r = p.run(&mut st, mem, 1 << 20);
    assert_eq!((r.outcome, r.steps), (Outcome::Committed, COPY_STEPS));
    r.steps
}

/// Run the q-register copy once.
#[inline]
pub fn run_qcopy<M: Memory>(p: &Program<Aarch64>, mem: &mut M) -> u64 {
    let mut st = copy_state(QCOPY_N);
    let r = p.run(&mut st, mem, 1 << 20);
    assert_eq!((r.outcome, r.steps), (Outcome::Committed, QCOPY_STEPS));
    r.steps
}

/// Run the counter section once, to its commit (6 instructions).
#[inline]
pub fn run_counter<M: Memory>(p: &Program<Aarch64>, mem: &mut M) -> u64 {
    let mut st = A64State {
        pc: BASE,
        ..A64State::default()
    };
    st.x[0] = DATA + 0x100; // rseq area: cpu_id (0) at +4
    st.x[2] = 1;
    st.x[3] = DATA + 0x1000; // per-CPU counters
    let r = p.run(&mut st, mem, 100);
    assert_eq!((r.outcome, r.steps), (Outcome::Committed, 6));
    r.steps
}

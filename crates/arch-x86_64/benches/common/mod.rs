//! The sections and memories both speed measurements run: the criterion
//! bench (`benches/exec.rs`) and the best-of-N timer
//! (`examples/exec_speed.rs`), so their figures describe the same work.

#![allow(dead_code)]

pub use rseq_emu_core::bench::Flat;
use rseq_emu_core::{Memory, Outcome, Program, SparseMemory};
use rseq_emu_x86_64::{reg, X86State, X86_64};

pub const BASE: u64 = 0x40_0000;
pub const DATA: u64 = 0x10_0000;

/// A byte-copy loop (librseq's memcpy section shape):
/// 0: test %rcx,%rcx; je end; 1: movzbl (%rsi),%eax; mov %al,(%rdi);
/// inc %rsi; inc %rdi; dec %rcx; jnz 1b; end:
pub const COPY: &[u8] = &[
    0x48, 0x85, 0xc9, // test %rcx,%rcx
    0x74, 0x13, // je end
    0x0f, 0xb6, 0x06, // movzbl (%rsi),%eax
    0x88, 0x07, // mov %al,(%rdi)
    0x48, 0xff, 0xc6, // inc %rsi
    0x48, 0xff, 0xc7, // inc %rdi
    0x48, 0xff, 0xc9, // dec %rcx
    0x75, 0xf0, // jne 1b
    0x90, 0x90, // padding so "end" is the section end
];

/// A typical per-CPU counter section: read cpu_id via %fs, index, compare,
/// add-to-memory commit.
pub const COUNTER: &[u8] = &[
    0x64, 0x8b, 0x04, 0x25, 0xe4, 0xff, 0xff, 0xff, // mov %fs:0xffffffffffffffe4,%eax
    0x39, 0xd0, // cmp %edx,%eax
    0x75, 0x0c, // jne abort (exits)
    0x48, 0x8d, 0x0c, 0xc7, // lea (%rdi,%rax,8),%rcx
    0x48, 0x8b, 0x31, // mov (%rcx),%rsi
    0x48, 0x01, 0x31, // add %rsi,(%rcx)
    0x90, 0x90, // to the commit
];

/// CPU number the counter section finds at `%fs:-28`.
pub const CPU: u64 = 3;

/// A `SparseMemory` with one 16 KiB data region (the counter's cpu_id
/// at `%fs:-28` with `fs_base = DATA + 0x100`).
pub fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(DATA, vec![7u8; 0x4000], true).unwrap();
    m.write_u32(DATA + 0x100 - 28, CPU as u32).unwrap();
    m
}

/// The same 16 KiB as one flat region (no cpu_id: the counter section
/// does not run on it).
pub fn flat() -> Flat {
    Flat {
        base: DATA,
        bytes: vec![7u8; 0x4000],
    }
}

/// Loop iterations of the byte-copy benchmark.
pub const COPY_N: u64 = 1000;

/// Instructions one byte-copy run executes: test, je, then 6 per byte.
pub const COPY_STEPS: u64 = 2 + 6 * COPY_N;

/// The byte-copy section, decoded.
pub fn copy_program() -> Program<X86_64> {
    Program::<X86_64>::decode(COPY, BASE, BASE, BASE + COPY.len() as u64 - 2).unwrap()
}

/// The counter section, decoded.
pub fn counter_program() -> Program<X86_64> {
    Program::<X86_64>::decode(COUNTER, BASE, BASE, BASE + COUNTER.len() as u64 - 2).unwrap()
}

/// One byte-copy run of `COPY_N` bytes; returns the instructions executed.
#[inline]
pub fn run_copy<M: Memory>(p: &Program<X86_64>, mem: &mut M) -> u64 {
    let mut st = X86State {
        rip: BASE,
        ..X86State::default()
    };
    st.gpr[reg::RSI] = DATA;
    st.gpr[reg::RDI] = DATA + 0x2000;
    st.gpr[reg::RCX] = COPY_N;
    let r = p.run(&mut st, mem, 1 << 20);
    debug_assert_eq!(r.outcome, Outcome::Committed);
    r.steps
}

/// One counter run, through its commit; returns the instructions executed (6).
#[inline]
pub fn run_counter(p: &Program<X86_64>, mem: &mut SparseMemory) -> u64 {
    let mut st = X86State {
        rip: BASE,
        fs_base: DATA + 0x100,
        ..X86State::default()
    };
    st.gpr[reg::RDI] = DATA + 0x1000;
    st.gpr[reg::RDX] = CPU;
    let r = p.run(&mut st, mem, 100);
    assert_eq!(r.outcome, Outcome::Committed);
    r.steps
}

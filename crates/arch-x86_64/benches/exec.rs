//! Emulated instructions per second on pre-decoded code, and decode +
//! analysis time per section (`Program::decode`).
//!
//! `cargo bench -p rseq-emu-x86_64 --bench exec`

use criterion::{black_box, criterion_main, Criterion, Throughput};
use rseq_emu_core::{AccessKind, MemFault, Memory, Outcome, Program, SparseMemory};
use rseq_emu_x86_64::{reg, X86State, X86_64};

const BASE: u64 = 0x40_0000;
const DATA: u64 = 0x10_0000;

/// A byte-copy loop (librseq's memcpy section shape):
/// 0: test %rcx,%rcx; je end; 1: movzbl (%rsi),%eax; mov %al,(%rdi);
/// inc %rsi; inc %rdi; dec %rcx; jnz 1b; end:
const COPY: &[u8] = &[
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
const COUNTER: &[u8] = &[
    0x64, 0x8b, 0x04, 0x25, 0xe4, 0xff, 0xff, 0xff, // mov %fs:0xffffffffffffffe4,%eax
    0x39, 0xd0, // cmp %edx,%eax
    0x75, 0x0c, // jne abort (exits)
    0x48, 0x8d, 0x0c, 0xc7, // lea (%rdi,%rax,8),%rcx
    0x48, 0x8b, 0x31, // mov (%rcx),%rsi
    0x48, 0x01, 0x31, // add %rsi,(%rcx)
    0x90, 0x90, // to the commit
];

/// One flat writable region: isolates the executor from the cost of
/// `SparseMemory`'s region lookup.
struct Flat(Vec<u8>);

impl Memory for Flat {
    #[inline]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let o = addr.wrapping_sub(DATA) as usize;
        match self.0.get(o..o.wrapping_add(buf.len())) {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(MemFault {
                addr,
                size: buf.len(),
                kind: AccessKind::Read,
            }),
        }
    }
    #[inline]
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let o = addr.wrapping_sub(DATA) as usize;
        match self.0.get_mut(o..o.wrapping_add(data.len())) {
            Some(s) => {
                s.copy_from_slice(data);
                Ok(())
            }
            None => Err(MemFault {
                addr,
                size: data.len(),
                kind: AccessKind::Write,
            }),
        }
    }
}

/// CPU number the counter section finds at `%fs:-28`.
const CPU: u64 = 3;

fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(DATA, vec![7u8; 0x4000], true).unwrap();
    m.write_u32(DATA + 0x100 - 28, CPU as u32).unwrap();
    m
}

fn bench(c: &mut Criterion) {
    let copy = Program::<X86_64>::decode(COPY, BASE, BASE, BASE + COPY.len() as u64 - 2).unwrap();
    let n = 1000u64;
    let mut g = c.benchmark_group("execute");
    // 3 + 6 * n instructions (test, je not taken, then the loop body).
    g.throughput(Throughput::Elements(2 + 6 * n));
    g.bench_function("byte_copy_1000", |b| {
        let mut mem = memory();
        b.iter(|| {
            let mut st = X86State {
                rip: BASE,
                ..X86State::default()
            };
            st.gpr[reg::RSI] = DATA;
            st.gpr[reg::RDI] = DATA + 0x2000;
            st.gpr[reg::RCX] = n;
            let r = copy.run(&mut st, &mut mem, 1 << 20);
            black_box(r.steps)
        })
    });
    g.bench_function("byte_copy_1000_flat_memory", |b| {
        let mut mem = Flat(vec![7u8; 0x4000]);
        b.iter(|| {
            let mut st = X86State {
                rip: BASE,
                ..X86State::default()
            };
            st.gpr[reg::RSI] = DATA;
            st.gpr[reg::RDI] = DATA + 0x2000;
            st.gpr[reg::RCX] = n;
            let r = copy.run(&mut st, &mut mem, 1 << 20);
            black_box(r.steps)
        })
    });
    let counter =
        Program::<X86_64>::decode(COUNTER, BASE, BASE, BASE + COUNTER.len() as u64 - 2).unwrap();
    g.throughput(Throughput::Elements(6));
    g.bench_function("counter_section", |b| {
        let mut mem = memory();
        b.iter(|| {
            let mut st = X86State {
                rip: BASE,
                fs_base: DATA + 0x100,
                ..X86State::default()
            };
            st.gpr[reg::RDI] = DATA + 0x1000;
            st.gpr[reg::RDX] = CPU;
            let r = counter.run(&mut st, &mut mem, 100);
            assert_eq!(r.outcome, Outcome::Committed);
            black_box(r.steps)
        })
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

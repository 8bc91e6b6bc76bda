//! Emulated instructions per second on pre-decoded code, and decode +
//! analysis time per section (`Program::decode`).
//!
//! `cargo bench -p rseq-emu-aarch64 --bench exec`

use criterion::{black_box, criterion_main, Criterion, Throughput};
use rseq_emu_aarch64::{A64State, Aarch64};
use rseq_emu_core::{AccessKind, MemFault, Memory, Program, SparseMemory};

const BASE: u64 = 0x40_0000;
const DATA: u64 = 0x10_0000;

fn code(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The backwards byte-copy loop of librseq's memcpy sections:
/// cbz x2, end; 1: sub x2, x2, #1; ldrb w9, [x1, x2]; strb w9, [x0, x2];
/// cbnz x2, 1b; end:
const COPY: &[u32] = &[
    0xb400_00a2,
    0xd100_0442,
    0x3862_6829,
    0x3822_6809,
    0xb5ff_ffa2,
];

/// A 16-byte SIMD copy loop: 1: ldr q0, [x1], #16; str q0, [x0], #16;
/// subs x2, x2, #1; b.ne 1b
const QCOPY: &[u32] = &[0x3cc1_0420, 0x3c81_0400, 0xf100_0442, 0x54ff_ffa1];

/// The per-CPU counter section: cpu_id from the rseq area, compare,
/// indexed load, add, indexed store commit.
const COUNTER: &[u32] = &[
    0xb940_040a, // ldr w10, [x0, #4]
    0x6b01_015f, // cmp w10, w1
    0x5400_0801, // b.ne abort
    0xf861_586b, // ldr x11, [x3, w1, uxtw #3]
    0x8b02_016b, // add x11, x11, x2
    0xf821_586b, // str x11, [x3, w1, uxtw #3]
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

fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(DATA, vec![7u8; 0x4000], true).unwrap();
    m
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

fn bench(c: &mut Criterion) {
    let copy_code = code(COPY);
    let copy =
        Program::<Aarch64>::decode(&copy_code, BASE, BASE, BASE + copy_code.len() as u64).unwrap();
    let n = 1000u64;
    let mut g = c.benchmark_group("execute");
    // cbz, then 4 instructions per byte.
    g.throughput(Throughput::Elements(1 + 4 * n));
    g.bench_function("byte_copy_1000", |b| {
        let mut mem = memory();
        b.iter(|| {
            let mut st = copy_state(n);
            let r = copy.run(&mut st, &mut mem, 1 << 20);
            assert!(r.outcome.is_exit());
            black_box(r.steps)
        })
    });
    g.bench_function("byte_copy_1000_flat_memory", |b| {
        let mut mem = Flat(vec![7u8; 0x4000]);
        b.iter(|| {
            let mut st = copy_state(n);
            let r = copy.run(&mut st, &mut mem, 1 << 20);
            black_box(r.steps)
        })
    });
    let q_code = code(QCOPY);
    let qcopy =
        Program::<Aarch64>::decode(&q_code, BASE, BASE, BASE + q_code.len() as u64).unwrap();
    let q = 256u64;
    g.throughput(Throughput::Elements(4 * q));
    g.bench_function("q_copy_4096_bytes", |b| {
        let mut mem = memory();
        b.iter(|| {
            let mut st = copy_state(q);
            let r = qcopy.run(&mut st, &mut mem, 1 << 20);
            assert!(r.outcome.is_exit());
            black_box(r.steps)
        })
    });
    let counter_code = code(COUNTER);
    let counter =
        Program::<Aarch64>::decode(&counter_code, BASE, BASE, BASE + counter_code.len() as u64)
            .unwrap();
    g.throughput(Throughput::Elements(6));
    g.bench_function("counter_section", |b| {
        let mut mem = memory();
        b.iter(|| {
            let mut st = A64State {
                pc: BASE,
                ..A64State::default()
            };
            st.x[0] = DATA + 0x100;
            st.x[3] = DATA + 0x1000;
            let r = counter.run(&mut st, &mut mem, 100);
            black_box(r.steps)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("decode");
    g.bench_function("byte_copy_section", |b| {
        b.iter(|| Program::<Aarch64>::decode(black_box(&copy_code), BASE, BASE, BASE + 20).unwrap())
    });
    g.bench_function("counter_section", |b| {
        b.iter(|| {
            Program::<Aarch64>::decode(black_box(&counter_code), BASE, BASE, BASE + 24).unwrap()
        })
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);

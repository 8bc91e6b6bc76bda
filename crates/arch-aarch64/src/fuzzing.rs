//! Fuzz bodies, shared by the cargo-fuzz target `a64_exec` in `fuzz/` and
//! by the ordinary test that runs them over a fixed seed corpus.

use rseq_emu_core::fuzzing::step_checked;
use rseq_emu_core::rng::xorshift64;
use rseq_emu_core::{Program, SparseMemory};

use crate::{A64State, Aarch64};

const CODE_BASE: u64 = 0x40_0000;
const DATA_BASE: u64 = 0x1000;
const DATA_LEN: usize = 0x1000;

/// Decode arbitrary bytes as a section and run them from an arbitrary
/// state on a small [`SparseMemory`] (one writable page, then a read-only
/// one). Must never panic; checks, one step at a time
/// (`rseq_emu_core::fuzzing::step_checked`), that a fault or an
/// Unsupported stop leaves state and memory untouched and that every
/// other step counts exactly one instruction.
///
/// Layout of `data`: 31 × 8 bytes of x registers (an odd value becomes a
/// pointer into the data page), 8 bytes of sp, 4 bytes of nzcv, 16 bytes
/// seeding v0..v31 and tpidr_el0, then the code (little-endian words).
///
/// ```
/// rseq_emu_aarch64::fuzzing::fuzz_exec(&[0x91; 400]);
/// ```
pub fn fuzz_exec(data: &[u8]) {
    let mut st = A64State::default();
    let mut rest = data;
    let mut take = |n: usize| -> Option<u64> {
        if rest.len() < n {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        Some(u64::from_le_bytes(b))
    };
    for x in st.x.iter_mut() {
        if let Some(v) = take(8) {
            *x = if v & 1 == 1 {
                DATA_BASE + (v >> 1) % DATA_LEN as u64
            } else {
                v
            };
        }
    }
    if let Some(v) = take(8) {
        // Mostly an aligned pointer into the data page, sometimes anything.
        st.sp = if v & 3 != 0 {
            DATA_BASE + (((v >> 2) % DATA_LEN as u64) & !0xf)
        } else {
            v
        };
    }
    if let Some(v) = take(4) {
        st.nzcv = (v as u32) & 0xf000_0000;
    }
    if let Some(seed) = take(8) {
        let mut x = seed | 1;
        for r in st.v.iter_mut() {
            xorshift64(&mut x);
            *r = u128::from(x) << 64 | u128::from(x.rotate_left(17));
        }
        st.tpidr_el0 = DATA_BASE + (x % DATA_LEN as u64);
    }
    let _ = take(8);
    if rest.len() < 4 {
        return;
    }
    let code = rest;
    st.pc = CODE_BASE;
    let end = CODE_BASE + (code.len() as u64 & !3);
    let Ok(prog) = Program::<Aarch64>::decode(code, CODE_BASE, CODE_BASE, end) else {
        return;
    };
    let mut mem = SparseMemory::new();
    let _ = mem.map(DATA_BASE, vec![0x5a; DATA_LEN], true);
    let _ = mem.map(DATA_BASE + DATA_LEN as u64, vec![0xa5; 0x100], false);
    step_checked(&prog, &mut st, &mut mem, DATA_BASE, DATA_LEN, 256);
}

/// A fixed seed corpus: instructions of real rseq sections with several
/// register layouts, plus deterministic pseudo-random words.
pub fn seed_corpus() -> Vec<Vec<u8>> {
    let codes: &[&[u32]] = &[
        // ldr w10, [x0, #4]; cmp w10, w1; b.ne +8; str x4, [x3]
        &[0xb940_040a, 0x6b01_015f, 0x5400_0041, 0xf900_0064],
        // ldr x11, [x3, w1, uxtw #3]; add x11, x11, x2; str x11, [x3, w1, uxtw #3]
        &[0xf861_586b, 0x8b02_016b, 0xf821_586b],
        // sub x2, x2, #1; ldrb w9, [x1, x2]; strb w9, [x0, x2]; cbnz x2, -12
        &[0xd100_0442, 0x3862_6829, 0x3822_6809, 0xb5ff_ffa2],
        // stp x0, x1, [sp, #-16]!; ldp x0, x1, [sp], #16; ldp q0, q1, [x1]
        &[0xa9bf_07e0, 0xa8c1_07e0, 0xad40_0420],
        // stlr x0, [x1]; ldar x0, [x1]; ldrsw x0, [x1, #4]!
        &[0xc89f_fc20, 0xc8df_fc20, 0xb880_4c20],
        // mrs x0, tpidr_el0; ldr w0, [x0]; tbz x0, #63, +8; csel x0, x1, x2, eq
        &[0xd53b_d040, 0xb940_0000, 0xb6f8_0040, 0x9a82_0020],
        // udiv, sdiv, umulh, ccmp, extr, bfi, rev
        &[
            0x9ac2_0820,
            0x1ac2_0c20,
            0x9bc2_7c20,
            0xfa43_1825,
            0x93c2_2020,
            0xb378_0c20,
            0xdac0_0c20,
        ],
        // stxr (refused), svc (refused)
        &[0xc802_7c01, 0xd400_0001],
        // b . (budget)
        &[0x1400_0000],
        // bl +8; ret; br x1
        &[0x9400_0002, 0xd65f_03c0, 0xd61f_0020],
    ];
    let mut out = Vec::new();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || xorshift64(&mut x);
    for (i, c) in codes.iter().enumerate() {
        for k in 0..8u64 {
            let mut v = Vec::new();
            for _ in 0..36 {
                let r = next();
                v.extend((if (i as u64 + k) & 1 == 0 { r | 1 } else { r }).to_le_bytes());
            }
            v.truncate(31 * 8 + 8 + 4 + 16);
            for w in c.iter() {
                v.extend(w.to_le_bytes());
            }
            out.push(v);
        }
    }
    for _ in 0..200 {
        let n = 276 + 4 * (next() % 16) as usize;
        out.push((0..n).map(|_| next() as u8).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_exec_seed_corpus() {
        let corpus = seed_corpus();
        assert!(corpus.len() > 200);
        for seed in corpus {
            fuzz_exec(&seed);
        }
    }
}

//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` and by the
//! ordinary tests that run them over a fixed seed corpus.

use rseq_emu_core::fuzzing::step_checked;
use rseq_emu_core::rng::xorshift64;
use rseq_emu_core::{Program, SparseMemory};

use crate::{X86State, X86_64};

const CODE_BASE: u64 = 0x40_0000;
const DATA_BASE: u64 = 0x1000;

/// Decode arbitrary bytes as a section and run them from an arbitrary state
/// on a small [`SparseMemory`]. Must never panic; checks, one step at a
/// time, that a fault or an Unsupported stop leaves state and memory
/// untouched (`rseq_emu_core::fuzzing::step_checked`).
///
/// Layout of `data`: 16 × 8 bytes of registers, 8 bytes of flags, then code.
///
/// ```
/// rseq_emu_x86_64::fuzzing::fuzz_exec(&[0x48; 200]);
/// ```
pub fn fuzz_exec(data: &[u8]) {
    let mut st = X86State::default();
    let mut rest = data;
    for g in st.gpr.iter_mut() {
        if rest.len() >= 8 {
            *g = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
            // Keep some registers pointing at the data page.
            if *g & 1 == 1 {
                *g = DATA_BASE + (*g >> 1) % 0x1000;
            }
            rest = &rest[8..];
        }
    }
    if rest.len() >= 8 {
        st.rflags = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        st.fs_base = DATA_BASE + st.rflags % 0x800;
        rest = &rest[8..];
    }
    if rest.is_empty() {
        return;
    }
    let code = rest;
    st.rip = CODE_BASE;
    let Ok(prog) =
        Program::<X86_64>::decode(code, CODE_BASE, CODE_BASE, CODE_BASE + code.len() as u64)
    else {
        return;
    };
    let mut mem = SparseMemory::new();
    let _ = mem.map(DATA_BASE, vec![0x5a; 0x1000], true);
    let _ = mem.map(DATA_BASE + 0x1000, vec![0xa5; 0x100], false);
    // Step one instruction at a time to check the no-change-on-error rule.
    step_checked(&prog, &mut st, &mut mem, DATA_BASE, 0x1000, 256);
}

/// A fixed seed corpus: real rseq instructions with several register
/// layouts, plus deterministic pseudo-random byte strings.
pub fn seed_corpus() -> Vec<Vec<u8>> {
    let codes: &[&[u8]] = &[
        &[0x48, 0x01, 0x37],                               // add %rsi,(%rdi)
        &[0x43, 0xff, 0x0c, 0xf3],                         // decl (%r11,%r14,8)
        &[0x64, 0x8b, 0x04, 0x25, 0xe4, 0xff, 0xff, 0xff], // mov %fs:-28,%eax
        &[0x48, 0x0f, 0xa3, 0x07],                         // bt %rax,(%rdi)
        &[0x50, 0x58, 0xc3],                               // push, pop, ret
        &[0xe8, 0, 0, 0, 0, 0xd3, 0xe0, 0x0f, 0x47, 0xc1], // call; shl %cl; cmova
        &[0xf0, 0x48, 0x01, 0x37],                         // lock add (refused)
        &[0x0f, 0x05],                                     // syscall (refused)
        &[0x48, 0x87, 0x07],                               // xchg mem (refused)
        &[0xeb, 0xfe],                                     // jmp . (budget)
    ];
    let mut out = Vec::new();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || xorshift64(&mut x);
    for (i, c) in codes.iter().enumerate() {
        for k in 0..8u64 {
            let mut v = Vec::new();
            for _ in 0..17 {
                let r = next();
                v.extend((if (i as u64 + k) & 1 == 0 { r | 1 } else { r }).to_le_bytes());
            }
            v.extend_from_slice(c);
            out.push(v);
        }
    }
    for _ in 0..64 {
        let n = 136 + (next() % 40) as usize;
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
        assert!(corpus.len() > 100);
        for seed in corpus {
            fuzz_exec(&seed);
        }
    }
}

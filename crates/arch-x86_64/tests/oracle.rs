//! The executor against this CPU over random states and instruction forms.
//!
//! `cargo test` runs at least 100,000 compared cases (seeded); set
//! `RSEQ_EMU_SOAK=N` to run N cases instead and `RSEQ_EMU_SEED=S` to pick
//! the seed. A failure prints the seed, the case index, the instruction
//! bytes and text, and both states.

use std::collections::HashMap;

use rseq_emu_core::Arch;
use rseq_emu_x86_64::gen::{random_case, state_for};
use rseq_emu_x86_64::oracle::{check, Native, Rng, Verdict};
use rseq_emu_x86_64::{Kind, X86_64};

#[test]
fn executor_matches_the_cpu() {
    let n_cases: u64 = std::env::var("RSEQ_EMU_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("RSEQ_EMU_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0001);
    let mut native = Native::new().expect("native oracle available");
    let mut rng = Rng::new(seed);
    let mut matched = 0u64;
    let mut per_kind: HashMap<String, u64> = HashMap::new();
    let mut i = 0u64;
    while matched < n_cases {
        i += 1;
        let case_seed = rng.next_u64();
        let mut crng = Rng::new(case_seed);
        let case = random_case(&mut crng, &native);
        match check(&mut native, &case) {
            Ok(Verdict::Match) => {
                matched += 1;
                let d = X86_64::decode(&case.code, native.snippet_ip());
                if let Ok(op) = d.op {
                    *per_kind.entry(format!("{:?}", op.kind)).or_default() += 1;
                }
            }
            Ok(Verdict::Skipped) => {}
            Err(e) => panic!("mismatch: seed {seed:#x}, case {i} (case seed {case_seed:#x})\n{e}"),
        }
        assert!(i < n_cases * 20, "too many skipped cases");
    }
    eprintln!("{matched} cases compared ({i} generated): {per_kind:?}");
    let all = [
        Kind::Mov,
        Kind::Movzx,
        Kind::Movsx,
        Kind::Lea,
        Kind::Add,
        Kind::Adc,
        Kind::Sub,
        Kind::Sbb,
        Kind::Cmp,
        Kind::And,
        Kind::Or,
        Kind::Xor,
        Kind::Test,
        Kind::Inc,
        Kind::Dec,
        Kind::Neg,
        Kind::Not,
        Kind::Shl,
        Kind::Shr,
        Kind::Sar,
        Kind::Rol,
        Kind::Ror,
        Kind::Bt,
        Kind::Bts,
        Kind::Btr,
        Kind::Btc,
        Kind::Clc,
        Kind::Stc,
        Kind::Cmc,
        Kind::Cmov,
        Kind::Set,
        Kind::Jcc,
        Kind::Jmp,
        Kind::JmpInd,
        Kind::Call,
        Kind::CallInd,
        Kind::Ret,
        Kind::Xchg,
        Kind::Bswap,
        Kind::Imul,
        Kind::Nop,
        Kind::Push,
        Kind::Pop,
    ];
    if n_cases >= 100_000 {
        for k in all {
            let c = per_kind.get(&format!("{k:?}")).copied().unwrap_or(0);
            assert!(c >= 20, "{k:?} compared only {c} times");
        }
    }
}

/// The `x86_oracle` fuzz body over the fixed seed corpus (and the seed
/// corpus turned into single instructions with random states).
#[test]
fn fuzz_oracle_seed_corpus() {
    let corpus = rseq_emu_x86_64::fuzzing::seed_corpus();
    let mut n = 0;
    for seed in &corpus {
        // 8 bytes of state seed, then code: use the code tail of each seed.
        let code_at = seed.len().saturating_sub(15);
        let mut v = seed[..8].to_vec();
        v.extend_from_slice(&seed[code_at..]);
        rseq_emu_x86_64::oracle::fuzz_oracle(&v);
        n += 1;
    }
    assert!(n > 100);
}

/// Inputs the `x86_oracle` fuzz target once failed on (`ret $0xffff`
/// truncated the stack adjustment; a non-canonical fs_base crashed the
/// oracle; `66 c3` is a 16-bit ret on AMD), kept as regression cases.
#[test]
fn fuzz_oracle_regressions() {
    let cases: &[&[u8]] = &[
        // `f3 49 .. 90`: iced decodes pause, this CPU runs xchg %r8,%rax (refused now)
        &[
            0xf7, 0xf3, 0x00, 0x40, 0x00, 0x49, 0x49, 0x00, 0xf3, 0x49, 0x49, 0x49, 0x49, 0x49,
            0x49, 0x90, 0xf3, 0x49, 0xf3, 0x90,
        ],
        // `44 66 44 .. e9`: 16-bit jmp on AMD behind REX bytes (refused now)
        &[
            0x40, 0xa1, 0x1b, 0xfb, 0x44, 0x44, 0x44, 0x44, 0x44, 0x66, 0x44, 0x44, 0x44, 0x44,
            0xe9, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x44, 0x44, 0x44, 0x28, 0xff, 0x10, 0xff, 0x0,
            0x8c,
        ],
        // `66 66 c3`: a 16-bit ret on AMD (refused now)
        &[
            0x5, 0xfe, 0x1, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3,
            0xc3, 0xc3, 0x66, 0x66, 0x66, 0x66, 0x66, 0x7a, 0x66, 0x66, 0x66, 0x0, 0x3, 0xf3,
        ],
        &[
            0xff, 0x7e, 0xa6, 0xff, 0x7e, 0xa6, 0x26, 0x26, 0x64, 0xa1, 0x64, 0x64, 0x26, 0x26,
            0x64, 0x64, 0x64, 0x64, 0x64, 0x64, 0x64, 0x68, 0x64,
        ],
        &[
            0xf, 0x64, 0x64, 0x21, 0x64, 0x64, 0x0, 0x64, 0x64, 0x64, 0x64, 0x64, 0x64, 0xa0, 0xe6,
            0x9a, 0x0, 0xa, 0xe7, 0x0, 0x1b, 0x67, 0xa, 0x64, 0x21, 0x64, 0x64, 0x64, 0x0, 0x49,
            0xff, 0x2e,
        ],
        &[
            0x1b, 0xe6, 0x1, 0x0, 0x1e, 0x5, 0xa, 0x0, 0xc2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff,
        ],
    ];
    for c in cases {
        rseq_emu_x86_64::oracle::fuzz_oracle(c);
    }
}

/// `x86_oracle` (seeds 2 and 3) killed the process natively with
/// `movabs %al,%fs:0xe3000000a2a2` and `movabs %al,%fs:0xa2a2a2649f00`:
/// the state generator picks fs_base so that base + offset wraps into
/// scratch, and this CPU faults on a non-canonical FS/GS offset even then.
/// The executor now refuses such accesses (if it did not, these cases
/// would run natively and crash this test process).
#[test]
fn fuzz_oracle_non_canonical_fs_offset() {
    let cases: &[&[u8]] = &[
        &[
            0x00, 0x00, 0xfa, 0x9f, 0x00, 0x00, 0x00, 0x9f, 0x64, 0xa2, 0xa2, 0xa2, 0x00, 0x00,
            0x00, 0xe3, 0x00, 0x00,
        ],
        &[
            0x00, 0x00, 0xfa, 0x9f, 0x00, 0x00, 0x00, 0x9f, 0x64, 0xa2, 0x00, 0x9f, 0x64, 0xa2,
            0xa2, 0xa2, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa2, 0xa2, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00,
        ],
    ];
    let mut native = Native::new().expect("native oracle available");
    for c in cases {
        rseq_emu_x86_64::oracle::fuzz_oracle(c);
        let mut code: Vec<u8> = c[8..].iter().copied().take(15).collect();
        code.truncate(10);
        let seed = u64::from_le_bytes(c[..8].try_into().unwrap());
        let case = state_for(&mut Rng::new(seed), &native, code);
        assert_eq!(check(&mut native, &case), Ok(Verdict::Skipped));
    }
}

/// The `x86_oracle` finding `jmp *0xffffffffffffffff` (fuzz seed 1): the
/// case generator computed `address + 8` for the memory-indirect target
/// and overflowed (a panic, which libFuzzer reports as a deadly signal).
/// The executor was right: the 8-byte load wraps the address space and
/// faults, so the case is not run natively.
#[test]
fn fuzz_oracle_jmp_abs_minus_1() {
    // seed 0x22_00_27_4d_24_ff_00_10, then `ff 24 25 ff ff ff ff` + tail
    let input: &[u8] = &[
        0x10, 0x00, 0xff, 0x24, 0x4d, 0x27, 0x00, 0x22, 0xff, 0x24, 0x25, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x4d, 0xff, 0x00, 0x22, 0x00,
    ];
    rseq_emu_x86_64::oracle::fuzz_oracle(input);

    let mut native = Native::new().expect("native oracle available");
    let code = vec![0xff, 0x24, 0x25, 0xff, 0xff, 0xff, 0xff];
    let d = X86_64::decode(&code, native.snippet_ip());
    assert_eq!(
        d.op.as_ref().map(|op| op.kind),
        Ok(Kind::JmpInd),
        "{}",
        d.text
    );
    for seed in 0..64 {
        let case = state_for(&mut Rng::new(seed), &native, code.clone());
        assert_eq!(check(&mut native, &case), Ok(Verdict::Skipped));
    }
}

//! The qemu-user oracle itself, then the executor against it over random
//! states and instruction forms.

use rseq_emu_aarch64::oracle::{code_page, QemuOracle, Region, SIGSEGV, SIGTRAP, WINDOW_START};
use rseq_emu_aarch64::A64State;

const CODE: u64 = WINDOW_START;
const DATA: u64 = WINDOW_START + 0x10000;

fn case(words: &[u32], data: Vec<u8>) -> rseq_emu_aarch64::oracle::Case {
    let code = code_page(words, 0x800);
    let mut state = A64State {
        pc: CODE + 0x800,
        sp: DATA + 0x800,
        ..Default::default()
    };
    for (i, x) in state.x.iter_mut().enumerate() {
        *x = 0x1111_0000 + i as u64;
    }
    for (i, v) in state.v.iter_mut().enumerate() {
        *v = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f00 + i as u128;
    }
    state.tpidr_el0 = 0xdead_beef_0000;
    rseq_emu_aarch64::oracle::Case {
        regions: vec![Region::code(CODE, code), Region::data(DATA, data)],
        state,
    }
}

#[test]
fn oracle_runs_known_code() {
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    // add x0, x1, x2
    let c = case(&[0x8b02_0020], vec![0; 4096]);
    let r = o.run(&c).expect("run");
    assert_eq!(r.signal, SIGTRAP);
    assert!(r.stopped_on_exit_brk(&c));
    assert_eq!(r.state.pc, CODE + 0x804);
    assert_eq!(r.state.x[0], 0x1111_0001 + 0x1111_0002);
    let mut want = c.state;
    want.x[0] = 0x1111_0001 + 0x1111_0002;
    want.pc = CODE + 0x804;
    assert_eq!(r.state, want, "only x0 and pc change");
    // subs x0, x0, x0 sets Z and C; mrs x3, tpidr_el0; msr tpidr_el0, x4
    let c = case(&[0xeb00_0000, 0xd53b_d043, 0xd51b_d044], vec![0; 4096]);
    let r = o.run(&c).expect("run");
    assert_eq!(r.state.nzcv, 0x6000_0000);
    assert_eq!(r.state.x[3], 0xdead_beef_0000);
    assert_eq!(r.state.tpidr_el0, 0x1111_0004);
    // str x1, [x5]; ldr q7, [x5]: memory and a v register
    let mut c = case(&[0xf900_00a1, 0x3dc0_00a7], vec![0; 4096]);
    c.state.x[5] = DATA + 0x10;
    let r = o.run(&c).expect("run");
    assert_eq!(&r.memory[0].1[0x10..0x18], &0x1111_0001u64.to_le_bytes());
    assert_eq!(r.state.v[7], 0x1111_0001);
    // A fault: ldr x0, [x1] at an unmapped address.
    let mut c = case(&[0xd503_201f, 0xf940_0020], vec![0; 4096]);
    c.state.x[1] = DATA + 0x8000;
    let r = o.run(&c).expect("run");
    assert_eq!(r.signal, SIGSEGV);
    assert_eq!(r.addr, DATA + 0x8000);
    assert_eq!(r.state.pc, CODE + 0x804, "pc at the faulting load");
    assert_eq!(r.state.x[0], 0x1111_0000, "x0 untouched");
    // The same address, new code: no stale translation.
    let c = case(&[0xd280_0540], vec![0; 4096]); // movz x0, #42
    assert_eq!(o.run(&c).expect("run").state.x[0], 42);
    let c = case(&[0xd280_0560], vec![0; 4096]); // movz x0, #43
    assert_eq!(o.run(&c).expect("run").state.x[0], 43);
}

/// Every register of the entry state comes back unchanged through a `nop`
/// (the signal-frame entry and exit lose nothing), for random states.
#[test]
fn oracle_round_trips_random_states() {
    use rseq_emu_aarch64::gen::{random_state, Rng};
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(77);
    let cases: Vec<_> = (0..200)
        .map(|_| {
            let mut c = case(&[0xd503_201f], vec![0; 4096]);
            c.state = random_state(&mut rng);
            c.state.pc = CODE + 0x800;
            c
        })
        .collect();
    for (c, r) in cases.iter().zip(o.run_batch(&cases)) {
        let r = r.expect("run");
        let mut want = c.state;
        want.pc += 4;
        assert_eq!(r.signal, SIGTRAP);
        assert_eq!(r.state, want);
    }
    // mrs x0, nzcv sees the entry flags.
    for n in 0..16u32 {
        let mut c = case(&[0xd53b_4200], vec![0; 4096]);
        c.state.nzcv = n << 28;
        let r = o.run(&c).expect("run");
        assert_eq!(r.state.x[0], u64::from(n) << 28);
    }
}

/// An endless loop ends on the harness's 2 s alarm, and the oracle goes on.
#[test]
fn oracle_times_out_endless_loops() {
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let c = case(&[0x1400_0000], vec![0; 4096]); // b .
    let r = o.run(&c).expect("run");
    assert_eq!(r.signal, rseq_emu_aarch64::oracle::SIGALRM);
    assert_eq!(r.state.pc, CODE + 0x800);
    let c = case(&[0xd280_0540], vec![0; 4096]);
    assert_eq!(o.run(&c).expect("run").state.x[0], 42);
}

/// A store to a read-only page and a branch to an unmapped page.
#[test]
fn oracle_reports_faults() {
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut c = case(&[0xf900_0020], vec![0; 4096]); // str x0, [x1]
    c.regions
        .push(Region::read_only(DATA + 0x2000, vec![7; 4096]));
    c.state.x[1] = DATA + 0x2008;
    let r = o.run(&c).expect("run");
    assert_eq!(
        (r.signal, r.addr, r.state.pc),
        (SIGSEGV, DATA + 0x2008, CODE + 0x800)
    );
    // br x2 to an unmapped address: the fault is at the target pc.
    let mut c = case(&[0xd61f_0040], vec![0; 4096]);
    c.state.x[2] = DATA + 0x9000;
    let r = o.run(&c).expect("run");
    assert_eq!(
        (r.signal, r.addr, r.state.pc),
        (SIGSEGV, DATA + 0x9000, DATA + 0x9000)
    );
    // Bad cases are refused before qemu sees them.
    let mut c = case(&[0xd503_201f], vec![0; 4096]);
    c.regions[1].addr = CODE + 0x10;
    assert!(o.run(&c).is_err(), "two regions in one page");
    c.regions[1].addr = 0x1000;
    assert!(o.run(&c).is_err(), "region outside the window");
    c.regions[1].addr = DATA;
    c.regions[1].bytes = vec![0; 9 << 20];
    assert!(o.run(&c).is_err(), "more bytes than the harness holds");
    // The oracle still works after refusing.
    let c = case(&[0xd280_0540], vec![0; 4096]);
    assert_eq!(o.run(&c).expect("run").state.x[0], 42);
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

/// The generator against qemu, executor or not: every generated
/// instruction (raw words aside) is one qemu accepts (no `SIGILL`), and every
/// case ends on a signal (an exit `brk`, a fault or the timeout).
#[test]
fn generated_forms_are_valid_under_qemu() {
    use rseq_emu_aarch64::gen::{random_case, Rng};
    let n = env_u64("RSEQ_EMU_ORACLE_ONLY", 3_000);
    let seed = env_u64("RSEQ_EMU_SEED", 0x5eed_0a64);
    let mut rng = Rng::new(seed ^ 1);
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let gens: Vec<_> = (0..n)
        .map(|_| {
            let s = rng.next_u64();
            (s, random_case(&mut Rng::new(s)))
        })
        .collect();
    let cases: Vec<_> = gens.iter().map(|(_, g)| g.case.clone()).collect();
    let t0 = std::time::Instant::now();
    let results = o.run_batch(&cases);
    eprintln!(
        "{n} oracle-only cases in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut ill = 0;
    for ((s, g), r) in gens.iter().zip(results) {
        let r = r.unwrap_or_else(|e| panic!("case seed {s:#x}: {e}"));
        assert!(r.signal != 0, "case seed {s:#x}: no signal recorded");
        if r.signal == rseq_emu_aarch64::oracle::SIGILL && g.kinds.len() == 1 && g.kinds[0] != "raw"
        {
            ill += 1;
            eprintln!(
                "SIGILL at {:#x} for form {} (case seed {s:#x})",
                r.state.pc, g.kinds[0]
            );
        }
    }
    assert_eq!(ill, 0, "the generator made instructions qemu rejects");
}

/// The executor against qemu: at least 100,000 compared cases per run
/// (`RSEQ_EMU_SOAK=N` for N instead, `RSEQ_EMU_SEED=S` for the seed). A
/// mismatch prints the seed, the case, the code and both states.
#[test]
fn executor_matches_qemu() {
    use rseq_emu_aarch64::gen::{form_names, random_case, Rng};
    use rseq_emu_aarch64::oracle::{check_batch, Verdict};
    use rseq_emu_core::Arch;
    use std::collections::BTreeMap;

    let n_cases = env_u64("RSEQ_EMU_SOAK", 100_000);
    let seed = env_u64("RSEQ_EMU_SEED", 0x5eed_0a64);
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(seed);
    if !rseq_emu_aarch64::Aarch64::HAS_EXECUTOR {
        // Until the executor exists (Aarch64::HAS_EXECUTOR), there is
        // nothing to compare; the oracle and generator tests above still run.
        eprintln!("the aarch64 executor is not built yet: nothing compared");
        return;
    }
    let mut matched = 0u64;
    let mut per_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut skipped: BTreeMap<&str, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0u64;
    let t0 = std::time::Instant::now();
    while matched < n_cases {
        let batch: Vec<(u64, _)> = (0..1024)
            .map(|_| {
                let s = rng.next_u64();
                (s, random_case(&mut Rng::new(s)))
            })
            .collect();
        let items: Vec<_> = batch
            .iter()
            .map(|(_, g)| (&g.case, g.start, g.end))
            .collect();
        let verdicts = check_batch(&mut o, &items);
        for ((case_seed, g), v) in batch.iter().zip(verdicts) {
            i += 1;
            match v {
            Ok(Verdict::Match) => {
                matched += 1;
                for k in &g.kinds {
                    *per_kind.entry(k).or_default() += 1;
                }
            }
            Ok(v) => {
                let k = if g.kinds.len() == 1 { g.kinds[0] } else { "block" };
                *skipped.entry(k).or_default() += 1;
                let why = match v {
                    Verdict::Unsupported(r) => {
                        // "insn text: reason" -> the reason, per form
                        let r = r.split_once(": ").map(|(_, r)| r).unwrap_or(&r);
                        format!("{k}: {r}")
                    }
                    other => format!("{k}: {other:?}"),
                };
                *reasons.entry(why).or_default() += 1;
            }
            Err(e) => panic!(
                "executor and qemu differ: RSEQ_EMU_SEED={seed:#x}, case {i} (case seed {case_seed:#x}, forms {:?})\n{e}",
                g.kinds
            ),
        }
        }
        assert!(i < n_cases * 5, "too many skipped cases: {skipped:?}");
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{matched} cases compared ({i} generated) in {secs:.1} s ({:.0} cases/s)\ncompared per form: {per_kind:?}\nskipped (unsupported or looping) per form: {skipped:?}",
        i as f64 / secs
    );
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (r, n) in top.iter().take(15) {
        eprintln!("  skipped {n:>6}  {r}");
    }
    if n_cases >= 100_000 {
        for k in form_names() {
            let c = per_kind.get(k).copied().unwrap_or(0);
            assert!(c >= 100, "form {k} compared only {c} times");
        }
    }
}

/// The qemu differential fuzz body over the executor's fuzz seed corpus
/// (its code words after an 8-byte state seed).
#[test]
fn fuzz_oracle_seed_corpus() {
    let corpus = rseq_emu_aarch64::fuzzing::seed_corpus();
    assert!(corpus.len() > 10);
    for seed in &corpus {
        let code_at = seed.len().saturating_sub(32) & !3;
        let mut v = seed[..8.min(seed.len())].to_vec();
        v.extend_from_slice(&seed[code_at..]);
        rseq_emu_aarch64::oracle::fuzz_oracle(&v);
    }
}

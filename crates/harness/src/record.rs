//! `rseq-emu record`: run x86_64 sequences natively under the kernel's rseq
//! (or aarch64 sequences under the qemu-user oracle, `--arch aarch64`) and
//! write what the machine did as fixtures (fixtures/README.md, "Recording").

mod aarch64;
mod aarch64_asm;
mod asm;
mod native;
mod patterns;

use crate::fixture::{
    hex, hex_bytes, CodeFile, DescriptorFile, EntryFile, ExpectFile, ExpectRegionFile, FixtureFile,
    RegionFile, FORMAT, VERSION,
};
use clap::Args as ClapArgs;
use native::{Machine, NativeRegs, NativeResult, DATA, DESC};
use patterns::{Env, Gen, Rng, PATTERNS};
use rseq_emu_core::abi::{area, RseqCs, RSEQ_SIG_X86_64};
use rseq_emu_x86_64::reg;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rseq-emu record`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// PRNG seed: the same seed generates the same sequences and data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cases per pattern.
    #[arg(long, default_value_t = 24)]
    pub count: usize,
    /// Only these patterns (repeatable); default all.
    #[arg(long = "pattern")]
    pub patterns: Vec<String>,
    /// Native attempts per case before giving up (kernel interference).
    #[arg(long, default_value_t = 200)]
    pub attempts: usize,
    /// The CPU to record on (0..15; the sequences compare against it, so
    /// the same seed generates the same cases only on the same CPU).
    /// Default: the CPU the command starts on, or 0 when that is above 15.
    #[arg(long)]
    pub cpu: Option<u32>,
    /// `x86_64` (native, under the kernel's rseq) or `aarch64` (under the
    /// qemu-user oracle, the rseq area supplied as memory).
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
}

/// A recorded case: what the CPU did.
struct Recorded {
    result: NativeResult,
    area_entry: [u8; 32],
    attempts: usize,
}

fn csw(ru: &libc::rusage) -> i64 {
    ru.ru_nvcsw + ru.ru_nivcsw
}

/// Run `g` natively until two clean runs agree (see fixtures/README.md).
fn record_case(
    m: &mut Machine,
    g: &Gen,
    desc: &[u8; 32],
    env: &Env,
    max_attempts: usize,
) -> Result<Recorded, String> {
    let mut accepted: Option<(NativeResult, [u8; 32])> = None;
    for attempt in 1..=max_attempts {
        let (res, before, ru0, ru1) = m.run(&g.built, desc, &g.entry, &g.data, env.rseq_off);
        let mut area_entry = before;
        area_entry[area::RSEQ_CS as usize..area::RSEQ_CS as usize + 8]
            .copy_from_slice(&DESC.to_le_bytes());
        let cpu_before = u32::from_le_bytes(before[4..8].try_into().unwrap_or_default());
        let clean = res.exit < g.built.exits.len()
            && cpu_before == env.cpu
            && res.area_at_exit == area_entry
            && csw(&ru0) == csw(&ru1);
        if !clean {
            continue;
        }
        match &accepted {
            Some((prev, prev_area)) if *prev == res && *prev_area == area_entry => {
                return Ok(Recorded {
                    result: res,
                    area_entry,
                    attempts: attempt,
                })
            }
            _ => accepted = Some((res, area_entry)),
        }
    }
    Err(format!(
        "{}: no two clean native runs agreed in {max_attempts} attempts (kernel interference or a non-deterministic sequence)",
        g.pattern
    ))
}

fn regs_map(r: &NativeRegs, fs_base: u64) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (i, n) in reg::NAMES.iter().enumerate() {
        m.insert(n.to_string(), hex(r.gpr[i]));
    }
    m.insert("rflags".into(), hex(r.rflags));
    m.insert("fs_base".into(), hex(fs_base));
    m
}

/// Build the fixture of a recorded case.
fn to_fixture(name: &str, g: &Gen, rec: &Recorded, env: &Env, fs_base: u64) -> FixtureFile {
    let b = &g.built;
    let cs = RseqCs {
        version: 0,
        flags: 0,
        start_ip: b.start_ip,
        post_commit_offset: b.exits[0] - b.start_ip,
        abort_ip: b.exits[1],
    };
    let lo = (b.start_ip - native::CODE) as usize;
    let hi = (b.code_end - native::CODE) as usize;
    let area_addr = (fs_base as i64 + env.rseq_off) as u64;
    let exit_ip = b.exits[rec.result.exit];
    let outcome = crate::fixture::ExpectedOutcome::classify(exit_ip, &cs);
    let desc = cs.to_bytes();
    FixtureFile {
        format: FORMAT.into(),
        version: VERSION,
        name: Some(format!("x86_64/{name}")),
        comment: Some(format!(
            "{}. Recorded natively on cpu {} ({} native runs for two clean agreeing ones).",
            g.comment, env.cpu, rec.attempts
        )),
        arch: "x86_64".into(),
        code: Some(CodeFile {
            address: hex(b.start_ip),
            bytes: hex_bytes(&b.code[lo..hi]),
        }),
        elf: None,
        descriptor: Some(DescriptorFile {
            address: hex(DESC),
            version: 0,
            flags: 0,
            start_ip: hex(cs.start_ip),
            post_commit_offset: hex(cs.post_commit_offset),
            abort_ip: hex(cs.abort_ip),
        }),
        signature: Some(format!("0x{RSEQ_SIG_X86_64:08x}")),
        cpu: env.cpu,
        rseq_area: hex(area_addr),
        entry: EntryFile {
            regs: regs_map(&g.entry, fs_base),
        },
        memory: vec![
            RegionFile {
                address: hex(DATA),
                bytes: hex_bytes(&g.data),
                writable: true,
                comment: Some("data buffers".into()),
            },
            RegionFile {
                address: hex(DESC),
                bytes: hex_bytes(&desc),
                writable: false,
                comment: Some("struct rseq_cs".into()),
            },
            RegionFile {
                address: hex(area_addr),
                bytes: hex_bytes(&rec.area_entry),
                writable: true,
                comment: Some("struct rseq (fs_base + __rseq_offset), rseq_cs set".into()),
            },
        ],
        expect: ExpectFile {
            outcome: outcome.name().into(),
            ip: hex(exit_ip),
            regs: regs_map(&rec.result.regs, fs_base),
            memory: vec![
                ExpectRegionFile {
                    address: hex(DATA),
                    bytes: hex_bytes(&rec.result.data),
                },
                ExpectRegionFile {
                    address: hex(area_addr),
                    bytes: hex_bytes(&rec.result.area_at_exit),
                },
            ],
        },
        ignore_flags: (g.ignore_flags != 0).then(|| hex(g.ignore_flags)),
    }
}

/// Record `count` cases of each pattern; returns (pattern, file) pairs.
pub fn record(args: &Args) -> Result<Vec<(String, PathBuf)>, Box<dyn Error>> {
    match args.arch.as_str() {
        "x86_64" => {}
        "aarch64" => return aarch64::record(&args.out, args.seed, args.count, &args.patterns),
        other => return Err(format!("--arch {other:?}: x86_64 or aarch64").into()),
    }
    let pats: Vec<String> = if args.patterns.is_empty() {
        PATTERNS.iter().map(|s| s.to_string()).collect()
    } else {
        args.patterns.clone()
    };
    for p in &pats {
        if !PATTERNS.contains(&p.as_str()) {
            return Err(format!("unknown pattern {p:?} (known: {})", PATTERNS.join(", ")).into());
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let rseq_off = native::rseq_offset()?;
    let cpu = match args.cpu {
        Some(c) if c < 16 => c,
        Some(c) => return Err(format!("--cpu {c}: the recorder supports CPUs 0..15").into()),
        None => match native::current_cpu()? {
            here if here < 16 => here,
            _ => 0,
        },
    };
    let old = native::pin(cpu)?;
    let result = (|| -> Result<Vec<(String, PathBuf)>, Box<dyn Error>> {
        std::thread::yield_now();
        if native::current_cpu()? != cpu {
            return Err(format!("pinned to cpu {cpu} but running elsewhere").into());
        }
        let env = Env { cpu, rseq_off };
        let fs_base = native::fs_base();
        let mut m = Machine::new()?;
        let mut out = Vec::new();
        for p in &pats {
            // One stream per pattern: adding a pattern does not change the others.
            let mut rng = Rng::new(args.seed ^ fnv(p));
            for i in 1..=args.count {
                let g = patterns::generate(p, &mut rng, &env)?;
                let b = &g.built;
                let cs = RseqCs {
                    version: 0,
                    flags: 0,
                    start_ip: b.start_ip,
                    post_commit_offset: b.exits[0] - b.start_ip,
                    abort_ip: b.exits[1],
                };
                let rec = record_case(&mut m, &g, &cs.to_bytes(), &env, args.attempts)?;
                let name = format!("{p}-{i:03}");
                let f = to_fixture(&name, &g, &rec, &env, fs_base);
                let path = args.out.join(format!("{name}.json"));
                std::fs::write(&path, serde_json::to_string_pretty(&f)? + "\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                out.push((p.clone(), path));
            }
        }
        Ok(out)
    })();
    native::unpin(&old);
    result
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Run `rseq-emu record`.
pub fn run(args: Args) -> Result<ExitCode, Box<dyn Error>> {
    let files = record(&args)?;
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for (p, _) in &files {
        *per.entry(p.as_str()).or_default() += 1;
    }
    for (p, n) in &per {
        println!("{p}: {n}");
    }
    println!("{} fixtures written to {}", files.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::asm::{cc, Rm};
    use super::native::{build, Machine, NativeRegs, DATA_LEN, DESC, STACK_TOP};
    use super::*;

    extern "C" fn on_usr1(_: libc::c_int) {}

    /// The rejection rule's premise, checked on this kernel: a signal that
    /// lands inside a section makes the kernel jump to abort_ip *and* clear
    /// `rseq->rseq_cs`, so a kernel-induced abort never passes as clean.
    #[test]
    fn a_kernel_abort_is_recognised() {
        let rseq_off = native::rseq_offset().expect("rseq registered");
        let cpu = native::current_cpu().expect("cpu");
        let built = build(rseq_off, 0, |a, _e| {
            let top = a.label();
            a.bind(top);
            a.dec(8, Rm::R(1));
            a.jcc(cc::NE, top);
        })
        .expect("build");
        let cs = RseqCs {
            version: 0,
            flags: 0,
            start_ip: built.start_ip,
            post_commit_offset: built.exits[0] - built.start_ip,
            abort_ip: built.exits[1],
        };
        let mut entry = NativeRegs {
            rflags: 0x202,
            ..Default::default()
        };
        entry.gpr[4] = STACK_TOP;
        entry.gpr[1] = 1 << 34; // seconds of spinning: the signal comes first
        let mut m = Machine::new().expect("mappings");
        // SAFETY: installing a no-op handler for SIGUSR1 (restored below);
        // pthread_self/pthread_kill on a live thread.
        let (old, me) = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGUSR1, &sa, &mut old);
            (old, libc::pthread_self())
        };
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            // SAFETY: the recording thread is alive (it joins us below).
            unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
        });
        let (res, before, _, _) =
            m.run(&built, &cs.to_bytes(), &entry, &vec![0; DATA_LEN], rseq_off);
        killer.join().expect("join");
        // SAFETY: restoring the previous disposition.
        unsafe { libc::sigaction(libc::SIGUSR1, &old, std::ptr::null_mut()) };
        assert_eq!(
            res.exit, 1,
            "the signal did not abort the section (cpu {cpu})"
        );
        assert!(
            res.regs.gpr[1] != 0 && res.regs.gpr[1] < 1 << 34,
            "loop counter {:x}",
            res.regs.gpr[1]
        );
        let mut entry_area = before;
        entry_area[8..16].copy_from_slice(&DESC.to_le_bytes());
        assert_ne!(
            res.area_at_exit, entry_area,
            "a kernel abort left struct rseq exactly as a clean run would"
        );
        assert_eq!(
            &res.area_at_exit[8..16],
            &[0u8; 8],
            "rseq_cs not cleared by the kernel"
        );
    }
}

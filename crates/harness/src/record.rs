//! `rseq-emu record`: run x86_64 sequences natively under the kernel's rseq
//! (or aarch64 sequences under the qemu-user oracle, `--arch aarch64`) and
//! write what the machine did as fixtures (fixtures/README.md, "Recording").

mod aarch64;
mod aarch64_asm;
mod asm;
mod native;
mod patterns;

use crate::fixture::{
    hex, hex_bytes, CodeFile, DescriptorFile, EntryFile, ExpectFile, ExpectRegionFile,
    ExpectedOutcome, FixtureFile, RegionFile, FORMAT, VERSION,
};
use clap::Args as ClapArgs;
use native::{Machine, NativeRegs, NativeResult, DATA, DESC};
use patterns::{Env, Gen, Rng, PATTERNS};
use rseq_emu_core::abi::{area, ArchKind, RseqCs};
use rseq_emu_x86_64::reg;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
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
    /// The descriptor's bytes.
    desc: [u8; 32],
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
    env: &Env,
    max_attempts: usize,
) -> Result<Recorded, String> {
    let desc = g.built.descriptor().to_bytes();
    let mut accepted: Option<(NativeResult, [u8; 32])> = None;
    for attempt in 1..=max_attempts {
        let (res, before, ru0, ru1) = m.run(&g.built, &desc, &g.entry, &g.data, env.rseq_off);
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
                    desc,
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

/// What one recorded run produced, in the fixture format's terms. Both
/// architectures' recorders fill one in; [`Recording::to_fixture`] is the
/// one place that lays a fixture out (fixtures/README.md, "Fixture contents").
struct Recording<'a> {
    arch: ArchKind,
    /// `<pattern>-<nnn>`.
    name: &'a str,
    comment: String,
    code_address: u64,
    code: &'a [u8],
    cs: RseqCs,
    /// Where the descriptor sits (a read-only region of `memory`).
    cs_address: u64,
    cpu: u32,
    rseq_area: u64,
    entry_regs: BTreeMap<String, String>,
    /// Initial regions: address, bytes, writable, what the region is.
    memory: Vec<(u64, &'a [u8], bool, &'a str)>,
    /// Where execution left the section.
    exit_ip: u64,
    expect_regs: BTreeMap<String, String>,
    /// Every writable region after the run: address, bytes.
    expect_memory: Vec<(u64, &'a [u8])>,
    /// RFLAGS bits to mask (0: none, no `ignore_flags` key).
    ignore_flags: u64,
}

impl Recording<'_> {
    fn to_fixture(&self) -> FixtureFile {
        let cs = &self.cs;
        let arch = self.arch.name();
        FixtureFile {
            format: FORMAT.into(),
            version: VERSION,
            name: Some(format!("{arch}/{}", self.name)),
            comment: Some(self.comment.clone()),
            arch: arch.into(),
            code: Some(CodeFile {
                address: hex(self.code_address),
                bytes: hex_bytes(self.code),
            }),
            elf: None,
            descriptor: Some(DescriptorFile {
                address: hex(self.cs_address),
                version: cs.version,
                flags: cs.flags,
                start_ip: hex(cs.start_ip),
                post_commit_offset: hex(cs.post_commit_offset),
                abort_ip: hex(cs.abort_ip),
            }),
            signature: Some(format!("0x{:08x}", self.arch.default_signature())),
            cpu: self.cpu,
            rseq_area: hex(self.rseq_area),
            entry: EntryFile {
                regs: self.entry_regs.clone(),
            },
            memory: self
                .memory
                .iter()
                .map(|&(address, bytes, writable, what)| RegionFile {
                    address: hex(address),
                    bytes: hex_bytes(bytes),
                    writable,
                    comment: Some(what.into()),
                })
                .collect(),
            expect: ExpectFile {
                outcome: ExpectedOutcome::classify(self.exit_ip, cs).name().into(),
                ip: hex(self.exit_ip),
                regs: self.expect_regs.clone(),
                memory: self
                    .expect_memory
                    .iter()
                    .map(|&(address, bytes)| ExpectRegionFile {
                        address: hex(address),
                        bytes: hex_bytes(bytes),
                    })
                    .collect(),
            },
            ignore_flags: (self.ignore_flags != 0).then(|| hex(self.ignore_flags)),
        }
    }

    /// Write the fixture as `<out>/<name>.json`.
    fn write(&self, out: &Path) -> Result<PathBuf, Box<dyn Error>> {
        let path = out.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(&self.to_fixture())? + "\n";
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

/// The patterns to record (`requested`, or every one of `known` when
/// empty), each checked against `known`; creates `out`.
fn select_patterns(
    requested: &[String],
    known: &[&str],
    what: &str,
    out: &Path,
) -> Result<Vec<String>, Box<dyn Error>> {
    let pats: Vec<String> = if requested.is_empty() {
        known.iter().map(|s| s.to_string()).collect()
    } else {
        requested.to_vec()
    };
    for p in &pats {
        if !known.contains(&p.as_str()) {
            return Err(format!("unknown {what} {p:?} (known: {})", known.join(", ")).into());
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(pats)
}

/// The recording of a native case.
fn recording<'a>(
    name: &'a str,
    g: &'a Gen,
    rec: &'a Recorded,
    env: &Env,
    fs_base: u64,
) -> Recording<'a> {
    let b = &g.built;
    let lo = (b.start_ip - native::CODE) as usize;
    let hi = (b.code_end - native::CODE) as usize;
    let area_addr = (fs_base as i64 + env.rseq_off) as u64;
    let cs = b.descriptor();
    Recording {
        arch: ArchKind::X86_64,
        name,
        comment: format!(
            "{}. Recorded natively on cpu {} ({} native runs for two clean agreeing ones).",
            g.comment, env.cpu, rec.attempts
        ),
        code_address: b.start_ip,
        code: &b.code[lo..hi],
        cs,
        cs_address: DESC,
        cpu: env.cpu,
        rseq_area: area_addr,
        entry_regs: regs_map(&g.entry, fs_base),
        memory: vec![
            (DATA, &g.data, true, "data buffers"),
            (DESC, &rec.desc, false, "struct rseq_cs"),
            (
                area_addr,
                &rec.area_entry,
                true,
                "struct rseq (fs_base + __rseq_offset), rseq_cs set",
            ),
        ],
        exit_ip: b.exits[rec.result.exit],
        expect_regs: regs_map(&rec.result.regs, fs_base),
        expect_memory: vec![
            (DATA, &rec.result.data),
            (area_addr, &rec.result.area_at_exit),
        ],
        ignore_flags: g.ignore_flags,
    }
}

/// Record `count` cases of each pattern; returns (pattern, file) pairs.
pub fn record(args: &Args) -> Result<Vec<(String, PathBuf)>, Box<dyn Error>> {
    match args.arch.as_str() {
        "x86_64" => {}
        "aarch64" if args.cpu.is_some() => {
            return Err("--cpu: x86_64 only (aarch64 cases pick their cpu from the seed)".into())
        }
        "aarch64" => return aarch64::record(&args.out, args.seed, args.count, &args.patterns),
        other => return Err(format!("--arch {other:?}: x86_64 or aarch64").into()),
    }
    let pats = select_patterns(&args.patterns, PATTERNS, "pattern", &args.out)?;
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
                let rec = record_case(&mut m, &g, &env, args.attempts)?;
                let name = format!("{p}-{i:03}");
                let path = recording(&name, &g, &rec, &env, fs_base).write(&args.out)?;
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
        let cs = built.descriptor();
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

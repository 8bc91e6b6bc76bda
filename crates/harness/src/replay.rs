//! `rseq-emu replay`: emulate fixtures and compare with what the real machine did.

use crate::fixture::{self, Case, ExpectedOutcome, Regs};
use clap::Args as ClapArgs;
use rseq_emu_aarch64::Aarch64;
use rseq_emu_core::memory::Memory;
use rseq_emu_core::{Arch, Outcome, Program};
use rseq_emu_x86_64::{reg, X86_64};
use serde::Serialize;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Instruction budget per fixture (loops included).
pub const BUDGET: u64 = 1_000_000;

/// Arguments of `rseq-emu replay`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Fixture files or folders (searched recursively for *.json).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// One field that differs.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// `outcome`, `ip`, `regs.<name>` or `memory[0x…]`.
    pub field: String,
    /// What the real machine did.
    pub expected: String,
    /// What the emulator did.
    pub got: String,
}

/// The verdict on one fixture.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The file.
    pub path: String,
    /// The fixture's name (empty if it did not load).
    pub name: String,
    /// Whether everything matched.
    pub ok: bool,
    /// The fixture could not be used (malformed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the emulator's run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Instructions emulated.
    pub steps: u64,
    /// Every differing field.
    pub mismatches: Vec<Mismatch>,
}

/// Every `*.json` under the paths (files given directly are taken as they are).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Replay one fixture file.
pub fn replay_file(path: &Path) -> Report {
    match fixture::load(path) {
        Ok(case) => replay_case(&case),
        Err(e) => Report {
            path: path.display().to_string(),
            name: String::new(),
            ok: false,
            error: Some(e.to_string()),
            outcome: None,
            steps: 0,
            mismatches: Vec::new(),
        },
    }
}

fn outcome_text(o: &Outcome, case: &Case) -> String {
    match o {
        Outcome::Committed => "committed".into(),
        Outcome::Exited { ip } => ExpectedOutcome::classify(*ip, &case.cs).name().into(),
        Outcome::Unsupported { ip, insn, reason } => {
            format!("unsupported at 0x{ip:x} ({insn}): {reason}")
        }
        Outcome::Fault { ip, fault } => format!("fault at 0x{ip:x}: {fault:?}"),
        Outcome::BudgetExceeded { ip } => {
            format!("budget of {BUDGET} instructions exceeded at 0x{ip:x}")
        }
    }
}

fn run_arch<A: Arch>(
    case: &Case,
    state: &mut A::State,
) -> Result<(Outcome, u64, rseq_emu_core::SparseMemory), String> {
    let post = case.cs.start_ip + case.cs.post_commit_offset;
    let program = Program::<A>::decode(&case.code, case.code_address, case.cs.start_ip, post)
        .map_err(|e| format!("{}: code: {e}", case.path.display()))?;
    let mut mem = case.build_memory();
    let r = program.run(state, &mut mem, BUDGET);
    Ok((r.outcome, r.steps, mem))
}

/// Replay a validated fixture.
pub fn replay_case(case: &Case) -> Report {
    let mut report = Report {
        path: case.path.display().to_string(),
        name: case.name.clone(),
        ok: false,
        error: None,
        outcome: None,
        steps: 0,
        mismatches: Vec::new(),
    };
    let mut got = case.entry.clone();
    let run = match &mut got {
        Regs::X86(s) => run_arch::<X86_64>(case, s),
        Regs::A64(s) => run_arch::<Aarch64>(case, s),
    };
    let (outcome, steps, mut mem) = match run {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.steps = steps;
    let text = outcome_text(&outcome, case);
    report.outcome = Some(text.clone());
    let mm = &mut report.mismatches;
    if text != case.outcome.name() {
        mm.push(Mismatch {
            field: "outcome".into(),
            expected: case.outcome.name().into(),
            got: text,
        });
    }
    if let Outcome::Committed | Outcome::Exited { .. } = outcome {
        let ip = match &got {
            Regs::X86(s) => s.rip,
            Regs::A64(s) => s.pc,
        };
        if ip != case.exit_ip {
            mm.push(Mismatch {
                field: "ip".into(),
                expected: fixture::hex(case.exit_ip),
                got: fixture::hex(ip),
            });
        }
    }
    compare_regs(case, &case.expect_regs, &got, mm);
    for (&addr, want) in &case.expect_memory {
        let mut have = vec![0u8; want.len()];
        if mem.read(addr, &mut have).is_err() {
            mm.push(Mismatch {
                field: format!("memory[0x{addr:x}]"),
                expected: "readable".into(),
                got: "unreadable".into(),
            });
            continue;
        }
        for (i, (w, h)) in want.iter().zip(&have).enumerate() {
            if w != h {
                mm.push(Mismatch {
                    field: format!("memory[0x{:x}]", addr + i as u64),
                    expected: format!("0x{w:02x}"),
                    got: format!("0x{h:02x}"),
                });
            }
        }
    }
    report.ok = report.mismatches.is_empty();
    report
}

fn compare_regs(case: &Case, want: &Regs, got: &Regs, mm: &mut Vec<Mismatch>) {
    let mut cmp = |name: &str, w: u128, g: u128| {
        if w != g {
            mm.push(Mismatch {
                field: format!("regs.{name}"),
                expected: format!("0x{w:x}"),
                got: format!("0x{g:x}"),
            });
        }
    };
    match (want, got) {
        (Regs::X86(w), Regs::X86(g)) => {
            for (i, n) in reg::NAMES.iter().enumerate() {
                cmp(n, w.gpr[i].into(), g.gpr[i].into());
            }
            let m = !case.ignore_flags;
            cmp("rflags", (w.rflags & m).into(), (g.rflags & m).into());
            cmp("fs_base", w.fs_base.into(), g.fs_base.into());
            cmp("gs_base", w.gs_base.into(), g.gs_base.into());
        }
        (Regs::A64(w), Regs::A64(g)) => {
            for i in 0..31 {
                cmp(&format!("x{i}"), w.x[i].into(), g.x[i].into());
            }
            cmp("sp", w.sp.into(), g.sp.into());
            cmp("nzcv", w.nzcv.into(), g.nzcv.into());
            cmp("tpidr_el0", w.tpidr_el0.into(), g.tpidr_el0.into());
            for i in 0..32 {
                cmp(&format!("v{i}"), w.v[i], g.v[i]);
            }
        }
        _ => mm.push(Mismatch {
            field: "arch".into(),
            expected: case.arch.name().into(),
            got: "a state of the other architecture".into(),
        }),
    }
}

/// Run `rseq-emu replay`.
pub fn run(args: Args) -> Result<ExitCode, Box<dyn Error>> {
    let files = collect(&args.paths)?;
    if files.is_empty() {
        return Err("no *.json fixture found under the given paths".into());
    }
    let reports: Vec<Report> = files.iter().map(|p| replay_file(p)).collect();
    let passed = reports.iter().filter(|r| r.ok).count();
    let malformed = reports.iter().filter(|r| r.error.is_some()).count();
    let failed = reports.len() - passed - malformed;
    if args.json {
        let v = serde_json::json!({
            "total": reports.len(),
            "passed": passed,
            "mismatched": failed,
            "malformed": malformed,
            "fixtures": reports,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            if let Some(e) = &r.error {
                println!("ERROR {e}");
            } else if !r.ok {
                println!(
                    "FAIL {} ({}): {}",
                    r.name,
                    r.path,
                    r.outcome.as_deref().unwrap_or("")
                );
                for m in &r.mismatches {
                    println!("  {}: expected {} got {}", m.field, m.expected, m.got);
                }
            }
        }
        println!(
            "{} fixtures: {passed} match, {failed} mismatch, {malformed} malformed",
            reports.len()
        );
    }
    Ok(if passed == reports.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

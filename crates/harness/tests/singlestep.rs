//! The ptrace backend and `rseq-emu singlestep` against the real kernel:
//! the Memory conformance suite on a live process, the 10,000-operation
//! rseq program completing under emulation, and the livelock of a naive
//! single-stepper (every step is a preemption, the kernel aborts).

use rseq_emu_core::memory::{conformance, MemFault, Memory};
use rseq_emu_harness::ptrace::PtraceMemory;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Compile a test program from tests/programs with gcc into the target dir.
fn build(src: &str, out: &str, flags: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(out);
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .args(flags)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/programs")
                .join(src),
        )
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run gcc ({e}): install gcc (see the README's test command)")
        });
    assert!(status.success(), "gcc failed on {src}");
    exe
}

/// The tracee's memory with every address shifted by `zero`, so the suite's
/// fixed addresses land in the layout tests/programs/memmap.c prepared.
struct Shifted {
    inner: PtraceMemory,
    zero: u64,
}

impl Shifted {
    fn unshift(&self, mut f: MemFault) -> MemFault {
        f.addr = f.addr.wrapping_sub(self.zero);
        f
    }
}

impl Memory for Shifted {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let a = addr.wrapping_add(self.zero);
        self.inner.read(a, buf).map_err(|f| self.unshift(f))
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let a = addr.wrapping_add(self.zero);
        self.inner.write(a, data).map_err(|f| self.unshift(f))
    }
}

#[test]
fn ptrace_memory_passes_conformance_on_a_live_process() {
    let exe = build("memmap.c", "memmap", &[]);
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let zero: u64 = line.trim().parse().expect("memmap prints its base");
    let pid = child.id() as i32;
    let mut made = 0;
    conformance(|| {
        made += 1;
        Shifted {
            inner: PtraceMemory::new(pid),
            zero,
        }
    });
    assert_eq!(made, 1);
    // Unshifted: an access that wraps the address space faults as a whole.
    let mut m = PtraceMemory::new(pid);
    assert!(m.read_u64(u64::MAX - 3).is_err());
    // A write running from the writable page into the read-only one is
    // undone: the writable bytes keep their values.
    m.write_u64(zero + 0x1038, 0x1111_1111_1111_1111).unwrap();
    assert!(m.write_u128(zero + 0x1038, u128::MAX).is_err());
    assert_eq!(m.read_u64(zero + 0x1038).unwrap(), 0x1111_1111_1111_1111);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn rseq_emu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rseq-emu"))
}

/// Run `rseq-emu singlestep --json [extra] -- exe args` and return the
/// program's output lines and the report.
fn singlestep(extra: &[&str], exe: &Path, args: &[&str]) -> (Vec<String>, Value, Option<i32>) {
    let out = rseq_emu()
        .arg("singlestep")
        .arg("--json")
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let report = lines.pop().unwrap_or_else(|| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: Value = serde_json::from_str(&report)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {report}"));
    (lines, report, out.status.code())
}

/// The counter program, statically linked: glibc start-up under
/// single-stepping costs far fewer steps without the dynamic loader.
fn counter() -> PathBuf {
    // Built once: tests run in parallel and must not exec a file gcc is
    // still writing.
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build("rseq_counter.c", "rseq_counter", &["-static", "-pthread"]))
        .clone()
}

/// The tests that complete sections need the x86_64 executor.
fn need_executor() {
    if !<rseq_emu_x86_64::X86_64 as rseq_emu_core::Arch>::HAS_EXECUTOR {
        panic!("the x86_64 executor (crates/arch-x86_64) is not built yet: sections cannot be emulated");
    }
}

#[test]
fn ten_thousand_rseq_operations_complete_under_singlestep() {
    need_executor();
    let exe = counter();
    let (lines, report, code) = singlestep(&["--timeout", "120"], &exe, &["10000"]);
    assert_eq!(
        lines.last().map(String::as_str).unwrap_or(""),
        "total=10000 expected=10000 aborts=0",
        "report: {report}"
    );
    assert_eq!(report["status"]["exited"], 0, "report: {report}");
    assert_eq!(code, Some(0));
    // Every operation was completed by emulation, none by plain stepping.
    assert_eq!(report["sections_emulated"], 10000, "report: {report}");
    let sections = report["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 1, "report: {report}");
    assert_eq!(sections[0]["fallbacks"], 0);
    assert_eq!(sections[0]["aborts"], 0);
    assert!(report["instructions_stepped"].as_u64().unwrap() > 10000);
}

#[test]
fn two_threads_complete_under_singlestep() {
    need_executor();
    let exe = counter();
    let (lines, report, code) = singlestep(&["--timeout", "120"], &exe, &["300", "2"]);
    assert_eq!(
        lines.last().map(String::as_str).unwrap_or(""),
        "total=600 expected=600 aborts=0",
        "report: {report}"
    );
    assert_eq!(code, Some(0), "report: {report}");
    assert_eq!(report["sections_emulated"], 600, "report: {report}");
    assert!(report["threads"].as_u64().unwrap() >= 3, "report: {report}");
}

#[test]
fn naive_stepping_livelocks_in_the_first_section() {
    let exe = counter();
    // Naive stepping runs the static binary's start-up (tens of thousands
    // of instructions) one step at a time before the first section; on a
    // loaded 2-core machine that alone took over 5 s, so give it 15 s.
    let (lines, report, code) = singlestep(&["--naive", "--timeout", "15"], &exe, &["10000"]);
    assert_eq!(report["status"], "timeout", "report: {report}");
    assert_eq!(code, Some(124));
    assert!(lines.is_empty(), "the program must not finish: {lines:?}");
    assert_eq!(report["sections_emulated"], 0);
    let sections = report["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 1, "report: {report}");
    let s = &sections[0];
    // No completion at all, and the same descriptor aborted over and over.
    assert_eq!(s["stepped_commits"], 0, "report: {report}");
    let aborts = s["aborts"].as_u64().unwrap();
    assert!(
        aborts >= 100,
        "expected a livelock, saw {aborts} aborts: {report}"
    );
    assert_eq!(report["aborts"].as_u64().unwrap(), aborts);
}

#[test]
fn registers_round_trip_through_getregset_and_setregset() {
    use rseq_emu_harness::ptrace::{
        get_user_regs, regs_from_state, rseq_configuration, set_user_regs, state_from_regs,
    };
    use std::os::unix::process::CommandExt;
    let exe = counter();
    let mut cmd = Command::new(&exe);
    cmd.arg("0");
    // SAFETY: PTRACE_TRACEME is async-signal-safe; the child then stops
    // with SIGTRAP at its exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP);
    // The oracle for rip: the ELF entry point of the static executable.
    let elf = std::fs::read(&exe).unwrap();
    let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
    let regs = get_user_regs(pid).unwrap();
    assert_eq!(regs.rip, entry);
    let mut state = state_from_regs(&regs);
    assert_eq!(state.rip, entry);
    assert_eq!(state.gpr[rseq_emu_x86_64::reg::RSP], regs.rsp);
    // Nothing is registered before glibc's start-up code runs.
    assert_eq!(rseq_configuration(pid).unwrap(), None);
    state.gpr[rseq_emu_x86_64::reg::R12] = 0x1234_5678_9abc_def0;
    state.rflags |= rseq_emu_x86_64::flags::CF | rseq_emu_x86_64::flags::ZF;
    let mut new = regs;
    regs_from_state(&state, &mut new);
    set_user_regs(pid, &new).unwrap();
    let back = get_user_regs(pid).unwrap();
    assert_eq!(back.r12, 0x1234_5678_9abc_def0);
    assert_eq!(back.eflags & 0x41, 0x41);
    assert_eq!(state_from_regs(&back), state);
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
}

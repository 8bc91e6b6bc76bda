//! The gdb extension (tools/gdb/rseq_emu.py) with the real gdb in batch
//! mode: stop inside an rseq critical section, complete it with
//! `rseq-step` (or a plain `stepi` with `rseq-emu-stepi on`), and compare
//! the registers and memory at the exit with a native run of the same
//! section on the same inputs (a breakpoint at the commit point).
//!
//! Every gdb runs pinned to CPU 0 so both runs see the same `cpu_id` and so
//! update the same per-CPU slot; gdb disables ASLR, so addresses match.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn build() -> PathBuf {
    // Built once: tests run in parallel and must not run a file gcc is
    // still writing.
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(build_once).clone()
}

fn build_once() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("rseq_gdb");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-o"])
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/rseq_gdb.c"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run gcc ({e}): install gcc"));
    assert!(status.success(), "gcc failed on rseq_gdb.c");
    exe
}

fn extension() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/gdb/rseq_emu.py")
}

/// Python run inside gdb: print the thread's state and the per-CPU slot
/// the section updated, as one `STATE {json}` line.
const DUMP: &str = r#"python
import json
f = gdb.selected_frame()
names = ["rax","rcx","rdx","rbx","rsp","rbp","rsi","rdi","r8","r9","r10","r11","r12","r13","r14","r15","rip","eflags","fs_base","gs_base"]
st = {n: int(f.read_register(n)) & ((1 << 64) - 1) for n in names}
inf = gdb.selected_inferior()
try:
    st["slot"] = bytes(inf.read_memory(int(gdb.parse_and_eval("(long)&slots")) + 8 * st["rax"], 8)).hex()
    st["aux"] = bytes(inf.read_memory(int(gdb.parse_and_eval("(long)&aux")) + 8 * st["rax"], 8)).hex()
except gdb.MemoryError:
    st["slot"] = None
st["aborts"] = int(gdb.parse_and_eval("aborts"))
start = int(gdb.parse_and_eval("(long)&rseq_gdb_start"))
post = int(gdb.parse_and_eval("(long)&rseq_gdb_post"))
st["pc_is_post"] = st["rip"] == post
st["pc_in_section"] = start <= st["rip"] < post
print("STATE " + json.dumps(st))
end
"#;

/// Run gdb in batch mode on the test program with `commands`; returns the
/// whole output and the parsed STATE line.
fn gdb(exe: &Path, commands: &str) -> (String, Option<Value>) {
    let script = format!(
        "set pagination off\nset confirm off\nset style enabled off\n\
         source {ext}\nset rseq-emu-path {bin}\n{commands}\n{DUMP}\nkill\n",
        ext = extension().display(),
        bin = env!("CARGO_BIN_EXE_rseq-emu"),
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("gdb-{}-{n}.gdb", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let out = Command::new("taskset")
        .args(["-c", "0", "gdb", "-nx", "-batch", "-x"])
        .arg(&path)
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gdb under taskset ({e}): install the gdb package"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let state = text
        .lines()
        .find_map(|l| l.strip_prefix("STATE "))
        .map(|s| serde_json::from_str(s).unwrap());
    (text, state)
}

/// The status flags and DF: what the section computes.
const FLAGS: u64 = 0x8d5 | 0x400;

fn assert_same_state(native: &Value, emulated: &Value, log: &str) {
    assert!(native["slot"].is_string(), "{log}");
    for (k, v) in native.as_object().unwrap() {
        if k == "eflags" {
            let n = v.as_u64().unwrap() & FLAGS;
            let e = emulated[k].as_u64().unwrap() & FLAGS;
            assert_eq!(n, e, "eflags differ: native {n:#x}, emulated {e:#x}\n{log}");
        } else {
            assert_eq!(v, &emulated[k], "{k} differs from the native run\n{log}");
        }
    }
}

/// The tests that complete sections need the x86_64 executor.
fn need_executor() {
    if !<rseq_emu_x86_64::X86_64 as rseq_emu_core::Arch>::HAS_EXECUTOR {
        panic!("the x86_64 executor (crates/arch-x86_64) is not built yet: sections cannot be emulated");
    }
}

/// The state at the commit point after a native run whose first section
/// was not aborted by the kernel (on a loaded machine a preemption can
/// abort it; the retry then changes registers such as the abort count, so
/// such a run is not the reference).
fn native(exe: &Path) -> Value {
    let mut last = String::new();
    for _ in 0..20 {
        let (log, state) = gdb(exe, "break rseq_gdb_post\nrun");
        let state = state.unwrap_or_else(|| panic!("native run gave no state:\n{log}"));
        assert_eq!(state["pc_is_post"], true, "{log}");
        if state["aborts"] == 0 {
            return state;
        }
        last = log;
    }
    panic!("20 native runs were all aborted by the kernel:\n{last}");
}

#[test]
fn rseq_step_lands_at_the_exit_with_the_native_state() {
    need_executor();
    let exe = build();
    let native = native(&exe);
    let (log, state) = gdb(&exe, "break rseq_gdb_start\nrun\nrseq-step");
    let state = state.unwrap_or_else(|| panic!("no state:\n{log}"));
    assert_eq!(state["pc_is_post"], true, "not at the exit:\n{log}");
    assert_same_state(&native, &state, &log);
    // Each emulated instruction was printed, the first one is the section's.
    let traced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[rseq-emu] 0x"))
        .collect();
    assert_eq!(traced.len(), 9, "{log}");
    assert!(traced[0].contains("mov 4(%"), "{log}");
    assert!(log.contains("committed after 9 instructions"), "{log}");
}

#[test]
fn rseq_step_from_the_middle_of_a_section_matches_the_native_run() {
    // A breakpoint two instructions into the section: the native run got
    // there (two loads), and rseq-step emulates the rest from that exact
    // state (docs/debugger.md: where emulation starts).
    need_executor();
    let exe = build();
    let native = native(&exe);
    let (log, state) = gdb(&exe, "break rseq_gdb_mid\nrun\nrseq-step");
    let state = state.unwrap_or_else(|| panic!("no state:\n{log}"));
    assert_eq!(state["pc_is_post"], true, "not at the exit:\n{log}");
    assert_same_state(&native, &state, &log);
    assert!(log.contains("committed after 7 instructions"), "{log}");
}

#[test]
fn stepi_into_a_section_completes_it_when_enabled() {
    need_executor();
    let exe = build();
    let native = native(&exe);
    // Two stepi from the arming point: lea, then the store of rseq_cs lands
    // on start_ip; the stop hook completes the section from there.
    let (log, state) = gdb(
        &exe,
        "set rseq-emu-stepi on\nbreak rseq_gdb_arm\nrun\nstepi\nstepi",
    );
    let state = state.unwrap_or_else(|| panic!("no state:\n{log}"));
    assert_eq!(state["pc_is_post"], true, "not at the exit:\n{log}");
    assert_same_state(&native, &state, &log);
}

#[test]
fn rseq_stepi_steps_outside_and_completes_inside() {
    need_executor();
    let exe = build();
    let native = native(&exe);
    // lea (a plain stepi), then the arming store lands on start_ip and
    // rseq-stepi completes the section.
    let (log, state) = gdb(
        &exe,
        "break rseq_gdb_arm\nrun\ndelete\nrseq-stepi\nrseq-stepi",
    );
    let state = state.unwrap_or_else(|| panic!("no state:\n{log}"));
    assert_eq!(state["pc_is_post"], true, "not at the exit:\n{log}");
    assert_same_state(&native, &state, &log);
    assert!(log.contains("committed after 9 instructions"), "{log}");
}

#[test]
fn plain_stepi_inside_a_section_is_sent_to_abort() {
    // Why the extension exists: without it, the kernel aborts the section
    // at the first step inside it. (The breakpoint is deleted first: gdb
    // steps over a breakpoint out of line, which hides the abort.)
    let exe = build();
    let (log, state) = gdb(&exe, "break rseq_gdb_start\nrun\ndelete\nstepi");
    let state = state.unwrap_or_else(|| panic!("no state:\n{log}"));
    assert_eq!(state["pc_is_post"], false, "{log}");
    assert_eq!(state["pc_in_section"], false, "{log}");
}

#[test]
fn rseq_step_outside_a_section_is_a_clear_error() {
    let exe = build();
    // The error stops the batch script, so no state is printed.
    let (log, _) = gdb(&exe, "break main\nrun\nrseq-step");
    assert!(
        log.contains("not inside an armed critical section"),
        "{log}"
    );
}

//! The qemu-user oracle: run aarch64 code under `qemu-aarch64` from a given
//! state and memory, and capture the state and memory after it, to compare
//! with the executor.
//!
//! One long-lived `qemu-aarch64 -cpu neoverse-n1` process runs a small static
//! harness (`oracle/harness.c`, built by `build.rs` with
//! aarch64-linux-gnu-gcc). Cases stream over its stdin, results come back on
//! its stdout; every integer is little-endian:
//!
//! * case: `u32` magic `0x41363443`, `u32` region count, then per region
//!   `u64 addr, u64 len, u64 prot` (bit 0 read, 1 write, 2 exec) and `len`
//!   bytes, then the entry state (800 bytes: `x0..x30, sp, pc, nzcv,
//!   tpidr_el0, pad` as `u64`, then `v0..v31` as `u128`).
//! * result: `u32` magic `0x52363441`, `u32` status. Status 1: `u32` length
//!   and a setup error message (a region could not be mapped). Status 0:
//!   `u32` signal, `u32` si_code, `u64` si_addr, the state at the signal
//!   (same 800-byte layout, `pc` = the stopping instruction), then the
//!   bytes of every writable region, in case order.
//!
//! The harness maps each region with `MAP_FIXED_NOREPLACE` (whole pages; two
//! regions must not share a page), enters the state through a signal
//! frame (`rt_sigreturn` installs every register at once) and leaves on
//! the first signal: a `brk` ([`EXIT_BRK`]) the caller put where the code
//! should stop, a fault, or a 2 s timeout (`SIGALRM`). Harness state lives in
//! its own globals and its signal handler runs on an alternate stack, so no
//! register of the case can reach it. The window [`WINDOW_START`,
//! [`WINDOW_END`]) does not collide with the harness or qemu.

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rseq_emu_core::{Arch, MemFault, Memory, Outcome, Program, SparseMemory};

use crate::{A64State, Aarch64};

/// `brk #0xe5c`: where the oracle's code should stop (fill code pages with it).
pub const EXIT_BRK: u32 = 0xd420_0000 | (0xe5c << 5);
/// Lowest address for case regions.
pub const WINDOW_START: u64 = 0x10_0000_0000;
/// End of the window for case regions.
pub const WINDOW_END: u64 = 0x20_0000_0000;
/// The page size of qemu-aarch64's guest.
pub const PAGE: u64 = 4096;

const MAGIC_CASE: u32 = 0x4136_3443;
const MAGIC_RESULT: u32 = 0x5236_3441;
const STATE_BYTES: usize = 800;
/// The harness's buffer for region bytes (`MAX_BYTES` in harness.c).
const MAX_BYTES: usize = 8 << 20;

/// `SIGILL`.
pub const SIGILL: u32 = 4;
/// `SIGTRAP`.
pub const SIGTRAP: u32 = 5;
/// `SIGBUS`.
pub const SIGBUS: u32 = 7;
/// `SIGSEGV`.
pub const SIGSEGV: u32 = 11;
/// `SIGALRM` (the harness's timeout).
pub const SIGALRM: u32 = 14;

/// One memory region of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub addr: u64,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Stores allowed.
    pub writable: bool,
    /// Instruction fetch allowed.
    pub exec: bool,
}

impl Region {
    /// Executable, read-only code.
    pub fn code(addr: u64, bytes: Vec<u8>) -> Self {
        Region {
            addr,
            bytes,
            writable: false,
            exec: true,
        }
    }
    /// Writable data.
    pub fn data(addr: u64, bytes: Vec<u8>) -> Self {
        Region {
            addr,
            bytes,
            writable: true,
            exec: false,
        }
    }
    /// Read-only data.
    pub fn read_only(addr: u64, bytes: Vec<u8>) -> Self {
        Region {
            addr,
            bytes,
            writable: false,
            exec: false,
        }
    }
}

/// A 4 KiB code page of [`EXIT_BRK`] words with `words` at byte offset
/// `at`: whatever the block branches to outside itself stops the run.
/// Panics when the block does not fit in the page.
pub fn code_page(words: &[u32], at: usize) -> Vec<u8> {
    let mut code = EXIT_BRK.to_le_bytes().repeat(1024);
    for (i, w) in words.iter().enumerate() {
        code[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    code
}

/// One case for the oracle: memory and the entry state (`pc` included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Case {
    /// Regions to map (page-disjoint, inside the window).
    pub regions: Vec<Region>,
    /// The state to start from.
    pub state: A64State,
}

/// What qemu did with a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleResult {
    /// The signal that ended the run ([`SIGTRAP`] for a `brk`).
    pub signal: u32,
    /// Its `si_code`.
    pub code: u32,
    /// Its `si_addr` (the faulting data address for `SIGSEGV`/`SIGBUS`).
    pub addr: u64,
    /// The state at the signal; `pc` is the instruction that stopped.
    pub state: A64State,
    /// `(address, bytes)` of every writable region after the run.
    pub memory: Vec<(u64, Vec<u8>)>,
}

impl OracleResult {
    /// Whether the run stopped on an [`EXIT_BRK`] word at `pc` of `case`.
    pub fn stopped_on_exit_brk(&self, case: &Case) -> bool {
        self.signal == SIGTRAP && read_word(case, self.state.pc) == Some(EXIT_BRK)
    }
}

fn read_word(case: &Case, addr: u64) -> Option<u32> {
    case.regions.iter().find_map(|r| {
        let off = addr.checked_sub(r.addr)? as usize;
        let b = r.bytes.get(off..off + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    })
}

/// Why the oracle could not run a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleError {
    /// The harness or qemu is missing or could not start.
    Spawn(String),
    /// The case is malformed (regions outside the window, sharing a page...).
    BadCase(String),
    /// The harness refused to set the case up (mmap failed).
    Setup(String),
    /// The pipe broke or the harness answered garbage (it died).
    Protocol(String),
}

impl std::fmt::Display for OracleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OracleError::Spawn(s) => write!(f, "cannot start the qemu oracle: {s}"),
            OracleError::BadCase(s) => write!(f, "malformed oracle case: {s}"),
            OracleError::Setup(s) => write!(f, "the oracle harness could not set up the case: {s}"),
            OracleError::Protocol(s) => write!(f, "the oracle harness broke: {s}"),
        }
    }
}

impl std::error::Error for OracleError {}

/// A running `qemu-aarch64` with the harness loaded.
pub struct QemuOracle {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
}

/// The path of the harness binary built by `build.rs`.
pub fn harness_path() -> Result<&'static str, String> {
    let err = env!("RSEQ_EMU_A64_HARNESS_ERROR");
    if !err.is_empty() {
        return Err(err.to_string());
    }
    Ok(env!("RSEQ_EMU_A64_HARNESS"))
}

/// The qemu-user binary (`RSEQ_EMU_QEMU_AARCH64` overrides `qemu-aarch64`).
pub fn qemu_binary() -> String {
    std::env::var("RSEQ_EMU_QEMU_AARCH64").unwrap_or_else(|_| "qemu-aarch64".into())
}

fn put_state(out: &mut Vec<u8>, s: &A64State) {
    for x in s.x {
        out.extend(x.to_le_bytes());
    }
    for v in [s.sp, s.pc, u64::from(s.nzcv), s.tpidr_el0, 0] {
        out.extend(v.to_le_bytes());
    }
    for v in s.v {
        out.extend(v.to_le_bytes());
    }
}

fn get_state(b: &[u8]) -> A64State {
    let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let mut s = A64State::default();
    for (i, x) in s.x.iter_mut().enumerate() {
        *x = u(i);
    }
    s.sp = u(31);
    s.pc = u(32);
    s.nzcv = u(33) as u32 & 0xf000_0000;
    s.tpidr_el0 = u(34);
    for (i, v) in s.v.iter_mut().enumerate() {
        let o = 288 + 16 * i;
        *v = u128::from_le_bytes(b[o..o + 16].try_into().unwrap_or_default());
    }
    s
}

impl QemuOracle {
    /// Start `qemu-aarch64 -cpu neoverse-n1 <harness>`. Fails with a clear
    /// message if the harness could not be built or qemu is missing.
    pub fn spawn() -> Result<Self, OracleError> {
        let harness = harness_path().map_err(OracleError::Spawn)?;
        let qemu = qemu_binary();
        let mut child = Command::new(&qemu)
            .args(["-cpu", "neoverse-n1", harness])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                OracleError::Spawn(format!(
                    "cannot run {qemu} ({e}); install qemu-user (Debian package qemu-user)"
                ))
            })?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(OracleError::Spawn("no pipes to qemu".into()));
        };
        Ok(QemuOracle {
            child,
            to: BufWriter::with_capacity(1 << 16, to),
            from: BufReader::with_capacity(1 << 16, from),
        })
    }

    fn validate(case: &Case) -> Result<(), OracleError> {
        let mut pages: Vec<(u64, u64)> = Vec::new();
        for r in &case.regions {
            let end = r.addr.checked_add(r.bytes.len() as u64);
            let Some(end) = end.filter(|&e| r.addr >= WINDOW_START && e <= WINDOW_END) else {
                return Err(OracleError::BadCase(format!(
                    "region 0x{:x}+0x{:x} is outside [0x{WINDOW_START:x}, 0x{WINDOW_END:x})",
                    r.addr,
                    r.bytes.len()
                )));
            };
            if r.bytes.is_empty() {
                return Err(OracleError::BadCase(format!(
                    "region 0x{:x} is empty",
                    r.addr
                )));
            }
            let lo = r.addr & !(PAGE - 1);
            let hi = (end + PAGE - 1) & !(PAGE - 1);
            if pages.iter().any(|&(a, b)| lo < b && a < hi) {
                return Err(OracleError::BadCase(format!(
                    "region 0x{:x} shares a page with another region",
                    r.addr
                )));
            }
            pages.push((lo, hi));
        }
        if case.regions.len() > 16 {
            return Err(OracleError::BadCase("more than 16 regions".into()));
        }
        let total: usize = case.regions.iter().map(|r| r.bytes.len()).sum();
        if total > MAX_BYTES {
            return Err(OracleError::BadCase(format!(
                "{total} bytes of regions, more than the harness's {MAX_BYTES}"
            )));
        }
        Ok(())
    }

    fn encode(buf: &mut Vec<u8>, case: &Case) {
        buf.extend(MAGIC_CASE.to_le_bytes());
        buf.extend((case.regions.len() as u32).to_le_bytes());
        for r in &case.regions {
            let prot = 1 | (u64::from(r.writable) << 1) | (u64::from(r.exec) << 2);
            for v in [r.addr, r.bytes.len() as u64, prot] {
                buf.extend(v.to_le_bytes());
            }
            buf.extend(&r.bytes);
        }
        put_state(buf, &case.state);
    }

    fn read_result(
        from: &mut BufReader<ChildStdout>,
        case: &Case,
    ) -> Result<Result<OracleResult, OracleError>, OracleError> {
        let broke = |e: std::io::Error| OracleError::Protocol(format!("pipe: {e}"));
        let mut hdr = [0u8; 8];
        from.read_exact(&mut hdr).map_err(broke)?;
        let w = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        if w(&hdr, 0) != MAGIC_RESULT {
            return Err(OracleError::Protocol(format!(
                "bad result header {hdr:02x?}"
            )));
        }
        if w(&hdr, 4) == 1 {
            let mut len = [0u8; 4];
            from.read_exact(&mut len).map_err(broke)?;
            let mut msg = vec![0u8; u32::from_le_bytes(len) as usize];
            from.read_exact(&mut msg).map_err(broke)?;
            return Ok(Err(OracleError::Setup(
                String::from_utf8_lossy(&msg).into_owned(),
            )));
        }
        let mut fixed = vec![0u8; 16 + STATE_BYTES];
        from.read_exact(&mut fixed).map_err(broke)?;
        let mut memory = Vec::new();
        for r in case.regions.iter().filter(|r| r.writable) {
            let mut bytes = vec![0u8; r.bytes.len()];
            from.read_exact(&mut bytes).map_err(broke)?;
            memory.push((r.addr, bytes));
        }
        Ok(Ok(OracleResult {
            signal: w(&fixed, 0),
            code: w(&fixed, 4),
            addr: u64::from_le_bytes(fixed[8..16].try_into().unwrap_or_default()),
            state: get_state(&fixed[16..]),
            memory,
        }))
    }

    /// Run one case to its first signal.
    pub fn run(&mut self, case: &Case) -> Result<OracleResult, OracleError> {
        self.run_batch(std::slice::from_ref(case))
            .pop()
            .unwrap_or_else(|| Err(OracleError::Protocol("no result".into())))
    }

    /// Run many cases, streaming them to qemu while results come back (a
    /// writer thread keeps the pipe full, so the two processes do not wait
    /// for each other case by case). One result per case, in order.
    pub fn run_batch(&mut self, cases: &[Case]) -> Vec<Result<OracleResult, OracleError>> {
        let mut out = Vec::with_capacity(cases.len());
        let valid: Vec<Result<(), OracleError>> = cases.iter().map(Self::validate).collect();
        let (to, from, child) = (&mut self.to, &mut self.from, &mut self.child);
        let mut broken: Option<OracleError> = None;
        std::thread::scope(|s| {
            let writer = s.spawn(|| -> Result<(), std::io::Error> {
                let mut buf = Vec::new();
                for (c, v) in cases.iter().zip(&valid) {
                    if v.is_ok() {
                        buf.clear();
                        Self::encode(&mut buf, c);
                        to.write_all(&buf)?;
                    }
                }
                to.flush()
            });
            for (c, v) in cases.iter().zip(&valid) {
                if let Err(e) = v {
                    out.push(Err(e.clone()));
                    continue;
                }
                if let Some(e) = &broken {
                    out.push(Err(e.clone()));
                    continue;
                }
                match Self::read_result(from, c) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        // Unblock the writer: the harness is unusable.
                        let _ = child.kill();
                        broken = Some(e.clone());
                        out.push(Err(e));
                    }
                }
            }
            if let Ok(Err(e)) = writer.join() {
                if broken.is_none() {
                    broken = Some(OracleError::Protocol(format!("pipe: {e}")));
                }
            }
        });
        if let Some(e) = broken {
            // A broken pipe poisons the rest; a dead harness reports here.
            for r in out.iter_mut() {
                if r.is_ok() {
                    continue;
                }
                if !matches!(r, Err(OracleError::BadCase(_) | OracleError::Setup(_))) {
                    *r = Err(e.clone());
                }
            }
        }
        out
    }
}

impl Drop for QemuOracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a checked case did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The executor and qemu agree (registers, flags, SIMD registers,
    /// tpidr_el0, memory, and where and how the run stopped).
    Match,
    /// The executor refused the code (`Unsupported`, with its reason), so
    /// it was not run under qemu.
    Unsupported(String),
    /// The executor ran out of budget (a loop): not run under qemu.
    Budget,
}

/// Format a state for a mismatch report.
pub fn show(s: &A64State) -> String {
    let mut o = String::new();
    for (i, x) in s.x.iter().enumerate() {
        o += &format!("x{i}={x:#x} ");
    }
    o += &format!(
        "sp={:#x} pc={:#x} nzcv={:#x} tpidr_el0={:#x}",
        s.sp, s.pc, s.nzcv, s.tpidr_el0
    );
    for (i, v) in s.v.iter().enumerate() {
        if *v != 0 {
            o += &format!(" v{i}={v:#x}");
        }
    }
    o
}

/// The executor's memory for a case: every region, writable or not.
pub fn sparse_memory(case: &Case) -> SparseMemory {
    let mut m = SparseMemory::new();
    for r in &case.regions {
        // Regions were validated page-disjoint by the caller's generator;
        // an overlap is a generator bug and shows as a missing region.
        let _ = m.map(r.addr, r.bytes.clone(), r.writable);
    }
    m
}

fn diff_states(q: &A64State, e: &A64State, out: &mut Vec<String>) {
    for i in 0..31 {
        if q.x[i] != e.x[i] {
            out.push(format!("x{i}: qemu {:#x} emu {:#x}", q.x[i], e.x[i]));
        }
    }
    let pairs = [
        ("sp", q.sp, e.sp),
        ("pc", q.pc, e.pc),
        ("nzcv", u64::from(q.nzcv), u64::from(e.nzcv)),
        ("tpidr_el0", q.tpidr_el0, e.tpidr_el0),
    ];
    for (n, a, b) in pairs {
        if a != b {
            out.push(format!("{n}: qemu {a:#x} emu {b:#x}"));
        }
    }
    for i in 0..32 {
        if q.v[i] != e.v[i] {
            out.push(format!("v{i}: qemu {:#x} emu {:#x}", q.v[i], e.v[i]));
        }
    }
}

/// The executor's side of a case, before qemu runs it.
struct Emulated {
    prog: Program<Aarch64>,
    state: A64State,
    mem: SparseMemory,
    outcome: Outcome,
    steps: u64,
}

/// `case` with every word of `[start, end)` that the decoder refuses
/// replaced by [`EXIT_BRK`], for the executor and qemu alike. qemu
/// translates a whole block ahead of executing it, and some encodings abort
/// qemu itself at translation time (seen: an FP16 SIMD two-register word,
/// `disas_simd_two_reg_misc_fp16: code should not be reached`, after a
/// faulting load the executor stopped at). A refused word is never
/// compared anyway: reaching it (now a `brk`) is still `Unsupported`.
fn mask_refused(case: &Case, start: u64, end: u64) -> Case {
    let mut out = case.clone();
    let Some(code) = out
        .regions
        .iter_mut()
        .find(|r| r.exec && start >= r.addr && end <= r.addr + r.bytes.len() as u64)
    else {
        return out;
    };
    let mut pc = start;
    while pc + 4 <= end {
        let at = (pc - code.addr) as usize;
        if Aarch64::decode(&code.bytes[at..at + 4], pc).op.is_err() {
            code.bytes[at..at + 4].copy_from_slice(&EXIT_BRK.to_le_bytes());
        }
        pc += 4;
    }
    out
}

fn emulate(case: &Case, start: u64, end: u64) -> Result<Result<Emulated, Verdict>, String> {
    let code = case
        .regions
        .iter()
        .find(|r| r.exec && start >= r.addr && end <= r.addr + r.bytes.len() as u64)
        .ok_or_else(|| format!("no exec region covers [{start:#x}, {end:#x})"))?;
    let prog = Program::<Aarch64>::decode(&code.bytes, code.addr, start, end)
        .map_err(|e| e.to_string())?;
    let mut mem = sparse_memory(case);
    let mut state = case.state;
    state.pc = start;
    let r = prog.run(&mut state, &mut mem, 256);
    match r.outcome {
        Outcome::Unsupported { insn, reason, .. } => {
            return Ok(Err(Verdict::Unsupported(format!("{insn}: {reason}"))))
        }
        Outcome::BudgetExceeded { .. } => return Ok(Err(Verdict::Budget)),
        _ => {}
    }
    Ok(Ok(Emulated {
        prog,
        state,
        mem,
        outcome: r.outcome,
        steps: r.steps,
    }))
}

/// Run `case` on the executor over the section `[start, end)` (the
/// instructions are read from the case's exec regions) and, if the executor
/// ran it to an exit or a fault, under qemu; compare everything.
///
/// * Executor `Committed`/`Exited { ip }`: qemu must stop at `pc == ip`,
///   either on an [`EXIT_BRK`] or on an instruction-fetch fault at `ip`
///   (a branch out of the code page); registers, flags, v registers,
///   tpidr_el0 and every writable byte must agree.
/// * Executor `Fault { ip, fault }`: qemu must raise `SIGSEGV`/`SIGBUS` at
///   `pc == ip` with its address inside the access; registers must agree
///   except the faulting instruction's transfer registers. Memory is not
///   compared: the ARM ARM leaves the locations a faulting store writes and
///   the registers a faulting load writes UNKNOWN (qemu splits a
///   page-crossing `stp`/`ldp` into two accesses).
pub fn check(o: &mut QemuOracle, case: &Case, start: u64, end: u64) -> Result<Verdict, String> {
    check_batch(o, &[(case, start, end)])
        .pop()
        .unwrap_or_else(|| Err("no verdict".into()))
}

/// [`check`] over many cases, with one streamed qemu batch.
pub fn check_batch(
    o: &mut QemuOracle,
    items: &[(&Case, u64, u64)],
) -> Vec<Result<Verdict, String>> {
    let mut emu = Vec::with_capacity(items.len());
    let mut to_run = Vec::new();
    for &(case, start, end) in items {
        let case = &mask_refused(case, start, end);
        let e = emulate(case, start, end);
        if let Ok(Ok(_)) = &e {
            let mut q = case.clone();
            q.state.pc = start;
            to_run.push(q);
        }
        emu.push(e);
    }
    let mut results = o.run_batch(&to_run).into_iter();
    let mut qcases = to_run.iter();
    emu.into_iter()
        .map(|e| match e {
            Err(s) => Err(s),
            Ok(Err(v)) => Ok(v),
            Ok(Ok(em)) => {
                let q = results
                    .next()
                    .unwrap_or_else(|| Err(OracleError::Protocol("missing result".into())));
                let qcase = qcases.next().cloned().unwrap_or_default();
                match q {
                    Ok(q) => compare(&qcase, em, &q),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .collect()
}

/// The transfer registers (Rt, and Rt2 of a pair) of a word in the
/// loads-and-stores encoding class, as register numbers for both the x
/// and the v file; nothing for any other word.
pub fn load_destinations(word: u32) -> Vec<usize> {
    if (word >> 25) & 0b101 != 0b100 {
        return Vec::new();
    }
    let mut v = vec![(word & 31) as usize];
    if (word >> 27) & 0b111 == 0b101 {
        v.push(((word >> 10) & 31) as usize);
    }
    v
}

/// The ARM ARM's `AArch64.BranchAddr()` at EL0 with TBI: bits 63..56
/// become copies of bit 55.
pub fn branch_addr(target: u64) -> u64 {
    (((target << 8) as i64) >> 8) as u64
}

fn compare(qcase: &Case, em: Emulated, q: &OracleResult) -> Result<Verdict, String> {
    let Emulated {
        prog,
        state: st,
        mut mem,
        outcome,
        steps,
    } = em;
    let fault: Option<MemFault> = match &outcome {
        Outcome::Fault { fault, .. } => Some(*fault),
        _ => None,
    };
    let mut diffs = Vec::new();
    match fault {
        None => {
            let fetch_fault = matches!(q.signal, SIGSEGV | SIGBUS) && q.addr == q.state.pc;
            if !(q.stopped_on_exit_brk(qcase) || fetch_fault) {
                diffs.push(format!(
                    "stop: qemu signal {} code {} addr {:#x} at pc {:#x}; emu {:?}",
                    q.signal, q.code, q.addr, q.state.pc, outcome
                ));
            }
            let mut qs = q.state;
            if fetch_fault && qs.pc != st.pc && branch_addr(qs.pc) == st.pc {
                // qemu-user does not apply TBI to branch targets; with
                // Linux's TCR_EL1.TBI0 = 1 and TBID0 = 0 (no pointer
                // authentication) the ARM ARM's BranchAddr() sign-extends
                // bit 55 over the top byte, as the executor does.
                qs.pc = st.pc;
            }
            diff_states(&qs, &st, &mut diffs);
            for (addr, bytes) in &q.memory {
                let mut have = vec![0u8; bytes.len()];
                if mem.read(*addr, &mut have).is_err() {
                    diffs.push(format!("mem {addr:#x}: unreadable in the emulator"));
                    continue;
                }
                if *bytes == have {
                    continue;
                }
                for (i, (a, b)) in bytes.iter().zip(&have).enumerate() {
                    if a != b && diffs.len() < 40 {
                        diffs.push(format!(
                            "mem {:#x}: qemu {a:#04x} emu {b:#04x}",
                            addr + i as u64
                        ));
                    }
                }
            }
        }
        Some(f) => {
            // si_addr: qemu reports the first faulting byte (the page
            // boundary for a crossing access), and 0 for an address outside
            // the 47 bits of guest address space it has on an x86_64 host
            // (the tag byte aside), also when only the end of the access
            // is there.
            let inside = (q.addr >= f.addr && q.addr - f.addr < f.size.max(1) as u64)
                || (q.addr == 0
                    && (f.addr & 0x00ff_ffff_ffff_ffff) + f.size.max(1) as u64 > 1 << 47);
            if !matches!(q.signal, SIGSEGV | SIGBUS) || !inside {
                diffs.push(format!(
                    "stop: qemu signal {} code {} addr {:#x} at pc {:#x}; emu {:?}",
                    q.signal, q.code, q.addr, q.state.pc, outcome
                ));
            }
            // The ARM ARM leaves the destination registers of a load that
            // takes a data abort UNKNOWN (qemu fills the first register of
            // a page-crossing pair): they are not compared.
            let (mut qs, mut es) = (q.state, st);
            for r in load_destinations(read_word(qcase, st.pc).unwrap_or(0)) {
                if r < 31 {
                    qs.x[r] = 0;
                    es.x[r] = 0;
                }
                qs.v[r] = 0;
                es.v[r] = 0;
            }
            diff_states(&qs, &es, &mut diffs);
        }
    }
    if diffs.is_empty() {
        return Ok(Verdict::Match);
    }
    let text: Vec<String> = prog
        .insns()
        .iter()
        .map(|d| {
            let w = read_word(qcase, d.ip).unwrap_or(0);
            format!("{:#x}: {w:08x}  {}", d.ip, d.text)
        })
        .collect();
    Err(format!(
        "code\n  {}\nbefore {}\nqemu   {}\nemu    {}\nemu outcome {:?} after {} steps\n{}",
        text.join("\n  "),
        show(&qcase.state),
        show(&q.state),
        show(&st),
        outcome,
        steps,
        diffs.join("\n")
    ))
}

/// Fuzz body (for a cargo-fuzz target in soak mode, and the seed-corpus
/// test): the first 8 bytes seed a random state and data ([`crate::gen`]),
/// the rest are up to 8 instruction words run as a block; the executor and
/// qemu must agree. Panics with the report on a mismatch, and if the
/// oracle cannot start.
pub fn fuzz_oracle(data: &[u8]) {
    thread_local! {
        static ORACLE: std::cell::RefCell<Option<QemuOracle>> = const { std::cell::RefCell::new(None) };
    }
    if data.len() < 12 {
        return;
    }
    let seed = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let words: Vec<u32> = data[8..]
        .chunks_exact(4)
        .take(8)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut rng = crate::gen::Rng::new(seed);
    let st = crate::gen::random_state(&mut rng);
    let g = crate::gen::make_case(&mut rng, &words, st);
    ORACLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}")));
        }
        let Some(o) = slot.as_mut() else { return };
        if let Err(e) = check(o, &g.case, g.start, g.end) {
            panic!("executor and qemu differ (seed {seed:#x}, words {words:08x?}):\n{e}");
        }
    });
}

//! The native oracle: run x86_64 code on this CPU from a given register
//! state (all GPRs, status flags, fs_base, gs_base) and capture the state
//! and scratch memory after it, to compare with the executor.
//!
//! One anonymous RWX mapping holds a code page (prologue, snippet,
//! epilogue) followed by scratch pages for memory operands and the stack.
//! The prologue saves the host's callee-saved registers, rsp, fs_base and
//! gs_base (`rdfsbase`/`rdgsbase`, FSGSBASE is required), installs the
//! test state and falls into the snippet; the epilogue stores every GPR
//! and RFLAGS and restores the host. No Rust code runs while the test
//! state (and its fs_base) is live.
//!
//! Faults are not recovered: a case only runs natively after the executor
//! ran it on a [`SparseMemory`] holding just the scratch pages without a
//! fault, so every access of a correct executor stays inside scratch. If
//! the executor is wrong about an address, the native run may crash the
//! test process, which fails the test loudly.

use rseq_emu_core::{Memory, Outcome, Program, SparseMemory};

use crate::flags::{RESERVED1, STATUS};
use crate::{undefined_flags, X86State, X86_64};

const PAGE: usize = 4096;
/// Scratch bytes after the code page.
pub const SCRATCH_LEN: usize = 2048;
const SNIPPET_AT: usize = 512;

#[repr(C)]
#[derive(Default)]
struct Ctx {
    gpr: [u64; 16],
    rflags: u64,
    fs: u64,
    gs: u64,
    host_rsp: u64,
    host_fs: u64,
    host_gs: u64,
}

const OFF_FLAGS: u32 = 128;
const OFF_FS: u32 = 136;
const OFF_GS: u32 = 144;
const OFF_HRSP: u32 = 152;
const OFF_HFS: u32 = 160;
const OFF_HGS: u32 = 168;

/// Whether this CPU and kernel let user space use FSGSBASE.
pub fn have_fsgsbase() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_whitespace().any(|w| w == "fsgsbase"))
        .unwrap_or(false)
}

/// The native runner: one RWX mapping (code page + scratch).
pub struct Native {
    base: *mut u8,
    ctx: Box<Ctx>,
}

// mov r64, [rax+disp32]
fn load(code: &mut Vec<u8>, r: u8, off: u32) {
    code.extend([0x48 | ((r >> 3) & 1) << 2, 0x8b, 0x80 | ((r & 7) << 3)]);
    code.extend(off.to_le_bytes());
}
// mov [rax+disp32], r64
fn store(code: &mut Vec<u8>, r: u8, off: u32) {
    code.extend([0x48 | ((r >> 3) & 1) << 2, 0x89, 0x80 | ((r & 7) << 3)]);
    code.extend(off.to_le_bytes());
}

impl Native {
    /// Map the code page and scratch. Fails if the mapping is refused or
    /// the CPU lacks FSGSBASE.
    pub fn new() -> Result<Self, String> {
        if !have_fsgsbase() {
            return Err("the native oracle needs the fsgsbase CPU feature (Linux >= 5.9)".into());
        }
        // SAFETY: anonymous private mapping, no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap RWX failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Native {
            base: p.cast(),
            ctx: Box::default(),
        })
    }

    /// Address of the first snippet byte.
    pub fn snippet_ip(&self) -> u64 {
        self.base as u64 + SNIPPET_AT as u64
    }

    /// Address of the scratch area.
    pub fn scratch_addr(&self) -> u64 {
        self.base as u64 + PAGE as u64
    }

    /// The scratch bytes.
    pub fn scratch(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is 2 * PAGE bytes and owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(PAGE), SCRATCH_LEN) }
    }

    fn code(&mut self) -> &mut [u8] {
        // SAFETY: the first page of the mapping, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.base, PAGE) }
    }

    /// Run `snippet` natively from `st` (rip ignored; only the status flags
    /// of `rflags` are installed, DF clear). Returns the state after it
    /// falls off its end (rip = end of the snippet). The snippet must end by
    /// falling through or jumping to its end, and may only touch scratch.
    ///
    /// # Safety
    /// The snippet runs with full privileges of this process: the caller
    /// guarantees it only accesses scratch memory and ends at its end.
    pub unsafe fn run(&mut self, snippet: &[u8], st: &X86State) -> X86State {
        assert!(snippet.len() <= PAGE - SNIPPET_AT - 256, "snippet too long");
        let ctx = &mut *self.ctx as *mut Ctx as u64;
        let mut pro = Vec::with_capacity(256);
        // push rbx, rbp, r12..r15
        pro.extend([0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57]);
        pro.extend([0x48, 0xb8]); // movabs rax, ctx
        pro.extend(ctx.to_le_bytes());
        // mov [rax+host_rsp], rsp
        store(&mut pro, 4, OFF_HRSP);
        pro.extend([0xf3, 0x48, 0x0f, 0xae, 0xc1]); // rdfsbase rcx
        store(&mut pro, 1, OFF_HFS);
        pro.extend([0xf3, 0x48, 0x0f, 0xae, 0xc9]); // rdgsbase rcx
        store(&mut pro, 1, OFF_HGS);
        load(&mut pro, 1, OFF_FS);
        pro.extend([0xf3, 0x48, 0x0f, 0xae, 0xd1]); // wrfsbase rcx
        load(&mut pro, 1, OFF_GS);
        pro.extend([0xf3, 0x48, 0x0f, 0xae, 0xd9]); // wrgsbase rcx
        pro.extend([0xff, 0xb0]); // push [rax+flags]
        pro.extend(OFF_FLAGS.to_le_bytes());
        pro.push(0x9d); // popfq
        for r in 1..16u8 {
            load(&mut pro, r, u32::from(r) * 8);
        }
        load(&mut pro, 0, 0);
        assert!(pro.len() <= SNIPPET_AT);
        let mut epi = Vec::with_capacity(256);
        epi.extend([0x48, 0xa3]); // movabs [ctx], rax
        epi.extend(ctx.to_le_bytes());
        epi.extend([0x48, 0xb8]);
        epi.extend(ctx.to_le_bytes());
        for r in 1..16u8 {
            store(&mut epi, r, u32::from(r) * 8);
        }
        load(&mut epi, 4, OFF_HRSP);
        epi.push(0x9c); // pushfq
        epi.extend([0x8f, 0x80]); // pop [rax+flags]
        epi.extend(OFF_FLAGS.to_le_bytes());
        epi.push(0xfc); // cld
        load(&mut epi, 1, OFF_HFS);
        epi.extend([0xf3, 0x48, 0x0f, 0xae, 0xd1]); // wrfsbase rcx
        load(&mut epi, 1, OFF_HGS);
        epi.extend([0xf3, 0x48, 0x0f, 0xae, 0xd9]); // wrgsbase rcx
        epi.extend([
            0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3,
        ]);
        let code = self.code();
        code[..pro.len()].copy_from_slice(&pro);
        // jmp to the snippet
        let j = pro.len();
        code[j] = 0xe9;
        code[j + 1..j + 5].copy_from_slice(&((SNIPPET_AT - j - 5) as u32).to_le_bytes());
        code[SNIPPET_AT..SNIPPET_AT + snippet.len()].copy_from_slice(snippet);
        let e = SNIPPET_AT + snippet.len();
        code[e..e + epi.len()].copy_from_slice(&epi);
        self.ctx.gpr = st.gpr;
        self.ctx.rflags = (st.rflags & STATUS) | RESERVED1;
        self.ctx.fs = st.fs_base;
        self.ctx.gs = st.gs_base;
        // SAFETY: the code page now holds a complete function that saves
        // and restores every callee-saved register, rsp, fs_base and
        // gs_base, per the caller's guarantee about the snippet.
        let f: extern "C" fn() = unsafe { std::mem::transmute(self.base) };
        f();
        let mut out = *st;
        out.gpr = self.ctx.gpr;
        out.rflags = self.ctx.rflags;
        out.rip = self.snippet_ip() + snippet.len() as u64;
        out
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.base.cast(), 2 * PAGE);
        }
    }
}

pub use rseq_emu_core::rng::Rng;

/// One comparison case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Snippet bytes (runs from [`Native::snippet_ip`] to its end).
    pub code: Vec<u8>,
    /// Entry state (rip is set to the snippet start).
    pub state: X86State,
    /// Initial scratch contents.
    pub scratch: Vec<u8>,
}

/// What a checked case did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Both ran and agree.
    Match,
    /// The executor refused or faulted (not comparable natively).
    Skipped,
}

fn scratch_mem(n: &Native, bytes: &[u8]) -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(n.scratch_addr(), bytes.to_vec(), true)
        .expect("scratch maps");
    m
}

/// Format a state for a mismatch report.
pub fn show(s: &X86State) -> String {
    let mut o = String::new();
    for (i, v) in s.gpr.iter().enumerate() {
        o += &format!("{}={v:#x} ", crate::reg::NAMES[i]);
    }
    o += &format!(
        "rip={:#x} rflags={:#x} fs={:#x} gs={:#x}",
        s.rip, s.rflags, s.fs_base, s.gs_base
    );
    o
}

/// Run `case` on the executor and, if it ran to the snippet's end without
/// faulting, natively; compare registers, status flags (minus the
/// documented-undefined ones of single instructions) and all scratch bytes.
pub fn check(n: &mut Native, case: &Case) -> Result<Verdict, String> {
    let ip = n.snippet_ip();
    let end = ip + case.code.len() as u64;
    let Ok(prog) = Program::<X86_64>::decode(&case.code, ip, ip, end) else {
        return Ok(Verdict::Skipped);
    };
    let canonical = |v: u64| matches!((v as i64) >> 47, 0 | -1);
    if !canonical(case.state.fs_base) || !canonical(case.state.gs_base) {
        // wrfsbase/wrgsbase refuse non-canonical bases.
        return Ok(Verdict::Skipped);
    }
    let mut st = case.state;
    st.rip = ip;
    st.rflags = (st.rflags & STATUS) | RESERVED1;
    let before = st;
    let mut undef = 0;
    let mut mem = scratch_mem(n, &case.scratch);
    // Undefined flags: only for a snippet that is one instruction (plus
    // branch filler that does not touch flags).
    if let Some(d) = prog.insn_at(ip) {
        if let Ok(op) = &d.op {
            undef = undefined_flags(op, &before);
        }
    }
    let r = prog.run(&mut st, &mut mem, 64);
    if r.outcome != Outcome::Committed {
        return Ok(Verdict::Skipped);
    }
    n.scratch().copy_from_slice(&case.scratch);
    // SAFETY: the executor ran the snippet to its end touching only the
    // scratch pages; the native run does the same.
    let native = unsafe { n.run(&case.code, &before) };
    let mut native_mem = vec![0u8; SCRATCH_LEN];
    native_mem.copy_from_slice(n.scratch());
    let mut emu_mem = vec![0u8; SCRATCH_LEN];
    mem.read(n.scratch_addr(), &mut emu_mem)
        .expect("scratch readable");
    if native_mem == emu_mem
        && native.gpr == st.gpr
        && native.rip == st.rip
        && (native.rflags ^ st.rflags) & STATUS & !undef == 0
    {
        return Ok(Verdict::Match);
    }
    let mut diffs = Vec::new();
    for i in 0..16 {
        if native.gpr[i] != st.gpr[i] {
            diffs.push(format!(
                "{}: native {:#x} emu {:#x}",
                crate::reg::NAMES[i],
                native.gpr[i],
                st.gpr[i]
            ));
        }
    }
    let fd = (native.rflags ^ st.rflags) & STATUS & !undef;
    if fd != 0 {
        diffs.push(format!(
            "rflags: native {:#x} emu {:#x} (differing {fd:#x}, undefined {undef:#x})",
            native.rflags & STATUS,
            st.rflags & STATUS
        ));
    }
    if native.rip != st.rip {
        diffs.push(format!("rip: native {:#x} emu {:#x}", native.rip, st.rip));
    }
    for (i, (a, b)) in native_mem.iter().zip(&emu_mem).enumerate() {
        if a != b {
            diffs.push(format!(
                "mem {:#x}: native {a:#04x} emu {b:#04x}",
                n.scratch_addr() + i as u64
            ));
            if diffs.len() > 24 {
                break;
            }
        }
    }
    if diffs.is_empty() {
        return Ok(Verdict::Match);
    }
    let text: Vec<String> = prog
        .insns()
        .iter()
        .map(|d| format!("{:#x}: {}", d.ip, d.text))
        .collect();
    Err(format!(
        "code {:02x?}\n  {}\nbefore {}\nnative {}\nemu    {}\n{}",
        case.code,
        text.join("\n  "),
        show(&before),
        show(&native),
        show(&st),
        diffs.join("\n")
    ))
}

/// Fuzz body: the executor against the CPU on arbitrary code bytes and
/// state. Never panics on a match; panics with the report on a mismatch.
pub fn fuzz_oracle(data: &[u8]) {
    thread_local! {
        static NATIVE: std::cell::RefCell<Option<Native>> = const { std::cell::RefCell::new(None) };
    }
    if data.len() < 8 {
        return;
    }
    let mut rng = Rng::new(u64::from_le_bytes(data[..8].try_into().unwrap_or_default()));
    let mut code: Vec<u8> = data[8..].iter().copied().take(15).collect();
    // One instruction: undefined flags are known per instruction.
    let len = usize::from(<X86_64 as rseq_emu_core::Arch>::decode(&code, 0).len);
    code.truncate(len);
    if code.is_empty() {
        return;
    }
    NATIVE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Native::new().ok();
        }
        let Some(n) = slot.as_mut() else { return };
        // A native crash kills the process before libFuzzer can save the
        // input (the test state's rsp/fs_base are live): optionally leave
        // it in a file first.
        if let Some(path) = std::env::var_os("RSEQ_EMU_ORACLE_LAST") {
            let _ = std::fs::write(path, data);
        }
        let case = crate::gen::state_for(&mut rng, n, code);
        if let Err(e) = check(n, &case) {
            panic!("executor and CPU differ:\n{e}");
        }
    });
}

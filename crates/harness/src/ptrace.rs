//! A ptrace'd thread as seen by the emulator: its memory (through
//! `process_vm_readv`/`process_vm_writev`), its registers (through
//! `PTRACE_GETREGSET`/`PTRACE_SETREGSET` with `NT_PRSTATUS`) and its rseq
//! registration (through `PTRACE_GET_RSEQ_CONFIGURATION`, Linux ≥ 5.13),
//! plus the live critical section read from the thread's rseq area — no ELF
//! metadata is needed, so JIT-generated sections are found too.
//!
//! Every function here requires the thread to be in a ptrace stop.

use rseq_emu_core::abi::{area, validate, ArchKind, DescriptorError, RseqCs};
use rseq_emu_core::memory::{AccessKind, MemFault, Memory};
use rseq_emu_x86_64::{flags, reg, X86State};
use std::io;
use thiserror::Error;

/// `PTRACE_GET_RSEQ_CONFIGURATION` (not in every libc yet).
pub const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// `struct ptrace_rseq_configuration` from `<linux/ptrace.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqConfiguration {
    /// Address of the thread's `struct rseq` (0: not registered).
    pub rseq_abi_pointer: u64,
    /// Registered size of the area.
    pub rseq_abi_size: u32,
    /// The registered signature.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// A host-side ptrace failure (not an architectural fault).
#[derive(Debug, Error)]
pub enum PtraceError {
    /// A ptrace request failed.
    #[error("ptrace {request} on thread {tid} failed: {err}")]
    Request {
        /// The request's name.
        request: &'static str,
        /// The thread.
        tid: i32,
        /// errno.
        err: io::Error,
    },
    /// The thread's memory could not be read where the kernel's ABI says it must be.
    #[error("thread {tid}: cannot read {what} at 0x{addr:x}")]
    Unreadable {
        /// The thread.
        tid: i32,
        /// What was read.
        what: &'static str,
        /// Where.
        addr: u64,
    },
}

fn request_error(request: &'static str, tid: i32) -> PtraceError {
    PtraceError::Request {
        request,
        tid,
        err: io::Error::last_os_error(),
    }
}

/// The memory of a stopped tracee, read and written through
/// `process_vm_readv`/`process_vm_writev`. Those calls honour page
/// protections, so a store to a read-only mapping faults exactly as it
/// would for the thread (ptrace's `POKEDATA` would write through it).
///
/// Every access is all or nothing: a read or write that is only partly
/// mapped is a [`MemFault`], and a partial write is undone.
#[derive(Debug, Clone, Copy)]
pub struct PtraceMemory {
    pid: libc::pid_t,
}

impl PtraceMemory {
    /// The memory of process (or thread) `pid`.
    pub fn new(pid: libc::pid_t) -> Self {
        PtraceMemory { pid }
    }

    /// Read as many bytes as possible; returns the count read.
    fn readv(&self, addr: u64, buf: &mut [u8]) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which is valid for writes of its
        // length; the remote iovec is only interpreted by the kernel in the
        // tracee's address space.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }

    fn writev(&self, addr: u64, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: `local` describes `data`, valid for reads of its length
        // (the kernel only reads through it for process_vm_writev).
        let n = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }
}

fn range_ok(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some()
}

impl Memory for PtraceMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: buf.len(),
            kind: AccessKind::Read,
        };
        if !range_ok(addr, buf.len()) || self.readv(addr, buf) != buf.len() {
            return Err(fault);
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: data.len(),
            kind: AccessKind::Write,
        };
        if !range_ok(addr, data.len()) {
            return Err(fault);
        }
        // Keep the old bytes so a write that stops part-way (the next page
        // is unmapped or read-only) can be undone: all or nothing.
        let mut old = vec![0u8; data.len()];
        if self.readv(addr, &mut old) != data.len() {
            return Err(fault);
        }
        let n = self.writev(addr, data);
        if n != data.len() {
            self.writev(addr, &old[..n]);
            return Err(fault);
        }
        Ok(())
    }
}

/// Read a stopped thread's `user_regs_struct` (`NT_PRSTATUS`).
pub fn get_user_regs(tid: libc::pid_t) -> Result<libc::user_regs_struct, PtraceError> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut libc::user_regs_struct).cast(),
        iov_len: std::mem::size_of::<libc::user_regs_struct>(),
    };
    // SAFETY: the iovec points at `regs` with its exact size; the kernel
    // writes at most iov_len bytes.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            libc::NT_PRSTATUS as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    if r < 0 {
        return Err(request_error("GETREGSET", tid));
    }
    Ok(regs)
}

/// Write a stopped thread's `user_regs_struct` (`NT_PRSTATUS`).
pub fn set_user_regs(tid: libc::pid_t, regs: &libc::user_regs_struct) -> Result<(), PtraceError> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: (&mut copy as *mut libc::user_regs_struct).cast(),
        iov_len: std::mem::size_of::<libc::user_regs_struct>(),
    };
    // SAFETY: the iovec points at a user_regs_struct of the exact size; the
    // kernel only reads it.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            libc::NT_PRSTATUS as usize,
            &mut iov as *mut libc::iovec,
        )
    };
    if r < 0 {
        return Err(request_error("SETREGSET", tid));
    }
    Ok(())
}

/// The emulator's view of `user_regs_struct`.
pub fn state_from_regs(r: &libc::user_regs_struct) -> X86State {
    let mut gpr = [0u64; 16];
    gpr[reg::RAX] = r.rax;
    gpr[reg::RCX] = r.rcx;
    gpr[reg::RDX] = r.rdx;
    gpr[reg::RBX] = r.rbx;
    gpr[reg::RSP] = r.rsp;
    gpr[reg::RBP] = r.rbp;
    gpr[reg::RSI] = r.rsi;
    gpr[reg::RDI] = r.rdi;
    gpr[reg::R8] = r.r8;
    gpr[reg::R9] = r.r9;
    gpr[reg::R10] = r.r10;
    gpr[reg::R11] = r.r11;
    gpr[reg::R12] = r.r12;
    gpr[reg::R13] = r.r13;
    gpr[reg::R14] = r.r14;
    gpr[reg::R15] = r.r15;
    X86State {
        gpr,
        rip: r.rip,
        rflags: r.eflags,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
    }
}

/// The flag bits the emulator owns; every other RFLAGS bit (TF, IF, ...)
/// keeps the tracee's value.
pub const EMULATED_FLAGS: u64 = flags::STATUS | flags::DF;

/// Put an emulated state back into `regs` (general registers, rip, the
/// status flags and DF; `fs_base`/`gs_base` as emulated).
pub fn regs_from_state(s: &X86State, regs: &mut libc::user_regs_struct) {
    let g = &s.gpr;
    regs.rax = g[reg::RAX];
    regs.rcx = g[reg::RCX];
    regs.rdx = g[reg::RDX];
    regs.rbx = g[reg::RBX];
    regs.rsp = g[reg::RSP];
    regs.rbp = g[reg::RBP];
    regs.rsi = g[reg::RSI];
    regs.rdi = g[reg::RDI];
    regs.r8 = g[reg::R8];
    regs.r9 = g[reg::R9];
    regs.r10 = g[reg::R10];
    regs.r11 = g[reg::R11];
    regs.r12 = g[reg::R12];
    regs.r13 = g[reg::R13];
    regs.r14 = g[reg::R14];
    regs.r15 = g[reg::R15];
    regs.rip = s.rip;
    regs.eflags = (regs.eflags & !EMULATED_FLAGS) | (s.rflags & EMULATED_FLAGS);
    regs.fs_base = s.fs_base;
    regs.gs_base = s.gs_base;
}

/// The thread's rseq registration, or `None` when it has none.
pub fn rseq_configuration(tid: libc::pid_t) -> Result<Option<RseqConfiguration>, PtraceError> {
    let mut conf = RseqConfiguration::default();
    // SAFETY: the kernel writes at most `addr` (= the size we pass) bytes
    // into `conf`, which is exactly that large.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConfiguration>(),
            &mut conf as *mut RseqConfiguration,
        )
    };
    if r < 0 {
        return Err(request_error("GET_RSEQ_CONFIGURATION", tid));
    }
    Ok((conf.rseq_abi_pointer != 0).then_some(conf))
}

/// The critical section a thread has armed right now: the descriptor its
/// rseq area's `rseq_cs` field points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSection {
    /// Address of the descriptor (the value of `rseq_cs`).
    pub cs_addr: u64,
    /// The descriptor as read from the tracee.
    pub cs: RseqCs,
}

/// Read the live `rseq_cs` pointer (offset 8 of the area) and the
/// descriptor it points to. `Ok(None)` when `rseq_cs` is 0.
pub fn live_section(
    mem: &mut impl Memory,
    tid: libc::pid_t,
    conf: &RseqConfiguration,
) -> Result<Option<LiveSection>, PtraceError> {
    let ptr_addr = conf.rseq_abi_pointer + area::RSEQ_CS;
    let cs_addr = mem
        .read_u64(ptr_addr)
        .map_err(|_| PtraceError::Unreadable {
            tid,
            what: "the rseq area's rseq_cs field",
            addr: ptr_addr,
        })?;
    if cs_addr == 0 {
        return Ok(None);
    }
    let mut b = [0u8; RseqCs::SIZE];
    mem.read(cs_addr, &mut b)
        .map_err(|_| PtraceError::Unreadable {
            tid,
            what: "the rseq_cs descriptor",
            addr: cs_addr,
        })?;
    Ok(Some(LiveSection {
        cs_addr,
        cs: RseqCs::from_bytes(&b),
    }))
}

/// The kernel's checks on a live descriptor, with the registered signature.
pub fn validate_live(
    mem: &mut impl Memory,
    conf: &RseqConfiguration,
    cs: &RseqCs,
) -> Result<(), DescriptorError> {
    validate(cs, ArchKind::X86_64, conf.signature, |a| {
        mem.read_u32(a).ok()
    })
}

/// Decode the live section `cs` from the code bytes in `mem`.
pub fn decode_section(
    mem: &mut impl Memory,
    cs: &RseqCs,
) -> Result<rseq_emu_core::Program<rseq_emu_x86_64::X86_64>, String> {
    let end = cs
        .post_commit_ip()
        .ok_or_else(|| "post_commit_ip overflows".to_string())?;
    let len = end.saturating_sub(cs.start_ip);
    if len == 0 || len > rseq_emu_core::arch::MAX_SECTION_LEN {
        return Err(format!("section length {len} is out of range"));
    }
    // An instruction starting before post_commit_ip may end after it: take
    // up to 15 more bytes when they are mapped.
    let mut code = vec![0u8; len as usize + 15];
    let mut have = code.len();
    while mem.read(cs.start_ip, &mut code[..have]).is_err() {
        if have == len as usize {
            return Err(format!(
                "the code of the section at 0x{:x} is unreadable",
                cs.start_ip
            ));
        }
        have -= 1;
    }
    code.truncate(have);
    rseq_emu_core::Program::decode(&code, cs.start_ip, cs.start_ip, end).map_err(|e| e.to_string())
}

/// One emulated instruction, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedInsn {
    /// Its address.
    pub ip: u64,
    /// Its disassembly.
    pub text: String,
}

/// Run `program` from `state` one instruction at a time (so each can be
/// reported), at most `budget` instructions. Returns the outcome, the
/// instructions executed and the trace.
pub fn emulate_traced(
    program: &rseq_emu_core::Program<rseq_emu_x86_64::X86_64>,
    state: &mut X86State,
    mem: &mut impl Memory,
    budget: u64,
) -> (rseq_emu_core::Outcome, Vec<TracedInsn>) {
    use rseq_emu_core::Outcome;
    let mut trace = Vec::new();
    loop {
        let ip = state.rip;
        if trace.len() as u64 >= budget {
            return (Outcome::BudgetExceeded { ip }, trace);
        }
        let r = program.run(state, mem, 1);
        if r.steps == 1 {
            let text = program
                .insn_at(ip)
                .map(|d| d.text.clone())
                .unwrap_or_default();
            trace.push(TracedInsn { ip, text });
        }
        match r.outcome {
            Outcome::BudgetExceeded { .. } => continue,
            o => return (o, trace),
        }
    }
}

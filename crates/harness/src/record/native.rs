//! Running a generated sequence natively with the kernel's rseq active.
//!
//! Layout (fixed addresses, below 2^31 so a descriptor address fits a
//! sign-extended imm32 as in `movq $desc, %fs:off`):
//! * [`CODE`]: one RWX page: the entry trampoline, the prologue that sets
//!   `rseq->rseq_cs`, the section, its exits, the common epilogue.
//! * [`SCRATCH`]: data buffers ([`DATA`]), the descriptor ([`DESC`]), the
//!   save areas and a private stack.

use super::asm::{Asm, Label, Mem, Rm};
use rseq_emu_core::abi::RseqCs;
use std::sync::Mutex;

/// Where the code page is mapped.
pub const CODE: u64 = 0x5000_0000;
/// Size of the code mapping.
pub const CODE_LEN: usize = 0x4000;
/// Where the scratch mapping is.
pub const SCRATCH: u64 = 0x6000_0000;
/// Size of the scratch mapping.
pub const SCRATCH_LEN: usize = 0x10000;
/// The data buffers (what fixtures see as their writable data).
pub const DATA: u64 = SCRATCH;
/// Size of the data buffers.
pub const DATA_LEN: usize = 0x800;
/// The descriptor (32-byte aligned).
pub const DESC: u64 = SCRATCH + 0x1000;
const HOST: u64 = SCRATCH + 0x2000;
const ENTRY: u64 = SCRATCH + 0x2100;
const SAVE: u64 = SCRATCH + 0x2200;
const EXIT_ID: u64 = SCRATCH + 0x2300;
/// Initial stack pointer of every run (a private stack the sections never use).
pub const STACK_TOP: u64 = SCRATCH + 0xf000;

/// A native run's registers: the 16 GPRs and rflags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NativeRegs {
    /// rax..r15, encoding order.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
}

/// What one native run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeResult {
    /// Which exit was taken (index into the exits given to [`build`]).
    pub exit: usize,
    /// Registers at the exit label.
    pub regs: NativeRegs,
    /// The data buffers after the run.
    pub data: Vec<u8>,
    /// `struct rseq` as the epilogue saw it right after the exit.
    pub area_at_exit: [u8; 32],
}

/// Built code: where the section and its exits are.
pub struct Built {
    /// The whole code page contents (from [`CODE`]).
    pub code: Vec<u8>,
    /// The section's first instruction.
    pub start_ip: u64,
    /// Address of every exit label (0: post_commit_ip, 1: abort_ip, then others).
    pub exits: Vec<u64>,
    /// One past the last exit stub (the fixture's code ends there).
    pub code_end: u64,
}

impl Built {
    /// The descriptor of the section: `[start_ip, exits[0])`, abort at `exits[1]`.
    pub fn descriptor(&self) -> RseqCs {
        RseqCs {
            version: 0,
            flags: 0,
            start_ip: self.start_ip,
            post_commit_offset: self.exits[0] - self.start_ip,
            abort_ip: self.exits[1],
        }
    }
}

extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The thread's rseq area offset from the thread pointer, if glibc registered one.
pub fn rseq_offset() -> Result<i64, String> {
    // SAFETY: plain reads of glibc's exported constants.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return Err("glibc did not register rseq for this thread (__rseq_size is 0; is GLIBC_TUNABLES=glibc.pthread.rseq=0 set?)".into());
    }
    Ok(off as i64)
}

/// The thread pointer (fs_base).
pub fn fs_base() -> u64 {
    let v: u64;
    // SAFETY: on x86_64 Linux %fs:0 holds the TCB's self pointer, always mapped.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) v) };
    v
}

/// Assemble trampoline + prologue + `section` + exits + epilogue into the
/// code page image. `section` receives the assembler and the exit labels
/// (0: post_commit, 1: abort, 2.. others) and emits the section body; the
/// post_commit label is bound right after it.
pub fn build(
    rseq_off: i64,
    n_other_exits: usize,
    section: impl FnOnce(&mut Asm, &[Label]),
) -> Result<Built, String> {
    let mut a = Asm::new(CODE);
    let exits: Vec<Label> = (0..2 + n_other_exits).map(|_| a.label()).collect();
    let epilogue = a.label();
    let prologue = a.label();
    // Trampoline: save the host's callee-saved registers and stack pointer.
    a.movabs(0, HOST);
    for (i, r) in [4u8, 3, 5, 12, 13, 14, 15].iter().enumerate() {
        a.mov_to(8, Rm::M(Mem::b(0, 8 * i as i32)), *r);
    }
    a.movabs(0, ENTRY);
    a.mov_from(8, 4, Rm::M(Mem::b(0, 32)));
    a.push_rm(Rm::M(Mem::b(0, 128)));
    a.popfq();
    for r in 1..16u8 {
        if r != 4 {
            a.mov_from(8, r, Rm::M(Mem::b(0, 8 * i32::from(r))));
        }
    }
    a.mov_from(8, 0, Rm::M(Mem::b(0, 0)));
    a.jmp(prologue);
    // Prologue: rseq->rseq_cs = &desc, as a real sequence does before start_ip.
    a.bind(prologue);
    let cs_disp = i32::try_from(rseq_off + 8).map_err(|_| "__rseq_offset out of disp32 range")?;
    a.mov_imm(8, Rm::M(Mem::fs_abs(cs_disp)), DESC as i32);
    let start_ip = a.here();
    section(&mut a, &exits);
    // Exits: post_commit first (the section falls into it), the signature
    // and abort handler, then the other labels.
    let mut exit_addrs = Vec::new();
    for (k, &l) in exits.iter().enumerate() {
        if k == 1 {
            a.long(rseq_emu_core::abi::RSEQ_SIG_X86_64);
        }
        a.bind(l);
        exit_addrs.push(a.here());
        a.movabs_store_rax(SAVE);
        a.movabs(0, k as u64);
        a.movabs_store_rax(EXIT_ID);
        a.jmp(epilogue);
    }
    let code_end = a.here();
    // Epilogue: save every GPR and rflags, snapshot struct rseq, clear
    // rseq_cs (the descriptor will go away), restore the host, return.
    a.bind(epilogue);
    a.movabs(0, SAVE);
    for r in 1..16u8 {
        a.mov_to(8, Rm::M(Mem::b(0, 8 * i32::from(r))), r);
    }
    a.pushfq();
    a.pop(1);
    a.mov_to(8, Rm::M(Mem::b(0, 128)), 1);
    let area = i32::try_from(rseq_off).map_err(|_| "__rseq_offset out of disp32 range")?;
    for i in 0..4 {
        a.mov_from(8, 1, Rm::M(Mem::fs_abs(area + 8 * i)));
        a.mov_to(8, Rm::M(Mem::b(0, 136 + 8 * i)), 1);
    }
    a.mov_imm(8, Rm::M(Mem::fs_abs(cs_disp)), 0);
    a.cld();
    a.movabs(0, HOST);
    for (i, r) in [4u8, 3, 5, 12, 13, 14, 15].iter().enumerate() {
        a.mov_from(8, *r, Rm::M(Mem::b(0, 8 * i as i32)));
    }
    a.ret();
    a.finish()?;
    if a.buf.len() > CODE_LEN {
        return Err("generated code does not fit the code page".into());
    }
    Ok(Built {
        code: a.buf,
        start_ip,
        exits: exit_addrs,
        code_end,
    })
}

/// The two fixed mappings; only one recorder at a time per process.
pub struct Machine {
    _guard: std::sync::MutexGuard<'static, ()>,
    /// The fault handlers that were installed before [`Machine::new`].
    old_handlers: [(libc::c_int, libc::sigaction); 3],
}

/// Signals a generated sequence can raise natively.
const FAULT_SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL];

/// A native fault while a generated sequence runs is a generator bug (the
/// sequence was given an address it should not touch). The process cannot
/// continue (the sequence's registers are lost), so say what happened,
/// where, and exit with status 3 instead of dying silently.
extern "C" fn on_native_fault(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    fn hex(mut v: u64, out: &mut [u8; 18]) -> &[u8] {
        out[0] = b'0';
        out[1] = b'x';
        for i in (2..18).rev() {
            out[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
        }
        &out[..]
    }
    // SAFETY: the kernel hands a valid siginfo and ucontext to an
    // SA_SIGINFO handler; only async-signal-safe calls (write, _exit) follow.
    unsafe {
        let addr = (*info).si_addr() as u64;
        let ip =
            (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
        let (mut ipb, mut addrb) = ([0u8; 18], [0u8; 18]);
        let name: &[u8] = match sig {
            libc::SIGSEGV => b"SIGSEGV",
            libc::SIGBUS => b"SIGBUS",
            _ => b"SIGILL",
        };
        let parts: [&[u8]; 7] = [
            b"rseq-emu record: a generated sequence faulted natively (",
            name,
            b" at ip ",
            hex(ip, &mut ipb),
            b", address ",
            hex(addr, &mut addrb),
            b"): a bug in the pattern generator; no fixture was written for it\n",
        ];
        for p in parts {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        libc::_exit(3);
    }
}

static LOCK: Mutex<()> = Mutex::new(());

fn map_fixed(addr: u64, len: usize, prot: i32) -> Result<(), String> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the
    // result is checked.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p as u64 != addr {
        return Err(format!(
            "cannot map 0x{len:x} bytes at 0x{addr:x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Machine {
    /// Map the code page and the scratch area.
    pub fn new() -> Result<Self, String> {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        map_fixed(
            CODE,
            CODE_LEN,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        )?;
        if let Err(e) = map_fixed(SCRATCH, SCRATCH_LEN, libc::PROT_READ | libc::PROT_WRITE) {
            // SAFETY: unmapping the page mapped just above.
            unsafe { libc::munmap(CODE as *mut libc::c_void, CODE_LEN) };
            return Err(e);
        }
        let mut old_handlers = FAULT_SIGNALS.map(|sig| {
            // SAFETY: sigaction is plain data.
            (sig, unsafe { std::mem::zeroed::<libc::sigaction>() })
        });
        for (sig, old) in old_handlers.iter_mut() {
            // SAFETY: installing an SA_SIGINFO handler with an empty mask;
            // `old` receives the previous action, restored in Drop.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_native_fault as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigaction(*sig, &sa, old);
            }
        }
        Ok(Machine {
            _guard: guard,
            old_handlers,
        })
    }

    /// Run `built` once from `entry` with `data` in the buffers and `desc`
    /// as the descriptor. Returns the result and the area as it was just
    /// before the call.
    pub fn run(
        &mut self,
        built: &Built,
        desc: &[u8; 32],
        entry: &NativeRegs,
        data: &[u8],
        rseq_off: i64,
    ) -> (NativeResult, [u8; 32], libc::rusage, libc::rusage) {
        // SAFETY: CODE and SCRATCH are mapped by `new` with the sizes used
        // here (built.code.len() <= CODE_LEN and data.len() <= DATA_LEN are
        // checked by the callers' construction); the trampoline follows the
        // C ABI: it saves and restores rsp, rbx, rbp, r12..r15 and returns
        // with DF clear; it only touches CODE, SCRATCH and struct rseq.
        unsafe {
            std::ptr::copy_nonoverlapping(built.code.as_ptr(), CODE as *mut u8, built.code.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), DATA as *mut u8, data.len());
            std::ptr::copy_nonoverlapping(desc.as_ptr(), DESC as *mut u8, 32);
            let e = ENTRY as *mut u64;
            for i in 0..16 {
                e.add(i).write_volatile(entry.gpr[i]);
            }
            e.add(16).write_volatile(entry.rflags);
            (EXIT_ID as *mut u64).write_volatile(u64::MAX);
            let area = (fs_base() as i64 + rseq_off) as *const u8;
            let mut before = [0u8; 32];
            std::ptr::copy_nonoverlapping(area, before.as_mut_ptr(), 32);
            let mut ru0: libc::rusage = std::mem::zeroed();
            let mut ru1: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut ru0);
            let f: extern "C" fn() = std::mem::transmute(CODE as usize);
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            f();
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            libc::getrusage(libc::RUSAGE_THREAD, &mut ru1);
            let s = SAVE as *const u64;
            let mut regs = NativeRegs::default();
            for i in 0..16 {
                regs.gpr[i] = s.add(i).read_volatile();
            }
            regs.rflags = s.add(16).read_volatile();
            let mut area_at_exit = [0u8; 32];
            std::ptr::copy_nonoverlapping((SAVE + 136) as *const u8, area_at_exit.as_mut_ptr(), 32);
            let mut out = vec![0u8; data.len()];
            std::ptr::copy_nonoverlapping(DATA as *const u8, out.as_mut_ptr(), data.len());
            let exit = (EXIT_ID as *const u64).read_volatile() as usize;
            (
                NativeResult {
                    exit,
                    regs,
                    data: out,
                    area_at_exit,
                },
                before,
                ru0,
                ru1,
            )
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no code runs from it
        // any more; the saved actions are the ones sigaction returned.
        unsafe {
            for (sig, old) in &self.old_handlers {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
            libc::munmap(CODE as *mut libc::c_void, CODE_LEN);
            libc::munmap(SCRATCH as *mut libc::c_void, SCRATCH_LEN);
        }
    }
}

/// The CPU this thread runs on.
pub fn current_cpu() -> Result<u32, String> {
    // SAFETY: no arguments, no memory.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).map_err(|_| format!("sched_getcpu: {}", std::io::Error::last_os_error()))
}

/// Pin the calling thread to `cpu`; returns the previous mask.
pub fn pin(cpu: u32) -> Result<libc::cpu_set_t, String> {
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers and sizes.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
            return Err(format!(
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(old)
    }
}

/// Restore an affinity mask from [`pin`].
pub fn unpin(old: &libc::cpu_set_t) {
    // SAFETY: a valid mask and its size.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old);
    }
}

//! x86_64 parts of the engine.

/// The thread pointer (`%fs:0`, the TCB's self pointer on glibc).
#[inline]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86_64 glibc, %fs:0 holds the TCB self pointer; the load
    // has no side effects.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// The rseq signature the engine's own commit section uses.
pub const RSEQ_SIG: u32 = rseq_emu_core::abi::RSEQ_SIG_X86_64;

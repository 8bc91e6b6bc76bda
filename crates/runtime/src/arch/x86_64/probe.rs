//! The fault-safe copy behind [`crate::probe`]: one routine whose only
//! faulting instructions are its loads from the source, and the handler's
//! test of whether a fault's `%rip` lies in it (then execution continues at
//! a fixup that returns "faulted", as the kernel's exception tables do).

std::arch::global_asm!(
    r#"
    .text
    .globl rseq_emu_probe_copy
    .hidden rseq_emu_probe_copy
    .type rseq_emu_probe_copy, @function
    .p2align 4
// rdi = dst (the engine's buffer), rsi = src (any address), rdx = len.
// eax = 0: copied; 1: a load from src faulted (via rseq_emu_probe_fixup).
rseq_emu_probe_copy:
    xor %eax, %eax
    cmp $8, %rdx
    jne 1f
    mov (%rsi), %rcx
    mov %rcx, (%rdi)
    ret
1:
    test %rdx, %rdx
    jz 2f
    movb (%rsi), %cl
    movb %cl, (%rdi)
    inc %rsi
    inc %rdi
    dec %rdx
    jmp 1b
2:
    ret
    .globl rseq_emu_probe_copy_end
    .hidden rseq_emu_probe_copy_end
rseq_emu_probe_copy_end:
    .size rseq_emu_probe_copy, . - rseq_emu_probe_copy
    .globl rseq_emu_probe_fixup
    .hidden rseq_emu_probe_fixup
    .type rseq_emu_probe_fixup, @function
rseq_emu_probe_fixup:
    mov $1, %eax
    ret
    .size rseq_emu_probe_fixup, . - rseq_emu_probe_fixup
"#,
    options(att_syntax)
);

extern "C" {
    fn rseq_emu_probe_copy(dst: *mut u8, src: u64, len: usize) -> u32;
    static rseq_emu_probe_copy_end: u8;
    fn rseq_emu_probe_fixup() -> u32;
}

/// Copy `dst.len()` bytes from `src`; false when a load faulted (only
/// valid once the fault handler of [`crate::probe`] is installed).
#[inline]
pub fn probe_copy(dst: &mut [u8], src: u64) -> bool {
    // SAFETY: dst is a valid buffer of that length; a fault on src is
    // turned into a return of 1 by the installed handler.
    unsafe { rseq_emu_probe_copy(dst.as_mut_ptr(), src, dst.len()) == 0 }
}

/// In a SIGSEGV/SIGBUS handler: when the fault is a load of
/// [`probe_copy`], redirect the interrupted context to the fixup (which
/// returns "faulted") and answer true.
///
/// # Safety
/// `uc` is the `ucontext_t` the kernel passed to a `SA_SIGINFO` handler.
pub unsafe fn fixup_probe_fault(uc: *mut libc::c_void) -> bool {
    let uc = uc.cast::<libc::ucontext_t>();
    // SAFETY: the caller's contract: a valid ucontext.
    let rip = unsafe { &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] };
    let start = rseq_emu_probe_copy as *const () as usize;
    let end = std::ptr::addr_of!(rseq_emu_probe_copy_end) as usize;
    if (start..end).contains(&(*rip as usize)) {
        *rip = rseq_emu_probe_fixup as *const () as usize as i64;
        true
    } else {
        false
    }
}

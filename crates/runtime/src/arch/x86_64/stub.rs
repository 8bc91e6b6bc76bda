//! The x86_64 abort-handler stub and its register save layout.
//!
//! Each sequence's abort handler (emitted by `RSEQ_EMU_ASM_DEFINE_ABORT` in
//! C or [`rseq_emu_asm_define_abort!`](crate::rseq_emu_asm_define_abort) in
//! Rust) is, in the `__rseq_failure` section:
//!
//! ```text
//!         .byte 0x0f,0xb9,0x3d ; .long 0x53053053   signature (ud1, as librseq)
//! label:  <teardown>                                abort_ip (also `9999:`)
//!         lea -128(%rsp),%rsp                       skip the red zone (no flags)
//!         call rseq_emu_abort_stub                  pushes R
//! R:      nopl (9999b - (R+3))(%rax)                7 bytes: says where abort_ip is
//!         lea 128(%rsp),%rsp
//!         jmp abort_label                           native retry, as without the engine
//! ```
//!
//! `rseq_emu_abort_stub` saves rflags and every GPR into a [`Frame`] just
//! below the return address, clears DF and AC, aligns the stack, and calls
//! [`rseq_emu_on_abort`]. On 0 it restores everything and returns to `R`
//! (native retry: the `nopl` and `lea` change no flags); on 1 the engine has
//! replaced the registers, the flags and the return address (now the exit
//! ip) and the stub leaves with `ret $128`, which lands at the exit with
//! `%rsp` exactly as at the abort. Nothing is ever written into the 128
//! bytes below the sequence's `%rsp`.

use rseq_emu_x86_64::X86State;

/// Bytes of the site code from the end of the teardown to `R`:
/// `lea -128(%rsp),%rsp` (5) + `call rel32` (5).
pub const SITE_PROLOGUE: u64 = 10;

/// The registers as the stub saved them. `gpr` is in encoding order; the
/// `rsp` slot is not written by the stub (the engine derives `%rsp` from
/// the frame's address).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    /// rax, rcx, rdx, rbx, (rsp slot), rbp, rsi, rdi, r8..r15.
    pub gpr: [u64; 16],
    /// rflags as `pushfq` saw them.
    pub rflags: u64,
    /// The return address `R` into the site; on resume, the exit ip.
    pub ret: u64,
}

impl Frame {
    /// `%rsp` of the sequence at the abort (after the teardown).
    pub fn sequence_rsp(&self) -> u64 {
        self as *const Frame as u64 + std::mem::size_of::<Frame>() as u64 + 128
    }

    /// abort_ip, read from the `nopl` displacement at `R`.
    ///
    /// # Safety
    /// The frame was built by `rseq_emu_abort_stub` called from a site
    /// emitted by the abort macros (so `R..R+7` is that `nopl`).
    pub unsafe fn abort_ip(&self) -> u64 {
        // SAFETY: the caller's contract: R+3 holds a 4-byte displacement in
        // the site code that just called the stub.
        let disp = unsafe { std::ptr::read_unaligned((self.ret + 3) as *const i32) };
        (self.ret + 3).wrapping_add(disp as i64 as u64)
    }

    /// `[abort_ip, end)` of the teardown.
    ///
    /// # Safety
    /// As for [`Frame::abort_ip`].
    pub unsafe fn teardown(&self) -> (u64, u64) {
        // SAFETY: the caller's contract.
        let a = unsafe { self.abort_ip() };
        (a, self.ret.wrapping_sub(SITE_PROLOGUE))
    }

    /// The register state to emulate from (`rip` left 0).
    pub fn state(&self) -> X86State {
        let mut s = X86State {
            gpr: self.gpr,
            rip: 0,
            rflags: self.rflags,
            fs_base: super::thread_pointer() as u64,
            gs_base: 0,
        };
        s.gpr[rseq_emu_x86_64::reg::RSP] = self.sequence_rsp();
        s
    }

    /// Resume at `ip` with `s`'s registers and flags (`%rsp` must be the
    /// sequence's own, checked by the caller).
    pub fn set_resume(&mut self, ip: u64, s: &X86State) {
        let rsp = self.gpr[rseq_emu_x86_64::reg::RSP];
        self.gpr = s.gpr;
        self.gpr[rseq_emu_x86_64::reg::RSP] = rsp;
        // Only the status flags and DF come from the emulation; the others
        // (TF, AC, ID, ...) stay what the thread had.
        const EMU: u64 = rseq_emu_x86_64::flags::STATUS | rseq_emu_x86_64::flags::DF;
        self.rflags = (self.rflags & !EMU) | (s.rflags & EMU);
        self.ret = ip;
    }
}

std::arch::global_asm!(
    r#"
// Pop the frame the stub pushed (the %rsp slot is skipped: %rsp comes back
// from the frame address) and the flags.
.macro RSEQ_EMU_RESTORE
    pop %rax
    pop %rcx
    pop %rdx
    pop %rbx
    lea 8(%rsp), %rsp
    pop %rbp
    pop %rsi
    pop %rdi
    pop %r8
    pop %r9
    pop %r10
    pop %r11
    pop %r12
    pop %r13
    pop %r14
    pop %r15
    popfq
.endm
    .text
    .globl rseq_emu_abort_stub
    .hidden rseq_emu_abort_stub
    .type rseq_emu_abort_stub, @function
    .p2align 4
rseq_emu_abort_stub:
    pushfq
    push %r15
    push %r14
    push %r13
    push %r12
    push %r11
    push %r10
    push %r9
    push %r8
    push %rdi
    push %rsi
    push %rbp
    lea -8(%rsp), %rsp
    push %rbx
    push %rdx
    push %rcx
    push %rax
    // The engine is ordinary code: DF clear (the ABI) and AC clear (with
    // AC set, an unaligned access of the engine or of its merged commit
    // checks would raise SIGBUS). Both come back with the popfq.
    pushfq
    andl $0xfffbfbff, (%rsp)
    popfq
    mov %rsp, %rbx
    mov %rsp, %rdi
    and $-16, %rsp
    call rseq_emu_on_abort
    mov %rbx, %rsp
    test %eax, %eax
    jnz 1f
    RSEQ_EMU_RESTORE
    ret
1:
    RSEQ_EMU_RESTORE
    ret $128
    .size rseq_emu_abort_stub, . - rseq_emu_abort_stub
.purgem RSEQ_EMU_RESTORE
"#,
    options(att_syntax)
);

/// Called by `rseq_emu_abort_stub` with the saved frame: 0 = native retry
/// (frame untouched), 1 = resume at `frame.ret` with the frame's registers.
///
/// # Safety
/// Only the stub calls this, with a frame it built.
#[no_mangle]
pub unsafe extern "C" fn rseq_emu_on_abort(frame: *mut Frame) -> u32 {
    // SAFETY: the stub passes its own frame.
    let frame = unsafe { &mut *frame };
    // SAFETY: called from a macro-emitted site.
    let (abort_ip, teardown_end) = unsafe { frame.teardown() };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::abort::on_abort(abort_ip, teardown_end, frame)
    }));
    u32::from(matches!(r, Ok(true)))
}

/// The abort handler for a sequence in a Rust `asm!` block (AT&T or Intel
/// syntax alike: the stub code is emitted as bytes and labels), a drop-in
/// for librseq's `RSEQ_ASM_DEFINE_ABORT(label, teardown, abort_label)`.
///
/// Arguments are string literals: `label` is the abort_ip label (the macro
/// also defines the numeric label `9999` there; do not use it yourself; the
/// descriptor's `abort_ip` must point to it), `teardown` is code run before
/// both a native retry and the engine (it must restore every register the
/// section modifies and reads on entry; see docs/runtime.md), and
/// `abort_label` is where the native retry continues (an asm label such as
/// `"5f"`, or `"{abort}"` for an `asm!` `label` operand).
///
/// The descriptor must be in the `__rseq_cs` section (as librseq puts it)
/// of the object linking the engine, or registered with
/// [`section::register_descriptors`](crate::section::register_descriptors),
/// so the engine can find it from `abort_ip`.
///
/// ```
/// # #[cfg(target_arch = "x86_64")] {
/// use rseq_emu_runtime::{registration, rseq_emu_asm_define_abort, rseq_emu_asm_define_cs};
/// use rseq_emu_runtime::policy::{self, Mode};
///
/// /// Add 1 to `*v` if this thread runs on `cpu`; false when aborted.
/// fn rseq_incr(v: &mut u64, cpu: u32) -> bool {
///     let area = registration::area().unwrap();
///     let ok: u64;
///     // SAFETY: a self-contained rseq critical section on this thread's
///     // registered area; `v` is a valid u64.
///     unsafe {
///         std::arch::asm!(
///             rseq_emu_asm_define_cs!("3", "1f", "2f", "4f"),
///             "lea 3b(%rip), %rax",
///             "mov %rax, 8({area})",
///             "1:",
///             "cmp 4({area}), {cpu:e}",
///             "jne 4f",
///             "mov ({v}), %rax",
///             "add $1, %rax",
///             "mov %rax, ({v})",
///             "2:",
///             "mov $1, {ok}",
///             "jmp 6f",
///             rseq_emu_asm_define_abort!("4", "", "5f"),
///             "5:",
///             "xor {ok:e}, {ok:e}",
///             "6:",
///             area = in(reg) area,
///             cpu = in(reg) cpu,
///             v = in(reg) v as *mut u64,
///             ok = out(reg) ok,
///             out("rax") _,
///             options(att_syntax),
///         );
///     }
///     ok == 1
/// }
///
/// policy::set_mode(Mode::Always);
/// let mut v = 0u64;
/// for _ in 0..1000 {
///     // Aborted (preempted, or migrated since the cpu was read): the
///     // engine runs at the abort handler; it either completed the add
///     // (resumed at the exit, returns true) or asked for a native retry.
///     while !rseq_incr(&mut v, registration::current_cpu().unwrap()) {}
/// }
/// assert_eq!(v, 1000);
/// // A stale cpu jumps to the abort handler; the engine's emulation takes
/// // the same branch (the sequence's own abort), so it is a native retry.
/// let other = registration::current_cpu().unwrap() + 1000;
/// assert!(!rseq_incr(&mut v, other));
/// assert_eq!(v, 1000);
/// policy::set_mode(Mode::Auto);
/// # }
/// ```
#[macro_export]
macro_rules! rseq_emu_asm_define_abort {
    ($label:literal, $teardown:literal, $abort_label:literal) => {
        concat!(
            "\n.pushsection __rseq_failure, \"ax\"\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            $label,
            ":\n9999:\n",
            $teardown,
            "\n.byte 0x48, 0x8d, 0x64, 0x24, 0x80\n",
            "call rseq_emu_abort_stub\n",
            ".byte 0x0f, 0x1f, 0x80\n",
            ".long 9999b - .\n",
            ".byte 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00\n",
            "jmp ",
            $abort_label,
            "\n.popsection\n"
        )
    };
}

/// The descriptor of an `asm!`-defined critical section, as librseq's
/// `RSEQ_ASM_DEFINE_TABLE` lays it out: a 32-byte `struct rseq_cs`
/// `{0, 0, start_ip, post_commit_ip - start_ip, abort_ip}` at local label
/// `label` in `__rseq_cs`, and its address in `__rseq_cs_ptr_array` (where
/// `rseq-emu scan` and librseq-style tools look first). The engine finds
/// descriptors through `__rseq_cs`, so the pointer array may be dropped by
/// the linker's section garbage collection without harm. Expands to a
/// string literal for `asm!` (AT&T or Intel syntax alike).
///
/// `rseq_emu_asm_define_cs!("3", "1f", "2f", "4f")` — descriptor at `3:`,
/// section from `1:` to `2:`, abort handler at `4:` (see
/// [`rseq_emu_asm_define_abort!`](crate::rseq_emu_asm_define_abort) for a
/// whole example).
#[macro_export]
macro_rules! rseq_emu_asm_define_cs {
    ($label:literal, $start:literal, $post:literal, $abort:literal) => {
        concat!(
            "\n.pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            $label,
            ":\n.long 0, 0\n",
            ".quad ",
            $start,
            ", ",
            $post,
            " - ",
            $start,
            ", ",
            $abort,
            "\n.popsection\n",
            ".pushsection __rseq_cs_ptr_array, \"aw\"\n",
            ".quad ",
            $label,
            "b\n.popsection\n"
        )
    };
}

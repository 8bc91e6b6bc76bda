//! x86_64 parts of the engine: the executor types, the abort stub and its
//! register save layout ([`stub`]), the entry-register analysis
//! ([`regcheck`]) and the native commit section.

mod probe;
pub mod regcheck;
pub mod stub;

pub use probe::{fixup_probe_fault, probe_copy};

pub use stub::Frame;

/// The executor's architecture type.
pub type Isa = rseq_emu_x86_64::X86_64;
/// The executor's register state.
pub type State = rseq_emu_x86_64::X86State;

/// The stack pointer of a register state.
pub fn stack_pointer(s: &State) -> u64 {
    s.gpr[rseq_emu_x86_64::reg::RSP]
}

/// The GS segment base of this thread (`arch_prctl(ARCH_GET_GS)`).
pub fn gs_base() -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: ARCH_GET_GS (0x1004) writes one u64 to the pointer.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut v as *mut u64) };
    (r == 0).then_some(v)
}

/// Whether the section uses a `%gs:` memory operand (whose base the stub
/// does not capture).
pub fn uses_gs(p: &rseq_emu_core::Program<Isa>) -> bool {
    use rseq_emu_x86_64::{Opnd, Seg};
    p.insns().iter().any(|d| match &d.op {
        Ok(op) => [op.dst, op.src, op.src2]
            .iter()
            .any(|o| matches!(o, Opnd::Mem { m, .. } if m.seg == Seg::Gs)),
        Err(_) => false,
    })
}

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

/// One step of a commit plan, read by the native commit section: a check
/// (`op` 0: the `size` bytes at `addr` must equal `value`) or a store
/// (`op` 1: write the low `size` bytes of `value` to `addr`). Sizes 1, 2, 4
/// or 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    /// Address.
    pub addr: u64,
    /// Expected or stored value (little-endian, low `size` bytes).
    pub value: u64,
    /// 0 = check, 1 = store.
    pub op: u32,
    /// 1, 2, 4 or 8.
    pub size: u32,
}

/// What the native commit section reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitResult {
    /// Every check held and every store landed, the last one as the commit.
    Committed,
    /// A checked value changed; nothing after that check was stored.
    Mismatch,
    /// Not on the target CPU, or the kernel aborted the section.
    Aborted,
}

// The commit section, one copy per size of the final (commit) store and one
// without a store (validation only). Arguments (SysV): rdi = entries,
// rsi = number of entries run in the loop, rdx = rseq area, ecx = target
// cpu, r8 = the final store entry (unused by the check-only copy).
// Returns eax: 0 committed, 1 mismatch, 2 aborted.
std::arch::global_asm!(
    r#"
.macro RSEQ_EMU_COMMIT name, final
    .pushsection __rseq_cs, "aw"
    .balign 32
\name\()_cs:
    .long 0, 0
    .quad .Lstart\@, .Lpost\@ - .Lstart\@, .Labort\@
    .popsection
    .pushsection __rseq_cs_ptr_array, "aw"
    .quad \name\()_cs
    .popsection
    .text
    .globl \name
    .type \name, @function
    .p2align 4
\name:
    lea \name\()_cs(%rip), %rax
    mov %rax, 8(%rdx)
.Lstart\@:
    cmp 4(%rdx), %ecx
    jne .Lcpu\@
    test %rsi, %rsi
    jz .Lfinal\@
.Lloop\@:
    mov (%rdi), %r9
    mov 8(%rdi), %r10
    mov 20(%rdi), %r11d
    cmpl $0, 16(%rdi)
    jne .Lst\@
    cmp $8, %r11d
    je .Lc8\@
    cmp $4, %r11d
    je .Lc4\@
    cmp $2, %r11d
    je .Lc2\@
    cmp (%r9), %r10b
    jne .Lmis\@
    jmp .Lnext\@
.Lc2\@:
    cmp (%r9), %r10w
    jne .Lmis\@
    jmp .Lnext\@
.Lc4\@:
    cmp (%r9), %r10d
    jne .Lmis\@
    jmp .Lnext\@
.Lc8\@:
    cmp (%r9), %r10
    jne .Lmis\@
    jmp .Lnext\@
.Lst\@:
    cmp $8, %r11d
    je .Ls8\@
    cmp $4, %r11d
    je .Ls4\@
    cmp $2, %r11d
    je .Ls2\@
    mov %r10b, (%r9)
    jmp .Lnext\@
.Ls2\@:
    mov %r10w, (%r9)
    jmp .Lnext\@
.Ls4\@:
    mov %r10d, (%r9)
    jmp .Lnext\@
.Ls8\@:
    mov %r10, (%r9)
.Lnext\@:
    add $24, %rdi
    dec %rsi
    jnz .Lloop\@
.Lfinal\@:
    mov (%r8), %r9
    mov 8(%r8), %r10
    \final
.Lpost\@:
    movq $0, 8(%rdx)
    xor %eax, %eax
    ret
.Lmis\@:
    movq $0, 8(%rdx)
    mov $1, %eax
    ret
.Lcpu\@:
    movq $0, 8(%rdx)
    mov $2, %eax
    ret
    .long 0x53053053
.Labort\@:
    mov $2, %eax
    ret
    .size \name, . - \name
.endm

    RSEQ_EMU_COMMIT rseq_emu_commit_1, "mov %r10b, (%r9)"
    RSEQ_EMU_COMMIT rseq_emu_commit_2, "mov %r10w, (%r9)"
    RSEQ_EMU_COMMIT rseq_emu_commit_4, "mov %r10d, (%r9)"
    RSEQ_EMU_COMMIT rseq_emu_commit_8, "mov %r10, (%r9)"
    RSEQ_EMU_COMMIT rseq_emu_commit_0, "nop"
.purgem RSEQ_EMU_COMMIT
"#,
    options(att_syntax)
);

macro_rules! commit_sections {
    ($($name:ident),*) => {
        extern "C" {
            $(
                /// One copy of the commit section (see the asm above).
                fn $name(
                    e: *const PlanEntry,
                    n: u64,
                    area: *mut u8,
                    cpu: u32,
                    f: *const PlanEntry,
                ) -> u32;
            )*
        }
    };
}
commit_sections!(
    rseq_emu_commit_1,
    rseq_emu_commit_2,
    rseq_emu_commit_4,
    rseq_emu_commit_8,
    rseq_emu_commit_0
);

/// The final entry handed to the check-only copy (read, never stored).
static NO_STORE: PlanEntry = PlanEntry {
    addr: 0,
    value: 0,
    op: 0,
    size: 0,
};

/// Run the native commit section: every check, then every store, the last
/// store being the commit instruction, all inside one rseq critical section
/// on `cpu`. `entries` must list checks before stores.
///
/// # Safety
/// `area` is the calling thread's registered rseq area (signature
/// `RSEQ_SIG`); every address in `entries` is readable and every store
/// address writable (the logged emulation checked them).
pub unsafe fn commit(entries: &[PlanEntry], area: *mut u8, cpu: u32) -> CommitResult {
    let (body, fin) = match entries.last() {
        Some(l) if l.op == 1 => (&entries[..entries.len() - 1], l as *const PlanEntry),
        _ => (entries, &NO_STORE as *const PlanEntry),
    };
    let f = if std::ptr::eq(fin, &NO_STORE) {
        rseq_emu_commit_0
    } else {
        // SAFETY: fin points into `entries`.
        match unsafe { (*fin).size } {
            1 => rseq_emu_commit_1,
            2 => rseq_emu_commit_2,
            4 => rseq_emu_commit_4,
            _ => rseq_emu_commit_8,
        }
    };
    // SAFETY: the caller's contract; the asm reads `body.len()` entries.
    let r = unsafe { f(body.as_ptr(), body.len() as u64, area, cpu, fin) };
    match r {
        0 => CommitResult::Committed,
        1 => CommitResult::Mismatch,
        _ => CommitResult::Aborted,
    }
}

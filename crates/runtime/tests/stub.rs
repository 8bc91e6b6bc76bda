//! The abort stub end to end on the real kernel: sequences written with
//! `rseq_emu_asm_define_abort!` are made to abort deterministically (the
//! section sends itself a signal with `tgkill` while a flag is set; the
//! signal handler clears the flag; the kernel aborts the section at the
//! signal delivery). The engine, in `always` mode, then emulates the
//! section from its start with the registers the stub saved — the flag now
//! clear, it skips the `tgkill` — commits, and resumes at the exit.

#![cfg(target_arch = "x86_64")]

use rseq_emu_runtime::abort::{self, Last};
use rseq_emu_runtime::engine::Why;
use rseq_emu_runtime::policy::{self, Mode};
use rseq_emu_runtime::section::Refusal;
use rseq_emu_runtime::{registration, rseq_emu_asm_define_abort};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static FLAG: AtomicU32 = AtomicU32::new(0);
static HANDLED: AtomicU32 = AtomicU32::new(0);
/// [tgid, tid] for the section's tgkill (set by `setup` for this thread).
static IDS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
/// Tests share the process-wide mode.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn on_usr1(_: libc::c_int) {
    FLAG.store(0, Ordering::SeqCst);
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

fn setup() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: installs a handler that only touches atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    // SAFETY: getpid/gettid have no preconditions.
    unsafe {
        IDS[0].store(libc::getpid() as u32, Ordering::SeqCst);
        IDS[1].store(libc::syscall(libc::SYS_gettid) as u32, Ordering::SeqCst);
    }
    g
}

const CANARY: u64 = 0x5a5a_1234;

/// What the memcpy sequences use besides their registers.
#[repr(C)]
struct Ctx {
    v: *mut u64,
    newv: u64,
    scratch: [u64; 3],
}

/// Add `inc` to `*v` on `cpu`; while FLAG is set the section signals itself
/// first (and is aborted). Returns (ok, rax at the exit, the two red-zone
/// canaries read after the exit).
fn add_with_self_signal(v: &mut u64, inc: u64, cpu: u32) -> (bool, u64, u64, u64) {
    let area = registration::area().unwrap();
    let (ok, rax, c1, c2): (u64, u64, u64, u64);
    // SAFETY: an rseq critical section on this thread's area; every pointer
    // is valid; clobbered registers are declared; the red zone is free
    // (no `nostack`), and written only with canaries.
    unsafe {
        std::arch::asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 1f, 2f - 1f, 4f",
            ".popsection",
            "movq ${canary}, -8(%rsp)",
            "movq ${canary}, -128(%rsp)",
            "lea 3b(%rip), %rax",
            "mov %rax, 8({area})",
            "1:",
            "cmp 4({area}), {cpu:e}",
            "jne 4f",
            "cmpl $0, {flag}(%rip)",
            "je 7f",
            "mov $234, %eax", // tgkill
            "mov {ids}(%rip), %edi",
            "mov {ids}+4(%rip), %esi",
            "mov $10, %edx", // SIGUSR1
            "syscall",
            "7:",
            "mov ({v}), %rax",
            "add {inc}, %rax",
            "mov %rax, ({v})",
            "2:",
            "mov $1, {ok:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!("4", "", "5f"),
            "5:",
            "xor {ok:e}, {ok:e}",
            "6:",
            "mov -8(%rsp), {c1}",
            "mov -128(%rsp), {c2}",
            area = in(reg) area,
            cpu = in(reg) cpu,
            flag = sym FLAG,
            ids = sym IDS,
            v = in(reg) v as *mut u64,
            inc = in(reg) inc,
            canary = const CANARY,
            ok = lateout(reg) ok,
            c1 = lateout(reg) c1,
            c2 = lateout(reg) c2,
            out("rax") rax,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("rcx") _,
            out("r11") _,
            options(att_syntax),
        );
    }
    (ok == 1, rax, c1, c2)
}

#[test]
fn aborted_section_is_emulated_and_resumes_at_the_exit_with_its_registers() {
    let _g = setup();
    policy::set_mode(Mode::Always);
    let mut v = 40u64;
    let before = abort::stats();
    let mut done = false;
    for _ in 0..100 {
        FLAG.store(1, Ordering::SeqCst);
        let h = HANDLED.load(Ordering::SeqCst);
        let cpu = registration::current_cpu().unwrap();
        let (ok, rax, c1, c2) = add_with_self_signal(&mut v, 2, cpu);
        assert_eq!((c1, c2), (CANARY, CANARY), "red zone untouched");
        if ok && HANDLED.load(Ordering::SeqCst) > h {
            // The signal aborted the native run; the engine completed it.
            assert!(
                matches!(abort::last(), Some(Last::Emulated(_))),
                "{:?}",
                abort::last()
            );
            assert_eq!(v, 42);
            assert_eq!(rax, 42, "rax at the exit is the emulated one");
            done = true;
            break;
        }
        assert!(!ok, "a run that saw the signal cannot succeed natively");
    }
    policy::set_mode(Mode::Auto);
    assert!(done, "never emulated: {:?}", abort::last());
    assert!(abort::stats().emulated > before.emulated);
}

#[test]
fn never_mode_retries_natively_like_librseq() {
    let _g = setup();
    policy::set_mode(Mode::Never);
    let mut v = 0u64;
    FLAG.store(1, Ordering::SeqCst);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let cpu = registration::current_cpu().unwrap();
        if add_with_self_signal(&mut v, 1, cpu).0 {
            break;
        }
        assert!(attempts < 1000);
    }
    policy::set_mode(Mode::Auto);
    assert!(attempts >= 2, "the first attempt aborted");
    assert_eq!(abort::last(), Some(Last::Policy));
    assert_eq!(v, 1);
}

#[test]
fn the_sequences_own_abort_is_a_native_retry() {
    let _g = setup();
    policy::set_mode(Mode::Always);
    FLAG.store(0, Ordering::SeqCst);
    let mut v = 0u64;
    let other = registration::current_cpu().unwrap() + 1000;
    assert!(!add_with_self_signal(&mut v, 1, other).0);
    policy::set_mode(Mode::Auto);
    assert_eq!(abort::last(), Some(Last::Retry(Why::SequenceAbort)));
    assert_eq!(v, 0);
}

/// librseq's memcpy pattern: copy `len` bytes, then store `newv` to `*v`
/// as the commit; `src`, `dst`, `len` are inputs the section advances, and
/// the teardown (after the commit and in the abort handler) restores them
/// from scratch slots saved before the section.
fn memcpy_with_teardown(
    dst: &mut [u8],
    src: &[u8],
    v: &mut u64,
    newv: u64,
    cpu: u32,
) -> (bool, [u64; 3]) {
    let area = registration::area().unwrap();
    let mut ctx = Ctx {
        v,
        newv,
        scratch: [0; 3],
    };
    let ok: u64;
    let (mut s, mut d, mut l) = (
        src.as_ptr() as u64,
        dst.as_mut_ptr() as u64,
        src.len() as u64,
    );
    // SAFETY: as in add_with_self_signal; dst holds src.len() bytes.
    unsafe {
        std::arch::asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 1f, 2f - 1f, 4f",
            ".popsection",
            "mov {src}, 16({ctx})",
            "mov {dst}, 24({ctx})",
            "mov {len}, 32({ctx})",
            "lea 3b(%rip), %rax",
            "mov %rax, 8({area})",
            "1:",
            "cmp 4({area}), {cpu:e}",
            "jne 4f",
            "test {len}, {len}",
            "jz 333f",
            "222:",
            "movb ({src}), %al",
            "movb %al, ({dst})",
            "inc {src}",
            "inc {dst}",
            "dec {len}",
            "jnz 222b",
            "333:",
            "cmpl $0, {flag}(%rip)",
            "je 7f",
            "mov $234, %eax",
            "mov {ids}(%rip), %edi",
            "mov {ids}+4(%rip), %esi",
            "mov $10, %edx",
            "syscall",
            "7:",
            "mov 8({ctx}), %rax",
            "mov 0({ctx}), %rdi",
            "mov %rax, (%rdi)",
            "2:",
            "mov 32({ctx}), {len}",
            "mov 24({ctx}), {dst}",
            "mov 16({ctx}), {src}",
            "mov $1, {ok:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!(
                "4",
                "mov 32({ctx}), {len}\nmov 24({ctx}), {dst}\nmov 16({ctx}), {src}\n",
                "5f"
            ),
            "5:",
            "xor {ok:e}, {ok:e}",
            "6:",
            area = in(reg) area,
            cpu = in(reg) cpu,
            flag = sym FLAG,
            ids = sym IDS,
            ctx = in(reg) &mut ctx as *mut Ctx,
            src = inout(reg) s,
            dst = inout(reg) d,
            len = inout(reg) l,
            ok = lateout(reg) ok,
            out("rax") _,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("rcx") _,
            out("r11") _,
            options(att_syntax),
        );
    }
    (ok == 1, [s, d, l])
}

/// The same sequence without the teardown: the registers at the abort are
/// advanced, so the engine must refuse it.
fn memcpy_without_teardown(dst: &mut [u8], src: &[u8], v: &mut u64, newv: u64, cpu: u32) -> bool {
    let area = registration::area().unwrap();
    let mut ctx = Ctx {
        v,
        newv,
        scratch: [0; 3],
    };
    let ok: u64;
    // SAFETY: as above.
    unsafe {
        std::arch::asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 1f, 2f - 1f, 4f",
            ".popsection",
            "lea 3b(%rip), %rax",
            "mov %rax, 8({area})",
            "1:",
            "cmp 4({area}), {cpu:e}",
            "jne 4f",
            "test {len}, {len}",
            "jz 333f",
            "222:",
            "movb ({src}), %al",
            "movb %al, ({dst})",
            "inc {src}",
            "inc {dst}",
            "dec {len}",
            "jnz 222b",
            "333:",
            "cmpl $0, {flag}(%rip)",
            "je 7f",
            "mov $234, %eax",
            "mov {ids}(%rip), %edi",
            "mov {ids}+4(%rip), %esi",
            "mov $10, %edx",
            "syscall",
            "7:",
            "mov 8({ctx}), %rax",
            "mov 0({ctx}), %rdi",
            "mov %rax, (%rdi)",
            "2:",
            "mov $1, {ok:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!("4", "", "5f"),
            "5:",
            "xor {ok:e}, {ok:e}",
            "6:",
            area = in(reg) area,
            cpu = in(reg) cpu,
            flag = sym FLAG,
            ids = sym IDS,
            ctx = in(reg) &mut ctx as *mut Ctx,
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) dst.as_mut_ptr() => _,
            len = inout(reg) src.len() => _,
            ok = lateout(reg) ok,
            out("rax") _,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("rcx") _,
            out("r11") _,
            options(att_syntax),
        );
    }
    ok == 1
}

#[test]
fn memcpy_with_teardown_is_emulated() {
    let _g = setup();
    policy::set_mode(Mode::Always);
    let src: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut dst = vec![0u8; 200];
    let mut v = 0u64;
    let mut done = false;
    for _ in 0..100 {
        FLAG.store(1, Ordering::SeqCst);
        let h = HANDLED.load(Ordering::SeqCst);
        let cpu = registration::current_cpu().unwrap();
        let (ok, regs) = memcpy_with_teardown(&mut dst, &src, &mut v, 77, cpu);
        if ok && HANDLED.load(Ordering::SeqCst) > h {
            assert!(
                matches!(abort::last(), Some(Last::Emulated(_))),
                "{:?}",
                abort::last()
            );
            assert_eq!(dst, src);
            assert_eq!(v, 77);
            assert_eq!(
                regs,
                [src.as_ptr() as u64, dst.as_ptr() as u64, 200],
                "teardown after the exit restored the inputs"
            );
            done = true;
            break;
        }
    }
    policy::set_mode(Mode::Auto);
    assert!(done, "never emulated: {:?}", abort::last());
}

#[test]
fn memcpy_without_teardown_is_refused() {
    let _g = setup();
    policy::set_mode(Mode::Always);
    let src = vec![9u8; 64];
    let mut dst = vec![0u8; 64];
    let mut v = 0u64;
    FLAG.store(1, Ordering::SeqCst);
    let mut refused = false;
    for _ in 0..100 {
        let cpu = registration::current_cpu().unwrap();
        let ok = memcpy_without_teardown(&mut dst, &src, &mut v, 5, cpu);
        if !ok {
            if let Some(Last::Retry(Why::Refused(Refusal::EntryRegisters(_)))) = abort::last() {
                refused = true;
            }
        } else {
            break;
        }
    }
    policy::set_mode(Mode::Auto);
    assert!(refused, "{:?}", abort::last());
    assert_eq!(v, 5, "the native retry completed");
    assert_eq!(dst, src);
}

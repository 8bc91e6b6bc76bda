//! The abort stub end to end on the real kernel: sequences written with
//! `rseq_emu_asm_define_abort!` are made to abort deterministically (the
//! section sends itself a signal with `tgkill` while a flag is set; the
//! signal handler clears the flag; the kernel aborts the section at the
//! signal delivery). The engine, in `always` mode, then emulates the
//! section from its start with the registers the stub saved — the flag now
//! clear, it skips the `tgkill` — commits, and resumes at the exit.

#![cfg(target_arch = "x86_64")]

#[macro_use]
mod common;

use common::{until_engine_completes, with_mode, FLAG, HANDLED};
use rseq_emu_runtime::abort::{self, Last};
use rseq_emu_runtime::engine::Why;
use rseq_emu_runtime::policy::Mode;
use rseq_emu_runtime::section::Refusal;
use rseq_emu_runtime::{registration, rseq_emu_asm_define_abort, section};
use std::sync::atomic::Ordering;

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
        self_signal_asm!(
            area = area, cpu = cpu, rax = rax;
            "movq ${canary}, -8(%rsp)",
            "movq ${canary}, -128(%rsp)",
            cs_head!(),
            self_signal!(),
            "mov ({v}), %rax",
            "add {inc}, %rax",
            "mov %rax, ({v})",
            cs_tail!(),
            "mov -8(%rsp), {c1}",
            "mov -128(%rsp), {c2}",
            v = in(reg) v as *mut u64,
            inc = in(reg) inc,
            canary = const CANARY,
            ok = lateout(reg) ok,
            c1 = lateout(reg) c1,
            c2 = lateout(reg) c2
        );
    }
    (ok == 1, rax, c1, c2)
}

#[test]
fn aborted_section_is_emulated_and_resumes_at_the_exit_with_its_registers() {
    let _g = common::self_signal_setup();
    let mut v = 40u64;
    let before = abort::stats();
    let r = with_mode(Mode::Always, || {
        until_engine_completes(
            || {
                let cpu = registration::current_cpu().unwrap();
                let h = HANDLED.load(Ordering::SeqCst);
                let r = add_with_self_signal(&mut v, 2, cpu);
                assert_eq!((r.2, r.3), (CANARY, CANARY), "red zone untouched");
                // The armed section always signals itself, so it cannot
                // succeed natively: ok means the engine completed it.
                assert!(!r.0 || HANDLED.load(Ordering::SeqCst) > h);
                r
            },
            |r| r.0,
        )
    });
    let (_, rax, _, _) = r.unwrap_or_else(|| panic!("never emulated: {:?}", abort::last()));
    assert!(
        matches!(abort::last(), Some(Last::Emulated(_))),
        "{:?}",
        abort::last()
    );
    assert_eq!(v, 42);
    assert_eq!(rax, 42, "rax at the exit is the emulated one");
    assert!(abort::stats().emulated > before.emulated);
}

/// Many emulated completions of one section decode it once.
#[test]
fn a_section_is_decoded_once() {
    let _g = common::self_signal_setup();
    let mut v = 0u64;
    let mut emulated = 0;
    let mut decodes = None;
    with_mode(Mode::Always, || {
        for _ in 0..200 {
            FLAG.store(1, Ordering::SeqCst);
            let cpu = registration::current_cpu().unwrap();
            if add_with_self_signal(&mut v, 1, cpu).0
                && matches!(abort::last(), Some(Last::Emulated(_)))
            {
                emulated += 1;
                // Counted after the first emulation (which may decode).
                decodes.get_or_insert(section::decode_count());
                if emulated == 6 {
                    break;
                }
            }
        }
    });
    assert_eq!(emulated, 6, "{:?}", abort::last());
    assert_eq!(decodes, Some(section::decode_count()), "re-decoded");
}

fn cas_with_cmpfail(v: &mut u64, expect: u64, newv: u64, cpu: u32) -> (u64, u64) {
    let area = registration::area().unwrap();
    let (status, cmpfail): (u64, u64);
    // SAFETY: as in add_with_self_signal.
    unsafe {
        self_signal_asm!(
            area = area, cpu = cpu, rax = _;
            cs_head!(),
            self_signal!(),
            "cmp ({v}), {expect}",
            "jne 8f",
            "mov {newv}, ({v})",
            "2:",
            "xor {st:e}, {st:e}",
            "jmp 6f",
            "8:",
            "mov $1, {st:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!("4", "", "5f"),
            "5:",
            "mov $2, {st:e}",
            "6:",
            "lea 8b(%rip), {cf}",
            v = in(reg) v as *mut u64,
            expect = in(reg) expect,
            newv = in(reg) newv,
            st = lateout(reg) status,
            cf = lateout(reg) cmpfail
        );
    }
    (status, cmpfail)
}

/// The emulation reaches the cmpfail exit (the value changed meanwhile: the
/// signal handler is the "other thread"): its loads are validated and the
/// thread resumes at the cmpfail label, nothing stored.
#[test]
fn early_exit_resumes_at_the_cmpfail_label() {
    let _g = common::self_signal_setup();
    let mut v = 5u64;
    // expect 6 != 5: natively and emulated the compare fails.
    let r = with_mode(Mode::Always, || {
        until_engine_completes(
            || {
                v = 5;
                let cpu = registration::current_cpu().unwrap();
                cas_with_cmpfail(&mut v, 6, 9, cpu)
            },
            |&(status, _)| status == 1,
        )
    });
    let (_, cmpfail) = r.unwrap_or_else(|| panic!("{:?}", abort::last()));
    assert_eq!(abort::last(), Some(Last::Emulated(cmpfail)));
    assert_eq!(v, 5, "nothing stored");
}

#[test]
fn never_mode_retries_natively_like_librseq() {
    let _g = common::self_signal_setup();
    let mut v = 0u64;
    FLAG.store(1, Ordering::SeqCst);
    let mut attempts = 0;
    with_mode(Mode::Never, || loop {
        attempts += 1;
        let cpu = registration::current_cpu().unwrap();
        if add_with_self_signal(&mut v, 1, cpu).0 {
            break;
        }
        assert!(attempts < 1000);
    });
    assert!(attempts >= 2, "the first attempt aborted");
    assert_eq!(abort::last(), Some(Last::Policy));
    assert_eq!(v, 1);
}

#[test]
fn the_sequences_own_abort_is_a_native_retry() {
    let _g = common::self_signal_setup();
    FLAG.store(0, Ordering::SeqCst);
    let mut v = 0u64;
    let other = registration::current_cpu().unwrap() + 1000;
    let ok = with_mode(Mode::Always, || add_with_self_signal(&mut v, 1, other).0);
    assert!(!ok);
    assert_eq!(abort::last(), Some(Last::Retry(Why::SequenceAbort)));
    assert_eq!(v, 0);
}

/// librseq's memcpy pattern: copy `{len}` bytes from `{src}` to `{dst}`,
/// then store `ctx.newv` to `*ctx.v` as the commit. `src`, `dst`, `len`
/// are inputs the section advances. `$save` runs before the section,
/// `$after` after the commit, `$teardown` is the abort teardown.
macro_rules! memcpy_section {
    ($ctx:expr, $area:expr, $cpu:expr, $s:ident, $d:ident, $l:ident, $ok:ident,
     save: $save:literal, after: $after:literal, teardown: $teardown:literal) => {
        self_signal_asm!(
            area = $area, cpu = $cpu, rax = _;
            $save,
            cs_head!(),
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
            self_signal!(),
            "mov 8({ctx}), %rax",
            "mov 0({ctx}), %rdi",
            "mov %rax, (%rdi)",
            "2:",
            $after,
            "mov $1, {ok:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!("4", $teardown, "5f"),
            "5:",
            "xor {ok:e}, {ok:e}",
            "6:",
            ctx = in(reg) $ctx,
            src = inout(reg) $s,
            dst = inout(reg) $d,
            len = inout(reg) $l,
            ok = lateout(reg) $ok
        )
    };
}

/// Run the memcpy sequence. With `teardown`, the inputs are saved to
/// scratch slots before the section and restored from them after the
/// commit and in the abort teardown (librseq's contract); without it the
/// registers at the abort are advanced, so the engine must refuse it.
/// Returns (committed, the src/dst/len registers afterwards).
fn memcpy_then_store(
    dst: &mut [u8],
    src: &[u8],
    v: &mut u64,
    newv: u64,
    cpu: u32,
    teardown: bool,
) -> (bool, [u64; 3]) {
    let area = registration::area().unwrap();
    let mut ctx = Ctx {
        v,
        newv,
        scratch: [0; 3],
    };
    let c = &mut ctx as *mut Ctx;
    let ok: u64;
    let (mut s, mut d, mut l) = (
        src.as_ptr() as u64,
        dst.as_mut_ptr() as u64,
        src.len() as u64,
    );
    assert!(dst.len() >= src.len());
    // SAFETY: as in add_with_self_signal; dst holds src.len() bytes.
    unsafe {
        if teardown {
            memcpy_section!(c, area, cpu, s, d, l, ok,
                save: "mov {src}, 16({ctx})\nmov {dst}, 24({ctx})\nmov {len}, 32({ctx})\n",
                after: "mov 32({ctx}), {len}\nmov 24({ctx}), {dst}\nmov 16({ctx}), {src}\n",
                teardown: "mov 32({ctx}), {len}\nmov 24({ctx}), {dst}\nmov 16({ctx}), {src}\n");
        } else {
            memcpy_section!(c, area, cpu, s, d, l, ok, save: "", after: "", teardown: "");
        }
    }
    (ok == 1, [s, d, l])
}

#[test]
fn memcpy_with_teardown_is_emulated() {
    let _g = common::self_signal_setup();
    let src: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut dst = vec![0u8; 200];
    let mut v = 0u64;
    let r = with_mode(Mode::Always, || {
        until_engine_completes(
            || {
                let cpu = registration::current_cpu().unwrap();
                memcpy_then_store(&mut dst, &src, &mut v, 77, cpu, true)
            },
            |r| r.0,
        )
    });
    let (_, regs) = r.unwrap_or_else(|| panic!("never emulated: {:?}", abort::last()));
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
}

#[test]
fn memcpy_without_teardown_is_refused() {
    let _g = common::self_signal_setup();
    let src = vec![9u8; 64];
    let mut dst = vec![0u8; 64];
    let mut v = 0u64;
    FLAG.store(1, Ordering::SeqCst);
    let mut refused = false;
    with_mode(Mode::Always, || {
        for _ in 0..100 {
            let cpu = registration::current_cpu().unwrap();
            if memcpy_then_store(&mut dst, &src, &mut v, 5, cpu, false).0 {
                break;
            }
            if let Some(Last::Retry(Why::Refused(Refusal::EntryRegisters(_)))) = abort::last() {
                refused = true;
            }
        }
    });
    assert!(refused, "{:?}", abort::last());
    assert_eq!(v, 5, "the native retry completed");
    assert_eq!(dst, src);
}

/// Copy bytes 1..4 of `src` to `dst` byte by byte, then add 1 to `*v`,
/// with the alignment-check flag (AC) set around the sequence, as a
/// program debugging its alignment does. The section's accesses are all
/// aligned; the engine's own code and its merged commit checks need not
/// be, so the stub must run the engine with AC clear.
fn copy_bytes_with_ac(src: &[u8; 8], dst: &mut [u8; 8], v: &mut u64, cpu: u32) -> bool {
    let area = registration::area().unwrap();
    let ok: u64;
    // SAFETY: as in add_with_self_signal; AC is cleared again before the
    // asm block ends.
    unsafe {
        self_signal_asm!(
            area = area, cpu = cpu, rax = _;
            "pushfq",
            "orl $0x40000, (%rsp)",
            "popfq",
            cs_head!(),
            self_signal!(),
            "movb 1({src}), %al",
            "movb %al, 1({dst})",
            "movb 2({src}), %al",
            "movb %al, 2({dst})",
            "movb 3({src}), %al",
            "movb %al, 3({dst})",
            "addq $1, ({v})",
            cs_tail!(),
            "pushfq",
            "andl $0xfffbffff, (%rsp)",
            "popfq",
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            v = in(reg) v as *mut u64,
            ok = lateout(reg) ok
        );
    }
    ok == 1
}

#[test]
fn alignment_check_flag_does_not_reach_the_engine() {
    let _g = common::self_signal_setup();
    let src = [0u8, 1, 2, 3, 4, 5, 6, 7];
    let mut dst = [0u8; 8];
    let mut v = 0u64;
    let r = with_mode(Mode::Always, || {
        until_engine_completes(
            || {
                let cpu = registration::current_cpu().unwrap();
                copy_bytes_with_ac(&src, &mut dst, &mut v, cpu)
            },
            |&ok| ok,
        )
    });
    assert!(r.is_some(), "never emulated: {:?}", abort::last());
    assert!(
        matches!(abort::last(), Some(Last::Emulated(_))),
        "{:?}",
        abort::last()
    );
    assert_eq!(dst, [0, 1, 2, 3, 0, 0, 0, 0]);
    assert_eq!(v, 1);
}

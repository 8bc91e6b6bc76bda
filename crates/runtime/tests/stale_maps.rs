//! The per-thread mapping cache can go stale: another thread unmaps or
//! protects a range after this thread cached it (in the engine's case: a
//! thread that preempted the emulation popped and freed a node whose
//! memory went back to the kernel — a native run would have been aborted
//! before following the stale pointer, the emulation follows it). A read
//! through such an entry must be a `MemFault` value (the engine then asks
//! for a native retry), never a SIGSEGV in the engine. Faults outside the
//! engine's reads must still reach the application's handler or kill the
//! process as before.
//!
//! Each case runs in a child process (this test binary re-run with
//! `RSEQ_EMU_STALE_CHILD` set), so a crash is a reported failure.

use rseq_emu_core::Memory;
use rseq_emu_runtime::memory::LiveMemory;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const PAGE: usize = 4096;

fn map(prot: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

/// Run `case` in a child process; its exit status.
fn child(case: &str) -> std::process::ExitStatus {
    if std::env::var("RSEQ_EMU_STALE_CHILD").is_ok() {
        unreachable!("nested child");
    }
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env("RSEQ_EMU_STALE_CHILD", "1")
        .status()
        .expect("re-run the test binary")
}

fn in_child() -> bool {
    std::env::var("RSEQ_EMU_STALE_CHILD").is_ok()
}

/// Child: cache a page, unmap it behind the cache's back, read again.
#[test]
fn stale_unmapped_read_is_a_fault_value() {
    if !in_child() {
        let st = child("stale_unmapped_read_is_a_fault_value");
        assert!(st.success(), "the engine's read faulted: {st:?}");
        return;
    }
    let p = map(libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: p is a fresh RW page.
    unsafe { *(p as *mut u64) = 7 };
    let mut m = LiveMemory;
    assert_eq!(m.read_u64(p as u64).unwrap(), 7, "cached readable");
    // SAFETY: unmaps the page this test mapped (another thread would).
    assert_eq!(unsafe { libc::munmap(p.cast(), PAGE) }, 0);
    let e = m.read_u64(p as u64).unwrap_err();
    assert_eq!(e.addr, p as u64);
    // A protected (PROT_NONE) page behind a stale "readable" entry too.
    let q = map(libc::PROT_READ);
    assert_eq!(m.read_u8(q as u64 + 5).unwrap(), 0);
    // SAFETY: q is this test's page.
    let r = unsafe { libc::mprotect(q.cast(), PAGE, libc::PROT_NONE) };
    assert_eq!(r, 0);
    assert!(m.read_u8(q as u64 + 5).is_err());
    // The cache holds a fresh view afterwards: an unaligned multi-byte
    // read still works where the memory is mapped.
    let r = map(libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: r is this test's RW page.
    unsafe { std::ptr::copy_nonoverlapping([1u8, 2, 3, 4, 5].as_ptr(), r.add(3), 5) };
    let mut b = [0u8; 5];
    m.read(r as u64 + 3, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4, 5]);
}

/// Child: after the engine's guard is in place, an application fault
/// (not an engine read) still kills the process with SIGSEGV.
#[test]
fn application_faults_still_kill() {
    if !in_child() {
        let st = child("application_faults_still_kill");
        assert_eq!(st.signal(), Some(libc::SIGSEGV), "{st:?}");
        return;
    }
    let p = map(libc::PROT_READ);
    let mut m = LiveMemory;
    assert_eq!(m.read_u8(p as u64).unwrap(), 0);
    // SAFETY: deliberately faults (PROT_NONE page): the child must die.
    unsafe {
        libc::mprotect(p.cast(), PAGE, libc::PROT_NONE);
        std::ptr::read_volatile(p);
    }
    std::process::exit(3);
}

static FIXED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn fix_page(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: a SIGSEGV's siginfo carries the fault address; make its page
    // readable and return (the instruction is retried).
    unsafe {
        let a = (*info).si_addr() as usize & !(PAGE - 1);
        libc::mprotect(a as *mut libc::c_void, PAGE, libc::PROT_READ);
    }
    FIXED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Child: an application handler installed before the engine still gets
/// the application's own faults (and fixes them), while the engine's
/// stale read is still a value.
#[test]
fn application_handler_is_chained() {
    if !in_child() {
        let st = child("application_handler_is_chained");
        assert!(st.success(), "{st:?}");
        return;
    }
    // SAFETY: installs a SA_SIGINFO handler that only calls mprotect.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = fix_page as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
    let p = map(libc::PROT_READ);
    let mut m = LiveMemory;
    assert_eq!(m.read_u8(p as u64).unwrap(), 0);
    // SAFETY: p is this test's page.
    let r = unsafe { libc::mprotect(p.cast(), PAGE, libc::PROT_NONE) };
    assert_eq!(r, 0);
    assert!(m.read_u8(p as u64).is_err(), "engine read: a value");
    assert_eq!(FIXED.load(std::sync::atomic::Ordering::SeqCst), 0);
    // SAFETY: faults once; the application's handler makes it readable.
    let v = unsafe { std::ptr::read_volatile(p) };
    assert_eq!(v, 0);
    assert_eq!(FIXED.load(std::sync::atomic::Ordering::SeqCst), 1);
}

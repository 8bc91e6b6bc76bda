//! Fault-safe reads of this process's memory for the emulation.
//!
//! The emulation follows pointers it loaded; unlike a native run, it is not
//! aborted when another thread on the CPU changes them meanwhile (the
//! commit's checks reject the result later). So it can read memory that
//! was freed and returned to the kernel after its mapping-cache check — a
//! race no cache can close. Reads therefore go through one copy routine
//! whose faults a SIGSEGV/SIGBUS handler turns into a return value (the
//! kernel's exception-table technique), at no cost when nothing faults.
//!
//! The handler is installed process-wide on the first read, chaining to
//! the handler that was there (the previous `SA_SIGINFO` or plain handler
//! is called with the same arguments; a default or ignored disposition is
//! restored and the fault re-executed, so it kills as before). Until it is
//! installed (or while another thread installs it) a read uses
//! `process_vm_readv`, fault-safe and slower. An application that installs
//! its own SIGSEGV handler later replaces the guard: engine reads then
//! fault into that handler as plain loads would; docs/runtime.md.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, Ordering};

const NONE: u8 = 0;
const INSTALLING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(NONE);

/// The dispositions found for SIGSEGV and SIGBUS, written once before the
/// guard is installed, read only by the handler afterwards.
struct Old(UnsafeCell<[std::mem::MaybeUninit<libc::sigaction>; 2]>);
// SAFETY: written once by the installing thread before STATE becomes READY
// and before the handler can run; read-only afterwards.
unsafe impl Sync for Old {}
static OLD: Old = Old(UnsafeCell::new([std::mem::MaybeUninit::zeroed(); 2]));

const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext to a SA_SIGINFO handler.
    if unsafe { crate::arch::fixup_probe_fault(uc) } {
        return;
    }
    let i = usize::from(sig == libc::SIGBUS);
    // SAFETY: OLD was written before this handler was installed.
    let old = unsafe { (*OLD.0.get())[i].assume_init_ref() };
    let h = old.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Back to the default disposition: a fault re-executes and kills
        // as it would have without the engine; a sent signal is re-raised
        // (blocked until this handler returns).
        // SAFETY: async-signal-safe calls with valid arguments.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(sig);
            }
        }
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler, called as the kernel would.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, uc);
    } else {
        // SAFETY: the previous plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// Install the guard; false if another thread (or an interrupted call on
/// this one) is installing it.
fn install() -> bool {
    match STATE.compare_exchange(NONE, INSTALLING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(s) => return s == READY,
    }
    // SAFETY: sigaction with valid pointers; OLD is written only here, by
    // the one thread that won the exchange, before the handler exists.
    unsafe {
        let old = &mut *OLD.0.get();
        for (k, &sig) in SIGNALS.iter().enumerate() {
            libc::sigaction(sig, std::ptr::null(), old[k].as_mut_ptr());
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fault as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        for &sig in &SIGNALS {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    STATE.store(READY, Ordering::Release);
    true
}

/// Read `buf.len()` bytes at `addr` of this process; false when (part of)
/// the range is not readable. Never raises SIGSEGV/SIGBUS in the caller.
pub fn read(addr: u64, buf: &mut [u8]) -> bool {
    if STATE.load(Ordering::Acquire) == READY || install() {
        return crate::arch::probe_copy(buf, addr);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: reads this process's memory into `buf`; the kernel checks
    // the remote range.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

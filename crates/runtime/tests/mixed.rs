//! Native and emulated completions of one sequence on the same per-CPU
//! counters: 4 threads per CPU increment the counter of the CPU they run
//! on with a sequence that spins a few µs inside its critical section before
//! the load and the commit store, under a signal storm. Many native runs
//! abort; in `always` mode each abort is completed by the engine (emulate,
//! commit on that CPU) while other threads commit natively on the same
//! CPU. The totals must be exact and the engine must have completed some.

#![cfg(target_arch = "x86_64")]

use rseq_emu_runtime::policy::{self, Mode};
use rseq_emu_runtime::{abort, registration, rseq_emu_asm_define_abort};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[repr(align(64))]
struct Slot(AtomicU64);

/// Spin `spins` iterations, then add 1 to `*v`, on `cpu`. True when
/// committed (natively or by the engine), false for a native retry.
fn spin_then_incr(v: *mut u64, cpu: u32, spins: u64) -> bool {
    let area = registration::area().unwrap();
    let ok: u64;
    // SAFETY: an rseq critical section on this thread's area; `v` points
    // to a live slot.
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
            "mov {spins}, %rcx",
            "9:",
            "dec %rcx",
            "jnz 9b",
            "mov ({v}), %rax",
            "add $1, %rax",
            "mov %rax, ({v})",
            "2:",
            "mov $1, {ok:e}",
            "jmp 6f",
            rseq_emu_asm_define_abort!("4", "", "5f"),
            "5:",
            "xor {ok:e}, {ok:e}",
            "6:",
            area = in(reg) area,
            cpu = in(reg) cpu,
            spins = in(reg) spins,
            v = in(reg) v,
            ok = lateout(reg) ok,
            out("rax") _,
            out("rcx") _,
            options(att_syntax),
        );
    }
    ok == 1
}

extern "C" fn on_signal(_: libc::c_int) {}

#[test]
fn native_and_emulated_commits_mix_exactly() {
    // SAFETY: a no-op handler.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_signal as extern "C" fn(libc::c_int) as usize,
        );
    }
    policy::set_mode(Mode::Always);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nthreads = 4 * ncpu;
    let per_thread = 3000u64;
    let slots: Arc<Vec<Slot>> = Arc::new((0..1024).map(|_| Slot(AtomicU64::new(0))).collect());
    let finished = Arc::new(AtomicUsize::new(0));
    let before = abort::stats();
    let mut handles = Vec::new();
    let mut pthreads = Vec::new();
    for _ in 0..nthreads {
        let (slots, finished) = (slots.clone(), finished.clone());
        let h = std::thread::spawn(move || {
            for _ in 0..per_thread {
                loop {
                    let cpu = registration::current_cpu().unwrap();
                    if spin_then_incr(slots[cpu as usize].0.as_ptr(), cpu, 3000) {
                        break;
                    }
                }
            }
            finished.fetch_add(1, Ordering::SeqCst);
        });
        use std::os::unix::thread::JoinHandleExt;
        pthreads.push(h.as_pthread_t());
        handles.push(h);
    }
    // Joined only after the storm, so every pthread_t stays valid.
    while finished.load(Ordering::SeqCst) < nthreads {
        for &t in &pthreads {
            // SAFETY: a live or exited-but-unjoined thread.
            unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    for h in handles {
        h.join().unwrap();
    }
    policy::set_mode(Mode::Auto);
    let total: u64 = slots.iter().map(|s| s.0.load(Ordering::SeqCst)).sum();
    let s = abort::stats();
    eprintln!(
        "aborts {} emulated {} of {} ops",
        s.aborts - before.aborts,
        s.emulated - before.emulated,
        nthreads as u64 * per_thread
    );
    assert_eq!(total, nthreads as u64 * per_thread);
    assert!(s.emulated > before.emulated, "no emulated completion");
}

//! Native and emulated completions of one sequence on the same per-CPU
//! counters: 4 threads per CPU increment the counter of the CPU they run
//! on with a sequence that spins a few µs inside its critical section before
//! the load and the commit store, under a signal storm. Many native runs
//! abort; in `always` mode each abort is completed by the engine (emulate,
//! commit on that CPU) while other threads commit natively on the same
//! CPU. The totals must be exact and the engine must have completed some.

#![cfg(target_arch = "x86_64")]

#[macro_use]
mod common;

use rseq_emu_runtime::policy::Mode;
use rseq_emu_runtime::{abort, registration};
use std::sync::atomic::{AtomicU64, Ordering};
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
            cs_head!(),
            "mov {spins}, %rcx",
            "9:",
            "dec %rcx",
            "jnz 9b",
            "mov ({v}), %rax",
            "add $1, %rax",
            "mov %rax, ({v})",
            cs_tail!(),
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

#[test]
fn native_and_emulated_commits_mix_exactly() {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nthreads = 4 * ncpu;
    let per_thread = 3000u64;
    let slots: Arc<Vec<Slot>> = Arc::new((0..1024).map(|_| Slot(AtomicU64::new(0))).collect());
    let before = abort::stats();
    let work = {
        let slots = slots.clone();
        move || {
            for _ in 0..per_thread {
                loop {
                    let cpu = registration::current_cpu().unwrap();
                    if spin_then_incr(slots[cpu as usize].0.as_ptr(), cpu, 3000) {
                        break;
                    }
                }
            }
        }
    };
    common::with_mode(Mode::Always, || {
        common::under_signal_storm(nthreads, 50, work)
    });
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

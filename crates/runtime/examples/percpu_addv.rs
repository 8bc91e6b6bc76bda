//! percpu_addv, the API sketched in the 2017 cpu_opv discussion, in Rust:
//! try the rseq add (an `asm!` critical section whose abort handler is
//! `rseq_emu_asm_define_abort!`), and fall back to the rseq-emu engine
//! instead of the cpu_opv system call.
//!
//! 4 threads per CPU, `PER_THREAD` adds each (every 64th for another CPU,
//! which only the fallback can complete), a signal storm at the workers.
//! Prints `total=<n> expected=<n> aborts=<n> emulated=<n>` and exits 1 when
//! the total is not exact. `RSEQ_EMU_MODE` / `RSEQ_EMU_THRESHOLD` apply.

#[cfg(target_arch = "x86_64")]
mod imp {
    use rseq_emu_core::Memory;
    use rseq_emu_runtime::engine::{complete, Completion};
    use rseq_emu_runtime::{abort, policy, registration, rseq_emu_asm_define_abort};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    const PER_THREAD: u64 = 100_000;

    /// One counter per CPU, each on its own cache line.
    #[repr(align(64))]
    struct Slot(AtomicU64);

    /// The rseq add: true when it committed (natively, or completed by the
    /// engine at its abort handler), false when aborted and left to a
    /// native retry.
    fn rseq_addv(v: *mut u64, count: u64, cpu: u32) -> bool {
        let Ok(area) = registration::area() else {
            return false;
        };
        let ok: u64;
        // SAFETY: an rseq critical section on this thread's registered
        // area; `v` points to a live per-CPU slot.
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
                "add {count}, ({v})",
                "2:",
                "mov $1, {ok:e}",
                "jmp 6f",
                rseq_emu_asm_define_abort!("4", "", "5f"),
                "5:",
                "xor {ok:e}, {ok:e}",
                "6:",
                area = in(reg) area,
                cpu = in(reg) cpu,
                count = in(reg) count,
                v = in(reg) v,
                ok = lateout(reg) ok,
                out("rax") _,
                options(att_syntax),
            );
        }
        ok == 1
    }

    /// The engine's completion of the same add on `cpu` (migrating there).
    fn engine_addv(v: *mut u64, count: u64, cpu: u32) -> bool {
        let addr = v as u64;
        matches!(
            complete(cpu, |m| {
                let x = m.read_u64(addr).ok()?;
                m.write_u64(addr, x.wrapping_add(count)).ok()
            }),
            Ok(Completion::Done { .. })
        )
    }

    #[inline]
    fn percpu_addv(v: *mut u64, count: u64, cpu: u32) -> bool {
        rseq_addv(v, count, cpu) || engine_addv(v, count, cpu)
    }

    extern "C" fn on_signal(_: libc::c_int) {}

    pub fn main() -> std::process::ExitCode {
        if let Err(e) = policy::init_from_env() {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
        // SAFETY: a no-op handler.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                on_signal as extern "C" fn(libc::c_int) as usize,
            );
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let nthreads = 4 * ncpu;
        let slots: Arc<Vec<Slot>> = Arc::new((0..ncpu).map(|_| Slot(AtomicU64::new(0))).collect());
        let finished = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        let mut pthreads = Vec::new();
        for _ in 0..nthreads {
            let (slots, finished) = (slots.clone(), finished.clone());
            let h = std::thread::spawn(move || {
                let mut ok = true;
                for i in 0..PER_THREAD {
                    let Ok(mut cpu) = registration::current_cpu() else {
                        ok = false;
                        break;
                    };
                    if i % 64 == 63 {
                        cpu = (cpu + 1) % ncpu as u32;
                    }
                    let v = slots[cpu as usize].0.as_ptr();
                    ok &= percpu_addv(v, 1, cpu);
                }
                finished.fetch_add(1, Ordering::SeqCst);
                ok
            });
            use std::os::unix::thread::JoinHandleExt;
            pthreads.push(h.as_pthread_t());
            handles.push(h);
        }
        // Threads are joined only after the storm ends, so every
        // pthread_t stays valid.
        while finished.load(Ordering::SeqCst) < nthreads {
            for &t in &pthreads {
                // SAFETY: `t` is a live or exited-but-unjoined thread.
                unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let all_ok = handles.into_iter().all(|h| h.join().unwrap_or(false));
        let total: u64 = slots.iter().map(|s| s.0.load(Ordering::SeqCst)).sum();
        let expected = nthreads as u64 * PER_THREAD;
        let s = abort::stats();
        println!(
            "total={total} expected={expected} aborts={} emulated={}",
            s.aborts, s.emulated
        );
        if all_ok && total == expected {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn main() -> std::process::ExitCode {
    imp::main()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("percpu_addv: the abort stub is x86_64-only (see docs/runtime.md)");
}

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
    use rseq_emu_runtime::{
        abort, policy, registration, rseq_emu_asm_define_abort, rseq_emu_asm_define_cs,
    };
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
                rseq_emu_asm_define_cs!("3", "1f", "2f", "4f"),
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
        // The CPUs this process may run on (ids need not be contiguous).
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
        let allowed: Vec<u32> = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .map(|c| c as u32)
                .collect()
        };
        let allowed = Arc::new(allowed);
        let ncpu = allowed.len().max(1);
        let nthreads = 4 * ncpu;
        let max_id = allowed.iter().copied().max().unwrap_or(0) as usize;
        let slots: Arc<Vec<Slot>> =
            Arc::new((0..=max_id).map(|_| Slot(AtomicU64::new(0))).collect());
        let finished = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        let mut pthreads = Vec::new();
        for _ in 0..nthreads {
            let (slots, finished, allowed) = (slots.clone(), finished.clone(), allowed.clone());
            let h = std::thread::spawn(move || {
                let mut ok = true;
                for i in 0..PER_THREAD {
                    let Ok(mut cpu) = registration::current_cpu() else {
                        ok = false;
                        break;
                    };
                    if i % 64 == 63 {
                        let k = allowed.iter().position(|&c| c == cpu).unwrap_or(0);
                        cpu = allowed[(k + 1) % allowed.len()];
                    }
                    let Some(slot) = slots.get(cpu as usize) else {
                        ok = false;
                        break;
                    };
                    let v = slot.0.as_ptr();
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
            "ncpu={ncpu} total={total} expected={expected} aborts={} emulated={}",
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

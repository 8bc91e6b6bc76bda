//! Measures the `auto` threshold (release build:
//! `cargo run --release -p rseq-emu-runtime --example threshold [ms]`).
//!
//! One thread runs librseq's memcpy-then-store pattern (copy S bytes byte
//! by byte, then the commit store; teardown restores src/dst/len) in a
//! loop, a timer signal aimed at it every P µs. The abort handler is the
//! engine's; on a native retry the loop simply tries again. For each S, P
//! and threshold (and `never`, the plain native baseline) it prints the
//! completions per second and the fraction the engine completed.

#[cfg(target_arch = "x86_64")]
mod imp {
    use rseq_emu_runtime::policy::{self, Mode};
    use rseq_emu_runtime::{
        abort, registration, rseq_emu_asm_define_abort, rseq_emu_asm_define_cs,
    };
    use std::time::{Duration, Instant};

    #[repr(C)]
    struct Ctx {
        v: *mut u64,
        newv: u64,
        scratch: [u64; 3],
    }

    fn copy_then_store(dst: &mut [u8], src: &[u8], v: &mut u64, newv: u64, cpu: u32) -> bool {
        let Ok(area) = registration::area() else {
            return false;
        };
        let mut ctx = Ctx {
            v,
            newv,
            scratch: [0; 3],
        };
        let ok: u64;
        let n = src.len().min(dst.len());
        // SAFETY: an rseq critical section on this thread's area; src and
        // dst hold n bytes; clobbers declared.
        unsafe {
            std::arch::asm!(
                rseq_emu_asm_define_cs!("3", "1f", "2f", "4f"),
                // Fix the copy loop's code alignment (it sets the native
                // copy speed, which otherwise moved 2-3x between builds);
                // the padding runs before the section, never emulated.
                ".p2align 6",
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
                ctx = in(reg) &mut ctx as *mut Ctx,
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                len = inout(reg) n => _,
                ok = lateout(reg) ok,
                out("rax") _,
                out("rdi") _,
                options(att_syntax),
            );
        }
        ok == 1
    }

    extern "C" fn on_signal(_: libc::c_int) {}

    /// A per-thread interval timer sending SIGUSR1 to this thread.
    struct Timer(libc::timer_t);

    impl Timer {
        fn every(us: u64) -> Option<Timer> {
            // SAFETY: plain timer_create/settime calls with valid pointers.
            unsafe {
                let mut sev: libc::sigevent = std::mem::zeroed();
                sev.sigev_notify = libc::SIGEV_THREAD_ID;
                sev.sigev_signo = libc::SIGUSR1;
                sev.sigev_notify_thread_id = libc::syscall(libc::SYS_gettid) as i32;
                let mut t: libc::timer_t = std::mem::zeroed();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut t) != 0 {
                    return None;
                }
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: (us * 1000) as i64,
                };
                let spec = libc::itimerspec {
                    it_interval: ts,
                    it_value: ts,
                };
                libc::timer_settime(t, 0, &spec, std::ptr::null_mut());
                Some(Timer(t))
            }
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            // SAFETY: deletes the timer created in `every`.
            unsafe { libc::timer_delete(self.0) };
        }
    }

    /// (completions/s, fraction completed by the engine, attempts/s)
    fn run(
        size: usize,
        period_us: u64,
        mode: Mode,
        threshold: u32,
        dur: Duration,
    ) -> (f64, f64, f64) {
        policy::set_mode(mode);
        policy::set_threshold(threshold);
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size];
        let mut v = 0u64;
        let before = abort::stats();
        let _t = (period_us > 0).then(|| Timer::every(period_us)).flatten();
        let t0 = Instant::now();
        let (mut done, mut attempts) = (0u64, 0u64);
        while t0.elapsed() < dur {
            attempts += 1;
            let cpu = registration::current_cpu().unwrap_or(0);
            if copy_then_store(&mut dst, &src, &mut v, done + 1, cpu) {
                done += 1;
                assert_eq!(v, done);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        drop(_t);
        assert!(done == 0 || dst == src);
        let emulated = abort::stats().emulated - before.emulated;
        (
            done as f64 / secs,
            if done > 0 {
                emulated as f64 / done as f64
            } else {
                0.0
            },
            attempts as f64 / secs,
        )
    }

    pub fn main() {
        let ms: u64 = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let dur = Duration::from_millis(ms);
        // SAFETY: a no-op handler.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                on_signal as extern "C" fn(libc::c_int) as usize,
            );
        }
        let args: Vec<u64> = std::env::args()
            .skip(2)
            .filter_map(|s| s.parse().ok())
            .collect();
        if let [size, period, t] = args[..] {
            // One configuration (threshold 0 = never), for profiling.
            let mode = if t == 0 { Mode::Never } else { Mode::Auto };
            let (ops, frac, att) = run(size as usize, period, mode, t.max(1) as u32, dur);
            println!(
                "{ops:.0} completions/s, {:.1}% emulated, {att:.0} attempts/s, {} decodes, last {:?}, {:?}",
                frac * 100.0,
                rseq_emu_runtime::section::decode_count(),
                abort::last(),
                abort::stats()
            );
            return;
        }
        println!("size_B  signal_us  policy      completions/s  emulated  attempts/s");
        for size in [64usize, 1024, 16384, 65536] {
            for period in [0u64, 100, 50, 20] {
                let mut configs: Vec<(Mode, u32, String)> = vec![(Mode::Never, 1, "never".into())];
                for t in [1u32, 2, 4, 8, 16, 64] {
                    configs.push((Mode::Auto, t, format!("auto/{t}")));
                }
                for (mode, t, name) in configs {
                    let (ops, frac, att) = run(size, period, mode, t, dur);
                    println!(
                        "{size:6}  {period:9}  {name:10}  {ops:13.0}  {:7.1}%  {att:10.0}",
                        frac * 100.0
                    );
                }
            }
        }
        policy::set_mode(Mode::Auto);
        policy::set_threshold(policy::DEFAULT_THRESHOLD);
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    imp::main()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("threshold: x86_64 only");
}

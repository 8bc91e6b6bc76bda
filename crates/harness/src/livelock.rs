//! `rseq-emu livelock`: a long rseq critical section (copy `--bytes` bytes
//! one byte at a time, then commit one store) under a timer-signal storm
//! aimed at the thread running it (`timer_create` with `SIGEV_THREAD_ID`,
//! `it_interval` = `--interval-us`).
//!
//! Modes, run one after the other on a fresh thread each:
//! * `quiet`: native, no timer (the section's natural rate on this machine);
//! * `native`: native under the storm, retrying on every abort (what an
//!   application does without the engine: the section can livelock);
//! * `engine`: native under the storm, the runtime's abort stub as the
//!   abort handler, policy `auto` (by default: from the 256th consecutive
//!   abort, or once consecutive aborts have lasted 50 ms; then at every
//!   abort while the section stays hot; see docs/runtime.md). The engine
//!   emulates the section's own instructions (x86_64 executor) and commits
//!   natively, with signals blocked since the section loops.
//!
//! After every completion the destination is compared with the source
//! (whose first 8 bytes carry the operation number) and the committed word
//! with the operation number; a mismatch is a lost update.
//!
//! Counting: `attempts` = native runs of the section; `aborts` = native
//! aborts (in `engine` mode: every call of the runtime's abort stub,
//! whether answered by native retry or by an emulated completion);
//! `emulated` = operations the engine completed. An operation still
//! retrying at the deadline is not counted as completed; one inside the
//! engine at the deadline finishes first (the elapsed time includes it).
//! Exit status 1 when a completed copy was wrong or the `engine` mode
//! completed nothing.

use crate::stress::{frac, install_handler, percpu_seq, RET_ABORT};
use rseq_emu_runtime::{abort, policy, registration};
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `rseq-emu livelock`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Bytes copied inside the critical section.
    #[arg(long, default_value_t = 16384)]
    bytes: usize,
    /// Timer period in microseconds.
    #[arg(long, default_value_t = 10)]
    interval_us: u64,
    /// Seconds per mode.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Modes to run, in order (quiet, native, engine).
    #[arg(long, value_delimiter = ',', default_value = "quiet,native,engine")]
    modes: Vec<LMode>,
    /// Consecutive native aborts before the engine takes over (default:
    /// the runtime's policy default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threshold: Option<u32>,
}

/// A livelock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LMode {
    /// Native, no timer.
    Quiet,
    /// Native under the timer storm, retry on abort.
    Native,
    /// Native under the storm, the engine when the `auto` policy engages.
    Engine,
}

impl LMode {
    fn name(self) -> &'static str {
        match self {
            LMode::Quiet => "quiet",
            LMode::Native => "native",
            LMode::Engine => "engine",
        }
    }
}

/// What the section reads (pointer in rdx). Layout fixed for the asm.
#[repr(C)]
struct Job {
    /// 0: source.
    src: u64,
    /// 8: destination.
    dst: u64,
    /// 16: bytes to copy.
    len: u64,
    /// 24: where the commit stores `seq`.
    done: u64,
    /// 32: the operation number.
    seq: u64,
}

percpu_seq! {
    /// Copy `job.len` bytes from `job.src` to `job.dst` one at a time, then
    /// commit `job.seq` to `job.done`, on `cpu`: 0 or RET_ABORT. Every
    /// register the section writes is loaded inside it (no entry register
    /// is modified: the engine accepts it without a teardown).
    fn native_copy / engine_copy,
    (job: *const Job => "rdx")
    clobbers("rcx", "r8", "r9", "r10", "r11")
    [
        "mov (%rdx), %r10",
        "mov 8(%rdx), %rcx",
        "mov 16(%rdx), %r8",
        "mov $0, %r9d",
        "test %r8, %r8",
        "jz 8f",
        "7:",
        "movzbl (%r10,%r9), %r11d",
        "mov %r11b, (%rcx,%r9)",
        "inc %r9",
        "cmp %r8, %r9",
        "jb 7b",
        "8:",
        "mov 24(%rdx), %r11",
        "mov 32(%rdx), %r10",
        "mov %r10, (%r11)",
        "2:",
        "xor %eax, %eax",
    ]
}

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_timer(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// The timer signal: counted, SA_RESTART.
const TIMER_SIG: libc::c_int = libc::SIGUSR2;

/// A POSIX timer sending `TIMER_SIG` to the calling thread every
/// `interval`; deleted on drop.
struct ThreadTimer(libc::timer_t);

impl ThreadTimer {
    fn start(interval: Duration) -> std::io::Result<ThreadTimer> {
        // SAFETY: sigevent/itimerspec are plain data; timer_create gets
        // valid pointers; the target is the calling thread (gettid).
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = TIMER_SIG;
            sev.sigev_notify_thread_id = libc::syscall(libc::SYS_gettid) as libc::c_int;
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let t = ThreadTimer(id);
            let ts = libc::timespec {
                tv_sec: interval.as_secs() as libc::time_t,
                tv_nsec: interval.subsec_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(t)
        }
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer created by `start` (pending signals are
        // handled by the installed handler).
        unsafe {
            libc::timer_delete(self.0);
        }
    }
}

/// One mode's tallies.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    attempts: u64,
    aborts: u64,
    completions: u64,
    emulated: u64,
    lost: u64,
    signals: u64,
    seconds: f64,
}

/// Whether a completed operation `seq` is exact: the commit stored `seq`
/// (`done`) and the destination equals the source (whose first 8 bytes
/// carry `seq`, so a stale destination differs).
fn copy_is_exact(done: u64, seq: u64, src: &[u8], dst: &[u8]) -> bool {
    done == seq && src == dst
}

/// Run `mode` for `secs` on the calling thread.
fn run_mode(mode: LMode, bytes: usize, interval: Duration, secs: f64) -> Result<Tally, String> {
    let area = registration::area()
        .map_err(|e| e.to_string())?
        .cast::<u8>();
    let mut src: Vec<u8> = (0..bytes.max(8)).map(|i| (i * 7 + 3) as u8).collect();
    let mut dst = vec![0u8; src.len()];
    let done = AtomicU64::new(0);
    let mut job = Job {
        src: src.as_mut_ptr() as u64,
        dst: dst.as_mut_ptr() as u64,
        len: bytes as u64,
        done: done.as_ptr() as u64,
        seq: 0,
    };
    let copy = if mode == LMode::Engine {
        engine_copy
    } else {
        native_copy
    };
    policy::set_mode(if mode == LMode::Engine {
        policy::Mode::Auto
    } else {
        policy::Mode::Never
    });
    let mut t = Tally::default();
    let sig0 = SIGNALS.load(Ordering::Relaxed);
    let timer = match mode {
        LMode::Quiet => None,
        _ => Some(ThreadTimer::start(interval).map_err(|e| format!("timer_create: {e}"))?),
    };
    let stub0 = abort::stats();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    'ops: while Instant::now() < deadline {
        job.seq += 1;
        src[..8].copy_from_slice(&job.seq.to_le_bytes());
        job.src = src.as_mut_ptr() as u64;
        let before = abort::stats();
        loop {
            if Instant::now() >= deadline {
                break 'ops;
            }
            let cpu = registration::current_cpu().map_err(|e| e.to_string())?;
            t.attempts += 1;
            // SAFETY: `job` points at live buffers of `len` bytes and at
            // `done`; `area` is this thread's rseq registration.
            let r = unsafe { copy(area, cpu, &job) };
            if r != RET_ABORT {
                break;
            }
            if mode != LMode::Engine {
                t.aborts += 1;
            }
        }
        let emulated = abort::stats().emulated > before.emulated;
        t.completions += 1;
        t.emulated += u64::from(emulated);
        if !copy_is_exact(
            done.load(Ordering::Relaxed),
            job.seq,
            &src[..bytes],
            &dst[..bytes],
        ) {
            t.lost += 1;
        }
    }
    t.seconds = start.elapsed().as_secs_f64();
    drop(timer);
    // Engine mode: every abort went through the stub (answered native
    // retry, or completed by emulation).
    t.aborts += abort::stats().aborts - stub0.aborts;
    t.signals = SIGNALS.load(Ordering::Relaxed) - sig0;
    Ok(t)
}

/// Longest run per mode accepted (a day).
const MAX_SECONDS: f64 = 86_400.0;
/// Largest copy accepted (1 GiB; source and destination are allocated).
const MAX_BYTES: usize = 1 << 30;

/// Run the livelock workload.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    if a.interval_us == 0 {
        return Err("--interval-us must be at least 1".into());
    }
    if !(a.seconds > 0.0 && a.seconds <= MAX_SECONDS) {
        return Err(format!("--seconds must be positive and at most {MAX_SECONDS}").into());
    }
    if a.bytes > MAX_BYTES {
        return Err(format!("--bytes must be at most {MAX_BYTES}").into());
    }
    if let Some(t) = a.threshold {
        policy::set_threshold(t);
    }
    install_handler(TIMER_SIG, on_timer)?;
    let interval = Duration::from_micros(a.interval_us);
    let mut rows = Vec::new();
    for &mode in &a.modes {
        let (bytes, secs) = (a.bytes, a.seconds);
        let t = std::thread::spawn(move || run_mode(mode, bytes, interval, secs))
            .join()
            .map_err(|_| "livelock worker panicked")??;
        rows.push((mode, t));
    }
    let lost: u64 = rows.iter().map(|(_, t)| t.lost).sum();
    let engine_stuck = rows
        .iter()
        .any(|(m, t)| *m == LMode::Engine && t.completions == 0);
    let ok = lost == 0 && !engine_stuck;
    if a.json {
        let modes: Vec<_> = rows
            .iter()
            .map(|(m, t)| {
                serde_json::json!({
                    "mode": m.name(), "seconds": t.seconds, "signals": t.signals,
                    "attempts": t.attempts, "aborts": t.aborts, "completions": t.completions,
                    "ops_per_s": t.completions as f64 / t.seconds,
                    "fraction_emulated": frac(t.emulated, t.completions),
                    "emulated": t.emulated, "lost_updates": t.lost,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "bytes": a.bytes, "interval_us": a.interval_us, "threshold": policy::threshold(),
                "modes": modes, "ok": ok,
            })
        );
    } else {
        println!(
            "copy {} bytes byte by byte, then commit; timer signal every {} us aimed at the thread; auto threshold {}",
            a.bytes,
            a.interval_us,
            policy::threshold()
        );
        println!(
            "{:<7} {:>8} {:>10} {:>10} {:>12} {:>10} {:>9} {:>5}",
            "mode", "signals", "attempts", "aborts", "completions", "ops/s", "emulated", "lost"
        );
        for (m, t) in &rows {
            println!(
                "{:<7} {:>8} {:>10} {:>10} {:>12} {:>10.1} {:>8.1}% {:>5}",
                m.name(),
                t.signals,
                t.attempts,
                t.aborts,
                t.completions,
                t.completions as f64 / t.seconds,
                100.0 * frac(t.emulated, t.completions),
                t.lost
            );
        }
        if ok {
            println!("OK");
        } else if lost > 0 {
            println!("FAIL: {lost} completed copies were wrong");
        } else {
            println!("FAIL: the engine completed no operation");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_check_fails_on_a_wrong_commit_or_a_wrong_byte() {
        let src: Vec<u8> = (0..64).collect();
        assert!(copy_is_exact(5, 5, &src, &src.clone()));
        // The commit stored another operation's number (or none).
        assert!(!copy_is_exact(4, 5, &src, &src.clone()));
        assert!(!copy_is_exact(0, 5, &src, &src.clone()));
        // One byte of the copy missing or torn.
        for i in [0, 7, 8, 63] {
            let mut dst = src.clone();
            dst[i] ^= 1;
            assert!(!copy_is_exact(5, 5, &src, &dst), "byte {i}");
        }
    }
}

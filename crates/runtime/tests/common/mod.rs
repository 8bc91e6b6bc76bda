//! Test support shared by the runtime's integration tests: the asm pieces
//! every test sequence starts with, the self-signalling abort trigger, the
//! signal storm, the process-wide mode guard, and building and running the
//! percpu_addv examples. Each test target uses a part of it.

#![allow(dead_code, unused_macros)]

use rseq_emu_runtime::policy::{self, Mode};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The head of a librseq-style critical section in AT&T syntax: the
/// descriptor (start `1f`, post-commit `2f`, abort `4f`) in `__rseq_cs`,
/// `rseq_cs` set to it (clobbers `%rax`), the start label and the cpu
/// check against `{cpu}` on the area `{area}`.
macro_rules! cs_head {
    () => {
        concat!(
            rseq_emu_runtime::rseq_emu_asm_define_cs!("3", "1f", "2f", "4f"),
            "lea 3b(%rip), %rax\n",
            "mov %rax, 8({area})\n",
            "1:\n",
            "cmp 4({area}), {cpu:e}\n",
            "jne 4f\n",
        )
    };
}

/// The tail of a section started with [`cs_head!`]: `2:` (post_commit_ip)
/// sets `{ok}` to 1; the abort handler at `4:` (the engine's, with no
/// teardown) retries natively at `5:`, which sets `{ok}` to 0; both continue
/// at `6:`.
macro_rules! cs_tail {
    () => {
        concat!(
            "2:\n",
            "mov $1, {ok:e}\n",
            "jmp 6f\n",
            rseq_emu_runtime::rseq_emu_asm_define_abort!("4", "", "5f"),
            "5:\n",
            "xor {ok:e}, {ok:e}\n",
            "6:\n",
        )
    };
}

/// Inside a section: while `{flag}` is set, `tgkill(ids[0], ids[1],
/// SIGUSR1)` — the kernel aborts the section at the delivery (clobbers
/// rax, rdi, rsi, rdx, rcx, r11). Continues at the code after it.
macro_rules! self_signal {
    () => {
        concat!(
            "cmpl $0, {flag}(%rip)\n",
            "je 7f\n",
            "mov $234, %eax\n", // tgkill
            "mov {ids}(%rip), %edi\n",
            "mov {ids}+4(%rip), %esi\n",
            "mov $10, %edx\n", // SIGUSR1
            "syscall\n",
            "7:\n",
        )
    };
}

/// `asm!` (AT&T) for a section using [`cs_head!`] and [`self_signal!`]: the
/// caller's templates and operands, then `{area}`, `{cpu}`, `{flag}`,
/// `{ids}` and the registers the self-signal clobbers (`%rax` as `rax`:
/// `_` or a place for its value at the end).
macro_rules! self_signal_asm {
    (area = $area:expr, cpu = $cpu:expr, rax = $rax:tt; $($t:tt)*) => {
        std::arch::asm!(
            $($t)*,
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            flag = sym crate::common::FLAG,
            ids = sym crate::common::IDS,
            out("rax") $rax,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("rcx") _,
            out("r11") _,
            options(att_syntax),
        )
    };
}

/// Set while the next run of a self-signalling section must signal itself;
/// the SIGUSR1 handler clears it.
pub static FLAG: AtomicU32 = AtomicU32::new(0);
/// SIGUSR1 deliveries seen by the handler.
pub static HANDLED: AtomicU32 = AtomicU32::new(0);
/// `[tgid, tid]` for [`self_signal!`] (set by [`self_signal_setup`]).
pub static IDS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
/// Tests share the process-wide mode and the handler.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn clear_flag(_: libc::c_int) {
    FLAG.store(0, Ordering::SeqCst);
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn ignore(_: libc::c_int) {}

fn install(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: the handlers only touch atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Serialise with the other tests of this target, install the
/// flag-clearing SIGUSR1 handler and aim [`self_signal!`] at this thread.
pub fn self_signal_setup() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install(clear_flag);
    // SAFETY: getpid/gettid have no preconditions.
    unsafe {
        IDS[0].store(libc::getpid() as u32, Ordering::SeqCst);
        IDS[1].store(libc::syscall(libc::SYS_gettid) as u32, Ordering::SeqCst);
    }
    g
}

/// Run `f` in `mode`, back to `auto` afterwards (also when `f` panics).
pub fn with_mode<R>(mode: Mode, f: impl FnOnce() -> R) -> R {
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            policy::set_mode(Mode::Auto);
        }
    }
    let _back = Back;
    policy::set_mode(mode);
    f()
}

/// Up to 100 times: arm [`FLAG`], run `attempt`, and return its result the
/// first time `done` accepts it after the handler ran (the native run was
/// aborted by the signal, so the engine completed it).
pub fn until_engine_completes<R>(
    mut attempt: impl FnMut() -> R,
    done: impl Fn(&R) -> bool,
) -> Option<R> {
    for _ in 0..100 {
        FLAG.store(1, Ordering::SeqCst);
        let h = HANDLED.load(Ordering::SeqCst);
        let r = attempt();
        if done(&r) && HANDLED.load(Ordering::SeqCst) > h {
            return Some(r);
        }
    }
    None
}

/// `workers` threads run `work`, each to its end, while a SIGUSR1 storm
/// (no-op handler) hits every one of them every `period_us`.
pub fn under_signal_storm(workers: usize, period_us: u64, work: impl Fn() + Send + Sync + 'static) {
    use std::os::unix::thread::JoinHandleExt;
    install(ignore);
    let work = Arc::new(work);
    let running = Arc::new(AtomicU32::new(workers as u32));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (work, running) = (work.clone(), running.clone());
            std::thread::spawn(move || {
                work();
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let pthreads: Vec<_> = handles.iter().map(|h| h.as_pthread_t()).collect();
    // Joined only after the storm, so every pthread_t stays valid.
    while running.load(Ordering::SeqCst) > 0 {
        for &t in &pthreads {
            // SAFETY: a live or exited-but-unjoined thread.
            unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
        }
        std::thread::sleep(std::time::Duration::from_micros(period_us));
    }
    for h in handles {
        h.join().unwrap();
    }
}

/// The workspace root and its target directory.
pub fn root_and_target() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    (root, target)
}

/// `cargo build -p rseq-emu-runtime <args>` in the workspace.
pub fn cargo_build(root: &Path, args: &[&str]) {
    let st = Command::new(env!("CARGO"))
        .args(["build", "-p", "rseq-emu-runtime"])
        .args(args)
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(st.success(), "cargo build {args:?} failed");
}

/// The number after `name=` in the example's output.
pub fn field(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {text:?}"))
}

/// Run a percpu_addv example in `auto` and `always` mode: it must succeed,
/// its total must be exact, and with more than one CPU its cross-CPU adds
/// must reach the abort stub.
pub fn check_percpu_addv(exe: &Path) {
    for mode in ["auto", "always"] {
        let run = Command::new(exe)
            .env("RSEQ_EMU_MODE", mode)
            .output()
            .expect("run the example");
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "example failed in {mode} mode: {text} {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(field(&text, "total"), field(&text, "expected"), "{text}");
        assert!(field(&text, "expected") > 0);
        if field(&text, "ncpu") > 1 {
            assert!(
                field(&text, "aborts") > 0,
                "the cross-CPU adds reach the abort stub: {text}"
            );
        }
        eprintln!("{mode}: {text}");
    }
}

//! `rseq-emu bench`: side by side in one run, on one librseq-style
//! compare-and-store critical section (the `stress` push sequence:
//! `if (*v == expect) *v = newv` on the current CPU):
//!
//! * native: the sequence run natively (retrying on abort);
//! * getpid: a bare system call (`syscall(SYS_getpid)`), the floor a
//!   cpu_opv-style system call could never beat;
//! * engine: what the runtime's abort stub does for that section —
//!   `engine::emulate_section` (cached decode, emulation on the logged
//!   view of this process, native commit on this CPU);
//! * engine + migration: the same for the other CPU: pinned there
//!   (`engine::Pinned`), emulated, committed, affinity restored.
//!
//! Every path adds 1 to the same slot; the final value is checked.

use crate::stress::{native_push, seqs, Exit};
use rseq_emu_runtime::engine::Pinned;
use rseq_emu_runtime::registration;
use rseq_emu_x86_64::reg;
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Arguments of `rseq-emu bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Iterations per measurement (migration: a fiftieth of it).
    #[arg(long, default_value_t = 200_000)]
    iters: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn ns_per(iters: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Run the benchmark.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let seqs = seqs()?;
    let area = registration::area()?.cast::<u8>();
    let slot = AtomicU64::new(0);
    let v = &slot as *const AtomicU64;
    let n = a.iters.max(1);
    let mut adds = 0u64;
    let native = ns_per(n, || loop {
        let cpu = registration::current_cpu().unwrap_or(0);
        let cur = slot.load(Ordering::Relaxed);
        // SAFETY: `area` is this thread's registration; `v` is live.
        if unsafe { native_push(area, cpu, v, cur, cur + 1) } == 0 {
            adds += 1;
            break;
        }
    });
    let getpid = ns_per(n, || {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::syscall(libc::SYS_getpid) };
    });
    let regs = |cpu: u32| {
        let cur = slot.load(Ordering::Relaxed);
        [
            (reg::RDI, area as u64),
            (reg::RSI, u64::from(cpu)),
            (reg::RDX, v as u64),
            (reg::RCX, cur),
            (reg::R8, cur + 1),
        ]
    };
    // `retries`: the sequence's own abort path (the thread moved to
    // another CPU between reading its CPU and the commit); `refused`: the
    // engine answered native retry for another reason.
    let (mut retries, mut refused) = (0u64, 0u64);
    let engine = ns_per(n, || {
        let cpu = registration::current_cpu().unwrap_or(0);
        match seqs.push.emulate(&regs(cpu)) {
            Some((Exit::Post(_), _)) => adds += 1,
            Some(_) => retries += 1,
            None => refused += 1,
        }
    });
    let ncpu = std::thread::available_parallelism()?.get() as u32;
    let mig_iters = (n / 50).max(1);
    let (mut migrated, mut mig_retries) = (0u64, 0u64);
    let migration = ns_per(mig_iters, || {
        let here = registration::current_cpu().unwrap_or(0);
        let cpu = (here + 1) % ncpu;
        let Ok(_pin) = Pinned::to(cpu) else {
            mig_retries += 1;
            return;
        };
        match seqs.push.emulate(&regs(cpu)) {
            Some((Exit::Post(_), _)) => {
                adds += 1;
                migrated += u64::from(cpu != here);
            }
            Some(_) => mig_retries += 1,
            None => refused += 1,
        }
    });
    let exact = slot.load(Ordering::Relaxed) == adds;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "iters": n, "native_ns": native, "getpid_ns": getpid, "engine_ns": engine,
                "engine_over_getpid": engine / getpid, "engine_retries": retries,
                "engine_refused": refused,
                "migration_iters": mig_iters, "engine_migration_ns": migration,
                "migrated": migrated, "migration_retries": mig_retries, "slot_exact": exact,
            })
        );
    } else {
        println!("native rseq compare-and-store   {native:10.1} ns");
        println!("bare syscall (getpid)           {getpid:10.1} ns");
        println!(
            "engine emulate+commit           {engine:10.1} ns  ({:.1}x getpid, {retries} native retries, {refused} refusals)",
            engine / getpid
        );
        println!(
            "engine with migration           {migration:10.1} ns  ({migrated}/{mig_iters} migrated, {mig_retries} native retries)"
        );
        println!(
            "slot {} ({adds} adds): {}",
            slot.load(Ordering::Relaxed),
            if exact { "exact" } else { "WRONG" }
        );
    }
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `rseq-emu bench`: side by side in one run — a native rseq compare-and-store
//! (the engine's commit section used directly, signals not blocked), a bare
//! system call (getpid via syscall()), the engine's emulate+commit of the same
//! compare-and-store on the current CPU, and with a migration to the other
//! CPU and back.

use rseq_emu_core::Memory;
use rseq_emu_runtime::arch::{commit, CommitResult, PlanEntry};
use rseq_emu_runtime::engine::{complete, Completion};
use rseq_emu_runtime::registration;
use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `rseq-emu bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Iterations per measurement.
    #[arg(long, default_value_t = 200_000)]
    iters: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn ns_per(iters: u64, f: impl FnMut()) -> f64 {
    let mut f = f;
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Run the benchmark.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let mut slot = 0u64;
    let addr = &mut slot as *mut u64 as u64;
    let area = registration::area()?;
    let n = a.iters.max(1);
    let native = ns_per(n, || loop {
        let cpu = registration::current_cpu().unwrap_or(0);
        // SAFETY: reads the current value of `slot`, then a plan on `slot`.
        let v = unsafe { std::ptr::read_volatile(addr as *const u64) };
        let p = [
            PlanEntry {
                addr,
                value: v,
                op: 0,
                size: 8,
            },
            PlanEntry {
                addr,
                value: v + 1,
                op: 1,
                size: 8,
            },
        ];
        // SAFETY: `slot` is readable and writable; `area` is ours.
        if unsafe { commit(&p, area.cast(), cpu) } == CommitResult::Committed {
            break;
        }
    });
    let syscall = ns_per(n, || {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::syscall(libc::SYS_getpid) };
    });
    let step = |m: &mut rseq_emu_runtime::memory::Logged<_>| {
        let v = Memory::read_u64(m, addr).ok()?;
        m.write_u64(addr, v + 1).ok()
    };
    let engine = ns_per(n, || {
        let cpu = registration::current_cpu().unwrap_or(0);
        let _ = complete(cpu, step);
    });
    let ncpu = std::thread::available_parallelism()?.get() as u32;
    let mig_iters = (n / 50).max(1);
    let mut migrated = 0u64;
    let migration = ns_per(mig_iters, || {
        let cpu = (registration::current_cpu().unwrap_or(0) + 1) % ncpu;
        if let Ok(Completion::Done { migrated: true, .. }) = complete(cpu, step) {
            migrated += 1;
        }
    });
    if a.json {
        println!(
            "{}",
            serde_json::json!({"native_ns": native, "getpid_ns": syscall, "engine_ns": engine,
                "engine_migration_ns": migration, "migrated": migrated, "iters": n})
        );
    } else {
        println!("native rseq compare-and-store   {native:10.1} ns");
        println!("bare syscall (getpid)           {syscall:10.1} ns");
        println!(
            "engine emulate+commit           {engine:10.1} ns  ({:.1}x syscall)",
            engine / syscall
        );
        println!("engine with migration           {migration:10.1} ns  ({migrated}/{mig_iters} migrated)");
    }
    Ok(ExitCode::SUCCESS)
}

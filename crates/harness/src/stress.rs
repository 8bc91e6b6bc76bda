//! `rseq-emu stress`: per-CPU counters and per-CPU lists completed by the
//! engine from 4× more threads than CPUs (every operation for a CPU chosen
//! round-robin, so most operations migrate), under a signal storm aimed at
//! the workers. Checks: counters exact, no list node lost or duplicated.

use rseq_emu_core::Memory;
use rseq_emu_runtime::engine::{complete, Completion};
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `rseq-emu stress`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Run for this many seconds.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Microseconds between signals of the storm (0 = no storm).
    #[arg(long, default_value_t = 100)]
    signal_us: u64,
}

extern "C" fn on_signal(_: libc::c_int) {}

const NIL: u64 = 0;

/// A list node; `next` is 0 for the end.
#[repr(C)]
struct Node {
    next: u64,
    id: u64,
}

fn tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Run the stress workload.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let ncpu = std::thread::available_parallelism()?.get();
    let nthreads = 4 * ncpu;
    // SAFETY: installs a no-op handler for SIGUSR1 (no SA_RESTART needed).
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_signal as extern "C" fn(libc::c_int) as usize,
        );
    }
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..ncpu).map(|_| AtomicU64::new(0)).collect());
    let heads: Arc<Vec<AtomicU64>> = Arc::new((0..ncpu).map(|_| AtomicU64::new(NIL)).collect());
    // Nodes: each thread owns a pool and pushes/pops them.
    let per_thread_nodes = 64usize;
    let nodes: Arc<Vec<Node>> = Arc::new(
        (0..nthreads * per_thread_nodes)
            .map(|i| Node {
                next: 0,
                id: i as u64,
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tids = Arc::new((0..nthreads).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let mut handles = Vec::new();
    let start = Instant::now();
    for t in 0..nthreads {
        let (counters, heads, nodes, stop, tids) = (
            counters.clone(),
            heads.clone(),
            nodes.clone(),
            stop.clone(),
            tids.clone(),
        );
        handles.push(std::thread::spawn(move || -> (u64, u64, u64, u64) {
            tids[t].store(tid() as u64, Ordering::Relaxed);
            let (mut adds, mut rounds, mut migrated, mut failed) = (0u64, 0u64, 0u64, 0u64);
            let mut mine: Vec<u64> = (0..per_thread_nodes)
                .map(|i| &nodes[t * per_thread_nodes + i] as *const Node as u64)
                .collect();
            let mut i = t as u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let cpu = (i % ncpu as u64) as u32;
                let c = counters[cpu as usize].as_ptr() as u64;
                let r = complete(cpu, |m| {
                    let v = m.read_u64(c).ok()?;
                    m.write_u64(c, v + 1).ok()
                });
                match r {
                    Ok(Completion::Done {
                        rounds: r,
                        migrated: mg,
                        ..
                    }) => {
                        adds += 1;
                        rounds += r as u64;
                        migrated += mg as u64;
                    }
                    _ => failed += 1,
                }
                let h = heads[cpu as usize].as_ptr() as u64;
                if i & 1 == 0 {
                    if let Some(n) = mine.pop() {
                        // push: node.next = head; head = node (one store
                        // commits; node.next is private until then).
                        let r = complete(cpu, |m| {
                            let old = m.read_u64(h).ok()?;
                            m.write_u64(n, old).ok()?;
                            m.write_u64(h, n).ok()
                        });
                        if !matches!(r, Ok(Completion::Done { .. })) {
                            failed += 1;
                            mine.push(n);
                        }
                    }
                } else {
                    let r = complete(cpu, |m| {
                        let top = m.read_u64(h).ok()?;
                        if top == NIL {
                            return Some(NIL);
                        }
                        let next = m.read_u64(top).ok()?;
                        m.write_u64(h, next).ok()?;
                        Some(top)
                    });
                    match r {
                        Ok(Completion::Done { result, .. }) => {
                            if result != NIL {
                                mine.push(result)
                            }
                        }
                        _ => failed += 1,
                    }
                }
            }
            // Give back what we hold: push to cpu 0's list.
            for n in mine {
                let h = heads[0].as_ptr() as u64;
                let _ = complete(0, |m| {
                    let old = m.read_u64(h).ok()?;
                    m.write_u64(n, old).ok()?;
                    m.write_u64(h, n).ok()
                });
            }
            (adds, rounds, migrated, failed)
        }));
    }
    // Signal storm.
    let deadline = start + Duration::from_secs(a.seconds);
    let mut signals = 0u64;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    while Instant::now() < deadline {
        if a.signal_us > 0 {
            for t in tids.iter() {
                let t = t.load(Ordering::Relaxed) as libc::pid_t;
                if t != 0 {
                    // SAFETY: tgkill to a thread of this process.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, t, libc::SIGUSR1) };
                    signals += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(a.signal_us));
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut adds, mut rounds, mut migrated, mut failed) = (0, 0, 0, 0);
    for h in handles {
        let (x, r, m, f) = h.join().map_err(|_| "worker panicked")?;
        adds += x;
        rounds += r;
        migrated += m;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    // Walk the lists: every node exactly once.
    let mut seen = vec![0u32; nodes.len()];
    for h in heads.iter() {
        let mut p = h.load(Ordering::Relaxed);
        let mut steps = 0;
        while p != NIL && steps <= nodes.len() {
            // SAFETY: p points at a node of `nodes` (only such pointers are
            // ever pushed).
            let n = unsafe { &*(p as *const Node) };
            seen[n.id as usize] += 1;
            p = n.next;
            steps += 1;
        }
    }
    let lost = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    let ok = total == adds && lost == 0 && dup == 0 && failed == 0;
    let aborts = rounds - adds;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "threads": nthreads, "cpus": ncpu, "seconds": secs, "signals": signals,
                "counter_ops": adds, "counter_total": total, "lost_updates": adds as i64 - total as i64,
                "commit_rounds": rounds, "commit_retries": aborts, "migrations": migrated,
                "failed": failed, "nodes_lost": lost, "nodes_duplicated": dup,
                "ops_per_s": adds as f64 / secs, "ok": ok,
            })
        );
    } else {
        println!("threads {nthreads} on {ncpu} cpus, {secs:.2} s, {signals} signals");
        println!(
            "engine counter ops {adds} ({:.0}/s), counter total {total}, lost updates {}",
            adds as f64 / secs,
            adds as i64 - total as i64
        );
        println!(
            "commit rounds {rounds} (retries {aborts}), migrations {migrated}, failed {failed}"
        );
        println!(
            "list nodes lost {lost}, duplicated {dup}: {}",
            if ok { "OK" } else { "FAIL" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

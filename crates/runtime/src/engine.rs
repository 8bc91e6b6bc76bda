//! The engine loop: on the target CPU, emulate against a logged view of the
//! live process, then commit natively; repeat (bounded) when the commit
//! aborts or a logged value changed.
//!
//! The emulation step is a closure so the loop is independent of the
//! instruction set; [`emulate_section`] is the step for a decoded section
//! (the executor run over a copy of the entry registers).

use crate::arch::{self, CommitResult, State};
use crate::commit::{self, CommitError};
use crate::memory::{LiveMemory, Logged};
use crate::registration;
use crate::section::{Refusal, Section};
use rseq_emu_core::{ArchState, Outcome};

/// How many commit rounds before reporting exhaustion.
pub const MAX_ROUNDS: u32 = 64;

/// Plans longer than this run with signals blocked from the first round.
pub const BLOCK_FROM_FIRST_ROUND: usize = 64;

/// Result of [`complete`].
#[derive(Debug, PartialEq, Eq)]
pub enum Completion<T> {
    /// Committed (or validated, for a run without stores) on the target
    /// CPU; `T` is what the emulation step returned for that round.
    Done {
        /// The emulation's result for the committed round.
        result: T,
        /// Rounds used (1 = first try).
        rounds: u32,
        /// Whether the thread had to migrate.
        migrated: bool,
    },
    /// The emulation step refused (e.g. unsupported instruction or fault):
    /// nothing was stored; the caller retries natively.
    Refused,
    /// [`MAX_ROUNDS`] rounds all aborted or mismatched.
    Exhausted,
}

/// RAII: the thread pinned to one CPU; the previous affinity is restored
/// on drop.
pub struct Pinned(libc::cpu_set_t);

impl Pinned {
    /// Pin the calling thread to `cpu`.
    pub fn to(cpu: u32) -> std::io::Result<Pinned> {
        // SAFETY: cpu_set_t is plain data; the calls get valid pointers and
        // the size of the set.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Pinned(old))
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: restores the set saved by `to`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
        }
    }
}

/// Complete a sequence for `cpu`: emulate with `step` (which returns
/// `None` to refuse), commit natively on `cpu`, migrating there first when
/// the thread runs elsewhere (affinity restored afterwards).
pub fn complete<T>(
    cpu: u32,
    step: impl FnMut(&mut Logged<LiveMemory>) -> Option<T>,
) -> Result<Completion<T>, CommitError> {
    complete_on(Some(cpu), step)
}

/// As [`complete`]; `None` = on whatever CPU the thread runs on at each
/// round (never migrates): the section's own cpu check, which is in the
/// load log, decides whether that CPU is the right one.
pub fn complete_on<T>(
    target: Option<u32>,
    mut step: impl FnMut(&mut Logged<LiveMemory>) -> Option<T>,
) -> Result<Completion<T>, CommitError> {
    // Reuse this thread's log and plan allocations (taken out of the
    // thread-local while in use, so a nested call just allocates afresh).
    let (mut mem, mut plan) = SCRATCH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| (Logged::new(LiveMemory), Vec::new()));
    let r = rounds(target, &mut step, &mut mem, &mut plan);
    SCRATCH.with(|s| *s.borrow_mut() = Some((mem, plan)));
    r
}

type Scratch = (Logged<LiveMemory>, Vec<crate::arch::PlanEntry>);

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

fn rounds<T>(
    target: Option<u32>,
    step: &mut impl FnMut(&mut Logged<LiveMemory>) -> Option<T>,
    mem: &mut Logged<LiveMemory>,
    plan: &mut Vec<crate::arch::PlanEntry>,
) -> Result<Completion<T>, CommitError> {
    let mut pin = None;
    let mut migrated = false;
    let mut pending: Option<T> = None;
    for round in 1..=MAX_ROUNDS {
        let here = registration::current_cpu().map_err(CommitError::Registration)?;
        let cpu = target.unwrap_or(here);
        if here != cpu && pin.is_none() {
            match Pinned::to(cpu) {
                Ok(p) => {
                    pin = Some(p);
                    migrated = true;
                }
                Err(_) => return Ok(Completion::Refused),
            }
        }
        // After an aborted (not mismatched) commit the same plan is tried
        // again without emulating again: its checks re-validate every load
        // (a store the aborted try already applied that a check covers
        // makes that check fail, and then the section is emulated again).
        if pending.is_none() {
            mem.clear();
            let Some(result) = step(mem) else {
                return Ok(Completion::Refused);
            };
            if mem.stores.last().is_some_and(|s| s.len() > 8) {
                return Ok(Completion::Refused);
            }
            commit::plan_into(&mem.loads, &mem.stores, plan);
            pending = Some(result);
        }
        // Signals are blocked from the second round on, and from the first
        // for a long plan: the first commit of a short plan runs unblocked
        // (blocking costs two system calls, more than the rest of the
        // path); if a signal aborts it, every later commit of this
        // operation is immune to signals, so a storm costs at most one
        // short round.
        let block = round > 1 || plan.len() > BLOCK_FROM_FIRST_ROUND;
        // SAFETY: the logged run read every check address and validated
        // every store address.
        match unsafe { commit::commit_with(plan, cpu, block) }? {
            CommitResult::Committed => {
                return Ok(Completion::Done {
                    result: pending.take().expect("emulated before commit"),
                    rounds: round,
                    migrated,
                })
            }
            CommitResult::Mismatch => pending = None,
            CommitResult::Aborted => {}
        }
    }
    Ok(Completion::Exhausted)
}

/// Instruction budget of one emulation (a 64 KiB byte-by-byte copy is
/// about 400,000 instructions).
pub const EMU_BUDGET: u64 = 1 << 24;

/// Why the engine answered "retry natively".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The section is never emulated (see [`Refusal`]).
    Refused(Refusal),
    /// The emulation took the sequence's own abort path (e.g. its cpu
    /// check failed): natively it would have gone to the abort label too.
    SequenceAbort,
    /// The emulation stopped: unsupported instruction, fault or budget.
    Stopped(String),
    /// The exit was reached with a different `%rsp` than the entry.
    StackPointerChanged,
    /// A store below the red zone (where the engine's own frames live) or
    /// into the rseq area's first 32 bytes.
    ForbiddenStore(u64),
    /// Every round aborted or mismatched.
    Exhausted,
    /// No rseq registration.
    Registration(String),
}

/// The engine's answer for one aborted section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Resume at the sequence's own abort label, as without the engine.
    Retry(Why),
    /// The emulation reached `ip` (post_commit_ip or an early exit) and was
    /// committed (or, without stores, validated) on its CPU: resume there
    /// with `state`.
    Resume {
        /// The exit.
        ip: u64,
        /// Registers and flags at the exit.
        state: State,
        /// Emulate+commit rounds used.
        rounds: u32,
    },
}

/// Emulate `section` from `entry` (its registers at the sequence's entry,
/// as far as the section can observe them) and commit it natively on the
/// CPU the thread runs on.
pub fn emulate_section(section: &Section, entry: &State) -> Answer {
    let area = match registration::area() {
        Ok(a) => a as u64,
        Err(e) => return Answer::Retry(Why::Registration(e.to_string())),
    };
    let cs = &section.cs;
    let rsp = arch::stack_pointer(entry);
    // The engine's own frames live below the sequence's red zone: a store
    // there (a deep push in the section) would hit them.
    let low = rsp.wrapping_sub(128);
    let probe = 0u8;
    let engine_sp = (&probe as *const u8 as u64).saturating_sub(1 << 16);
    let mut why = None;
    let r = complete_on(None, |mem| {
        let mut st = *entry;
        st.set_ip(cs.start_ip);
        let run = section.program.run(&mut st, mem, EMU_BUDGET);
        let ip = match run.outcome {
            Outcome::Committed => section.program.post_commit_ip(),
            Outcome::Exited { ip } if ip == cs.abort_ip => {
                why = Some(Why::SequenceAbort);
                return None;
            }
            Outcome::Exited { ip } => ip,
            other => {
                why = Some(Why::Stopped(format!("{other:?}")));
                return None;
            }
        };
        if arch::stack_pointer(&st) != rsp {
            why = Some(Why::StackPointerChanged);
            return None;
        }
        for s in &mem.stores {
            let end = s.addr.wrapping_add(s.len() as u64);
            if (s.addr < low && end > engine_sp) || (s.addr < area + 32 && end > area) {
                why = Some(Why::ForbiddenStore(s.addr));
                return None;
            }
        }
        Some((ip, st))
    });
    match r {
        Ok(Completion::Done {
            result: (ip, state),
            rounds,
            ..
        }) => Answer::Resume { ip, state, rounds },
        Ok(Completion::Refused) => Answer::Retry(why.unwrap_or(Why::Stopped("refused".into()))),
        Ok(Completion::Exhausted) => Answer::Retry(Why::Exhausted),
        Err(e) => Answer::Retry(Why::Registration(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rseq_emu_core::Memory;

    fn ncpus() -> u32 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }

    /// Per-CPU counters incremented by the engine from many threads, for
    /// every CPU from everywhere (migrations): the totals are exact.
    #[test]
    fn counters_exact_with_migration() {
        let n = ncpus();
        let counters: Vec<std::sync::atomic::AtomicU64> = (0..n)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        let counters = std::sync::Arc::new(counters);
        let per_thread = 300u64;
        let threads: Vec<_> = (0..4 * n)
            .map(|t| {
                let c = counters.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let cpu = ((t as u64 + i) % n as u64) as u32;
                        let addr = c[cpu as usize].as_ptr() as u64;
                        let r = complete(cpu, |m| {
                            let v = m.read_u64(addr).ok()?;
                            m.write_u64(addr, v + 1).ok()?;
                            Some(())
                        })
                        .unwrap();
                        assert!(matches!(r, Completion::Done { .. }), "{r:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = counters
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        assert_eq!(total, 4 * n as u64 * per_thread);
    }

    #[test]
    fn fault_is_refused() {
        let r = complete(registration::current_cpu().unwrap(), |m| m.read_u64(8).ok()).unwrap();
        assert_eq!(r, Completion::Refused);
    }

    /// A value that changes between every emulation and its commit ends
    /// after exactly MAX_ROUNDS emulations with `Exhausted`, nothing
    /// stored; an abort-answer of that kind is counted in the stats.
    #[test]
    fn always_changing_value_exhausts_after_max_rounds() {
        let mut slot = 0u64;
        let addr = &mut slot as *mut u64 as u64;
        let cpu = registration::current_cpu().unwrap();
        let mut steps = 0u32;
        let r = complete(cpu, |m| {
            steps += 1;
            let v = m.read_u64(addr).ok()?;
            // Another writer between this emulation and its commit.
            // SAFETY: `slot` is a live local.
            unsafe { std::ptr::write_volatile(addr as *mut u64, v + 1000) };
            m.write_u64(addr, v + 1).ok()
        })
        .unwrap();
        assert_eq!(r, Completion::Exhausted);
        assert_eq!(steps, MAX_ROUNDS);
        // SAFETY: `slot` is a live local.
        let v = unsafe { std::ptr::read_volatile(addr as *const u64) };
        assert_eq!(v, 1000 * u64::from(MAX_ROUNDS), "no emulated store landed");
    }

    /// A value changed between emulation and commit is re-emulated (2
    /// rounds, result from the new value); A->B->A passes the check and the
    /// result is the one a native run at the commit instant gives.
    #[test]
    fn changed_value_reemulates_and_aba_commits() {
        let mut slot = 10u64;
        let addr = &mut slot as *mut u64 as u64;
        let cpu = registration::current_cpu().unwrap();
        let mut first = true;
        let r = complete(cpu, |m| {
            let v = m.read_u64(addr).ok()?;
            if first {
                first = false;
                // Another writer on this CPU between emulation and commit.
                // SAFETY: `slot` is a live local.
                unsafe { std::ptr::write_volatile(addr as *mut u64, 20) };
            }
            m.write_u64(addr, v * 2).ok()
        })
        .unwrap();
        assert!(matches!(r, Completion::Done { rounds: 2.., .. }), "{r:?}");
        // SAFETY: `slot` is a live local.
        assert_eq!(unsafe { std::ptr::read_volatile(addr as *const u64) }, 40);
        let mut first = true;
        let r = complete(cpu, |m| {
            let v = m.read_u64(addr).ok()?;
            if first {
                first = false;
                // SAFETY: `slot` is a live local.
                unsafe {
                    std::ptr::write_volatile(addr as *mut u64, 99);
                    std::ptr::write_volatile(addr as *mut u64, 40);
                }
            }
            m.write_u64(addr, v + 1).ok()
        })
        .unwrap();
        assert!(matches!(r, Completion::Done { .. }), "{r:?}");
        // SAFETY: `slot` is a live local.
        assert_eq!(unsafe { std::ptr::read_volatile(addr as *const u64) }, 41);
    }
}

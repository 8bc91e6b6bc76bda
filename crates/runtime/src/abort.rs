//! What the abort stub's call into the engine does: find the aborted
//! section from its abort_ip, apply the policy, emulate and commit, and
//! answer native retry or resume.
//!
//! Policy in `auto` mode: the engine only sees aborts (nothing is added to
//! the native fast path, so it never sees a native success). An abort of
//! the same descriptor by the same thread within [`ABORT_WINDOW_NS`] of the
//! previous one continues a *streak* (a longer quiet gap is taken as "it
//! completed natively in between"). The engine emulates when the streak
//! reaches [`policy::threshold`] aborts, or when it has lasted as long as
//! one emulation of that section costs on this thread (the last one
//! measured; [`STREAK_NS`] before the first). That is the ski-rental rule:
//! futile native attempts ("renting") are given as much time as an
//! emulation ("buying") costs, so whether native retries would soon have
//! succeeded or never will, the time spent per operation is at most about
//! twice the better choice. An emulated completion starts a new streak.
//!
//! Signals: a section that can loop (its emulation time grows with its
//! data) and every emulation triggered by the time rule run with all
//! signals blocked for the whole emulate+commit, so a signal storm can
//! neither stretch the emulation nor abort the commit. A straight-line
//! section below that keeps signals deliverable until its commit (blocking
//! costs two system calls, more than the rest of the engine path); the
//! commit blocks them from its second round on (see `engine`).

use crate::arch::{self, Frame};
use crate::commit::SignalsBlocked;
use crate::engine::{self, Answer, Why};
use crate::policy::{self, Mode};
use crate::section::{self, Refusal};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Two aborts of one descriptor on one thread further apart than this are
/// not consecutive (100 ms). Measured: under a 10 µs timer storm a thread
/// that keeps aborting a 16 KiB copy gets one native attempt every 2–20 ms
/// on this loaded machine (signal delivery starves it), so a 1 ms window
/// never saw two consecutive aborts and the engine never engaged; 20 ms
/// still broke streaks. Emulating a sequence that aborts rarely costs
/// about 1 µs per abort, negligible at that rate, so a wide window is cheap.
pub const ABORT_WINDOW_NS: u64 = 100_000_000;

/// Before the first emulation of a section on a thread (its cost not yet
/// measured), a streak of consecutive aborts this long (50 ms) is emulated
/// even below the threshold: a long section starved by a signal storm gets
/// so few native attempts that counting them alone would take seconds.
pub const STREAK_NS: u64 = 50_000_000;

/// Process-wide counters of the stub path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls from an abort stub.
    pub aborts: u64,
    /// Of those, completed by the engine (resumed at an exit).
    pub emulated: u64,
    /// Of those, answered with a native retry.
    pub native_retries: u64,
    /// Of the retries, those after [`engine::MAX_ROUNDS`] emulate+commit
    /// rounds all aborted or mismatched (the engine could not finish).
    pub exhausted: u64,
}

static ABORTS: AtomicU64 = AtomicU64::new(0);
static EMULATED: AtomicU64 = AtomicU64::new(0);
static EXHAUSTED: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
pub fn stats() -> Stats {
    let aborts = ABORTS.load(Ordering::Relaxed);
    let emulated = EMULATED.load(Ordering::Relaxed);
    Stats {
        aborts,
        emulated,
        native_retries: aborts.saturating_sub(emulated),
        exhausted: EXHAUSTED.load(Ordering::Relaxed),
    }
}

/// The last answer the engine gave on this thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Last {
    /// Resumed at this exit ip.
    Emulated(u64),
    /// Native retry because the policy said so (below threshold / never).
    Policy,
    /// Native retry for this reason.
    Retry(Why),
}

#[derive(Clone, Copy, Default)]
struct Recent {
    desc: u64,
    count: u32,
    last_ns: u64,
    /// When the current streak of consecutive aborts began.
    since_ns: u64,
    /// Wall-clock cost of the last emulate+commit of this descriptor on
    /// this thread (0: not measured yet).
    cost_ns: u64,
}

thread_local! {
    /// Set while this thread is inside the engine: an abort stub reached
    /// from a signal handler that interrupted the engine gets a native
    /// retry instead of re-entering it (its locks are not reentrant).
    static ACTIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static RECENT: RefCell<[Recent; 4]> = RefCell::new([Recent::default(); 4]);
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

/// The last answer on this thread (for tests and diagnostics).
pub fn last() -> Option<Last> {
    LAST.with(|l| l.borrow().clone())
}

fn set_last(l: Last) {
    LAST.with(|x| *x.borrow_mut() = Some(l));
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; CLOCK_MONOTONIC always exists (vDSO call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the policy says about one abort.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Native retry.
    Native,
    /// Emulate: `always` mode (no streak is kept, no cost measured).
    Always,
    /// Emulate: the streak reached the threshold just now.
    Emulate,
    /// Emulate: the streak has lasted as long as an emulation costs.
    EmulateTimed,
}

/// Count one abort of `desc` on this thread; whether to emulate now.
fn should_emulate(desc: u64) -> Verdict {
    match policy::mode() {
        Mode::Never => Verdict::Native,
        Mode::Always => Verdict::Always,
        Mode::Auto => RECENT
            .with(|r| count_abort(&mut r.borrow_mut()[..], desc, now_ns(), policy::threshold())),
    }
}

/// The `auto` rule over one thread's recent descriptors: count the abort
/// of `desc` at time `t` (ns) and say whether its streak reaches
/// `threshold` aborts or the cost of an emulation.
fn count_abort(r: &mut [Recent], desc: u64, t: u64, threshold: u32) -> Verdict {
    let i = match r.iter().position(|e| e.desc == desc) {
        Some(i) => i,
        None => {
            // Replace the oldest entry.
            let i = (0..r.len()).min_by_key(|&i| r[i].last_ns).unwrap_or(0);
            r[i] = Recent {
                desc,
                count: 0,
                last_ns: t,
                since_ns: t,
                cost_ns: 0,
            };
            i
        }
    };
    let e = &mut r[i];
    if t.saturating_sub(e.last_ns) > ABORT_WINDOW_NS {
        e.count = 0;
        e.since_ns = t;
    }
    e.count = e.count.saturating_add(1);
    e.last_ns = t;
    let budget = if e.cost_ns == 0 { STREAK_NS } else { e.cost_ns };
    if t.saturating_sub(e.since_ns) >= budget && e.count > 1 {
        Verdict::EmulateTimed
    } else if e.count >= threshold {
        Verdict::Emulate
    } else {
        Verdict::Native
    }
}

/// An emulate+commit of `desc` on this thread ended at `t` after costing
/// `cost_ns`.
fn emulated(desc: u64, t: u64, cost_ns: u64, completed: bool) {
    RECENT.with(|r| record_emulation(&mut r.borrow_mut()[..], desc, t, cost_ns, completed));
}

/// Remember the cost; a completion starts a new streak (a failed
/// emulation keeps the streak, so the next abort tries again).
fn record_emulation(r: &mut [Recent], desc: u64, t: u64, cost_ns: u64, completed: bool) {
    for e in r.iter_mut().filter(|e| e.desc == desc) {
        e.cost_ns = cost_ns.max(1);
        if completed {
            e.count = 0;
            e.since_ns = t;
            e.last_ns = t;
        }
    }
}

/// Handle one abort: the stub's registers are in `frame`, the teardown
/// was `[abort_ip, teardown_end)`. True = `frame` now holds the exit state
/// (resume there); false = native retry, `frame` untouched.
pub fn on_abort(abort_ip: u64, teardown_end: u64, frame: &mut Frame) -> bool {
    ABORTS.fetch_add(1, Ordering::Relaxed);
    if ACTIVE.with(|a| a.replace(true)) {
        return false;
    }
    let r = handle(abort_ip, teardown_end, frame);
    ACTIVE.with(|a| a.set(false));
    r
}

fn handle(abort_ip: u64, teardown_end: u64, frame: &mut Frame) -> bool {
    let desc = match section::find_descriptor(abort_ip) {
        Ok(d) => d,
        Err(r) => {
            set_last(Last::Retry(Why::Refused(r)));
            return false;
        }
    };
    let verdict = should_emulate(desc);
    if verdict == Verdict::Native {
        set_last(Last::Policy);
        return false;
    }
    let sec = match section::lookup(desc, (abort_ip, teardown_end)) {
        Ok(s) => s,
        Err(r) => {
            set_last(Last::Retry(Why::Refused(r)));
            return false;
        }
    };
    let mut st = frame.state();
    if sec.uses_gs {
        match arch::gs_base() {
            Some(g) => st.gs_base = g,
            None => {
                set_last(Last::Retry(Why::Refused(Refusal::CodeUnreadable(
                    sec.cs.start_ip,
                ))));
                return false;
            }
        }
    }
    let _blocked = (sec.loops || verdict == Verdict::EmulateTimed).then(SignalsBlocked::new);
    let answer = if verdict == Verdict::Always {
        engine::emulate_section(&sec, &st)
    } else {
        // `auto`: the cost feeds the streak rule (two vDSO clock reads,
        // kept off the `always` path).
        let t0 = now_ns();
        let answer = engine::emulate_section(&sec, &st);
        let t1 = now_ns();
        emulated(
            desc,
            t1,
            t1.saturating_sub(t0),
            matches!(answer, Answer::Resume { .. }),
        );
        answer
    };
    match answer {
        Answer::Resume { ip, state, .. } => {
            frame.set_resume(ip, &state);
            EMULATED.fetch_add(1, Ordering::Relaxed);
            set_last(Last::Emulated(ip));
            true
        }
        Answer::Retry(w) => {
            if w == Why::Exhausted {
                EXHAUSTED.fetch_add(1, Ordering::Relaxed);
            }
            set_last(Last::Retry(w));
            false
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn threshold_then_the_measured_cost_then_a_quiet_gap() {
        let mut r = [Recent::default(); 4];
        let d = 0x1000;
        // Aborts 2 ms apart: below a threshold of 3.
        assert!(count_abort(&mut r, d, 10 * MS, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, 12 * MS, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, 14 * MS, 3) == Verdict::Emulate);
        // That emulation cost 5 ms and completed at 19 ms: a new streak,
        // emulated once it has lasted 5 ms.
        record_emulation(&mut r, d, 19 * MS, 5 * MS, true);
        assert!(count_abort(&mut r, d, 20 * MS, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, 23 * MS, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, 24 * MS, 3) == Verdict::EmulateTimed);
        // A failed emulation keeps the streak: the next abort tries again.
        record_emulation(&mut r, d, 25 * MS, MS, false);
        assert!(count_abort(&mut r, d, 26 * MS, 3) == Verdict::EmulateTimed);
        // A quiet gap longer than the window: a new streak, counted from 1.
        let t = 26 * MS + ABORT_WINDOW_NS + 1;
        assert!(count_abort(&mut r, d, t, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, t + MS / 2, 3) == Verdict::Native);
        assert!(count_abort(&mut r, d, t + MS, 3) == Verdict::EmulateTimed);
    }

    #[test]
    fn a_long_streak_is_emulated_below_the_threshold() {
        let mut r = [Recent::default(); 4];
        let d = 0x2000;
        let mut t = 5 * MS;
        // One abort every 10 ms (a starved thread): no gap breaks the streak.
        while t < 5 * MS + STREAK_NS {
            assert!(count_abort(&mut r, d, t, 256) == Verdict::Native);
            t += 10 * MS;
        }
        assert!(count_abort(&mut r, d, t, 256) == Verdict::EmulateTimed);
    }

    #[test]
    fn a_gap_restarts_the_count_and_descriptors_count_apart() {
        let mut r = [Recent::default(); 4];
        assert!(count_abort(&mut r, 0x10, 0, 2) == Verdict::Native);
        // Another descriptor in between does not count for the first.
        assert!(count_abort(&mut r, 0x20, MS, 2) == Verdict::Native);
        assert!(count_abort(&mut r, 0x10, 2 * MS + ABORT_WINDOW_NS, 2) == Verdict::Native);
        assert!(count_abort(&mut r, 0x10, 3 * MS + ABORT_WINDOW_NS, 2) == Verdict::Emulate);
        assert!(count_abort(&mut r, 0x20, 3 * MS + ABORT_WINDOW_NS, 2) == Verdict::Native);
    }
}

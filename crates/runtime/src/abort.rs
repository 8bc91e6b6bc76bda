//! What the abort stub's call into the engine does: find the aborted
//! section from its abort_ip, apply the policy, emulate and commit, and
//! answer native retry or resume.
//!
//! Policy in `auto` mode: the engine only sees aborts (nothing is added to
//! the native fast path, so it never sees a native success). An abort of
//! the same descriptor by the same thread within [`ABORT_WINDOW_NS`] of the
//! previous one counts as consecutive; the engine emulates from the
//! [`policy::threshold`]-th consecutive abort on, and the count restarts
//! after an emulated completion.

use crate::arch::{self, Frame};
use crate::engine::{self, Answer, Why};
use crate::policy::{self, Mode};
use crate::section::{self, Refusal};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Two aborts of one descriptor on one thread further apart than this are
/// not consecutive (1 ms).
pub const ABORT_WINDOW_NS: u64 = 1_000_000;

/// Process-wide counters of the stub path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls from an abort stub.
    pub aborts: u64,
    /// Of those, completed by the engine (resumed at an exit).
    pub emulated: u64,
    /// Of those, answered with a native retry.
    pub native_retries: u64,
}

static ABORTS: AtomicU64 = AtomicU64::new(0);
static EMULATED: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
pub fn stats() -> Stats {
    let aborts = ABORTS.load(Ordering::Relaxed);
    let emulated = EMULATED.load(Ordering::Relaxed);
    Stats {
        aborts,
        emulated,
        native_retries: aborts.saturating_sub(emulated),
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
}

thread_local! {
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

/// Count one abort of `desc` on this thread; whether to emulate now.
fn should_emulate(desc: u64) -> bool {
    match policy::mode() {
        Mode::Never => false,
        Mode::Always => true,
        Mode::Auto => {
            let t = now_ns();
            RECENT.with(|r| {
                let mut r = r.borrow_mut();
                let i = match r.iter().position(|e| e.desc == desc) {
                    Some(i) => i,
                    None => {
                        // Replace the oldest entry.
                        let i = (0..r.len()).min_by_key(|&i| r[i].last_ns).unwrap_or(0);
                        r[i] = Recent {
                            desc,
                            count: 0,
                            last_ns: t,
                        };
                        i
                    }
                };
                let e = &mut r[i];
                if t.saturating_sub(e.last_ns) > ABORT_WINDOW_NS {
                    e.count = 0;
                }
                e.count += 1;
                e.last_ns = t;
                e.count >= policy::threshold()
            })
        }
    }
}

fn completed(desc: u64) {
    RECENT.with(|r| {
        for e in r.borrow_mut().iter_mut().filter(|e| e.desc == desc) {
            e.count = 0;
        }
    });
}

/// Handle one abort: the stub's registers are in `frame`, the teardown
/// was `[abort_ip, teardown_end)`. True = `frame` now holds the exit state
/// (resume there); false = native retry, `frame` untouched.
pub fn on_abort(abort_ip: u64, teardown_end: u64, frame: &mut Frame) -> bool {
    ABORTS.fetch_add(1, Ordering::Relaxed);
    let desc = match section::find_descriptor(abort_ip) {
        Ok(d) => d,
        Err(r) => {
            set_last(Last::Retry(Why::Refused(r)));
            return false;
        }
    };
    if !should_emulate(desc) {
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
    match engine::emulate_section(&sec, &st) {
        Answer::Resume { ip, state, .. } => {
            frame.set_resume(ip, &state);
            completed(desc);
            EMULATED.fetch_add(1, Ordering::Relaxed);
            set_last(Last::Emulated(ip));
            true
        }
        Answer::Retry(w) => {
            set_last(Last::Retry(w));
            false
        }
    }
}

//! The native commit: turn a [`Logged`](crate::memory::Logged) run into a
//! plan (checks of every logged load, then the buffered stores in order) and
//! run it in the engine's own rseq critical section on the target CPU with
//! signals blocked.

use crate::arch::{self, CommitResult, PlanEntry};
use crate::memory::{BufferedStore, LoggedLoad};
use crate::registration;

fn chunks(addr: u64, bytes: &[u8], op: u32, out: &mut Vec<PlanEntry>) {
    let mut off = 0usize;
    while off < bytes.len() {
        let rest = bytes.len() - off;
        let size = if rest >= 8 {
            8
        } else if rest >= 4 {
            4
        } else if rest >= 2 {
            2
        } else {
            1
        };
        let mut v = [0u8; 8];
        v[..size].copy_from_slice(&bytes[off..off + size]);
        out.push(PlanEntry {
            addr: addr + off as u64,
            value: u64::from_le_bytes(v),
            op,
            size: size as u32,
        });
        off += size;
    }
}

/// Build the commit plan: every logged load as a check, then every store in
/// program order. A store wider than 8 bytes is split; only its last piece
/// can be the commit, which is what a native 16-byte store would not give,
/// so callers refuse plans whose final store is wider than 8 bytes.
pub fn plan(loads: &[LoggedLoad], stores: &[BufferedStore]) -> Vec<PlanEntry> {
    let mut out = Vec::with_capacity(loads.len() + stores.len());
    plan_into(loads, stores, &mut out);
    out
}

/// [`plan`] into a reused vector (cleared first).
pub fn plan_into(loads: &[LoggedLoad], stores: &[BufferedStore], out: &mut Vec<PlanEntry>) {
    out.clear();
    for l in loads {
        chunks(l.addr, l.bytes(), 0, out);
    }
    for s in stores {
        chunks(s.addr, s.bytes(), 1, out);
    }
}

/// RAII: all signals blocked on this thread until dropped.
pub struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    /// Block every signal, remembering the previous mask.
    pub fn new() -> Self {
        // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask get
        // valid pointers.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Default for SignalsBlocked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Errors of the commit step that are not outcomes.
#[derive(Debug)]
pub enum CommitError {
    /// No rseq area for this thread.
    Registration(registration::RegisterError),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Registration(e) => e.fmt(f),
        }
    }
}
impl std::error::Error for CommitError {}

/// Run `plan` once natively on `cpu` with signals blocked.
///
/// # Safety
/// Every check address readable and every store address writable (the
/// logged emulation establishes this).
pub unsafe fn commit_once(plan: &[PlanEntry], cpu: u32) -> Result<CommitResult, CommitError> {
    let area = registration::area().map_err(CommitError::Registration)?;
    let _b = SignalsBlocked::new();
    // SAFETY: the caller's contract; `area` is this thread's registration.
    Ok(unsafe { arch::commit(plan, area.cast(), cpu) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_cpu<T>(f: impl Fn(u32) -> Option<T>) -> T {
        for _ in 0..1000 {
            let cpu = registration::current_cpu().unwrap();
            if let Some(t) = f(cpu) {
                return t;
            }
        }
        panic!("never completed on the current cpu");
    }

    #[test]
    fn commit_checks_then_stores_in_order() {
        let mut x = [0u64; 4];
        x[0] = 7;
        let base = x.as_mut_ptr() as u64;
        let loads = vec![LoggedLoad::new(base, &7u64.to_le_bytes())];
        let stores = vec![
            BufferedStore::new(base + 8, &[1, 2, 3]),
            BufferedStore::new(base + 16, &0x0102_0304u32.to_le_bytes()),
            BufferedStore::new(base, &8u64.to_le_bytes()),
        ];
        let p = plan(&loads, &stores);
        // SAFETY: addresses inside `x`.
        let r = on_cpu(|cpu| match unsafe { commit_once(&p, cpu) }.unwrap() {
            CommitResult::Aborted => None,
            r => Some(r),
        });
        assert_eq!(r, CommitResult::Committed);
        assert_eq!(x, [8, 0x030201, 0x0102_0304, 0]);
        // The check of x[0] == 7 now fails: nothing is stored.
        x[1] = 0;
        // SAFETY: as above.
        let r = on_cpu(|cpu| match unsafe { commit_once(&p, cpu) }.unwrap() {
            CommitResult::Aborted => None,
            r => Some(r),
        });
        assert_eq!(r, CommitResult::Mismatch);
        assert_eq!(x, [8, 0, 0x0102_0304, 0]);
        // Wrong cpu: aborted, nothing stored.
        let cpu = registration::current_cpu().unwrap();
        // SAFETY: as above.
        let r = unsafe { commit_once(&p, cpu + 10_000) }.unwrap();
        assert_eq!(r, CommitResult::Aborted);
        assert_eq!(x, [8, 0, 0x0102_0304, 0]);
    }

    #[test]
    fn check_only_plan() {
        let x = 5u32;
        let p = plan(
            &[LoggedLoad::new(
                &x as *const u32 as u64,
                &5u32.to_le_bytes(),
            )],
            &[],
        );
        // SAFETY: reads `x` only.
        let r = on_cpu(|cpu| match unsafe { commit_once(&p, cpu) }.unwrap() {
            CommitResult::Aborted => None,
            r => Some(r),
        });
        assert_eq!(r, CommitResult::Committed);
    }
}

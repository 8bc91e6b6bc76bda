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

/// Adjacent accesses merged (a byte-by-byte copy becomes 8-byte entries).
struct Merge {
    addr: u64,
    buf: [u8; 16],
    len: usize,
    op: u32,
}

impl Merge {
    fn new(op: u32) -> Self {
        Merge {
            addr: 0,
            buf: [0; 16],
            len: 0,
            op,
        }
    }
    fn push(&mut self, addr: u64, bytes: &[u8], out: &mut Vec<PlanEntry>) {
        if self.len > 0
            && addr == self.addr.wrapping_add(self.len as u64)
            && self.len + bytes.len() <= 8
        {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        self.flush(out);
        if bytes.len() > 8 {
            chunks(addr, bytes, self.op, out);
            return;
        }
        self.addr = addr;
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
    }
    fn flush(&mut self, out: &mut Vec<PlanEntry>) {
        if self.len > 0 {
            chunks(self.addr, &self.buf[..self.len], self.op, out);
            self.len = 0;
        }
    }
}

/// [`plan`] into a reused vector (cleared first). Loads adjacent in the
/// log and in memory are merged into checks of up to 8 bytes, and so are
/// stores other than the final one (a merged store leaves memory as a
/// native run that stopped before or after those stores would; the final
/// store, the commit, stays exactly the section's own).
pub fn plan_into(loads: &[LoggedLoad], stores: &[BufferedStore], out: &mut Vec<PlanEntry>) {
    out.clear();
    let mut m = Merge::new(0);
    for l in loads {
        m.push(l.addr, l.bytes(), out);
    }
    m.flush(out);
    let mut m = Merge::new(1);
    if let Some((last, body)) = stores.split_last() {
        for s in body {
            m.push(s.addr, s.bytes(), out);
        }
        m.flush(out);
        chunks(last.addr, last.bytes(), 1, out);
    }
}

/// RAII: every signal except the synchronous fault signals blocked on this
/// thread until dropped.
///
/// Uses the raw `rt_sigprocmask` system call (one call each way, 8-byte
/// kernel sigset): glibc's `pthread_sigmask` does the same call plus
/// filtering of its internal signals, which does not matter for the few
/// instructions of the commit (the kernel never blocks SIGKILL/SIGSTOP).
///
/// SIGSEGV, SIGBUS, SIGILL, SIGTRAP and SIGFPE stay deliverable: a fault
/// while its signal is blocked makes the kernel reset the handler and kill
/// the process, which would turn the engine's fault-safe reads
/// ([`crate::probe`]) into crashes exactly where the engine blocks signals
/// (long and time-rule emulations). No storm is made of them.
pub struct SignalsBlocked(u64);

/// The kernel sigset bits of the synchronous fault signals.
const FAULT_SIGNALS: u64 = 1 << (libc::SIGSEGV - 1)
    | 1 << (libc::SIGBUS - 1)
    | 1 << (libc::SIGILL - 1)
    | 1 << (libc::SIGTRAP - 1)
    | 1 << (libc::SIGFPE - 1);

impl SignalsBlocked {
    /// Block every signal but the fault signals, remembering the previous
    /// mask.
    pub fn new() -> Self {
        let all: u64 = !FAULT_SIGNALS;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask with valid 8-byte sets.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_BLOCK,
                &all as *const u64,
                &mut old as *mut u64,
                8usize,
            );
        }
        SignalsBlocked(old)
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
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.0 as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
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
    // SAFETY: the caller's contract.
    unsafe { commit_with(plan, cpu, true) }
}

/// Run `plan` once natively on `cpu`, with all signals blocked when
/// `block_signals` (two system calls) or not (a signal then aborts it, and
/// the caller retries — the engine blocks from its second round on).
///
/// # Safety
/// As for [`commit_once`].
pub unsafe fn commit_with(
    plan: &[PlanEntry],
    cpu: u32,
    block_signals: bool,
) -> Result<CommitResult, CommitError> {
    let area = registration::area().map_err(CommitError::Registration)?;
    let _b = block_signals.then(SignalsBlocked::new);
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

    /// A byte-by-byte copy: 16 one-byte loads become two 8-byte checks, 16
    /// one-byte stores two 8-byte stores, and the final store stays alone
    /// and last; committing it gives the same memory as the byte stores.
    #[test]
    fn adjacent_accesses_merge_and_the_final_store_stays_last() {
        let src: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let mut dst = [0u8; 16];
        let mut flag = 0u32;
        let loads: Vec<_> = (0..16)
            .map(|i| LoggedLoad::new(src.as_ptr() as u64 + i, &[src[i as usize]]))
            .collect();
        let mut stores: Vec<_> = (0..16)
            .map(|i| BufferedStore::new(dst.as_mut_ptr() as u64 + i, &[src[i as usize]]))
            .collect();
        stores.push(BufferedStore::new(
            &mut flag as *mut u32 as u64,
            &7u32.to_le_bytes(),
        ));
        let p = plan(&loads, &stores);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[..2].iter().all(|e| e.op == 0 && e.size == 8));
        assert!(p[2..4].iter().all(|e| e.op == 1 && e.size == 8));
        assert_eq!((p[4].op, p[4].size, p[4].value), (1, 4, 7));
        // SAFETY: addresses inside src, dst, flag.
        let r = on_cpu(|cpu| match unsafe { commit_once(&p, cpu) }.unwrap() {
            CommitResult::Aborted => None,
            r => Some(r),
        });
        assert_eq!(r, CommitResult::Committed);
        assert_eq!(dst, src);
        assert_eq!(flag, 7);
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

//! Memory views for emulating a sequence inside the live process.
//!
//! * [`LiveMemory`] reads this process's memory directly, after checking
//!   the address against the thread's cache of `/proc/self/maps` mappings
//!   (filled on a miss) and through a fault-safe copy, so a bad pointer in
//!   an emulated section is a [`MemFault`] value, never a SIGSEGV, and a
//!   hit costs no system call.
//!   Store targets are checked for write permission the same way.
//! * [`Logged`] wraps any backend: loads are recorded as (addr, bytes read
//!   from the backend), stores are buffered in order and never reach the
//!   backend; loads see earlier buffered stores. The engine's native commit
//!   re-checks the load log and applies the stores.
//!
//! The mapping cache (per thread, [`MAP_CACHE`] entries) can go stale when
//! another thread unmaps or protects a range afterwards, and the emulation,
//! unlike a native run, is not aborted when a thread that preempted it frees
//! what it is following. So the cache only answers "certainly not mapped";
//! the read itself goes through [`crate::probe`], where a fault is a value
//! (and drops the cache). Store targets are only checked here: the stores
//! are applied by the native commit, after its checks made the addresses
//! those a native run at the commit instant would use.

use rseq_emu_core::memory::{AccessKind, MemFault, Memory};
use std::cell::RefCell;

/// Mappings cached per thread.
pub const MAP_CACHE: usize = 32;

#[derive(Clone, Copy, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    read: bool,
    write: bool,
}

impl Mapping {
    const NONE: Mapping = Mapping {
        start: 0,
        end: 0,
        read: false,
        write: false,
    };
}

/// A fixed-size cache (no allocation: the miss path runs inside the abort
/// handler, possibly inside a signal handler).
struct Cache {
    n: usize,
    m: [Mapping; MAP_CACHE],
}

impl Cache {
    fn as_slice(&self) -> &[Mapping] {
        &self.m[..self.n]
    }
    /// Append, evicting the oldest entry when full.
    fn push(&mut self, m: Mapping) {
        if self.n == MAP_CACHE {
            self.m.copy_within(1.., 0);
            self.n -= 1;
        }
        self.m[self.n] = m;
        self.n += 1;
    }
    fn retain(&mut self, keep: impl Fn(&Mapping) -> bool) {
        let mut k = 0;
        for i in 0..self.n {
            if keep(&self.m[i]) {
                self.m[k] = self.m[i];
                k += 1;
            }
        }
        self.n = k;
    }
}

thread_local! {
    static MAPS: RefCell<Cache> = const {
        RefCell::new(Cache { n: 0, m: [Mapping::NONE; MAP_CACHE] })
    };
}

/// This process's own memory, accessed fault-safely.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveMemory;

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |v, &c| {
        let d = (c as char).to_digit(16)?;
        Some(v << 4 | u64::from(d))
    })
}

/// One `/proc/self/maps` line (only its range and permissions are used).
fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut it = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let (range, p) = (it.next()?, it.next()?);
    let dash = range.iter().position(|&b| b == b'-')?;
    Some(Mapping {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        read: p.first() == Some(&b'r'),
        write: p.get(1) == Some(&b'w'),
    })
}

/// Visit the mappings of `/proc/self/maps` in address order until `visit`
/// answers false. No allocation: raw `open`/`read` into a stack buffer
/// (a line longer than the buffer is parsed from its head, which holds
/// the fields used, and its tail skipped).
fn parse_maps(mut visit: impl FnMut(Mapping) -> bool) {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    let (mut have, mut skipping) = (0usize, false);
    'read: loop {
        // SAFETY: reads into the free tail of `buf`.
        let n = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        let eof = n <= 0;
        have += n.max(0) as usize;
        let mut start = 0;
        loop {
            let nl = buf[start..have].iter().position(|&b| b == b'\n');
            let line_end = match nl {
                Some(i) => start + i,
                // The last line without a newline, or a line that fills
                // the whole buffer: take what there is.
                None if (eof || (start == 0 && have == buf.len())) && start < have => have,
                None => break,
            };
            if !skipping {
                if let Some(m) = parse_line(&buf[start..line_end]) {
                    if !visit(m) {
                        break 'read;
                    }
                }
            }
            skipping = nl.is_none();
            start = if nl.is_some() { line_end + 1 } else { have };
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if eof {
            break;
        }
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
}

impl LiveMemory {
    /// Whether `[addr, addr+len)` is mapped readable (or writable, with
    /// `write`), per the thread's mapping cache, refreshed from
    /// `/proc/self/maps` on a miss. A true answer can be stale (see the
    /// module documentation); reads are fault-safe regardless.
    pub fn accessible(&self, addr: u64, len: usize, write: bool) -> bool {
        let Some(end) = addr.checked_add(len as u64) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        let ok = |m: &Mapping| if write { m.write } else { m.read };
        // Fast path: the most recently used mapping covers the access.
        let hit = MAPS.with(|c| {
            c.borrow()
                .as_slice()
                .first()
                .is_some_and(|m| m.start <= addr && end <= m.end && ok(m))
        });
        if hit {
            return true;
        }
        let covered = |maps: &[Mapping]| {
            let mut cur = addr;
            while cur < end {
                match maps.iter().find(|m| m.start <= cur && cur < m.end) {
                    Some(m) if ok(m) => cur = m.end,
                    _ => return false,
                }
            }
            true
        };
        let found_in_cache = MAPS.with(|c| {
            let mut c = c.borrow_mut();
            if !covered(c.as_slice()) {
                return false;
            }
            // Move the mapping holding `addr` to the front.
            if let Some(i) = c
                .as_slice()
                .iter()
                .position(|m| m.start <= addr && addr < m.end)
            {
                c.m.swap(0, i);
            }
            true
        });
        if found_in_cache {
            return true;
        }
        // Miss: look the range up in /proc/self/maps and cache what covers
        // it (at most MAP_CACHE mappings; a longer range is a miss).
        let mut found = Cache {
            n: 0,
            m: [Mapping::NONE; MAP_CACHE],
        };
        parse_maps(|m| {
            if m.end > addr && m.start < end {
                found.push(m);
            }
            m.start < end
        });
        MAPS.with(|c| {
            let mut c = c.borrow_mut();
            let found = found.as_slice();
            c.retain(|old| !found.iter().any(|m| old.start < m.end && m.start < old.end));
            for m in found {
                c.push(*m);
            }
            covered(c.as_slice())
        })
    }

    /// Whether `len` bytes at `addr` are writable (without writing).
    pub fn writable(&self, addr: u64, len: usize) -> bool {
        self.accessible(addr, len, true)
    }

    /// Forget this thread's cached mappings (after the caller changed its
    /// own mappings).
    pub fn forget_mappings() {
        MAPS.with(|c| c.borrow_mut().n = 0);
    }
}

impl Memory for LiveMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        if !self.accessible(addr, buf.len(), false) {
            return Err(MemFault {
                addr,
                size: buf.len(),
                kind: AccessKind::Read,
            });
        }
        // The cache may be stale (another thread unmapped or protected the
        // range since): the read is fault-safe, and a fault drops the cache.
        // Other threads may write the range concurrently: a torn value
        // only makes the commit's re-check fail.
        if !crate::probe::read(addr, buf) {
            Self::forget_mappings();
            return Err(MemFault {
                addr,
                size: buf.len(),
                kind: AccessKind::Read,
            });
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        if !self.accessible(addr, data.len(), true) {
            return Err(MemFault {
                addr,
                size: data.len(),
                kind: AccessKind::Write,
            });
        }
        let p = addr as *mut u8;
        // SAFETY: mapped writable (checked above); byte-wise volatile
        // stores (LiveMemory writes are not on the engine's path: the
        // engine buffers stores and commits them natively).
        unsafe {
            for (i, &b) in data.iter().enumerate() {
                p.add(i).write_volatile(b);
            }
        }
        Ok(())
    }
}

/// A backend that can say whether a store would succeed, without storing.
pub trait CheckWrite {
    /// Whether `len` bytes at `addr` can be written.
    fn can_write(&mut self, addr: u64, len: usize) -> bool;
}

impl CheckWrite for LiveMemory {
    fn can_write(&mut self, addr: u64, len: usize) -> bool {
        self.writable(addr, len)
    }
}

impl CheckWrite for rseq_emu_core::SparseMemory {
    fn can_write(&mut self, addr: u64, len: usize) -> bool {
        // Read the bytes and write them back into a scratch clone-free way:
        // SparseMemory writes are local to this value, so write-back is exact.
        let mut b = vec![0u8; len];
        self.read(addr, &mut b).is_ok() && self.write(addr, &b).is_ok()
    }
}

/// Largest access one log entry holds; wider accesses are split.
pub const ENTRY_MAX: usize = 16;

/// One logged load: the bytes the backend held at `addr` when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedLoad {
    /// First address.
    pub addr: u64,
    len: u8,
    data: [u8; ENTRY_MAX],
}

/// One buffered store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferedStore {
    /// First address.
    pub addr: u64,
    len: u8,
    data: [u8; ENTRY_MAX],
}

macro_rules! entry_impl {
    ($t:ident) => {
        impl $t {
            /// An entry for `bytes` (at most [`ENTRY_MAX`]; longer input is
            /// truncated, the logged view splits wider accesses).
            pub fn new(addr: u64, bytes: &[u8]) -> Self {
                let n = bytes.len().min(ENTRY_MAX);
                let mut data = [0u8; ENTRY_MAX];
                data[..n].copy_from_slice(&bytes[..n]);
                $t {
                    addr,
                    len: n as u8,
                    data,
                }
            }
            /// The bytes.
            pub fn bytes(&self) -> &[u8] {
                &self.data[..self.len as usize]
            }
            /// Number of bytes.
            pub fn len(&self) -> usize {
                self.len as usize
            }
            /// Whether there are no bytes.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }
        }
    };
}
entry_impl!(LoggedLoad);
entry_impl!(BufferedStore);

/// Logged view over a backend: see the module documentation.
#[derive(Debug)]
pub struct Logged<M> {
    /// The backend.
    pub inner: M,
    /// Every load, in program order.
    pub loads: Vec<LoggedLoad>,
    /// Every store, in program order; none has reached `inner`.
    pub stores: Vec<BufferedStore>,
    /// `[lo, hi)` covering every buffered store: a load outside it skips the
    /// overlay scan (a byte copy would otherwise be quadratic).
    store_bounds: (u64, u64),
}

impl<M> Logged<M> {
    /// An empty log over `inner`.
    pub fn new(inner: M) -> Self {
        Logged {
            inner,
            loads: Vec::new(),
            stores: Vec::new(),
            store_bounds: (u64::MAX, 0),
        }
    }
    /// Forget every load and store (keeping the allocations).
    pub fn clear(&mut self) {
        self.loads.clear();
        self.stores.clear();
        self.store_bounds = (u64::MAX, 0);
    }
}

fn overlay(buf: &mut [u8], addr: u64, stores: &[BufferedStore]) {
    let end = addr + buf.len() as u64;
    for s in stores {
        let s_end = s.addr + s.len() as u64;
        let lo = s.addr.max(addr);
        let hi = s_end.min(end);
        for a in lo..hi {
            buf[(a - addr) as usize] = s.data[(a - s.addr) as usize];
        }
    }
}

impl<M: Memory + CheckWrite> Memory for Logged<M> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.inner.read(addr, buf)?;
        for (i, c) in buf.chunks(ENTRY_MAX).enumerate() {
            self.loads
                .push(LoggedLoad::new(addr + (i * ENTRY_MAX) as u64, c));
        }
        let end = addr + buf.len() as u64;
        if addr < self.store_bounds.1 && end > self.store_bounds.0 {
            overlay(buf, addr, &self.stores);
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        if addr.checked_add(data.len() as u64).is_none() || !self.inner.can_write(addr, data.len())
        {
            return Err(MemFault {
                addr,
                size: data.len(),
                kind: AccessKind::Write,
            });
        }
        self.store_bounds = (
            self.store_bounds.0.min(addr),
            self.store_bounds.1.max(addr + data.len() as u64),
        );
        for (i, c) in data.chunks(ENTRY_MAX).enumerate() {
            self.stores
                .push(BufferedStore::new(addr + (i * ENTRY_MAX) as u64, c));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rseq_emu_core::SparseMemory;

    fn sparse() -> SparseMemory {
        let mut m = SparseMemory::new();
        m.map(0x1000, vec![0; 64], true).unwrap();
        m.map(0x2000, (0..16).collect(), false).unwrap();
        m
    }

    #[test]
    fn logged_passes_conformance() {
        rseq_emu_core::memory::conformance(|| Logged::new(sparse()));
    }

    #[test]
    fn logged_buffers_and_logs() {
        let mut m = Logged::new(sparse());
        m.write_u32(0x1000, 0xdead_beef).unwrap();
        assert_eq!(m.inner.read_u32(0x1000).unwrap(), 0, "store buffered");
        assert_eq!(m.read_u16(0x1002).unwrap(), 0xdead);
        assert_eq!(m.loads[0].bytes(), &[0, 0], "log holds backend bytes");
        assert_eq!(m.stores.len(), 1);
    }

    /// The allocation-free reader sees what `/proc/self/maps` says, also
    /// past a line longer than its buffer (a file mapped from a deep path).
    #[test]
    fn maps_reader_matches_proc_self_maps() {
        let mut dir = std::env::temp_dir().join(format!("rseq-emu-maps-{}", std::process::id()));
        for i in 0..8 {
            dir.push(format!("{i}{}", "d".repeat(200)));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, [7u8; 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a private read-only mapping of a 4 KiB file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let expected = |text: &str| -> Vec<(u64, u64, bool, bool)> {
            text.lines()
                .map(|l| {
                    let m = parse_line(l.as_bytes()).unwrap();
                    (m.start, m.end, m.read, m.write)
                })
                .collect()
        };
        // Other test threads may change the mappings in between: retry.
        let mut same = false;
        for _ in 0..20 {
            let text = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(text.lines().any(|l| l.len() > 1024), "a long line exists");
            let mut got = Vec::new();
            parse_maps(|m| {
                got.push((m.start, m.end, m.read, m.write));
                true
            });
            if got == expected(&text) {
                same = true;
                break;
            }
        }
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, 4096) };
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("rseq-emu-maps-{}", std::process::id())),
        );
        assert!(same, "parse_maps disagrees with /proc/self/maps");
    }

    #[test]
    fn live_memory_faults_are_values() {
        // SAFETY: plain anonymous mappings, unmapped at the end.
        unsafe {
            let page = 4096usize;
            let p = libc::mmap(
                std::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let base = p as u64;
            assert_eq!(libc::mprotect(p.add(page), page, libc::PROT_READ), 0);
            assert_eq!(libc::munmap(p.add(2 * page), page), 0);
            let mut m = LiveMemory;
            m.write_u64(base, 0x1122_3344_5566_7788).unwrap();
            assert_eq!(*(p as *const u64), 0x1122_3344_5566_7788);
            assert_eq!(m.read_u32(base + 4).unwrap(), 0x1122_3344);
            assert!(m.write_u8(base + page as u64, 1).is_err());
            assert_eq!(m.read_u8(base + page as u64).unwrap(), 0);
            assert!(m.read_u8(base + 2 * page as u64).is_err());
            assert!(m.write_u64(base + page as u64 - 4, 0).is_err());
            assert!(m.read_u64(u64::MAX - 3).is_err());
            let mut l = Logged::new(LiveMemory);
            assert!(l.write_u8(base + page as u64, 1).is_err());
            l.write_u8(base, 9).unwrap();
            assert_eq!(*(p as *const u8), 0x88, "buffered, not applied");
            libc::munmap(p, 2 * page);
        }
    }
}

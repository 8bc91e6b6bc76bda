//! Memory views for emulating a sequence inside the live process.
//!
//! * [`LiveMemory`] reads this process's memory directly, after checking
//!   the address against the thread's cache of `/proc/self/maps` mappings
//!   (filled on a miss), so a bad pointer in an emulated section is a
//!   [`MemFault`] value, never a SIGSEGV, and a hit costs no system call.
//!   Store targets are checked for write permission the same way.
//! * [`Logged`] wraps any backend: loads are recorded as (addr, bytes read
//!   from the backend), stores are buffered in order and never reach the
//!   backend; loads see earlier buffered stores. The engine's native commit
//!   re-checks the load log and applies the stores.
//!
//! The mapping cache (per thread, [`MAP_CACHE`] entries) can go stale when
//! another thread unmaps or write-protects a range afterwards. A section
//! whose next access hits such a range would fault natively too (the
//! emulation reads exactly the addresses a native run from the same state
//! reads), so the cache adds no failure mode a native run does not have;
//! docs/runtime.md.

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

thread_local! {
    static MAPS: RefCell<Vec<Mapping>> = const { RefCell::new(Vec::new()) };
}

/// This process's own memory, accessed fault-safely.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveMemory;

fn parse_maps(mut visit: impl FnMut(Mapping) -> bool) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let p = perms.as_bytes();
        let m = Mapping {
            start: a,
            end: b,
            read: p.first() == Some(&b'r'),
            write: p.get(1) == Some(&b'w'),
        };
        if !visit(m) {
            return;
        }
    }
}

impl LiveMemory {
    /// Whether `[addr, addr+len)` is mapped readable (or writable, with
    /// `write`), per the thread's mapping cache, refreshed from
    /// `/proc/self/maps` on a miss.
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
            if !covered(&c) {
                return false;
            }
            // Move the mapping holding `addr` to the front.
            if let Some(i) = c.iter().position(|m| m.start <= addr && addr < m.end) {
                c.swap(0, i);
            }
            true
        });
        if found_in_cache {
            return true;
        }
        // Miss: look the range up in /proc/self/maps and cache what covers it.
        let mut found = Vec::new();
        parse_maps(|m| {
            if m.end > addr && m.start < end {
                found.push(m);
            }
            m.start < end
        });
        MAPS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|old| !found.iter().any(|m| old.start < m.end && m.start < old.end));
            for m in &found {
                if c.len() >= MAP_CACHE {
                    c.remove(0);
                }
                c.push(*m);
            }
            covered(&c)
        })
    }

    /// Whether `len` bytes at `addr` are writable (without writing).
    pub fn writable(&self, addr: u64, len: usize) -> bool {
        self.accessible(addr, len, true)
    }

    /// Forget this thread's cached mappings (after the caller changed its
    /// own mappings).
    pub fn forget_mappings() {
        MAPS.with(|c| c.borrow_mut().clear());
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
        let p = addr as *const u8;
        // SAFETY: the range is mapped readable (checked above). Other
        // threads may write it concurrently: the reads are volatile, and a
        // torn value only makes the commit's re-check fail.
        unsafe {
            match buf.len() {
                8 if addr & 7 == 0 => {
                    buf.copy_from_slice(&(p as *const u64).read_volatile().to_ne_bytes())
                }
                4 if addr & 3 == 0 => {
                    buf.copy_from_slice(&(p as *const u32).read_volatile().to_ne_bytes())
                }
                2 if addr & 1 == 0 => {
                    buf.copy_from_slice(&(p as *const u16).read_volatile().to_ne_bytes())
                }
                _ => {
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = p.add(i).read_volatile();
                    }
                }
            }
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

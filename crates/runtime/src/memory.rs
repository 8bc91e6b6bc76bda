//! Memory views for emulating a sequence inside the live process.
//!
//! * [`LiveMemory`] reads and writes this process through
//!   `process_vm_readv`/`process_vm_writev` on itself, so a bad pointer in an
//!   emulated section is a [`MemFault`] value, never a SIGSEGV. Writability
//!   of a store target is checked with the kernel the same way.
//! * [`Logged`] wraps any backend: loads are recorded as (addr, bytes read
//!   from the backend), stores are buffered in order and never reach the
//!   backend; loads see earlier buffered stores. The engine's native commit
//!   re-checks the load log and applies the stores.

use rseq_emu_core::memory::{AccessKind, MemFault, Memory};

thread_local! {
    static WRITABLE: std::cell::RefCell<Vec<(u64, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This process's own memory, accessed fault-safely.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveMemory;

fn self_pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

impl LiveMemory {
    /// Whether `len` bytes at `addr` are writable, without writing
    /// (writing the bytes back would race with other threads): the ranges
    /// and permissions of `/proc/self/maps`.
    ///
    /// Ranges found writable are cached per thread (16 entries): a range
    /// unmapped or write-protected later by another thread would also make
    /// the native sequence fault on that store, so the cache adds no new
    /// failure mode (docs/runtime.md).
    pub fn writable(&self, addr: u64, len: usize) -> bool {
        let Some(end) = addr.checked_add(len as u64) else {
            return false;
        };
        if WRITABLE.with(|c| c.borrow().iter().any(|&(a, b)| a <= addr && end <= b)) {
            return true;
        }
        let ok = Self::writable_uncached(addr, end, len);
        if ok && len > 0 {
            WRITABLE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= 16 {
                    c.remove(0);
                }
                c.push((addr & !0xfff, (end + 0xfff) & !0xfff));
            });
        }
        ok
    }

    fn writable_uncached(addr: u64, end: u64, len: usize) -> bool {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return false;
        };
        let mut cur = addr;
        // Ranges in /proc/self/maps are sorted; walk them covering [addr, end).
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
            if a <= cur && cur < b {
                if perms.as_bytes().get(1) != Some(&b'w') {
                    return false;
                }
                cur = b;
                if cur >= end {
                    return true;
                }
            }
        }
        len == 0
    }
}

impl Memory for LiveMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: buf.len(),
            kind: AccessKind::Read,
        };
        if buf.is_empty() {
            return Ok(());
        }
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(fault);
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: the local iovec covers `buf`, which we own mutably; the
        // remote one is checked by the kernel, which returns EFAULT or a
        // short count instead of faulting.
        let n = unsafe { libc::process_vm_readv(self_pid(), &local, 1, &remote, 1, 0) };
        if n == buf.len() as isize {
            Ok(())
        } else {
            Err(fault)
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: data.len(),
            kind: AccessKind::Write,
        };
        if data.is_empty() {
            return Ok(());
        }
        if !self.writable(addr, data.len()) {
            return Err(fault);
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: the kernel reads `data` and checks the remote range.
        let n = unsafe { libc::process_vm_writev(self_pid(), &local, 1, &remote, 1, 0) };
        if n == data.len() as isize {
            Ok(())
        } else {
            Err(fault)
        }
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
}

impl<M> Logged<M> {
    /// An empty log over `inner`.
    pub fn new(inner: M) -> Self {
        Logged {
            inner,
            loads: Vec::new(),
            stores: Vec::new(),
        }
    }
    /// Forget every load and store (keeping the allocations).
    pub fn clear(&mut self) {
        self.loads.clear();
        self.stores.clear();
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
        overlay(buf, addr, &self.stores);
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

//! The memory an emulated sequence sees.
//!
//! Modelled on rust-vmm's `vm-memory`: the [`Memory`] trait has two required
//! methods (read and write a byte slice at an address) and every sized access
//! is a default method, so each backend gets the whole API for free. Backends:
//!
//! * [`SparseMemory`] — a snapshot of a few regions, for fixtures and tests;
//! * the live process with a read/write log (the runtime crate);
//! * a ptrace'd process (the harness).
//!
//! Every access can be observed by wrapping a backend in [`Observed`] with an
//! [`AccessObserver`]; `()` observes nothing and costs nothing.

use std::collections::BTreeMap;
use thiserror::Error;

/// Whether an access reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// An access that the backend refused: nothing is mapped at `addr`, or the
/// region is read-only for a write. An architectural fault, part of an
/// emulation outcome, not a host error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[error("{kind:?} of {size} bytes at 0x{addr:x} faulted")]
pub struct MemFault {
    /// First address of the faulting access.
    pub addr: u64,
    /// Access size in bytes.
    pub size: usize,
    /// Read or write.
    pub kind: AccessKind,
}

/// Byte-addressed, little-endian memory with fallible accesses.
///
/// Accesses are 1, 2, 4, 8 or 16 bytes through the sized helpers, or any
/// length through [`Memory::read`]/[`Memory::write`]. A failed access has no
/// effect (a write that faults writes nothing).
pub trait Memory {
    /// Fill `buf` from `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Store `data` at `addr`; all or nothing.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault>;

    /// Load a byte.
    #[inline]
    fn read_u8(&mut self, addr: u64) -> Result<u8, MemFault> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
    /// Load a little-endian `u16`.
    #[inline]
    fn read_u16(&mut self, addr: u64) -> Result<u16, MemFault> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Load a little-endian `u32`.
    #[inline]
    fn read_u32(&mut self, addr: u64) -> Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Load a little-endian `u64`.
    #[inline]
    fn read_u64(&mut self, addr: u64) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Load a little-endian `u128`.
    #[inline]
    fn read_u128(&mut self, addr: u64) -> Result<u128, MemFault> {
        let mut b = [0u8; 16];
        self.read(addr, &mut b)?;
        Ok(u128::from_le_bytes(b))
    }
    /// Load `size` (1, 2, 4 or 8) bytes zero-extended to `u64`.
    #[inline]
    fn read_sized(&mut self, addr: u64, size: usize) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        let n = size.min(8);
        self.read(addr, &mut b[..n])?;
        Ok(u64::from_le_bytes(b))
    }
    /// Store a byte.
    #[inline]
    fn write_u8(&mut self, addr: u64, v: u8) -> Result<(), MemFault> {
        self.write(addr, &[v])
    }
    /// Store a little-endian `u16`.
    #[inline]
    fn write_u16(&mut self, addr: u64, v: u16) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Store a little-endian `u32`.
    #[inline]
    fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Store a little-endian `u64`.
    #[inline]
    fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Store a little-endian `u128`.
    #[inline]
    fn write_u128(&mut self, addr: u64, v: u128) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Store the low `size` (1, 2, 4 or 8) bytes of `v`.
    #[inline]
    fn write_sized(&mut self, addr: u64, size: usize, v: u64) -> Result<(), MemFault> {
        let b = v.to_le_bytes();
        self.write(addr, &b[..size.min(8)])
    }
}

impl<M: Memory + ?Sized> Memory for &mut M {
    #[inline]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        (**self).read(addr, buf)
    }
    #[inline]
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        (**self).write(addr, data)
    }
}

/// One observed access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read or write.
    pub kind: AccessKind,
    /// First byte.
    pub addr: u64,
    /// The bytes read or written (empty when the access faulted).
    pub data: Vec<u8>,
    /// Whether the backend refused the access.
    pub faulted: bool,
}

/// Sees every access made through an [`Observed`] memory.
pub trait AccessObserver {
    /// Called after each access with its result.
    fn on_access(&mut self, kind: AccessKind, addr: u64, data: &[u8], faulted: bool);
}

impl AccessObserver for () {
    #[inline(always)]
    fn on_access(&mut self, _: AccessKind, _: u64, _: &[u8], _: bool) {}
}

/// An observer that keeps every access in order.
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    /// The accesses, oldest first.
    pub accesses: Vec<Access>,
}

impl AccessObserver for AccessLog {
    fn on_access(&mut self, kind: AccessKind, addr: u64, data: &[u8], faulted: bool) {
        self.accesses.push(Access {
            kind,
            addr,
            data: if faulted { Vec::new() } else { data.to_vec() },
            faulted,
        });
    }
}

/// A memory backend whose accesses are reported to an observer.
#[derive(Debug)]
pub struct Observed<M, O> {
    /// The backend.
    pub inner: M,
    /// The observer.
    pub observer: O,
}

impl<M: Memory, O: AccessObserver> Observed<M, O> {
    /// Wrap `inner`, reporting to `observer`.
    pub fn new(inner: M, observer: O) -> Self {
        Observed { inner, observer }
    }
}

impl<M: Memory, O: AccessObserver> Memory for Observed<M, O> {
    #[inline]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = self.inner.read(addr, buf);
        self.observer
            .on_access(AccessKind::Read, addr, buf, r.is_err());
        r
    }
    #[inline]
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = self.inner.write(addr, data);
        self.observer
            .on_access(AccessKind::Write, addr, data, r.is_err());
        r
    }
}

/// One region of a [`SparseMemory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// The bytes.
    pub data: Vec<u8>,
    /// Whether stores may change it.
    pub writable: bool,
}

/// Error building a [`SparseMemory`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RegionError {
    /// The new region overlaps an existing one.
    #[error("region [0x{start:x}, +0x{len:x}) overlaps an existing region at 0x{existing:x}")]
    Overlap {
        /// Start of the new region.
        start: u64,
        /// Length of the new region.
        len: u64,
        /// Start of the region it overlaps.
        existing: u64,
    },
    /// The region wraps around the address space.
    #[error("region [0x{start:x}, +0x{len:x}) wraps around the address space")]
    Wraps {
        /// Start of the region.
        start: u64,
        /// Length of the region.
        len: u64,
    },
}

/// A sparse snapshot: a few non-overlapping regions, everything else
/// unmapped. Accesses may span adjacent regions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseMemory {
    regions: BTreeMap<u64, Region>,
}

impl SparseMemory {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `data` at `start`.
    pub fn map(&mut self, start: u64, data: Vec<u8>, writable: bool) -> Result<(), RegionError> {
        let len = data.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .ok_or(RegionError::Wraps { start, len })?;
        if let Some((&s, r)) = self.regions.range(..end).next_back() {
            if s + r.data.len() as u64 > start {
                return Err(RegionError::Overlap {
                    start,
                    len,
                    existing: s,
                });
            }
        }
        self.regions.insert(start, Region { data, writable });
        Ok(())
    }

    /// The regions, by start address.
    pub fn regions(&self) -> impl Iterator<Item = (u64, &Region)> {
        self.regions.iter().map(|(&a, r)| (a, r))
    }

    /// The region containing `addr` and the offset of `addr` in it.
    #[inline]
    fn locate(&self, addr: u64) -> Option<(u64, &Region)> {
        let (&s, r) = self.regions.range(..=addr).next_back()?;
        if addr - s < r.data.len() as u64 {
            Some((s, r))
        } else {
            None
        }
    }

    /// Whether every byte of `[addr, addr+len)` is mapped (and writable if asked).
    fn check(&self, addr: u64, len: usize, write: bool) -> bool {
        let mut a = addr;
        let end = match addr.checked_add(len as u64) {
            Some(e) => e,
            None => return false,
        };
        while a < end {
            match self.locate(a) {
                Some((s, r)) if !write || r.writable => a = s + r.data.len() as u64,
                _ => return false,
            }
        }
        true
    }
}

impl Memory for SparseMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: buf.len(),
            kind: AccessKind::Read,
        };
        // Fast path: the whole access inside one region.
        if let Some((s, r)) = self.locate(addr) {
            let off = (addr - s) as usize;
            if let Some(src) = r.data.get(off..off + buf.len()) {
                buf.copy_from_slice(src);
                return Ok(());
            }
        }
        if !self.check(addr, buf.len(), false) {
            return Err(fault);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            let (s, r) = self.locate(a).ok_or(fault)?;
            *b = r.data[(a - s) as usize];
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: data.len(),
            kind: AccessKind::Write,
        };
        if !self.check(addr, data.len(), true) {
            return Err(fault);
        }
        for (i, &b) in data.iter().enumerate() {
            let a = addr + i as u64;
            let (&s, r) = self.regions.range_mut(..=a).next_back().ok_or(fault)?;
            r.data[(a - s) as usize] = b;
        }
        Ok(())
    }
}

/// The conformance suite every [`Memory`] backend must pass. `make` builds
/// a backend holding 64 writable bytes at `0x1000` (initially zero), 16
/// read-only bytes at `0x2000` holding `0..16`, and nothing at `0x3000`.
pub fn conformance<M: Memory>(mut make: impl FnMut() -> M) {
    let mut m = make();
    m.write_u64(0x1000, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(m.read_u64(0x1000).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(m.read_u8(0x1000).unwrap(), 0x88);
    assert_eq!(m.read_u16(0x1001).unwrap(), 0x6677);
    assert_eq!(m.read_u32(0x1004).unwrap(), 0x1122_3344);
    m.write_u128(0x1010, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)
        .unwrap();
    assert_eq!(
        m.read_u128(0x1010).unwrap(),
        0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10
    );
    m.write_sized(0x1020, 2, 0xabcd_ef01).unwrap();
    assert_eq!(m.read_sized(0x1020, 4).unwrap(), 0xef01);
    assert_eq!(m.read_u8(0x2003).unwrap(), 3);
    let f = m.write_u8(0x2000, 1).unwrap_err();
    assert_eq!((f.addr, f.kind), (0x2000, AccessKind::Write));
    assert_eq!(
        m.read_u8(0x2000).unwrap(),
        0,
        "a refused write has no effect"
    );
    let f = m.read_u32(0x3000).unwrap_err();
    assert_eq!((f.addr, f.size, f.kind), (0x3000, 4, AccessKind::Read));
    // An access running off the end of a region faults as a whole.
    assert!(m.write_u64(0x103c, u64::MAX).is_err());
    assert_eq!(
        m.read_u32(0x103c).unwrap(),
        0,
        "a partial write never happens"
    );
    assert!(m.read_u64(u64::MAX - 3).is_err());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse() -> SparseMemory {
        let mut m = SparseMemory::new();
        m.map(0x1000, vec![0; 64], true).unwrap();
        m.map(0x2000, (0..16).collect(), false).unwrap();
        m
    }

    #[test]
    fn sparse_passes_conformance() {
        conformance(sparse);
    }

    #[test]
    fn observed_passes_conformance_and_logs() {
        conformance(|| Observed::new(sparse(), AccessLog::default()));
        let mut m = Observed::new(sparse(), AccessLog::default());
        m.write_u16(0x1000, 0xbeef).unwrap();
        let _ = m.read_u8(0x3000);
        assert_eq!(m.observer.accesses.len(), 2);
        assert_eq!(m.observer.accesses[0].data, vec![0xef, 0xbe]);
        assert!(m.observer.accesses[1].faulted);
    }

    #[test]
    fn spanning_adjacent_regions_and_overlap_errors() {
        let mut m = SparseMemory::new();
        m.map(0x10, vec![1; 8], true).unwrap();
        m.map(0x18, vec![2; 8], true).unwrap();
        assert_eq!(m.read_u32(0x16).unwrap(), 0x0202_0101);
        m.write_u32(0x16, 0).unwrap();
        assert_eq!(m.read_u64(0x14).unwrap(), 0x0202_0000_0000_0101);
        assert!(matches!(
            m.map(0x1c, vec![0; 8], true),
            Err(RegionError::Overlap { .. })
        ));
        assert!(matches!(
            m.map(u64::MAX, vec![0; 2], true),
            Err(RegionError::Wraps { .. })
        ));
    }
}

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
///
/// Regions are kept sorted by start address; the region of the last access
/// is remembered, so the common case (a section hitting one or two regions
/// over and over) costs one range check, and the sized accessors
/// (`read_u64`, `write_u8`, …) copy a fixed number of bytes.
#[derive(Clone, Debug, Default)]
pub struct SparseMemory {
    /// Sorted by start, non-overlapping.
    regions: Vec<(u64, Region)>,
    /// Index of the region the last access hit (a hint; may be stale only
    /// as far as "any valid index or 0").
    last: usize,
}

impl PartialEq for SparseMemory {
    fn eq(&self, other: &Self) -> bool {
        self.regions == other.regions
    }
}

impl Eq for SparseMemory {}

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
        // First region starting at or after `end`; the one before it is the
        // only candidate for an overlap.
        let at = self.regions.partition_point(|(s, _)| *s < end);
        if let Some((s, r)) = at.checked_sub(1).map(|i| &self.regions[i]) {
            if s + r.data.len() as u64 > start {
                return Err(RegionError::Overlap {
                    start,
                    len,
                    existing: *s,
                });
            }
        }
        self.regions.insert(at, (start, Region { data, writable }));
        self.last = 0;
        Ok(())
    }

    /// The regions, by start address.
    pub fn regions(&self) -> impl Iterator<Item = (u64, &Region)> {
        self.regions.iter().map(|(a, r)| (*a, r))
    }

    /// Index of the region containing `addr`.
    #[inline]
    fn find(&self, addr: u64) -> Option<usize> {
        let i = self
            .regions
            .partition_point(|(s, _)| *s <= addr)
            .checked_sub(1)?;
        let (s, r) = &self.regions[i];
        (addr - s < r.data.len() as u64).then_some(i)
    }

    /// Offset of `[addr, addr+len)` in the region at `i` if it lies wholly inside it.
    #[inline(always)]
    fn inside(&self, i: usize, addr: u64, len: usize) -> Option<usize> {
        let (s, r) = self.regions.get(i)?;
        let off = addr.wrapping_sub(*s);
        let n = r.data.len() as u64;
        (off < n && n - off >= len as u64).then_some(off as usize)
    }

    /// Region index and offset of an access lying wholly inside one region
    /// (writable if asked): the last region first, then a search.
    #[inline(always)]
    fn hit(&mut self, addr: u64, len: usize, write: bool) -> Option<(usize, usize)> {
        let i = self.last;
        if let Some(off) = self.inside(i, addr, len) {
            if !write || self.regions[i].1.writable {
                return Some((i, off));
            }
            return None;
        }
        self.hit_slow(addr, len, write)
    }

    #[inline(never)]
    fn hit_slow(&mut self, addr: u64, len: usize, write: bool) -> Option<(usize, usize)> {
        let i = self.find(addr)?;
        self.last = i;
        let off = self.inside(i, addr, len)?;
        (!write || self.regions[i].1.writable).then_some((i, off))
    }

    /// Whether every byte of `[addr, addr+len)` is mapped (and writable if asked).
    fn check(&self, addr: u64, len: usize, write: bool) -> bool {
        let mut a = addr;
        let end = match addr.checked_add(len as u64) {
            Some(e) => e,
            None => return false,
        };
        while a < end {
            match self.find(a).map(|i| &self.regions[i]) {
                Some((s, r)) if !write || r.writable => a = s + r.data.len() as u64,
                _ => return false,
            }
        }
        true
    }

    /// An access that spans regions or faults (the rare case).
    #[inline(never)]
    fn read_spanning(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: buf.len(),
            kind: AccessKind::Read,
        };
        if !self.check(addr, buf.len(), false) {
            return Err(fault);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            let (s, r) = self.find(a).map(|i| &self.regions[i]).ok_or(fault)?;
            *b = r.data[(a - s) as usize];
        }
        Ok(())
    }

    /// A store that spans regions or faults (the rare case).
    #[inline(never)]
    fn write_spanning(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
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
            let k = self.find(a).ok_or(fault)?;
            let (s, r) = &mut self.regions[k];
            r.data[(a - *s) as usize] = b;
        }
        Ok(())
    }

    /// Load `N` bytes.
    #[inline(always)]
    fn load<const N: usize>(&mut self, addr: u64) -> Result<[u8; N], MemFault> {
        if let Some((i, off)) = self.hit(addr, N, false) {
            let mut b = [0u8; N];
            b.copy_from_slice(&self.regions[i].1.data[off..off + N]);
            return Ok(b);
        }
        let mut b = [0u8; N];
        self.read_spanning(addr, &mut b)?;
        Ok(b)
    }

    /// Store `N` bytes.
    #[inline(always)]
    fn store<const N: usize>(&mut self, addr: u64, v: [u8; N]) -> Result<(), MemFault> {
        if let Some((i, off)) = self.hit(addr, N, true) {
            self.regions[i].1.data[off..off + N].copy_from_slice(&v);
            return Ok(());
        }
        self.write_spanning(addr, &v)
    }
}

impl Memory for SparseMemory {
    #[inline]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        if let Some((i, off)) = self.hit(addr, buf.len(), false) {
            buf.copy_from_slice(&self.regions[i].1.data[off..off + buf.len()]);
            return Ok(());
        }
        self.read_spanning(addr, buf)
    }

    #[inline]
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        if let Some((i, off)) = self.hit(addr, data.len(), true) {
            self.regions[i].1.data[off..off + data.len()].copy_from_slice(data);
            return Ok(());
        }
        self.write_spanning(addr, data)
    }

    #[inline]
    fn read_u8(&mut self, addr: u64) -> Result<u8, MemFault> {
        Ok(self.load::<1>(addr)?[0])
    }
    #[inline]
    fn read_u16(&mut self, addr: u64) -> Result<u16, MemFault> {
        self.load(addr).map(u16::from_le_bytes)
    }
    #[inline]
    fn read_u32(&mut self, addr: u64) -> Result<u32, MemFault> {
        self.load(addr).map(u32::from_le_bytes)
    }
    #[inline]
    fn read_u64(&mut self, addr: u64) -> Result<u64, MemFault> {
        self.load(addr).map(u64::from_le_bytes)
    }
    #[inline]
    fn read_u128(&mut self, addr: u64) -> Result<u128, MemFault> {
        self.load(addr).map(u128::from_le_bytes)
    }
    #[inline]
    fn write_u8(&mut self, addr: u64, v: u8) -> Result<(), MemFault> {
        self.store(addr, [v])
    }
    #[inline]
    fn write_u16(&mut self, addr: u64, v: u16) -> Result<(), MemFault> {
        self.store(addr, v.to_le_bytes())
    }
    #[inline]
    fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), MemFault> {
        self.store(addr, v.to_le_bytes())
    }
    #[inline]
    fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), MemFault> {
        self.store(addr, v.to_le_bytes())
    }
    #[inline]
    fn write_u128(&mut self, addr: u64, v: u128) -> Result<(), MemFault> {
        self.store(addr, v.to_le_bytes())
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
    fn alternating_regions_and_permissions() {
        // Regions mapped out of order; accesses hop between them so the
        // last-region hint is wrong half the time.
        let mut m = SparseMemory::new();
        m.map(0x5000, vec![5; 16], false).unwrap();
        m.map(0x1000, vec![1; 16], true).unwrap();
        m.map(0x3000, vec![3; 16], true).unwrap();
        let starts: Vec<u64> = m.regions().map(|(a, _)| a).collect();
        assert_eq!(starts, [0x1000, 0x3000, 0x5000]);
        for k in 0..4u64 {
            m.write_u32(0x1000 + 4 * k, k as u32).unwrap();
            assert_eq!(m.read_u8(0x5000 + k).unwrap(), 5);
            m.write_u16(0x3000 + 2 * k, 0x100 + k as u16).unwrap();
            assert!(m.write_u8(0x5000 + k, 0).is_err());
            assert!(m.read_u8(0x4000).is_err());
            assert_eq!(m.read_u32(0x1000 + 4 * k).unwrap(), k as u32);
        }
        assert_eq!(m.read_u64(0x3000).unwrap(), 0x0103_0102_0101_0100);
        // The end of a region: the last byte reads, one past it faults.
        assert_eq!(m.read_u8(0x100c).unwrap(), 3);
        assert_eq!(m.read_u8(0x100f).unwrap(), 0);
        assert!(m.read_u16(0x100f).is_err());
        assert!(m.read_u8(0x1010).is_err());
        assert!(m.read_u64(0x5009).is_err());
        assert_eq!(m.read_u64(0x5008).unwrap(), 0x0505_0505_0505_0505);
        // Mapping between existing regions, and an overlap on either side.
        m.map(0x2000, vec![2; 0x1000], true).unwrap();
        assert!(m.map(0x1fff, vec![0; 1], true).is_ok());
        assert!(m.map(0x1008, vec![0; 8], true).is_err());
        assert!(m.map(0x2fff, vec![0; 2], true).is_err());
        // Now 0x1000..0x3010 is contiguous: a spanning store.
        m.write_u64(0x2ffc, u64::MAX).unwrap();
        assert_eq!(m.read_u32(0x3000).unwrap(), u32::MAX);
        assert_eq!(m.read_u32(0x2ffc).unwrap(), u32::MAX);
        assert_eq!(m, m.clone());
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

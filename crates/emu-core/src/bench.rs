//! Support shared by the architecture crates' speed measurements (their
//! criterion benches and `examples/exec_speed.rs`): a flat memory and a
//! best-of-N timer. Not part of the emulator's API.

use std::hint::black_box;
use std::time::Instant;

use crate::memory::{AccessKind, MemFault, Memory};

/// One flat writable region at `base`: isolates the executor from the cost
/// of [`SparseMemory`](crate::SparseMemory)'s region lookup. Anything
/// outside `base..base + bytes.len()` faults.
#[derive(Clone, Debug)]
pub struct Flat {
    /// Address of `bytes[0]`.
    pub base: u64,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl Memory for Flat {
    #[inline]
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let o = addr.wrapping_sub(self.base) as usize;
        match self.bytes.get(o..o.wrapping_add(buf.len())) {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(MemFault {
                addr,
                size: buf.len(),
                kind: AccessKind::Read,
            }),
        }
    }
    #[inline]
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let o = addr.wrapping_sub(self.base) as usize;
        match self.bytes.get_mut(o..o.wrapping_add(data.len())) {
            Some(s) => {
                s.copy_from_slice(data);
                Ok(())
            }
            None => Err(MemFault {
                addr,
                size: data.len(),
                kind: AccessKind::Write,
            }),
        }
    }
}

/// The fastest of `rounds` batches of `batch` calls of `f`, in seconds per
/// call: a shared machine's load disturbs the minimum far less than a mean.
pub fn best(rounds: u32, batch: u32, mut f: impl FnMut() -> u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        best = best.min(t.elapsed().as_secs_f64() / f64::from(batch));
    }
    best
}

/// Print one execution figure: time per run and instructions per second.
pub fn report(name: &str, secs: f64, insns: u64) {
    println!(
        "{name:<40} {:>9.1} ns  {:>6.1} M insns/s",
        secs * 1e9,
        insns as f64 / secs / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_reads_and_writes_inside_and_faults_outside() {
        let mut m = Flat {
            base: 0x1000,
            bytes: vec![0; 16],
        };
        m.write_u64(0x1008, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(m.read_u32(0x100c).unwrap(), 0x0102_0304);
        let f = m.read_u64(0x1009).unwrap_err();
        assert_eq!((f.addr, f.size, f.kind), (0x1009, 8, AccessKind::Read));
        let f = m.write_u8(0xfff, 1).unwrap_err();
        assert_eq!((f.addr, f.size, f.kind), (0xfff, 1, AccessKind::Write));
        let f = m.write_u64(u64::MAX, 1).unwrap_err();
        assert_eq!(f.kind, AccessKind::Write);
        assert_eq!(m.bytes[..8], [0; 8], "refused writes change nothing");
    }

    #[test]
    fn best_is_the_fastest_batch() {
        let mut calls = 0u64;
        let t = best(3, 4, || {
            calls += 1;
            calls
        });
        assert_eq!(calls, 12);
        assert!((0.0..1.0).contains(&t), "{t}");
    }
}

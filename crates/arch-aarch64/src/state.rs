//! The aarch64 register state an rseq critical section can observe.

use rseq_emu_core::ArchState;

/// NZCV bits as they sit in the `NZCV` system register.
pub mod nzcv {
    /// Negative.
    pub const N: u32 = 1 << 31;
    /// Zero.
    pub const Z: u32 = 1 << 30;
    /// Carry.
    pub const C: u32 = 1 << 29;
    /// Overflow.
    pub const V: u32 = 1 << 28;
}

/// General registers, sp, pc, flags, SIMD&FP registers and the thread pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct A64State {
    /// x0..x30.
    pub x: [u64; 31],
    /// The stack pointer.
    pub sp: u64,
    /// The program counter.
    pub pc: u64,
    /// NZCV in bits 31..28, other bits zero.
    pub nzcv: u32,
    /// v0..v31 (q registers).
    pub v: [u128; 32],
    /// `tpidr_el0`, the thread pointer.
    pub tpidr_el0: u64,
}

impl ArchState for A64State {
    #[inline]
    fn ip(&self) -> u64 {
        self.pc
    }
    #[inline]
    fn set_ip(&mut self, ip: u64) {
        self.pc = ip;
    }
}

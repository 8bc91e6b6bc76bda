//! The x86_64 register state an rseq critical section can observe.

use rseq_emu_core::ArchState;

/// General-purpose register numbers, in hardware encoding order.
pub mod reg {
    /// rax
    pub const RAX: usize = 0;
    /// rcx
    pub const RCX: usize = 1;
    /// rdx
    pub const RDX: usize = 2;
    /// rbx
    pub const RBX: usize = 3;
    /// rsp
    pub const RSP: usize = 4;
    /// rbp
    pub const RBP: usize = 5;
    /// rsi
    pub const RSI: usize = 6;
    /// rdi
    pub const RDI: usize = 7;
    /// r8
    pub const R8: usize = 8;
    /// r9
    pub const R9: usize = 9;
    /// r10
    pub const R10: usize = 10;
    /// r11
    pub const R11: usize = 11;
    /// r12
    pub const R12: usize = 12;
    /// r13
    pub const R13: usize = 13;
    /// r14
    pub const R14: usize = 14;
    /// r15
    pub const R15: usize = 15;
    /// Names in encoding order.
    pub const NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
}

/// EFLAGS bits.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Parity (of the low byte of the result).
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (bit 3 to 4).
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
    /// Bit 1 of RFLAGS always reads as 1.
    pub const RESERVED1: u64 = 1 << 1;
}

/// Registers, flags and segment bases: everything user code in a critical
/// section can read or write, except vector registers (not emulated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct X86State {
    /// rax..r15 in encoding order (see [`reg`]).
    pub gpr: [u64; 16],
    /// The instruction pointer.
    pub rip: u64,
    /// RFLAGS (only the status flags and DF are meaningful here).
    pub rflags: u64,
    /// The FS segment base (the thread pointer on Linux).
    pub fs_base: u64,
    /// The GS segment base.
    pub gs_base: u64,
}

impl ArchState for X86State {
    #[inline]
    fn ip(&self) -> u64 {
        self.rip
    }
    #[inline]
    fn set_ip(&mut self, ip: u64) {
        self.rip = ip;
    }
}

//! aarch64 support for rseq-emu: a decoder from the raw instruction word's
//! encoding fields (yaxpeax-arm for the disassembly text) into cached
//! operations, and an executor that reproduces the architecture bit for bit
//! on the subset it accepts (everything else is `Unsupported`).
//!
//! ```
//! use rseq_emu_aarch64::{A64State, Aarch64};
//! use rseq_emu_core::{Arch, SparseMemory};
//! // adds w0, w1, #1
//! let op = Aarch64::decode_op(0x3100_0420, 0x1000).unwrap();
//! let mut st = A64State { pc: 0x1000, ..A64State::default() };
//! st.x[1] = 0x7fff_ffff;
//! Aarch64::execute(&op, &mut st, &mut SparseMemory::new()).unwrap();
//! assert_eq!(st.x[0], 0x8000_0000);
//! assert_eq!(st.nzcv, rseq_emu_aarch64::nzcv::N | rseq_emu_aarch64::nzcv::V);
//! assert_eq!(st.pc, 0x1004);
//! ```

mod alu;
mod branch;
mod decode;
mod exec;
pub mod fuzzing;
mod mem;
mod op;
pub mod signature;
mod state;
#[cfg(test)]
mod tests;

pub use decode::{decode_bit_masks, decode_word, Aarch64};
pub use op::{
    Access, Addr, BfmOp, CselOp, Extend, Kind, LogicOp, MemOp, Op, PairMode, PairOp, Shift, Unary,
    SP, ZR,
};
pub use state::{nzcv, A64State};
#[cfg(feature = "oracle")]
pub mod gen;
#[cfg(feature = "oracle")]
pub mod oracle;

//! x86_64 support for rseq-emu: an iced-x86 decoder into cached operations
//! and an executor that reproduces the CPU bit for bit on the subset it
//! accepts (everything else is `Unsupported` and the engine falls back).

mod decode;
pub mod signature;
mod state;

pub use decode::{Op, X86_64};
pub use state::{flags, reg, X86State};

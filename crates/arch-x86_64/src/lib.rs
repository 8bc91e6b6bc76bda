//! x86_64 support for rseq-emu: an iced-x86 decoder into cached operations
//! and an executor that reproduces the CPU bit for bit on the subset it
//! accepts (everything else is `Unsupported` and the engine falls back).

mod alu;
mod bits;
mod branch;
mod decode;
mod eflags;
mod exec;
mod fast;
pub mod fuzzing;
#[cfg(all(feature = "oracle", target_arch = "x86_64", target_os = "linux"))]
pub mod gen;
mod mov;
#[cfg(all(feature = "oracle", target_arch = "x86_64", target_os = "linux"))]
pub mod oracle;
pub mod signature;
mod stack;
mod state;
mod undefined;

pub use decode::{format, lower, Kind, MemRef, Op, Opnd, Seg, NO_REG, X86_64};
pub use state::{flags, reg, X86State};
pub use undefined::undefined_flags;

//! aarch64 support for rseq-emu: a yaxpeax-arm decoder into cached
//! operations and an executor that reproduces the architecture bit for bit
//! on the subset it accepts (everything else is `Unsupported`).

mod decode;
pub mod signature;
mod state;

pub use decode::{Aarch64, Op};
pub use state::{nzcv, A64State};
#[cfg(feature = "oracle")]
pub mod gen;
#[cfg(feature = "oracle")]
pub mod oracle;

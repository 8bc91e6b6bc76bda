//! The architecture boundary: everything instruction-set specific (thread
//! pointer, abort stub, register save layout, commit section) lives in one
//! module per architecture. Only x86_64 is built; see docs/runtime.md for
//! what an aarch64 port supplies.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

//! The architecture boundary: everything instruction-set specific (thread
//! pointer, the executor types, abort stub and its register save layout,
//! entry-register analysis, commit section) lives in one module per
//! architecture, which exports the same names. Only x86_64 is built; see
//! docs/runtime.md for what an aarch64 port supplies.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

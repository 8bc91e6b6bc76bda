//! rseq-emu core: everything that does not depend on the instruction set.
//!
//! * [`abi`] — the kernel's `struct rseq_cs` / `struct rseq` and the exact
//!   descriptor checks the kernel makes;
//! * [`memory`] — the [`Memory`] trait, its snapshot backend and access
//!   observation;
//! * [`arch`] — the [`Arch`] trait and the run loop over a decoded
//!   [`Program`] with its [`Outcome`]s;
//! * [`rng`] — the seedable PRNG every random case generator draws from.
//!
//! Architecture crates depend on this one, never the other way round.

pub mod abi;
pub mod arch;
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
pub mod rng;

pub use abi::{validate, ArchKind, DescriptorError, RseqCs};
pub use arch::{
    Arch, ArchState, DecodedInsn, Flow, Outcome, Program, ProgramError, RunResult, Stop,
};
pub use memory::{
    Access, AccessKind, AccessLog, AccessObserver, MemFault, Memory, Observed, SparseMemory,
};

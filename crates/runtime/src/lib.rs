//! rseq-emu runtime: the fallback engine an application links so that its
//! restartable sequences make progress however often they abort.
//!
//! Pieces landed so far:
//! * [`policy`] — when to emulate (auto/always/never, abort threshold,
//!   `RSEQ_EMU_MODE` / `RSEQ_EMU_THRESHOLD`);
//! * [`memory`] — the live-process [`memory::LiveMemory`] (faults are values,
//!   never crashes) and the [`memory::Logged`] view (loads logged, stores
//!   buffered in order) that the native commit re-validates;
//! * [`registration`] — the thread's rseq area: glibc's when present.

pub mod arch;
pub mod capi;
pub mod commit;
pub mod engine;
pub mod memory;
pub mod policy;
pub mod registration;

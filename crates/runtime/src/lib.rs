//! rseq-emu runtime: the fallback engine an application links so that its
//! restartable sequences make progress however often they abort.
//!
//! * [`policy`] — when to emulate (auto/always/never, abort threshold,
//!   `RSEQ_EMU_MODE` / `RSEQ_EMU_THRESHOLD`);
//! * [`memory`] — the live-process [`memory::LiveMemory`] (faults are values,
//!   never crashes) and the [`memory::Logged`] view (loads logged, stores
//!   buffered in order) that the native commit re-validates;
//! * [`probe`] — fault-safe reads (a stale mapping cache or a freed
//!   pointer is a fault value, never a SIGSEGV in the engine);
//! * [`registration`] — the thread's rseq area: glibc's when present;
//! * [`section`] — descriptors found from their abort_ip, validated,
//!   decoded and analysed once (cached);
//! * [`engine`] — emulate on the target CPU, commit natively, bounded
//!   rounds; [`abort`] — what the abort stub's call does;
//! * [`arch`] — everything instruction-set specific: the abort stub and its
//!   macro ([`rseq_emu_asm_define_abort!`]), the register save layout, the
//!   entry-register check, the commit section;
//! * [`capi`] — the C API of `include/rseq_emu.h`.

pub mod abort;
pub mod arch;
pub mod capi;
pub mod commit;
pub mod engine;
pub mod memory;
pub mod policy;
pub mod probe;
pub mod registration;
pub mod section;

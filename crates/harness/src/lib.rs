//! Library side of the `rseq-emu` command line: the pieces other tools (and
//! the fuzz targets) reuse.
//!
//! * [`elf`] — find every rseq descriptor in an ELF file of either
//!   architecture, apply dynamic relocations, validate and decode each
//!   critical section.
//! * [`ptrace`] — a stopped tracee's memory, registers and live rseq
//!   critical section, for the tracer and the debugger support.

pub mod elf;
pub mod ptrace;

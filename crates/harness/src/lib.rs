//! Library side of the `rseq-emu` command line: the pieces other tools (and
//! the fuzz targets) reuse.
//!
//! * [`elf`] — find every rseq descriptor in an ELF file of either
//!   architecture, apply dynamic relocations, validate and decode each
//!   critical section.

pub mod elf;

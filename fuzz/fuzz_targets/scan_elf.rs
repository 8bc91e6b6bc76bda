//! The ELF scanner on arbitrary bytes: an error or a report, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rseq_emu_harness::elf::fuzz_scan(data);
});

//! Decode + execute arbitrary aarch64 words from an arbitrary state: must
//! not panic, and a stopped instruction must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rseq_emu_aarch64::fuzzing::fuzz_exec(data);
});

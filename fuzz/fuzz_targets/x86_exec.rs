//! Decode + execute arbitrary bytes from an arbitrary state: must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rseq_emu_x86_64::fuzzing::fuzz_exec(data);
});

//! The x86_64 executor against this CPU on arbitrary instruction bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rseq_emu_x86_64::oracle::fuzz_oracle(data);
});

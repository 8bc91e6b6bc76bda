//! The aarch64 executor against qemu-user on arbitrary instruction words
//! (the first 8 bytes seed the state and data; see `oracle::fuzz_oracle`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rseq_emu_aarch64::oracle::fuzz_oracle(data);
});

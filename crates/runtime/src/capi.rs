//! The C API (see `include/rseq_emu.h`).

use crate::engine::{complete, Completion};
use crate::policy;
use rseq_emu_core::Memory;

/// Set the mode: 0 auto, 1 always, 2 never. Returns 0, or -1 for a bad value.
#[no_mangle]
pub extern "C" fn rseq_emu_set_mode(mode: i32) -> i32 {
    let m = match mode {
        0 => policy::Mode::Auto,
        1 => policy::Mode::Always,
        2 => policy::Mode::Never,
        _ => return -1,
    };
    policy::set_mode(m);
    0
}

/// Set the `auto` abort threshold (0 is treated as 1).
#[no_mangle]
pub extern "C" fn rseq_emu_set_threshold(n: u32) {
    policy::set_threshold(n);
}

/// Apply `RSEQ_EMU_MODE` / `RSEQ_EMU_THRESHOLD`. Returns 0, or -1 when a
/// value is invalid (nothing changed).
#[no_mangle]
pub extern "C" fn rseq_emu_init_from_env() -> i32 {
    match policy::init_from_env() {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// The CPU this thread runs on per its rseq area, or -1.
#[no_mangle]
pub extern "C" fn rseq_emu_current_cpu() -> i32 {
    crate::registration::current_cpu().map_or(-1, |c| c as i32)
}

/// The engine's percpu_addv: add `count` to the `intptr_t` at `v` as a
/// per-CPU operation of CPU `cpu` (migrating there if needed). Returns 0 on
/// success, -1 when refused (bad pointer), -2 when exhausted or on a
/// registration error.
///
/// # Safety
/// `v` must be the per-CPU slot of `cpu`, modified only by rseq sequences
/// running on `cpu` (rseq's per-CPU data contract).
#[no_mangle]
pub unsafe extern "C" fn rseq_emu_percpu_addv(v: *mut isize, count: isize, cpu: i32) -> i32 {
    if cpu < 0 {
        return -1;
    }
    let addr = v as u64;
    match complete(cpu as u32, |m| {
        let x = m.read_u64(addr).ok()?;
        m.write_u64(addr, x.wrapping_add(count as u64)).ok()
    }) {
        Ok(Completion::Done { .. }) => 0,
        Ok(Completion::Refused) => -1,
        _ => -2,
    }
}

/// Make descriptors outside this program's `__rseq_cs` section known.
///
/// # Safety
/// `descs` points to `n` descriptor addresses (or is null with `n` 0).
#[no_mangle]
pub unsafe extern "C" fn rseq_emu_register_descriptors(descs: *const *const u8, n: usize) {
    if descs.is_null() || n == 0 {
        return;
    }
    // SAFETY: the caller's contract.
    let s = unsafe { std::slice::from_raw_parts(descs, n) };
    let v: Vec<u64> = s.iter().map(|&p| p as u64).collect();
    crate::section::register_descriptors(&v);
}

/// Counters of the abort-stub path, as in `include/rseq_emu.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RseqEmuStats {
    /// Calls from an abort stub.
    pub aborts: u64,
    /// Completed by the engine.
    pub emulated: u64,
    /// Answered with a native retry.
    pub native_retries: u64,
}

/// Fill `out` with the counters of the abort-stub path.
///
/// # Safety
/// `out` is null or valid for writing one `RseqEmuStats`.
#[no_mangle]
pub unsafe extern "C" fn rseq_emu_get_stats(out: *mut RseqEmuStats) {
    if out.is_null() {
        return;
    }
    let s = crate::abort::stats();
    // SAFETY: the caller's contract.
    unsafe {
        *out = RseqEmuStats {
            aborts: s.aborts,
            emulated: s.emulated,
            native_retries: s.native_retries,
        }
    };
}

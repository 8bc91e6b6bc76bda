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

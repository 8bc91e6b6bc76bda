//! The calling thread's rseq area.
//!
//! glibc (2.35+) registers an area for every thread and exports
//! `__rseq_offset` (from the thread pointer) and `__rseq_size`; when it has
//! registered (`__rseq_size != 0`) the engine uses that area and never
//! registers one of its own. When glibc did not (older glibc, or
//! `glibc.pthread.rseq=0`), the engine registers a thread-local area with
//! the same signature the sequences use.

use crate::arch;
use std::cell::Cell;
use std::sync::OnceLock;

/// The kernel's `struct rseq` (the 32-byte original part), 32-byte aligned.
#[repr(C, align(32))]
#[derive(Debug)]
pub struct RseqArea {
    /// `cpu_id_start`.
    pub cpu_id_start: u32,
    /// `cpu_id` (negative before registration).
    pub cpu_id: i32,
    /// `rseq_cs` pointer.
    pub rseq_cs: u64,
    /// `flags`.
    pub flags: u32,
    /// `node_id`.
    pub node_id: u32,
    /// `mm_cid`.
    pub mm_cid: u32,
    /// Padding to the 32-byte original size.
    pub pad: u32,
}

/// Where glibc's registration lives, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlibcRseq {
    /// `__rseq_offset`.
    pub offset: isize,
    /// `__rseq_size` (0 = glibc did not register).
    pub size: u32,
}

fn dlsym(name: &std::ffi::CStr) -> *mut libc::c_void {
    // SAFETY: RTLD_DEFAULT lookup of a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// glibc's exported registration parameters, or `None` when this glibc does
/// not export them.
pub fn glibc_rseq() -> Option<GlibcRseq> {
    static G: OnceLock<Option<GlibcRseq>> = OnceLock::new();
    *G.get_or_init(|| {
        let off = dlsym(c"__rseq_offset");
        let size = dlsym(c"__rseq_size");
        if off.is_null() || size.is_null() {
            return None;
        }
        // SAFETY: glibc defines these as `const ptrdiff_t` and
        // `const unsigned int`, initialised before main.
        unsafe {
            Some(GlibcRseq {
                offset: *(off as *const isize),
                size: *(size as *const u32),
            })
        }
    })
}

thread_local! {
    static OWN: Cell<*mut RseqArea> = const { Cell::new(std::ptr::null_mut()) };
}

/// Errors from registering an area ourselves.
#[derive(Debug)]
pub struct RegisterError(pub std::io::Error);

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rseq registration failed: {}", self.0)
    }
}
impl std::error::Error for RegisterError {}

/// The calling thread's registered rseq area: glibc's if it registered,
/// else one the engine registers (once per thread; leaked with the thread,
/// the kernel unregisters at exit).
pub fn area() -> Result<*mut RseqArea, RegisterError> {
    if let Some(g) = glibc_rseq() {
        if g.size != 0 {
            return Ok((arch::thread_pointer() as isize + g.offset) as *mut RseqArea);
        }
    }
    OWN.with(|own| {
        if !own.get().is_null() {
            return Ok(own.get());
        }
        let a = Box::into_raw(Box::new(RseqArea {
            cpu_id_start: 0,
            cpu_id: -1,
            rseq_cs: 0,
            flags: 0,
            node_id: 0,
            mm_cid: 0,
            pad: 0,
        }));
        // SAFETY: registers a 32-byte, 32-aligned area that lives as long as
        // the thread (never freed).
        let r = unsafe {
            libc::syscall(
                libc::SYS_rseq,
                a,
                std::mem::size_of::<RseqArea>() as u32,
                0,
                arch::RSEQ_SIG,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: `a` came from Box::into_raw and was not registered.
            drop(unsafe { Box::from_raw(a) });
            return Err(RegisterError(e));
        }
        own.set(a);
        Ok(a)
    })
}

/// The CPU the kernel says this thread runs on (from the rseq area).
pub fn current_cpu() -> Result<u32, RegisterError> {
    let a = area()?;
    // SAFETY: `a` is this thread's registered area; the kernel updates
    // cpu_id, hence the volatile read.
    Ok(unsafe { std::ptr::read_volatile(&(*a).cpu_id) } as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_cpu_matches_getcpu() {
        let g = glibc_rseq().expect("glibc 2.35+ exports __rseq_offset");
        assert!(g.size >= 20, "glibc registered rseq (size {})", g.size);
        for _ in 0..100 {
            let a = current_cpu().unwrap();
            // SAFETY: sched_getcpu has no preconditions.
            let b = unsafe { libc::sched_getcpu() };
            let c = current_cpu().unwrap();
            if a == c {
                assert_eq!(a as i32, b);
                return;
            }
        }
        panic!("cpu never stable across three reads");
    }
}

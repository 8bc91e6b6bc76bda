//! Critical sections as the engine knows them: found from their abort_ip,
//! validated like the kernel does, decoded once and analysed once.
//!
//! * The registry maps `abort_ip` to descriptor addresses. It is filled from
//!   the `__rseq_cs` section of the object the engine is linked into
//!   (librseq's convention: the 32-byte descriptors back to back) and from
//!   [`register_descriptors`] for descriptors elsewhere (another shared
//!   object, JIT code).
//! * The cache maps a descriptor address to its decoded [`Section`], keyed
//!   by the address *and* the descriptor's 32 bytes and teardown range: a
//!   changed descriptor is decoded again, an unchanged one never.

use crate::arch::{self, Isa};
use crate::memory::LiveMemory;
use rseq_emu_core::abi::{validate, DescriptorError, RseqCs};
use rseq_emu_core::{Arch, Memory, Program, ProgramError};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Why a section is never emulated (native retry instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No registered descriptor has this abort_ip.
    UnknownAbortIp(u64),
    /// Several different descriptors share this abort_ip: which one aborted
    /// is unknown.
    AmbiguousAbortIp(u64),
    /// The descriptor cannot be read.
    DescriptorUnreadable(u64),
    /// The descriptor fails the kernel's checks.
    Descriptor(DescriptorError),
    /// The section's code cannot be read.
    CodeUnreadable(u64),
    /// The section cannot be decoded.
    Decode(ProgramError),
    /// The section reads registers on entry that it also modifies (and the
    /// teardown does not restore them): those register bytes and flags.
    /// (A value, not text: a cached refusal is cloned on every abort,
    /// possibly inside a signal handler, and must not allocate.)
    EntryRegisters(crate::arch::regcheck::RegSet),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownAbortIp(a) => {
                write!(f, "no registered descriptor has abort_ip 0x{a:x}")
            }
            Refusal::AmbiguousAbortIp(a) => {
                write!(f, "several different descriptors have abort_ip 0x{a:x}")
            }
            Refusal::DescriptorUnreadable(a) => write!(f, "descriptor at 0x{a:x} is unreadable"),
            Refusal::Descriptor(e) => write!(f, "descriptor fails validation: {e}"),
            Refusal::CodeUnreadable(a) => write!(f, "code at 0x{a:x} is unreadable"),
            Refusal::Decode(e) => write!(f, "cannot decode the section: {e}"),
            Refusal::EntryRegisters(r) => write!(
                f,
                "the section reads on entry and modifies {}, which the teardown does not restore",
                r.describe()
            ),
        }
    }
}

/// A validated, decoded, analysed critical section.
#[derive(Debug)]
pub struct Section {
    /// Address of the descriptor.
    pub desc: u64,
    /// The descriptor.
    pub cs: RseqCs,
    /// The decoded section.
    pub program: Program<Isa>,
    /// Whether a `%gs:` operand occurs (its base is then fetched).
    pub uses_gs: bool,
    /// Whether the section can loop (a direct branch backwards, or an
    /// indirect branch): its emulation time then grows with its data, so
    /// the engine runs it with signals blocked (see `abort`).
    pub loops: bool,
}

struct Cached {
    bytes: [u8; 32],
    teardown: (u64, u64),
    result: Result<Arc<Section>, Refusal>,
}

fn cache() -> &'static RwLock<HashMap<u64, Cached>> {
    static C: OnceLock<RwLock<HashMap<u64, Cached>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn registry() -> &'static RwLock<HashMap<u64, Vec<u64>>> {
    static R: OnceLock<RwLock<HashMap<u64, Vec<u64>>>> = OnceLock::new();
    R.get_or_init(|| {
        // Once per process, on the first abort (see `lookup` on signals).
        let _blocked = crate::commit::SignalsBlocked::new();
        let mut m = HashMap::new();
        for d in linked_descriptors() {
            add(&mut m, d);
        }
        RwLock::new(m)
    })
}

extern "C" {
    // Defined by the linker around the `__rseq_cs` section of the object
    // the engine is linked into. The engine's own commit descriptors live
    // there and are referenced by its code, so the section always exists,
    // also under `--gc-sections` (which may drop an unreferenced
    // `__rseq_cs_ptr_array`, so that array is not relied on).
    static __start___rseq_cs: u8;
    static __stop___rseq_cs: u8;
}

/// The addresses of the 32-byte descriptors in this object's `__rseq_cs`
/// section (librseq's layout: 32-byte aligned descriptors, back to back).
pub fn linked_descriptors() -> Vec<u64> {
    let s = &raw const __start___rseq_cs as u64;
    let e = &raw const __stop___rseq_cs as u64;
    let first = (s + 31) & !31;
    (first..e.saturating_sub(31)).step_by(32).collect()
}

fn read_cs(desc: u64) -> Option<[u8; 32]> {
    let mut b = [0u8; 32];
    LiveMemory.read(desc, &mut b).ok()?;
    Some(b)
}

fn add(m: &mut HashMap<u64, Vec<u64>>, desc: u64) {
    if desc == 0 {
        return;
    }
    if let Some(b) = read_cs(desc) {
        let cs = RseqCs::from_bytes(&b);
        let v = m.entry(cs.abort_ip).or_default();
        if !v.contains(&desc) {
            v.push(desc);
        }
    }
}

/// Register descriptors the engine cannot find in its own object's
/// `__rseq_cs` section (e.g. of another shared object, or JIT code).
///
/// Signals are blocked while the registry is locked for writing: an abort
/// stub reached from a signal handler on this thread reads it, and would
/// otherwise wait for this very call forever.
pub fn register_descriptors(descs: &[u64]) {
    let _no_signals = crate::commit::SignalsBlocked::new();
    let mut m = registry().write().unwrap_or_else(|e| e.into_inner());
    for &d in descs {
        add(&mut m, d);
    }
}

/// The descriptor whose abort_ip is `abort_ip`.
pub fn find_descriptor(abort_ip: u64) -> Result<u64, Refusal> {
    let m = registry().read().unwrap_or_else(|e| e.into_inner());
    match m.get(&abort_ip).map(Vec::as_slice) {
        None | Some([]) => Err(Refusal::UnknownAbortIp(abort_ip)),
        Some([d]) => Ok(*d),
        Some(ds) => {
            let first = read_cs(ds[0]);
            if first.is_some() && ds.iter().all(|&d| read_cs(d) == first) {
                Ok(ds[0])
            } else {
                Err(Refusal::AmbiguousAbortIp(abort_ip))
            }
        }
    }
}

static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times a descriptor was validated and decoded (cache misses).
pub fn decode_count() -> u64 {
    BUILDS.load(std::sync::atomic::Ordering::Relaxed)
}

fn build(desc: u64, bytes: &[u8; 32], teardown: (u64, u64)) -> Result<Arc<Section>, Refusal> {
    BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cs = RseqCs::from_bytes(bytes);
    validate(&cs, Isa::KIND, arch::RSEQ_SIG, |a| {
        LiveMemory.read_u32(a).ok()
    })
    .map_err(Refusal::Descriptor)?;
    let post = cs
        .post_commit_ip()
        .ok_or(Refusal::Descriptor(DescriptorError::Range {
            start_ip: cs.start_ip,
            post_commit_offset: cs.post_commit_offset,
        }))?;
    let len = cs
        .post_commit_offset
        .min(rseq_emu_core::arch::MAX_SECTION_LEN + 1) as usize;
    let mut code = vec![0u8; len];
    LiveMemory
        .read(cs.start_ip, &mut code)
        .map_err(|_| Refusal::CodeUnreadable(cs.start_ip))?;
    let program =
        Program::<Isa>::decode(&code, cs.start_ip, cs.start_ip, post).map_err(Refusal::Decode)?;
    let (t0, t1) = teardown;
    let mut tcode = vec![0u8; t1.saturating_sub(t0).min(4096) as usize];
    LiveMemory
        .read(t0, &mut tcode)
        .map_err(|_| Refusal::CodeUnreadable(t0))?;
    let restored = arch::regcheck::teardown_restores(&tcode, t0);
    let check = arch::regcheck::entry_conflicts(&program, &code, cs.start_ip, restored);
    if !check.conflicts.is_empty() {
        return Err(Refusal::EntryRegisters(check.conflicts));
    }
    let loops = program.insns().iter().any(|i| {
        i.flow.indirect
            || i.flow
                .targets
                .iter()
                .any(|&t| t <= i.ip && t >= cs.start_ip)
    });
    Ok(Arc::new(Section {
        desc,
        cs,
        uses_gs: arch::uses_gs(&program),
        loops,
        program,
    }))
}

/// The section of descriptor `desc` whose abort handler's teardown is
/// `[teardown.0, teardown.1)` (empty when there is none): from the cache
/// when the descriptor's bytes are unchanged, else validated, decoded and
/// analysed now (once).
pub fn lookup(desc: u64, teardown: (u64, u64)) -> Result<Arc<Section>, Refusal> {
    let bytes = read_cs(desc).ok_or(Refusal::DescriptorUnreadable(desc))?;
    {
        let c = cache().read().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = c.get(&desc) {
            if e.bytes == bytes && e.teardown == teardown {
                return e.result.clone();
            }
        }
    }
    // The first decode of a section happens while the thread is being
    // aborted, possibly under a signal storm: with signals deliverable a
    // 10 µs timer stretched it from about a millisecond to seconds, long
    // enough for the thread to migrate and the emulation to take the
    // sequence's own abort. Block them for the decode (once per section).
    let result = {
        let _blocked = crate::commit::SignalsBlocked::new();
        build(desc, &bytes, teardown)
    };
    cache().write().unwrap_or_else(|e| e.into_inner()).insert(
        desc,
        Cached {
            bytes,
            teardown,
            result: result.clone(),
        },
    );
    result
}

/// How many descriptors have been decoded (cache entries), for tests.
pub fn cached_count() -> usize {
    cache().read().unwrap_or_else(|e| e.into_inner()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor failing the kernel's checks is refused (never
    /// emulated), with the kernel's reason; the refusal is cached.
    #[test]
    fn invalid_descriptor_is_refused() {
        #[repr(C, align(32))]
        struct Cs([u64; 4]);
        let code = [0x90u8; 16];
        let start = code.as_ptr() as u64;
        // version 1
        let bad = Cs([1, start, 8, start + 12]);
        let d = &bad as *const Cs as u64;
        let n = decode_count();
        let r = lookup(d, (start + 12, start + 12));
        assert!(
            matches!(r, Err(Refusal::Descriptor(DescriptorError::Version(1)))),
            "{r:?}"
        );
        assert!(lookup(d, (start + 12, start + 12)).is_err());
        assert_eq!(decode_count(), n + 1, "refusal cached");
        // abort_ip inside the section
        let bad = Cs([0, start, 8, start + 4]);
        let r = lookup(&bad as *const Cs as u64, (start + 4, start + 4));
        assert!(
            matches!(
                r,
                Err(Refusal::Descriptor(DescriptorError::AbortInside { .. }))
            ),
            "{r:?}"
        );
        // unreadable descriptor
        assert_eq!(
            lookup(8, (0, 0)).unwrap_err(),
            Refusal::DescriptorUnreadable(8)
        );
    }
}

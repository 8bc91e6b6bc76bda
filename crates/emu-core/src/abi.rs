//! The kernel's rseq ABI: `struct rseq_cs`, `struct rseq`, signatures, and the
//! exact checks the kernel makes on a descriptor before it redirects a thread.
//!
//! The layout and the checks follow `include/uapi/linux/rseq.h` and
//! `kernel/rseq.c` (`rseq_get_rseq_cs()`): a descriptor that fails any of
//! them makes the kernel kill the thread with `SIGSEGV` at the next
//! preemption, migration or signal instead of jumping to `abort_ip`.

use thiserror::Error;

/// `RSEQ_SIG` used by librseq, glibc and the kernel selftests on x86_64:
/// the 4 bytes before `abort_ip`, read as a little-endian `u32`.
pub const RSEQ_SIG_X86_64: u32 = 0x5305_3053;
/// `RSEQ_SIG` on aarch64: the encoding of `brk #0x45e0`.
pub const RSEQ_SIG_AARCH64: u32 = 0xd428_bc00;

/// `RSEQ_CS_FLAG_NO_RESTART_ON_PREEMPT` (deprecated; the kernel refuses it).
pub const RSEQ_CS_FLAG_NO_RESTART_ON_PREEMPT: u32 = 1 << 0;
/// `RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL` (deprecated; the kernel refuses it).
pub const RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL: u32 = 1 << 1;
/// `RSEQ_CS_FLAG_NO_RESTART_ON_MIGRATE` (deprecated; the kernel refuses it).
pub const RSEQ_CS_FLAG_NO_RESTART_ON_MIGRATE: u32 = 1 << 2;
/// All deprecated `NO_RESTART` flags together.
pub const RSEQ_CS_DEPRECATED_FLAGS: u32 = RSEQ_CS_FLAG_NO_RESTART_ON_PREEMPT
    | RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL
    | RSEQ_CS_FLAG_NO_RESTART_ON_MIGRATE;

/// `RSEQ_CPU_ID_UNINITIALIZED`: `cpu_id` before registration.
pub const RSEQ_CPU_ID_UNINITIALIZED: u32 = u32::MAX;
/// `RSEQ_CPU_ID_REGISTRATION_FAILED`.
pub const RSEQ_CPU_ID_REGISTRATION_FAILED: u32 = u32::MAX - 1;

/// Size of the original `struct rseq` (the kernel's minimum registration).
pub const RSEQ_AREA_ORIG_SIZE: usize = 32;

/// `struct rseq_cs`: a critical-section descriptor (32 bytes, 32-byte aligned).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RseqCs {
    /// Must be 0.
    pub version: u32,
    /// Must not carry the deprecated `NO_RESTART` flags.
    pub flags: u32,
    /// First instruction of the critical section.
    pub start_ip: u64,
    /// Length of the section: `post_commit_ip = start_ip + post_commit_offset`.
    pub post_commit_offset: u64,
    /// Where the kernel sends an aborted thread; preceded by the signature.
    pub abort_ip: u64,
}

impl RseqCs {
    /// Size of the descriptor in memory.
    pub const SIZE: usize = 32;

    /// Parse a descriptor from its 32 little-endian bytes.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        RseqCs {
            version: u32_at(0),
            flags: u32_at(4),
            start_ip: u64_at(8),
            post_commit_offset: u64_at(16),
            abort_ip: u64_at(24),
        }
    }

    /// The descriptor's 32 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.start_ip.to_le_bytes());
        b[16..24].copy_from_slice(&self.post_commit_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.abort_ip.to_le_bytes());
        b
    }

    /// `start_ip + post_commit_offset`, or `None` when it overflows.
    pub fn post_commit_ip(&self) -> Option<u64> {
        self.start_ip.checked_add(self.post_commit_offset)
    }

    /// Whether `ip` lies in `[start_ip, post_commit_ip)`, computed the way the
    /// kernel does (`ip - start_ip < post_commit_offset`, wrapping).
    pub fn contains(&self, ip: u64) -> bool {
        ip.wrapping_sub(self.start_ip) < self.post_commit_offset
    }
}

/// Field offsets in the per-thread `struct rseq` area.
pub mod area {
    /// `__u32 cpu_id_start`
    pub const CPU_ID_START: u64 = 0;
    /// `__u32 cpu_id`
    pub const CPU_ID: u64 = 4;
    /// `__u64 rseq_cs` (pointer to the current descriptor, or 0)
    pub const RSEQ_CS: u64 = 8;
    /// `__u32 flags`
    pub const FLAGS: u64 = 16;
    /// `__u32 node_id` (extended ABI, size ≥ 24)
    pub const NODE_ID: u64 = 20;
    /// `__u32 mm_cid` (extended ABI, size ≥ 28)
    pub const MM_CID: u64 = 24;

    /// Whether the 4-byte field at `offset` is written by the kernel
    /// (a user-space emulator must never write these).
    pub fn is_kernel_owned(offset: u64) -> bool {
        matches!(offset, CPU_ID_START | CPU_ID | NODE_ID | MM_CID)
    }
}

/// Highest user address + 1 the kernel accepts for the pointers in a
/// descriptor (`TASK_SIZE`), per architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArchKind {
    /// x86_64 (4-level paging: `TASK_SIZE_MAX` = 2^47 - 4096).
    X86_64,
    /// aarch64 (48-bit VA: `TASK_SIZE` = 2^48).
    Aarch64,
}

impl ArchKind {
    /// Lower-case name as used in fixtures and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ArchKind::X86_64 => "x86_64",
            ArchKind::Aarch64 => "aarch64",
        }
    }

    /// Parse the name used in fixtures and JSON output.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "x86_64" => Some(ArchKind::X86_64),
            "aarch64" => Some(ArchKind::Aarch64),
            _ => None,
        }
    }

    /// The default registered signature.
    pub fn default_signature(self) -> u32 {
        match self {
            ArchKind::X86_64 => RSEQ_SIG_X86_64,
            ArchKind::Aarch64 => RSEQ_SIG_AARCH64,
        }
    }

    /// `TASK_SIZE` as the kernel compares descriptor pointers against it.
    pub fn task_size(self) -> u64 {
        match self {
            ArchKind::X86_64 => (1u64 << 47) - 4096,
            ArchKind::Aarch64 => 1u64 << 48,
        }
    }
}

impl std::fmt::Display for ArchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the kernel would refuse a descriptor (and kill the thread with
/// `SIGSEGV` instead of redirecting it to `abort_ip`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DescriptorError {
    /// The descriptor itself cannot be read (`copy_from_user` fails).
    #[error("the descriptor at 0x{0:x} cannot be read")]
    Unreadable(u64),
    /// `version` is not 0.
    #[error("version is {0}, the kernel accepts only 0")]
    Version(u32),
    /// Deprecated `RSEQ_CS_FLAG_NO_RESTART_*` flags are set.
    #[error(
        "flags 0x{0:x} carry deprecated RSEQ_CS_FLAG_NO_RESTART_* bits, which the kernel refuses"
    )]
    DeprecatedFlags(u32),
    /// `start_ip + post_commit_offset` overflows or leaves user space.
    #[error("start_ip 0x{start_ip:x} + post_commit_offset 0x{post_commit_offset:x} overflows or leaves user space")]
    Range {
        /// `start_ip`
        start_ip: u64,
        /// `post_commit_offset`
        post_commit_offset: u64,
    },
    /// `abort_ip` is not a user-space address.
    #[error("abort_ip 0x{0:x} is not a user-space address")]
    AbortNotUser(u64),
    /// `abort_ip` lies inside `[start_ip, post_commit_ip)`.
    #[error("abort_ip 0x{abort_ip:x} lies inside the critical section [0x{start_ip:x}, 0x{post_commit_ip:x})")]
    AbortInside {
        /// `abort_ip`
        abort_ip: u64,
        /// `start_ip`
        start_ip: u64,
        /// `start_ip + post_commit_offset`
        post_commit_ip: u64,
    },
    /// The 4 bytes before `abort_ip` cannot be read.
    #[error("the signature at abort_ip - 4 = 0x{0:x} cannot be read")]
    SignatureUnreadable(u64),
    /// The 4 bytes before `abort_ip` differ from the registered signature.
    #[error(
        "signature at abort_ip - 4 is 0x{found:08x}, the registered signature is 0x{expected:08x}"
    )]
    SignatureMismatch {
        /// What the 4 bytes hold.
        found: u32,
        /// The registered signature.
        expected: u32,
    },
}

/// Apply the kernel's checks to a descriptor, in the kernel's order.
///
/// `read_signature` reads the 4 bytes at the given address as data
/// (little-endian); it returns `None` when the address is unreadable.
///
/// ```
/// use rseq_emu_core::abi::{validate, RseqCs, ArchKind, DescriptorError, RSEQ_SIG_X86_64};
/// let cs = RseqCs { version: 0, flags: 0, start_ip: 0x1000, post_commit_offset: 0x10, abort_ip: 0x1008 };
/// let err = validate(&cs, ArchKind::X86_64, RSEQ_SIG_X86_64, |_| Some(RSEQ_SIG_X86_64)).unwrap_err();
/// assert!(matches!(err, DescriptorError::AbortInside { .. }));
/// ```
pub fn validate(
    cs: &RseqCs,
    arch: ArchKind,
    signature: u32,
    read_signature: impl FnOnce(u64) -> Option<u32>,
) -> Result<(), DescriptorError> {
    if cs.version != 0 {
        return Err(DescriptorError::Version(cs.version));
    }
    if cs.flags & RSEQ_CS_DEPRECATED_FLAGS != 0 {
        return Err(DescriptorError::DeprecatedFlags(cs.flags));
    }
    let task_size = arch.task_size();
    match cs.post_commit_ip() {
        Some(end) if cs.start_ip < task_size && end < task_size => {}
        _ => {
            return Err(DescriptorError::Range {
                start_ip: cs.start_ip,
                post_commit_offset: cs.post_commit_offset,
            })
        }
    }
    if cs.abort_ip >= task_size {
        return Err(DescriptorError::AbortNotUser(cs.abort_ip));
    }
    if cs.contains(cs.abort_ip) {
        return Err(DescriptorError::AbortInside {
            abort_ip: cs.abort_ip,
            start_ip: cs.start_ip,
            post_commit_ip: cs.start_ip + cs.post_commit_offset,
        });
    }
    let sig_addr = cs.abort_ip.wrapping_sub(4);
    if cs.abort_ip < 4 {
        return Err(DescriptorError::SignatureUnreadable(sig_addr));
    }
    match read_signature(sig_addr) {
        None => Err(DescriptorError::SignatureUnreadable(sig_addr)),
        Some(found) if found != signature => Err(DescriptorError::SignatureMismatch {
            found,
            expected: signature,
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> RseqCs {
        RseqCs {
            version: 0,
            flags: 0,
            start_ip: 0x401000,
            post_commit_offset: 0x20,
            abort_ip: 0x401024,
        }
    }

    fn check(cs: RseqCs, sig: Option<u32>) -> Result<(), DescriptorError> {
        validate(&cs, ArchKind::X86_64, RSEQ_SIG_X86_64, |_| sig)
    }

    #[test]
    fn layout_matches_kernel() {
        assert_eq!(std::mem::size_of::<RseqCs>(), 32);
        assert_eq!(std::mem::align_of::<RseqCs>(), 32);
        let cs = good();
        assert_eq!(RseqCs::from_bytes(&cs.to_bytes()), cs);
        assert_eq!(&cs.to_bytes()[8..16], &0x401000u64.to_le_bytes());
    }

    #[test]
    fn each_kernel_check_fails_with_its_reason() {
        assert_eq!(check(good(), Some(RSEQ_SIG_X86_64)), Ok(()));
        assert_eq!(
            check(
                RseqCs {
                    version: 1,
                    ..good()
                },
                Some(RSEQ_SIG_X86_64)
            ),
            Err(DescriptorError::Version(1))
        );
        assert_eq!(
            check(RseqCs { flags: 2, ..good() }, Some(RSEQ_SIG_X86_64)),
            Err(DescriptorError::DeprecatedFlags(2))
        );
        // Non-deprecated flag bits are ignored by the kernel.
        assert_eq!(
            check(RseqCs { flags: 8, ..good() }, Some(RSEQ_SIG_X86_64)),
            Ok(())
        );
        assert!(matches!(
            check(
                RseqCs {
                    post_commit_offset: u64::MAX,
                    ..good()
                },
                Some(RSEQ_SIG_X86_64)
            ),
            Err(DescriptorError::Range { .. })
        ));
        assert!(matches!(
            check(
                RseqCs {
                    abort_ip: 0x401010,
                    ..good()
                },
                Some(RSEQ_SIG_X86_64)
            ),
            Err(DescriptorError::AbortInside { .. })
        ));
        // abort_ip == post_commit_ip is outside the section: allowed.
        assert_eq!(
            check(
                RseqCs {
                    abort_ip: 0x401020,
                    ..good()
                },
                Some(RSEQ_SIG_X86_64)
            ),
            Ok(())
        );
        assert_eq!(
            check(good(), None),
            Err(DescriptorError::SignatureUnreadable(0x401020))
        );
        assert_eq!(
            check(good(), Some(0xdeadbeef)),
            Err(DescriptorError::SignatureMismatch {
                found: 0xdeadbeef,
                expected: RSEQ_SIG_X86_64
            })
        );
    }
}

//! Branches: every form computes the next pc; bl/blr also write x30.

use rseq_emu_core::Stop;

use crate::exec::{cond_holds, get, set};
use crate::op::Kind;
use crate::state::A64State;

/// The next pc after a branch (`next` when not taken); writes x30 for
/// bl/blr after reading the target register (so `blr x30` works).
/// The caller has checked a register target with [`register_target_ok`].
#[inline(always)]
pub fn target(k: &Kind, st: &mut A64State, next: u64) -> u64 {
    match *k {
        Kind::Branch { target, link } => {
            if link {
                st.x[30] = next;
            }
            target
        }
        Kind::BranchCond { cond, target } => {
            if cond_holds(st.nzcv, cond) {
                target
            } else {
                next
            }
        }
        Kind::CompareBranch { sf, nz, rt, target } => {
            let mut v = get(st, rt);
            if !sf {
                v &= 0xffff_ffff;
            }
            if (v != 0) == nz {
                target
            } else {
                next
            }
        }
        Kind::TestBranch {
            nz,
            bit,
            rt,
            target,
        } => {
            if (get(st, rt) >> bit & 1 == 1) == nz {
                target
            } else {
                next
            }
        }
        Kind::BranchReg { rn, link } => {
            let t = get(st, rn);
            if link {
                set(st, 30, next);
            }
            t
        }
        _ => next,
    }
}

/// Whether a br/blr/ret target is reproduced exactly: with a non-zero top
/// byte, hardware applies TBI (top byte ignore, per TTBR half, kernel
/// configuration dependent) and qemu does something else again.
#[inline(always)]
pub fn register_target_ok(t: u64) -> Result<(), Stop> {
    if t >> 56 == 0 {
        Ok(())
    } else {
        Err(Stop::Unsupported(
            "branch to a register holding an address with a non-zero top byte: the pc hardware derives (TBI) is configuration dependent".into(),
        ))
    }
}

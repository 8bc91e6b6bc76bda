//! Branches: every form computes the next pc; bl/blr also write x30.

use crate::exec::{cond_holds, get, set};
use crate::op::Kind;
use crate::state::A64State;

/// The next pc after a branch (`next` when not taken); writes x30 for
/// bl/blr after reading the target register (so `blr x30` works).
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
            // EL0 runs with TBI0 set: the top byte of a branch target is
            // replaced by the sign extension of bit 55 (BranchAddr()).
            let t = ((get(st, rn) << 8) as i64 >> 8) as u64;
            if link {
                set(st, 30, next);
            }
            t
        }
        _ => next,
    }
}

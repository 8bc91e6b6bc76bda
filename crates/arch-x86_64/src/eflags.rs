//! Exact computation of the arithmetic status flags (CF PF AF ZF SF OF),
//! width-generic over 1/2/4/8-byte operands.

use crate::flags::{AF, CF, OF, PF, SF, ZF};

/// All-ones mask of an operand of `size` bytes.
#[inline]
pub fn mask(size: u8) -> u64 {
    u64::MAX >> (64 - u32::from(size.clamp(1, 8)) * 8)
}

/// The sign bit of an operand of `size` bytes.
#[inline]
pub fn msb(size: u8) -> u64 {
    1u64 << (u32::from(size) * 8 - 1)
}

/// Sign-extend the low `size` bytes of `v`.
#[inline]
pub fn sext(v: u64, size: u8) -> i64 {
    let sh = 64 - u32::from(size) * 8;
    ((v << sh) as i64) >> sh
}

const PARITY: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        if (i as u8).count_ones() & 1 == 0 {
            t[i] = PF;
        }
        i += 1;
    }
    t
};

/// PF of a result (parity of its low byte).
#[inline(always)]
pub fn parity(res: u64) -> u64 {
    PARITY[res as u8 as usize]
}

/// PF, ZF and SF of a (masked) result.
#[inline]
pub fn szp(res: u64, size: u8) -> u64 {
    let mut f = 0;
    f |= PARITY[res as u8 as usize];
    if res & mask(size) == 0 {
        f |= ZF;
    }
    if res & msb(size) != 0 {
        f |= SF;
    }
    f
}

/// Replace the status flags of `rflags` with `new` (only bits in `which`).
#[inline]
pub fn merge(rflags: u64, new: u64, which: u64) -> u64 {
    (rflags & !which) | (new & which)
}

/// `a + b + carry`: result and all six flags.
#[inline]
pub fn add(a: u64, b: u64, carry: u64, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let (res, cf) = if size == 8 {
        let (r1, c1) = a.overflowing_add(b);
        let (r2, c2) = r1.overflowing_add(carry);
        (r2, c1 | c2)
    } else {
        let w = a + b + carry;
        (w & m, (w >> (u32::from(size) * 8)) & 1 != 0)
    };
    let mut f = szp(res, size);
    if cf {
        f |= CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= AF;
    }
    if (a ^ res) & (b ^ res) & msb(size) != 0 {
        f |= OF;
    }
    (res, f)
}

/// `a - b - borrow`: result and all six flags.
#[inline]
pub fn sub(a: u64, b: u64, borrow: u64, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let (r1, c1) = a.overflowing_sub(b);
    let (r2, c2) = r1.overflowing_sub(borrow);
    let res = r2 & m;
    let mut f = szp(res, size);
    if c1 | c2 {
        f |= CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= AF;
    }
    if (a ^ b) & (a ^ res) & msb(size) != 0 {
        f |= OF;
    }
    (res, f)
}

/// Flags of a logical result (CF = OF = 0; AF is undefined and cleared as
/// this CPU does).
#[inline]
pub fn logic(res: u64, size: u8) -> u64 {
    szp(res & mask(size), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sets_carry_and_overflow() {
        let (r, f) = add(0x7f, 1, 0, 1);
        assert_eq!(r, 0x80);
        assert_eq!(f & (OF | SF | CF | AF), OF | SF | AF);
        let (r, f) = add(u64::MAX, 1, 0, 8);
        assert_eq!(r, 0);
        assert_eq!(f & (CF | ZF | PF), CF | ZF | PF);
    }

    #[test]
    fn sub_borrow() {
        let (r, f) = sub(0, 1, 0, 4);
        assert_eq!(r, 0xffff_ffff);
        assert_ne!(f & CF, 0);
        let (_, f) = sub(5, 4, 1, 2);
        assert_ne!(f & ZF, 0);
    }
}

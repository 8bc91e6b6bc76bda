//! Random cases for the qemu differential: one encoder per instruction form
//! of the subset, with interesting register values (0, 1, -1, INT_MIN/MAX,
//! random, pointers into the mapped data for addressing), random short
//! blocks, and raw random words.
//!
//! Layout of every case (all inside the oracle window, page-disjoint):
//! a code page at [`CODE`] filled with [`EXIT_BRK`] with the block at
//! [`BLOCK`], two writable data pages at [`DATA`], an unmapped page, and a
//! read-only page at [`RO`].

use crate::oracle::{code_page, Case, Region, WINDOW_START};
use crate::A64State;

/// The code page.
pub const CODE: u64 = WINDOW_START + 0x10_0000;
/// Where the block starts (the middle of the code page: branches either
/// way land on `brk`).
pub const BLOCK: u64 = CODE + 0x800;
/// The writable data (two pages).
pub const DATA: u64 = WINDOW_START + 0x20_0000;
/// Size of the writable data.
pub const DATA_LEN: u64 = 0x2000;
/// A read-only page (one unmapped page after the data).
pub const RO: u64 = DATA + DATA_LEN + 0x1000;
/// Size of the read-only page.
pub const RO_LEN: u64 = 0x1000;

/// The shared seeded PRNG ([`rseq_emu_core::rng::Rng`]) plus the register
/// pool [`Rng::reg`] picks from.
#[derive(Clone, Debug)]
pub struct Rng {
    bits: rseq_emu_core::rng::Rng,
    /// When non-empty, [`Rng::reg`] picks from these registers only (blocks
    /// use a small pool so instructions depend on each other).
    pool: Vec<u32>,
}

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            bits: rseq_emu_core::rng::Rng::new(seed),
            pool: Vec::new(),
        }
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.bits.next_u64()
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits.below(n)
    }
    /// A random `u32` in `0..n`.
    pub fn u(&mut self, n: u32) -> u32 {
        self.bits.below_u32(n)
    }
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.bits.one_in(n)
    }
    /// An interesting register value.
    pub fn value(&mut self) -> u64 {
        match self.below(10) {
            0 => self.below(70),
            1 => (self.below(600) as i64 - 300) as u64,
            2 => [
                0,
                1,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
                0x8000_0000,
                0x7fff_ffff,
                0xffff_ffff,
                0xffff_ffff_8000_0000,
                0x1_0000_0000,
            ][self.below(10) as usize],
            3 => self.next_u64() & 0xffff_ffff,
            4 => DATA + self.below(DATA_LEN),
            5 => 1 << self.below(64),
            _ => self.next_u64(),
        }
    }
    /// A register number 0..=31 (from the pool, if one is set).
    pub fn reg(&mut self) -> u32 {
        if self.pool.is_empty() {
            self.u(32)
        } else {
            let i = self.below(self.pool.len() as u64) as usize;
            self.pool[i]
        }
    }
}

/// One generated case: what to run, and the section it is.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The oracle case (state.pc = [`BLOCK`]).
    pub case: Case,
    /// Section start ([`BLOCK`]).
    pub start: u64,
    /// Section end (after the last word of the block).
    pub end: u64,
    /// The forms in the block, for coverage counts.
    pub kinds: Vec<&'static str>,
}

/// A random entry state.
pub fn random_state(r: &mut Rng) -> A64State {
    let mut s = A64State::default();
    for x in s.x.iter_mut() {
        *x = r.value();
    }
    s.sp = (DATA + 0x100 + r.below(DATA_LEN - 0x200)) & !15;
    s.nzcv = (r.u(16)) << 28;
    for v in s.v.iter_mut() {
        *v = match r.below(4) {
            0 => 0,
            1 => u128::from(r.value()),
            _ => u128::from(r.next_u64()) << 64 | u128::from(r.next_u64()),
        };
    }
    s.tpidr_el0 = r.value();
    s.pc = BLOCK;
    s
}

/// Build the case for `words` at [`BLOCK`] from `state`, with random data.
pub fn make_case(r: &mut Rng, words: &[u32], state: A64State) -> Generated {
    let code = code_page(words, (BLOCK - CODE) as usize);
    // 64 random words repeated over the data: varied values, cheap to build.
    let fill = r.below(3);
    let pattern: Vec<u8> = (0..64u64)
        .flat_map(|i| {
            let v = match fill {
                0 => r.next_u64(),
                1 => r.value(),
                _ => i.wrapping_mul(0x0101_0101_0101_0101),
            };
            v.to_le_bytes()
        })
        .collect();
    let data = pattern.repeat((DATA_LEN / 512) as usize);
    let ro = [0x5au8, 0xa5, 0x3c, 0xc3].repeat((RO_LEN / 4) as usize);
    Generated {
        case: Case {
            regions: vec![
                Region::code(CODE, code),
                Region::data(DATA, data),
                Region::read_only(RO, ro),
            ],
            state,
        },
        start: BLOCK,
        end: BLOCK + 4 * words.len() as u64,
        kinds: Vec::new(),
    }
}

/// Encoders write one instruction and may adjust the state (pointers for
/// addressing, branch targets in registers). `at` is the instruction's
/// address.
struct Ctx<'a> {
    r: &'a mut Rng,
    st: &'a mut A64State,
    at: u64,
    /// Registers already given a role by an earlier instruction of the
    /// block (not re-pointed).
    pinned: u32,
}

impl Ctx<'_> {
    fn set(&mut self, reg: u32, v: u64) {
        if self.pinned & (1 << reg) != 0 {
            return;
        }
        self.pinned |= 1 << reg;
        if reg == 31 {
            self.st.sp = v;
        } else {
            self.st.x[reg as usize] = v;
        }
    }
    /// An address for an access of `size` bytes, mostly inside the data,
    /// mostly aligned; now and then read-only or unmapped memory.
    fn addr(&mut self, size: u64) -> u64 {
        let r = &mut *self.r;
        match r.below(25) {
            24 => (DATA + r.below(DATA_LEN - size)) | (1 + r.below(255)) << 56, // tagged
            0 => RO + r.below(RO_LEN - size),
            1 => DATA + DATA_LEN + r.below(0x1000) - size / 2,
            2 => DATA - size / 2 - r.below(8),
            3 => r.value(),
            4..=7 => DATA + r.below(DATA_LEN - size),
            _ => (DATA + 0x40 + r.below(DATA_LEN - 0x80 - size)) & !(size - 1),
        }
    }
    /// Set base register `rn` so that `rn + off` = a good address; sp
    /// stays 16-byte aligned.
    fn base(&mut self, rn: u32, size: u64, off: i64) {
        let a = self.addr(size).wrapping_sub(off as u64);
        let a = if rn == 31 { a & !15 } else { a };
        self.set(rn, a);
    }
    /// A branch offset in words: mostly inside the code page.
    fn branch_words(&mut self, bits: u32) -> i64 {
        let max = 1i64 << (bits - 1);
        let r = &mut *self.r;
        let w = match r.below(10) {
            0 => r.below(max as u64 * 2) as i64 - max,
            1 => 1,
            2 => 2,
            _ => r.below(0x3c0) as i64 - 0x1e0,
        };
        w.clamp(-max, max - 1)
    }
    /// A code address for an indirect branch (mostly in the code page).
    fn code_target(&mut self) -> u64 {
        let r = &mut *self.r;
        match r.below(10) {
            0 => r.value(),
            1 => self.at + 4,
            2 => self.at + 8,
            _ => CODE + 4 * r.below(1024),
        }
    }
}

const fn bit(b: bool, at: u32) -> u32 {
    (b as u32) << at
}

/// A valid (N, immr, imms) bitmask immediate for a `sf`-wide operation.
pub fn bitmask(r: &mut Rng, sf: bool) -> (u32, u32, u32) {
    // element size 2..64, a run of 1..esize-1 ones, rotated.
    let max_log = if sf { 6 } else { 5 };
    let log = 1 + r.u(max_log);
    let esize = 1u32 << log;
    let ones = 1 + r.u(esize - 1);
    let immr = r.u(esize);
    let n = u32::from(esize == 64);
    let imms = ((!(esize * 2 - 1)) & 0x3f) | (ones - 1);
    let imms = if esize == 64 { ones - 1 } else { imms & 0x3f };
    (n, immr, imms)
}

type Enc = fn(&mut Ctx) -> u32;

/// Every form: (name, weight, encoder).
const FORMS: &[(&str, u32, Enc)] = &[
    ("add_imm", 4, |c| {
        let (sf, op, s) = (c.r.u(2), c.r.u(2), c.r.u(2));
        (sf << 31)
            | (op << 30)
            | (s << 29)
            | 0x1100_0000
            | (c.r.u(2) << 22)
            | (c.r.u(4096) << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("add_shift", 4, |c| {
        let sf = c.r.u(2);
        let amt = if sf == 1 { c.r.u(64) } else { c.r.u(32) };
        (sf << 31)
            | (c.r.u(2) << 30)
            | (c.r.u(2) << 29)
            | 0x0b00_0000
            | (c.r.u(3) << 22)
            | (c.r.reg() << 16)
            | (amt << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("add_ext", 3, |c| {
        (c.r.u(2) << 31)
            | (c.r.u(2) << 30)
            | (c.r.u(2) << 29)
            | 0x0b20_0000
            | (c.r.reg() << 16)
            | (c.r.u(8) << 13)
            | (c.r.u(5) << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("adc", 3, |c| {
        (c.r.u(2) << 31)
            | (c.r.u(2) << 30)
            | (c.r.u(2) << 29)
            | 0x1a00_0000
            | (c.r.reg() << 16)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("logic_imm", 4, |c| {
        let sf = c.r.one_in(2);
        let (n, immr, imms) = bitmask(c.r, sf);
        (bit(sf, 31))
            | (c.r.u(4) << 29)
            | 0x1200_0000
            | (n << 22)
            | (immr << 16)
            | (imms << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("logic_shift", 4, |c| {
        let sf = c.r.u(2);
        let amt = if sf == 1 { c.r.u(64) } else { c.r.u(32) };
        (sf << 31)
            | (c.r.u(4) << 29)
            | 0x0a00_0000
            | (c.r.u(4) << 22)
            | (c.r.u(2) << 21)
            | (c.r.reg() << 16)
            | (amt << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("movewide", 3, |c| {
        let sf = c.r.u(2);
        let opc = [0, 2, 3][c.r.below(3) as usize];
        let hw = if sf == 1 { c.r.u(4) } else { c.r.u(2) };
        (sf << 31) | (opc << 29) | 0x1280_0000 | (hw << 21) | (c.r.u(65536) << 5) | c.r.reg()
    }),
    ("bitfield", 4, |c| {
        let sf = c.r.u(2);
        let w = if sf == 1 { 64 } else { 32 };
        (sf << 31)
            | (c.r.u(3) << 29)
            | 0x1300_0000
            | (sf << 22)
            | (c.r.u(w) << 16)
            | (c.r.u(w) << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("extr", 2, |c| {
        let sf = c.r.u(2);
        let w = if sf == 1 { 64 } else { 32 };
        (sf << 31)
            | 0x1380_0000
            | (sf << 22)
            | (c.r.reg() << 16)
            | (c.r.u(w) << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("shiftv_div", 4, |c| {
        let opc = [2, 3, 8, 9, 10, 11][c.r.below(6) as usize];
        let sf = c.r.u(2);
        let (rm, rn) = (c.r.reg(), c.r.reg());
        if opc < 4 && rm != rn && rm != 31 && rn != 31 && c.r.one_in(3) {
            // division edges: by zero, INT_MIN / -1 (both widths)
            let min = if sf == 1 { 1 << 63 } else { 0x8000_0000 };
            let (n, m) = match c.r.below(3) {
                0 => (c.r.value(), 0),
                1 => (min, u64::MAX),
                _ => (min | (c.r.next_u64() << 32), 0xffff_ffff),
            };
            c.set(rn, n);
            c.set(rm, m);
        }
        (sf << 31) | 0x1ac0_0000 | (rm << 16) | (opc << 10) | (rn << 5) | c.r.reg()
    }),
    ("onesrc", 3, |c| {
        let sf = c.r.u(2);
        let opc = if sf == 1 {
            c.r.u(6)
        } else {
            [0, 1, 2, 4, 5][c.r.below(5) as usize]
        };
        (sf << 31) | 0x5ac0_0000 | (opc << 10) | (c.r.reg() << 5) | c.r.reg()
    }),
    ("mul", 4, |c| {
        // madd/msub (32/64), smaddl/smsubl/umaddl/umsubl, smulh/umulh
        let (sf, op31, o0, ra) = match c.r.below(4) {
            0 | 1 => (c.r.u(2), 0, c.r.u(2), c.r.reg()),
            2 => (1, [1, 5][c.r.below(2) as usize], c.r.u(2), c.r.reg()),
            _ => (1, [2, 6][c.r.below(2) as usize], 0, 31),
        };
        (sf << 31)
            | 0x1b00_0000
            | (op31 << 21)
            | (c.r.reg() << 16)
            | (o0 << 15)
            | (ra << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("csel", 4, |c| {
        (c.r.u(2) << 31)
            | (c.r.u(2) << 30)
            | 0x1a80_0000
            | (c.r.reg() << 16)
            | (c.r.u(16) << 12)
            | (c.r.u(2) << 10)
            | (c.r.reg() << 5)
            | c.r.reg()
    }),
    ("ccmp", 4, |c| {
        (c.r.u(2) << 31)
            | (c.r.u(2) << 30)
            | (1 << 29)
            | 0x1a40_0000
            | (c.r.reg() << 16)
            | (c.r.u(16) << 12)
            | (c.r.u(2) << 11)
            | (c.r.reg() << 5)
            | c.r.u(16)
    }),
    ("adr", 2, |c| {
        (c.r.u(2) << 31) | (c.r.u(4) << 29) | 0x1000_0000 | (c.r.u(1 << 19) << 5) | c.r.reg()
    }),
    ("b", 3, |c| {
        let off = c.branch_words(26);
        (c.r.u(2) << 31) | 0x1400_0000 | (off as u32 & 0x3ff_ffff)
    }),
    ("bcond", 5, |c| {
        let off = c.branch_words(19);
        0x5400_0000 | ((off as u32 & 0x7_ffff) << 5) | c.r.u(16)
    }),
    ("cbz", 4, |c| {
        let off = c.branch_words(19);
        let rt = c.r.reg();
        if rt != 31 && c.r.one_in(2) {
            // a zero (or only-upper-half) value now and then
            let v = [0, 1 << 32, 1 << 63, 1][c.r.below(4) as usize];
            c.set(rt, v);
        }
        (c.r.u(2) << 31) | 0x3400_0000 | (c.r.u(2) << 24) | ((off as u32 & 0x7_ffff) << 5) | rt
    }),
    ("tbz", 4, |c| {
        let off = c.branch_words(14);
        let b = match c.r.below(4) {
            0 => 63,
            1 => 0,
            _ => c.r.u(64),
        };
        ((b >> 5) << 31)
            | 0x3600_0000
            | (c.r.u(2) << 24)
            | ((b & 31) << 19)
            | ((off as u32 & 0x3fff) << 5)
            | c.r.reg()
    }),
    ("br", 3, |c| {
        let rn = c.r.u(31);
        let t = c.code_target();
        c.set(rn, t);
        [0xd61f_0000, 0xd63f_0000, 0xd65f_0000][c.r.below(3) as usize] | (rn << 5)
    }),
    ("sysreg", 3, |c| {
        // mrs/msr nzcv, tpidr_el0
        let l = c.r.u(2);
        let reg = if c.r.one_in(2) { 0x4200 } else { 0xd040 };
        0xd51b_0000 | (l << 21) | reg | c.r.reg()
    }),
    ("hint_barrier", 2, |c| match c.r.below(4) {
        0 => 0xd503_201f | ([0, 1, 20, 32, 34, 36, 38][c.r.below(7) as usize] << 5),
        1 => 0xd503_30bf | (c.r.u(16) << 8),
        2 => 0xd503_309f | ((1 + c.r.u(15)) << 8),
        _ => 0xd503_3fdf,
    }),
    ("ldr_literal", 2, |c| {
        // ldr w/x/ldrsw and SIMD s/d/q from a pc-relative literal: mostly
        // the code page (readable), sometimes the data just past it.
        let (opc, v) = match c.r.below(6) {
            0 => (0, 0),
            1 | 2 => (1, 0),
            3 => (2, 0),
            _ => (c.r.u(3), 1),
        };
        let words: i64 = if c.r.one_in(4) {
            ((DATA - c.at) / 4 + c.r.below(0x100)) as i64
        } else {
            c.branch_words(19)
        };
        let words = words.clamp(-(1 << 18), (1 << 18) - 1);
        (opc << 30) | 0x1800_0000 | (v << 26) | ((words as u32 & 0x7_ffff) << 5) | c.r.reg()
    }),
    ("prfm", 1, |c| {
        let rn = c.r.reg();
        c.base(rn, 8, 0);
        let op = c.r.u(32);
        match c.r.below(3) {
            0 => 0xf980_0000 | (c.r.u(64) << 10) | (rn << 5) | op,
            1 => 0xf880_0000 | ((c.r.u(512)) << 12) | (rn << 5) | op,
            _ => {
                let words = c.branch_words(19);
                0xd800_0000 | ((words as u32 & 0x7_ffff) << 5) | op
            }
        }
    }),
    ("ldst_uoff", 6, ldst_uoff),
    ("ldst_simm9", 6, ldst_simm9),
    ("ldst_regoff", 5, ldst_regoff),
    ("ldst_pair", 6, ldst_pair),
    ("ldst_acqrel", 3, |c| {
        let size = c.r.u(4);
        let rn = c.r.reg();
        c.base(rn, 1 << size, 0);
        let base = [0x08df_fc00, 0x089f_fc00, 0x38bf_c000][c.r.below(3) as usize];
        (size << 30) | base | (rn << 5) | c.r.reg()
    }),
];

/// (size log2, V, opc) of a valid single load/store.
fn ldst_kind(r: &mut Rng) -> (u32, u32, u32, u64) {
    if r.one_in(3) {
        // SIMD&FP: B H S D Q
        let k = r.u(5);
        let l = r.u(2);
        let (size, opc) = if k == 4 { (0, 2 | l) } else { (k, l) };
        (size, 1, opc, 1 << k)
    } else {
        let size = r.u(4);
        let opc = match size {
            3 => r.u(2),
            2 => r.u(3),
            _ => r.u(4),
        };
        (size, 0, opc, 1 << size)
    }
}

fn ldst_uoff(c: &mut Ctx) -> u32 {
    let (size, v, opc, bytes) = ldst_kind(c.r);
    let imm = match c.r.below(3) {
        0 => c.r.u(4096),
        _ => c.r.u(64),
    };
    let rn = c.r.reg();
    c.base(rn, bytes, (u64::from(imm) * bytes) as i64);
    (size << 30) | 0x3900_0000 | (v << 26) | (opc << 22) | (imm << 10) | (rn << 5) | c.r.reg()
}

fn ldst_simm9(c: &mut Ctx) -> u32 {
    let (size, v, opc, bytes) = ldst_kind(c.r);
    let imm = c.r.u(512) as i32 - 256;
    // 00 unscaled, 01 post-index, 11 pre-index
    let mode = [0, 1, 3][c.r.below(3) as usize];
    let rn = c.r.reg();
    let mut rt = c.r.reg();
    if mode != 0 && rt == rn && rn != 31 && v == 0 {
        rt = (rt + 1) % 31; // writeback with rt == rn is unpredictable
    }
    let off = if mode == 1 { 0 } else { i64::from(imm) };
    c.base(rn, bytes, off);
    (size << 30)
        | 0x3800_0000
        | (v << 26)
        | (opc << 22)
        | ((imm as u32 & 0x1ff) << 12)
        | (mode << 10)
        | (rn << 5)
        | rt
}

fn ldst_regoff(c: &mut Ctx) -> u32 {
    let (size, v, opc, bytes) = ldst_kind(c.r);
    let option = [2, 3, 6, 7][c.r.below(4) as usize];
    let s = c.r.u(2);
    let rn = c.r.reg();
    let mut rm = c.r.u(31);
    if rm == rn {
        rm = (rm + 1) % 31;
    }
    let shift = match (s, v == 1 && opc >= 2) {
        (0, _) => 0,
        (_, true) => 4, // Q
        _ => size,
    };
    // index value: small, maybe negative, garbage above bit 31 for W forms
    let idx = (c.r.below(64) as i64 - 32) as u64;
    let idx = if option & 1 == 0 && c.r.one_in(2) {
        (c.r.next_u64() << 32) | (idx & 0xffff_ffff)
    } else {
        idx
    };
    c.set(rm, idx);
    let idx = c.st.x[rm as usize];
    let ext = match option {
        2 => idx & 0xffff_ffff,
        6 => idx as u32 as i32 as i64 as u64,
        _ => idx,
    };
    c.base(rn, bytes, (ext << shift) as i64);
    (size << 30)
        | 0x3820_0800
        | (v << 26)
        | (opc << 22)
        | (rm << 16)
        | (option << 13)
        | (s << 12)
        | (rn << 5)
        | c.r.reg()
}

fn ldst_pair(c: &mut Ctx) -> u32 {
    let v = c.r.u(3) == 0;
    let l = c.r.u(2);
    let (opc, bytes) = if v {
        let o = c.r.u(3);
        (o, 4u64 << o)
    } else {
        match c.r.below(3) {
            0 => (0, 4),
            1 if l == 1 => (1, 4),
            _ => (2, 8),
        }
    };
    let idx = match c.r.below(4) as u32 {
        0 if !v && opc == 1 => 2, // no ldnpsw
        i => i,
    };
    let imm = c.r.u(128) as i32 - 64;
    let imm = if c.r.one_in(2) { imm / 8 } else { imm };
    let rn = c.r.reg();
    let mut rt = c.r.u(32);
    let mut rt2 = c.r.u(32);
    if !v {
        // unpredictable: rt == rt2 for loads, writeback onto rt/rt2
        if l == 1 && rt == rt2 {
            rt2 = (rt + 1) % 32;
        }
        if idx & 1 == 1 && rn != 31 {
            while rt == rn || rt2 == rn || (l == 1 && rt == rt2) {
                rt = c.r.u(32);
                rt2 = c.r.u(32);
            }
        }
    } else if l == 1 && rt == rt2 {
        rt2 = (rt + 1) % 32;
    }
    let off = if idx == 1 {
        0
    } else {
        i64::from(imm) * bytes as i64
    };
    c.base(rn, bytes * 2, off);
    (opc << 30)
        | 0x2800_0000
        | (bit(v, 26))
        | (idx << 23)
        | (l << 22)
        | ((imm as u32 & 0x7f) << 15)
        | (rt2 << 10)
        | (rn << 5)
        | rt
}

fn pick_form(r: &mut Rng) -> usize {
    let total: u32 = FORMS.iter().map(|f| f.1).sum();
    let mut x = r.u(total);
    for (i, f) in FORMS.iter().enumerate() {
        if x < f.1 {
            return i;
        }
        x -= f.1;
    }
    0
}

/// Names of every generated form (for coverage checks).
pub fn form_names() -> Vec<&'static str> {
    FORMS.iter().map(|f| f.0).collect()
}

/// A random case: mostly one instruction, sometimes a block of 2..8
/// instructions, now and then a raw random word.
pub fn random_case(r: &mut Rng) -> Generated {
    let mut st = random_state(r);
    let n = if r.one_in(4) {
        2 + r.below(7) as usize
    } else {
        1
    };
    let mut words = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut pinned = 0u32;
    // One case in 12 is a counted loop: `mov counter, #k` at entry, a body,
    // `subs counter, counter, #1; b.ne body` (the body's registers come from
    // a pool without the counter; a body that clobbers it anyway runs into
    // the budget and is skipped).
    let counter = if n > 1 && r.one_in(3) {
        let c = r.u(31);
        st.x[c as usize] = 1 + r.below(5);
        pinned |= 1 << c;
        Some(c)
    } else {
        None
    };
    if let Some(c) = counter {
        let k = 3 + r.below(4) as usize;
        r.pool = (0..k).map(|_| r.u(32)).filter(|&x| x != c).collect();
    } else if n > 1 && r.one_in(2) {
        // A small register pool (31 = sp/zr included now and then): the
        // block's instructions feed each other.
        let k = 3 + r.below(4) as usize;
        r.pool = (0..k).map(|_| r.u(32)).collect();
    }
    for i in 0..n {
        if r.one_in(40) {
            // Never the exception-generating class (svc/hvc/smc/brk/hlt/
            // udf...): a raw `svc` would make a random system call in the
            // harness when a case is run without the executor's filter.
            let w = loop {
                let w = r.next_u64() as u32;
                if w >> 24 != 0xd4 {
                    break w;
                }
            };
            words.push(w);
            kinds.push("raw");
            continue;
        }
        let f = pick_form(r);
        let mut c = Ctx {
            r,
            st: &mut st,
            at: BLOCK + 4 * i as u64,
            pinned,
        };
        let w = (FORMS[f].2)(&mut c);
        pinned = c.pinned;
        words.push(w);
        kinds.push(FORMS[f].0);
    }
    if let Some(c) = counter {
        let body = words.len() as u32;
        words.push(0xf100_0400 | (c << 5) | c); // subs xc, xc, #1
        kinds.push("loop");
        // b.ne back to the first word of the block
        words.push(0x5400_0001 | ((body.wrapping_neg() & 0x7_ffff) << 5));
        kinds.push("loop");
    }
    r.pool.clear();
    let mut g = make_case(r, &words, st);
    g.kinds = kinds;
    g
}

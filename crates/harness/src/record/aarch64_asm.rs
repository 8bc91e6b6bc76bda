//! A tiny aarch64 assembler for the recorded sequences: the handful of
//! encodings the patterns use, with labels for branches. Checked against
//! yaxpeax-arm's disassembly in the unit test below.

/// A forward or backward branch target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Clone, Copy, Debug)]
enum Fix {
    /// imm26 at bit 0 (b, bl).
    B26,
    /// imm19 at bit 5 (b.cond, cbz, cbnz).
    B19,
    /// imm14 at bit 5 (tbz, tbnz).
    B14,
}

/// Condition codes (the raw 4-bit encoding).
pub mod cond {
    /// Equal.
    pub const EQ: u32 = 0;
    /// Not equal.
    pub const NE: u32 = 1;
    /// Carry set / unsigned higher or same.
    pub const HS: u32 = 2;
    /// Carry clear / unsigned lower.
    pub const LO: u32 = 3;
    /// Unsigned higher.
    pub const HI: u32 = 8;
    /// Unsigned lower or same.
    pub const LS: u32 = 9;
    /// Signed greater or equal.
    pub const GE: u32 = 10;
    /// Signed less than.
    pub const LT: u32 = 11;
    /// Signed greater than.
    pub const GT: u32 = 12;
    /// Signed less or equal.
    pub const LE: u32 = 13;
}

/// Register 31 as the zero register or sp, depending on the operand.
pub const ZR: u32 = 31;
/// Register 31 as sp.
pub const SP: u32 = 31;

/// Instruction words with labels.
#[derive(Debug, Default)]
pub struct Asm {
    /// The words so far.
    pub words: Vec<u32>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label, Fix)>,
}

fn sf(x: bool) -> u32 {
    u32::from(x) << 31
}

impl Asm {
    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    /// Bind `l` to the next word.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.words.len());
    }
    /// Byte offset of a bound label.
    pub fn offset_of(&self, l: Label) -> Option<u64> {
        self.labels[l.0].map(|w| 4 * w as u64)
    }
    /// Emit a raw word.
    pub fn word(&mut self, w: u32) {
        self.words.push(w);
    }

    // ---- data processing ----

    /// `add{s} rd, rn, #imm12` (rd/rn 31 = sp unless flags are set: then rd 31 = zr).
    pub fn add_imm(&mut self, x: bool, s: bool, rd: u32, rn: u32, imm: u32) {
        self.word(sf(x) | (u32::from(s) << 29) | 0x1100_0000 | (imm << 10) | (rn << 5) | rd);
    }
    /// `sub{s} rd, rn, #imm12`.
    pub fn sub_imm(&mut self, x: bool, s: bool, rd: u32, rn: u32, imm: u32) {
        self.word(
            sf(x) | (1 << 30) | (u32::from(s) << 29) | 0x1100_0000 | (imm << 10) | (rn << 5) | rd,
        );
    }
    /// `cmp rn, #imm12`.
    pub fn cmp_imm(&mut self, x: bool, rn: u32, imm: u32) {
        self.sub_imm(x, true, ZR, rn, imm);
    }
    /// `add{s} rd, rn, rm, lsl #amt`.
    pub fn add_reg(&mut self, x: bool, s: bool, rd: u32, rn: u32, rm: u32, lsl: u32) {
        self.word(
            sf(x) | (u32::from(s) << 29) | 0x0b00_0000 | (rm << 16) | (lsl << 10) | (rn << 5) | rd,
        );
    }
    /// `sub{s} rd, rn, rm, lsl #amt`.
    pub fn sub_reg(&mut self, x: bool, s: bool, rd: u32, rn: u32, rm: u32, lsl: u32) {
        self.word(
            sf(x)
                | (1 << 30)
                | (u32::from(s) << 29)
                | 0x0b00_0000
                | (rm << 16)
                | (lsl << 10)
                | (rn << 5)
                | rd,
        );
    }
    /// `cmp rn, rm`.
    pub fn cmp_reg(&mut self, x: bool, rn: u32, rm: u32) {
        self.sub_reg(x, true, ZR, rn, rm, 0);
    }
    /// `mov rd, rm` (`orr rd, zr, rm`).
    pub fn mov_reg(&mut self, x: bool, rd: u32, rm: u32) {
        self.word(sf(x) | 0x2a00_03e0 | (rm << 16) | rd);
    }
    /// `movz rd, #imm16, lsl #(16*hw)`.
    pub fn movz(&mut self, x: bool, rd: u32, imm: u32, hw: u32) {
        self.word(sf(x) | 0x5280_0000 | (hw << 21) | (imm << 5) | rd);
    }
    /// `movk rd, #imm16, lsl #(16*hw)`.
    pub fn movk(&mut self, x: bool, rd: u32, imm: u32, hw: u32) {
        self.word(sf(x) | 0x7280_0000 | (hw << 21) | (imm << 5) | rd);
    }
    /// Load a 64-bit constant with movz/movk.
    pub fn mov_imm64(&mut self, rd: u32, v: u64) {
        self.movz(true, rd, (v & 0xffff) as u32, 0);
        for hw in 1..4 {
            let part = ((v >> (16 * hw)) & 0xffff) as u32;
            if part != 0 {
                self.movk(true, rd, part, hw);
            }
        }
    }
    /// `lsl rd, rn, #amt` (ubfm).
    pub fn lsl_imm(&mut self, x: bool, rd: u32, rn: u32, amt: u32) {
        let w = if x { 64 } else { 32 };
        let immr = (w - amt) % w;
        let imms = w - 1 - amt;
        self.word(
            sf(x)
                | 0x5300_0000
                | (u32::from(x) << 22)
                | (immr << 16)
                | (imms << 10)
                | (rn << 5)
                | rd,
        );
    }
    /// `and{s} rd, rn, rm` (`tst` with rd = zr and flags).
    pub fn and_reg(&mut self, x: bool, s: bool, rd: u32, rn: u32, rm: u32) {
        let opc = if s { 3 } else { 0 };
        self.word(sf(x) | (opc << 29) | 0x0a00_0000 | (rm << 16) | (rn << 5) | rd);
    }
    /// `csel`-family: op 0 csel, 1 csinc, 2 csinv, 3 csneg.
    pub fn csel(&mut self, x: bool, op: u32, rd: u32, rn: u32, rm: u32, c: u32) {
        let (o, o2) = (op >> 1, op & 1);
        self.word(
            sf(x) | (o << 30) | 0x1a80_0000 | (rm << 16) | (c << 12) | (o2 << 10) | (rn << 5) | rd,
        );
    }
    /// `ccmp rn, #imm5, #nzcv, cond`.
    pub fn ccmp_imm(&mut self, x: bool, rn: u32, imm5: u32, nzcv: u32, c: u32) {
        self.word(sf(x) | 0x7a40_0800 | (imm5 << 16) | (c << 12) | (rn << 5) | nzcv);
    }
    /// `mrs xt, tpidr_el0`.
    pub fn mrs_tpidr(&mut self, rt: u32) {
        self.word(0xd53b_d040 | rt);
    }

    // ---- loads and stores (size: log2 bytes) ----

    fn ldst_uoff(&mut self, size: u32, opc: u32, rt: u32, rn: u32, off: u64) {
        let imm = (off >> size) as u32;
        debug_assert!(off.is_multiple_of(1 << size) && imm < 4096);
        self.word((size << 30) | 0x3900_0000 | (opc << 22) | (imm << 10) | (rn << 5) | rt);
    }
    /// `ldr{b,h,,} rt, [rn, #off]` (zero-extending).
    pub fn ldr(&mut self, size: u32, rt: u32, rn: u32, off: u64) {
        self.ldst_uoff(size, 1, rt, rn, off);
    }
    /// `str{b,h,,} rt, [rn, #off]`.
    pub fn str(&mut self, size: u32, rt: u32, rn: u32, off: u64) {
        self.ldst_uoff(size, 0, rt, rn, off);
    }
    /// `ldur rt, [rn, #simm9]` (or stur with `store`).
    pub fn ldur(&mut self, size: u32, store: bool, rt: u32, rn: u32, off: i32) {
        let opc = u32::from(!store);
        self.word(
            (size << 30)
                | 0x3800_0000
                | (opc << 22)
                | ((off as u32 & 0x1ff) << 12)
                | (rn << 5)
                | rt,
        );
    }
    /// Register offset: `ldr/str rt, [rn, rm{, lsl #size}]`.
    pub fn ldst_reg(&mut self, size: u32, store: bool, rt: u32, rn: u32, rm: u32, shift: bool) {
        let opc = u32::from(!store);
        self.word(
            (size << 30)
                | 0x3820_6800
                | (opc << 22)
                | (rm << 16)
                | (u32::from(shift) << 12)
                | (rn << 5)
                | rt,
        );
    }
    /// SIMD&FP q register, post-index: `ldr/str qt, [rn], #imm`.
    pub fn ldst_q_post(&mut self, store: bool, qt: u32, rn: u32, imm: i32) {
        let opc = if store { 2 } else { 3 };
        self.word(0x3c00_0400 | (opc << 22) | ((imm as u32 & 0x1ff) << 12) | (rn << 5) | qt);
    }
    /// SIMD&FP q register pair, signed offset: `ldp/stp qt, qt2, [rn, #off]`.
    pub fn ldst_q_pair(&mut self, store: bool, qt: u32, qt2: u32, rn: u32, off: i32) {
        let l = u32::from(!store);
        let imm = ((off / 16) as u32) & 0x7f;
        self.word(0xad00_0000 | (l << 22) | (imm << 15) | (qt2 << 10) | (rn << 5) | qt);
    }
    /// GPR pair: `ldp/stp xt, xt2, [rn, #off]` with mode 1 post, 2 offset, 3 pre.
    pub fn ldst_pair(
        &mut self,
        x: bool,
        store: bool,
        mode: u32,
        (rt, rt2): (u32, u32),
        rn: u32,
        off: i32,
    ) {
        let opc = if x { 2 } else { 0 };
        let scale = if x { 8 } else { 4 };
        let imm = ((off / scale) as u32) & 0x7f;
        self.word(
            (opc << 30)
                | 0x2800_0000
                | (mode << 23)
                | (u32::from(!store) << 22)
                | (imm << 15)
                | (rt2 << 10)
                | (rn << 5)
                | rt,
        );
    }
    /// `stlr{b,h,} rt, [rn]`.
    pub fn stlr(&mut self, size: u32, rt: u32, rn: u32) {
        self.word((size << 30) | 0x089f_fc00 | (rn << 5) | rt);
    }
    /// `ldar{b,h,} rt, [rn]`.
    pub fn ldar(&mut self, size: u32, rt: u32, rn: u32) {
        self.word((size << 30) | 0x08df_fc00 | (rn << 5) | rt);
    }

    // ---- branches ----

    fn fix(&mut self, w: u32, l: Label, f: Fix) {
        self.fixups.push((self.words.len(), l, f));
        self.word(w);
    }
    /// `b label`.
    pub fn b(&mut self, l: Label) {
        self.fix(0x1400_0000, l, Fix::B26);
    }
    /// `b.cond label`.
    pub fn bcond(&mut self, c: u32, l: Label) {
        self.fix(0x5400_0000 | c, l, Fix::B19);
    }
    /// `cbz`/`cbnz rt, label`.
    pub fn cbz(&mut self, x: bool, nonzero: bool, rt: u32, l: Label) {
        self.fix(
            sf(x) | 0x3400_0000 | (u32::from(nonzero) << 24) | rt,
            l,
            Fix::B19,
        );
    }
    /// `tbz`/`tbnz rt, #bit, label`.
    pub fn tbz(&mut self, nonzero: bool, rt: u32, bit: u32, l: Label) {
        self.fix(
            ((bit >> 5) << 31) | 0x3600_0000 | (u32::from(nonzero) << 24) | ((bit & 31) << 19) | rt,
            l,
            Fix::B14,
        );
    }
    /// `nop`.
    pub fn nop(&mut self) {
        self.word(0xd503_201f);
    }

    /// Resolve the labels; every used label must be bound.
    pub fn finish(mut self) -> Result<Vec<u32>, String> {
        for &(at, l, f) in &self.fixups {
            let Some(t) = self.labels[l.0] else {
                return Err(format!("label {} used at word {at} is never bound", l.0));
            };
            let d = t as i64 - at as i64;
            let w = &mut self.words[at];
            match f {
                Fix::B26 => *w |= (d as u32) & 0x3ff_ffff,
                Fix::B19 => *w |= ((d as u32) & 0x7_ffff) << 5,
                Fix::B14 => {
                    if !(-(1 << 13)..(1 << 13)).contains(&d) {
                        return Err("tbz target out of range".into());
                    }
                    *w |= ((d as u32) & 0x3fff) << 5
                }
            }
        }
        Ok(self.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaxpeax_arch::{Decoder, U8Reader};
    use yaxpeax_arm::armv8::a64::InstDecoder;

    fn dis(w: u32) -> String {
        let b = w.to_le_bytes();
        let mut r = U8Reader::new(&b);
        InstDecoder::default()
            .decode(&mut r)
            .map(|i| i.to_string())
            .unwrap_or_else(|e| format!("error {e}"))
    }

    #[test]
    fn encodings_disassemble_as_intended() {
        let mut a = Asm::default();
        let top = a.label();
        a.bind(top);
        a.add_imm(true, false, 1, 2, 3);
        a.sub_imm(false, true, 4, 5, 6);
        a.cmp_imm(true, 7, 8);
        a.add_reg(true, false, 1, 2, 3, 3);
        a.sub_reg(false, true, 1, 2, 3, 0);
        a.cmp_reg(true, 9, 10);
        a.mov_reg(true, 11, 12);
        a.movz(true, 13, 0x1234, 1);
        a.movk(false, 14, 0x5678, 0);
        a.lsl_imm(true, 1, 2, 4);
        a.and_reg(true, true, ZR, 3, 4);
        a.csel(true, 0, 1, 2, 3, cond::EQ);
        a.csel(false, 1, 1, 2, 3, cond::NE);
        a.ccmp_imm(true, 5, 3, 4, cond::EQ);
        a.mrs_tpidr(9);
        a.ldr(2, 1, 2, 4);
        a.str(3, 1, 2, 16);
        a.ldr(1, 3, 4, 6);
        a.ldur(2, false, 5, 6, -92);
        a.ldst_reg(3, true, 1, 2, 3, true);
        a.ldst_reg(0, false, 1, 2, 3, false);
        a.ldst_q_post(false, 0, 1, 16);
        a.ldst_q_post(true, 0, 2, 16);
        a.ldst_q_pair(false, 0, 1, 3, 32);
        a.ldst_pair(true, false, 3, (1, 2), 3, 16);
        a.ldst_pair(false, true, 2, (1, 2), SP, -8);
        a.stlr(3, 1, 2);
        a.ldar(2, 1, 2);
        a.b(top);
        a.bcond(cond::NE, top);
        a.cbz(false, true, 3, top);
        a.tbz(false, 4, 63, top);
        a.nop();
        let words = a.finish().expect("labels");
        let text: Vec<String> = words.iter().map(|&w| dis(w)).collect();
        let want = [
            "add x1, x2, #0x3",
            "subs w4, w5, #0x6",
            "cmp x7, #0x8",
            "add x1, x2, x3, lsl #3",
            "subs w1, w2, w3",
            "cmp x9, x10",
            "mov x11, x12",
            "mov x13, #0x12340000",
            "movk w14, #0x5678",
            "lsl x1, x2, #0x4",
            "tst x3, x4",
            "csel x1, x2, x3, eq",
            "csinc w1, w2, w3, ne",
            "ccmp x5, #0x3, #0x4, eq",
            "mrs x9, tpidr_el0",
            "ldr w1, [x2, #0x4]",
            "str x1, [x2, #0x10]",
            "ldrh w3, [x4, #0x6]",
            "ldur w5, [x6, #-0x5c]",
            "str x1, [x2, x3, lsl #3]",
            "ldrb w1, [x2, x3]",
            "ldr q0, [x1], #0x10",
            "str q0, [x2], #0x10",
            "ldp q0, q1, [x3, #0x20]",
            "ldp x1, x2, [x3, #0x10]!",
            "stp w1, w2, [sp, #-0x8]",
            "stlr x1, [x2]",
            "ldar w1, [x2]",
        ];
        for (i, w) in want.iter().enumerate() {
            let got = &text[i];
            assert!(
                normalize(got) == normalize(w),
                "word {i} ({:08x}): got {got:?}, want {w:?}",
                words[i]
            );
        }
        assert!(text[28].starts_with('b'), "{}", text[28]);
        assert!(text[29].starts_with("b.ne"), "{}", text[29]);
        assert!(text[30].starts_with("cbnz w3"), "{}", text[30]);
        assert!(text[31].starts_with("tbz x4, #0x3f"), "{}", text[31]);
        assert_eq!(text[32], "nop");
    }

    /// yaxpeax prints immediates in hex with some spelling freedom; compare
    /// without spaces and case.
    fn normalize(s: &str) -> String {
        s.to_lowercase().replace(' ', "")
    }
}

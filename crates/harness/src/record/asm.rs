//! A tiny x86_64 assembler: exactly the instruction forms the recorded
//! patterns use, with labels and rel32 branches.

/// A memory operand.
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    /// Base register, if any.
    pub base: Option<u8>,
    /// Index register and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    /// Displacement.
    pub disp: i32,
    /// Through the FS segment.
    pub fs: bool,
}

impl Mem {
    /// `disp(%base)`.
    pub fn b(base: u8, disp: i32) -> Self {
        Mem {
            base: Some(base),
            index: None,
            disp,
            fs: false,
        }
    }
    /// `disp(%base,%index,scale)`.
    pub fn bi(base: u8, index: u8, scale: u8, disp: i32) -> Self {
        Mem {
            base: Some(base),
            index: Some((index, scale)),
            disp,
            fs: false,
        }
    }
    /// `%fs:disp` (absolute disp32, initial-exec TLS style).
    pub fn fs_abs(disp: i32) -> Self {
        Mem {
            base: None,
            index: None,
            disp,
            fs: true,
        }
    }
    /// `%fs:disp(%base)`.
    pub fn fs_b(base: u8, disp: i32) -> Self {
        Mem {
            base: Some(base),
            index: None,
            disp,
            fs: true,
        }
    }
}

/// A register or memory operand.
#[derive(Clone, Copy, Debug)]
pub enum Rm {
    /// A register.
    R(u8),
    /// Memory.
    M(Mem),
}

/// A label: an index into the assembler's label table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Condition codes (the low nibble of jcc/setcc/cmovcc).
#[allow(dead_code)]
pub mod cc {
    /// below (CF=1)
    pub const B: u8 = 0x2;
    /// above or equal (CF=0)
    pub const AE: u8 = 0x3;
    /// equal
    pub const E: u8 = 0x4;
    /// not equal
    pub const NE: u8 = 0x5;
    /// below or equal
    pub const BE: u8 = 0x6;
    /// above
    pub const A: u8 = 0x7;
    /// less
    pub const L: u8 = 0xc;
    /// greater or equal
    pub const GE: u8 = 0xd;
    /// less or equal
    pub const LE: u8 = 0xe;
    /// greater
    pub const G: u8 = 0xf;
}

/// ALU operation numbers (the /n of 0x81 and the row of 0x01..0x39).
#[allow(dead_code)]
pub mod alu {
    /// add
    pub const ADD: u8 = 0;
    /// or
    pub const OR: u8 = 1;
    /// adc
    pub const ADC: u8 = 2;
    /// sbb
    pub const SBB: u8 = 3;
    /// and
    pub const AND: u8 = 4;
    /// sub
    pub const SUB: u8 = 5;
    /// xor
    pub const XOR: u8 = 6;
    /// cmp
    pub const CMP: u8 = 7;
}

/// The assembler.
#[derive(Default)]
pub struct Asm {
    /// Address of the first byte.
    pub base: u64,
    /// The code so far.
    pub buf: Vec<u8>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty buffer loaded at `base`.
    pub fn new(base: u64) -> Self {
        Asm {
            base,
            ..Default::default()
        }
    }

    /// Address of the next byte.
    pub fn here(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// A new unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `l` here.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.buf.len());
    }

    /// Resolve every branch; all labels must be bound.
    pub fn finish(&mut self) -> Result<(), String> {
        for &(pos, l) in &self.fixups {
            let t = self.labels[l.0].ok_or("branch to an unbound label")?;
            let rel = t as i64 - (pos as i64 + 4);
            self.buf[pos..pos + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        Ok(())
    }

    /// The generic ModRM form: prefixes, REX, `opcode`, ModRM/SIB/disp.
    /// `byte_regs` says whether register operands are 8-bit (REX for sil..dil).
    fn modrm(&mut self, size: u8, opcode: &[u8], reg: u8, rm: Rm, imm_len: usize) {
        let _ = imm_len;
        if let Rm::M(m) = rm {
            if m.fs {
                self.buf.push(0x64);
            }
        }
        if size == 2 {
            self.buf.push(0x66);
        }
        let mut rex = 0u8;
        if size == 8 {
            rex |= 8;
        }
        if reg >= 8 {
            rex |= 4;
        }
        match rm {
            Rm::R(r) => {
                if r >= 8 {
                    rex |= 1;
                }
                if size == 1 && (4..8).contains(&r) {
                    rex |= 0x40;
                }
            }
            Rm::M(m) => {
                if m.base.is_some_and(|b| b >= 8) {
                    rex |= 1;
                }
                if m.index.is_some_and(|(i, _)| i >= 8) {
                    rex |= 2;
                }
            }
        }
        if size == 1 && (4..8).contains(&reg) {
            rex |= 0x40;
        }
        if rex != 0 {
            self.buf.push(0x40 | (rex & 0xf));
        }
        self.buf.extend_from_slice(opcode);
        let r = (reg & 7) << 3;
        match rm {
            Rm::R(x) => self.buf.push(0xc0 | r | (x & 7)),
            Rm::M(m) => match (m.base, m.index) {
                (None, None) => {
                    self.buf.push(r | 4);
                    self.buf.push(0x25);
                    self.buf.extend_from_slice(&m.disp.to_le_bytes());
                }
                (base, index) => {
                    let b = base.expect("index without base is not used");
                    let (md, d8) = if m.disp == 0 && b & 7 != 5 {
                        (0u8, None)
                    } else if let Ok(d) = i8::try_from(m.disp) {
                        (0x40, Some(d))
                    } else {
                        (0x80, None)
                    };
                    let need_sib = index.is_some() || b & 7 == 4;
                    self.buf.push(md | r | if need_sib { 4 } else { b & 7 });
                    if need_sib {
                        let (i, s) = index.unwrap_or((4, 1));
                        let ss = match s {
                            1 => 0,
                            2 => 1,
                            4 => 2,
                            _ => 3,
                        };
                        self.buf.push((ss << 6) | ((i & 7) << 3) | (b & 7));
                    }
                    match (md, d8) {
                        (0x40, Some(d)) => self.buf.push(d as u8),
                        (0x80, _) => self.buf.extend_from_slice(&m.disp.to_le_bytes()),
                        _ => {}
                    }
                }
            },
        }
    }

    /// `mov rm, reg` (store or register move).
    pub fn mov_to(&mut self, size: u8, dst: Rm, src: u8) {
        let op = if size == 1 { 0x88 } else { 0x89 };
        self.modrm(size, &[op], src, dst, 0);
    }

    /// `mov reg, rm` (load).
    pub fn mov_from(&mut self, size: u8, dst: u8, src: Rm) {
        let op = if size == 1 { 0x8a } else { 0x8b };
        self.modrm(size, &[op], dst, src, 0);
    }

    /// `mov $imm, rm` (imm sign-extended for 64-bit).
    pub fn mov_imm(&mut self, size: u8, dst: Rm, imm: i32) {
        let op = if size == 1 { 0xc6 } else { 0xc7 };
        self.modrm(size, &[op], 0, dst, 0);
        match size {
            1 => self.buf.push(imm as u8),
            2 => self.buf.extend_from_slice(&(imm as u16).to_le_bytes()),
            _ => self.buf.extend_from_slice(&imm.to_le_bytes()),
        }
    }

    /// `movabs $imm64, %reg`.
    pub fn movabs(&mut self, reg: u8, imm: u64) {
        self.buf.push(0x48 | u8::from(reg >= 8));
        self.buf.push(0xb8 + (reg & 7));
        self.buf.extend_from_slice(&imm.to_le_bytes());
    }

    /// `movabs %rax, addr64`.
    pub fn movabs_store_rax(&mut self, addr: u64) {
        self.buf.extend_from_slice(&[0x48, 0xa3]);
        self.buf.extend_from_slice(&addr.to_le_bytes());
    }

    /// ALU `op rm, reg` (`add %reg, rm` in AT&T).
    pub fn alu_to(&mut self, op: u8, size: u8, dst: Rm, src: u8) {
        let base = (op << 3) | if size == 1 { 0 } else { 1 };
        self.modrm(size, &[base], src, dst, 0);
    }

    /// ALU `op reg, rm` (`add rm, %reg` in AT&T).
    pub fn alu_from(&mut self, op: u8, size: u8, dst: u8, src: Rm) {
        let base = (op << 3) | if size == 1 { 2 } else { 3 };
        self.modrm(size, &[base], dst, src, 0);
    }

    /// ALU with an immediate.
    pub fn alu_imm(&mut self, op: u8, size: u8, dst: Rm, imm: i32) {
        if size == 1 {
            self.modrm(1, &[0x80], op, dst, 1);
            self.buf.push(imm as u8);
        } else if let Ok(i) = i8::try_from(imm) {
            self.modrm(size, &[0x83], op, dst, 1);
            self.buf.push(i as u8);
        } else {
            self.modrm(size, &[0x81], op, dst, 4);
            if size == 2 {
                self.buf.extend_from_slice(&(imm as u16).to_le_bytes());
            } else {
                self.buf.extend_from_slice(&imm.to_le_bytes());
            }
        }
    }

    /// `inc rm`.
    pub fn inc(&mut self, size: u8, dst: Rm) {
        self.modrm(size, &[if size == 1 { 0xfe } else { 0xff }], 0, dst, 0);
    }

    /// `dec rm`.
    pub fn dec(&mut self, size: u8, dst: Rm) {
        self.modrm(size, &[if size == 1 { 0xfe } else { 0xff }], 1, dst, 0);
    }

    /// `test %reg, rm`.
    pub fn test(&mut self, size: u8, a: Rm, b: u8) {
        self.modrm(size, &[if size == 1 { 0x84 } else { 0x85 }], b, a, 0);
    }

    /// `lea mem, %reg`.
    pub fn lea(&mut self, size: u8, dst: u8, m: Mem) {
        self.modrm(size, &[0x8d], dst, Rm::M(m), 0);
    }

    /// `movzbl`/`movzwl` (from_size 1 or 2) into a `size`-byte register.
    pub fn movzx(&mut self, size: u8, from_size: u8, dst: u8, src: Rm) {
        let op = if from_size == 1 { 0xb6 } else { 0xb7 };
        // A 16-bit source never needs the byte-register REX rule.
        if from_size == 1 {
            if let Rm::R(r) = src {
                if (4..8).contains(&r) && size != 8 && dst < 8 {
                    self.buf.push(0x40);
                    return self.modrm_nopre(&[0x0f, op], dst, src, size);
                }
            }
        }
        self.modrm(size, &[0x0f, op], dst, src, 0);
    }

    fn modrm_nopre(&mut self, opcode: &[u8], reg: u8, rm: Rm, size: u8) {
        // Only for the movzbl %sil-style case: REX 0x40 already emitted.
        debug_assert!(size != 2);
        self.buf.extend_from_slice(opcode);
        if let Rm::R(x) = rm {
            self.buf.push(0xc0 | ((reg & 7) << 3) | (x & 7));
        }
    }

    /// `shl $imm, rm`.
    pub fn shl_imm(&mut self, size: u8, dst: Rm, imm: u8) {
        self.modrm(size, &[if size == 1 { 0xc0 } else { 0xc1 }], 4, dst, 1);
        self.buf.push(imm);
    }

    /// `setcc rm8`.
    pub fn setcc(&mut self, c: u8, dst: Rm) {
        self.modrm(1, &[0x0f, 0x90 | c], 0, dst, 0);
    }

    /// `jcc label` (rel32).
    pub fn jcc(&mut self, c: u8, l: Label) {
        self.buf.extend_from_slice(&[0x0f, 0x80 | c]);
        self.fixups.push((self.buf.len(), l));
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// `jmp label` (rel32).
    pub fn jmp(&mut self, l: Label) {
        self.buf.push(0xe9);
        self.fixups.push((self.buf.len(), l));
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// `pushfq`.
    pub fn pushfq(&mut self) {
        self.buf.push(0x9c);
    }

    /// `popfq`.
    pub fn popfq(&mut self) {
        self.buf.push(0x9d);
    }

    /// `push rm64`.
    pub fn push_rm(&mut self, src: Rm) {
        self.modrm(4, &[0xff], 6, src, 0);
    }

    /// `pop %reg`.
    pub fn pop(&mut self, reg: u8) {
        if reg >= 8 {
            self.buf.push(0x41);
        }
        self.buf.push(0x58 + (reg & 7));
    }

    /// `ret`.
    pub fn ret(&mut self) {
        self.buf.push(0xc3);
    }

    /// `cld`.
    pub fn cld(&mut self) {
        self.buf.push(0xfc);
    }

    /// A 4-byte little-endian constant (the abort signature).
    pub fn long(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check the encoder against the disassembler (AT&T text).
    fn text(f: impl FnOnce(&mut Asm)) -> String {
        use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter};
        let mut a = Asm::new(0x1000);
        f(&mut a);
        let mut d = Decoder::with_ip(64, &a.buf, 0x1000, DecoderOptions::NONE);
        let mut out = Vec::new();
        let mut fmt = GasFormatter::new();
        fmt.options_mut().set_uppercase_hex(false);
        while d.can_decode() {
            let i = d.decode();
            let mut s = String::new();
            fmt.format(&i, &mut s);
            out.push(s);
        }
        out.join("; ")
    }

    #[test]
    fn encodings_match_the_disassembler() {
        use crate::record::asm::alu::*;
        assert_eq!(
            text(|a| a.mov_to(8, Rm::M(Mem::b(7, 0)), 6)),
            "mov %rsi,(%rdi)"
        );
        assert_eq!(
            text(|a| a.mov_to(2, Rm::M(Mem::b(13, 8)), 14)),
            "mov %r14w,8(%r13)"
        );
        assert_eq!(
            text(|a| a.mov_to(1, Rm::M(Mem::b(12, 0)), 6)),
            "mov %sil,(%r12)"
        );
        assert_eq!(
            text(|a| a.mov_from(4, 0, Rm::M(Mem::fs_abs(-28)))),
            "mov %fs:0xffffffffffffffe4,%eax"
        );
        assert_eq!(
            text(|a| a.mov_from(4, 3, Rm::M(Mem::fs_b(0, 4)))),
            "mov %fs:4(%rax),%ebx"
        );
        assert_eq!(
            text(|a| a.alu_to(ADD, 8, Rm::M(Mem::bi(5, 4 + 8, 8, 0)), 9)),
            "add %r9,(%rbp,%r12,8)"
        );
        assert_eq!(
            text(|a| a.alu_imm(CMP, 4, Rm::R(1), 1000)),
            "cmp $0x3e8,%ecx"
        );
        assert_eq!(
            text(|a| a.mov_imm(8, Rm::M(Mem::fs_abs(0x9a8)), 0x6000_1000)),
            "movq $0x60001000,%fs:0x9a8"
        );
        assert_eq!(
            text(|a| a.movzx(8, 2, 2, Rm::M(Mem::bi(7, 1, 1, 0)))),
            "movzwq (%rdi,%rcx),%rdx"
        );
        assert_eq!(text(|a| a.movzx(4, 1, 2, Rm::R(6))), "movzbl %sil,%edx");
        assert_eq!(text(|a| a.lea(8, 0, Mem::b(4, 1))), "lea 1(%rsp),%rax");
        assert_eq!(text(|a| a.dec(8, Rm::R(13))), "dec %r13");
        assert_eq!(
            text(|a| a.push_rm(Rm::M(Mem::b(0, 0x80)))),
            "pushq 0x80(%rax)"
        );
    }
}

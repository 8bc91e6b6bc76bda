//! Random oracle cases: instruction bytes built from opcode templates with
//! random prefixes, REX, ModRM/SIB and immediates, and entry states whose
//! memory operands land in the oracle's scratch pages.

use rseq_emu_core::Arch;

use crate::decode::{Kind, Opnd, Seg, NO_REG};
use crate::exec::ea_noseg;
use crate::oracle::{Case, Native, Rng, SCRATCH_LEN};
use crate::{reg, X86State, X86_64};

#[derive(Clone, Copy)]
enum Imm {
    None,
    B,
    Z,
    V,
}

/// An opcode template.
pub struct T {
    op: &'static [u8],
    modrm: bool,
    reg: Option<u8>,
    imm: Imm,
}

const fn t(op: &'static [u8], modrm: bool, reg: Option<u8>, imm: Imm) -> T {
    T {
        op,
        modrm,
        reg,
        imm,
    }
}

macro_rules! alu {
    ($b:expr) => {
        [
            t(&[$b], true, None, Imm::None),
            t(&[$b + 1], true, None, Imm::None),
            t(&[$b + 2], true, None, Imm::None),
            t(&[$b + 3], true, None, Imm::None),
            t(&[$b + 4], false, None, Imm::B),
            t(&[$b + 5], false, None, Imm::Z),
        ]
    };
}

fn templates() -> Vec<T> {
    let mut v = Vec::new();
    for b in [0x00u8, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38] {
        v.extend(match b {
            0x00 => alu!(0x00),
            0x08 => alu!(0x08),
            0x10 => alu!(0x10),
            0x18 => alu!(0x18),
            0x20 => alu!(0x20),
            0x28 => alu!(0x28),
            0x30 => alu!(0x30),
            _ => alu!(0x38),
        });
    }
    v.extend([
        t(&[0x80], true, None, Imm::B),
        t(&[0x81], true, None, Imm::Z),
        t(&[0x83], true, None, Imm::B),
        t(&[0x84], true, None, Imm::None),
        t(&[0x85], true, None, Imm::None),
        t(&[0x86], true, None, Imm::None),
        t(&[0x87], true, None, Imm::None),
        t(&[0x88], true, None, Imm::None),
        t(&[0x89], true, None, Imm::None),
        t(&[0x8a], true, None, Imm::None),
        t(&[0x8b], true, None, Imm::None),
        t(&[0x8d], true, None, Imm::None),
        t(&[0x63], true, None, Imm::None),
        t(&[0xa8], false, None, Imm::B),
        t(&[0xa9], false, None, Imm::Z),
        t(&[0xc6], true, Some(0), Imm::B),
        t(&[0xc7], true, Some(0), Imm::Z),
        t(&[0xc0], true, None, Imm::B),
        t(&[0xc1], true, None, Imm::B),
        t(&[0xd0], true, None, Imm::None),
        t(&[0xd1], true, None, Imm::None),
        t(&[0xd2], true, None, Imm::None),
        t(&[0xd3], true, None, Imm::None),
        t(&[0xf6], true, Some(0), Imm::B),
        t(&[0xf6], true, Some(2), Imm::None),
        t(&[0xf6], true, Some(3), Imm::None),
        t(&[0xf7], true, Some(0), Imm::Z),
        t(&[0xf7], true, Some(2), Imm::None),
        t(&[0xf7], true, Some(3), Imm::None),
        t(&[0xfe], true, Some(0), Imm::None),
        t(&[0xfe], true, Some(1), Imm::None),
        t(&[0xff], true, Some(0), Imm::None),
        t(&[0xff], true, Some(1), Imm::None),
        t(&[0x0f, 0xb6], true, None, Imm::None),
        t(&[0x0f, 0xb7], true, None, Imm::None),
        t(&[0x0f, 0xbe], true, None, Imm::None),
        t(&[0x0f, 0xbf], true, None, Imm::None),
        t(&[0x0f, 0xa3], true, None, Imm::None),
        t(&[0x0f, 0xab], true, None, Imm::None),
        t(&[0x0f, 0xb3], true, None, Imm::None),
        t(&[0x0f, 0xbb], true, None, Imm::None),
        t(&[0x0f, 0xba], true, Some(4), Imm::B),
        t(&[0x0f, 0xba], true, Some(5), Imm::B),
        t(&[0x0f, 0xba], true, Some(6), Imm::B),
        t(&[0x0f, 0xba], true, Some(7), Imm::B),
        t(&[0x0f, 0xaf], true, None, Imm::None),
        t(&[0x69], true, None, Imm::Z),
        t(&[0x6b], true, None, Imm::B),
        t(&[0x0f, 0x1f], true, Some(0), Imm::None),
        t(&[0x0f, 0x18], true, Some(1), Imm::None),
        t(&[0x0f, 0x0d], true, Some(1), Imm::None),
        t(&[0xf8], false, None, Imm::None),
        t(&[0xf9], false, None, Imm::None),
        t(&[0xf5], false, None, Imm::None),
        t(&[0xf3, 0x90], false, None, Imm::None),
        t(&[0xf3, 0x0f, 0x1e, 0xfa], false, None, Imm::None),
        t(&[0x0f, 0xae, 0xe8], false, None, Imm::None),
        t(&[0x0f, 0xae, 0xf0], false, None, Imm::None),
        t(&[0x0f, 0xae, 0xf8], false, None, Imm::None),
        t(&[0x68], false, None, Imm::Z),
        t(&[0x6a], false, None, Imm::B),
        t(&[0xff], true, Some(6), Imm::None),
        t(&[0x8f], true, Some(0), Imm::None),
        t(&[0x66, 0x0f, 0x1f, 0x44, 0, 0], false, None, Imm::None),
        t(&[0x0f, 0xc8], false, None, Imm::None),
        t(&[0x0f, 0xcb], false, None, Imm::None),
        t(&[0x0f, 0xce], false, None, Imm::None),
    ]);
    for r in 0..8u8 {
        v.push(T {
            op: [
                &[0xb0u8],
                &[0xb1],
                &[0xb2],
                &[0xb3],
                &[0xb4],
                &[0xb5],
                &[0xb6],
                &[0xb7],
            ][r as usize],
            modrm: false,
            reg: None,
            imm: Imm::B,
        });
        v.push(T {
            op: [
                &[0xb8u8],
                &[0xb9],
                &[0xba],
                &[0xbb],
                &[0xbc],
                &[0xbd],
                &[0xbe],
                &[0xbf],
            ][r as usize],
            modrm: false,
            reg: None,
            imm: Imm::V,
        });
        v.push(T {
            op: [
                &[0x50u8],
                &[0x51],
                &[0x52],
                &[0x53],
                &[0x54],
                &[0x55],
                &[0x56],
                &[0x57],
            ][r as usize],
            modrm: false,
            reg: None,
            imm: Imm::None,
        });
        v.push(T {
            op: [
                &[0x58u8],
                &[0x59],
                &[0x5a],
                &[0x5b],
                &[0x5c],
                &[0x5d],
                &[0x5e],
                &[0x5f],
            ][r as usize],
            modrm: false,
            reg: None,
            imm: Imm::None,
        });
        v.push(T {
            op: [
                &[0x90u8],
                &[0x91],
                &[0x92],
                &[0x93],
                &[0x94],
                &[0x95],
                &[0x96],
                &[0x97],
            ][r as usize],
            modrm: false,
            reg: None,
            imm: Imm::None,
        });
    }
    v
}

fn cc_templates(rng: &mut Rng, out: &mut Vec<u8>) {
    let cc = rng.below(16) as u8;
    match rng.below(3) {
        0 => out.extend([0x0f, 0x40 + cc]),
        _ => out.extend([0x0f, 0x90 + cc]),
    }
}

/// Append ModRM (+SIB, +disp); returns the position of a RIP-relative disp32.
fn modrm(rng: &mut Rng, out: &mut Vec<u8>, reg: Option<u8>) -> Option<usize> {
    let md = rng.below(4) as u8;
    let r = reg.unwrap_or_else(|| rng.below(8) as u8);
    let rm = rng.below(8) as u8;
    out.push(md << 6 | r << 3 | rm);
    let mut rip = None;
    if md != 3 && rm == 4 {
        let sib = rng.below(256) as u8;
        out.push(sib);
        if md == 0 && sib & 7 == 5 {
            out.extend((rng.next_u64() as u32).to_le_bytes());
        }
    } else if md == 0 && rm == 5 {
        rip = Some(out.len());
        out.extend([0; 4]);
    }
    match md {
        1 => out.push(rng.next_u64() as u8),
        2 => {
            let d = if rng.below(2) == 0 {
                rng.below(512) as i32 - 256
            } else {
                rng.next_u64() as i32
            };
            out.extend(d.to_le_bytes())
        }
        _ => {}
    }
    rip
}

/// Build one random snippet (an instruction, or a branch with filler).
pub fn snippet(rng: &mut Rng, n: &Native, ts: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    let filler = |out: &mut Vec<u8>, rng: &mut Rng| {
        out.extend([0x41, 0xbf]);
        out.extend((rng.next_u64() as u32).to_le_bytes());
    };
    match rng.below(20) {
        0 => {
            let cc = rng.below(16) as u8;
            if rng.below(2) == 0 {
                out.extend([0x70 + cc, 6]);
            } else {
                out.extend([0x0f, 0x80 + cc, 6, 0, 0, 0]);
            }
            filler(&mut out, rng);
            return out;
        }
        1 => {
            match rng.below(6) {
                0 => out.extend([0xeb, 6]),
                1 => out.extend([0xe9, 6, 0, 0, 0]),
                2 => {
                    out.extend([0xe8, 0, 0, 0, 0]);
                    return out;
                }
                3 => {
                    out.push(0xc3);
                    return out;
                }
                4 => {
                    out.extend([0xc2, rng.next_u64() as u8, rng.next_u64() as u8]);
                    return out;
                }
                _ => {
                    // jmp/call through a register (not rsp)
                    let mut r = rng.below(16) as u8;
                    if r & 7 == 4 {
                        r = 0;
                    }
                    if r >= 8 {
                        out.push(0x41);
                    }
                    let sub = if rng.below(2) == 0 { 0xe0 } else { 0xd0 };
                    out.extend([0xff, sub | (r & 7)]);
                    return out;
                }
            }
            filler(&mut out, rng);
            return out;
        }
        2 => {
            cc_templates(rng, &mut out);
            modrm(rng, &mut out, None);
            return out;
        }
        3 if rng.below(4) == 0 => {
            // jmp/call through memory
            if rng.below(2) == 0 {
                out.push(0x64);
            }
            out.push(0xff);
            let mut p = out.len();
            let sub = if rng.below(2) == 0 { 4 } else { 2 };
            loop {
                out.truncate(p);
                let _ = modrm(rng, &mut out, Some(sub));
                if out[p] >> 6 != 3 && out[p] & 7 != 5 {
                    break;
                }
                p = out.len().min(p);
            }
            return out;
        }
        4 if rng.below(2) == 0 => {
            // movabs between rax and an absolute 64-bit address
            if rng.below(4) == 0 {
                out.push(0x66);
            }
            if rng.below(2) == 0 {
                out.push(0x48);
            }
            out.push(0xa0 + rng.below(4) as u8);
            let a = n.scratch_addr() + 64 + rng.below(SCRATCH_LEN as u64 - 128);
            out.extend(a.to_le_bytes());
            return out;
        }
        5 if rng.below(2) == 0 => {
            // %fs/%gs with an absolute disp32 and no base/index
            out.push(if rng.below(4) == 0 { 0x65 } else { 0x64 });
            if rng.below(2) == 0 {
                out.push(0x40 | rng.below(16) as u8);
            }
            let (op, r, imm): (u8, Option<u8>, bool) = match rng.below(6) {
                0 => (0x8b, None, false),
                1 => (0x89, None, false),
                2 => (0x01, None, false),
                3 => (0x39, None, false),
                4 => (0x83, Some(rng.below(8) as u8), true),
                _ => (0xff, Some(rng.below(2) as u8), false),
            };
            out.push(op);
            let r = r.unwrap_or_else(|| rng.below(8) as u8);
            out.extend([r << 3 | 4, 0x25]);
            out.extend(((rng.below(4096) as i32) - 2048).to_le_bytes());
            if imm {
                out.push(rng.next_u64() as u8);
            }
            return out;
        }
        _ => {}
    }
    let tpl = &ts[rng.below(ts.len() as u64) as usize];
    let o16 = rng.below(6) == 0;
    if o16 {
        out.push(0x66);
    }
    match rng.below(10) {
        0 => out.push(0x64),
        1 => out.push(0x65),
        _ => {}
    }
    if rng.below(40) == 0 {
        out.push(0x67);
    }
    let mut w = false;
    if rng.below(2) == 0 && tpl.op[0] != 0xf3 && tpl.op[0] != 0x66 {
        let rex = 0x40 | rng.below(16) as u8;
        w = rex & 8 != 0;
        out.push(rex);
    }
    out.extend(tpl.op);
    let rip = if tpl.modrm {
        modrm(rng, &mut out, tpl.reg)
    } else {
        None
    };
    match tpl.imm {
        Imm::None => {}
        Imm::B => out.push(value(rng) as u8),
        Imm::Z if o16 => out.extend((value(rng) as u16).to_le_bytes()),
        Imm::Z => out.extend((value(rng) as u32).to_le_bytes()),
        Imm::V if w => out.extend(value(rng).to_le_bytes()),
        Imm::V if o16 => out.extend((value(rng) as u16).to_le_bytes()),
        Imm::V => out.extend((value(rng) as u32).to_le_bytes()),
    }
    if let Some(p) = rip {
        let target = n.scratch_addr() + 64 + rng.below(SCRATCH_LEN as u64 - 128);
        let disp = target.wrapping_sub(n.snippet_ip() + out.len() as u64) as u32;
        out[p..p + 4].copy_from_slice(&disp.to_le_bytes());
    }
    out
}

/// An interesting register or immediate value: small, small negative,
/// a sign/width boundary, a random 32-bit or a random 64-bit value.
fn value(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => rng.below(70),
        1 => (rng.below(600) as i64 - 300) as u64,
        2 => [
            0,
            u64::MAX,
            0x8000_0000,
            0x7fff_ffff,
            0x8000,
            0x80,
            0x7f,
            1 << 63,
        ][rng.below(8) as usize],
        3 => rng.next_u64() & 0xffff_ffff,
        _ => rng.next_u64(),
    }
}

/// A random state for `code`, with memory operands of its first instruction
/// pointed into scratch, rsp inside scratch and return/indirect targets at
/// the snippet's end.
pub fn state_for(rng: &mut Rng, n: &Native, code: Vec<u8>) -> Case {
    let mut st = X86State::default();
    for g in st.gpr.iter_mut() {
        *g = value(rng);
    }
    st.rflags = rng.next_u64();
    st.fs_base = rng.next_u64() & ((1 << 46) - 1);
    st.gs_base = rng.next_u64() & ((1 << 46) - 1);
    let sa = n.scratch_addr();
    st.gpr[reg::RSP] = sa + 1024 + rng.below(64) * 8;
    let mut scratch = vec![0u8; SCRATCH_LEN];
    for c in scratch.chunks_mut(8) {
        let v = value(rng).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let ip = n.snippet_ip();
    let end = ip + code.len() as u64;
    let d = X86_64::decode(&code, ip);
    if let Ok(op) = &d.op {
        let t = sa + 64 + rng.below(SCRATCH_LEN as u64 - 128);
        let m = match (op.dst, op.src) {
            (Opnd::Mem { m, .. }, _) | (_, Opnd::Mem { m, .. }) => Some(m),
            _ => None,
        };
        if let (Some(m), false) = (m, op.kind == Kind::Lea && rng.below(2) == 0) {
            match m.seg {
                Seg::Fs | Seg::Gs => {
                    let mut b = t.wrapping_sub(ea_noseg(&m, &st));
                    if b >= 1 << 47 {
                        for r in [m.base, m.index] {
                            if r != NO_REG {
                                st.gpr[r as usize] = rng.below(64);
                            }
                        }
                        b = t.wrapping_sub(ea_noseg(&m, &st));
                    }
                    if m.seg == Seg::Fs {
                        st.fs_base = b;
                    } else {
                        st.gs_base = b;
                    }
                }
                Seg::None => {
                    let sc = u64::from(m.scale);
                    let want = t.wrapping_sub(m.disp);
                    if m.base != NO_REG && m.base == m.index {
                        st.gpr[m.base as usize] = want / (1 + sc);
                    } else if m.base != NO_REG {
                        let iv = if m.index != NO_REG {
                            st.gpr[m.index as usize]
                        } else {
                            0
                        };
                        st.gpr[m.base as usize] = want.wrapping_sub(iv.wrapping_mul(sc));
                    } else if m.index != NO_REG {
                        st.gpr[m.index as usize] = want / sc;
                    }
                }
            }
            if matches!(op.kind, Kind::JmpInd | Kind::CallInd) {
                // The address may be anywhere (`jmp *0xffffffffffffffff`):
                // compare offsets, never `a + 8`, which can wrap.
                let a = crate::exec::ea(&m, &st).unwrap_or(0);
                let o = a.wrapping_sub(sa);
                if a >= sa && o <= SCRATCH_LEN as u64 - 8 {
                    let o = o as usize;
                    scratch[o..o + 8].copy_from_slice(&end.to_le_bytes());
                }
            }
        }
        if let (Kind::JmpInd | Kind::CallInd, Opnd::Reg { idx, .. }) = (op.kind, op.dst) {
            st.gpr[idx as usize] = end;
        }
        if op.kind == Kind::Ret {
            let o = (st.gpr[reg::RSP] - sa) as usize;
            scratch[o..o + 8].copy_from_slice(&end.to_le_bytes());
        }
        if matches!(op.kind, Kind::Bt | Kind::Bts | Kind::Btr | Kind::Btc) && rng.below(2) == 0 {
            if let (Opnd::Mem { .. }, Opnd::Reg { idx, .. }) = (op.dst, op.src) {
                st.gpr[idx as usize] = (rng.below(512) as i64 - 256) as u64;
            }
        }
    }
    Case {
        code,
        state: st,
        scratch,
    }
}

/// A random case.
pub fn random_case(rng: &mut Rng, n: &Native) -> Case {
    thread_local! {
        static TS: Vec<T> = templates();
    }
    let code = TS.with(|ts| snippet(rng, n, ts));
    state_for(rng, n, code)
}

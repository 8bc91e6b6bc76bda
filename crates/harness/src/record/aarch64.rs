//! `rseq-emu record --arch aarch64`: aarch64 sequences written in the style
//! of librseq, the kernel selftests and tcmalloc (not copied), run under
//! the qemu-user oracle; the expectation is what qemu did.
//!
//! qemu-user has no rseq, so the `struct rseq` area is an explicit memory
//! region (cpu_id_start/cpu_id = the recorded cpu, rseq_cs = the
//! descriptor) reached through `tpidr_el0 + RSEQ_OFF` or a register that
//! holds its address (librseq passes `rseq_abi` in a register).
//!
//! Data layout inside [`DATA`] (0x800 bytes):
//! * 0x000..0x200: 64 eight-byte slots (per-cpu words, list heads, cursors)
//! * 0x200..0x300 / 0x300..0x400: copy source / destination
//! * 0x400..0x500: per-cpu counters, 16 bytes per cpu (cpu < 16)
//! * 0x500..0x600: tcmalloc-style slab headers, 16 bytes per cpu
//!   (`u16 current, u16 end, u16 begin`)
//! * 0x600..0x800: slab slots (64 pointers)

use super::aarch64_asm::{cond, Asm, Label, SP, ZR};
use super::patterns::Rng;
use super::{select_patterns, Recording};
use crate::fixture::hex;
use rseq_emu_aarch64::oracle::{
    Case, OracleResult, QemuOracle, Region, EXIT_BRK, SIGTRAP, WINDOW_START,
};
use rseq_emu_aarch64::A64State;
use rseq_emu_core::abi::{ArchKind, RseqCs, RSEQ_SIG_AARCH64};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;

/// The code page.
pub const CODE: u64 = WINDOW_START + 0x40_0000;
/// The data buffers.
pub const DATA: u64 = WINDOW_START + 0x50_0000;
/// Size of the data buffers.
pub const DATA_LEN: usize = 0x800;
/// The descriptor (read-only page).
pub const DESC: u64 = WINDOW_START + 0x51_0000;
/// The thread pointer (`tpidr_el0`).
pub const TP: u64 = WINDOW_START + 0x52_0800;
/// `__rseq_offset`: the area lies at `tp + RSEQ_OFF`.
pub const RSEQ_OFF: i64 = -0x60;
/// The area.
pub const AREA: u64 = TP.wrapping_add(RSEQ_OFF as u64);
/// The stack region (sp at its top).
pub const STACK: u64 = WINDOW_START + 0x53_0000;
/// Size of the stack region.
pub const STACK_LEN: usize = 0x100;

/// The patterns, by name.
pub const PATTERNS: &[&str] = &[
    "cpucheck",
    "cmpstore",
    "cmp2store",
    "trystore",
    "memcpy",
    "slab16",
    "ldppre",
    "simdcopy",
    "csel",
    "tbz63",
    "nocommit",
    "cpuabort",
];

/// One generated sequence.
pub struct Gen {
    /// What it exercises.
    pub comment: String,
    /// The section, then exits: post_commit_ip, signature, abort_ip, others.
    pub words: Vec<u32>,
    /// start_ip.
    pub start_ip: u64,
    /// Offset of post_commit_ip from start_ip.
    pub post_off: u64,
    /// Offset of abort_ip from start_ip.
    pub abort_off: u64,
    /// Entry state.
    pub entry: A64State,
    /// Data buffers.
    pub data: Vec<u8>,
    /// Stack contents.
    pub stack: Vec<u8>,
}

struct Ctx<'a> {
    rng: &'a mut Rng,
    cpu: u32,
    st: A64State,
    data: Vec<u8>,
    used: u32,
    a: Asm,
    post: Label,
    abort: Label,
    exits: Vec<Label>,
    notes: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(rng: &'a mut Rng, cpu: u32) -> Self {
        let mut st = A64State::default();
        for x in st.x.iter_mut() {
            *x = rng.value();
        }
        for v in st.v.iter_mut() {
            *v = u128::from(rng.next()) << 64 | u128::from(rng.next());
        }
        st.sp = STACK + STACK_LEN as u64;
        st.nzcv = (rng.below(16) as u32) << 28;
        st.tpidr_el0 = TP;
        let data = (0..DATA_LEN).map(|_| rng.next() as u8).collect();
        let mut a = Asm::default();
        let post = a.label();
        let abort = a.label();
        Ctx {
            rng,
            cpu,
            st,
            data,
            used: 1 << 18, // x18, the platform register, stays out
            a,
            post,
            abort,
            exits: Vec::new(),
            notes: Vec::new(),
        }
    }
    /// A fresh register (x0..x28).
    fn reg(&mut self) -> u32 {
        loop {
            let r = self.rng.below(29) as u32;
            if self.used & (1 << r) == 0 {
                self.used |= 1 << r;
                return r;
            }
        }
    }
    /// A fresh register holding `v` at entry.
    fn reg_with(&mut self, v: u64) -> u32 {
        let r = self.reg();
        self.st.x[r as usize] = v;
        r
    }
    fn exit(&mut self) -> Label {
        let l = self.a.label();
        self.exits.push(l);
        l
    }
    fn put(&mut self, addr: u64, size: usize, v: u64) {
        let o = (addr - DATA) as usize;
        self.data[o..o + size].copy_from_slice(&v.to_le_bytes()[..size]);
    }
    fn get(&self, addr: u64, size: usize) -> u64 {
        let o = (addr - DATA) as usize;
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.data[o..o + size]);
        u64::from_le_bytes(b)
    }
    fn slot(&mut self) -> u64 {
        DATA + 8 * self.rng.below(64)
    }
    /// `n` distinct slots.
    fn slots(&mut self, n: usize) -> Vec<u64> {
        let mut v: Vec<u64> = Vec::new();
        while v.len() < n {
            let s = self.slot();
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    }
    /// The cpu value an entry register holds: the area's, or another.
    fn cpu_value(&mut self, mismatch: bool) -> u64 {
        let c = u64::from(self.cpu);
        if mismatch {
            (c + 1 + self.rng.below(6)) % 16
        } else {
            c
        }
    }
    /// A register pointing at the area: passed in (librseq's `rseq_abi`),
    /// or derived from `tpidr_el0`.
    fn area_reg(&mut self) -> u32 {
        if self.rng.pct(50) {
            self.notes.push("area pointer in a register".into());
            self.reg_with(AREA)
        } else {
            self.notes.push("area via mrs tpidr_el0; sub #0x60".into());
            let r = self.reg();
            self.a.mrs_tpidr(r);
            self.a.sub_imm(true, false, r, r, (-RSEQ_OFF) as u32);
            r
        }
    }
    /// Load the current cpu_id into a fresh W register.
    fn load_cpu(&mut self) -> u32 {
        let t = self.reg();
        if self.rng.pct(30) {
            self.notes.push("cpu_id via ldur [tp, #-0x5c]".into());
            let tp = self.reg();
            self.a.mrs_tpidr(tp);
            self.a.ldur(2, false, t, tp, (RSEQ_OFF + 4) as i32);
        } else {
            let ar = self.area_reg();
            self.a.ldr(2, t, ar, 4);
        }
        t
    }
    /// The cpu check: ldr/sub/cbnz or ldr/cmp/b.ne, to abort_ip on a
    /// mismatch. Returns the register with the expected cpu.
    fn cpu_check(&mut self, mismatch: bool) -> u32 {
        let cv = self.cpu_value(mismatch);
        let cpu = self.reg_with(cv);
        let t = self.load_cpu();
        let abort = self.abort;
        if self.rng.pct(50) {
            self.notes.push("cpu check ldr/sub/cbnz".into());
            self.a.sub_reg(false, false, t, t, cpu, 0);
            self.a.cbz(false, true, t, abort);
        } else {
            self.notes.push("cpu check ldr/cmp/b.ne".into());
            self.a.cmp_reg(false, t, cpu);
            self.a.bcond(cond::NE, abort);
        }
        cpu
    }
    /// Compare the word at `addr` with an expected value (equal with
    /// probability `p_eq` %), leaving to `exit` if different. Returns the
    /// pointer register.
    fn compare_slot(&mut self, x: bool, addr: u64, p_eq: u64, exit: Label) -> u32 {
        let size = if x { 8 } else { 4 };
        let cur = self.get(addr, size);
        let eq = self.rng.pct(p_eq);
        let want = if eq {
            cur
        } else {
            cur ^ (1 + self.rng.below(255))
        };
        let p = self.reg_with(addr);
        let e = self.reg_with(want);
        let t = self.reg();
        self.a.ldr(if x { 3 } else { 2 }, t, p, 0);
        if self.rng.pct(50) {
            self.a.sub_reg(x, false, t, t, e, 0);
            self.a.cbz(x, true, t, exit);
        } else {
            self.a.cmp_reg(x, t, e);
            self.a.bcond(cond::NE, exit);
        }
        p
    }
    fn finish(self, what: &str) -> Result<Gen, String> {
        let Ctx {
            rng,
            st,
            data,
            mut a,
            post,
            abort,
            exits,
            notes,
            ..
        } = self;
        a.bind(post);
        a.word(EXIT_BRK);
        a.word(RSEQ_SIG_AARCH64);
        a.bind(abort);
        a.word(EXIT_BRK);
        for l in exits {
            a.bind(l);
            a.word(EXIT_BRK);
        }
        let post_off = a.offset_of(post).ok_or("post unbound")?;
        let abort_off = a.offset_of(abort).ok_or("abort unbound")?;
        let words = a.finish()?;
        let start_ip = CODE + 0x40 * rng.below(32);
        let mut entry = st;
        entry.pc = start_ip;
        let stack = (0..STACK_LEN).map(|_| rng.next() as u8).collect();
        let mut comment = what.to_string();
        if !notes.is_empty() {
            comment += &format!(" ({})", notes.join("; "));
        }
        Ok(Gen {
            comment,
            words,
            start_ip,
            post_off,
            abort_off,
            entry,
            data,
            stack,
        })
    }
}

fn size_name(x: bool) -> &'static str {
    if x {
        "64-bit"
    } else {
        "32-bit"
    }
}

/// Per-cpu counter add (librseq's `rseq_addv` shape): cpu check, index the
/// per-cpu array with the cpu, load, add, store.
fn cpucheck(c: &mut Ctx, mismatch: bool) {
    let cpu = c.cpu_check(mismatch);
    let base = if c.rng.pct(50) {
        let r = c.reg();
        c.a.mov_imm64(r, DATA + 0x400);
        r
    } else {
        c.reg_with(DATA + 0x400)
    };
    let p = c.reg();
    let v = c.reg();
    c.a.add_reg(true, false, p, base, cpu, 4);
    c.a.ldr(3, v, p, 0);
    if c.rng.pct(50) {
        let inc = c.rng.below(4096) as u32;
        c.a.add_imm(true, false, v, v, inc);
    } else {
        let inc = c.rng.value();
        let r = c.reg_with(inc);
        c.a.add_reg(true, false, v, v, r, 0);
    }
    c.a.str(3, v, p, 0);
}

fn cmpstore(c: &mut Ctx, mismatch: bool) {
    c.cpu_check(mismatch);
    let x = c.rng.pct(70);
    let addr = c.slot();
    let ne = c.exit();
    let p = c.compare_slot(x, addr, 60, ne);
    let v = c.rng.value();
    let nv = c.reg_with(v);
    c.a.str(if x { 3 } else { 2 }, nv, p, 0);
    c.notes.push(format!("{} compare and store", size_name(x)));
}

fn cmp2store(c: &mut Ctx) {
    c.cpu_check(false);
    let s = c.slots(2);
    let (e1, e2) = (c.exit(), c.exit());
    let x = c.rng.pct(70);
    let p1 = c.compare_slot(x, s[0], 70, e1);
    c.compare_slot(x, s[1], 70, e2);
    let v = c.rng.value();
    let nv = c.reg_with(v);
    c.a.str(if x { 3 } else { 2 }, nv, p1, 0);
}

fn trystore(c: &mut Ctx, mismatch: bool) {
    c.cpu_check(mismatch);
    let s = c.slots(2);
    let ne = c.exit();
    let p = c.compare_slot(true, s[0], 65, ne);
    let p2 = c.reg_with(s[1]);
    let v = c.rng.value();
    let v2 = c.reg_with(v);
    let v = c.rng.value();
    let nv = c.reg_with(v);
    c.a.str(3, v2, p2, 0);
    c.a.stlr(3, nv, p);
}

fn memcpy(c: &mut Ctx, mismatch: bool) {
    c.cpu_check(mismatch);
    let len = c.rng.below(49);
    let (s, d) = (c.rng.below(0x40), c.rng.below(0x40));
    let src = c.reg_with(DATA + 0x200 + s);
    let dst = c.reg_with(DATA + 0x300 + d);
    let n = c.reg_with(len);
    let t = c.reg();
    let (top, done) = (c.a.label(), c.a.label());
    if c.rng.pct(50) {
        c.a.cbz(true, false, n, done);
    } else {
        c.a.cmp_imm(true, n, 0);
        c.a.bcond(cond::EQ, done);
    }
    c.a.bind(top);
    c.a.sub_imm(true, false, n, n, 1);
    c.a.ldst_reg(0, false, t, src, n, false);
    c.a.ldst_reg(0, true, t, dst, n, false);
    c.a.cbz(true, true, n, top);
    c.a.bind(done);
    let slot = c.slot();
    let p = c.reg_with(slot);
    let v = c.rng.value();
    let nv = c.reg_with(v);
    c.a.str(3, nv, p, 0);
    c.notes.push(format!("{len} bytes copied backwards"));
}

/// tcmalloc-style per-cpu slab push or pop: the header (u16 current, end,
/// begin) of this cpu's slab, a bound check, the item store or load, and a
/// 16-bit commit of `current`.
fn slab16(c: &mut Ctx) {
    let cpu = c.cpu as u64;
    let hdr = DATA + 0x500 + 16 * cpu;
    let begin = c.rng.below(8);
    let end = begin + 1 + c.rng.below(20);
    let cur = match c.rng.below(4) {
        0 => begin,
        1 => end,
        _ => begin + c.rng.below(end - begin + 1),
    };
    c.put(hdr, 2, cur);
    c.put(hdr + 2, 2, end);
    c.put(hdr + 4, 2, begin);
    let push = c.rng.pct(50);
    let tp = c.reg();
    let w = c.reg();
    let base = c.reg_with(DATA + 0x500);
    let h = c.reg();
    let cu = c.reg();
    let bound = c.reg();
    let slots = c.reg_with(DATA + 0x600);
    let full = c.exit();
    c.a.mrs_tpidr(tp);
    c.a.ldur(2, false, w, tp, (RSEQ_OFF + 4) as i32);
    c.a.lsl_imm(true, w, w, 4);
    c.a.add_reg(true, false, h, base, w, 0);
    c.a.ldr(1, cu, h, 0);
    if push {
        let v = c.rng.value();
        let item = c.reg_with(v);
        c.a.ldr(1, bound, h, 2);
        c.a.cmp_reg(false, cu, bound);
        c.a.bcond(cond::HS, full);
        c.a.ldst_reg(3, true, item, slots, cu, true);
        c.a.add_imm(false, false, cu, cu, 1);
    } else {
        let item = c.reg();
        c.a.ldr(1, bound, h, 4);
        c.a.cmp_reg(false, cu, bound);
        c.a.bcond(cond::LS, full);
        c.a.sub_imm(false, false, cu, cu, 1);
        c.a.ldst_reg(3, false, item, slots, cu, true);
    }
    c.a.str(1, cu, h, 0);
    c.notes.push(format!(
        "{} with current {cur}, begin {begin}, end {end}",
        if push { "push" } else { "pop" }
    ));
}

/// A per-cpu cursor over (item, tag) pairs: `ldp` pre-index advances the
/// cursor, the tag is checked, the cursor is committed.
fn ldppre(c: &mut Ctx) {
    c.cpu_check(false);
    let slot = c.slot();
    let arr = DATA + 0x200 + 16 * c.rng.below(8);
    c.put(slot, 8, arr);
    let next = arr + 16;
    let tag = c.get(next + 8, 8);
    let eq = c.rng.pct(70);
    let want = if eq { tag } else { tag.wrapping_add(1) };
    let ps = c.reg_with(slot);
    let cur = c.reg();
    let item = c.reg();
    let tg = c.reg();
    let e = c.reg_with(want);
    let ne = c.exit();
    let spill = c.rng.pct(40);
    let (s1, s2) = (c.reg(), c.reg());
    if spill {
        // Save two registers on the stack (stp pre-index), restore after.
        c.a.ldst_pair(true, true, 3, (s1, s2), SP, -16);
        c.notes.push("stp/ldp spill on the stack".into());
    }
    c.a.ldr(3, cur, ps, 0);
    c.a.ldst_pair(true, false, 3, (item, tg), cur, 16);
    if spill {
        c.a.ldst_pair(true, false, 1, (s1, s2), SP, 16);
    }
    c.a.cmp_reg(true, tg, e);
    c.a.bcond(cond::NE, ne);
    c.a.str(3, cur, ps, 0);
}

/// A batch copy in q registers (post-index `ldr q`/`str q` loop, or
/// `ldp q`/`stp q`), then a commit store.
fn simdcopy(c: &mut Ctx) {
    c.cpu_check(false);
    let (s, d) = (c.rng.below(4), c.rng.below(4));
    let src = c.reg_with(DATA + 0x200 + 16 * s);
    let dst = c.reg_with(DATA + 0x300 + 16 * d);
    let q = c.rng.below(30) as u32;
    if c.rng.pct(60) {
        let n = 1 + c.rng.below(8);
        let cnt = c.reg_with(n);
        let top = c.a.label();
        c.a.bind(top);
        c.a.ldst_q_post(false, q, src, 16);
        c.a.ldst_q_post(true, q, dst, 16);
        c.a.sub_imm(true, true, cnt, cnt, 1);
        c.a.bcond(cond::NE, top);
        c.notes.push(format!("{n} x 16 bytes through q{q}"));
    } else {
        let pairs = 1 + c.rng.below(2) as i32;
        for k in 0..pairs {
            c.a.ldst_q_pair(false, q, q + 1, src, 32 * k);
            c.a.ldst_q_pair(true, q, q + 1, dst, 32 * k);
        }
        c.notes.push(format!("ldp/stp q{q}, q{}", q + 1));
    }
    let slot = c.slot();
    let p = c.reg_with(slot);
    let v = c.rng.value();
    let nv = c.reg_with(v);
    c.a.str(3, nv, p, 0);
}

/// A clamped per-cpu update: csel picks the value, csinc bumps a count.
fn csel(c: &mut Ctx) {
    c.cpu_check(false);
    let s = c.slots(2);
    let p = c.reg_with(s[0]);
    let pc = c.reg_with(s[1]);
    let v = c.rng.value();
    let lim = c.reg_with(v);
    let v = c.reg();
    let n = c.reg();
    let cnt = c.reg();
    let x = c.rng.pct(70);
    let cc = c.rng.pick(&[
        cond::LO,
        cond::HI,
        cond::LT,
        cond::GE,
        cond::EQ,
        cond::NE,
        cond::LE,
        cond::GT,
    ]);
    c.a.ldr(if x { 3 } else { 2 }, v, p, 0);
    c.a.cmp_reg(x, v, lim);
    c.a.csel(x, 0, n, v, lim, cc);
    c.a.ldr(3, cnt, pc, 0);
    c.a.csel(true, 1, cnt, cnt, cnt, cc ^ 1);
    if c.rng.pct(50) {
        let (imm, flags) = (c.rng.below(32) as u32, c.rng.below(16) as u32);
        c.a.ccmp_imm(x, n, imm, flags, cc);
        c.a.csel(true, 2, cnt, cnt, ZR, cond::GE);
    }
    c.a.str(3, cnt, pc, 0);
    c.a.str(if x { 3 } else { 2 }, n, p, 0);
}

/// A word whose bit 63 (or bit 0) is a "locked" flag: `tbnz` leaves to an
/// exit label, else the word is updated.
fn tbz63(c: &mut Ctx) {
    c.cpu_check(false);
    let slot = c.slot();
    let bit = if c.rng.pct(75) { 63 } else { 0 };
    let cur = c.get(slot, 8);
    let cur = if c.rng.pct(50) {
        cur | (1 << bit)
    } else {
        cur & !(1 << bit)
    };
    c.put(slot, 8, cur);
    let p = c.reg_with(slot);
    let t = c.reg();
    let locked = c.exit();
    if c.rng.pct(50) {
        c.a.ldar(3, t, p);
    } else {
        c.a.ldr(3, t, p, 0);
    }
    if c.rng.pct(50) {
        c.a.tbz(true, t, bit, locked);
    } else {
        let ok = c.a.label();
        c.a.tbz(false, t, bit, ok);
        c.a.b(locked);
        c.a.bind(ok);
    }
    c.a.add_imm(true, false, t, t, 2);
    c.a.str(3, t, p, 0);
    c.notes.push(format!(
        "bit {bit} {}",
        if cur >> bit & 1 == 1 { "set" } else { "clear" }
    ));
}

/// Leaves straight to post_commit_ip without a store: `cbz` taken, or `b`.
fn nocommit(c: &mut Ctx) {
    c.cpu_check(false);
    let slot = c.slot();
    if c.rng.pct(50) {
        c.put(slot, 8, 0);
    }
    let p = c.reg_with(slot);
    let t = c.reg();
    let post = c.post;
    c.a.ldr(3, t, p, 0);
    if c.rng.pct(50) {
        c.a.cbz(true, false, t, post);
    } else {
        let sh = c.rng.below(64);
        let m = c.reg_with(u64::MAX >> sh);
        let t2 = c.reg();
        c.a.mov_reg(true, t2, t);
        c.a.and_reg(true, true, ZR, t2, m);
        c.a.bcond(cond::EQ, post);
    }
    c.a.add_imm(true, false, t, t, 1);
    if c.rng.pct(50) {
        c.a.b(post);
        c.a.nop();
    }
    c.a.str(3, t, p, 0);
}

/// Generate one sequence of `pattern`.
pub fn generate(pattern: &str, rng: &mut Rng, cpu: u32) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, cpu);
    let (name, what): (&'static str, &str) = match pattern {
        "cpucheck" => {
            cpucheck(&mut c, false);
            ("cpucheck", "per-cpu counter add after a cpu check")
        }
        "cmpstore" => {
            cmpstore(&mut c, false);
            ("cmpstore", "cpu check, compare, store")
        }
        "cmp2store" => {
            cmp2store(&mut c);
            ("cmp2store", "two compares (own exit labels), then a store")
        }
        "trystore" => {
            trystore(&mut c, false);
            ("trystore", "compare, try-store, stlr commit")
        }
        "memcpy" => {
            memcpy(&mut c, false);
            ("memcpy", "backwards byte-copy loop, then a commit store")
        }
        "slab16" => {
            slab16(&mut c);
            (
                "slab16",
                "tcmalloc-style slab push/pop with ldrh/strh commit",
            )
        }
        "ldppre" => {
            ldppre(&mut c);
            ("ldppre", "ldp pre-index cursor advance, tag check, commit")
        }
        "simdcopy" => {
            simdcopy(&mut c);
            ("simdcopy", "q-register batch copy, then a commit store")
        }
        "csel" => {
            csel(&mut c);
            ("csel", "csel/csinc/ccmp clamp and count")
        }
        "tbz63" => {
            tbz63(&mut c);
            ("tbz63", "tbz/tbnz on a flag bit")
        }
        "nocommit" => {
            nocommit(&mut c);
            ("nocommit", "straight to post_commit_ip without a store")
        }
        "cpuabort" => {
            match c.rng.below(4) {
                0 => cpucheck(&mut c, true),
                1 => cmpstore(&mut c, true),
                2 => trystore(&mut c, true),
                _ => memcpy(&mut c, true),
            }
            ("cpuabort", "the cpu check fails: abort_ip")
        }
        other => {
            return Err(format!(
                "unknown aarch64 pattern {other:?} (known: {})",
                PATTERNS.join(", ")
            ))
        }
    };
    let _ = name;
    c.finish(what)
}

fn area_bytes(cpu: u32) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[0..4].copy_from_slice(&cpu.to_le_bytes());
    a[4..8].copy_from_slice(&cpu.to_le_bytes());
    a[8..16].copy_from_slice(&DESC.to_le_bytes());
    a
}

fn code_bytes(g: &Gen) -> Vec<u8> {
    g.words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn oracle_case(g: &Gen, cpu: u32, desc: &[u8; 32]) -> Case {
    Case {
        regions: vec![
            Region {
                addr: g.start_ip,
                bytes: code_bytes(g),
                writable: false,
                exec: true,
            },
            Region {
                addr: DATA,
                bytes: g.data.clone(),
                writable: true,
                exec: false,
            },
            Region {
                addr: DESC,
                bytes: desc.to_vec(),
                writable: false,
                exec: false,
            },
            Region {
                addr: AREA,
                bytes: area_bytes(cpu).to_vec(),
                writable: true,
                exec: false,
            },
            Region {
                addr: STACK,
                bytes: g.stack.clone(),
                writable: true,
                exec: false,
            },
        ],
        state: g.entry,
    }
}

fn regs_map(s: &A64State) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (i, x) in s.x.iter().enumerate() {
        m.insert(format!("x{i}"), hex(*x));
    }
    m.insert("sp".into(), hex(s.sp));
    m.insert("nzcv".into(), hex(u64::from(s.nzcv)));
    m.insert("tpidr_el0".into(), hex(s.tpidr_el0));
    for (i, v) in s.v.iter().enumerate() {
        m.insert(format!("v{i}"), format!("0x{v:x}"));
    }
    m
}

/// The recording of `case` (built by [`oracle_case`]) that qemu ran with result `r`.
fn recording<'a>(
    name: &'a str,
    g: &'a Gen,
    cpu: u32,
    cs: RseqCs,
    case: &'a Case,
    r: &'a OracleResult,
) -> Recording<'a> {
    let before = |addr: u64| {
        let region = case.regions.iter().find(|reg| reg.addr == addr);
        region.map(|reg| reg.bytes.as_slice()).unwrap_or_default()
    };
    let mem_after = |addr: u64| {
        let bytes = r.memory.iter().find(|(a, _)| *a == addr).map(|(_, b)| b);
        (addr, bytes.map(Vec::as_slice).unwrap_or_default())
    };
    Recording {
        arch: ArchKind::Aarch64,
        name,
        comment: format!(
            "{}. Recorded under qemu-aarch64 (-cpu neoverse-n1) with the rseq area supplied as memory (cpu {cpu}); two runs agreed.",
            g.comment
        ),
        code_address: g.start_ip,
        code: before(g.start_ip),
        cs,
        cs_address: DESC,
        cpu,
        rseq_area: AREA,
        entry_regs: regs_map(&g.entry),
        memory: vec![
            (DATA, &g.data, true, "data buffers"),
            (DESC, before(DESC), false, "struct rseq_cs"),
            (AREA, before(AREA), true, "struct rseq (tpidr_el0 - 0x60), rseq_cs set"),
            (STACK, &g.stack, true, "stack (sp at its end)"),
        ],
        exit_ip: r.state.pc,
        expect_regs: regs_map(&r.state),
        expect_memory: [DATA, AREA, STACK].map(mem_after).to_vec(),
        ignore_flags: 0,
    }
}

/// Record `count` cases of each pattern under qemu; returns (pattern, file).
pub fn record(
    out: &std::path::Path,
    seed: u64,
    count: usize,
    patterns: &[String],
) -> Result<Vec<(String, PathBuf)>, Box<dyn Error>> {
    let pats = select_patterns(patterns, PATTERNS, "aarch64 pattern", out)?;
    let mut oracle = QemuOracle::spawn()?;
    let mut files = Vec::new();
    for p in &pats {
        let mut rng = Rng::new(seed ^ super::fnv(p) ^ 0xa64);
        for i in 1..=count {
            let cpu = rng.below(16) as u32;
            let g = generate(p, &mut rng, cpu)?;
            let cs = RseqCs {
                version: 0,
                flags: 0,
                start_ip: g.start_ip,
                post_commit_offset: g.post_off,
                abort_ip: g.start_ip + g.abort_off,
            };
            let case = oracle_case(&g, cpu, &cs.to_bytes());
            let r1 = oracle.run(&case)?;
            let r2 = oracle.run(&case)?;
            if r1 != r2 {
                return Err(format!("{p}-{i:03}: two qemu runs differ").into());
            }
            if !(r1.signal == SIGTRAP && r1.stopped_on_exit_brk(&case)) {
                return Err(format!(
                    "{p}-{i:03}: the sequence did not reach an exit under qemu (signal {} at pc {:#x}, addr {:#x})",
                    r1.signal, r1.state.pc, r1.addr
                )
                .into());
            }
            let name = format!("{p}-{i:03}");
            let rec = recording(&name, &g, cpu, cs, &case, &r1);
            files.push((p.clone(), rec.write(out)?));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern generates code whose exits are where the descriptor
    /// says, and the same seed gives the same sequence.
    #[test]
    fn patterns_are_deterministic_and_well_formed() {
        for p in PATTERNS {
            for seed in 0..20 {
                let g1 = generate(p, &mut Rng::new(seed), 3).expect("generate");
                let g2 = generate(p, &mut Rng::new(seed), 3).expect("generate");
                assert_eq!(g1.words, g2.words, "{p}");
                assert_eq!(g1.entry, g2.entry, "{p}");
                let w = |off: u64| g1.words[(off / 4) as usize];
                assert_eq!(w(g1.post_off), EXIT_BRK, "{p}: post_commit_ip");
                assert_eq!(w(g1.abort_off - 4), RSEQ_SIG_AARCH64, "{p}: signature");
                assert_eq!(w(g1.abort_off), EXIT_BRK, "{p}: abort_ip");
            }
        }
    }
}

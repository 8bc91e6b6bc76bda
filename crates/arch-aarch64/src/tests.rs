//! Hand-checked cases per instruction family. Encodings come from the GNU
//! assembler; expected values are worked out from the ARM ARM pseudo-code
//! by hand (the qemu differential test is the real oracle).

use rseq_emu_core::{Arch, Memory, SparseMemory, Stop};

use crate::nzcv::{C, N, V, Z};
use crate::{A64State, Aarch64};

const PC: u64 = 0x40_0000;
const DATA: u64 = 0x1000;
const RO: u64 = 0x1100; // right after DATA

fn mem() -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(DATA, (0..0x100).map(|i| i as u8).collect(), true)
        .unwrap();
    m.map(RO, vec![0xee; 0x100], false).unwrap();
    m
}

fn st() -> A64State {
    A64State {
        pc: PC,
        ..A64State::default()
    }
}

fn run(word: u32, st: &mut A64State, m: &mut SparseMemory) -> Result<(), Stop> {
    let op = Aarch64::decode_op(word, st.pc).unwrap_or_else(|e| panic!("{word:08x}: {e}"));
    Aarch64::execute(&op, st, m)
}

/// Run one instruction with registers x1, x2, x3 set; return the state.
fn alu(word: u32, x1: u64, x2: u64, x3: u64) -> A64State {
    let mut s = st();
    s.x[1] = x1;
    s.x[2] = x2;
    s.x[3] = x3;
    run(word, &mut s, &mut mem()).unwrap();
    assert_eq!(s.pc, PC + 4);
    s
}

fn refused(word: u32) -> String {
    let d = Aarch64::decode(&word.to_le_bytes(), PC);
    match d.op {
        Err(r) => r,
        Ok(op) => panic!("{word:08x} ({}) accepted as {op:?}", d.text),
    }
}

#[test]
fn add_sub_flags() {
    // adds w0, w1, #1: 0x7fffffff + 1 overflows signed, not unsigned.
    let s = alu(0x3100_0420, 0xffff_ffff_7fff_ffff, 0, 0);
    assert_eq!(s.x[0], 0x8000_0000);
    assert_eq!(s.nzcv, N | V);
    // adds x0, x1, #1: all-ones + 1 = 0 with carry.
    let s = alu(0xb100_0420, u64::MAX, 0, 0);
    assert_eq!((s.x[0], s.nzcv), (0, Z | C));
    // subs w0, w1, w2: 0 - 1 borrows (C clear), upper half of x0 zero.
    let s = alu(0x6b02_0020, 0xffff_ffff_0000_0000, 1, 0);
    assert_eq!((s.x[0], s.nzcv), (0xffff_ffff, N));
    // cmp x1, #5 with x1 = 5: Z and C (no borrow).
    let s = alu(0xf100_143f, 5, 0, 0);
    assert_eq!(s.nzcv, Z | C);
    // cmp x1, #5 with x1 = i64::MIN: overflow, result positive.
    let s = alu(0xf100_143f, 1 << 63, 0, 0);
    assert_eq!(s.nzcv, C | V);
    // cmn w1, #1 with w1 = -1: 0 with carry.
    let s = alu(0x3100_043f, 0xffff_ffff, 0, 0);
    assert_eq!(s.nzcv, Z | C);
    // adds x0, x1, #1, lsl #12
    let s = alu(0xb140_0420, 0x10, 0, 0);
    assert_eq!((s.x[0], s.nzcv), (0x1010, 0));
    // negs w0, w1 with w1 = 0x80000000: V set, C clear.
    let s = alu(0x6b01_03e0, 0x8000_0000, 0, 0);
    assert_eq!((s.x[0], s.nzcv), (0x8000_0000, N | V));
    // negs w0, w1 with w1 = 0: 0 - 0 sets C.
    let s = alu(0x6b01_03e0, 0, 0, 0);
    assert_eq!(s.nzcv, Z | C);
}

#[test]
fn sp_and_extended_register() {
    // add x0, sp, w1, uxtw #2: only the low word of x1, zero-extended.
    let mut s = st();
    s.sp = 0x1000;
    s.x[1] = 0xffff_ffff_0000_0004;
    run(0x8b21_4be0, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 0x1010);
    // sub sp, sp, #16 and mov x0, sp use sp, not xzr.
    run(0xd100_43ff, &mut s, &mut mem()).unwrap();
    assert_eq!(s.sp, 0xff0);
    run(0x9100_03e0, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 0xff0);
    // add w0, w1, w2, sxtb: 5 + (-128).
    let s = alu(0x0b22_8020, 5, 0x1234_5680, 0);
    assert_eq!(s.x[0], 0xffff_ff85);
    // and sp, x1, #~15 writes sp.
    let mut s = st();
    s.x[1] = 0x1237;
    run(0x927c_ec3f, &mut s, &mut mem()).unwrap();
    assert_eq!(s.sp, 0x1230);
    // orr w0, wzr, #0x55555555 reads the zero register.
    let s = alu(0x3200_f3e0, 0, 0, 0);
    assert_eq!(s.x[0], 0x5555_5555);
}

#[test]
fn carry_ops() {
    // adc x0, x1, x2 with C set.
    let mut s = st();
    s.x[1] = 1;
    s.x[2] = 2;
    s.nzcv = C;
    run(0x9a02_0020, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 4);
    // sbcs w0, w1, w2 with C clear: 5 - 5 - 1 = -1, borrow.
    let mut s = st();
    s.x[1] = 5;
    s.x[2] = 5;
    run(0x7a02_0020, &mut s, &mut mem()).unwrap();
    assert_eq!((s.x[0], s.nzcv), (0xffff_ffff, N));
    // ngc x0, x1 with C set: 0 - x1.
    let mut s = st();
    s.x[1] = 3;
    s.nzcv = C;
    run(0xda01_03e0, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 3u64.wrapping_neg());
}

#[test]
fn logical() {
    // ands x0, x1, x2, ror #4: rotate 0x1f right by 4 = 0xf000...0001.
    let s = alu(0xeac2_1020, u64::MAX, 0x1f, 0);
    assert_eq!((s.x[0], s.nzcv), (0xf000_0000_0000_0001, N));
    // ands clears C and V.
    let mut s = st();
    s.nzcv = C | V;
    s.x[1] = 2;
    run(0x7200_0020, &mut s, &mut mem()).unwrap(); // ands w0, w1, #1
    assert_eq!((s.x[0], s.nzcv), (0, Z));
    // bic w0, w1, w2, lsl #4
    let s = alu(0x0a22_1020, 0xffff_ffff_ffff_ffff, 0xf, 0);
    assert_eq!(s.x[0], 0xffff_ff0f);
    // mvn x0, x1
    let s = alu(0xaa21_03e0, 0x0f, 0, 0);
    assert_eq!(s.x[0], !0x0f);
    // eon x0, x1, x2, asr #63: x2 negative -> ~(all ones) = 0 -> x1 ^ 0.
    let s = alu(0xcaa2_fc20, 0x1234, 1 << 63, 0);
    assert_eq!(s.x[0], 0x1234);
    // and x0, x1, #0xff00ff00ff00ff00
    let s = alu(0x9208_9c20, 0x1234_5678_9abc_def0, 0, 0);
    assert_eq!(s.x[0], 0x1200_5600_9a00_de00);
    // tst x1, #1<<63
    let s = alu(0xf241_003f, 1 << 63, 0, 0);
    assert_eq!(s.nzcv, N);
}

#[test]
fn move_wide() {
    let s = alu(0xf2e2_4680, 0, 0, 0); // movk x0, #0x1234, lsl #48 (x0 = 0)
    assert_eq!(s.x[0], 0x1234_0000_0000_0000);
    let mut s = st();
    s.x[0] = u64::MAX;
    run(0xf2e2_4680, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 0x1234_ffff_ffff_ffff);
    let s = alu(0x1280_0000, 0, 0, 0); // movn w0, #0
    assert_eq!(s.x[0], 0xffff_ffff);
    let s = alu(0x92a0_0020, 0, 0, 0); // movn x0, #1, lsl #16
    assert_eq!(s.x[0], 0xffff_ffff_fffe_ffff);
    let s = alu(0x52b7_dde0, 0, 0, 0); // movz w0, #0xbeef, lsl #16
    assert_eq!(s.x[0], 0xbeef_0000);
}

#[test]
fn bitfield_and_extract() {
    assert_eq!(alu(0xd37c_fc20, u64::MAX, 0, 0).x[0], 0xf); // lsr x0, x1, #60
    assert_eq!(alu(0x531c_7c20, 0xffff_ffff_abcd_ef01, 0, 0).x[0], 0xa); // lsr w0, w1, #28
    assert_eq!(alu(0x5301_0020, 3, 0, 0).x[0], 0x8000_0000); // lsl w0, w1, #31
                                                             // sbfx x0, x1, #4, #8: bits 11..4 = 0x80 -> -128.
    assert_eq!(alu(0x9344_2c20, 0x800, 0, 0).x[0], (-128i64) as u64);
    assert_eq!(alu(0x131f_7c20, 0x8000_0000, 0, 0).x[0], 0xffff_ffff); // asr w0, w1, #31
                                                                       // bfi x0, x1, #8, #4 into x0 = all ones: bits 11..8 = x1 & 0xf.
    let mut s = st();
    s.x[0] = u64::MAX;
    s.x[1] = 0x5;
    run(0xb378_0c20, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 0xffff_ffff_ffff_f5ff);
    // bfxil w0, w1, #4, #8: w0 low byte = bits 11..4 of w1, upper half of x0 cleared.
    let mut s = st();
    s.x[0] = 0xffff_ffff_ffff_ffff;
    s.x[1] = 0xab0;
    run(0x3304_2c20, &mut s, &mut mem()).unwrap();
    assert_eq!(s.x[0], 0xffff_ffab);
    // extr x0, x1, x2, #8
    assert_eq!(
        alu(0x93c2_2020, 0x11, 0x2233_4455_6677_8899, 0).x[0],
        0x1122_3344_5566_7788
    );
    // extr w0, w1, w2, #31
    assert_eq!(alu(0x1382_7c20, 1, 0x8000_0000, 0).x[0], 3);
    assert_eq!(
        alu(0x9340_7c20, 0x8000_0000, 0, 0).x[0],
        0xffff_ffff_8000_0000
    ); // sxtw
    assert_eq!(alu(0x5300_3c20, 0x1_2345_6789, 0, 0).x[0], 0x6789); // uxth
}

#[test]
fn variable_shifts() {
    assert_eq!(alu(0x9ac2_2020, 1, 65, 0).x[0], 2); // lslv: 65 mod 64
    assert_eq!(alu(0x1ac2_2820, 0x8000_0000, 33, 0).x[0], 0xc000_0000); // asrv w: 33 mod 32
    assert_eq!(alu(0x9ac2_2c20, 1, 1, 0).x[0], 1 << 63); // rorv
    assert_eq!(alu(0x1ac2_2420, 0xffff_ffff_0000_0010, 4, 0).x[0], 1); // lsrv w
}

#[test]
fn multiply_divide() {
    assert_eq!(alu(0x9b02_0c20, 3, 4, 5).x[0], 17); // madd
    assert_eq!(alu(0x1b02_8c20, 3, 4, 5).x[0], 0xffff_fff9); // msub w: 5 - 12
    assert_eq!(alu(0x9b22_0c20, 0xffff_ffff, 2, 1).x[0], (-1i64) as u64); // smaddl: -1*2+1
    assert_eq!(
        alu(0x9ba2_8c20, 0xffff_ffff, 2, 0).x[0],
        (-0x1_ffff_fffei64) as u64
    ); // umsubl
    assert_eq!(alu(0x9bc2_7c20, u64::MAX, u64::MAX, 0).x[0], u64::MAX - 1); // umulh
    assert_eq!(alu(0x9b42_7c20, u64::MAX, u64::MAX, 0).x[0], 0); // smulh (-1*-1)
    assert_eq!(alu(0x9b42_7c20, 1 << 63, 2, 0).x[0], u64::MAX); // smulh
    assert_eq!(alu(0x9b02_7c20, 6, 7, 0).x[0], 42); // mul
    assert_eq!(alu(0x9ac2_0820, 7, 0, 0).x[0], 0); // udiv by zero
    assert_eq!(alu(0x9ac2_0c20, 1 << 63, u64::MAX, 0).x[0], 1 << 63); // sdiv MIN/-1
    assert_eq!(alu(0x9ac2_0c20, (-7i64) as u64, 2, 0).x[0], (-3i64) as u64); // toward zero
    assert_eq!(alu(0x1ac2_0820, 0x1_0000_0007, 2, 0).x[0], 3); // udiv w
    assert_eq!(
        alu(0x1ac2_0c20, 0x8000_0000, 0xffff_ffff, 0).x[0],
        0x8000_0000
    ); // sdiv w
    assert_eq!(alu(0x1ac2_0c20, 5, 0, 0).x[0], 0); // sdiv w by zero
}

#[test]
fn bit_operations() {
    assert_eq!(alu(0xdac0_1020, 1, 0, 0).x[0], 63); // clz x
    assert_eq!(alu(0xdac0_1020, 0, 0, 0).x[0], 64);
    assert_eq!(alu(0x5ac0_1420, 0, 0, 0).x[0], 31); // cls w 0
    assert_eq!(alu(0x5ac0_1420, 0xffff_ffff, 0, 0).x[0], 31); // cls w -1
    assert_eq!(alu(0xdac0_1420, 1, 0, 0).x[0], 62); // cls x 1
    assert_eq!(alu(0xdac0_1420, 0xc000_0000_0000_0000, 0, 0).x[0], 1);
    assert_eq!(alu(0x5ac0_0020, 1, 0, 0).x[0], 0x8000_0000); // rbit w
    assert_eq!(
        alu(0xdac0_0c20, 0x0102_0304_0506_0708, 0, 0).x[0],
        0x0807_0605_0403_0201
    ); // rev
    assert_eq!(alu(0x5ac0_0420, 0xff11_2233_4455, 0, 0).x[0], 0x3322_5544); // rev16 w
    assert_eq!(
        alu(0xdac0_0820, 0x0102_0304_0506_0708, 0, 0).x[0],
        0x0403_0201_0807_0605
    ); // rev32
    assert_eq!(alu(0x5ac0_0820, 0xff_0102_0304, 0, 0).x[0], 0x0403_0201); // rev w
}

#[test]
fn conditional() {
    let with = |word: u32, flags: u32| {
        let mut s = st();
        s.x[1] = 10;
        s.x[2] = 20;
        s.nzcv = flags;
        run(word, &mut s, &mut mem()).unwrap();
        s
    };
    assert_eq!(with(0x9a82_0020, Z).x[0], 10); // csel eq, taken
    assert_eq!(with(0x9a82_0020, 0).x[0], 20);
    assert_eq!(with(0x1a82_1420, Z).x[0], 21); // csinc ne, not taken
    assert_eq!(with(0xda82_a020, N).x[0], !20); // csinv ge, N != V
    assert_eq!(with(0xda82_a020, N | V).x[0], 10);
    assert_eq!(with(0x5a82_b420, 0).x[0], 0xffff_ffec); // csneg lt, not taken: -20 in W
                                                        // ccmp x1, #3, #0b0101, ne: condition false (Z set) -> flags = 0101.
    assert_eq!(with(0xfa43_1825, Z).nzcv, Z | V);
    // condition true: compare 10 with 3 -> C.
    assert_eq!(with(0xfa43_1825, 0).nzcv, C);
    // ccmn w1, w2, #0b1010, hi: hi = C && !Z.
    assert_eq!(with(0x3a42_802a, C).nzcv, 0); // 10 + 20
    assert_eq!(with(0x3a42_802a, 0).nzcv, N | C);
}

#[test]
fn condition_codes_are_the_raw_field() {
    use crate::exec::cond_holds;
    // eq ne cs cc mi pl vs vc hi ls ge lt gt le al nv
    let table: [(u8, u32, bool); 16] = [
        (0, Z, true),
        (1, Z, false),
        (2, C, true),
        (3, C, false),
        (4, N, true),
        (5, N, false),
        (6, V, true),
        (7, V, false),
        (8, C | Z, false),
        (9, C | Z, true),
        (10, N | V, true),
        (11, N, true),
        (12, Z, false),
        (13, Z, true),
        (14, 0, true),
        (15, 0, true),
    ];
    for (cond, flags, want) in table {
        assert_eq!(cond_holds(flags, cond), want, "cond {cond} flags {flags:x}");
    }
}

#[test]
fn pc_relative() {
    assert_eq!(alu(0x1000_8000, 0, 0, 0).x[0], PC + 0x1000); // adr
    let mut s = st();
    s.pc = 0x40_0abc;
    run(0xf000_0000, &mut s, &mut mem()).unwrap(); // adrp x0, +3 pages
    assert_eq!(s.x[0], 0x40_3000);
}

#[test]
fn branches() {
    let go = |word: u32, f: &dyn Fn(&mut A64State)| {
        let mut s = st();
        f(&mut s);
        run(word, &mut s, &mut mem()).unwrap();
        s
    };
    assert_eq!(go(0x5400_0040, &|s| s.nzcv = Z).pc, PC + 8); // b.eq taken
    assert_eq!(go(0x5400_0040, &|_| {}).pc, PC + 4);
    // cbz w1: only the low word counts.
    assert_eq!(go(0x3400_0041, &|s| s.x[1] = 1 << 32).pc, PC + 8);
    assert_eq!(go(0xb500_0041, &|s| s.x[1] = 1 << 32).pc, PC + 8); // cbnz x1
    assert_eq!(go(0xb6f8_0041, &|s| s.x[1] = 1 << 63).pc, PC + 4); // tbz #63, set
    assert_eq!(go(0xb6f8_0041, &|_| {}).pc, PC + 8);
    assert_eq!(go(0x3700_0041, &|s| s.x[1] = 1).pc, PC + 8); // tbnz #0
    let s = go(0x9400_0040, &|_| {}); // bl
    assert_eq!((s.pc, s.x[30]), (PC + 0x100, PC + 4));
    let s = go(0xd63f_03c0, &|s| s.x[30] = 0x1234); // blr x30 reads before linking
    assert_eq!((s.pc, s.x[30]), (0x1234, PC + 4));
    assert_eq!(go(0xd61f_0020, &|s| s.x[1] = 0x8888).pc, 0x8888); // br
    assert_eq!(go(0xd65f_03c0, &|s| s.x[30] = 0x7777).pc, 0x7777); // ret
                                                                   // A tagged branch target is refused, state untouched.
    let mut s = st();
    s.x[1] = 0x5a00_0000_0000_8888;
    let before = s;
    let r = run(0xd61f_0020, &mut s, &mut mem());
    assert!(matches!(r, Err(Stop::Unsupported(_))), "{r:?}");
    assert_eq!(s, before);
}

#[test]
fn system_registers_and_hints() {
    let mut s = st();
    s.tpidr_el0 = 0xdead_beef;
    s.nzcv = N | C;
    let mut m = mem();
    run(0xd53b_d040, &mut s, &mut m).unwrap(); // mrs x0, tpidr_el0
    assert_eq!(s.x[0], 0xdead_beef);
    run(0xd53b_4200, &mut s, &mut m).unwrap(); // mrs x0, nzcv
    assert_eq!(s.x[0], u64::from(N | C));
    s.x[1] = 0xffff_ffff_ffff_ffff;
    run(0xd51b_4201, &mut s, &mut m).unwrap(); // msr nzcv, x1
    assert_eq!(s.nzcv, N | Z | C | V);
    let before = s;
    for w in [
        0xd503_201f, // nop
        0xd503_245f, // bti c
        0xd503_203f, // yield
        0xd503_3bbf, // dmb ish
        0xd503_3f9f, // dsb sy
        0xd503_3fdf, // isb
        0xd503_229f, // csdb
        0xf980_0020, // prfm
    ] {
        let pc = s.pc;
        run(w, &mut s, &mut m).unwrap();
        assert_eq!(s.pc, pc + 4);
    }
    assert_eq!(A64State { pc: before.pc, ..s }, before);
}

#[test]
fn loads_and_stores() {
    let mut m = mem();
    let mut s = st();
    s.x[1] = DATA;
    run(0xf940_0420, &mut s, &mut m).unwrap(); // ldr x0, [x1, #8]
    assert_eq!(s.x[0], 0x0f0e_0d0c_0b0a_0908);
    run(0xb940_0420, &mut s, &mut m).unwrap(); // ldr w0, [x1, #4]
    assert_eq!(s.x[0], 0x0706_0504);
    run(0x7940_0420, &mut s, &mut m).unwrap(); // ldrh w0, [x1, #2]
    assert_eq!(s.x[0], 0x0302);
    s.x[1] = DATA + 0x80;
    run(0x39c0_0020, &mut s, &mut m).unwrap(); // ldrsb w0, [x1]
    assert_eq!(s.x[0], 0xffff_ff80);
    run(0x3980_0020, &mut s, &mut m).unwrap(); // ldrsb x0, [x1]
    assert_eq!(s.x[0], 0xffff_ffff_ffff_ff80);
    s.x[1] = DATA + 0xfe; // bytes fe ff
    run(0x79c0_0020, &mut s, &mut m).unwrap(); // ldrsh w0
    assert_eq!(s.x[0], 0xffff_fffe);
    run(0x7980_0020, &mut s, &mut m).unwrap(); // ldrsh x0
    assert_eq!(s.x[0], (-2i64) as u64);
    s.x[1] = DATA + 0xfc; // fc fd fe ff
    run(0xb980_0020, &mut s, &mut m).unwrap(); // ldrsw x0
    assert_eq!(s.x[0], 0xffff_ffff_fffe_fdfc);
    // stores of each size
    s.x[0] = 0x1122_3344_5566_7788;
    s.x[1] = DATA;
    run(0x3900_0420, &mut s, &mut m).unwrap(); // strb w0, [x1, #1]
    run(0x7900_0420, &mut s, &mut m).unwrap(); // strh w0, [x1, #2]
    run(0xb900_0420, &mut s, &mut m).unwrap(); // str w0, [x1, #4]
    run(0xf900_0420, &mut s, &mut m).unwrap(); // str x0, [x1, #8]
    assert_eq!(m.read_u64(DATA).unwrap(), 0x5566_7788_7788_8800);
    assert_eq!(m.read_u64(DATA + 8).unwrap(), 0x1122_3344_5566_7788);
    // unscaled
    s.x[1] = DATA + 0x10;
    run(0xf85f_8020, &mut s, &mut m).unwrap(); // ldur x0, [x1, #-8]
    assert_eq!(s.x[0], 0x1122_3344_5566_7788);
    run(0xb81f_d020, &mut s, &mut m).unwrap(); // stur w0, [x1, #-3]
    assert_eq!(m.read_u32(DATA + 0xd).unwrap(), 0x5566_7788);
}

#[test]
fn writeback_and_register_offset() {
    let mut m = mem();
    let mut s = st();
    s.x[1] = DATA;
    run(0xf841_0c20, &mut s, &mut m).unwrap(); // ldr x0, [x1, #16]!
    assert_eq!((s.x[0], s.x[1]), (0x1716_1514_1312_1110, DATA + 16));
    run(0xf85f_0420, &mut s, &mut m).unwrap(); // ldr x0, [x1], #-16
    assert_eq!((s.x[0], s.x[1]), (0x1716_1514_1312_1110, DATA));
    s.sp = DATA + 0x40;
    s.x[0] = 0xabcd;
    run(0xf81f_0fe0, &mut s, &mut m).unwrap(); // str x0, [sp, #-16]!
    assert_eq!(
        (s.sp, m.read_u64(DATA + 0x30).unwrap()),
        (DATA + 0x30, 0xabcd)
    );
    // ldr x0, [x1, w2, sxtw #3] with w2 = -1: address x1 - 8.
    s.x[1] = DATA + 0x18;
    s.x[2] = 0x1234_5678_ffff_ffff;
    run(0xf862_d820, &mut s, &mut m).unwrap();
    assert_eq!(s.x[0], 0x1716_1514_1312_1110);
    // ldr x0, [x1, w2, uxtw #3] with w2 = 1, upper bits ignored.
    s.x[1] = DATA;
    s.x[2] = 0xffff_ffff_0000_0001;
    run(0xf862_5820, &mut s, &mut m).unwrap();
    assert_eq!(s.x[0], 0x0f0e_0d0c_0b0a_0908);
    s.x[2] = 0x21;
    run(0x3862_6820, &mut s, &mut m).unwrap(); // ldrb w0, [x1, x2]
    assert_eq!(s.x[0], 0x21);
    run(0x7862_7820, &mut s, &mut m).unwrap(); // ldrh w0, [x1, x2, lsl #1]
    assert_eq!(s.x[0], 0x4342);
    s.x[1] = DATA + 0x20;
    s.x[2] = (-2i64) as u64;
    run(0xf862_e820, &mut s, &mut m).unwrap(); // ldr x0, [x1, x2, sxtx]
    assert_eq!(s.x[0], 0x2524_2322_2120_1f1e);
}

#[test]
fn literals() {
    let mut m = mem();
    let mut s = st();
    s.pc = DATA + 0x10;
    run(0x5800_0080, &mut s, &mut m).unwrap(); // ldr x0, .+16
    assert_eq!(s.x[0], 0x2726_2524_2322_2120);
    s.pc = DATA + 0x70;
    run(0x9800_0080, &mut s, &mut m).unwrap(); // ldrsw x0, .+16
    assert_eq!(s.x[0], 0xffff_ffff_8382_8180);
    s.pc = DATA;
    run(0x9c00_0080, &mut s, &mut m).unwrap(); // ldr q0, .+16
    assert_eq!(
        s.v[0],
        u128::from_le_bytes(core::array::from_fn(|i| 0x10 + i as u8))
    );
}

#[test]
fn pairs() {
    let mut m = mem();
    let mut s = st();
    s.x[2] = DATA;
    run(0xa940_0440, &mut s, &mut m).unwrap(); // ldp x0, x1, [x2]
    assert_eq!(
        (s.x[0], s.x[1]),
        (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)
    );
    run(0x2941_0440, &mut s, &mut m).unwrap(); // ldp w0, w1, [x2, #8]
    assert_eq!((s.x[0], s.x[1]), (0x0b0a_0908, 0x0f0e_0d0c));
    s.x[2] = DATA + 0xf8;
    run(0x68c1_0440, &mut s, &mut m).unwrap(); // ldpsw x0, x1, [x2], #8
    assert_eq!(
        (s.x[0], s.x[1], s.x[2]),
        (0xffff_ffff_fbfa_f9f8, 0xffff_ffff_fffe_fdfc, DATA + 0x100)
    );
    s.sp = DATA + 0x40;
    s.x[0] = 0xaaaa;
    s.x[1] = 0xbbbb;
    run(0xa9bf_07e0, &mut s, &mut m).unwrap(); // stp x0, x1, [sp, #-16]!
    assert_eq!(s.sp, DATA + 0x30);
    assert_eq!(
        m.read_u128(DATA + 0x30).unwrap(),
        0xbbbb_u128 << 64 | 0xaaaa
    );
    s.x[2] = DATA + 0x48;
    run(0x293f_0440, &mut s, &mut m).unwrap(); // stp w0, w1, [x2, #-8]
    assert_eq!(m.read_u64(DATA + 0x40).unwrap(), 0xbbbb_0000_aaaa);
    s.x[2] = DATA;
    run(0xa9c1_0440, &mut s, &mut m).unwrap(); // ldp x0, x1, [x2, #16]!
    assert_eq!((s.x[0], s.x[2]), (0x1716_1514_1312_1110, DATA + 16));
    s.x[2] = DATA;
    run(0xa840_0440, &mut s, &mut m).unwrap(); // ldnp x0, x1, [x2]
    assert_eq!(s.x[0], 0x0706_0504_0302_0100);
}

#[test]
fn ordered_accesses() {
    let mut m = mem();
    let mut s = st();
    s.x[1] = DATA + 8;
    run(0xc8df_fc20, &mut s, &mut m).unwrap(); // ldar x0, [x1]
    assert_eq!(s.x[0], 0x0f0e_0d0c_0b0a_0908);
    run(0x08df_fc20, &mut s, &mut m).unwrap(); // ldarb
    assert_eq!(s.x[0], 8);
    run(0x48df_fc20, &mut s, &mut m).unwrap(); // ldarh
    assert_eq!(s.x[0], 0x0908);
    run(0xf8bf_c020, &mut s, &mut m).unwrap(); // ldapr x0, [x1]
    assert_eq!(s.x[0], 0x0f0e_0d0c_0b0a_0908);
    s.x[0] = 0x1122_3344_5566_7788;
    run(0x889f_fc20, &mut s, &mut m).unwrap(); // stlr w0, [x1]
    assert_eq!(m.read_u64(DATA + 8).unwrap(), 0x0f0e_0d0c_5566_7788);
    run(0x089f_fc20, &mut s, &mut m).unwrap(); // stlrb
    run(0xc89f_fc20, &mut s, &mut m).unwrap(); // stlr x0
    assert_eq!(m.read_u64(DATA + 8).unwrap(), 0x1122_3344_5566_7788);
    // Unaligned acquire: hardware faults, we refuse.
    s.x[1] = DATA + 9;
    let before = s;
    assert!(matches!(
        run(0xc8df_fc20, &mut s, &mut m),
        Err(Stop::Unsupported(_))
    ));
    assert_eq!(s, before);
}

#[test]
fn simd_loads_and_stores() {
    let mut m = mem();
    let mut s = st();
    s.x[1] = DATA;
    s.v[0] = u128::MAX;
    run(0x3d40_0020, &mut s, &mut m).unwrap(); // ldr b0, [x1]: upper bits zeroed
    assert_eq!(s.v[0], 0);
    run(0x7d40_0420, &mut s, &mut m).unwrap(); // ldr h0, [x1, #2]
    assert_eq!(s.v[0], 0x0302);
    run(0xbd40_0420, &mut s, &mut m).unwrap(); // ldr s0, [x1, #4]
    assert_eq!(s.v[0], 0x0706_0504);
    run(0xfd40_0420, &mut s, &mut m).unwrap(); // ldr d0, [x1, #8]
    assert_eq!(s.v[0], 0x0f0e_0d0c_0b0a_0908);
    run(0x3dc0_0420, &mut s, &mut m).unwrap(); // ldr q0, [x1, #16]
    assert_eq!(s.v[0] >> 120, 0x1f);
    s.x[1] = DATA + 0x11;
    run(0x3cdf_f021, &mut s, &mut m).unwrap(); // ldur q1, [x1, #-1]
    assert_eq!(s.v[1], s.v[0]);
    s.x[1] = DATA + 0x80;
    run(0x3c81_0420, &mut s, &mut m).unwrap(); // str q0, [x1], #16
    assert_eq!(
        (m.read_u128(DATA + 0x80).unwrap(), s.x[1]),
        (s.v[0], DATA + 0x90)
    );
    s.sp = DATA + 0xc0;
    s.v[1] = 7;
    run(0xadbf_07e0, &mut s, &mut m).unwrap(); // stp q0, q1, [sp, #-32]!
    assert_eq!(s.sp, DATA + 0xa0);
    assert_eq!(m.read_u128(DATA + 0xb0).unwrap(), 7);
    s.x[1] = DATA;
    run(0x6d40_0420, &mut s, &mut m).unwrap(); // ldp d0, d1, [x1]
    assert_eq!(
        (s.v[0], s.v[1]),
        (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)
    );
    run(0x2cc1_0420, &mut s, &mut m).unwrap(); // ldp s0, s1, [x1], #8
    assert_eq!(
        (s.v[0], s.v[1], s.x[1]),
        (0x0302_0100, 0x0706_0504, DATA + 8)
    );
    s.x[1] = DATA;
    s.x[2] = 2;
    run(0x3ce2_7820, &mut s, &mut m).unwrap(); // ldr q0, [x1, x2, lsl #4]
    assert_eq!(s.v[0] & 0xff, 0x20);
    s.v[1] = 0x1122_3344_5566_7788_99aa_bbcc_ddee_ff00;
    s.x[2] = 0xffff_ffff_0000_0040;
    run(0xfc22_4821, &mut s, &mut m).unwrap(); // str d1, [x1, w2, uxtw]
    assert_eq!(m.read_u64(DATA + 0x40).unwrap(), 0x99aa_bbcc_ddee_ff00);
}

#[test]
fn faults_leave_state_and_memory() {
    let mut m = mem();
    let mut s = st();
    s.x[0] = 0x1111;
    s.x[1] = RO;
    s.x[2] = RO - 8; // a pair here straddles writable and read-only memory
    s.sp = RO;
    s.v[0] = 5;
    let before = s;
    let snap = m.read_u64(RO - 8).unwrap();
    for w in [
        0xf900_0420, // str x0, [x1, #8]
        0xa900_0440, // stp x0, x1, [x2]: straddles writable and read-only
        0xad00_0440, // stp q0, q1, [x2]
        0x3c81_0420, // str q0, [x1], #16
    ] {
        let r = run(w, &mut s, &mut m);
        assert!(matches!(r, Err(Stop::Fault(_))), "{w:08x}: {r:?}");
        assert_eq!(s, before, "{w:08x}");
        assert_eq!(m.read_u64(RO - 8).unwrap(), snap, "{w:08x}");
    }
    // stp w0, w1, [x2] is 8 bytes below RO: fine.
    run(0x2900_0440, &mut s, &mut m).unwrap();
    assert_eq!(m.read_u64(RO - 8).unwrap(), 0x1100_0000_1111);
    s = before;
    // ldp over the end of mapped memory, with writeback: nothing changes.
    s.x[2] = RO + 0xf8;
    let before = s;
    assert!(matches!(
        run(0xa9c1_0440, &mut s, &mut m),
        Err(Stop::Fault(_))
    )); // ldp x0, x1, [x2, #16]!
    assert_eq!(s, before);
    assert!(matches!(
        run(0xa940_0440, &mut s, &mut m),
        Err(Stop::Fault(_))
    )); // ldp x0, x1, [x2]
    assert_eq!(s, before);
    // pre-index load fault: no writeback.
    s.x[1] = RO + 0x200;
    let before = s;
    assert!(matches!(
        run(0xf841_0c20, &mut s, &mut m),
        Err(Stop::Fault(_))
    ));
    assert_eq!(s, before);
}

#[test]
fn misaligned_sp_is_refused() {
    let mut m = mem();
    let mut s = st();
    s.sp = DATA + 0x48;
    let before = s;
    let r = run(0xf81f_0fe0, &mut s, &mut m); // str x0, [sp, #-16]!
    assert!(matches!(r, Err(Stop::Unsupported(_))), "{r:?}");
    assert_eq!(s, before);
}

#[test]
fn refusals_name_a_reason() {
    for (w, what) in [
        (0xc802_7c01, "exclusive"), // stxr
        (0xc85f_7c20, "exclusive"), // ldxr
        (0x885f_fc20, "exclusive"), // ldaxr
        (0x8802_fc01, "exclusive"), // stlxr
        (0xc87f_0440, "exclusive"), // ldxp
        (0xc87f_8440, "exclusive"), // ldaxp
        (0xc8a0_7c41, "compare-and-swap"),
        (0x88e0_fc41, "compare-and-swap"),
        (0xf820_0041, "atomic"), // ldadd
        (0xb8e0_0041, "atomic"), // ldaddal
        (0xf820_005f, "atomic"), // stadd
        (0xf820_8041, "atomic"), // swp
        (0xd400_0001, "svc"),
        (0xd400_0002, "hvc"),
        (0xd420_0000, "brk"),
        (0xd440_0000, "hlt"),
        (0x0000_0000, "udf"),
        (0x1e62_2820, "FP/SIMD arithmetic"),
        (0x4ea2_8420, "FP/SIMD arithmetic"),
        (0xd51b_d040, "system register"), // msr tpidr_el0
        (0xd53b_d060, "system register"), // mrs tpidrro_el0
        (0xd53b_e040, "system register"), // mrs cntvct_el0
        (0xd503_3f5f, "clrex"),
        (0xd503_233f, "pointer authentication"), // paciasp
        (0xd503_23bf, "pointer authentication"), // autiasp
        (0xd65f_0bff, "pointer authentication"), // retaa
        (0xd503_205f, "wfe"),
        (0x4c40_7000, "SIMD structure"), // ld1
        (0xf840_0820, "unprivileged"),   // ldtr
        (0x1ac2_4020, "crc32"),
        (0xa5e0_a000, "SVE"),
        (0x04e1_0000, "SVE"),
        (0xc8df_7c20, "ldlar"),
    ] {
        let r = refused(w);
        assert!(r.contains(what), "{w:08x}: `{r}` does not mention {what}");
    }
}

#[test]
fn yaxpeax_pitfalls_are_refused() {
    // add w0, w1, w2, lsl #32: imm6 bit 5 set in a 32-bit form.
    assert!(refused(0x0b02_8020).contains("shift amount of 32"));
    // and w0, w1, w2, lsl #32
    assert!(refused(0x0a02_8020).contains("shift amount of 32"));
    // and w0, w1, #imm with N=1 (32-bit): reserved.
    assert!(refused(0x1240_0020).contains("reserved logical immediate"));
    // and x0, x1, #imm with imms = 111111 (all-ones element): reserved.
    assert!(refused(0x9240_fc20).contains("reserved logical immediate"));
    // and w0, w1, #imm with N=0, imms=111100 (2-bit element all ones): reserved.
    assert!(refused(0x1200_f420).contains("reserved logical immediate"));
    // add with shift type ror (11).
    assert!(refused(0x8bc2_0020).contains("ror"));
    // extended add with imm3 = 5.
    assert!(refused(0x8b22_1420).contains("shift > 4"));
    // Writeback onto the data register, and ldp with Rt == Rt2.
    assert!(refused(0xf840_8400).contains("CONSTRAINED UNPREDICTABLE")); // ldr x0, [x0], #8
    assert!(refused(0xf81f_8c00).contains("CONSTRAINED UNPREDICTABLE")); // str x0, [x0, #-8]!
    assert!(refused(0xa940_0040).contains("Rt == Rt2")); // ldp x0, x0, [x2]
    assert!(refused(0xa8c1_0440 | 2).contains("CONSTRAINED UNPREDICTABLE")); // ldp x2, x1, [x2], #16
}

#[test]
fn uxtw_extended_add_is_not_lsl() {
    // add x0, x1, w2, uxtw: yaxpeax prints lsl; the upper word must vanish.
    let s = alu(0x8b22_4020, 1, 0xffff_ffff_0000_0002, 0);
    assert_eq!(s.x[0], 3);
    // add x0, x1, x2, uxtx #2 (printed as lsl #2 too): the whole register.
    let s = alu(0x8b22_6820, 1, 0x1_0000_0000, 0);
    assert_eq!(s.x[0], 0x4_0000_0001);
}

#[test]
fn op_stays_compact() {
    // The cached form is copied around the run loop: keep it small.
    assert!(std::mem::size_of::<crate::Op>() <= 40);
}

#[test]
fn tagged_addresses() {
    let mut m = mem();
    let mut s = st();
    // ldr x0, [x1], #-16 with a tag in the top byte: the access ignores the
    // tag (TBI0), the written-back base keeps it.
    s.x[1] = 0x5a00_0000_0000_0000 | (DATA + 0x10);
    run(0xf85f_0420, &mut s, &mut m).unwrap();
    assert_eq!(s.x[0], 0x1716_1514_1312_1110);
    assert_eq!(s.x[1], 0x5a00_0000_0000_0000 | DATA);
    // stp through a tagged pointer.
    s.x[0] = 1;
    s.x[1] = 2;
    s.x[2] = 0x0100_0000_0000_0000 | (DATA + 0x20);
    run(0xa900_0440, &mut s, &mut m).unwrap(); // stp x0, x1, [x2]
    assert_eq!(m.read_u128(DATA + 0x20).unwrap(), 2u128 << 64 | 1);
    // Bit 55 set with a non-zero top byte: refused.
    s.x[1] = 0xff80_0000_0000_1000;
    let before = s;
    assert!(matches!(
        run(0xf940_0420, &mut s, &mut m),
        Err(Stop::Unsupported(_))
    ));
    assert_eq!(s, before);
}

#[test]
fn misaligned_pc_is_refused() {
    // add x0, x1, #1 at an address that is not a multiple of 4.
    let d = Aarch64::decode(&0x9100_0420u32.to_le_bytes(), PC + 2);
    assert!(d.op.unwrap_err().contains("PC alignment"));
    assert!(Aarch64::decode_op(0x9100_0420, PC + 1).is_err());
}

#[test]
fn control_flow_for_the_scanner() {
    let flow = |w: u32| Aarch64::decode(&w.to_le_bytes(), PC).flow;
    let f = flow(0x1400_0040); // b .+0x100
    assert_eq!(
        (f.falls_through, f.targets.clone(), f.indirect),
        (false, vec![PC + 0x100], false)
    );
    let f = flow(0x9400_0040); // bl .+0x100
    assert_eq!(
        (f.falls_through, f.targets.clone()),
        (true, vec![PC + 0x100])
    );
    assert_eq!(flow(0x5400_0040).targets, vec![PC + 8]); // b.eq .+8
    assert!(flow(0x5400_0040).falls_through);
    assert_eq!(flow(0x3400_0041).targets, vec![PC + 8]); // cbz w1
    assert_eq!(flow(0xb6f8_0041).targets, vec![PC + 8]); // tbz x1, #63
    let f = flow(0x17ff_ffff); // b .-4
    assert_eq!(f.targets, vec![PC - 4]);
    for w in [0xd61f_0020u32, 0xd65f_03c0] {
        // br x1, ret
        let f = flow(w);
        assert!(f.indirect && !f.falls_through && f.targets.is_empty());
    }
    assert!(flow(0xd63f_03c0).falls_through); // blr
    for w in [0xd420_0000u32, 0xd440_0000, 0x0000_0000, 0xd428_bc00] {
        // brk, hlt, udf, the rseq signature (brk #0x45e0)
        assert!(!flow(w).falls_through, "{w:08x}");
    }
    assert!(flow(0xd400_0001).falls_through); // svc returns
    assert!(flow(0x9100_0420).falls_through); // add
}

//! The qemu-user oracle itself, then the executor against it over random
//! states and instruction forms.

use rseq_emu_aarch64::oracle::{QemuOracle, Region, EXIT_BRK, SIGSEGV, SIGTRAP, WINDOW_START};
use rseq_emu_aarch64::A64State;

const CODE: u64 = WINDOW_START;
const DATA: u64 = WINDOW_START + 0x10000;

fn case(words: &[u32], data: Vec<u8>) -> rseq_emu_aarch64::oracle::Case {
    let mut code = vec![0u8; 4096];
    for c in code.chunks_mut(4) {
        c.copy_from_slice(&EXIT_BRK.to_le_bytes());
    }
    for (i, w) in words.iter().enumerate() {
        code[0x800 + 4 * i..0x804 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    let mut state = A64State {
        pc: CODE + 0x800,
        sp: DATA + 0x800,
        ..Default::default()
    };
    for (i, x) in state.x.iter_mut().enumerate() {
        *x = 0x1111_0000 + i as u64;
    }
    for (i, v) in state.v.iter_mut().enumerate() {
        *v = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f00 + i as u128;
    }
    state.tpidr_el0 = 0xdead_beef_0000;
    rseq_emu_aarch64::oracle::Case {
        regions: vec![
            Region {
                addr: CODE,
                bytes: code,
                writable: false,
                exec: true,
            },
            Region {
                addr: DATA,
                bytes: data,
                writable: true,
                exec: false,
            },
        ],
        state,
    }
}

#[test]
fn oracle_runs_known_code() {
    let mut o = QemuOracle::spawn().unwrap_or_else(|e| panic!("{e}"));
    // add x0, x1, x2
    let c = case(&[0x8b02_0020], vec![0; 4096]);
    let r = o.run(&c).expect("run");
    assert_eq!(r.signal, SIGTRAP);
    assert!(r.stopped_on_exit_brk(&c));
    assert_eq!(r.state.pc, CODE + 0x804);
    assert_eq!(r.state.x[0], 0x1111_0001 + 0x1111_0002);
    let mut want = c.state;
    want.x[0] = 0x1111_0001 + 0x1111_0002;
    want.pc = CODE + 0x804;
    assert_eq!(r.state, want, "only x0 and pc change");
    // subs x0, x0, x0 sets Z and C; mrs x3, tpidr_el0; msr tpidr_el0, x4
    let c = case(&[0xeb00_0000, 0xd53b_d043, 0xd51b_d044], vec![0; 4096]);
    let r = o.run(&c).expect("run");
    assert_eq!(r.state.nzcv, 0x6000_0000);
    assert_eq!(r.state.x[3], 0xdead_beef_0000);
    assert_eq!(r.state.tpidr_el0, 0x1111_0004);
    // str x1, [x5]; ldr q7, [x5]: memory and a v register
    let mut c = case(&[0xf900_00a1, 0x3dc0_00a7], vec![0; 4096]);
    c.state.x[5] = DATA + 0x10;
    let r = o.run(&c).expect("run");
    assert_eq!(&r.memory[0].1[0x10..0x18], &0x1111_0001u64.to_le_bytes());
    assert_eq!(r.state.v[7], 0x1111_0001);
    // A fault: ldr x0, [x1] at an unmapped address.
    let mut c = case(&[0xd503_201f, 0xf940_0020], vec![0; 4096]);
    c.state.x[1] = DATA + 0x8000;
    let r = o.run(&c).expect("run");
    assert_eq!(r.signal, SIGSEGV);
    assert_eq!(r.addr, DATA + 0x8000);
    assert_eq!(r.state.pc, CODE + 0x804, "pc at the faulting load");
    assert_eq!(r.state.x[0], 0x1111_0000, "x0 untouched");
    // The same address, new code: no stale translation.
    let c = case(&[0xd280_0540], vec![0; 4096]); // movz x0, #42
    assert_eq!(o.run(&c).expect("run").state.x[0], 42);
    let c = case(&[0xd280_0560], vec![0; 4096]); // movz x0, #43
    assert_eq!(o.run(&c).expect("run").state.x[0], 43);
}

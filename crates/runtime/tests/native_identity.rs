//! The native path is byte-for-byte what it was without the engine:
//! tests/c/native_identity.c is compiled twice with gcc (librseq-pattern
//! abort macro vs `RSEQ_EMU_ASM_DEFINE_ABORT`); the critical section
//! `[start_ip, post_commit_ip)` — found from the descriptor in `__rseq_cs`
//! and its relocations — the whole `.text`, the descriptor and all their
//! relocations are identical; only the `__rseq_failure` section (the abort
//! handler) differs.

#![cfg(target_arch = "x86_64")]

use goblin::elf::Elf;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A section's bytes and its relocations as (offset, type, target, addend).
struct Sec {
    bytes: Vec<u8>,
    relocs: Vec<(u64, u32, String, i64)>,
}

fn compile(src: &Path, include: &Path, out: &Path, emu: bool) -> Vec<u8> {
    let mut c = Command::new("gcc");
    c.args(["-O2", "-c", "-fno-asynchronous-unwind-tables", "-I"])
        .arg(include)
        .arg(src)
        .arg("-o")
        .arg(out);
    if emu {
        c.arg("-DUSE_EMU");
    }
    let o = c
        .output()
        .expect("gcc is required for this test (apt-get install gcc)");
    assert!(
        o.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

fn section(bytes: &[u8], name: &str) -> Sec {
    let elf = Elf::parse(bytes).unwrap();
    let sname = |i: usize| {
        elf.section_headers
            .get(i)
            .and_then(|s| elf.shdr_strtab.get_at(s.sh_name))
            .unwrap_or("?")
            .to_string()
    };
    let (idx, sh) = elf
        .section_headers
        .iter()
        .enumerate()
        .find(|(_, s)| elf.shdr_strtab.get_at(s.sh_name) == Some(name))
        .unwrap_or_else(|| panic!("no section {name}"));
    let data = bytes[sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize].to_vec();
    let mut relocs = Vec::new();
    for (ri, rs) in &elf.shdr_relocs {
        if elf.section_headers[*ri].sh_info as usize != idx {
            continue;
        }
        for r in rs.iter() {
            let sym = elf.syms.get(r.r_sym).unwrap();
            let target = if sym.st_name != 0 {
                elf.strtab.get_at(sym.st_name).unwrap_or("?").to_string()
            } else {
                sname(sym.st_shndx)
            };
            relocs.push((r.r_offset, r.r_type, target, r.r_addend.unwrap_or(0)));
        }
    }
    relocs.sort();
    Sec {
        bytes: data,
        relocs,
    }
}

/// [start_ip, post_commit_ip) as offsets into `.text`, from the descriptor.
fn section_range(cs: &Sec) -> (usize, usize) {
    let start = cs
        .relocs
        .iter()
        .find(|r| r.0 == 8)
        .expect("start_ip relocation");
    assert_eq!(start.2, ".text");
    let len = u64::from_le_bytes(cs.bytes[16..24].try_into().unwrap());
    (start.3 as usize, start.3 as usize + len as usize)
}

#[test]
fn native_path_is_byte_identical_only_the_abort_handler_differs() {
    let krate = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("rseq_emu_identity_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = krate.join("tests/c/native_identity.c");
    let inc = krate.join("include");
    let plain = compile(&src, &inc, &tmp.join("plain.o"), false);
    let emu = compile(&src, &inc, &tmp.join("emu.o"), true);
    std::fs::remove_dir_all(&tmp).ok();

    let (cs_p, cs_e) = (section(&plain, "__rseq_cs"), section(&emu, "__rseq_cs"));
    let (tx_p, tx_e) = (section(&plain, ".text"), section(&emu, ".text"));
    let (ab_p, ab_e) = (
        section(&plain, "__rseq_failure"),
        section(&emu, "__rseq_failure"),
    );

    let (s, e) = section_range(&cs_p);
    assert_eq!(section_range(&cs_e), (s, e));
    assert!(s < e && e <= tx_p.bytes.len(), "[{s}, {e})");
    assert_eq!(
        tx_p.bytes[s..e],
        tx_e.bytes[s..e],
        "critical section bytes differ"
    );
    let in_cs = |r: &&(u64, u32, String, i64)| (r.0 as usize) >= s && (r.0 as usize) < e;
    let rp: Vec<_> = tx_p.relocs.iter().filter(in_cs).collect();
    let re: Vec<_> = tx_e.relocs.iter().filter(in_cs).collect();
    assert_eq!(rp, re, "relocations inside the critical section differ");
    // The whole function and the descriptor, too.
    assert_eq!(tx_p.bytes, tx_e.bytes, ".text differs");
    assert_eq!(tx_p.relocs, tx_e.relocs, ".text relocations differ");
    assert_eq!(cs_p.bytes, cs_e.bytes);
    assert_eq!(cs_p.relocs, cs_e.relocs);
    // Only the abort handler differs: same signature and abort label
    // offset, different code after it.
    assert_ne!(ab_p.bytes, ab_e.bytes);
    assert_eq!(ab_p.bytes[..7], ab_e.bytes[..7], "signature");
    assert_eq!(&ab_e.bytes[..3], &[0x0f, 0xb9, 0x3d]);
    assert_eq!(&ab_e.bytes[3..7], &0x5305_3053u32.to_le_bytes());
    assert!(ab_e.relocs.iter().any(|r| r.2 == "rseq_emu_abort_stub"));
    assert!(!ab_p.relocs.iter().any(|r| r.2 == "rseq_emu_abort_stub"));
}

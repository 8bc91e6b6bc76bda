//! The ELF scanner: every restartable sequence an ELF file declares.
//!
//! Descriptors are found, in order of preference, through
//! `__rseq_cs_ptr_array` (an array of pointers to descriptors, librseq),
//! `__rseq_cs` (the descriptors themselves, 32-byte stride) or the legacy
//! `__rseq_table` (32-byte stride). `__rseq_exit_point_array` holds
//! `(start_ip, exit_ip)` pairs naming the exits other than `post_commit_ip`
//! and `abort_ip`.
//!
//! In PIE executables and shared objects the pointer fields in the file are
//! 0 and the values come from dynamic relocations; the scanner applies
//! `R_*_RELATIVE` (value = addend) and `R_X86_64_64` / `R_AARCH64_ABS64`
//! (value = symbol + addend) and reports link-time addresses (load base 0).

use goblin::elf::{header, program_header, reloc, Elf};
use rseq_emu_aarch64::Aarch64;
use rseq_emu_core::{validate, Arch, ArchKind, DescriptorError, Program, RseqCs};
use rseq_emu_x86_64::X86_64;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

/// Why a file could not be scanned at all.
#[derive(Debug, Error)]
pub enum ScanError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not an ELF file, or its headers are malformed or truncated.
    #[error("{path}: not a valid ELF file: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// An ELF file for a machine or class rseq-emu does not handle.
    #[error("{path}: unsupported ELF file: {reason}")]
    Unsupported {
        /// The file.
        path: String,
        /// What is unsupported.
        reason: String,
    },
}

/// Where a descriptor was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Through `__rseq_cs_ptr_array`.
    PtrArray,
    /// In `__rseq_cs`.
    CsSection,
    /// In the legacy `__rseq_table`.
    LegacyTable,
}

impl Source {
    /// The section name.
    pub fn section(self) -> &'static str {
        match self {
            Source::PtrArray => "__rseq_cs_ptr_array",
            Source::CsSection => "__rseq_cs",
            Source::LegacyTable => "__rseq_table",
        }
    }
}

/// One decoded instruction of a section, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedInsn {
    /// Address.
    pub ip: u64,
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// Disassembly.
    pub text: String,
    /// Why it is not emulated (`None` when it is, or when no executor exists).
    pub unsupported: Option<String>,
    /// Whether it is reachable from `start_ip`.
    pub reachable: bool,
}

/// A problem found with a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Whether the kernel would refuse the descriptor (kill the thread with
    /// SIGSEGV instead of aborting to `abort_ip`).
    pub fatal: bool,
    /// What is wrong.
    pub message: String,
}

/// Everything the scanner found out about one descriptor.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// Link-time address of the descriptor.
    pub descriptor: u64,
    /// Where the descriptor was found.
    pub source: Source,
    /// The descriptor, if it could be read.
    pub cs: Option<RseqCs>,
    /// The 4 bytes at `abort_ip - 4`, if readable.
    pub signature: Option<u32>,
    /// How the signature sits in the code (`ud1`, `nopl`, `data`, `brk #0x45e0`).
    pub signature_form: Option<&'static str>,
    /// The kernel's verdict: `Ok` or the reason it would kill the thread.
    pub kernel: Result<(), DescriptorError>,
    /// Every problem found (kernel-fatal and others).
    pub problems: Vec<Problem>,
    /// The disassembly of `[start_ip, post_commit_ip)`.
    pub listing: Vec<ListedInsn>,
    /// Whether every reachable instruction can be emulated; `None` until the
    /// architecture's executor exists or when the section could not be decoded.
    pub emulable: Option<bool>,
    /// Exit points from `__rseq_exit_point_array` for this `start_ip`.
    pub exit_points: Vec<u64>,
}

impl Sequence {
    /// Whether the kernel accepts the descriptor.
    pub fn valid(&self) -> bool {
        self.kernel.is_ok() && self.cs.is_some()
    }
}

/// The result of scanning one file.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// The file as given.
    pub path: String,
    /// Its architecture.
    pub arch: ArchKind,
    /// ELF type (`EXEC`, `DYN`, …).
    pub elf_type: &'static str,
    /// Every descriptor, by address.
    pub sequences: Vec<Sequence>,
    /// Problems with the file's rseq sections as a whole.
    pub problems: Vec<String>,
}

/// Scanner options.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The registered signature, when not the architecture's default.
    pub signature: Option<u32>,
}

/// Link-time view of the file's loaded image with dynamic relocations applied.
struct Image<'a> {
    bytes: &'a [u8],
    /// PT_LOAD segments: (vaddr, memsz, file offset, filesz, executable).
    segments: Vec<(u64, u64, u64, u64, bool)>,
    /// Relocated 64-bit words by address.
    relocs: HashMap<u64, u64>,
}

impl Image<'_> {
    fn segment(&self, addr: u64) -> Option<&(u64, u64, u64, u64, bool)> {
        self.segments
            .iter()
            .find(|(va, memsz, ..)| addr >= *va && addr - *va < *memsz)
    }

    /// Read `len` bytes at link-time address `addr` (raw file contents, no
    /// relocations). Bytes past a segment's file size read as zero.
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        for i in 0..len as u64 {
            let a = addr.checked_add(i)?;
            let &(va, _, off, filesz, _) = self.segment(a)?;
            let rel = a - va;
            if rel < filesz {
                let at = off.checked_add(rel)? as usize;
                out.push(*self.bytes.get(at)?);
            } else {
                out.push(0);
            }
        }
        Some(out)
    }

    /// Read the 64-bit word at `addr` as the dynamic loader leaves it.
    fn read_u64(&self, addr: u64) -> Option<u64> {
        if let Some(&v) = self.relocs.get(&addr) {
            return Some(v);
        }
        let b = self.read(addr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn read_u32(&self, addr: u64) -> Option<u32> {
        let b = self.read(addr, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn is_exec(&self, addr: u64) -> bool {
        self.segment(addr).is_some_and(|s| s.4)
    }
}

fn parse_elf<'a>(path: &str, bytes: &'a [u8]) -> Result<Elf<'a>, ScanError> {
    let malformed = |reason: String| ScanError::Malformed {
        path: path.to_string(),
        reason,
    };
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(malformed("no ELF magic at the start of the file".into()));
    }
    // goblin reports malformed input as errors; a panic inside it on hostile
    // input is still turned into an error rather than taking the tool down.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| Elf::parse(bytes));
    std::panic::set_hook(prev);
    match r {
        Ok(Ok(elf)) => Ok(elf),
        Ok(Err(e)) => Err(malformed(e.to_string())),
        Err(_) => Err(malformed("the ELF parser rejected the file".into())),
    }
}

/// Scan the ELF image `bytes` (named `path` in messages).
pub fn scan_bytes(path: &str, bytes: &[u8], opts: &Options) -> Result<FileReport, ScanError> {
    let elf = parse_elf(path, bytes)?;
    let unsupported = |reason: String| ScanError::Unsupported {
        path: path.to_string(),
        reason,
    };
    let arch = match elf.header.e_machine {
        header::EM_X86_64 => ArchKind::X86_64,
        header::EM_AARCH64 => ArchKind::Aarch64,
        m => {
            return Err(unsupported(format!(
                "machine {} ({m}); rseq-emu handles x86_64 and aarch64",
                header::machine_to_str(m)
            )))
        }
    };
    if !elf.is_64 || !elf.little_endian {
        return Err(unsupported(
            "only 64-bit little-endian files are handled".into(),
        ));
    }
    let elf_type = match elf.header.e_type {
        header::ET_EXEC => "EXEC",
        header::ET_DYN => "DYN",
        header::ET_REL => "REL",
        _ => "other",
    };

    let mut image = Image {
        bytes,
        segments: Vec::new(),
        relocs: HashMap::new(),
    };
    for ph in elf.program_headers.iter() {
        if ph.p_type == program_header::PT_LOAD {
            let off_ok = ph
                .p_offset
                .checked_add(ph.p_filesz)
                .is_some_and(|end| end <= bytes.len() as u64);
            if !off_ok {
                return Err(ScanError::Malformed {
                    path: path.to_string(),
                    reason: format!(
                        "segment at 0x{:x} claims file bytes [0x{:x}, +0x{:x}) beyond the file's {} bytes (truncated?)",
                        ph.p_vaddr,
                        ph.p_offset,
                        ph.p_filesz,
                        bytes.len()
                    ),
                });
            }
            image.segments.push((
                ph.p_vaddr,
                ph.p_memsz.max(ph.p_filesz),
                ph.p_offset,
                ph.p_filesz,
                ph.is_executable(),
            ));
        }
    }
    let mut problems = Vec::new();
    if image.segments.is_empty() {
        // Relocatable objects have no segments: use allocated sections at
        // their (section-relative) addresses. Relocations are not applied.
        for sh in elf.section_headers.iter() {
            if sh.is_alloc() && sh.sh_type != goblin::elf::section_header::SHT_NOBITS {
                let end_ok = sh
                    .sh_offset
                    .checked_add(sh.sh_size)
                    .is_some_and(|e| e <= bytes.len() as u64);
                if end_ok {
                    image.segments.push((
                        sh.sh_addr,
                        sh.sh_size,
                        sh.sh_offset,
                        sh.sh_size,
                        sh.is_executable(),
                    ));
                }
            }
        }
        if elf_type == "REL" {
            problems.push("relocatable object: addresses are section-relative and relocations are not applied; scan the linked file for exact addresses".to_string());
        }
    }

    // Dynamic relocations that fill in 64-bit words.
    let (relative, abs64) = match arch {
        ArchKind::X86_64 => (reloc::R_X86_64_RELATIVE, reloc::R_X86_64_64),
        ArchKind::Aarch64 => (reloc::R_AARCH64_RELATIVE, reloc::R_AARCH64_ABS64),
    };
    for r in elf.dynrelas.iter().chain(elf.dynrels.iter()) {
        let addend = match r.r_addend {
            Some(a) => a as u64,
            // REL (no addend): the addend is the word in place.
            None => image.read_u64(r.r_offset).unwrap_or(0),
        };
        if r.r_type == relative {
            image.relocs.insert(r.r_offset, addend);
        } else if r.r_type == abs64 {
            match elf.dynsyms.get(r.r_sym) {
                Some(sym) if sym.st_shndx != 0 => {
                    image
                        .relocs
                        .insert(r.r_offset, sym.st_value.wrapping_add(addend));
                }
                _ => {
                    let name = elf
                        .dynsyms
                        .get(r.r_sym)
                        .and_then(|s| elf.dynstrtab.get_at(s.st_name))
                        .unwrap_or("?");
                    problems.push(format!(
                        "word at 0x{:x} is relocated against undefined symbol `{name}`: its value is only known at load time",
                        r.r_offset
                    ));
                }
            }
        }
    }
    if let Some(d) = &elf.dynamic {
        check_relr(&image, &d.dyns, &mut problems);
    }

    let section = |name: &str| {
        elf.section_headers
            .iter()
            .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))
    };

    // Descriptor addresses.
    let mut descs: BTreeMap<u64, Source> = BTreeMap::new();
    if let Some(sh) = section("__rseq_cs_ptr_array") {
        for [p] in word_array::<1>(&image, "__rseq_cs_ptr_array", sh, &mut problems) {
            descs.entry(p).or_insert(Source::PtrArray);
        }
    } else if let Some((sh, src)) = section("__rseq_cs")
        .map(|s| (s, Source::CsSection))
        .or_else(|| section("__rseq_table").map(|s| (s, Source::LegacyTable)))
    {
        if !sh.sh_size.is_multiple_of(32) {
            problems.push(format!(
                "{} is {} bytes, not a multiple of the 32-byte descriptor size",
                src.section(),
                sh.sh_size
            ));
        }
        for i in 0..sh.sh_size / 32 {
            descs.entry(sh.sh_addr + i * 32).or_insert(src);
        }
    }

    // Exit points.
    let mut exits: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    if let Some(sh) = section("__rseq_exit_point_array") {
        for [start, exit] in word_array::<2>(&image, "__rseq_exit_point_array", sh, &mut problems) {
            exits.entry(start).or_default().insert(exit);
        }
    }

    let signature = opts.signature.unwrap_or(arch.default_signature());
    let mut sequences = Vec::new();
    for (&addr, &source) in &descs {
        let seq = match arch {
            ArchKind::X86_64 => describe::<X86_64>(&image, addr, source, signature, &exits),
            ArchKind::Aarch64 => describe::<Aarch64>(&image, addr, source, signature, &exits),
        };
        sequences.push(seq);
    }
    let known: BTreeSet<u64> = sequences
        .iter()
        .filter_map(|s| s.cs.map(|c| c.start_ip))
        .collect();
    for s in exits.keys() {
        if !known.contains(s) {
            problems.push(format!(
                "__rseq_exit_point_array names start_ip 0x{s:x}, which no descriptor has"
            ));
        }
    }
    Ok(FileReport {
        path: path.to_string(),
        arch,
        elf_type,
        sequences,
        problems,
    })
}

/// Packed relative relocations (`DT_RELR`, `ld -z pack-relative-relocs`).
/// Their addends are stored in place, so the link-time image already holds
/// each relocated word's link-time value and nothing needs applying; the
/// table is decoded only to report one that lies outside the image or
/// names words outside it.
fn check_relr(image: &Image, dyns: &[goblin::elf::dynamic::Dyn], problems: &mut Vec<String>) {
    const DT_RELRSZ: u64 = 35;
    const DT_RELR: u64 = 36;
    let tag = |t: u64| dyns.iter().find(|e| e.d_tag == t).map(|e| e.d_val);
    let Some(table) = tag(DT_RELR) else {
        return;
    };
    let size = tag(DT_RELRSZ).unwrap_or(0);
    if !size.is_multiple_of(8) {
        problems.push(format!(
            "DT_RELRSZ is {size} bytes, not a multiple of 8: the trailing bytes are ignored"
        ));
    }
    let mut check = |at: u64| {
        if image.read_u64(at).is_none() {
            problems.push(format!(
                "DT_RELR relocates the word at 0x{at:x}, which lies outside every loaded segment"
            ));
        }
    };
    let mut next = 0u64;
    for i in 0..size / 8 {
        let at = table.wrapping_add(8 * i);
        let Some(entry) = image.read_u64(at) else {
            problems.push(format!(
                "DT_RELR table entry at 0x{at:x} lies outside every loaded segment: the entries after it are not checked"
            ));
            return;
        };
        if entry & 1 == 0 {
            check(entry);
            next = entry.wrapping_add(8);
        } else {
            for bit in (0..63).filter(|b| (entry >> (b + 1)) & 1 == 1) {
                check(next.wrapping_add(8 * bit));
            }
            next = next.wrapping_add(63 * 8);
        }
    }
}

/// The entries of an array section of `N` 64-bit words per entry, as the
/// relocated image holds them. A size that is not a whole number of entries
/// and entries outside every loaded segment are reported in `problems`.
fn word_array<const N: usize>(
    image: &Image,
    name: &str,
    sh: &goblin::elf::SectionHeader,
    problems: &mut Vec<String>,
) -> Vec<[u64; N]> {
    let entry = 8 * N as u64;
    if !sh.sh_size.is_multiple_of(entry) {
        problems.push(format!(
            "{name} is {} bytes, not a multiple of {entry}: the trailing bytes are ignored",
            sh.sh_size
        ));
    }
    let mut out = Vec::new();
    for i in 0..sh.sh_size / entry {
        let at = sh.sh_addr + i * entry;
        let mut words = [0u64; N];
        let mut inside = true;
        for (k, w) in words.iter_mut().enumerate() {
            match image.read_u64(at + 8 * k as u64) {
                Some(v) => *w = v,
                None => inside = false,
            }
        }
        if inside {
            out.push(words);
        } else {
            problems.push(format!(
                "{name} entry at 0x{at:x} lies outside every loaded segment"
            ));
        }
    }
    out
}

/// Scan the file at `path`.
pub fn scan_file(path: &std::path::Path, opts: &Options) -> Result<FileReport, ScanError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ScanError::Read {
        path: name.clone(),
        source,
    })?;
    scan_bytes(&name, &bytes, opts)
}

const KERNEL_KILLS: &str =
    "the kernel would kill the thread with SIGSEGV at the next preemption, migration or signal inside the section";

fn describe<A: Arch>(
    image: &Image<'_>,
    addr: u64,
    source: Source,
    signature: u32,
    exits: &BTreeMap<u64, BTreeSet<u64>>,
) -> Sequence {
    let mut seq = Sequence {
        descriptor: addr,
        source,
        cs: None,
        signature: None,
        signature_form: None,
        kernel: Ok(()),
        problems: Vec::new(),
        listing: Vec::new(),
        emulable: None,
        exit_points: Vec::new(),
    };
    let raw = image.read(addr, 32);
    let cs = match raw {
        Some(_) => {
            let word = |o: u64| image.read_u64(addr + o);
            let head = image.read(addr, 8).unwrap_or_default();
            match (word(8), word(16), word(24)) {
                (Some(start_ip), Some(post_commit_offset), Some(abort_ip)) if head.len() == 8 => {
                    RseqCs {
                        version: u32::from_le_bytes([head[0], head[1], head[2], head[3]]),
                        flags: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
                        start_ip,
                        post_commit_offset,
                        abort_ip,
                    }
                }
                _ => {
                    seq.kernel = Err(DescriptorError::Unreadable(addr));
                    seq.problems.push(Problem {
                        fatal: true,
                        message: format!("descriptor 0x{addr:x} cannot be read: {KERNEL_KILLS}"),
                    });
                    return seq;
                }
            }
        }
        None => {
            seq.kernel = Err(DescriptorError::Unreadable(addr));
            seq.problems.push(Problem {
                fatal: true,
                message: format!(
                    "descriptor pointer 0x{addr:x} lies outside every loaded segment (garbage in {}?): {KERNEL_KILLS}",
                    source.section()
                ),
            });
            return seq;
        }
    };
    if !addr.is_multiple_of(32) {
        seq.problems.push(Problem {
            fatal: false,
            message: format!(
                "descriptor 0x{addr:x} is not 32-byte aligned as struct rseq_cs requires"
            ),
        });
    }
    seq.cs = Some(cs);
    seq.signature = cs.abort_ip.checked_sub(4).and_then(|a| image.read_u32(a));
    seq.signature_form = seq.signature.map(|w| match A::KIND {
        ArchKind::X86_64 => {
            let prefix = cs
                .abort_ip
                .checked_sub(7)
                .and_then(|a| image.read(a, 3))
                .and_then(|b| b.try_into().ok());
            rseq_emu_x86_64::signature::SignatureForm::classify(prefix).name()
        }
        ArchKind::Aarch64 => rseq_emu_aarch64::signature::SignatureForm::classify(w).name(),
    });
    seq.kernel = validate(&cs, A::KIND, signature, |a| image.read_u32(a));
    if let Err(e) = &seq.kernel {
        seq.problems.push(Problem {
            fatal: true,
            message: format!("{e}: {KERNEL_KILLS}"),
        });
    }
    seq.exit_points = exits
        .get(&cs.start_ip)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    let Some(post) = cs.post_commit_ip() else {
        return seq;
    };
    if cs.post_commit_offset == 0 {
        seq.problems.push(Problem {
            fatal: false,
            message: "post_commit_offset is 0: the section is empty".into(),
        });
        return seq;
    }
    if !image.is_exec(cs.start_ip) {
        seq.problems.push(Problem {
            fatal: false,
            message: format!(
                "start_ip 0x{:x} is not in an executable segment",
                cs.start_ip
            ),
        });
        return seq;
    }
    if seq.kernel.is_ok() && !image.is_exec(cs.abort_ip) {
        seq.problems.push(Problem {
            fatal: false,
            message: format!(
                "abort_ip 0x{:x} is not in an executable segment: an abort would fault",
                cs.abort_ip
            ),
        });
    }
    // Code bytes: the section plus up to 15 bytes of the last instruction.
    let len = cs
        .post_commit_offset
        .min(rseq_emu_core::arch::MAX_SECTION_LEN + 1);
    let mut code = match image.read(cs.start_ip, len as usize) {
        Some(c) => c,
        None => {
            seq.problems.push(Problem {
                fatal: false,
                message: format!(
                    "the section [0x{:x}, 0x{post:x}) is not entirely inside a loaded segment",
                    cs.start_ip
                ),
            });
            return seq;
        }
    };
    for i in 0..15u64 {
        match image.read(post + i, 1) {
            Some(b) => code.extend(b),
            None => break,
        }
    }
    match Program::<A>::decode(&code, cs.start_ip, cs.start_ip, post) {
        Ok(p) => {
            seq.listing = p
                .insns()
                .into_iter()
                .map(|d| {
                    let off = (d.ip - cs.start_ip) as usize;
                    ListedInsn {
                        ip: d.ip,
                        bytes: code
                            .get(off..off + d.len as usize)
                            .unwrap_or_default()
                            .to_vec(),
                        text: d.text.clone(),
                        unsupported: if A::HAS_EXECUTOR {
                            d.op.as_ref().err().cloned()
                        } else {
                            None
                        },
                        reachable: p.is_reachable(d.ip),
                    }
                })
                .collect();
            if A::HAS_EXECUTOR {
                seq.emulable = Some(p.is_emulable());
            }
            // The last instruction must end exactly at post_commit_ip.
            if let Some(last) = seq.listing.last() {
                let end = last.ip + last.bytes.len() as u64;
                if end != post {
                    seq.problems.push(Problem {
                        fatal: false,
                        message: format!(
                            "the last instruction at 0x{:x} ends at 0x{end:x}, not at post_commit_ip 0x{post:x}",
                            last.ip
                        ),
                    });
                }
            }
        }
        Err(e) => seq.problems.push(Problem {
            fatal: false,
            message: e.to_string(),
        }),
    }
    seq
}

/// Run the scanner on arbitrary bytes and exercise every report field; the
/// body of the `scan_elf` fuzz target. Never panics.
pub fn fuzz_scan(data: &[u8]) {
    if let Ok(r) = scan_bytes("fuzz", data, &Options::default()) {
        for s in &r.sequences {
            let _ = s.valid();
            let _ = s.listing.len();
        }
    }
}

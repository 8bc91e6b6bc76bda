//! The fixture format (fixtures/README.md, version 1): the serde model, its
//! validation into a [`Case`] with errors that name the field, and building
//! the memory and entry state of either architecture.

use rseq_emu_aarch64::A64State;
use rseq_emu_core::abi::{validate, ArchKind, RseqCs};
use rseq_emu_core::SparseMemory;
use rseq_emu_x86_64::{reg, X86State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The value of the `format` key.
pub const FORMAT: &str = "rseq-emu-fixture";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;

/// A fixture exactly as stored (strings not yet parsed).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// `<arch>/<pattern>-<nnn>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// The machine code and its load address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeFile>,
    /// Alternatively: the code from an ELF file's loaded segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfFile>,
    /// The `struct rseq_cs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<DescriptorFile>,
    /// The registered signature (default: the architecture's usual one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The CPU the run happened on.
    pub cpu: u32,
    /// Address of the thread's `struct rseq`.
    pub rseq_area: String,
    /// The state at `start_ip`.
    pub entry: EntryFile,
    /// Initial memory regions.
    pub memory: Vec<RegionFile>,
    /// What the real machine did.
    pub expect: ExpectFile,
    /// RFLAGS bits replay masks (x86_64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_flags: Option<String>,
}

/// `code`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeFile {
    /// Load address.
    pub address: String,
    /// The bytes, plain hex.
    pub bytes: String,
}

/// `elf`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElfFile {
    /// Path relative to the fixture file.
    pub path: String,
    /// Link address of the descriptor.
    pub descriptor: String,
}

/// `descriptor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorFile {
    /// Where the descriptor sits.
    pub address: String,
    /// `version`.
    pub version: u32,
    /// `flags`.
    pub flags: u32,
    /// `start_ip`.
    pub start_ip: String,
    /// `post_commit_offset`.
    pub post_commit_offset: String,
    /// `abort_ip`.
    pub abort_ip: String,
}

/// `entry`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    /// Every register by name.
    pub regs: BTreeMap<String, String>,
}

/// One `memory` region.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFile {
    /// Start address.
    pub address: String,
    /// Contents, plain hex.
    pub bytes: String,
    /// Whether stores may change it.
    pub writable: bool,
    /// What the region is (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One `expect.memory` region.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectRegionFile {
    /// Start address (that of a writable `memory` region).
    pub address: String,
    /// Contents after the run.
    pub bytes: String,
}

/// `expect`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// `committed`, `aborted` or `exited`.
    pub outcome: String,
    /// Where execution left the section.
    pub ip: String,
    /// Every register after the run.
    pub regs: BTreeMap<String, String>,
    /// Every writable region after the run.
    pub memory: Vec<ExpectRegionFile>,
}

/// How a run left the section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedOutcome {
    /// ip == post_commit_ip.
    Committed,
    /// ip == abort_ip.
    Aborted,
    /// Any other exit.
    Exited,
}

impl ExpectedOutcome {
    /// The name used in fixtures.
    pub fn name(self) -> &'static str {
        match self {
            ExpectedOutcome::Committed => "committed",
            ExpectedOutcome::Aborted => "aborted",
            ExpectedOutcome::Exited => "exited",
        }
    }

    /// Classify an exit address.
    pub fn classify(ip: u64, cs: &RseqCs) -> Self {
        if Some(ip) == cs.post_commit_ip() {
            ExpectedOutcome::Committed
        } else if ip == cs.abort_ip {
            ExpectedOutcome::Aborted
        } else {
            ExpectedOutcome::Exited
        }
    }
}

/// A register state of either architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regs {
    /// x86_64.
    X86(X86State),
    /// aarch64.
    A64(Box<A64State>),
}

/// A validated fixture. (Replay needs most fields; `cs_address`,
/// `signature`, `cpu` and `rseq_area` are kept for tools and reports.)
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Case {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Architecture.
    pub arch: ArchKind,
    /// Code load address.
    pub code_address: u64,
    /// Code bytes.
    pub code: Vec<u8>,
    /// The descriptor.
    pub cs: RseqCs,
    /// Where the descriptor sits.
    pub cs_address: u64,
    /// The registered signature.
    pub signature: u32,
    /// The CPU of the run.
    pub cpu: u32,
    /// The `struct rseq` address.
    pub rseq_area: u64,
    /// State at start_ip (ip set to start_ip).
    pub entry: Regs,
    /// Initial regions: (address, bytes, writable).
    pub memory: Vec<(u64, Vec<u8>, bool)>,
    /// Expected outcome.
    pub outcome: ExpectedOutcome,
    /// Expected exit ip.
    pub exit_ip: u64,
    /// Expected registers (ip set to the exit ip).
    pub expect_regs: Regs,
    /// Expected contents of every writable region, by address.
    pub expect_memory: BTreeMap<u64, Vec<u8>>,
    /// RFLAGS bits to mask (x86_64).
    pub ignore_flags: u64,
}

/// A fixture that cannot be used, naming the file and the field.
#[derive(Debug)]
pub struct FixtureError {
    /// The file.
    pub path: PathBuf,
    /// The field (JSON path), empty if the whole file.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FixtureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.path.display(),
                self.field,
                self.message
            )
        }
    }
}

impl std::error::Error for FixtureError {}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> FixtureError {
        FixtureError {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn u64(&self, field: &str, s: &str) -> Result<u64, FixtureError> {
        parse_hex_u128(s)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                self.err(
                    field,
                    format!("{s:?} is not a 0x-prefixed hex value of at most 64 bits"),
                )
            })
    }

    fn u128(&self, field: &str, s: &str) -> Result<u128, FixtureError> {
        parse_hex_u128(s).ok_or_else(|| {
            self.err(
                field,
                format!("{s:?} is not a 0x-prefixed hex value of at most 128 bits"),
            )
        })
    }

    fn bytes(&self, field: &str, s: &str) -> Result<Vec<u8>, FixtureError> {
        parse_bytes(s).map_err(|m| self.err(field, m))
    }
}

/// Parse `0x…` lower/upper-case hex of up to 128 bits.
pub fn parse_hex_u128(s: &str) -> Option<u128> {
    let h = s.strip_prefix("0x")?;
    if h.is_empty() || h.len() > 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(h, 16).ok()
}

/// Parse a plain hex byte string.
pub fn parse_bytes(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!(
            "byte string has an odd number of hex digits ({})",
            s.len()
        ));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        match (d(pair[0]), d(pair[1])) {
            (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            _ => {
                return Err(format!(
                    "byte {i} ({:?}) is not two hex digits",
                    String::from_utf8_lossy(pair)
                ))
            }
        }
    }
    Ok(out)
}

/// Format `0x…` lower-case hex.
pub fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

/// Format plain lower-case hex bytes.
pub fn hex_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Register names of an architecture, in a stable order.
pub fn reg_names(arch: ArchKind) -> Vec<String> {
    match arch {
        ArchKind::X86_64 => {
            let mut v: Vec<String> = reg::NAMES.iter().map(|s| s.to_string()).collect();
            v.extend(["rflags", "fs_base", "gs_base"].map(String::from));
            v
        }
        ArchKind::Aarch64 => {
            let mut v: Vec<String> = (0..31).map(|i| format!("x{i}")).collect();
            v.extend(["sp", "nzcv", "tpidr_el0"].map(String::from));
            v.extend((0..32).map(|i| format!("v{i}")));
            v
        }
    }
}

fn optional_reg(arch: ArchKind, name: &str) -> bool {
    match arch {
        ArchKind::X86_64 => name == "gs_base",
        ArchKind::Aarch64 => name.starts_with('v'),
    }
}

fn parse_regs(
    cx: &Ctx,
    field: &str,
    arch: ArchKind,
    regs: &BTreeMap<String, String>,
    ip: u64,
) -> Result<Regs, FixtureError> {
    let names = reg_names(arch);
    for k in regs.keys() {
        if !names.iter().any(|n| n == k) {
            return Err(cx.err(
                format!("{field}.{k}"),
                format!("unknown register for {arch}"),
            ));
        }
    }
    let get = |name: &str| -> Result<u128, FixtureError> {
        let f = format!("{field}.{name}");
        match regs.get(name) {
            Some(s) if name.starts_with('v') && arch == ArchKind::Aarch64 => cx.u128(&f, s),
            Some(s) => cx.u64(&f, s).map(u128::from),
            None if optional_reg(arch, name) => Ok(0),
            None => Err(cx.err(f, "missing register")),
        }
    };
    Ok(match arch {
        ArchKind::X86_64 => {
            let mut s = X86State::default();
            for (i, n) in reg::NAMES.iter().enumerate() {
                s.gpr[i] = get(n)? as u64;
            }
            s.rflags = get("rflags")? as u64;
            s.fs_base = get("fs_base")? as u64;
            s.gs_base = get("gs_base")? as u64;
            s.rip = ip;
            Regs::X86(s)
        }
        ArchKind::Aarch64 => {
            let mut s = A64State::default();
            for i in 0..31 {
                s.x[i] = get(&format!("x{i}"))? as u64;
            }
            s.sp = get("sp")? as u64;
            let nzcv = get("nzcv")?;
            s.nzcv = u32::try_from(nzcv)
                .ok()
                .filter(|v| v & 0x0fff_ffff == 0)
                .ok_or_else(|| {
                    cx.err(
                        format!("{field}.nzcv"),
                        format!("0x{nzcv:x} is not an NZCV value (flags in bits 31..28 only)"),
                    )
                })?;
            s.tpidr_el0 = get("tpidr_el0")? as u64;
            for i in 0..32 {
                s.v[i] = get(&format!("v{i}"))?;
            }
            s.pc = ip;
            Regs::A64(Box::new(s))
        }
    })
}

/// The code, from the `elf` reference: the loaded segment holding `start_ip`,
/// and the descriptor bytes at its link address.
fn load_elf(cx: &Ctx, e: &ElfFile) -> Result<(u64, Vec<u8>, u64, RseqCs), FixtureError> {
    let dir = cx.path.parent().unwrap_or(Path::new("."));
    let p = dir.join(&e.path);
    let data = std::fs::read(&p)
        .map_err(|err| cx.err("elf.path", format!("cannot read {}: {err}", p.display())))?;
    let desc = cx.u64("elf.descriptor", &e.descriptor)?;
    let elf = goblin::elf::Elf::parse(&data).map_err(|err| {
        cx.err(
            "elf.path",
            format!("{} is not an ELF file: {err}", p.display()),
        )
    })?;
    // The file is untrusted: every sum is checked (`None` = not there).
    let file_range = |off: u64, len: u64| -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    };
    let holds = |ph: &goblin::elf::ProgramHeader, vaddr: u64, len: u64| {
        ph.p_type == goblin::elf::program_header::PT_LOAD
            && vaddr >= ph.p_vaddr
            && matches!(
                (vaddr.checked_add(len), ph.p_vaddr.checked_add(ph.p_filesz)),
                (Some(end), Some(seg_end)) if end <= seg_end
            )
    };
    let seg_bytes = |vaddr: u64, len: u64| -> Option<Vec<u8>> {
        elf.program_headers.iter().find_map(|ph| {
            if !holds(ph, vaddr, len) {
                return None;
            }
            let off = ph.p_offset.checked_add(vaddr - ph.p_vaddr)?;
            file_range(off, len).map(<[u8]>::to_vec)
        })
    };
    let cs = seg_bytes(desc, 32)
        .map(|b| {
            let arr: [u8; 32] = b.try_into().unwrap_or([0; 32]);
            RseqCs::from_bytes(&arr)
        })
        .ok_or_else(|| {
            cx.err(
                "elf.descriptor",
                format!("0x{desc:x} is not inside a loaded segment of the ELF file"),
            )
        })?;
    let start = cs.start_ip;
    let seg = elf
        .program_headers
        .iter()
        .find(|ph| ph.is_executable() && holds(ph, start, 1))
        .ok_or_else(|| {
            cx.err(
                "elf.descriptor",
                format!("no executable loaded segment holds start_ip 0x{start:x} of the descriptor at 0x{desc:x}"),
            )
        })?;
    let code = file_range(seg.p_offset, seg.p_filesz)
        .ok_or_else(|| cx.err("elf.path", "segment beyond the end of the file"))?
        .to_vec();
    Ok((seg.p_vaddr, code, desc, cs))
}

/// Parse and validate one fixture file.
pub fn load(path: &Path) -> Result<Case, FixtureError> {
    let cx = Ctx { path };
    let text =
        std::fs::read_to_string(path).map_err(|e| cx.err("", format!("cannot read: {e}")))?;
    let f: FixtureFile = serde_json::from_str(&text).map_err(|e| {
        let field = match e.classify() {
            serde_json::error::Category::Data => data_error_field(&text, &e),
            _ => String::new(),
        };
        cx.err(field, format!("invalid fixture JSON: {e}"))
    })?;
    from_file(path, f)
}

/// The field a serde data error is about: the JSON path of the value at
/// the error's position, plus the key serde names in "missing field `x`" /
/// "unknown field `x`".
fn data_error_field(text: &str, e: &serde_json::Error) -> String {
    let offset = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        + e.column();
    let mut path = json_path_at(text, offset);
    let msg = e.to_string();
    let named = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("missing field") || msg.contains("unknown field"));
    if let Some(name) = named {
        if !(path == name || path.ends_with(&format!(".{name}"))) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
        }
    }
    path
}

/// The JSON path (`memory[0].writable`) of the innermost value that the
/// first `end` bytes of `text` are inside or have just closed. A tiny
/// scanner, for error messages only: `text` is known to be JSON up to the
/// point where serde stopped.
fn json_path_at(text: &str, end: usize) -> String {
    enum Frame {
        /// The current key, and whether the next string is a key.
        Object(Option<String>, bool),
        /// The current index.
        Array(usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let b = text.as_bytes();
    let end = end.min(b.len());
    let mut i = 0;
    while i < end {
        match b[i] {
            b'{' => stack.push(Frame::Object(None, true)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object(_, expect_key)) => *expect_key = true,
                Some(Frame::Array(n)) => *n += 1,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object(_, expect_key)) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object(key, true)) = stack.last_mut() {
                    *key = Some(String::from_utf8_lossy(&b[start..i.min(b.len())]).into_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for f in &stack {
        match f {
            Frame::Object(Some(k), _) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object(None, _) => {}
            Frame::Array(n) => path.push_str(&format!("[{n}]")),
        }
    }
    path
}

/// Validate an already parsed fixture (`path` is used in errors and to
/// resolve `elf.path`).
pub fn from_file(path: &Path, f: FixtureFile) -> Result<Case, FixtureError> {
    let cx = Ctx { path };
    if f.format != FORMAT {
        return Err(cx.err("format", format!("is {:?}, expected {FORMAT:?}", f.format)));
    }
    if f.version != VERSION {
        return Err(cx.err(
            "version",
            format!("is {}, this rseq-emu reads version {VERSION}", f.version),
        ));
    }
    let arch = ArchKind::from_name(&f.arch).ok_or_else(|| {
        cx.err(
            "arch",
            format!("{:?} is not an architecture (x86_64 or aarch64)", f.arch),
        )
    })?;
    let (code_address, code, elf_desc) = match (&f.code, &f.elf) {
        (Some(c), None) => (
            cx.u64("code.address", &c.address)?,
            cx.bytes("code.bytes", &c.bytes)?,
            None,
        ),
        (None, Some(e)) => {
            let (a, b, d, cs) = load_elf(&cx, e)?;
            (a, b, Some((d, cs)))
        }
        (Some(_), Some(_)) => return Err(cx.err("code", "give either code or elf, not both")),
        (None, None) => return Err(cx.err("code", "missing (give code or elf)")),
    };
    if code.is_empty() {
        return Err(cx.err("code.bytes", "empty"));
    }
    let (cs_address, cs) = match (&f.descriptor, elf_desc) {
        (Some(d), _) => {
            let cs = RseqCs {
                version: d.version,
                flags: d.flags,
                start_ip: cx.u64("descriptor.start_ip", &d.start_ip)?,
                post_commit_offset: cx
                    .u64("descriptor.post_commit_offset", &d.post_commit_offset)?,
                abort_ip: cx.u64("descriptor.abort_ip", &d.abort_ip)?,
            };
            (cx.u64("descriptor.address", &d.address)?, cs)
        }
        (None, Some((a, cs))) => (a, cs),
        (None, None) => return Err(cx.err("descriptor", "missing field")),
    };
    let signature = match &f.signature {
        Some(s) => {
            let v = cx.u64("signature", s)?;
            u32::try_from(v).map_err(|_| cx.err("signature", "wider than 32 bits"))?
        }
        None => arch.default_signature(),
    };
    let code_end = code_address.checked_add(code.len() as u64).ok_or_else(|| {
        cx.err(
            "code",
            format!(
                "0x{code_address:x} + {} bytes wraps past the end of the address space",
                code.len()
            ),
        )
    })?;
    let in_code = |a: u64, n: u64| a >= code_address && a.saturating_add(n) <= code_end;
    let post = cs.start_ip.wrapping_add(cs.post_commit_offset);
    if cs.post_commit_ip().is_none() || !in_code(cs.start_ip, cs.post_commit_offset) {
        return Err(cx.err(
            "code",
            format!(
                "[0x{code_address:x}, 0x{code_end:x}) does not cover the section [0x{:x}, 0x{post:x})",
                cs.start_ip
            ),
        ));
    }
    validate(&cs, arch, signature, |a| {
        if in_code(a, 4) {
            let o = (a - code_address) as usize;
            Some(u32::from_le_bytes(code[o..o + 4].try_into().ok()?))
        } else {
            None
        }
    })
    .map_err(|e| cx.err("descriptor", format!("the kernel would refuse it: {e}")))?;
    let rseq_area = cx.u64("rseq_area", &f.rseq_area)?;
    let entry = parse_regs(&cx, "entry.regs", arch, &f.entry.regs, cs.start_ip)?;
    let mut memory = Vec::new();
    for (i, r) in f.memory.iter().enumerate() {
        let a = cx.u64(&format!("memory[{i}].address"), &r.address)?;
        let b = cx.bytes(&format!("memory[{i}].bytes"), &r.bytes)?;
        if b.is_empty() {
            return Err(cx.err(format!("memory[{i}].bytes"), "empty region"));
        }
        memory.push((a, b, r.writable));
    }
    // Overlaps, with the code too (build the memory once to check).
    build_memory_inner(&cx, code_address, &code, &memory)?;
    if !memory
        .iter()
        .any(|(a, b, _)| rseq_area >= *a && rseq_area.saturating_add(32) <= a + b.len() as u64)
    {
        return Err(cx.err(
            "rseq_area",
            format!(
                "0x{rseq_area:x}: the 32 bytes of struct rseq are not inside one memory region"
            ),
        ));
    }
    let outcome = match f.expect.outcome.as_str() {
        "committed" => ExpectedOutcome::Committed,
        "aborted" => ExpectedOutcome::Aborted,
        "exited" => ExpectedOutcome::Exited,
        o => {
            return Err(cx.err(
                "expect.outcome",
                format!("{o:?} is not committed, aborted or exited"),
            ))
        }
    };
    let exit_ip = cx.u64("expect.ip", &f.expect.ip)?;
    if ExpectedOutcome::classify(exit_ip, &cs) != outcome {
        return Err(cx.err(
            "expect.outcome",
            format!(
                "{} contradicts expect.ip 0x{exit_ip:x} (post_commit_ip 0x{post:x}, abort_ip 0x{:x})",
                outcome.name(),
                cs.abort_ip
            ),
        ));
    }
    if cs.contains(exit_ip) {
        return Err(cx.err("expect.ip", format!("0x{exit_ip:x} is inside the section")));
    }
    let expect_regs = parse_regs(&cx, "expect.regs", arch, &f.expect.regs, exit_ip)?;
    let mut expect_memory = BTreeMap::new();
    for (i, r) in f.expect.memory.iter().enumerate() {
        let field = format!("expect.memory[{i}]");
        let a = cx.u64(&format!("{field}.address"), &r.address)?;
        let b = cx.bytes(&format!("{field}.bytes"), &r.bytes)?;
        match memory.iter().find(|(ma, _, _)| *ma == a) {
            Some((_, mb, true)) if mb.len() == b.len() => {}
            Some((_, mb, true)) => {
                return Err(cx.err(
                    format!("{field}.bytes"),
                    format!("{} bytes, the region at 0x{a:x} has {}", b.len(), mb.len()),
                ))
            }
            Some((_, _, false)) => {
                return Err(cx.err(
                    format!("{field}.address"),
                    format!("0x{a:x} is a read-only region"),
                ))
            }
            None => {
                return Err(cx.err(
                    format!("{field}.address"),
                    format!("0x{a:x} is not the start of a memory region"),
                ))
            }
        }
        if expect_memory.insert(a, b).is_some() {
            return Err(cx.err(format!("{field}.address"), "listed twice"));
        }
    }
    if let Some((a, _, _)) = memory
        .iter()
        .find(|(a, _, w)| *w && !expect_memory.contains_key(a))
    {
        return Err(cx.err(
            "expect.memory",
            format!("the writable region at 0x{a:x} has no expected contents"),
        ));
    }
    let ignore_flags = match &f.ignore_flags {
        Some(s) if arch == ArchKind::X86_64 => cx.u64("ignore_flags", s)?,
        Some(_) => return Err(cx.err("ignore_flags", "only meaningful for x86_64")),
        None => 0,
    };
    Ok(Case {
        path: path.to_path_buf(),
        name: f.name.unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into()
        }),
        arch,
        code_address,
        code,
        cs,
        cs_address,
        signature,
        cpu: f.cpu,
        rseq_area,
        entry,
        memory,
        outcome,
        exit_ip,
        expect_regs,
        expect_memory,
        ignore_flags,
    })
}

fn build_memory_inner(
    cx: &Ctx,
    code_address: u64,
    code: &[u8],
    memory: &[(u64, Vec<u8>, bool)],
) -> Result<SparseMemory, FixtureError> {
    let mut m = SparseMemory::new();
    m.map(code_address, code.to_vec(), false)
        .map_err(|e| cx.err("code", e.to_string()))?;
    for (i, (a, b, w)) in memory.iter().enumerate() {
        m.map(*a, b.clone(), *w).map_err(|e| {
            let what = if e.to_string().contains(&format!("0x{code_address:x}")) {
                " (the code)"
            } else {
                ""
            };
            cx.err(format!("memory[{i}]"), format!("{e}{what}"))
        })?;
    }
    Ok(m)
}

impl Case {
    /// The address space of the run: the code read-only, then every region.
    pub fn build_memory(&self) -> SparseMemory {
        let cx = Ctx { path: &self.path };
        // Validated in `load`; cannot fail here.
        build_memory_inner(&cx, self.code_address, &self.code, &self.memory).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner behind the field of a JSON type error: nested objects
    /// and arrays, escaped quotes inside strings, values just closed.
    #[test]
    fn json_path_at_names_the_value() {
        let t = r#"{"a": {"b\"": [1, {"c": "x\"}]", "d": 2}], "e": true}}"#;
        let at = |needle: &str| json_path_at(t, t.find(needle).expect(needle) + needle.len());
        assert_eq!(at(r#""c""#), r#"a.b\"[1].c"#);
        assert_eq!(at(r#""d": 2"#), r#"a.b\"[1].d"#);
        assert_eq!(at(r#"2}"#), r#"a.b\"[1]"#);
        assert_eq!(at(r#"[1"#), r#"a.b\"[0]"#);
        assert_eq!(at(r#""e": true"#), "a.e");
        assert_eq!(json_path_at(t, t.len()), "");
        assert_eq!(json_path_at(t, usize::MAX), "");
        assert_eq!(json_path_at("{\"open", 3), "open");
    }
}

//! How the aarch64 signature word before `abort_ip` is laid out.
//!
//! The kernel reads `abort_ip - 4` as data. librseq and the selftests emit
//! `RSEQ_SIG` = `0xd428bc00`, which is also the encoding of `brk #0x45e0`,
//! so falling into it traps.

/// The encoding of `brk #0x45e0`.
pub const BRK_45E0: u32 = 0xd428_bc00;

/// The form of an aarch64 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureForm {
    /// The word is the instruction `brk #0x45e0`.
    Brk,
    /// Any other word: plain data.
    Data,
}

impl SignatureForm {
    /// Classify the signature word.
    pub fn classify(word: u32) -> Self {
        if word == BRK_45E0 {
            SignatureForm::Brk
        } else {
            SignatureForm::Data
        }
    }

    /// Short name used in reports (`brk`, `data`).
    pub fn name(self) -> &'static str {
        match self {
            SignatureForm::Brk => "brk #0x45e0",
            SignatureForm::Data => "data",
        }
    }
}

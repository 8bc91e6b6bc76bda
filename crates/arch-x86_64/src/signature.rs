//! How the signature word before `abort_ip` is laid out in the code.
//!
//! The signature is data: the kernel reads the 4 bytes at `abort_ip - 4`.
//! Toolchains hide it in an instruction so that falling through into it is
//! harmless or traps. We classify it from the bytes before it — never by
//! decoding backwards from `abort_ip`.

/// The form of an x86_64 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureForm {
    /// `0f b9 3d <sig>`: the displacement of `ud1 sig(%rip), %edi` (librseq,
    /// glibc, kernel selftests): traps if execution falls into it.
    Ud1,
    /// `0f 1f 05 <sig>`: the displacement of `nopl sig(%rip)` (older librseq):
    /// harmless if executed.
    Nopl,
    /// Plain data, normally placed after an unconditional jump.
    Data,
}

impl SignatureForm {
    /// Classify from the 3 bytes before the signature word (`abort_ip - 7 ..
    /// abort_ip - 4`), if they are available.
    pub fn classify(prefix: Option<[u8; 3]>) -> Self {
        match prefix {
            Some([0x0f, 0xb9, 0x3d]) => SignatureForm::Ud1,
            Some([0x0f, 0x1f, 0x05]) => SignatureForm::Nopl,
            _ => SignatureForm::Data,
        }
    }

    /// Short name used in reports (`ud1`, `nopl`, `data`).
    pub fn name(self) -> &'static str {
        match self {
            SignatureForm::Ud1 => "ud1",
            SignatureForm::Nopl => "nopl",
            SignatureForm::Data => "data",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_forms() {
        assert_eq!(
            SignatureForm::classify(Some([0x0f, 0xb9, 0x3d])),
            SignatureForm::Ud1
        );
        assert_eq!(
            SignatureForm::classify(Some([0x0f, 0x1f, 0x05])),
            SignatureForm::Nopl
        );
        assert_eq!(
            SignatureForm::classify(Some([0xeb, 0x04, 0x90])),
            SignatureForm::Data
        );
        assert_eq!(SignatureForm::classify(None), SignatureForm::Data);
    }
}

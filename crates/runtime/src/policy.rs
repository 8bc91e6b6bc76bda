//! When the engine emulates instead of letting the sequence retry natively.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// How the engine answers an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Emulate once a descriptor aborted `threshold` times in a row.
    Auto,
    /// Emulate on every abort (testing).
    Always,
    /// Never emulate: always native retry.
    Never,
}

impl Mode {
    /// Parse `auto`, `always` or `never` (case-insensitive).
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Mode::Auto),
            "always" => Some(Mode::Always),
            "never" => Some(Mode::Never),
            _ => None,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Mode::Auto => 0,
            Mode::Always => 1,
            Mode::Never => 2,
        }
    }
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Always,
            2 => Mode::Never,
            _ => Mode::Auto,
        }
    }
}

/// Default number of consecutive aborts before `auto` emulates: 256,
/// chosen from `examples/threshold` (docs/runtime.md, "Threshold"):
/// emulating costs 60x (a short compare-and-store) to about 1000x (a 64 KiB
/// byte copy) one native attempt, so emulating early loses wherever native
/// retries still progress, while in a real livelock 256 futile attempts
/// cost less than one emulation.
pub const DEFAULT_THRESHOLD: u32 = 256;

static MODE: AtomicU8 = AtomicU8::new(0);
static THRESHOLD: AtomicU32 = AtomicU32::new(DEFAULT_THRESHOLD);

/// Set the process-wide mode.
pub fn set_mode(m: Mode) {
    MODE.store(m.to_u8(), Ordering::Relaxed);
}

/// The process-wide mode.
pub fn mode() -> Mode {
    Mode::from_u8(MODE.load(Ordering::Relaxed))
}

/// Set the abort threshold of `auto` (0 is treated as 1).
pub fn set_threshold(n: u32) {
    THRESHOLD.store(n.max(1), Ordering::Relaxed);
}

/// The abort threshold of `auto`.
pub fn threshold() -> u32 {
    THRESHOLD.load(Ordering::Relaxed)
}

/// Error for a bad environment setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError(pub String);

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for EnvError {}

/// Apply `RSEQ_EMU_MODE` and `RSEQ_EMU_THRESHOLD` given their values (unset
/// = `None`). A bad value changes nothing and is reported.
pub fn apply_env(mode_var: Option<&str>, threshold_var: Option<&str>) -> Result<(), EnvError> {
    let m = match mode_var {
        Some(s) => Some(Mode::parse(s).ok_or_else(|| {
            EnvError(format!(
                "RSEQ_EMU_MODE={s:?}: expected auto, always or never"
            ))
        })?),
        None => None,
    };
    let t = match threshold_var {
        Some(s) => Some(s.trim().parse::<u32>().map_err(|_| {
            EnvError(format!(
                "RSEQ_EMU_THRESHOLD={s:?}: expected a positive integer"
            ))
        })?),
        None => None,
    };
    if let Some(m) = m {
        set_mode(m);
    }
    if let Some(t) = t {
        set_threshold(t);
    }
    Ok(())
}

/// Apply the process environment (see [`apply_env`]).
pub fn init_from_env() -> Result<(), EnvError> {
    let m = std::env::var("RSEQ_EMU_MODE").ok();
    let t = std::env::var("RSEQ_EMU_THRESHOLD").ok();
    apply_env(m.as_deref(), t.as_deref())
}

/// Per-descriptor consecutive-abort counter: `on_abort` says whether to
/// emulate now, `on_success` resets it.
#[derive(Debug, Default)]
pub struct AbortCounter(AtomicU32);

impl AbortCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        AbortCounter(AtomicU32::new(0))
    }
    /// Count one abort; true when the current mode says emulate.
    pub fn on_abort(&self) -> bool {
        match mode() {
            Mode::Never => false,
            Mode::Always => true,
            Mode::Auto => self.0.fetch_add(1, Ordering::Relaxed) + 1 >= threshold(),
        }
    }
    /// The sequence completed (natively or by the engine): reset.
    pub fn on_success(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
    /// Current count.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_env() {
        assert_eq!(Mode::parse(" Always "), Some(Mode::Always));
        assert_eq!(Mode::parse("sometimes"), None);
        assert!(apply_env(Some("bogus"), None).is_err());
        assert!(apply_env(None, Some("x")).is_err());
        apply_env(Some("auto"), Some("3")).unwrap();
        assert_eq!(threshold(), 3);
        let c = AbortCounter::new();
        assert!(!c.on_abort());
        assert!(!c.on_abort());
        assert!(c.on_abort());
        c.on_success();
        assert_eq!(c.get(), 0);
        set_mode(Mode::Never);
        assert!(!c.on_abort());
        set_mode(Mode::Always);
        assert!(c.on_abort());
        set_mode(Mode::Auto);
        set_threshold(DEFAULT_THRESHOLD);
    }
}

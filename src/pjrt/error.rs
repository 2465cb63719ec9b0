//! The one error type of the PJRT layer: every `PJRT_Error*` a plugin returns becomes a
//! `PjrtError` carrying the plugin's own message, so nothing panics across the FFI boundary.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PjrtError {
    /// A plugin call failed; `message` is the plugin's text (parse errors carry line:column).
    #[error("{function} failed ({code}): {message}")]
    Plugin {
        function: &'static str,
        code: &'static str,
        message: String,
    },
    /// The plugin is older than the function we need.
    #[error(
        "the PJRT plugin {path} (API {major}.{minor}) does not provide {function}; install a newer plugin"
    )]
    MissingFunction {
        path: PathBuf,
        major: i32,
        minor: i32,
        function: &'static str,
    },
    #[error("cannot load PJRT plugin {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// A caller mistake caught before reaching the plugin (wrong argument count, bad dtype...).
    #[error("{0}")]
    Usage(String),
}

impl PjrtError {
    /// True when the device ran out of memory, so callers can suggest a smaller batch.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            PjrtError::Plugin { code, message, .. } => {
                *code == "RESOURCE_EXHAUSTED" || message.contains("Out of memory")
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, PjrtError>;

/// The status-code names of `PJRT_Error_Code`, as absl spells them.
pub(crate) fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

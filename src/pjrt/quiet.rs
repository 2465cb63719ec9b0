//! Keeping a plugin's log lines off the user's terminal: libtpu writes warnings to stderr
//! (fd 2) when it is not on a TPU VM. While a [`QuietStderr`] lives, fd 2 goes to /dev/null;
//! dropping it puts the terminal back.

use std::os::raw::{c_char, c_int};

extern "C" {
    fn dup(fd: c_int) -> c_int;
    fn dup2(from: c_int, to: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
}

const O_WRONLY: c_int = 1;
const STDERR: c_int = 2;

/// fd 2 sent to /dev/null until dropped (a no-op when that cannot be arranged).
pub struct QuietStderr {
    saved: Option<c_int>,
}

impl QuietStderr {
    /// Silences fd 2 when `quiet`, else leaves it alone.
    pub fn new(quiet: bool) -> QuietStderr {
        if !quiet {
            return QuietStderr { saved: None };
        }
        // SAFETY: plain POSIX descriptor calls on descriptors this function owns.
        let saved = unsafe {
            let null = open(c"/dev/null".as_ptr(), O_WRONLY);
            if null < 0 {
                return QuietStderr { saved: None };
            }
            let saved = dup(STDERR);
            if saved < 0 || dup2(null, STDERR) < 0 {
                close(null);
                if saved >= 0 {
                    close(saved);
                }
                return QuietStderr { saved: None };
            }
            close(null);
            saved
        };
        QuietStderr { saved: Some(saved) }
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            // SAFETY: restoring the descriptor saved in `new`, then closing our copy.
            unsafe {
                dup2(saved, STDERR);
                close(saved);
            }
        }
    }
}

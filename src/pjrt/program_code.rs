//! A StableHLO text program as the C API's `PJRT_Program` takes it (format "mlir"), for
//! `PJRT_Client_Compile` and `PJRT_Compile` alike.

use super::ffi;
use super::plugin::Args;

const FORMAT: &str = "mlir";

/// The program's bytes; the `PJRT_Program` made from them points into them, so they must
/// outlive the compile call.
pub struct ProgramCode {
    code: Vec<u8>,
}

impl ProgramCode {
    pub fn new(text: &str) -> ProgramCode {
        ProgramCode {
            code: text.as_bytes().to_vec(),
        }
    }

    pub fn program(&mut self) -> ffi::PJRT_Program {
        let mut prog = ffi::PJRT_Program::new();
        prog.code = self.code.as_mut_ptr() as *mut std::os::raw::c_char;
        prog.code_size = self.code.len();
        prog.format = FORMAT.as_ptr() as *const std::os::raw::c_char;
        prog.format_size = FORMAT.len();
        prog
    }
}

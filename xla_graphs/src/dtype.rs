//! Element types shared by the tracer, the printer and the PJRT host runtime.

use std::fmt;

/// The element types ti-xla traces, prints and moves to and from devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Pred,
    U8,
    U32,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl DType {
    pub const ALL: [DType; 9] = [
        DType::Pred,
        DType::U8,
        DType::U32,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    /// Bytes per element in a dense host buffer (pred is one byte).
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Pred | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// The element type as StableHLO spells it inside `tensor<...>`.
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::Pred => "i1",
            DType::U8 => "ui8",
            DType::U32 => "ui32",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::I32 | DType::I64)
    }

    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U32)
    }

    /// The name used in safetensors headers and on the command line.
    pub fn short_name(self) -> &'static str {
        match self {
            DType::Pred => "bool",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_mlir_bit_widths() {
        for dt in DType::ALL {
            let bits: usize = match dt
                .mlir_name()
                .trim_start_matches(|c: char| c.is_alphabetic())
            {
                "" => unreachable!(),
                n => n.parse().unwrap(),
            };
            let expected = if dt == DType::Pred { 1 } else { bits / 8 };
            assert_eq!(dt.size_in_bytes(), expected, "{dt}");
        }
    }
}

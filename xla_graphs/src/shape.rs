//! Static tensor types: an element type and dimension sizes, printed as `tensor<2x3xf32>`.

use crate::DType;
use std::fmt;

/// The static type of a traced value: element type plus dimension sizes (rank 0 is a scalar).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl Shape {
    pub fn new(dtype: DType, dims: &[i64]) -> Shape {
        Shape {
            dtype,
            dims: dims.to_vec(),
        }
    }

    pub fn scalar(dtype: DType) -> Shape {
        Shape {
            dtype,
            dims: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    pub fn with_dtype(&self, dtype: DType) -> Shape {
        Shape {
            dtype,
            dims: self.dims.clone(),
        }
    }

    pub fn with_dims(&self, dims: Vec<i64>) -> Shape {
        Shape {
            dtype: self.dtype,
            dims,
        }
    }

    /// Writes `tensor<2x3xf32>`; shared by the printer's hot loop and `Display`.
    pub(crate) fn write_mlir(&self, out: &mut impl fmt::Write) -> fmt::Result {
        out.write_str("tensor<")?;
        for d in &self.dims {
            write!(out, "{d}x")?;
        }
        out.write_str(self.dtype.mlir_name())?;
        out.write_char('>')
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_mlir(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_mlir() {
        assert_eq!(
            Shape::new(DType::F32, &[2, 3]).to_string(),
            "tensor<2x3xf32>"
        );
        assert_eq!(Shape::scalar(DType::U32).to_string(), "tensor<ui32>");
        assert_eq!(Shape::new(DType::Pred, &[0]).to_string(), "tensor<0xi1>");
    }
}

//! Constant data baked into a program, printed exactly: floats as their bit patterns in hex.

use crate::DType;
use half::{bf16, f16};
use std::fmt::{self, Write};

/// Typed element storage of a literal; one variant per `DType`.
#[derive(Clone, Debug, PartialEq)]
pub enum LiteralData {
    Pred(Vec<bool>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Rust element types that map one-to-one onto a `DType`.
pub trait NativeType: Copy {
    const DTYPE: DType;
    fn into_data(values: Vec<Self>) -> LiteralData;
}

macro_rules! native {
    ($t:ty, $variant:ident) => {
        impl NativeType for $t {
            const DTYPE: DType = DType::$variant;
            fn into_data(values: Vec<Self>) -> LiteralData {
                LiteralData::$variant(values)
            }
        }
    };
}
native!(bool, Pred);
native!(u8, U8);
native!(u32, U32);
native!(i32, I32);
native!(i64, I64);
native!(f16, F16);
native!(bf16, BF16);
native!(f32, F32);
native!(f64, F64);

impl LiteralData {
    pub fn dtype(&self) -> DType {
        match self {
            LiteralData::Pred(_) => DType::Pred,
            LiteralData::U8(_) => DType::U8,
            LiteralData::U32(_) => DType::U32,
            LiteralData::I32(_) => DType::I32,
            LiteralData::I64(_) => DType::I64,
            LiteralData::F16(_) => DType::F16,
            LiteralData::BF16(_) => DType::BF16,
            LiteralData::F32(_) => DType::F32,
            LiteralData::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            LiteralData::Pred(v) => v.len(),
            LiteralData::U8(v) => v.len(),
            LiteralData::U32(v) => v.len(),
            LiteralData::I32(v) => v.len(),
            LiteralData::I64(v) => v.len(),
            LiteralData::F16(v) => v.len(),
            LiteralData::BF16(v) => v.len(),
            LiteralData::F32(v) => v.len(),
            LiteralData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts f64 values to `dtype` the way a cast would (floats round to nearest, integers
    /// truncate toward zero and saturate, pred is `x != 0`).
    pub fn from_f64(dtype: DType, values: &[f64]) -> LiteralData {
        let it = values.iter().copied();
        match dtype {
            DType::Pred => LiteralData::Pred(it.map(|x| x != 0.0).collect()),
            DType::U8 => LiteralData::U8(it.map(|x| x as u8).collect()),
            DType::U32 => LiteralData::U32(it.map(|x| x as u32).collect()),
            DType::I32 => LiteralData::I32(it.map(|x| x as i32).collect()),
            DType::I64 => LiteralData::I64(it.map(|x| x as i64).collect()),
            DType::F16 => LiteralData::F16(it.map(f16::from_f64).collect()),
            DType::BF16 => LiteralData::BF16(it.map(bf16::from_f64).collect()),
            DType::F32 => LiteralData::F32(it.map(|x| x as f32).collect()),
            DType::F64 => LiteralData::F64(it.collect()),
        }
    }

    /// Writes element `i` as MLIR accepts it inside `dense<...>`: floats as exact hex bit
    /// patterns (no decimal round trip can lose a bit), integers in decimal.
    fn write_element(&self, i: usize, out: &mut impl Write) -> fmt::Result {
        match self {
            LiteralData::Pred(v) => out.write_str(if v[i] { "true" } else { "false" }),
            LiteralData::U8(v) => write!(out, "{}", v[i]),
            LiteralData::U32(v) => write!(out, "{}", v[i]),
            LiteralData::I32(v) => write!(out, "{}", v[i]),
            LiteralData::I64(v) => write!(out, "{}", v[i]),
            LiteralData::F16(v) => write!(out, "0x{:04X}", v[i].to_bits()),
            LiteralData::BF16(v) => write!(out, "0x{:04X}", v[i].to_bits()),
            LiteralData::F32(v) => write!(out, "0x{:08X}", v[i].to_bits()),
            LiteralData::F64(v) => write!(out, "0x{:016X}", v[i].to_bits()),
        }
    }
}

/// A constant: dimension sizes plus either one element per position or a single splat element.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    dims: Vec<i64>,
    data: LiteralData,
}

impl Literal {
    /// A literal with one value per element (row-major); `None` when the counts disagree.
    pub fn new(dims: &[i64], data: LiteralData) -> Option<Literal> {
        let n: i64 = dims.iter().product();
        if dims.iter().any(|&d| d < 0) || n as usize != data.len() {
            return None;
        }
        Some(Literal {
            dims: dims.to_vec(),
            data,
        })
    }

    pub fn from_vec<T: NativeType>(dims: &[i64], values: Vec<T>) -> Option<Literal> {
        Literal::new(dims, T::into_data(values))
    }

    /// Every element equal to `value`, stored once however large the shape.
    pub fn splat(dtype: DType, dims: &[i64], value: f64) -> Literal {
        Literal {
            dims: dims.to_vec(),
            data: LiteralData::from_f64(dtype, &[value]),
        }
    }

    /// Like `splat`, for values an f64 cannot carry exactly (large i64, bit patterns).
    pub fn splat_native<T: NativeType>(dims: &[i64], value: T) -> Literal {
        Literal {
            dims: dims.to_vec(),
            data: T::into_data(vec![value]),
        }
    }

    pub fn scalar<T: NativeType>(value: T) -> Literal {
        Literal::splat_native(&[], value)
    }

    /// A splat with the same element and new dimensions (`self` must hold one element).
    pub(crate) fn with_dims(&self, dims: &[i64]) -> Literal {
        Literal {
            dims: dims.to_vec(),
            data: self.data.clone(),
        }
    }

    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &LiteralData {
        &self.data
    }

    fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    /// Writes the `dense<...>` attribute body (without the type).
    pub(crate) fn write_dense(&self, out: &mut impl Write) -> fmt::Result {
        out.write_str("dense<")?;
        if self.data.len() == 1 && (self.numel() != 0) {
            self.data.write_element(0, out)?;
        } else if self.numel() == 0 {
            // Empty tensors take an empty nested list.
            out.write_str("[]")?;
        } else {
            let mut next = 0usize;
            self.write_nested(0, &mut next, out)?;
        }
        out.write_char('>')
    }

    fn write_nested(&self, axis: usize, next: &mut usize, out: &mut impl Write) -> fmt::Result {
        out.write_char('[')?;
        for j in 0..self.dims[axis] {
            if j > 0 {
                out.write_str(", ")?;
            }
            if axis + 1 == self.dims.len() {
                self.data.write_element(*next, out)?;
                *next += 1;
            } else {
                self.write_nested(axis + 1, next, out)?;
            }
        }
        out.write_char(']')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(l: &Literal) -> String {
        let mut s = String::new();
        l.write_dense(&mut s).unwrap();
        s
    }

    #[test]
    fn floats_print_as_bit_patterns() {
        assert_eq!(dense(&Literal::scalar(1.0f32)), "dense<0x3F800000>");
        assert_eq!(
            dense(&Literal::splat(DType::BF16, &[4], 1.0)),
            "dense<0x3F80>"
        );
        assert_eq!(
            dense(&Literal::splat(DType::F16, &[2], -2.0)),
            "dense<0xC000>"
        );
        assert_eq!(dense(&Literal::scalar(0.1f64)), "dense<0x3FB999999999999A>");
    }

    #[test]
    fn arrays_nest_by_dimension() {
        let l = Literal::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap();
        assert_eq!(dense(&l), "dense<[[1, 2], [3, 4]]>");
        let p = Literal::from_vec(&[2], vec![true, false]).unwrap();
        assert_eq!(dense(&p), "dense<[true, false]>");
        let u = Literal::from_vec(&[1], vec![u32::MAX]).unwrap();
        assert_eq!(dense(&u), "dense<4294967295>");
        assert!(Literal::from_vec(&[3], vec![1u8, 2]).is_none());
    }
}

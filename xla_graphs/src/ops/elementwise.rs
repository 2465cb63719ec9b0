//! Elementwise ops: unary math, binary arithmetic and bitwise ops, compare, select, clamp,
//! convert and bitcast_convert. Binary ops need equal types; broadcast explicitly first.

use crate::op::{BinaryOp, CompareType, ComparisonDirection, Op, UnaryOp};
use crate::{DType, Result, Shape, Tensor};

pub(crate) fn infer_unary(op: UnaryOp, x: &Shape) -> Result<Shape, String> {
    let ok = match op {
        UnaryOp::Exponential
        | UnaryOp::Log
        | UnaryOp::Tanh
        | UnaryOp::Logistic
        | UnaryOp::Sqrt
        | UnaryOp::Rsqrt
        | UnaryOp::Erf
        | UnaryOp::Sine
        | UnaryOp::Cosine
        | UnaryOp::Floor => x.dtype.is_float(),
        UnaryOp::Negate | UnaryOp::Abs | UnaryOp::Sign => {
            x.dtype.is_float() || matches!(x.dtype, DType::I32 | DType::I64)
        }
        UnaryOp::Not => x.dtype.is_integer() || x.dtype == DType::Pred,
    };
    if ok {
        Ok(x.clone())
    } else {
        Err(format!("element type {} is not supported", x.dtype))
    }
}

pub(crate) fn infer_binary(op: BinaryOp, a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a != b {
        return Err("operands must have equal shapes and element types (broadcast first)".into());
    }
    let dt = a.dtype;
    let ok = match op {
        BinaryOp::Add
        | BinaryOp::Subtract
        | BinaryOp::Multiply
        | BinaryOp::Divide
        | BinaryOp::Remainder
        | BinaryOp::Maximum
        | BinaryOp::Minimum
        | BinaryOp::Power => dt.is_float() || dt.is_integer(),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => dt.is_integer() || dt == DType::Pred,
        BinaryOp::ShiftLeft | BinaryOp::ShiftRightLogical | BinaryOp::ShiftRightArithmetic => {
            dt.is_integer()
        }
    };
    if ok {
        Ok(a.clone())
    } else {
        Err(format!("element type {dt} is not supported"))
    }
}

pub(crate) fn infer_compare(ty: CompareType, a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a != b {
        return Err("operands must have equal shapes and element types".into());
    }
    let ok = match ty {
        CompareType::Float | CompareType::TotalOrder => a.dtype.is_float(),
        CompareType::Signed => matches!(a.dtype, DType::I32 | DType::I64),
        CompareType::Unsigned => a.dtype.is_unsigned() || a.dtype == DType::Pred,
    };
    if ok {
        Ok(a.with_dtype(DType::Pred))
    } else {
        Err(format!(
            "compare type {} does not fit {}",
            ty.mlir_name(),
            a.dtype
        ))
    }
}

pub(crate) fn infer_select(p: &Shape, t: &Shape, f: &Shape) -> Result<Shape, String> {
    if p.dtype != DType::Pred {
        return Err("the predicate must be i1".into());
    }
    if t != f {
        return Err("on_true and on_false must have equal types".into());
    }
    if p.rank() != 0 && p.dims != t.dims {
        return Err("the predicate must be a scalar or match the branches' shape".into());
    }
    Ok(t.clone())
}

pub(crate) fn infer_clamp(min: &Shape, x: &Shape, max: &Shape) -> Result<Shape, String> {
    for bound in [min, max] {
        if bound.dtype != x.dtype || (bound.rank() != 0 && bound.dims != x.dims) {
            return Err(
                "min and max must be scalars or match the operand, same element type".into(),
            );
        }
    }
    Ok(x.clone())
}

fn bit_width(dt: DType) -> usize {
    dt.size_in_bytes() * 8
}

pub(crate) fn infer_bitcast(x: &Shape, to: DType) -> Result<Shape, String> {
    if x.dtype == DType::Pred || to == DType::Pred {
        return Err("i1 has no bit layout to reinterpret".into());
    }
    let (from_bits, to_bits) = (bit_width(x.dtype), bit_width(to));
    let mut dims = x.dims.clone();
    if from_bits > to_bits {
        dims.push((from_bits / to_bits) as i64);
    } else if from_bits < to_bits {
        let ratio = (to_bits / from_bits) as i64;
        if dims.last() != Some(&ratio) {
            return Err(format!(
                "widening to {to} needs a last dimension of {ratio}"
            ));
        }
        dims.pop();
    }
    Ok(Shape { dtype: to, dims })
}

macro_rules! unary_methods {
    ($($name:ident => $op:ident),* $(,)?) => {
        impl Tensor {
            $(pub fn $name(&self) -> Result<Tensor> {
                self.unary(UnaryOp::$op)
            })*
        }
    };
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident),* $(,)?) => {
        impl Tensor {
            $(pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                self.binary(BinaryOp::$op, rhs)
            })*
        }
    };
}

unary_methods!(
    negate => Negate, exponential => Exponential, log => Log, tanh => Tanh,
    logistic => Logistic, sqrt => Sqrt, rsqrt => Rsqrt, erf => Erf, sine => Sine,
    cosine => Cosine, abs => Abs, sign => Sign, floor => Floor, not => Not,
);

binary_methods!(
    add => Add, subtract => Subtract, multiply => Multiply, divide => Divide,
    remainder => Remainder, maximum => Maximum, minimum => Minimum, power => Power,
    and => And, or => Or, xor => Xor, shift_left => ShiftLeft,
    shift_right_logical => ShiftRightLogical, shift_right_arithmetic => ShiftRightArithmetic,
);

impl Tensor {
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        self.graph.build1(Op::Unary(op), &[self])
    }

    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        self.graph.build1(Op::Binary(op), &[self, rhs])
    }

    /// Compares with the comparison type StableHLO infers from the element type.
    pub fn compare(&self, rhs: &Tensor, direction: ComparisonDirection) -> Result<Tensor> {
        self.compare_with(rhs, direction, CompareType::for_dtype(self.dtype()))
    }

    pub fn compare_with(
        &self,
        rhs: &Tensor,
        direction: ComparisonDirection,
        compare_type: CompareType,
    ) -> Result<Tensor> {
        let op = Op::Compare {
            direction,
            compare_type,
        };
        self.graph.build1(op, &[self, rhs])
    }

    /// `self ? on_true : on_false`, elementwise; `self` is an i1 scalar or matches the branches.
    pub fn select(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        self.graph.build1(Op::Select, &[self, on_true, on_false])
    }

    /// `min(max(self, min), max)`; bounds are scalars or match `self`.
    pub fn clamp(&self, min: &Tensor, max: &Tensor) -> Result<Tensor> {
        self.graph.build1(Op::Clamp, &[min, self, max])
    }

    /// The same value, but gradients do not flow through it.
    pub fn stop_gradient(&self) -> Result<Tensor> {
        self.graph.build1(Op::StopGradient, &[self])
    }

    pub fn convert(&self, dtype: DType) -> Result<Tensor> {
        self.graph.build1(Op::Convert(dtype), &[self])
    }

    /// Reinterprets the bits; a narrower target adds a trailing dimension, a wider one eats it.
    pub fn bitcast_convert(&self, dtype: DType) -> Result<Tensor> {
        self.graph.build1(Op::BitcastConvert(dtype), &[self])
    }

    /// A constant with every element `value`, shaped and typed like `self`.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        let s = self.shape();
        self.graph.splat(value, s.dtype, &s.dims)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        self.full_like(0.0)
    }

    pub fn add_scalar(&self, value: f64) -> Result<Tensor> {
        self.add(&self.full_like(value)?)
    }

    pub fn mul_scalar(&self, value: f64) -> Result<Tensor> {
        self.multiply(&self.full_like(value)?)
    }

    pub fn square(&self) -> Result<Tensor> {
        self.multiply(self)
    }
}

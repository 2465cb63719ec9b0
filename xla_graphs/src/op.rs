//! The op enum: every operation a graph can hold, with its attributes, named as in StableHLO.

use crate::ops::convolution::Convolution;
use crate::ops::dot_general::DotGeneral;
use crate::ops::gather::Gather;
use crate::ops::scatter::Scatter;
use crate::{DType, Literal, Shape};

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Negate,
    Exponential,
    Log,
    Tanh,
    Logistic,
    Sqrt,
    Rsqrt,
    Erf,
    Sine,
    Cosine,
    Abs,
    Sign,
    Floor,
    Not,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Negate => "stablehlo.negate",
            UnaryOp::Exponential => "stablehlo.exponential",
            UnaryOp::Log => "stablehlo.log",
            UnaryOp::Tanh => "stablehlo.tanh",
            UnaryOp::Logistic => "stablehlo.logistic",
            UnaryOp::Sqrt => "stablehlo.sqrt",
            UnaryOp::Rsqrt => "stablehlo.rsqrt",
            // erf is not a StableHLO op; CHLO's is accepted by every plugin and lowered by XLA.
            UnaryOp::Erf => "chlo.erf",
            UnaryOp::Sine => "stablehlo.sine",
            UnaryOp::Cosine => "stablehlo.cosine",
            UnaryOp::Abs => "stablehlo.abs",
            UnaryOp::Sign => "stablehlo.sign",
            UnaryOp::Floor => "stablehlo.floor",
            UnaryOp::Not => "stablehlo.not",
        }
    }
}

/// Elementwise ops of two operands of equal type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Maximum,
    Minimum,
    Power,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
    ShiftRightArithmetic,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "stablehlo.add",
            BinaryOp::Subtract => "stablehlo.subtract",
            BinaryOp::Multiply => "stablehlo.multiply",
            BinaryOp::Divide => "stablehlo.divide",
            BinaryOp::Remainder => "stablehlo.remainder",
            BinaryOp::Maximum => "stablehlo.maximum",
            BinaryOp::Minimum => "stablehlo.minimum",
            BinaryOp::Power => "stablehlo.power",
            BinaryOp::And => "stablehlo.and",
            BinaryOp::Or => "stablehlo.or",
            BinaryOp::Xor => "stablehlo.xor",
            BinaryOp::ShiftLeft => "stablehlo.shift_left",
            BinaryOp::ShiftRightLogical => "stablehlo.shift_right_logical",
            BinaryOp::ShiftRightArithmetic => "stablehlo.shift_right_arithmetic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComparisonDirection {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

impl ComparisonDirection {
    pub fn mlir_name(self) -> &'static str {
        match self {
            ComparisonDirection::Eq => "EQ",
            ComparisonDirection::Ne => "NE",
            ComparisonDirection::Ge => "GE",
            ComparisonDirection::Gt => "GT",
            ComparisonDirection::Le => "LE",
            ComparisonDirection::Lt => "LT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareType {
    Float,
    TotalOrder,
    Signed,
    Unsigned,
}

impl CompareType {
    /// The comparison StableHLO would pick for the element type.
    pub fn for_dtype(dtype: DType) -> CompareType {
        if dtype.is_float() {
            CompareType::Float
        } else if matches!(dtype, DType::I32 | DType::I64) {
            CompareType::Signed
        } else {
            CompareType::Unsigned
        }
    }

    pub fn mlir_name(self) -> &'static str {
        match self {
            CompareType::Float => "FLOAT",
            CompareType::TotalOrder => "TOTALORDER",
            CompareType::Signed => "SIGNED",
            CompareType::Unsigned => "UNSIGNED",
        }
    }
}

/// The reduction a `reduce` or `all_reduce` region computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

impl ReduceKind {
    /// The binary op inside the printed region.
    pub fn combiner(self) -> BinaryOp {
        match self {
            ReduceKind::Sum => BinaryOp::Add,
            ReduceKind::Max => BinaryOp::Maximum,
            ReduceKind::Min => BinaryOp::Minimum,
        }
    }
}

/// Precision hint for dot_general and convolution (matters on TPU and for TF32 on GPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    Default,
    High,
    Highest,
}

impl Precision {
    pub fn mlir_name(self) -> &'static str {
        match self {
            Precision::Default => "DEFAULT",
            Precision::High => "HIGH",
            Precision::Highest => "HIGHEST",
        }
    }
}

/// One traced operation. Attributes live here; operands live in the node.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Parameter {
        index: usize,
        shape: Shape,
    },
    Constant(Literal),
    Iota {
        dimension: usize,
        shape: Shape,
    },
    ReplicaId,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare {
        direction: ComparisonDirection,
        compare_type: CompareType,
    },
    /// Operands: pred, on_true, on_false.
    Select,
    /// Operands: min, operand, max.
    Clamp,
    Convert(DType),
    BitcastConvert(DType),
    Reshape(Vec<i64>),
    Transpose(Vec<usize>),
    BroadcastInDim {
        dims: Vec<i64>,
        broadcast_dimensions: Vec<usize>,
    },
    Reverse(Vec<usize>),
    Slice {
        start: Vec<i64>,
        limit: Vec<i64>,
        strides: Vec<i64>,
    },
    /// Operands: operand, then one scalar start index per dimension.
    DynamicSlice {
        sizes: Vec<i64>,
    },
    /// Operands: operand, update, then one scalar start index per dimension.
    DynamicUpdateSlice,
    Concatenate {
        dimension: usize,
    },
    /// Operands: operand, padding value (scalar).
    Pad {
        low: Vec<i64>,
        high: Vec<i64>,
        interior: Vec<i64>,
    },
    Reduce {
        kind: ReduceKind,
        dimensions: Vec<usize>,
    },
    DotGeneral(DotGeneral),
    Convolution(Convolution),
    Gather(Gather),
    /// Operands: operand, scatter indices, updates; the region adds.
    Scatter(Scatter),
    /// Sums over the replicas of each group.
    AllReduce {
        replica_groups: Vec<Vec<i64>>,
    },
    OptimizationBarrier,
    /// Identity for the printer (no line of its own), a constant for autodiff.
    StopGradient,
}

impl Op {
    /// The StableHLO (or CHLO) op name, used by the printer and in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Parameter { .. } => "parameter",
            Op::Constant(_) => "stablehlo.constant",
            Op::Iota { .. } => "stablehlo.iota",
            Op::ReplicaId => "stablehlo.replica_id",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare { .. } => "stablehlo.compare",
            Op::Select => "stablehlo.select",
            Op::Clamp => "stablehlo.clamp",
            Op::Convert(_) => "stablehlo.convert",
            Op::BitcastConvert(_) => "stablehlo.bitcast_convert",
            Op::Reshape(_) => "stablehlo.reshape",
            Op::Transpose(_) => "stablehlo.transpose",
            Op::BroadcastInDim { .. } => "stablehlo.broadcast_in_dim",
            Op::Reverse(_) => "stablehlo.reverse",
            Op::Slice { .. } => "stablehlo.slice",
            Op::DynamicSlice { .. } => "stablehlo.dynamic_slice",
            Op::DynamicUpdateSlice => "stablehlo.dynamic_update_slice",
            Op::Concatenate { .. } => "stablehlo.concatenate",
            Op::Pad { .. } => "stablehlo.pad",
            Op::Reduce { .. } => "stablehlo.reduce",
            Op::DotGeneral(_) => "stablehlo.dot_general",
            Op::Convolution(_) => "stablehlo.convolution",
            Op::Gather(_) => "stablehlo.gather",
            Op::Scatter(_) => "stablehlo.scatter",
            Op::AllReduce { .. } => "stablehlo.all_reduce",
            Op::OptimizationBarrier => "stablehlo.optimization_barrier",
            Op::StopGradient => "stop_gradient",
        }
    }
}

//! Result types of every op from its operand types and attributes: the single place where
//! shapes are checked, used both when tracing and when autodiff emits backward ops.

use crate::op::Op;
use crate::ops::{
    collective, constant, convolution, dot_general, elementwise, gather, layout, reduce, scatter,
    slicing,
};
use crate::{DType, Shape};

fn arity(s: &[&Shape], n: usize) -> Result<(), String> {
    if s.len() == n {
        Ok(())
    } else {
        Err(format!("takes {n} operands, got {}", s.len()))
    }
}

fn at_least(s: &[&Shape], n: usize) -> Result<(), String> {
    if s.len() >= n {
        Ok(())
    } else {
        Err(format!("takes at least {n} operands, got {}", s.len()))
    }
}

pub(crate) fn infer(op: &Op, s: &[&Shape]) -> Result<Vec<Shape>, String> {
    let one = match op {
        Op::Parameter { shape, .. } => {
            arity(s, 0)?;
            if shape.dims.iter().any(|&d| d < 0) {
                return Err(format!("negative dimension in {shape}"));
            }
            shape.clone()
        }
        Op::Constant(l) => {
            arity(s, 0)?;
            Shape::new(l.dtype(), l.dims())
        }
        Op::Iota { dimension, shape } => {
            arity(s, 0)?;
            constant::infer_iota(*dimension, shape)?
        }
        Op::ReplicaId => {
            arity(s, 0)?;
            Shape::scalar(DType::U32)
        }
        Op::Unary(u) => {
            arity(s, 1)?;
            elementwise::infer_unary(*u, s[0])?
        }
        Op::Binary(b) => {
            arity(s, 2)?;
            elementwise::infer_binary(*b, s[0], s[1])?
        }
        Op::Compare { compare_type, .. } => {
            arity(s, 2)?;
            elementwise::infer_compare(*compare_type, s[0], s[1])?
        }
        Op::Select => {
            arity(s, 3)?;
            elementwise::infer_select(s[0], s[1], s[2])?
        }
        Op::Clamp => {
            arity(s, 3)?;
            elementwise::infer_clamp(s[0], s[1], s[2])?
        }
        Op::Convert(to) => {
            arity(s, 1)?;
            s[0].with_dtype(*to)
        }
        Op::BitcastConvert(to) => {
            arity(s, 1)?;
            elementwise::infer_bitcast(s[0], *to)?
        }
        Op::Reshape(dims) => {
            arity(s, 1)?;
            layout::infer_reshape(s[0], dims)?
        }
        Op::Transpose(perm) => {
            arity(s, 1)?;
            layout::infer_transpose(s[0], perm)?
        }
        Op::BroadcastInDim {
            dims,
            broadcast_dimensions,
        } => {
            arity(s, 1)?;
            layout::infer_broadcast(s[0], dims, broadcast_dimensions)?
        }
        Op::Reverse(dims) => {
            arity(s, 1)?;
            layout::check_axes(dims, s[0].rank(), "reverse dimension")?;
            s[0].clone()
        }
        Op::Slice {
            start,
            limit,
            strides,
        } => {
            arity(s, 1)?;
            slicing::infer_slice(s[0], start, limit, strides)?
        }
        Op::DynamicSlice { sizes } => {
            at_least(s, 1)?;
            slicing::infer_dynamic_slice(s, sizes)?
        }
        Op::DynamicUpdateSlice => {
            at_least(s, 2)?;
            slicing::infer_dynamic_update_slice(s)?
        }
        Op::Concatenate { dimension } => {
            at_least(s, 1)?;
            slicing::infer_concatenate(s, *dimension)?
        }
        Op::Pad {
            low,
            high,
            interior,
        } => {
            arity(s, 2)?;
            slicing::infer_pad(s[0], s[1], low, high, interior)?
        }
        Op::Reduce { kind, dimensions } => {
            arity(s, 1)?;
            reduce::infer_reduce(*kind, s[0], dimensions)?
        }
        Op::DotGeneral(attrs) => {
            arity(s, 2)?;
            dot_general::infer_dot_general(s[0], s[1], attrs)?
        }
        Op::Convolution(attrs) => {
            arity(s, 2)?;
            convolution::infer_convolution(s[0], s[1], attrs)?
        }
        Op::Gather(attrs) => {
            arity(s, 2)?;
            gather::infer_gather(s[0], s[1], attrs)?
        }
        Op::Scatter(attrs) => {
            arity(s, 3)?;
            scatter::infer_scatter(s[0], s[1], s[2], attrs)?
        }
        Op::AllReduce { replica_groups } => {
            arity(s, 1)?;
            collective::infer_all_reduce(s[0], replica_groups)?
        }
        Op::StopGradient => {
            arity(s, 1)?;
            s[0].clone()
        }
        Op::OptimizationBarrier => {
            at_least(s, 1)?;
            return Ok(s.iter().map(|&x| x.clone()).collect());
        }
    };
    Ok(vec![one])
}

//! One vector-Jacobian rule per op, in a single `match` with no wildcard arm: a new op
//! variant does not compile until it says how its cotangents flow. Rules return one entry per
//! operand; `None` is a zero cotangent (integer, boolean and piecewise-constant paths).

use crate::op::{BinaryOp, ComparisonDirection, Op, ReduceKind, UnaryOp};
use crate::ops::{convolution_grad, dot_general_grad, gather_grad};
use crate::{Graph, Result, Tensor};

type Cts = Vec<Option<Tensor>>;

fn select_or_zero(mask: &Tensor, ct: &Tensor, keep_when: bool) -> Result<Tensor> {
    let zero = ct.zeros_like()?;
    if keep_when {
        mask.select(ct, &zero)
    } else {
        mask.select(&zero, ct)
    }
}

/// Sums a cotangent of the operand's full shape down to a scalar bound (clamp allows those).
fn to_bound(ct: Tensor, bound: &Tensor) -> Result<Tensor> {
    if bound.rank() == 0 && ct.rank() != 0 {
        ct.sum_all()
    } else {
        Ok(ct)
    }
}

/// JAX's choice at ties of maximum/minimum: each side gets half.
fn minmax(ct: &Tensor, a: &Tensor, b: &Tensor, dir: ComparisonDirection) -> Result<Cts> {
    let wins = a.compare(b, dir)?.convert(ct.dtype())?;
    let ties = a.compare(b, ComparisonDirection::Eq)?.convert(ct.dtype())?;
    let share_a = wins.add(&ties.mul_scalar(0.5)?)?;
    let share_b = share_a.full_like(1.0)?.subtract(&share_a)?;
    Ok(vec![
        Some(ct.multiply(&share_a)?),
        Some(ct.multiply(&share_b)?),
    ])
}

fn unary(u: UnaryOp, ct: &Tensor, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
    let d = match u {
        UnaryOp::Negate => ct.negate()?,
        UnaryOp::Exponential => ct.multiply(y)?,
        UnaryOp::Log => ct.divide(x)?,
        UnaryOp::Tanh => ct.multiply(&y.full_like(1.0)?.subtract(&y.square()?)?)?,
        UnaryOp::Logistic => ct.multiply(&y.multiply(&y.full_like(1.0)?.subtract(y)?)?)?,
        UnaryOp::Sqrt => ct.divide(&y.mul_scalar(2.0)?)?,
        // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 * y^3.
        UnaryOp::Rsqrt => ct.multiply(&y.multiply(&y.square()?)?.mul_scalar(-0.5)?)?,
        UnaryOp::Erf => {
            let slope = x
                .square()?
                .negate()?
                .exponential()?
                .mul_scalar(std::f64::consts::FRAC_2_SQRT_PI)?;
            ct.multiply(&slope)?
        }
        UnaryOp::Sine => ct.multiply(&x.cosine()?)?,
        UnaryOp::Cosine => ct.multiply(&x.sine()?)?.negate()?,
        UnaryOp::Abs => ct.multiply(&x.sign()?)?,
        UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Not => return Ok(None),
    };
    Ok(Some(d))
}

/// Builds a cotangent only for an operand that needs one: a weight's side of a product is
/// never traced.
fn when(need: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if need {
        f().map(Some)
    } else {
        Ok(None)
    }
}

fn binary(b: BinaryOp, ct: &Tensor, x: &[Tensor], y: &Tensor, needs: &[bool]) -> Result<Cts> {
    let (l, r) = (&x[0], &x[1]);
    let (nl, nr) = (needs[0], needs[1]);
    Ok(match b {
        BinaryOp::Add => vec![Some(ct.clone()), Some(ct.clone())],
        BinaryOp::Subtract => vec![Some(ct.clone()), when(nr, || ct.negate())?],
        BinaryOp::Multiply => vec![when(nl, || ct.multiply(r))?, when(nr, || ct.multiply(l))?],
        BinaryOp::Divide => vec![
            when(nl, || ct.divide(r))?,
            when(nr, || ct.multiply(y)?.divide(r)?.negate())?,
        ],
        BinaryOp::Remainder => {
            // l = trunc(l / r) * r + rem, so d rem / d r = -trunc(l / r).
            let dr = when(nr, || {
                let q = l.divide(r)?;
                let trunc = q.abs()?.floor()?.multiply(&q.sign()?)?;
                ct.multiply(&trunc)?.negate()
            })?;
            vec![Some(ct.clone()), dr]
        }
        BinaryOp::Maximum => minmax(ct, l, r, ComparisonDirection::Gt)?,
        BinaryOp::Minimum => minmax(ct, l, r, ComparisonDirection::Lt)?,
        BinaryOp::Power => {
            // Zero exponents and zero bases get the limits JAX uses instead of 0 * inf.
            let dl = when(nl, || {
                let zero = r.zeros_like()?;
                let r_is_zero = r.compare(&zero, ComparisonDirection::Eq)?;
                let slope = r.multiply(&l.power(&r.add_scalar(-1.0)?)?)?;
                ct.multiply(&r_is_zero.select(&zero, &slope)?)
            })?;
            let dr = when(nr, || {
                let l_is_zero = l.compare(&l.zeros_like()?, ComparisonDirection::Eq)?;
                let safe_l = l_is_zero.select(&l.full_like(1.0)?, l)?;
                ct.multiply(&safe_l.log()?.multiply(y)?)
            })?;
            vec![dl, dr]
        }
        BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor
        | BinaryOp::ShiftLeft
        | BinaryOp::ShiftRightLogical
        | BinaryOp::ShiftRightArithmetic => vec![None, None],
    })
}

/// Cotangents of `op`'s operands `x` given its results `y` and their cotangents `cts`.
/// `needs[i]` is false for operands that do not depend on a differentiated input; rules with
/// expensive branches (dot_general, convolution) skip those.
pub(super) fn vjp(
    g: &Graph,
    op: &Op,
    x: &[Tensor],
    y: &[Tensor],
    cts: &[Option<Tensor>],
    needs: &[bool],
) -> Result<Cts> {
    // Every op but optimization_barrier has one result, and the walk only calls rules whose
    // results have a cotangent.
    let ct = match cts.iter().flatten().next() {
        Some(ct) => ct.clone(),
        None => return Ok(vec![None; x.len()]),
    };
    let y0 = &y[0];
    Ok(match op {
        Op::Parameter { .. } | Op::Constant(_) | Op::Iota { .. } | Op::ReplicaId => Vec::new(),
        Op::Unary(u) => vec![unary(*u, &ct, &x[0], y0)?],
        Op::Binary(b) => binary(*b, &ct, x, y0, needs)?,
        Op::Compare { .. } => vec![None, None],
        Op::Select => vec![
            None,
            Some(select_or_zero(&x[0], &ct, true)?),
            Some(select_or_zero(&x[0], &ct, false)?),
        ],
        Op::Clamp => {
            let (lo, v, hi) = (&x[0], &x[1], &x[2]);
            let dims = v.dims();
            let (lo_b, hi_b) = (lo.broadcast_to(&dims)?, hi.broadcast_to(&dims)?);
            let below = lo_b.compare(v, ComparisonDirection::Gt)?;
            let above = hi_b.compare(v, ComparisonDirection::Lt)?;
            let inside = v
                .compare(&lo_b, ComparisonDirection::Gt)?
                .and(&v.compare(&hi_b, ComparisonDirection::Lt)?)?;
            vec![
                Some(to_bound(select_or_zero(&below, &ct, true)?, lo)?),
                Some(select_or_zero(&inside, &ct, true)?),
                Some(to_bound(select_or_zero(&above, &ct, true)?, hi)?),
            ]
        }
        Op::Convert(_) => {
            let from = x[0].dtype();
            vec![if from.is_float() {
                Some(ct.convert(from)?)
            } else {
                None
            }]
        }
        Op::BitcastConvert(_) => vec![None],
        Op::Reshape(_) => vec![Some(ct.reshape(&x[0].dims())?)],
        Op::Transpose(perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(ct.transpose(&inverse)?)]
        }
        Op::BroadcastInDim {
            dims,
            broadcast_dimensions,
        } => {
            let xd = x[0].dims();
            let summed: Vec<usize> = (0..dims.len())
                .filter(|d| match broadcast_dimensions.iter().position(|b| b == d) {
                    None => true,
                    Some(i) => xd[i] != dims[*d],
                })
                .collect();
            let reduced = if summed.is_empty() {
                ct
            } else {
                ct.reduce_sum(&summed)?
            };
            // The kept dimensions come out in result order; the operand wants them in its own.
            let kept: Vec<usize> = (0..dims.len()).filter(|d| !summed.contains(d)).collect();
            let perm: Vec<usize> = broadcast_dimensions
                .iter()
                .filter(|b| !summed.contains(b))
                .filter_map(|b| kept.iter().position(|k| k == b))
                .collect();
            let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
            let reordered = if identity {
                reduced
            } else {
                reduced.transpose(&perm)?
            };
            vec![Some(reordered.reshape(&xd)?)]
        }
        Op::Reverse(dims) => vec![Some(ct.reverse(dims)?)],
        Op::Slice {
            start,
            limit: _,
            strides,
        } => {
            let xd = x[0].dims();
            let od = ct.dims();
            let high: Vec<i64> = (0..xd.len())
                .map(|i| xd[i] - start[i] - (od[i] - 1).max(0) * strides[i] - od[i].min(1))
                .collect();
            let interior: Vec<i64> = strides.iter().map(|s| s - 1).collect();
            let zero = g.scalar(0.0, ct.dtype())?;
            vec![Some(ct.pad(&zero, start, &high, &interior)?)]
        }
        Op::DynamicSlice { .. } => {
            let mut r = vec![Some(x[0].zeros_like()?.dynamic_update_slice(&ct, &x[1..])?)];
            r.resize(x.len(), None);
            r
        }
        Op::DynamicUpdateSlice => {
            let starts = &x[2..];
            let operand = needs[0]
                .then(|| ct.dynamic_update_slice(&x[1].zeros_like()?, starts))
                .transpose()?;
            let update = needs[1]
                .then(|| ct.dynamic_slice(starts, &x[1].dims()))
                .transpose()?;
            let mut r = vec![operand, update];
            r.resize(x.len(), None);
            r
        }
        Op::Concatenate { dimension } => {
            let mut at = 0;
            let mut r = Vec::with_capacity(x.len());
            for (xi, need) in x.iter().zip(needs) {
                let len = xi.dims()[*dimension];
                r.push(if *need {
                    Some(ct.slice_axis(*dimension, at, at + len)?)
                } else {
                    None
                });
                at += len;
            }
            r
        }
        Op::Pad {
            low,
            high,
            interior,
        } => {
            let zero = g.scalar(0.0, ct.dtype())?;
            let neg = |v: &[i64]| v.iter().map(|p| -p).collect::<Vec<i64>>();
            let unpadded = ct.pad(&zero, &neg(low), &neg(high), &vec![0; low.len()])?;
            let strides: Vec<i64> = interior.iter().map(|i| i + 1).collect();
            let operand = unpadded.slice(&vec![0; low.len()], &unpadded.dims(), &strides)?;
            let value = if needs[1] {
                Some(ct.sum_all()?.subtract(&operand.sum_all()?)?)
            } else {
                None
            };
            vec![Some(operand), value]
        }
        Op::Reduce { kind, dimensions } => {
            let xd = x[0].dims();
            let kept: Vec<usize> = (0..xd.len()).filter(|d| !dimensions.contains(d)).collect();
            match kind {
                ReduceKind::Sum => vec![Some(ct.broadcast_in_dim(&xd, &kept)?)],
                ReduceKind::Max | ReduceKind::Min => {
                    // Ties share the cotangent equally, as in JAX.
                    let hit =
                        x[0].compare(&y0.broadcast_in_dim(&xd, &kept)?, ComparisonDirection::Eq)?;
                    let mask = hit.convert(ct.dtype())?;
                    let count = mask.reduce_sum(dimensions)?;
                    let share = ct.divide(&count)?.broadcast_in_dim(&xd, &kept)?;
                    vec![Some(share.multiply(&mask)?)]
                }
            }
        }
        Op::DotGeneral(attrs) => {
            dot_general_grad::dot_general_vjp(&ct, &x[0], &x[1], attrs, [needs[0], needs[1]])?
                .into()
        }
        Op::Convolution(attrs) => {
            convolution_grad::convolution_vjp(&ct, &x[0], &x[1], attrs, [needs[0], needs[1]])?
                .into()
        }
        Op::Gather(attrs) => vec![
            Some(gather_grad::gather_vjp(&ct, &x[0], &x[1], attrs)?),
            None,
        ],
        Op::Scatter(attrs) => {
            let updates = needs[2]
                .then(|| gather_grad::scatter_updates_vjp(&ct, &x[1], &x[2], attrs))
                .transpose()?;
            vec![Some(ct), None, updates]
        }
        Op::AllReduce { replica_groups } => vec![Some(ct.all_reduce_sum(replica_groups)?)],
        Op::OptimizationBarrier => cts.to_vec(),
        Op::StopGradient => vec![None],
    })
}

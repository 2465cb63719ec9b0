//! Backward of dot_general, written as dot_general + transpose (the transpose rules of JAX's
//! `lax.dot_general`), so a matmul's gradient is a matmul and never broadcast + reduce.

use crate::ops::dot_general::{free_dims, DotDimensionNumbers, DotGeneral};
use crate::{Result, Shape, Tensor};

fn argsort(v: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by_key(|&i| v[i]);
    idx
}

/// Brings the cotangent to the other operand's element type, so the backward product runs in
/// the forward's precision (bf16 x bf16 accumulating in f32 stays that way).
fn match_dtype(g: &Tensor, other: &Tensor) -> Result<Tensor> {
    if g.dtype() == other.dtype() {
        Ok(g.clone())
    } else {
        g.convert(other.dtype())
    }
}

/// Cotangent of the lhs `x` of `dot_general(x, y)` from the result's cotangent `g`.
/// `swap_ans` is set when the roles of x and y were swapped to get the rhs cotangent.
fn lhs_grad(
    g: &Tensor,
    x: &Shape,
    y: &Tensor,
    dims: &DotDimensionNumbers,
    attrs: &DotGeneral,
    swap_ans: bool,
) -> Result<Tensor> {
    let (x_batch, y_batch) = (&dims.lhs_batching_dimensions, &dims.rhs_batching_dimensions);
    let (x_contract, y_contract) = (
        &dims.lhs_contracting_dimensions,
        &dims.rhs_contracting_dimensions,
    );
    let x_kept = free_dims(x.rank(), x_batch, x_contract);
    let y_kept = free_dims(y.rank(), y_batch, y_contract);
    // The forward result holds batch, then lhs free, then rhs free dimensions.
    let nb = x_batch.len();
    let ans_batch: Vec<usize> = (0..nb).collect();
    let ans_y: Vec<usize> = if swap_ans {
        (nb..nb + y_kept.len()).collect()
    } else {
        (nb + x_kept.len()..nb + x_kept.len() + y_kept.len()).collect()
    };
    let bwd = DotDimensionNumbers {
        lhs_batching_dimensions: ans_batch,
        rhs_batching_dimensions: y_batch.clone(),
        lhs_contracting_dimensions: ans_y,
        rhs_contracting_dimensions: y_kept,
    };
    let x_contract_by_y: Vec<usize> = argsort(y_contract)
        .into_iter()
        .map(|i| x_contract[i])
        .collect();
    let order: Vec<usize> = [&x_batch[..], &x_kept[..], &x_contract_by_y[..]].concat();
    let product = match_dtype(g, y)?.dot_general_with(
        y,
        DotGeneral {
            dims: bwd,
            precision: attrs.precision,
            result_dtype: attrs.result_dtype,
        },
    )?;
    let out = product.transpose(&argsort(&order))?;
    if out.dtype() == x.dtype {
        Ok(out)
    } else {
        out.convert(x.dtype)
    }
}

/// Cotangents of `(lhs, rhs)` of a dot_general, built only where `needs` says so.
pub(crate) fn dot_general_vjp(
    g: &Tensor,
    lhs: &Tensor,
    rhs: &Tensor,
    attrs: &DotGeneral,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    let d = &attrs.dims;
    let dl = if needs[0] {
        Some(lhs_grad(g, &lhs.shape(), rhs, d, attrs, false)?)
    } else {
        None
    };
    let dr = if needs[1] {
        let swapped = DotDimensionNumbers {
            lhs_batching_dimensions: d.rhs_batching_dimensions.clone(),
            rhs_batching_dimensions: d.lhs_batching_dimensions.clone(),
            lhs_contracting_dimensions: d.rhs_contracting_dimensions.clone(),
            rhs_contracting_dimensions: d.lhs_contracting_dimensions.clone(),
        };
        Some(lhs_grad(g, &rhs.shape(), lhs, &swapped, attrs, true)?)
    } else {
        None
    };
    Ok([dl, dr])
}

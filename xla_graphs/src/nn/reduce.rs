//! mean and variance over chosen dimensions (population variance, as torch's norms use).

use crate::{Result, Tensor};

/// Broadcasts a tensor reduced over `reduced` back to `dims`.
pub fn expand_reduced(r: &Tensor, dims: &[i64], reduced: &[usize]) -> Result<Tensor> {
    let kept: Vec<usize> = (0..dims.len()).filter(|d| !reduced.contains(d)).collect();
    r.broadcast_in_dim(dims, &kept)
}

fn count(x: &Tensor, dims: &[usize]) -> f64 {
    let d = x.dims();
    dims.iter().filter_map(|&i| d.get(i)).product::<i64>() as f64
}

pub fn mean(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let n = count(x, dims);
    x.reduce_sum(dims)?.mul_scalar(1.0 / n)
}

/// `mean((x - mean(x))^2)` over `dims`: two passes, no catastrophic cancellation.
pub fn variance(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let m = expand_reduced(&mean(x, dims)?, &x.dims(), dims)?;
    mean(&x.subtract(&m)?.square()?, dims)
}

//! layer_norm and group_norm as torch defines them (biased variance, eps inside the sqrt).

use crate::nn::reduce::{expand_reduced, mean, variance};
use crate::{Result, Tensor};

fn normalize(x: &Tensor, dims: &[usize], eps: f64) -> Result<Tensor> {
    let shape = x.dims();
    let m = expand_reduced(&mean(x, dims)?, &shape, dims)?;
    let v = expand_reduced(&variance(x, dims)?, &shape, dims)?;
    x.subtract(&m)?.multiply(&v.add_scalar(eps)?.rsqrt()?)
}

/// Multiplies by `weight` and adds `bias`, both 1-D along `axis`.
fn affine(
    x: &Tensor,
    axis: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let dims = x.dims();
    let mut y = x.clone();
    if let Some(w) = weight {
        y = y.multiply(&w.broadcast_in_dim(&dims, &[axis])?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.broadcast_in_dim(&dims, &[axis])?)?;
    }
    Ok(y)
}

/// Normalizes over the last dimension; `weight` and `bias` have that dimension's size.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let last = match x.rank() {
        0 => {
            return Err(x
                .graph()
                .op_error("layer_norm", &[x], "needs rank >= 1".into()))
        }
        r => r - 1,
    };
    affine(&normalize(x, &[last], eps)?, last, weight, bias)
}

/// `x` is `[N, C, spatial..]`; statistics per sample over each of `num_groups` channel groups;
/// `weight` and `bias` are `[C]`.
pub fn group_norm(
    x: &Tensor,
    num_groups: i64,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 || num_groups < 1 || dims[1] % num_groups != 0 {
        return Err(x.graph().op_error(
            "group_norm",
            &[x],
            format!("needs [N, C, ..] with C divisible by {num_groups} groups"),
        ));
    }
    let per_group = dims[1..].iter().product::<i64>() / num_groups;
    let grouped = x.reshape(&[dims[0], num_groups, per_group])?;
    let y = normalize(&grouped, &[2], eps)?.reshape(&dims)?;
    affine(&y, 1, weight, bias)
}

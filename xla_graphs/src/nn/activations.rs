//! Activations: silu, gelu (erf and tanh forms), quick_gelu, softmax (and its two factors).

use crate::nn::reduce::expand_reduced;
use crate::{Result, Tensor};

/// `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.multiply(&x.logistic()?)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, torch's default `gelu`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let inner = x
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?
        .erf()?
        .add_scalar(1.0)?;
    x.multiply(&inner)?.mul_scalar(0.5)
}

/// torch's `gelu(approximate="tanh")`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let cube = x.multiply(&x.square()?)?;
    let inner = x
        .add(&cube.mul_scalar(0.044715)?)?
        .mul_scalar(c)?
        .tanh()?
        .add_scalar(1.0)?;
    x.multiply(&inner)?.mul_scalar(0.5)
}

/// CLIP's `x * sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.multiply(&x.mul_scalar(1.702)?.logistic()?)
}

/// Softmax along `axis`, with the row maximum subtracted first so exp cannot overflow.
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let (e, sum) = softmax_terms(x, axis)?;
    e.divide(&expand_reduced(&sum, &x.dims(), &[axis])?)
}

/// Softmax's numerator `exp(x - max)` and its sum along `axis` (reduced away), for callers
/// that divide somewhere cheaper than on `x`'s shape. The maximum is a constant for autodiff:
/// it cancels out of the quotient.
pub fn softmax_terms(x: &Tensor, axis: usize) -> Result<(Tensor, Tensor)> {
    let dims = x.dims();
    let m = x.reduce_max(&[axis])?.stop_gradient()?;
    let e = x
        .subtract(&expand_reduced(&m, &dims, &[axis])?)?
        .exponential()?;
    let sum = e.reduce_sum(&[axis])?;
    Ok((e, sum))
}

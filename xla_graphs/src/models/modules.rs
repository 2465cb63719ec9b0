//! torch modules bound to their checkpoint keys (`<name>.weight`, `<name>.bias`): the pieces
//! every model repeats. Normalisation statistics are computed in at least f32, because bf16's
//! 8-bit mantissa loses the variance of a 768-wide row.

use crate::models::params::{Params, WeightLayout};
use crate::ops::convolution::input_gradient_with_reversed_kernel;
use crate::{nn, ConvDimensionNumbers, Convolution, DType, GraphError, Result, Tensor};

/// The dtype that norm and softmax statistics use under compute dtype `dtype`: f32 for the
/// half-width floats, `dtype` itself otherwise (f64 stays f64, which the gradient tests rely
/// on).
pub fn statistics_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// `nn.Linear(in_features, out_features, bias)` at `<prefix>.<name>`, over the last dimension.
pub fn linear(
    p: &Params,
    name: &str,
    x: &Tensor,
    in_features: i64,
    out_features: i64,
    bias: bool,
) -> Result<Tensor> {
    p.scope(name, |p| {
        let w = p.get("weight", &[out_features, in_features])?;
        let b = bias.then(|| p.get("bias", &[out_features])).transpose()?;
        nn::linear(x, &w, b.as_ref())
    })
}

/// `nn.LayerNorm(x.dims[-1], eps)` with affine weight and bias at `<prefix>.<name>`; the result
/// has `x`'s dtype.
pub fn layer_norm(p: &Params, name: &str, x: &Tensor, eps: f64) -> Result<Tensor> {
    let features = x.dims().last().copied().unwrap_or(1);
    p.scope(name, |p| {
        let w = p.get("weight", &[features])?;
        let b = p.get("bias", &[features])?;
        let dtype = x.dtype();
        let wide = statistics_dtype(dtype);
        if wide == dtype {
            return nn::layer_norm(x, Some(&w), Some(&b), eps);
        }
        let widen = |t: &Tensor| t.convert(wide);
        nn::layer_norm(&widen(x)?, Some(&widen(&w)?), Some(&widen(&b)?), eps)?.convert(dtype)
    })
}

/// `nn.GroupNorm(num_groups, x.dims[1], eps)` with affine weight and bias at
/// `<prefix>.<name>`, for `[N, C, ..]`; the result has `x`'s dtype.
pub fn group_norm(p: &Params, name: &str, x: &Tensor, num_groups: i64, eps: f64) -> Result<Tensor> {
    let channels = x.dims().get(1).copied().unwrap_or(1);
    p.scope(name, |p| {
        let w = p.get("weight", &[channels])?;
        let b = p.get("bias", &[channels])?;
        let dtype = x.dtype();
        let wide = statistics_dtype(dtype);
        if wide == dtype {
            return nn::group_norm(x, num_groups, Some(&w), Some(&b), eps);
        }
        let widen = |t: &Tensor| t.convert(wide);
        nn::group_norm(
            &widen(x)?,
            num_groups,
            Some(&widen(&w)?),
            Some(&widen(&b)?),
            eps,
        )?
        .convert(dtype)
    })
}

/// `nn.Conv2d` settings, square kernels as diffusers uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel_size: i64,
    pub stride: i64,
    /// `(low, high)` zero padding for H and W; diffusers' VAE downsampler pads (0, 1) before
    /// an unpadded conv, which folds into one asymmetric padding here.
    pub padding: [(i64, i64); 2],
    pub bias: bool,
}

impl Conv2d {
    /// Stride 1, "same" padding (`kernel_size / 2`), with bias.
    pub fn new(in_channels: i64, out_channels: i64, kernel_size: i64) -> Conv2d {
        let half = kernel_size / 2;
        Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: [(half, half); 2],
            bias: true,
        }
    }
}

/// `nn.Conv2d` at `<prefix>.<name>` on NCHW `x`: weight `[O, I, k, k]` in the checkpoint,
/// bound transposed to `[k, k, I, O]` (uploaded that way, so XLA need not re-lay it out on
/// every run: on CPU that copy was 36% of a training step), bias `[O]`.
pub fn conv2d(p: &Params, name: &str, x: &Tensor, c: &Conv2d) -> Result<Tensor> {
    p.scope(name, |p| {
        let k = c.kernel_size;
        let dims = [c.out_channels, c.in_channels, k, k];
        let w = p.get_transposed("weight", &dims, &[2, 3, 1, 0])?;
        // [k, k, O, I], spatially reversed: what the input gradient convolves with.
        let reversed = p
            .reversed_kernels()
            .then(|| {
                let layout = WeightLayout {
                    permutation: vec![2, 3, 0, 1],
                    reversed: vec![0, 1],
                };
                p.get_laid_out("weight", &dims, layout)
            })
            .transpose()?;
        let b = c
            .bias
            .then(|| p.get("bias", &[c.out_channels]))
            .transpose()?;
        let attrs = Convolution {
            window_strides: vec![c.stride; 2],
            padding: c.padding.to_vec(),
            ..Convolution::new(ConvDimensionNumbers::nchw_hwio(2))
        };
        let y = x.convolution(&w, attrs.clone())?;
        if let Some(reversed) = reversed {
            let (input, kernel) = (x.shape(), w.shape());
            p.graph().set_custom_vjp(
                &y,
                0,
                &[&reversed],
                move |ct, residuals| match residuals {
                    [reversed] => {
                        input_gradient_with_reversed_kernel(ct, &input, &kernel, reversed, &attrs)
                    }
                    _ => Err(GraphError::invalid(
                        "conv2d",
                        "expected the reversed kernel",
                    )),
                },
            )?;
        }
        match b {
            Some(b) => y.add(&b.broadcast_in_dim(&y.dims(), &[1])?),
            None => Ok(y),
        }
    })
}

/// The activations `hidden_act` names in transformers' `ACT2FN` and `act_fn` in diffusers'
/// `get_activation`, as far as Stable Diffusion uses them (`gelu` is the erf form in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// The exact erf form (`gelu`; OpenCLIP, SD 2.x).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `x * sigmoid(x)` (`silu`, `swish`; diffusers' default `act_fn`).
    Silu,
    Relu,
}

impl Activation {
    /// `None` for a name transformers knows but ti-xla does not implement.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "silu" | "swish" => Some(Activation::Silu),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => nn::quick_gelu(x),
            Activation::Gelu => nn::gelu(x),
            Activation::GeluTanh => nn::gelu_tanh(x),
            Activation::Silu => nn::silu(x),
            Activation::Relu => x.maximum(&x.zeros_like()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, Shape};

    #[test]
    fn binds_weight_and_bias_under_the_module_name() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let x = g
            .parameter("x", Shape::new(DType::BF16, &[2, 3, 4]))
            .unwrap();
        let y = p
            .scope("mlp", |p| linear(p, "fc1", &x, 4, 5, true))
            .unwrap();
        let n = layer_norm(&p, "norm", &y, 1e-5).unwrap();
        assert_eq!(n.shape(), Shape::new(DType::BF16, &[2, 3, 5]));
        let names: Vec<String> = p.specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["mlp.fc1.weight", "mlp.fc1.bias", "norm.weight", "norm.bias"]
        );
        // The mean and variance reduce the widened input: statistics in f32.
        let reduced = g.reduce_operands();
        assert!(!reduced.is_empty(), "layer_norm traced no reduce");
        for shape in &reduced {
            assert_eq!(*shape, Shape::new(DType::F32, &[2, 3, 5]), "{reduced:?}");
        }
        assert_eq!(statistics_dtype(DType::F16), DType::F32);
        assert_eq!(statistics_dtype(DType::F64), DType::F64);
    }

    #[test]
    fn activation_names_follow_transformers() {
        assert_eq!(Activation::from_name("gelu"), Some(Activation::Gelu));
        assert_eq!(
            Activation::from_name("quick_gelu"),
            Some(Activation::QuickGelu)
        );
        assert_eq!(Activation::from_name("swish"), Some(Activation::Silu));
        assert_eq!(Activation::from_name("relu6"), None);
    }

    #[test]
    fn conv2d_and_group_norm_bind_torch_shapes() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let x = g
            .parameter("x", Shape::new(DType::BF16, &[2, 4, 9, 9]))
            .unwrap();
        let n = group_norm(&p, "norm", &x, 2, 1e-6).unwrap();
        let c = Conv2d {
            stride: 2,
            padding: [(0, 1), (0, 1)],
            ..Conv2d::new(4, 6, 3)
        };
        let y = conv2d(&p, "conv", &n, &c).unwrap();
        assert_eq!(y.shape(), Shape::new(DType::BF16, &[2, 6, 4, 4]));
        let specs = p.specs();
        assert_eq!(specs[2].name, "conv.weight");
        assert_eq!(specs[2].checkpoint_dims(), vec![6, 4, 3, 3]);
        assert_eq!(specs[2].shape.dims, vec![3, 3, 4, 6], "uploaded as HWIO");
        // The group statistics reduce [N, groups, C/groups * H * W] in f32.
        let reduced = g.reduce_operands();
        assert!(!reduced.is_empty(), "group_norm traced no reduce");
        for shape in &reduced {
            assert_eq!(*shape, Shape::new(DType::F32, &[2, 2, 162]), "{reduced:?}");
        }
    }

    /// Under `with_reversed_kernels` the kernel is bound a second time, `[k, k, O, I]` and
    /// reversed, and the input gradient convolves with it: one convolution in the backward,
    /// no `reverse`, no kernel gradient.
    #[test]
    fn conv2d_input_gradient_uses_the_reversed_kernel() {
        let c = Conv2d {
            stride: 2,
            ..Conv2d::new(4, 6, 3)
        };
        for reversed in [false, true] {
            let g = Graph::new();
            let p = Params::new(&g, DType::F32);
            let p = if reversed {
                p.with_reversed_kernels()
            } else {
                p
            };
            let x = g
                .parameter("x", Shape::new(DType::F32, &[2, 4, 9, 9]))
                .unwrap();
            let y = conv2d(&p, "conv", &x, &c).unwrap();
            let loss = y.square().unwrap().sum_all().unwrap();
            let (_, grads) = crate::value_and_grad(&loss, std::slice::from_ref(&x)).unwrap();
            let specs = p.specs();
            let weights: Vec<_> = specs.iter().filter(|s| s.name == "conv.weight").collect();
            assert_eq!(weights.len(), 1 + usize::from(reversed));
            if reversed {
                assert_eq!(weights[1].shape.dims, vec![3, 3, 6, 4]);
                let layout = weights[1].layout.as_ref().map(|l| l.reversed.clone());
                assert_eq!(layout, Some(vec![0, 1]));
            }
            let text = g.to_stablehlo(&[&grads[0]]).unwrap();
            assert_eq!(text.contains("stablehlo.reverse"), !reversed, "{reversed}");
            assert_eq!(
                text.matches("stablehlo.convolution").count(),
                2,
                "{reversed}"
            );
        }
    }
}

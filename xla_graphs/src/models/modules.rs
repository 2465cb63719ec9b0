//! torch modules bound to their checkpoint keys (`<name>.weight`, `<name>.bias`): the pieces
//! every model repeats. Normalisation statistics are computed in at least f32, because bf16's
//! 8-bit mantissa loses the variance of a 768-wide row.

use crate::models::params::Params;
use crate::{nn, DType, Result, Tensor};

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

/// The activations `hidden_act` names in transformers' `ACT2FN`, as far as CLIP uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// The exact erf form (`gelu`; OpenCLIP, SD 2.x).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// `None` for a name transformers knows but ti-xla does not implement.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => nn::quick_gelu(x),
            Activation::Gelu => nn::gelu(x),
            Activation::GeluTanh => nn::gelu_tanh(x),
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
        let text = g.to_stablehlo(&[&n]).unwrap();
        assert!(text.contains("tensor<2x3x5xf32>"), "statistics in f32");
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
        assert_eq!(Activation::from_name("relu6"), None);
    }
}

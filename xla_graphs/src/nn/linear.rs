//! linear (torch's `nn.Linear`: weight `[out, in]`) and conv2d (NCHW input, OIHW kernel).

use crate::{ConvDimensionNumbers, Convolution, DotDimensionNumbers, Result, Tensor};

/// `x @ weight^T + bias` over the last dimension of `x`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let last = x.rank().saturating_sub(1);
    let dims = DotDimensionNumbers {
        lhs_contracting_dimensions: vec![last],
        rhs_contracting_dimensions: vec![1],
        ..DotDimensionNumbers::default()
    };
    let y = x.dot_general(weight, dims)?;
    match bias {
        Some(b) => y.add(&b.broadcast_to(&y.dims())?),
        None => Ok(y),
    }
}

/// torch's `nn.Conv2d` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: [i64; 2],
    /// Symmetric zero padding per spatial dimension.
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// `x` is `[N, C, H, W]`, `weight` is `[O, C / groups, kH, kW]`, `bias` is `[O]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    o: Conv2dOptions,
) -> Result<Tensor> {
    let attrs = Convolution {
        window_strides: o.stride.to_vec(),
        padding: o.padding.iter().map(|&p| (p, p)).collect(),
        rhs_dilation: o.dilation.to_vec(),
        feature_group_count: o.groups,
        ..Convolution::new(ConvDimensionNumbers::nchw_oihw(2))
    };
    let y = x.convolution(weight, attrs)?;
    match bias {
        Some(b) => y.add(&b.broadcast_in_dim(&y.dims(), &[1])?),
        None => Ok(y),
    }
}

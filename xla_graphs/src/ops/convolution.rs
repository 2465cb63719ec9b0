//! convolution: any layout (dimension numbers), window strides, padding, lhs/rhs dilation,
//! feature and batch groups.

use crate::op::{Op, Precision};
use crate::ops::layout::check_axes;
use crate::{DType, Result, Shape, Tensor};

/// The backward lives in the crate-private `convolution_grad`; this rule is public for
/// `Graph::set_custom_vjp`.
pub use crate::ops::convolution_grad::input_gradient_with_reversed_kernel;

/// Which dimension of each operand and of the result plays which role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvDimensionNumbers {
    pub input_batch_dimension: usize,
    pub input_feature_dimension: usize,
    pub input_spatial_dimensions: Vec<usize>,
    pub kernel_input_feature_dimension: usize,
    pub kernel_output_feature_dimension: usize,
    pub kernel_spatial_dimensions: Vec<usize>,
    pub output_batch_dimension: usize,
    pub output_feature_dimension: usize,
    pub output_spatial_dimensions: Vec<usize>,
}

impl ConvDimensionNumbers {
    /// PyTorch's layout: input and output `[N, C, spatial..]`, kernel `[O, I, spatial..]`.
    pub fn nchw_oihw(spatial_rank: usize) -> ConvDimensionNumbers {
        let sp: Vec<usize> = (2..2 + spatial_rank).collect();
        ConvDimensionNumbers {
            input_batch_dimension: 0,
            input_feature_dimension: 1,
            input_spatial_dimensions: sp.clone(),
            kernel_input_feature_dimension: 1,
            kernel_output_feature_dimension: 0,
            kernel_spatial_dimensions: sp.clone(),
            output_batch_dimension: 0,
            output_feature_dimension: 1,
            output_spatial_dimensions: sp,
        }
    }

    /// PyTorch's activations `[N, C, spatial..]` with the kernel `[spatial.., I, O]`: the kernel
    /// layout XLA's CPU convolution works in, so a weight uploaded this way is used as it is
    /// (an OIHW kernel argument is re-laid out on every run).
    pub fn nchw_hwio(spatial_rank: usize) -> ConvDimensionNumbers {
        ConvDimensionNumbers {
            kernel_spatial_dimensions: (0..spatial_rank).collect(),
            kernel_input_feature_dimension: spatial_rank,
            kernel_output_feature_dimension: spatial_rank + 1,
            ..ConvDimensionNumbers::nchw_oihw(spatial_rank)
        }
    }

    /// TensorFlow's layout: `[N, spatial.., C]`, kernel `[spatial.., I, O]`.
    pub fn nhwc_hwio(spatial_rank: usize) -> ConvDimensionNumbers {
        let sp: Vec<usize> = (1..1 + spatial_rank).collect();
        ConvDimensionNumbers {
            input_batch_dimension: 0,
            input_feature_dimension: spatial_rank + 1,
            input_spatial_dimensions: sp.clone(),
            kernel_input_feature_dimension: spatial_rank,
            kernel_output_feature_dimension: spatial_rank + 1,
            kernel_spatial_dimensions: (0..spatial_rank).collect(),
            output_batch_dimension: 0,
            output_feature_dimension: spatial_rank + 1,
            output_spatial_dimensions: sp,
        }
    }

    pub fn spatial_rank(&self) -> usize {
        self.input_spatial_dimensions.len()
    }
}

/// convolution's attributes; `Convolution::new` gives stride 1, no padding, no dilation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Convolution {
    pub dims: ConvDimensionNumbers,
    pub window_strides: Vec<i64>,
    /// `(low, high)` per spatial dimension.
    pub padding: Vec<(i64, i64)>,
    pub lhs_dilation: Vec<i64>,
    pub rhs_dilation: Vec<i64>,
    pub feature_group_count: i64,
    pub batch_group_count: i64,
    pub precision: Precision,
    pub result_dtype: Option<DType>,
}

impl Convolution {
    pub fn new(dims: ConvDimensionNumbers) -> Convolution {
        let n = dims.spatial_rank();
        Convolution {
            dims,
            window_strides: vec![1; n],
            padding: vec![(0, 0); n],
            lhs_dilation: vec![1; n],
            rhs_dilation: vec![1; n],
            feature_group_count: 1,
            batch_group_count: 1,
            precision: Precision::Default,
            result_dtype: None,
        }
    }
}

fn dilate(size: i64, dilation: i64) -> i64 {
    if size == 0 {
        0
    } else {
        1 + dilation * (size - 1)
    }
}

pub(crate) fn infer_convolution(
    lhs: &Shape,
    rhs: &Shape,
    c: &Convolution,
) -> Result<Shape, String> {
    let d = &c.dims;
    let n = d.spatial_rank();
    let rank = n + 2;
    if lhs.rank() != rank || rhs.rank() != rank {
        return Err(format!(
            "operands must have rank {rank} for {n} spatial dimensions"
        ));
    }
    if lhs.dtype != rhs.dtype {
        return Err("operands must have the same element type".into());
    }
    let mut input = vec![d.input_batch_dimension, d.input_feature_dimension];
    input.extend(&d.input_spatial_dimensions);
    let mut kernel = vec![
        d.kernel_input_feature_dimension,
        d.kernel_output_feature_dimension,
    ];
    kernel.extend(&d.kernel_spatial_dimensions);
    let mut output = vec![d.output_batch_dimension, d.output_feature_dimension];
    output.extend(&d.output_spatial_dimensions);
    for (axes, what) in [(&input, "input"), (&kernel, "kernel"), (&output, "output")] {
        if axes.len() != rank {
            return Err(format!("{what} dimension numbers need {rank} entries"));
        }
        check_axes(axes, rank, &format!("{what} dimension"))?;
    }
    for (v, what) in [
        (&c.window_strides, "window_strides"),
        (&c.lhs_dilation, "lhs_dilation"),
        (&c.rhs_dilation, "rhs_dilation"),
    ] {
        if v.len() != n || v.iter().any(|&s| s < 1) {
            return Err(format!("{what} {v:?} needs {n} positive entries"));
        }
    }
    if c.padding.len() != n {
        return Err(format!("padding needs {n} (low, high) pairs"));
    }
    let (fg, bg) = (c.feature_group_count, c.batch_group_count);
    if fg < 1 || bg < 1 || (fg > 1 && bg > 1) {
        return Err(format!(
            "feature_group_count {fg} and batch_group_count {bg}: both >= 1, one of them 1"
        ));
    }
    let batch = lhs.dims[d.input_batch_dimension];
    let in_features = lhs.dims[d.input_feature_dimension];
    let k_in = rhs.dims[d.kernel_input_feature_dimension];
    let k_out = rhs.dims[d.kernel_output_feature_dimension];
    if in_features != k_in * fg {
        return Err(format!(
            "input features {in_features} must equal kernel input features {k_in} x feature_group_count {fg}"
        ));
    }
    if k_out % fg != 0 || k_out % bg != 0 || batch % bg != 0 {
        return Err(format!(
            "kernel output features {k_out} and batch {batch} must divide by the group counts"
        ));
    }
    let mut dims = vec![0i64; rank];
    dims[d.output_batch_dimension] = batch / bg;
    dims[d.output_feature_dimension] = k_out;
    for i in 0..n {
        let input = dilate(lhs.dims[d.input_spatial_dimensions[i]], c.lhs_dilation[i]);
        let padded = input + c.padding[i].0 + c.padding[i].1;
        let window = dilate(rhs.dims[d.kernel_spatial_dimensions[i]], c.rhs_dilation[i]);
        dims[d.output_spatial_dimensions[i]] = if padded <= 0 || window > padded {
            0
        } else {
            (padded - window) / c.window_strides[i] + 1
        };
    }
    let dtype = c.result_dtype.unwrap_or(lhs.dtype);
    if !dtype.is_float() || !lhs.dtype.is_float() {
        return Err(format!(
            "convolution of {} into {dtype} is not supported",
            lhs.dtype
        ));
    }
    Ok(Shape { dtype, dims })
}

impl Tensor {
    /// Convolves `self` (the input) with `kernel`.
    pub fn convolution(&self, kernel: &Tensor, attrs: Convolution) -> Result<Tensor> {
        self.graph.build1(Op::Convolution(attrs), &[self, kernel])
    }
}

//! Backward of convolution, written as convolutions (the transpose rules of JAX's
//! `lax.conv_general_dilated`): the input gradient convolves the cotangent with the reversed,
//! in/out-swapped kernel using `lhs_dilation` = forward strides; the kernel gradient convolves
//! the input with the cotangent, contracting over the batch. Feature and batch groups are
//! handled by moving the group axis between feature and batch dimensions.

use crate::ops::convolution::{ConvDimensionNumbers, Convolution};
use crate::{GraphError, Result, Shape, Tensor};

/// JAX's spec triple: (batch, feature, spatial..) for input and output, (out feature,
/// in feature, spatial..) for the kernel.
type Specs = (Vec<usize>, Vec<usize>, Vec<usize>);

fn specs(d: &ConvDimensionNumbers) -> Specs {
    let mut l = vec![d.input_batch_dimension, d.input_feature_dimension];
    l.extend(&d.input_spatial_dimensions);
    let mut r = vec![
        d.kernel_output_feature_dimension,
        d.kernel_input_feature_dimension,
    ];
    r.extend(&d.kernel_spatial_dimensions);
    let mut o = vec![d.output_batch_dimension, d.output_feature_dimension];
    o.extend(&d.output_spatial_dimensions);
    (l, r, o)
}

fn from_specs(l: &[usize], r: &[usize], o: &[usize]) -> ConvDimensionNumbers {
    ConvDimensionNumbers {
        input_batch_dimension: l[0],
        input_feature_dimension: l[1],
        input_spatial_dimensions: l[2..].to_vec(),
        kernel_output_feature_dimension: r[0],
        kernel_input_feature_dimension: r[1],
        kernel_spatial_dimensions: r[2..].to_vec(),
        output_batch_dimension: o[0],
        output_feature_dimension: o[1],
        output_spatial_dimensions: o[2..].to_vec(),
    }
}

fn swap_first_two(s: &[usize]) -> Vec<usize> {
    let mut t = s.to_vec();
    t.swap(0, 1);
    t
}

fn dilate(size: i64, dilation: i64) -> i64 {
    if size == 0 {
        0
    } else {
        1 + dilation * (size - 1)
    }
}

fn take(dims: &[i64], axes: &[usize]) -> Vec<i64> {
    axes.iter().map(|&a| dims[a]).collect()
}

/// Splits dimension `src` into `(size, dims[src] / size)`.
fn reshape_axis_out_of(src: usize, size: i64, x: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims();
    let whole = dims[src];
    dims.splice(src..=src, [size, whole / size]);
    x.reshape(&dims)
}

/// Merges dimension `src` into dimension `dst` (numbered after removing `src`), `src` major.
fn reshape_axis_into(src: usize, dst: usize, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let mut perm: Vec<usize> = (0..dims.len()).filter(|&i| i != src).collect();
    perm.insert(dst, src);
    let mut new_dims: Vec<i64> = dims
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != src)
        .map(|(_, &d)| d)
        .collect();
    new_dims[dst] *= dims[src];
    x.transpose(&perm)?.reshape(&new_dims)
}

fn to_dtype(x: Tensor, like: &Shape) -> Result<Tensor> {
    if x.dtype() == like.dtype {
        Ok(x)
    } else {
        x.convert(like.dtype)
    }
}

fn check_shape(x: &Tensor, want: &Shape, which: &str) -> Result<()> {
    if x.dims() == want.dims {
        Ok(())
    } else {
        Err(x.graph().op_error(
            "stablehlo.convolution",
            &[x],
            format!(
                "internal: the {which} gradient has dimensions {:?}, want {:?}",
                x.dims(),
                want.dims
            ),
        ))
    }
}

/// Cotangent of the convolution's input.
fn input_grad(g: &Tensor, lhs: &Shape, rhs: &Tensor, c: &Convolution) -> Result<Tensor> {
    let (l, r, o) = specs(&c.dims);
    let mut kernel = rhs.clone();
    let mut groups = c.feature_group_count;
    if c.feature_group_count > 1 || c.batch_group_count > 1 {
        let n = c.feature_group_count.max(c.batch_group_count);
        kernel = reshape_axis_out_of(r[0], n, &kernel)?;
        kernel = reshape_axis_into(r[0], r[1], &kernel)?;
        groups = n;
    }
    let kdims = kernel.dims();
    let gdims = g.dims();
    let n = c.dims.spatial_rank();
    let in_sp = take(&lhs.dims, &l[2..]);
    let k_sp = take(&kdims, &r[2..]);
    let out_sp = take(&gdims, &o[2..]);
    let padding: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            let lhs_d = dilate(in_sp[i], c.lhs_dilation[i]);
            let rhs_d = dilate(k_sp[i], c.rhs_dilation[i]);
            let out_d = dilate(out_sp[i], c.window_strides[i]);
            let before = rhs_d - c.padding[i].0 - 1;
            (before, lhs_d + rhs_d - 1 - out_d - before)
        })
        .collect();
    // The kernel reversed, with its feature roles exchanged: precomputed when the graph has it
    // (then its feature axes are exchanged in place and the forward roles apply), else built.
    let hint = (groups == 1)
        .then(|| rhs.graph.reversed_kernel(rhs))
        .flatten()
        .filter(|f| {
            let mut want = kdims.clone();
            want.swap(r[0], r[1]);
            f.dims() == want && f.dtype() == rhs.dtype()
        });
    let (reversed, kernel_roles) = match hint {
        Some(f) => (f, r.clone()),
        None => (kernel.reverse(&r[2..])?, swap_first_two(&r)),
    };
    let g = if g.dtype() == rhs.dtype() {
        g.clone()
    } else {
        g.convert(rhs.dtype())?
    };
    let attrs = Convolution {
        dims: from_specs(&o, &kernel_roles, &l),
        window_strides: c.lhs_dilation.clone(),
        padding,
        lhs_dilation: c.window_strides.clone(),
        rhs_dilation: c.rhs_dilation.clone(),
        feature_group_count: groups,
        batch_group_count: 1,
        precision: c.precision,
        result_dtype: c.result_dtype,
    };
    let mut out = g.convolution(&reversed, attrs)?;
    if c.batch_group_count > 1 {
        out = reshape_axis_out_of(l[1], c.batch_group_count, &out)?;
        out = reshape_axis_into(l[1], l[0], &out)?;
    }
    check_shape(&out, lhs, "input")?;
    to_dtype(out, lhs)
}

/// Cotangent of the convolution's kernel.
fn kernel_grad(g: &Tensor, lhs: &Tensor, rhs: &Shape, c: &Convolution) -> Result<Tensor> {
    let (l, r, o) = specs(&c.dims);
    let (fg, bg) = if c.batch_group_count > 1 {
        (c.batch_group_count, 1)
    } else {
        (1, c.feature_group_count)
    };
    let n = c.dims.spatial_rank();
    let in_sp = take(&lhs.dims(), &l[2..]);
    let k_sp = take(&rhs.dims, &r[2..]);
    let out_sp = take(&g.dims(), &o[2..]);
    let padding: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            let lhs_d = dilate(in_sp[i], c.lhs_dilation[i]);
            let rhs_d = dilate(k_sp[i], c.rhs_dilation[i]);
            let out_d = dilate(out_sp[i], c.window_strides[i]);
            let lo = c.padding[i].0;
            (lo, (out_d - lhs_d) + (rhs_d - lo - 1))
        })
        .collect();
    let g = if g.dtype() == lhs.dtype() {
        g.clone()
    } else {
        g.convert(lhs.dtype())?
    };
    let attrs = Convolution {
        dims: from_specs(
            &swap_first_two(&l),
            &swap_first_two(&o),
            &swap_first_two(&r),
        ),
        window_strides: c.rhs_dilation.clone(),
        padding,
        lhs_dilation: c.lhs_dilation.clone(),
        rhs_dilation: c.window_strides.clone(),
        feature_group_count: fg,
        batch_group_count: bg,
        precision: c.precision,
        result_dtype: c.result_dtype,
    };
    let out = lhs.convolution(&g, attrs)?;
    check_shape(&out, rhs, "kernel")?;
    to_dtype(out, rhs)
}

/// Cotangents of `(input, kernel)`, built only where `needs` says so.
pub(crate) fn convolution_vjp(
    g: &Tensor,
    lhs: &Tensor,
    rhs: &Tensor,
    c: &Convolution,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    if c.feature_group_count > 1 && c.batch_group_count > 1 {
        return Err(GraphError::invalid(
            "convolution backward",
            "both group counts above 1",
        ));
    }
    let dl = if needs[0] {
        Some(input_grad(g, &lhs.shape(), rhs, c)?)
    } else {
        None
    };
    let dr = if needs[1] {
        Some(kernel_grad(g, lhs, &rhs.shape(), c)?)
    } else {
        None
    };
    Ok([dl, dr])
}

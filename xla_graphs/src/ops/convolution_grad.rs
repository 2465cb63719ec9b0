//! Backward of convolution, written as convolutions (the transpose rules of JAX's
//! `lax.conv_general_dilated`): the input gradient convolves the cotangent with the reversed,
//! in/out-swapped kernel using `lhs_dilation` = forward strides; the kernel gradient convolves
//! the input with the cotangent, contracting over the batch. Feature and batch groups are
//! handled by moving the group axis between feature and batch dimensions. A kernel the host
//! also uploads reversed can replace the in-program reversal through
//! `input_gradient_with_reversed_kernel`, attached as a custom rule.

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
    let (_, r, _) = specs(&c.dims);
    let mut kernel = rhs.clone();
    let mut groups = c.feature_group_count;
    if c.feature_group_count > 1 || c.batch_group_count > 1 {
        let n = c.feature_group_count.max(c.batch_group_count);
        kernel = reshape_axis_out_of(r[0], n, &kernel)?;
        kernel = reshape_axis_into(r[0], r[1], &kernel)?;
        groups = n;
    }
    let reversed = kernel.reverse(&r[2..])?;
    convolve_with_reversed(g, lhs, &reversed, &swap_first_two(&r), groups, c)
}

/// The input cotangent of the ungrouped convolution `c` of an input of type `input` with a
/// kernel of type `kernel`, given `g`, the cotangent of its result, and `reversed`: the kernel
/// with its spatial dimensions reversed and its two feature dimensions exchanged in place (for
/// a `[kh, kw, I, O]` kernel, `reversed[h, w, o, i] = kernel[kh-1-h, kw-1-w, i, o]`). The same
/// value as the convolution's own rule, which builds that tensor from the kernel inside the
/// program: XLA's CPU backend does so as a full copy of the kernel on every run, which a
/// frozen kernel the host uploads both ways avoids. A rule for `Graph::set_custom_vjp`.
pub fn input_gradient_with_reversed_kernel(
    g: &Tensor,
    input: &Shape,
    kernel: &Shape,
    reversed: &Tensor,
    c: &Convolution,
) -> Result<Tensor> {
    let (_, r, _) = specs(&c.dims);
    let want = (kernel.rank() == r.len()).then(|| {
        let mut dims = kernel.dims.clone();
        dims.swap(r[0], r[1]);
        dims
    });
    let reason = if c.feature_group_count != 1 || c.batch_group_count != 1 {
        Some("a grouped convolution has no reversed-kernel input gradient".to_string())
    } else if want != Some(reversed.dims()) || reversed.dtype() != kernel.dtype {
        Some(format!(
            "{} cannot be the reversed, feature-exchanged kernel {kernel}",
            reversed.shape()
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(g
            .graph()
            .op_error("stablehlo.convolution", &[g, reversed], reason));
    }
    // Its feature axes are exchanged in place, so the forward roles apply.
    convolve_with_reversed(g, input, reversed, &r, 1, c)
}

/// The input cotangent as a convolution of `g` with `reversed` (the kernel reversed, regrouped
/// for `groups`), whose dimension roles are `kernel_roles` in spec order.
fn convolve_with_reversed(
    g: &Tensor,
    lhs: &Shape,
    reversed: &Tensor,
    kernel_roles: &[usize],
    groups: i64,
    c: &Convolution,
) -> Result<Tensor> {
    let (l, _, o) = specs(&c.dims);
    let n = c.dims.spatial_rank();
    let in_sp = take(&lhs.dims, &l[2..]);
    let k_sp = take(&reversed.dims(), &kernel_roles[2..]);
    let out_sp = take(&g.dims(), &o[2..]);
    let padding: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            let lhs_d = dilate(in_sp[i], c.lhs_dilation[i]);
            let rhs_d = dilate(k_sp[i], c.rhs_dilation[i]);
            let out_d = dilate(out_sp[i], c.window_strides[i]);
            let before = rhs_d - c.padding[i].0 - 1;
            (before, lhs_d + rhs_d - 1 - out_d - before)
        })
        .collect();
    let g = if g.dtype() == reversed.dtype() {
        g.clone()
    } else {
        g.convert(reversed.dtype())?
    };
    let attrs = Convolution {
        dims: from_specs(&o, kernel_roles, &l),
        window_strides: c.lhs_dilation.clone(),
        padding,
        lhs_dilation: c.window_strides.clone(),
        rhs_dilation: c.rhs_dilation.clone(),
        feature_group_count: groups,
        batch_group_count: 1,
        precision: c.precision,
        result_dtype: c.result_dtype,
    };
    let mut out = g.convolution(reversed, attrs)?;
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

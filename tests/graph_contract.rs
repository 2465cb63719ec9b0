//! dot_general, convolution, gather and scatter through the CPU plugin against direct-loop
//! references in Rust (f64, 1e-13 relative; bf16 inputs with an f32 result to 1e-6).

mod common;

use common::*;
use xla_graphs::{
    ConvDimensionNumbers, Convolution, DType, DotDimensionNumbers, DotGeneral, Gather,
    GatherDimensionNumbers, Graph, Scatter, ScatterDimensionNumbers, Tensor,
};

fn param(g: &Graph, a: &Array) -> Tensor {
    g.parameter("p", a.shape()).unwrap()
}

/// dot_general by definition: for each result index, sum over the contracting indices.
fn dot_ref(l: &Array, r: &Array, d: &DotDimensionNumbers, out: &[i64]) -> Vec<f64> {
    let free = |rank: usize, b: &[usize], c: &[usize]| -> Vec<usize> {
        (0..rank)
            .filter(|i| !b.contains(i) && !c.contains(i))
            .collect()
    };
    let lf = free(
        l.dims.len(),
        &d.lhs_batching_dimensions,
        &d.lhs_contracting_dimensions,
    );
    let rf = free(
        r.dims.len(),
        &d.rhs_batching_dimensions,
        &d.rhs_contracting_dimensions,
    );
    let csizes: Vec<i64> = d
        .lhs_contracting_dimensions
        .iter()
        .map(|&i| l.dims[i])
        .collect();
    let ncontract: i64 = csizes.iter().product();
    let n: i64 = out.iter().product();
    (0..n)
        .map(|o| {
            let oi = unravel(o, out);
            let nb = d.lhs_batching_dimensions.len();
            let mut li = vec![0; l.dims.len()];
            let mut ri = vec![0; r.dims.len()];
            for (k, (&a, &b)) in d
                .lhs_batching_dimensions
                .iter()
                .zip(&d.rhs_batching_dimensions)
                .enumerate()
            {
                li[a] = oi[k];
                ri[b] = oi[k];
            }
            for (k, &a) in lf.iter().enumerate() {
                li[a] = oi[nb + k];
            }
            for (k, &b) in rf.iter().enumerate() {
                ri[b] = oi[nb + lf.len() + k];
            }
            (0..ncontract)
                .map(|c| {
                    let ci = unravel(c, &csizes);
                    for (k, (&a, &b)) in d
                        .lhs_contracting_dimensions
                        .iter()
                        .zip(&d.rhs_contracting_dimensions)
                        .enumerate()
                    {
                        li[a] = ci[k];
                        ri[b] = ci[k];
                    }
                    l.data[ravel(&li, &l.dims)] * r.data[ravel(&ri, &r.dims)]
                })
                .sum()
        })
        .collect()
}

#[test]
fn dot_general_batch_and_contracting_dims() {
    // Batch dims in the middle and at the end, two contracting dims in swapped order.
    let l = rand(&[3, 2, 4, 5], 21);
    let r = rand(&[5, 6, 4, 2], 22);
    let d = DotDimensionNumbers {
        lhs_batching_dimensions: vec![1],
        rhs_batching_dimensions: vec![3],
        lhs_contracting_dimensions: vec![3, 2],
        rhs_contracting_dimensions: vec![0, 2],
    };
    let g = Graph::new();
    let y = param(&g, &l)
        .dot_general(&param(&g, &r), d.clone())
        .unwrap();
    assert_eq!(y.dims(), vec![2, 3, 6]);
    let got = run(&g, &[&y], &[l.clone(), r.clone()]);
    assert_close(
        "dot_general",
        &got[0],
        &dot_ref(&l, &r, &d, &[2, 3, 6]),
        1e-13,
    );

    let (a, b) = (rand(&[2, 3, 4], 23), rand(&[2, 4, 5], 24));
    let g = Graph::new();
    let y = param(&g, &a).matmul(&param(&g, &b)).unwrap();
    let got = run(&g, &[&y], &[a.clone(), b.clone()]);
    assert_close(
        "matmul",
        &got[0],
        &dot_ref(&a, &b, &DotDimensionNumbers::matmul(1), &[2, 3, 5]),
        1e-13,
    );
}

#[test]
fn dot_general_bf16_operands_f32_result() {
    let bf = |a: &Array| {
        let data = a
            .data
            .iter()
            .map(|&v| half::bf16::from_f64(v).to_f64())
            .collect();
        Array::new(DType::BF16, &a.dims, data)
    };
    let (a, b) = (bf(&rand(&[4, 8], 25)), bf(&rand(&[8, 3], 26)));
    let g = Graph::new();
    let attrs = DotGeneral {
        dims: DotDimensionNumbers::matmul(0),
        result_dtype: Some(DType::F32),
        ..Default::default()
    };
    let y = param(&g, &a)
        .dot_general_with(&param(&g, &b), attrs)
        .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let got = run(&g, &[&y], &[a.clone(), b.clone()]);
    assert_eq!(got[0].dtype, DType::F32);
    assert_close(
        "bf16 dot",
        &got[0],
        &dot_ref(&a, &b, &DotDimensionNumbers::matmul(0), &[4, 3]),
        1e-6,
    );
}

/// Convolution by the StableHLO definition, for any layout, dilation and group counts.
fn conv_ref(l: &Array, k: &Array, c: &Convolution, out: &[i64]) -> Vec<f64> {
    let d = &c.dims;
    let ns = d.spatial_rank();
    let o_feat = k.dims[d.kernel_output_feature_dimension];
    let k_in = k.dims[d.kernel_input_feature_dimension];
    let batch = l.dims[d.input_batch_dimension];
    let (fg, bg) = (c.feature_group_count, c.batch_group_count);
    let ksp: Vec<i64> = d
        .kernel_spatial_dimensions
        .iter()
        .map(|&i| k.dims[i])
        .collect();
    let nk: i64 = ksp.iter().product();
    let n: i64 = out.iter().product();
    (0..n)
        .map(|o| {
            let oi = unravel(o, out);
            let (ob, of) = (oi[d.output_batch_dimension], oi[d.output_feature_dimension]);
            let fgi = of / (o_feat / fg);
            let in_b = (of / (o_feat / bg)) * (batch / bg) + ob;
            let mut sum = 0.0;
            for i in 0..k_in {
                for kk in 0..nk {
                    let ks = unravel(kk, &ksp);
                    let mut li = vec![0; l.dims.len()];
                    li[d.input_batch_dimension] = in_b;
                    li[d.input_feature_dimension] = fgi * k_in + i;
                    let mut inside = true;
                    for s in 0..ns {
                        let p = oi[d.output_spatial_dimensions[s]] * c.window_strides[s]
                            + ks[s] * c.rhs_dilation[s]
                            - c.padding[s].0;
                        let size = l.dims[d.input_spatial_dimensions[s]];
                        let dil = c.lhs_dilation[s];
                        if p < 0 || p % dil != 0 || p / dil >= size {
                            inside = false;
                            break;
                        }
                        li[d.input_spatial_dimensions[s]] = p / dil;
                    }
                    if inside {
                        let mut ki = vec![0; k.dims.len()];
                        ki[d.kernel_output_feature_dimension] = of;
                        ki[d.kernel_input_feature_dimension] = i;
                        for s in 0..ns {
                            ki[d.kernel_spatial_dimensions[s]] = ks[s];
                        }
                        sum += l.data[ravel(&li, &l.dims)] * k.data[ravel(&ki, &k.dims)];
                    }
                }
            }
            sum
        })
        .collect()
}

fn check_conv(name: &str, lhs: &[i64], rhs: &[i64], c: Convolution) {
    let (l, k) = (rand(lhs, 27), rand(rhs, 28));
    let g = Graph::new();
    let y = param(&g, &l)
        .convolution(&param(&g, &k), c.clone())
        .unwrap();
    let out = y.dims();
    let got = run(&g, &[&y], &[l.clone(), k.clone()]);
    assert_close(name, &got[0], &conv_ref(&l, &k, &c, &out), 1e-13);
}

#[test]
fn convolution_layouts_strides_padding_dilation_groups() {
    let nchw = ConvDimensionNumbers::nchw_oihw(2);
    check_conv(
        "nchw stride 2, uneven padding, rhs dilation",
        &[2, 4, 7, 6],
        &[6, 4, 3, 2],
        Convolution {
            window_strides: vec![2, 1],
            padding: vec![(1, 2), (0, 1)],
            rhs_dilation: vec![1, 2],
            ..Convolution::new(nchw.clone())
        },
    );
    check_conv(
        "nchw feature groups 2, lhs dilation",
        &[1, 4, 5, 5],
        &[6, 2, 3, 3],
        Convolution {
            lhs_dilation: vec![2, 1],
            padding: vec![(1, 1), (1, 1)],
            feature_group_count: 2,
            ..Convolution::new(nchw.clone())
        },
    );
    check_conv(
        "nchw batch groups 2",
        &[4, 3, 5, 4],
        &[4, 3, 2, 2],
        Convolution {
            batch_group_count: 2,
            ..Convolution::new(nchw)
        },
    );
    check_conv(
        "nhwc/hwio stride 2",
        &[2, 6, 5, 3],
        &[3, 3, 3, 4],
        Convolution {
            window_strides: vec![2, 2],
            padding: vec![(1, 1), (1, 1)],
            ..Convolution::new(ConvDimensionNumbers::nhwc_hwio(2))
        },
    );
    check_conv(
        "1-d",
        &[2, 3, 9],
        &[2, 3, 4],
        Convolution::new(ConvDimensionNumbers::nchw_oihw(1)),
    );
}

#[test]
fn gather_rows_and_general_windows() {
    let table = rand(&[5, 3], 29);
    let g = Graph::new();
    let t = param(&g, &table);
    let ids = g.constant_vec(&[2, 2], vec![4i32, 0, 4, 2]).unwrap();
    let rows = t.take_rows(&ids).unwrap();
    // 2-d start indices picking 2x2 windows; the second start (4, 2) is clamped to (3, 1).
    let starts = g.constant_vec(&[2, 2], vec![1i64, 0, 4, 2]).unwrap();
    let windows = t
        .gather(
            &starts,
            Gather {
                dims: GatherDimensionNumbers {
                    offset_dims: vec![1, 2],
                    start_index_map: vec![0, 1],
                    index_vector_dim: 1,
                    ..Default::default()
                },
                slice_sizes: vec![2, 2],
                indices_are_sorted: false,
            },
        )
        .unwrap();
    let got = run(&g, &[&rows, &windows], std::slice::from_ref(&table));
    let at = |r: i64, c: i64| table.data[(r * 3 + c) as usize];
    assert_eq!(got[0].dims, vec![2, 2, 3]);
    let want: Vec<f64> = [4, 0, 4, 2]
        .iter()
        .flat_map(|&r| (0..3).map(move |c| at(r, c)))
        .collect();
    assert_close("take_rows", &got[0], &want, 0.0);
    let want: Vec<f64> = [(1, 0), (3, 1)]
        .iter()
        .flat_map(|&(r, c)| (0..2).flat_map(move |i| (0..2).map(move |j| at(r + i, c + j))))
        .collect();
    assert_close("gather windows", &got[1], &want, 0.0);
}

#[test]
fn scatter_add_accumulates_repeated_indices() {
    let base = rand(&[4, 3], 30);
    let upd = rand(&[5, 3], 31);
    let g = Graph::new();
    let ids = g.constant_vec(&[5, 1], vec![2i32, 0, 2, 3, 2]).unwrap();
    let attrs = Scatter {
        dims: ScatterDimensionNumbers {
            update_window_dims: vec![1],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let y = param(&g, &base)
        .scatter_add(&ids, &param(&g, &upd), attrs)
        .unwrap();
    let got = run(&g, &[&y], &[base.clone(), upd.clone()]);
    let mut want = base.data.clone();
    for (k, &r) in [2usize, 0, 2, 3, 2].iter().enumerate() {
        for c in 0..3 {
            want[r * 3 + c] += upd.data[k * 3 + c];
        }
    }
    assert_close("scatter add", &got[0], &want, 1e-15);
}

//! Layout, slicing and reduction ops through the CPU plugin against index-arithmetic
//! references in Rust. Element moves compare exactly; sums to 1e-13 relative.

mod common;

use common::*;
use xla_graphs::{DType, Graph, Shape, Tensor};

fn param(g: &Graph, a: &Array) -> Tensor {
    g.parameter("p", a.shape()).unwrap()
}

/// Builds the reference result by computing, for each result index, the source value.
fn gather_ref(dims: &[i64], f: impl Fn(&[i64]) -> f64) -> Vec<f64> {
    let n: i64 = dims.iter().product();
    (0..n).map(|i| f(&unravel(i, dims))).collect()
}

#[test]
fn reshape_transpose_broadcast_reverse() {
    let a = rand(&[2, 3, 4], 11);
    let g = Graph::new();
    let x = param(&g, &a);
    let r = x.reshape(&[6, 4]).unwrap();
    let t = x.transpose(&[2, 0, 1]).unwrap();
    let v = x.reverse(&[0, 2]).unwrap();
    let row = g.parameter("row", Shape::new(DType::F64, &[3, 1])).unwrap();
    let b = row.broadcast_in_dim(&[4, 2, 3, 5], &[2, 0]).unwrap();
    let row_data = rand(&[3, 1], 12);
    let got = run(&g, &[&r, &t, &v, &b], &[a.clone(), row_data.clone()]);
    assert_close("reshape", &got[0], &a.data, 0.0);
    let at = |i: &[i64]| a.data[ravel(i, &a.dims)];
    assert_close(
        "transpose",
        &got[1],
        &gather_ref(&[4, 2, 3], |i| at(&[i[1], i[2], i[0]])),
        0.0,
    );
    assert_close(
        "reverse",
        &got[2],
        &gather_ref(&[2, 3, 4], |i| at(&[1 - i[0], i[1], 3 - i[2]])),
        0.0,
    );
    // Operand dim 0 (size 3) -> result dim 2, operand dim 1 (size 1) stretches over dim 0.
    let want = gather_ref(&[4, 2, 3, 5], |i| row_data.data[i[2] as usize]);
    assert_close("broadcast_in_dim", &got[3], &want, 0.0);
}

#[test]
fn slice_pad_concatenate() {
    let a = rand(&[5, 7], 13);
    let b = rand(&[5, 2], 14);
    let g = Graph::new();
    let (x, y) = (param(&g, &a), param(&g, &b));
    let s = x.slice(&[1, 0], &[5, 7], &[2, 3]).unwrap();
    let pv = g.scalar(0.25, DType::F64).unwrap();
    let p = x.pad(&pv, &[1, -2], &[2, 1], &[1, 0]).unwrap();
    let c = g
        .concatenate(&[x.clone(), y.clone(), x.clone()], 1)
        .unwrap();
    let got = run(&g, &[&s, &p, &c], &[a.clone(), b.clone()]);
    let at = |i: i64, j: i64| a.data[(i * 7 + j) as usize];
    assert_eq!(got[0].dims, vec![2, 3]);
    assert_close(
        "slice",
        &got[0],
        &gather_ref(&[2, 3], |i| at(1 + 2 * i[0], 3 * i[1])),
        0.0,
    );
    // Rows: 1 low, interior 1 (5 rows -> 9), 2 high = 12; columns: 2 cut low, 1 high = 6.
    assert_eq!(got[1].dims, vec![12, 6]);
    let want = gather_ref(&[12, 6], |i| {
        let (r, c) = (i[0] - 1, i[1] + 2);
        if r >= 0 && r % 2 == 0 && r / 2 < 5 && c < 7 {
            at(r / 2, c)
        } else {
            0.25
        }
    });
    assert_close("pad", &got[1], &want, 0.0);
    let want = gather_ref(&[5, 16], |i| match i[1] {
        c if c < 7 => at(i[0], c),
        c if c < 9 => b.data[(i[0] * 2 + c - 7) as usize],
        c => at(i[0], c - 9),
    });
    assert_close("concatenate", &got[2], &want, 0.0);
}

#[test]
fn dynamic_slice_and_update_clamp_their_starts() {
    let a = rand(&[4, 6], 15);
    let u = rand(&[2, 3], 16);
    let g = Graph::new();
    let (x, up) = (param(&g, &a), param(&g, &u));
    let i = g.parameter("i", Shape::scalar(DType::I32)).unwrap();
    let j = g.parameter("j", Shape::scalar(DType::I32)).unwrap();
    let ds = x.dynamic_slice(&[i.clone(), j.clone()], &[2, 3]).unwrap();
    let dus = x.dynamic_update_slice(&up, &[i, j]).unwrap();
    let text = g.to_stablehlo(&[&ds, &dus]).unwrap();
    let exe = compile(&text, 1);
    // (1, 2) is inside; (3, 5) is clamped to (2, 3), the last start that fits.
    for (si, sj, ci, cj) in [(1, 2, 1, 2), (3, 5, 2, 3)] {
        let scalar = |v: i64| Array::new(DType::I32, &[], vec![v as f64]);
        let got = execute(&exe, &[vec![a.clone(), u.clone(), scalar(si), scalar(sj)]]).remove(0);
        let at = |r: i64, c: i64| a.data[(r * 6 + c) as usize];
        assert_close(
            "dynamic_slice",
            &got[0],
            &gather_ref(&[2, 3], |k| at(ci + k[0], cj + k[1])),
            0.0,
        );
        let want = gather_ref(&[4, 6], |k| {
            let (r, c) = (k[0] - ci, k[1] - cj);
            if (0..2).contains(&r) && (0..3).contains(&c) {
                u.data[(r * 3 + c) as usize]
            } else {
                at(k[0], k[1])
            }
        });
        assert_close("dynamic_update_slice", &got[1], &want, 0.0);
    }
}

#[test]
fn reductions_and_iota() {
    let a = rand(&[3, 4, 5], 17);
    let g = Graph::new();
    let x = param(&g, &a);
    let s = x.reduce_sum(&[0, 2]).unwrap();
    let m = x.reduce_max(&[1]).unwrap();
    let n = x.reduce_min(&[2]).unwrap();
    let all = x.sum_all().unwrap();
    let io = g.iota(Shape::new(DType::F32, &[2, 3]), 1).unwrap();
    let iu = g.iota(Shape::new(DType::U32, &[2, 3]), 0).unwrap();
    let ints = g.constant_vec(&[4], vec![3i32, -8, 5, 1]).unwrap();
    let imax = ints.reduce_max(&[0]).unwrap();
    let imin = ints.reduce_min(&[0]).unwrap();
    let got = run(
        &g,
        &[&s, &m, &n, &all, &io, &iu, &imax, &imin],
        std::slice::from_ref(&a),
    );
    let at = |i: i64, j: i64, k: i64| a.data[(i * 20 + j * 5 + k) as usize];
    let want: Vec<f64> = (0..4)
        .map(|j| {
            (0..3)
                .flat_map(|i| (0..5).map(move |k| (i, k)))
                .map(|(i, k)| at(i, j, k))
                .sum()
        })
        .collect();
    assert_close("reduce sum", &got[0], &want, 1e-13);
    let want = gather_ref(&[3, 5], |i| {
        (0..4).map(|j| at(i[0], j, i[1])).fold(f64::MIN, f64::max)
    });
    assert_close("reduce max", &got[1], &want, 0.0);
    let want = gather_ref(&[3, 4], |i| {
        (0..5).map(|k| at(i[0], i[1], k)).fold(f64::MAX, f64::min)
    });
    assert_close("reduce min", &got[2], &want, 0.0);
    assert_close("sum all", &got[3], &[a.data.iter().sum()], 1e-13);
    assert_eq!(got[4].data, vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    assert_eq!(got[5].data, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!((got[6].data[0], got[7].data[0]), (5.0, -8.0));
}

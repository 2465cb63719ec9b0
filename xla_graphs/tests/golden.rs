//! Golden StableHLO text for small graphs, and determinism of the printer.

use xla_graphs::{
    value_and_grad, ComparisonDirection, ConvDimensionNumbers, Convolution, DType,
    DotDimensionNumbers, DotGeneral, Graph, Precision, Shape, Tensor,
};

/// Elementwise ops, a broadcast, a reduce with its region, compare and select; a dead op and
/// an unused parameter (kept in the signature).
fn small_graph() -> (Graph, Vec<Tensor>) {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F32, &[2, 3])).unwrap();
    let b = g.parameter("b", Shape::new(DType::F32, &[3])).unwrap();
    let _unused = g.parameter("unused", Shape::scalar(DType::U32)).unwrap();
    let y = x.add(&b.broadcast_in_dim(&[2, 3], &[1]).unwrap()).unwrap();
    let _dead = y.exponential().unwrap();
    let z = y.reduce_sum(&[1]).unwrap();
    let m = y
        .compare(&y.full_like(0.5).unwrap(), ComparisonDirection::Ge)
        .unwrap();
    let r = m.select(&y, &y.zeros_like().unwrap()).unwrap();
    (g, vec![z, r])
}

const SMALL: &str = r#"module @ti_xla {
  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3xf32>, %arg2: tensor<ui32>) -> (tensor<2xf32>, tensor<2x3xf32>) {
    %0 = "stablehlo.broadcast_in_dim"(%arg1) {broadcast_dimensions = array<i64: 1>} : (tensor<3xf32>) -> tensor<2x3xf32>
    %1 = "stablehlo.add"(%arg0, %0) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %2 = "stablehlo.constant"() {value = dense<0x00000000> : tensor<f32>} : () -> tensor<f32>
    %3 = "stablehlo.reduce"(%1, %2) ({
    ^bb0(%4: tensor<f32>, %5: tensor<f32>):
      %6 = "stablehlo.add"(%4, %5) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%6) : (tensor<f32>) -> ()
    }) {dimensions = array<i64: 1>} : (tensor<2x3xf32>, tensor<f32>) -> tensor<2xf32>
    %7 = "stablehlo.constant"() {value = dense<0x3F000000> : tensor<2x3xf32>} : () -> tensor<2x3xf32>
    %8 = "stablehlo.compare"(%1, %7) {compare_type = #stablehlo<comparison_type FLOAT>, comparison_direction = #stablehlo<comparison_direction GE>} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xi1>
    %9 = "stablehlo.constant"() {value = dense<0x00000000> : tensor<2x3xf32>} : () -> tensor<2x3xf32>
    %10 = "stablehlo.select"(%8, %1, %9) : (tensor<2x3xi1>, tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    "func.return"(%3, %10) : (tensor<2xf32>, tensor<2x3xf32>) -> ()
  }
}
"#;

#[test]
fn small_graph_prints_as_expected() {
    let (g, outs) = small_graph();
    assert_eq!(g.to_stablehlo(&[&outs[0], &outs[1]]).unwrap(), SMALL);
}

/// Structured attributes: dot_general with batch dims, a bf16 x bf16 -> f32 result and a
/// precision config; an HWIO convolution with feature groups; the gradient of an embedding
/// lookup (clamped indices, scatter-add region).
fn structured_graph() -> (Graph, Vec<Tensor>) {
    let g = Graph::new();
    let a = g
        .parameter("a", Shape::new(DType::BF16, &[2, 4, 8]))
        .unwrap();
    let w = g
        .parameter("w", Shape::new(DType::BF16, &[2, 8, 5]))
        .unwrap();
    let attrs = DotGeneral {
        dims: DotDimensionNumbers::matmul(1),
        result_dtype: Some(DType::F32),
        precision: Precision::Highest,
    };
    let d = a.dot_general_with(&w, attrs).unwrap();
    let img = g
        .parameter("img", Shape::new(DType::F32, &[1, 4, 6, 6]))
        .unwrap();
    let k = g
        .parameter("k", Shape::new(DType::F32, &[3, 3, 2, 4]))
        .unwrap();
    let dims = ConvDimensionNumbers {
        input_batch_dimension: 0,
        input_feature_dimension: 1,
        input_spatial_dimensions: vec![2, 3],
        kernel_input_feature_dimension: 2,
        kernel_output_feature_dimension: 3,
        kernel_spatial_dimensions: vec![0, 1],
        output_batch_dimension: 0,
        output_feature_dimension: 3,
        output_spatial_dimensions: vec![1, 2],
    };
    let conv = Convolution {
        window_strides: vec![2, 2],
        padding: vec![(1, 1), (0, 1)],
        feature_group_count: 2,
        ..Convolution::new(dims)
    };
    let c = img.convolution(&k, conv).unwrap();
    let t = g
        .parameter("table", Shape::new(DType::F32, &[10, 4]))
        .unwrap();
    let ids = g.constant_vec(&[3], vec![1i32, 7, 1]).unwrap();
    let rows = t.take_rows(&ids).unwrap();
    let (_, grads) = value_and_grad(&rows.sum_all().unwrap(), &[t]).unwrap();
    (g, vec![d, c, grads[0].clone()])
}

const STRUCTURED: &str = r#"module @ti_xla {
  func.func public @main(%arg0: tensor<2x4x8xbf16>, %arg1: tensor<2x8x5xbf16>, %arg2: tensor<1x4x6x6xf32>, %arg3: tensor<3x3x2x4xf32>, %arg4: tensor<10x4xf32>) -> (tensor<2x4x5xf32>, tensor<1x3x3x4xf32>, tensor<10x4xf32>) {
    %0 = "stablehlo.dot_general"(%arg0, %arg1) {dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = [0], rhs_batching_dimensions = [0], lhs_contracting_dimensions = [2], rhs_contracting_dimensions = [1]>, precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]} : (tensor<2x4x8xbf16>, tensor<2x8x5xbf16>) -> tensor<2x4x5xf32>
    %1 = "stablehlo.convolution"(%arg2, %arg3) {batch_group_count = 1 : i64, dimension_numbers = #stablehlo.conv<[b, f, 0, 1]x[0, 1, i, o]->[b, 0, 1, f]>, feature_group_count = 2 : i64, lhs_dilation = array<i64: 1, 1>, padding = dense<[[1, 1], [0, 1]]> : tensor<2x2xi64>, rhs_dilation = array<i64: 1, 1>, window_strides = array<i64: 2, 2>} : (tensor<1x4x6x6xf32>, tensor<3x3x2x4xf32>) -> tensor<1x3x3x4xf32>
    %2 = "stablehlo.constant"() {value = dense<[1, 7, 1]> : tensor<3xi32>} : () -> tensor<3xi32>
    %3 = "stablehlo.constant"() {value = dense<0x3F800000> : tensor<3x4xf32>} : () -> tensor<3x4xf32>
    %4 = "stablehlo.constant"() {value = dense<9> : tensor<3xi32>} : () -> tensor<3xi32>
    %5 = "stablehlo.constant"() {value = dense<0> : tensor<3xi32>} : () -> tensor<3xi32>
    %6 = "stablehlo.clamp"(%5, %2, %4) : (tensor<3xi32>, tensor<3xi32>, tensor<3xi32>) -> tensor<3xi32>
    %7 = "stablehlo.constant"() {value = dense<0x00000000> : tensor<10x4xf32>} : () -> tensor<10x4xf32>
    %8 = "stablehlo.scatter"(%7, %6, %3) ({
    ^bb0(%9: tensor<f32>, %10: tensor<f32>):
      %11 = "stablehlo.add"(%9, %10) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%11) : (tensor<f32>) -> ()
    }) {indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>, unique_indices = false} : (tensor<10x4xf32>, tensor<3xi32>, tensor<3x4xf32>) -> tensor<10x4xf32>
    "func.return"(%0, %1, %8) : (tensor<2x4x5xf32>, tensor<1x3x3x4xf32>, tensor<10x4xf32>) -> ()
  }
}
"#;

#[test]
fn structured_attributes_print_as_expected() {
    let (g, outs) = structured_graph();
    let refs: Vec<&Tensor> = outs.iter().collect();
    assert_eq!(g.to_stablehlo(&refs).unwrap(), STRUCTURED);
}

#[test]
fn printing_is_deterministic() {
    let (g1, o1) = structured_graph();
    let (g2, o2) = structured_graph();
    let r1: Vec<&Tensor> = o1.iter().collect();
    let r2: Vec<&Tensor> = o2.iter().collect();
    let first = g1.to_stablehlo(&r1).unwrap();
    assert_eq!(
        first,
        g1.to_stablehlo(&r1).unwrap(),
        "same graph printed twice"
    );
    assert_eq!(
        first,
        g2.to_stablehlo(&r2).unwrap(),
        "same graph traced twice"
    );
}

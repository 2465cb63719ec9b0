//! Autodiff prunes: the gradient with respect to the input of conv -> silu -> linear contains
//! the input-gradient convolution and dot but no kernel- or weight-gradient ones.

use xla_graphs::{nn, value_and_grad, DType, Graph, Shape, Tensor};

fn count(text: &str, op: &str) -> usize {
    text.matches(&format!("\"{op}\"")).count()
}

/// Returns the printed program of the loss and its gradient with respect to `wrt`
/// (indices into [input, kernel, weight]).
fn two_layer_grad(wrt: &[usize]) -> String {
    let g = Graph::new();
    let x = g
        .parameter("x", Shape::new(DType::F32, &[2, 3, 8, 8]))
        .unwrap();
    let k = g
        .parameter("conv.weight", Shape::new(DType::F32, &[4, 3, 3, 3]))
        .unwrap();
    let w = g
        .parameter("linear.weight", Shape::new(DType::F32, &[5, 8]))
        .unwrap();
    let opts = nn::Conv2dOptions {
        padding: [1, 1],
        ..Default::default()
    };
    let h = nn::silu(&nn::conv2d(&x, &k, None, opts).unwrap()).unwrap();
    let loss = nn::linear(&h, &w, None)
        .unwrap()
        .square()
        .unwrap()
        .sum_all()
        .unwrap();
    let params = [x, k, w];
    let wrt: Vec<Tensor> = wrt.iter().map(|&i| params[i].clone()).collect();
    let (loss, grads) = value_and_grad(&loss, &wrt).unwrap();
    let mut outs = vec![&loss];
    outs.extend(grads.iter());
    g.to_stablehlo(&outs).unwrap()
}

#[test]
fn input_gradient_has_no_weight_gradient_ops() {
    let text = two_layer_grad(&[0]);
    // Forward conv + input-gradient conv; forward dot + input-gradient dot.
    assert_eq!(count(&text, "stablehlo.convolution"), 2, "{text}");
    assert_eq!(count(&text, "stablehlo.dot_general"), 2, "{text}");
}

#[test]
fn all_gradients_add_the_weight_gradient_ops() {
    let text = two_layer_grad(&[0, 1, 2]);
    assert_eq!(count(&text, "stablehlo.convolution"), 3);
    assert_eq!(count(&text, "stablehlo.dot_general"), 3);
}

#[test]
fn weight_only_gradient_skips_the_input_gradient_conv() {
    // With respect to the linear weight only, nothing flows back into the conv.
    let text = two_layer_grad(&[2]);
    assert_eq!(count(&text, "stablehlo.convolution"), 1);
    assert_eq!(count(&text, "stablehlo.dot_general"), 2);
}

#[test]
fn fan_out_sums_cotangents_and_unrelated_inputs_get_zeros() {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F32, &[3])).unwrap();
    let unrelated = g.parameter("u", Shape::new(DType::F32, &[2])).unwrap();
    let loss = x.multiply(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    let (_, grads) = value_and_grad(&loss, &[x, unrelated]).unwrap();
    // d/dx (x*x + x) = ct*x + ct*x + ct: two multiplies summed with the direct path.
    assert_eq!(grads[0].op_name(), "stablehlo.add");
    assert_eq!(grads[1].op_name(), "stablehlo.constant");
    assert_eq!(grads[1].dims(), vec![2]);
}

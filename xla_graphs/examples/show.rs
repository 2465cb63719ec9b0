//! Prints a small traced program and its gradient, for eyeballing the printer's output.

use xla_graphs::{nn, value_and_grad, DType, Graph, Shape};

fn main() -> Result<(), xla_graphs::GraphError> {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F32, &[1, 2, 4, 4]))?;
    let k = g.parameter("k", Shape::new(DType::F32, &[3, 2, 3, 3]))?;
    let w = g.parameter("w", Shape::new(DType::F32, &[5, 4]))?;
    let h = nn::conv2d(
        &x,
        &k,
        None,
        nn::Conv2dOptions {
            padding: [1, 1],
            ..Default::default()
        },
    )?;
    let h = nn::silu(&h)?;
    let y = nn::linear(&h, &w, None)?;
    let loss = nn::softmax(&y, 3)?.sum_all()?;
    let (loss, grads) = value_and_grad(&loss, &[x])?;
    println!("{}", g.to_stablehlo(&[&loss, &grads[0]])?);
    Ok(())
}

//! Times tracing and printing a graph of about 100k ops (a chain of elementwise, broadcast and
//! reduce ops on small tensors). Prints the times; asserts nothing about speed.

use std::time::Instant;
use xla_graphs::{DType, Graph, Shape};

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), xla_graphs::GraphError> {
    let start = Instant::now();
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F32, &[8, 16]))?;
    let mut h = x.clone();
    while g.num_nodes() < 100_000 {
        let _scope = g.scope("block");
        let s = h.reduce_sum(&[1])?.broadcast_in_dim(&[8, 16], &[0])?;
        h = h.tanh()?.multiply(&s)?.add(&x)?.logistic()?;
    }
    let out = h.sum_all()?;
    let traced = start.elapsed();
    let t = Instant::now();
    let text = g.to_stablehlo(&[&out])?;
    let printed = t.elapsed();
    println!(
        "{} nodes: trace {:.1} ms, print {:.1} ms ({} lines, {:.1} MB)",
        g.num_nodes(),
        ms(traced),
        ms(printed),
        text.lines().count(),
        text.len() as f64 / 1e6
    );
    let forward_nodes = g.num_nodes();
    let t = Instant::now();
    let (loss, grads) = xla_graphs::value_and_grad(&out, &[x])?;
    let differentiated = t.elapsed();
    let t = Instant::now();
    let text = g.to_stablehlo(&[&loss, &grads[0]])?;
    println!(
        "value_and_grad added {} nodes in {:.1} ms; printing forward + backward: {:.1} ms ({:.1} MB)",
        g.num_nodes() - forward_nodes,
        ms(differentiated),
        ms(t.elapsed()),
        text.len() as f64 / 1e6
    );
    Ok(())
}

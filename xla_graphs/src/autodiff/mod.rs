//! Reverse-mode autodiff with pruning. Only values that depend on a differentiated input and
//! lead to an output get cotangents, so with respect to an embedding the backward of a model
//! computes activation gradients and never a weight gradient. Cotangents of a value used
//! several times are summed.

mod vjp;

use crate::graph::ValueId;
use crate::{Graph, GraphError, Result, Tensor};

/// The loss and its gradient with respect to each of `wrt` (any float values of the loss's
/// graph, usually parameters). The loss must be a float scalar.
pub fn value_and_grad(loss: &Tensor, wrt: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
    let s = loss.shape();
    if s.rank() != 0 || !s.dtype.is_float() {
        return Err(GraphError::invalid(
            "value_and_grad",
            format!("the loss must be a float scalar, got {s}"),
        ));
    }
    let seed = loss.full_like(1.0)?;
    let grads = vjp(std::slice::from_ref(loss), &[seed], wrt)?;
    Ok((loss.clone(), grads))
}

/// Pulls `cotangents` (one per output, same types) back to `wrt`: the vector-Jacobian product.
/// A `wrt` value the outputs do not depend on gets zeros.
pub fn vjp(outputs: &[Tensor], cotangents: &[Tensor], wrt: &[Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = outputs.first() else {
        return Err(GraphError::invalid("vjp", "no outputs"));
    };
    let g = first.graph().clone();
    if outputs.len() != cotangents.len() {
        return Err(GraphError::invalid("vjp", "need one cotangent per output"));
    }
    for t in outputs.iter().chain(cotangents).chain(wrt) {
        if !t.graph().same_as(&g) {
            return Err(GraphError::invalid("vjp", "tensors from different graphs"));
        }
    }
    for (o, c) in outputs.iter().zip(cotangents) {
        if o.shape() != c.shape() {
            return Err(GraphError::invalid(
                "vjp",
                format!(
                    "cotangent {} does not match output {}",
                    c.shape(),
                    o.shape()
                ),
            ));
        }
    }
    for w in wrt {
        if !w.dtype().is_float() {
            return Err(GraphError::invalid(
                "vjp",
                format!("cannot differentiate with respect to {}", w.shape()),
            ));
        }
    }
    let _scope = g.scope("backward");
    let mut walk = Walk::new(&g, wrt);
    for (o, c) in outputs.iter().zip(cotangents) {
        if walk.depends[o.id.index()] {
            walk.accumulate(o.id, c.clone())?;
        }
    }
    let last = outputs
        .iter()
        .map(|o| walk.node_of(o.id))
        .max()
        .unwrap_or(0);
    walk.run(last)?;
    wrt.iter()
        .map(|w| match walk.cts[w.id.index()].take() {
            Some(ct) => Ok(ct),
            None => w.zeros_like(),
        })
        .collect()
}

struct Walk {
    g: Graph,
    /// Per value (as of the start): depends on a `wrt` value and is a float.
    depends: Vec<bool>,
    cts: Vec<Option<Tensor>>,
    first_node: usize,
}

impl Walk {
    fn new(g: &Graph, wrt: &[Tensor]) -> Walk {
        let inner = g.borrow();
        let mut depends = vec![false; inner.values.len()];
        for w in wrt {
            depends[w.id.index()] = true;
        }
        let first_node = wrt
            .iter()
            .map(|w| inner.values[w.id.index()].node as usize)
            .min()
            .unwrap_or(usize::MAX);
        for node in inner.nodes.iter().skip(first_node) {
            let blocked = matches!(node.op, crate::Op::StopGradient);
            if !blocked && node.operands.iter().any(|v| depends[v.index()]) {
                for r in node.first_result..node.first_result + node.num_results {
                    if inner.values[r as usize].shape.dtype.is_float() {
                        depends[r as usize] = true;
                    }
                }
            }
        }
        let n = depends.len();
        Walk {
            g: g.clone(),
            depends,
            cts: vec![None; n],
            first_node,
        }
    }

    fn node_of(&self, v: ValueId) -> usize {
        self.g.borrow().values[v.index()].node as usize
    }

    fn accumulate(&mut self, v: ValueId, ct: Tensor) -> Result<()> {
        let want = self.g.borrow().shape(v).clone();
        if ct.shape() != want {
            return Err(GraphError::invalid(
                "vjp",
                format!(
                    "internal: a cotangent {} reached a value of type {want}",
                    ct.shape()
                ),
            ));
        }
        let slot = &mut self.cts[v.index()];
        *slot = Some(match slot.take() {
            Some(prev) => prev.add(&ct)?,
            None => ct,
        });
        Ok(())
    }

    /// Visits nodes from `last` back to the first `wrt` node, applying each rule once all
    /// uses of its results (which come later) have contributed.
    fn run(&mut self, last: usize) -> Result<()> {
        if self.first_node == usize::MAX {
            return Ok(());
        }
        for n in (self.first_node..=last).rev() {
            let (op, operands, results) = {
                let inner = self.g.borrow();
                let node = &inner.nodes[n];
                let results: Vec<ValueId> = (node.first_result
                    ..node.first_result + node.num_results)
                    .map(ValueId)
                    .collect();
                if results.iter().all(|r| self.cts[r.index()].is_none())
                    || !node.operands.iter().any(|v| self.depends[v.index()])
                {
                    continue;
                }
                (node.op.clone(), node.operands.clone(), results)
            };
            let needs: Vec<bool> = operands.iter().map(|v| self.depends[v.index()]).collect();
            let x: Vec<Tensor> = operands.iter().map(|&v| self.g.tensor(v)).collect();
            let y: Vec<Tensor> = results.iter().map(|&v| self.g.tensor(v)).collect();
            let cts: Vec<Option<Tensor>> = results
                .iter()
                .map(|r| self.cts[r.index()].clone())
                .collect();
            let operand_cts = vjp::vjp(&self.g, &op, &x, &y, &cts, &needs)?;
            for ((v, need), ct) in operands.iter().zip(needs).zip(operand_cts) {
                if let (true, Some(ct)) = (need, ct) {
                    self.accumulate(*v, ct)?;
                }
            }
        }
        Ok(())
    }
}

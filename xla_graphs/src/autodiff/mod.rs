//! Reverse-mode autodiff with pruning. Only values that depend on a differentiated input and
//! lead to an output get cotangents, so with respect to an embedding the backward of a model
//! computes activation gradients and never a weight gradient. Cotangents of a value used
//! several times are summed. An operand with a rule attached by `Graph::set_custom_vjp` gets
//! its cotangent from that rule rather than from its op's.

mod vjp;

use crate::graph::{CustomVjp, ValueId};
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
            let custom: Vec<Option<CustomVjp>> = needs
                .iter()
                .enumerate()
                .map(|(i, &need)| need.then(|| self.g.custom_vjp(n, i)).flatten())
                .collect();
            // The op's rule builds only what no custom rule replaces (its expensive branches
            // check `needs`), and is not called at all when nothing is left to it.
            let op_needs: Vec<bool> = needs
                .iter()
                .zip(&custom)
                .map(|(&need, c)| need && c.is_none())
                .collect();
            let mut operand_cts = if op_needs.contains(&true) {
                vjp::vjp(&self.g, &op, &x, &y, &cts, &op_needs)?
            } else {
                Vec::new()
            };
            operand_cts.resize(x.len(), None);
            for (i, c) in custom.iter().enumerate() {
                if let (Some(c), Some(Some(ct))) = (c, cts.first()) {
                    let residuals: Vec<Tensor> =
                        c.residuals.iter().map(|&r| self.g.tensor(r)).collect();
                    let got = (c.rule)(ct, &residuals)?;
                    if got.shape() != x[i].shape() {
                        return Err(GraphError::invalid(
                            "vjp",
                            format!(
                                "the custom rule for operand {i} of {} returned {}, want {}",
                                op.name(),
                                got.shape(),
                                x[i].shape()
                            ),
                        ));
                    }
                    operand_cts[i] = Some(got);
                }
            }
            for ((v, need), ct) in operands.iter().zip(needs).zip(operand_cts) {
                if let (true, Some(ct)) = (need, ct) {
                    self.accumulate(*v, ct)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Shape};
    use std::cell::Cell;
    use std::rc::Rc;

    /// Names of the ops recorded from node `from` on that take `v` as an operand.
    fn users_from(g: &Graph, from: usize, v: &Tensor) -> Vec<&'static str> {
        g.borrow().nodes[from..]
            .iter()
            .filter(|n| n.operands.contains(&v.id))
            .map(|n| n.op.name())
            .collect()
    }

    /// In `tanh(x * w)` with a rule (`ct * r`) on `x`: the rule replaces the multiply's rule
    /// for `x` (nothing in the backward uses `w`) and runs only when `x` needs a cotangent,
    /// and `w`'s cotangent (`ct * x`) is built only when `w` is differentiated.
    #[test]
    fn a_custom_rule_replaces_the_op_rule_and_keeps_pruning() {
        let g = Graph::new();
        let s = Shape::new(DType::F32, &[3]);
        let x = g.parameter("x", s.clone()).unwrap();
        let w = g.parameter("w", s.clone()).unwrap();
        let r = g.parameter("r", s).unwrap();
        let y = x.multiply(&w).unwrap();
        let calls = Rc::new(Cell::new(0));
        let counter = Rc::clone(&calls);
        g.set_custom_vjp(&y, 0, &[&r], move |ct, residuals| {
            counter.set(counter.get() + 1);
            ct.multiply(&residuals[0])
        })
        .unwrap();
        let loss = y.tanh().unwrap().sum_all().unwrap();
        let multiply = ["stablehlo.multiply"];

        let start = g.num_nodes();
        value_and_grad(&loss, std::slice::from_ref(&w)).unwrap();
        assert_eq!(calls.get(), 0, "x needs no cotangent");
        assert!(users_from(&g, start, &r).is_empty());
        assert_eq!(
            users_from(&g, start, &x),
            multiply,
            "w's cotangent: the op's rule"
        );

        let start = g.num_nodes();
        value_and_grad(&loss, std::slice::from_ref(&x)).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(
            users_from(&g, start, &r),
            multiply,
            "x's cotangent: the rule"
        );
        assert!(
            users_from(&g, start, &w).is_empty(),
            "the op's rule for x not built"
        );
        assert!(users_from(&g, start, &x).is_empty(), "w's cotangent pruned");

        let start = g.num_nodes();
        value_and_grad(&loss, &[x.clone(), w.clone()]).unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(users_from(&g, start, &r), multiply);
        assert_eq!(users_from(&g, start, &x), multiply);
        assert!(users_from(&g, start, &w).is_empty());
    }

    #[test]
    fn custom_rules_are_checked() {
        let g = Graph::new();
        let s = Shape::new(DType::F32, &[3]);
        let x = g.parameter("x", s.clone()).unwrap();
        let y = x.tanh().unwrap();
        let identity = |ct: &Tensor, _: &[Tensor]| Ok(ct.clone());
        assert!(
            g.set_custom_vjp(&y, 1, &[], identity).is_err(),
            "no operand 1"
        );
        assert!(
            g.set_custom_vjp(&x, 0, &[], identity).is_err(),
            "a parameter"
        );
        let other = Graph::new().parameter("o", s.clone()).unwrap();
        assert!(g.set_custom_vjp(&y, 0, &[&other], identity).is_err());
        let both = g.optimization_barrier(&[x.clone(), y.clone()]).unwrap();
        assert!(g.set_custom_vjp(&both[0], 0, &[], identity).is_err());
        // The rule's cotangent must have the operand's type.
        g.set_custom_vjp(&y, 0, &[], |ct, _| ct.sum_all()).unwrap();
        assert!(
            g.set_custom_vjp(&y, 0, &[], identity).is_err(),
            "one rule per operand"
        );
        let loss = y.sum_all().unwrap();
        let err = value_and_grad(&loss, &[x]).unwrap_err();
        assert!(err.to_string().contains("custom rule"), "{err}");
    }
}

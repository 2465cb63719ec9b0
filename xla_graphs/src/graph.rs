//! The tracer: a `Graph` that records ops as they are called and cheap `Tensor` handles to
//! the values it holds. Every op is shape-checked when it is recorded. A node may also carry
//! custom cotangent rules that the autodiff uses instead of its op's own (`set_custom_vjp`).

use crate::error::Operands;
use crate::infer::infer;
use crate::{GraphError, Op, Result, Shape};
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// Index of a value (one result of one node) in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One recorded op. Nodes are appended in the order they were traced, which is a topological
/// order: an op can only use values that already exist.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub operands: Vec<ValueId>,
    pub first_result: u32,
    pub num_results: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub node: u32,
    pub shape: Shape,
}

/// Attributes of an argument of the printed `@main`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArgAttrs {
    /// Donate this argument's buffer to output N (`tf.aliasing_output = N : i32`).
    pub aliasing_output: Option<usize>,
    /// An XLA HLO sharding string such as `{replicated}` (`mhlo.sharding = "..."`).
    pub sharding: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub value: ValueId,
    pub name: String,
    pub attrs: ArgAttrs,
}

#[derive(Default)]
pub(crate) struct GraphInner {
    pub nodes: Vec<Node>,
    pub values: Vec<Value>,
    pub params: Vec<Param>,
    scopes: Vec<String>,
    /// (node, operand) -> the rule that replaces the op's own for that operand's cotangent
    /// (see `Graph::set_custom_vjp`).
    custom_vjps: HashMap<(usize, usize), CustomVjp>,
}

/// A cotangent rule attached with `Graph::set_custom_vjp`: the cotangent of the node's result
/// and the residuals in, the cotangent of one operand out.
pub(crate) type VjpRule = Rc<dyn Fn(&Tensor, &[Tensor]) -> Result<Tensor>>;

/// A rule and its residuals. The residuals are kept as ids, not `Tensor`s, because a tensor
/// holds its graph: stored in the graph it would keep the graph alive forever.
#[derive(Clone)]
pub(crate) struct CustomVjp {
    pub rule: VjpRule,
    pub residuals: Vec<ValueId>,
}

impl GraphInner {
    pub fn path(&self) -> String {
        if self.scopes.is_empty() {
            "<root>".to_string()
        } else {
            self.scopes.join(".")
        }
    }

    pub fn shape(&self, v: ValueId) -> &Shape {
        &self.values[v.index()].shape
    }
}

/// A graph under construction. Cloning shares the same graph.
#[derive(Clone, Default)]
pub struct Graph {
    pub(crate) inner: Rc<RefCell<GraphInner>>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        write!(
            f,
            "Graph({} nodes, {} parameters)",
            inner.nodes.len(),
            inner.params.len()
        )
    }
}

/// A handle to one value of a graph: cheap to clone, carries its graph along.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) graph: Graph,
    pub(crate) id: ValueId,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(%{} : {})", self.id.0, self.shape())
    }
}

impl Tensor {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn id(&self) -> ValueId {
        self.id
    }

    pub fn shape(&self) -> Shape {
        self.graph.inner.borrow().shape(self.id).clone()
    }

    pub fn dims(&self) -> Vec<i64> {
        self.graph.inner.borrow().shape(self.id).dims.clone()
    }

    pub fn dtype(&self) -> crate::DType {
        self.graph.inner.borrow().shape(self.id).dtype
    }

    pub fn rank(&self) -> usize {
        self.graph.inner.borrow().shape(self.id).rank()
    }

    /// The name of the op that made this value (`parameter` for arguments).
    pub fn op_name(&self) -> &'static str {
        let inner = self.graph.inner.borrow();
        let node = inner.values[self.id.index()].node;
        inner.nodes[node as usize].op.name()
    }
}

/// Pops its name-scope when dropped; see `Graph::scope`.
pub struct ScopeGuard {
    graph: Graph,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        self.graph.inner.borrow_mut().scopes.pop();
    }
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn same_as(&self, other: &Graph) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Number of nodes traced so far (parameters included).
    pub fn num_nodes(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// Pushes `name` onto the layer path until the guard drops; errors raised meanwhile name
    /// the path, e.g. `unet.down_blocks.1.attentions.0`.
    pub fn scope(&self, name: impl Into<String>) -> ScopeGuard {
        self.inner.borrow_mut().scopes.push(name.into());
        ScopeGuard {
            graph: self.clone(),
        }
    }

    /// Runs `f` inside the name-scope `name`.
    pub fn with_scope<T>(&self, name: impl Into<String>, f: impl FnOnce() -> T) -> T {
        let _guard = self.scope(name);
        f()
    }

    /// The current layer path, `<root>` outside any scope.
    pub fn path(&self) -> String {
        self.inner.borrow().path()
    }

    pub(crate) fn tensor(&self, id: ValueId) -> Tensor {
        Tensor {
            graph: self.clone(),
            id,
        }
    }

    /// The operand shape of every `reduce` traced so far, in trace order (for tests that
    /// check which dtype statistics are computed in).
    #[cfg(test)]
    pub(crate) fn reduce_operands(&self) -> Vec<Shape> {
        let inner = self.borrow();
        inner
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Reduce { .. }))
            .map(|n| inner.shape(n.operands[0]).clone())
            .collect()
    }

    pub(crate) fn borrow(&self) -> Ref<'_, GraphInner> {
        self.inner.borrow()
    }

    /// An error for `op` raised by code above the shape rules (composites, autodiff).
    pub(crate) fn op_error(
        &self,
        op: &'static str,
        operands: &[&Tensor],
        reason: String,
    ) -> GraphError {
        let inner = self.inner.borrow();
        GraphError::Op {
            op,
            path: inner.path(),
            operands: Operands(operands.iter().map(|t| inner.shape(t.id).clone()).collect()),
            reason,
        }
    }

    /// Records `op` on `operands` after inferring and checking its result types.
    pub(crate) fn build(&self, op: Op, operands: &[&Tensor]) -> Result<Vec<Tensor>> {
        for (index, t) in operands.iter().enumerate() {
            if !t.graph.same_as(self) {
                return Err(GraphError::ForeignTensor {
                    op: op.name(),
                    path: self.path(),
                    index,
                });
            }
        }
        let mut inner = self.inner.borrow_mut();
        let results = {
            let shapes: Vec<&Shape> = operands.iter().map(|t| inner.shape(t.id)).collect();
            match infer(&op, &shapes) {
                Ok(r) => r,
                Err(reason) => {
                    return Err(GraphError::Op {
                        op: op.name(),
                        path: inner.path(),
                        operands: Operands(shapes.into_iter().cloned().collect()),
                        reason,
                    })
                }
            }
        };
        let node = inner.nodes.len() as u32;
        let first = inner.values.len() as u32;
        let n = results.len() as u32;
        for shape in results {
            inner.values.push(Value { node, shape });
        }
        inner.nodes.push(Node {
            op,
            operands: operands.iter().map(|t| t.id).collect(),
            first_result: first,
            num_results: n,
        });
        drop(inner);
        Ok((first..first + n)
            .map(|i| self.tensor(ValueId(i)))
            .collect())
    }

    /// `build` for the common single-result case.
    pub(crate) fn build1(&self, op: Op, operands: &[&Tensor]) -> Result<Tensor> {
        let name = op.name();
        let mut r = self.build(op, operands)?;
        match r.pop() {
            Some(t) if r.is_empty() => Ok(t),
            _ => Err(GraphError::invalid(name, "expected exactly one result")),
        }
    }

    /// A new argument of `@main`, numbered in the order parameters are made.
    pub fn parameter(&self, name: impl Into<String>, shape: Shape) -> Result<Tensor> {
        self.parameter_with(name, shape, ArgAttrs::default())
    }

    pub fn parameter_with(
        &self,
        name: impl Into<String>,
        shape: Shape,
        attrs: ArgAttrs,
    ) -> Result<Tensor> {
        let index = self.inner.borrow().params.len();
        let t = self.build1(Op::Parameter { index, shape }, &[])?;
        self.inner.borrow_mut().params.push(Param {
            value: t.id,
            name: name.into(),
            attrs,
        });
        Ok(t)
    }

    /// Replaces the printed attributes of parameter `param`.
    pub fn set_arg_attrs(&self, param: &Tensor, attrs: ArgAttrs) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        match inner
            .params
            .iter_mut()
            .find(|p| p.value == param.id && param.graph.same_as(self))
        {
            Some(p) => {
                p.attrs = attrs;
                Ok(())
            }
            None => Err(GraphError::invalid(
                "set_arg_attrs",
                "tensor is not a parameter of this graph",
            )),
        }
    }

    /// Makes the autodiff take the cotangent of operand `operand` of the node that made
    /// `output` from `rule` instead of from the op's own VJP rule (like `jax.custom_vjp`, for
    /// one operand). `rule` gets the cotangent of `output` and `residuals` (values of this
    /// graph it may use, in the order given) and must return a value of the operand's type.
    /// The rule runs only when that operand needs a cotangent, so pruning is as without it;
    /// the other operands keep the op's rule, and the residuals get no cotangent through it.
    /// For computing a gradient differently from how the op would, e.g. from a second copy of
    /// a frozen weight that the host laid out the way the backward needs it.
    ///
    /// `rule` should not capture `Tensor`s: the graph keeps it, and a tensor keeps its graph,
    /// so the graph would never be freed. Pass them as residuals instead.
    pub fn set_custom_vjp(
        &self,
        output: &Tensor,
        operand: usize,
        residuals: &[&Tensor],
        rule: impl Fn(&Tensor, &[Tensor]) -> Result<Tensor> + 'static,
    ) -> Result<()> {
        let what = "set_custom_vjp";
        if !output.graph.same_as(self) || residuals.iter().any(|r| !r.graph.same_as(self)) {
            return Err(GraphError::invalid(
                what,
                "the output and residuals must belong to this graph",
            ));
        }
        let mut inner = self.inner.borrow_mut();
        let node = inner.values[output.id.index()].node as usize;
        let (op, num_operands, num_results) = {
            let n = &inner.nodes[node];
            (n.op.name(), n.operands.len(), n.num_results)
        };
        // The rule gets one cotangent; a node with several results has one per result.
        if num_results != 1 {
            return Err(GraphError::invalid(
                what,
                format!("{op} has {num_results} results; custom rules need one"),
            ));
        }
        if operand >= num_operands {
            return Err(GraphError::invalid(
                what,
                format!("{op} has {num_operands} operands, no operand {operand}"),
            ));
        }
        if inner.custom_vjps.contains_key(&(node, operand)) {
            return Err(GraphError::invalid(
                what,
                format!("operand {operand} of this {op} already has a custom rule"),
            ));
        }
        inner.custom_vjps.insert(
            (node, operand),
            CustomVjp {
                rule: Rc::new(rule),
                residuals: residuals.iter().map(|r| r.id).collect(),
            },
        );
        Ok(())
    }

    /// The rule `set_custom_vjp` attached to operand `operand` of node `node`.
    pub(crate) fn custom_vjp(&self, node: usize, operand: usize) -> Option<CustomVjp> {
        self.inner
            .borrow()
            .custom_vjps
            .get(&(node, operand))
            .cloned()
    }

    /// The parameters in argument order.
    pub fn parameters(&self) -> Vec<Tensor> {
        let ids: Vec<ValueId> = self.inner.borrow().params.iter().map(|p| p.value).collect();
        ids.into_iter().map(|id| self.tensor(id)).collect()
    }

    pub fn parameter_name(&self, index: usize) -> Option<String> {
        self.inner
            .borrow()
            .params
            .get(index)
            .map(|p| p.name.clone())
    }
}

//! Cross-replica and scheduling ops: all_reduce (sum) and optimization_barrier.

use crate::op::Op;
use crate::{Graph, GraphError, Result, Shape, Tensor};

pub(crate) fn infer_all_reduce(x: &Shape, groups: &[Vec<i64>]) -> Result<Shape, String> {
    if groups.is_empty()
        || groups
            .iter()
            .any(|g| g.len() != groups[0].len() || g.is_empty())
    {
        return Err("replica_groups must be non-empty lists of equal length".into());
    }
    let mut all: Vec<i64> = groups.concat();
    all.sort_unstable();
    if all.windows(2).any(|w| w[0] == w[1]) || all.iter().any(|&r| r < 0) {
        return Err(format!(
            "replica_groups {groups:?} repeat or have negative replicas"
        ));
    }
    if !(x.dtype.is_float() || x.dtype.is_integer()) {
        return Err(format!("cannot sum {} across replicas", x.dtype));
    }
    Ok(x.clone())
}

impl Tensor {
    /// Sums `self` over the replicas of each group; every replica gets its group's sum.
    /// The program must be compiled for that many replicas: XLA does not check.
    pub fn all_reduce_sum(&self, replica_groups: &[Vec<i64>]) -> Result<Tensor> {
        let op = Op::AllReduce {
            replica_groups: replica_groups.to_vec(),
        };
        self.graph.build1(op, &[self])
    }
}

impl Graph {
    /// Returns its operands unchanged, but XLA may not move computation across it.
    pub fn optimization_barrier(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        if tensors.is_empty() {
            return Err(GraphError::invalid(
                "stablehlo.optimization_barrier",
                "needs an operand",
            ));
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        self.build(Op::OptimizationBarrier, &refs)
    }
}

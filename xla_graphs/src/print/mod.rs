//! The StableHLO printer: the ops reachable from the outputs as one `func.func public @main`
//! in generic op form. Same graph and outputs, same bytes.

mod attrs;

use crate::graph::{GraphInner, Node, ValueId};
use crate::literal::Literal;
use crate::op::{Op, ReduceKind};
use crate::ops::reduce::init_value;
use crate::{DType, Graph, GraphError, Result, Shape, Tensor};
use std::fmt::{self, Write};

/// Module-level choices of the printed program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleOptions {
    /// The MLIR module's symbol name (`module @name`).
    pub name: String,
    /// Written as `mhlo.num_replicas`/`mhlo.num_partitions` for readers; PJRT compile
    /// options are what count.
    pub num_replicas: Option<usize>,
    pub num_partitions: Option<usize>,
    /// `mhlo.sharding` per result, when set.
    pub result_shardings: Vec<Option<String>>,
}

impl Default for ModuleOptions {
    fn default() -> Self {
        ModuleOptions {
            name: "ti_xla".to_string(),
            num_replicas: None,
            num_partitions: None,
            result_shardings: Vec::new(),
        }
    }
}

impl Graph {
    /// Prints the program computing `outputs` from every parameter.
    pub fn to_stablehlo(&self, outputs: &[&Tensor]) -> Result<String> {
        self.to_stablehlo_with(outputs, &ModuleOptions::default())
    }

    pub fn to_stablehlo_with(
        &self,
        outputs: &[&Tensor],
        options: &ModuleOptions,
    ) -> Result<String> {
        for t in outputs {
            if !t.graph.same_as(self) {
                return Err(GraphError::invalid(
                    "print",
                    "an output belongs to a different graph",
                ));
            }
        }
        let ids: Vec<ValueId> = outputs.iter().map(|t| t.id).collect();
        let inner = self.inner.borrow();
        check_aliasing(&inner, &ids)?;
        let mut out = String::with_capacity(64 + inner.nodes.len() * 96);
        Printer::new(&inner)
            .module(&ids, options, &mut out)
            .map_err(|_| GraphError::invalid("print", "formatting failed"))?;
        Ok(out)
    }
}

fn check_aliasing(inner: &GraphInner, outputs: &[ValueId]) -> Result<()> {
    let mut taken = vec![false; outputs.len()];
    for p in &inner.params {
        if let Some(o) = p.attrs.aliasing_output {
            let ok =
                o < outputs.len() && !taken[o] && inner.shape(outputs[o]) == inner.shape(p.value);
            if !ok {
                return Err(GraphError::invalid(
                    "print",
                    format!("parameter `{}` cannot donate to output {o}: no such output of its type, or taken", p.name),
                ));
            }
            taken[o] = true;
        }
    }
    Ok(())
}

/// Writes `"..."` with MLIR string escapes.
fn write_quoted(out: &mut String, s: &str) -> fmt::Result {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

const NOT_PRINTED: u32 = u32::MAX;

struct Printer<'g> {
    g: &'g GraphInner,
    /// SSA number of each printed node (parameters print as `%argN` instead).
    names: Vec<u32>,
    next: u32,
}

impl<'g> Printer<'g> {
    fn new(g: &'g GraphInner) -> Self {
        Printer {
            g,
            names: vec![NOT_PRINTED; g.nodes.len()],
            next: 0,
        }
    }

    /// Marks the nodes the outputs depend on; parameters are always part of the signature.
    fn live(&self, outputs: &[ValueId]) -> Vec<bool> {
        let mut live = vec![false; self.g.nodes.len()];
        let mut stack: Vec<u32> = outputs
            .iter()
            .map(|v| self.g.values[v.index()].node)
            .collect();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut live[n as usize], true) {
                continue;
            }
            for v in &self.g.nodes[n as usize].operands {
                let m = self.g.values[v.index()].node;
                if !live[m as usize] {
                    stack.push(m);
                }
            }
        }
        live
    }

    fn fresh(&mut self) -> u32 {
        self.next += 1;
        self.next - 1
    }

    fn value(&self, v: ValueId, out: &mut String) -> fmt::Result {
        let info = &self.g.values[v.index()];
        let node = &self.g.nodes[info.node as usize];
        match node.op {
            Op::Parameter { index, .. } => return write!(out, "%arg{index}"),
            Op::StopGradient => return self.value(node.operands[0], out),
            _ => {}
        }
        write!(out, "%{}", self.names[info.node as usize])?;
        if node.num_results > 1 {
            write!(out, "#{}", v.0 - node.first_result)?;
        }
        Ok(())
    }

    fn module(
        &mut self,
        outputs: &[ValueId],
        opt: &ModuleOptions,
        out: &mut String,
    ) -> fmt::Result {
        out.push_str("module @");
        // Symbol names outside MLIR's bare-identifier alphabet must be quoted.
        let bare = opt
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && opt
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c));
        if bare {
            out.push_str(&opt.name);
        } else {
            write_quoted(out, &opt.name)?;
        }
        if opt.num_replicas.is_some() || opt.num_partitions.is_some() {
            out.push_str(" attributes {");
            let mut sep = "";
            if let Some(p) = opt.num_partitions {
                write!(out, "mhlo.num_partitions = {p} : i32")?;
                sep = ", ";
            }
            if let Some(r) = opt.num_replicas {
                write!(out, "{sep}mhlo.num_replicas = {r} : i32")?;
            }
            out.push('}');
        }
        out.push_str(" {\n  func.func public @main(");
        for (i, p) in self.g.params.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "%arg{i}: ")?;
            self.g.shape(p.value).write_mlir(out)?;
            let a = &p.attrs;
            if a.aliasing_output.is_some() || a.sharding.is_some() {
                out.push_str(" {");
                if let Some(s) = &a.sharding {
                    out.push_str("mhlo.sharding = ");
                    write_quoted(out, s)?;
                    if a.aliasing_output.is_some() {
                        out.push_str(", ");
                    }
                }
                if let Some(o) = a.aliasing_output {
                    write!(out, "tf.aliasing_output = {o} : i32")?;
                }
                out.push('}');
            }
        }
        out.push_str(") -> (");
        for (i, &v) in outputs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.g.shape(v).write_mlir(out)?;
            if let Some(Some(s)) = opt.result_shardings.get(i) {
                out.push_str(" {mhlo.sharding = ");
                write_quoted(out, s)?;
                out.push('}');
            }
        }
        out.push_str(") {\n");
        let live = self.live(outputs);
        let g = self.g;
        for (n, node) in g.nodes.iter().enumerate() {
            if live[n] && !matches!(node.op, Op::Parameter { .. } | Op::StopGradient) {
                self.node(n, node, out)?;
            }
        }
        out.push_str("    \"func.return\"(");
        self.value_list(outputs, out)?;
        out.push_str(") : (");
        self.type_list(outputs, out)?;
        out.push_str(") -> ()\n  }\n}\n");
        Ok(())
    }

    fn value_list(&self, vs: &[ValueId], out: &mut String) -> fmt::Result {
        for (i, &v) in vs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.value(v, out)?;
        }
        Ok(())
    }

    fn type_list(&self, vs: &[ValueId], out: &mut String) -> fmt::Result {
        for (i, &v) in vs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.g.shape(v).write_mlir(out)?;
        }
        Ok(())
    }

    /// A scalar constant line, used for reduce init values; returns its SSA number.
    fn scalar_constant(
        &mut self,
        dtype: DType,
        value: f64,
        out: &mut String,
    ) -> Result<u32, fmt::Error> {
        let id = self.fresh();
        write!(out, "    %{id} = \"stablehlo.constant\"() {{value = ")?;
        Literal::splat(dtype, &[], value).write_dense(out)?;
        let ty = Shape::scalar(dtype);
        writeln!(out, " : {ty}}} : () -> {ty}")?;
        Ok(id)
    }

    /// The region `^bb0(%a, %b): return a <op> b` of reduce, scatter and all_reduce.
    fn region(&mut self, kind: ReduceKind, dtype: DType, out: &mut String) -> fmt::Result {
        let (a, b, c) = (self.fresh(), self.fresh(), self.fresh());
        let ty = Shape::scalar(dtype);
        write!(out, "({{\n    ^bb0(%{a}: {ty}, %{b}: {ty}):\n")?;
        writeln!(
            out,
            "      %{c} = \"{}\"(%{a}, %{b}) : ({ty}, {ty}) -> {ty}",
            kind.combiner().name()
        )?;
        write!(
            out,
            "      \"stablehlo.return\"(%{c}) : ({ty}) -> ()\n    }}) "
        )
    }

    fn node(&mut self, n: usize, node: &Node, out: &mut String) -> fmt::Result {
        let g = self.g;
        let init = match &node.op {
            Op::Reduce { kind, .. } => {
                let dtype = g.shape(node.operands[0]).dtype;
                Some(self.scalar_constant(dtype, init_value(*kind, dtype), out)?)
            }
            _ => None,
        };
        let id = self.fresh();
        self.names[n] = id;
        write!(out, "    %{id}")?;
        if node.num_results > 1 {
            write!(out, ":{}", node.num_results)?;
        }
        write!(out, " = \"{}\"(", node.op.name())?;
        self.value_list(&node.operands, out)?;
        if let Some(i) = init {
            write!(out, ", %{i}")?;
        }
        out.push_str(") ");
        match &node.op {
            Op::Reduce { kind, .. } => self.region(*kind, g.shape(node.operands[0]).dtype, out)?,
            Op::Scatter(_) => self.region(ReduceKind::Sum, g.shape(node.operands[0]).dtype, out)?,
            Op::AllReduce { .. } => {
                self.region(ReduceKind::Sum, g.shape(node.operands[0]).dtype, out)?
            }
            _ => {}
        }
        attrs::write_attrs(&node.op, out)?;
        out.push_str(": (");
        self.type_list(&node.operands, out)?;
        if init.is_some() {
            write!(out, ", {}", Shape::scalar(g.shape(node.operands[0]).dtype))?;
        }
        out.push_str(") -> ");
        let results: Vec<ValueId> = (node.first_result..node.first_result + node.num_results)
            .map(ValueId)
            .collect();
        if results.len() == 1 {
            g.shape(results[0]).write_mlir(out)?;
        } else {
            out.push('(');
            self.type_list(&results, out)?;
            out.push(')');
        }
        out.push('\n');
        Ok(())
    }
}

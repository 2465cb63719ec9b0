//! Attribute dictionaries of the generic op form, in the syntax the PJRT plugins parse
//! (`array<i64: ..>`, `#stablehlo.dot<..>`, `#stablehlo.conv<..>`, dense padding).

use crate::op::{Op, Precision};
use crate::ops::convolution::ConvDimensionNumbers;
use std::fmt::{self, Write};

/// Collects `name = value` entries and writes them as `{a = .., b = ..} `.
struct Dict<'o> {
    out: &'o mut String,
    empty: bool,
}

impl<'o> Dict<'o> {
    fn new(out: &'o mut String) -> Self {
        Dict { out, empty: true }
    }

    fn key(&mut self, name: &str) -> &mut String {
        self.out.push_str(if self.empty { "{" } else { ", " });
        self.empty = false;
        self.out.push_str(name);
        self.out.push_str(" = ");
        self.out
    }

    fn i64_array<T: Copy + Into<i64>>(&mut self, name: &str, v: &[T]) -> fmt::Result {
        let out = self.key(name);
        out.push_str("array<i64");
        for (i, x) in v.iter().enumerate() {
            out.push_str(if i == 0 { ": " } else { ", " });
            write!(out, "{}", (*x).into())?;
        }
        out.push('>');
        Ok(())
    }

    fn i64(&mut self, name: &str, v: i64) -> fmt::Result {
        write!(self.key(name), "{v} : i64")
    }

    fn bool(&mut self, name: &str, v: bool) -> fmt::Result {
        write!(self.key(name), "{v}")
    }

    fn precision(&mut self, p: Precision) -> fmt::Result {
        if p != Precision::Default {
            let n = p.mlir_name();
            write!(
                self.key("precision_config"),
                "[#stablehlo<precision {n}>, #stablehlo<precision {n}>]"
            )?;
        }
        Ok(())
    }

    fn finish(self) {
        if !self.empty {
            self.out.push_str("} ");
        }
    }
}

fn usize_as_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// `name = [1, 2]` inside a structured attribute; empty lists are left out as MLIR does.
fn field(out: &mut String, sep: &mut &str, name: &str, v: &[usize]) -> fmt::Result {
    if v.is_empty() {
        return Ok(());
    }
    write!(out, "{sep}{name} = [")?;
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{x}")?;
    }
    out.push(']');
    *sep = ", ";
    Ok(())
}

/// One operand's layout in the compact `[b, f, 0, 1]` form: position = dimension index.
fn conv_layout(
    out: &mut String,
    rank: usize,
    a: (usize, char),
    b: (usize, char),
    spatial: &[usize],
) {
    let mut labels = vec![String::new(); rank];
    labels[a.0] = a.1.to_string();
    labels[b.0] = b.1.to_string();
    for (k, &s) in spatial.iter().enumerate() {
        labels[s] = k.to_string();
    }
    out.push('[');
    out.push_str(&labels.join(", "));
    out.push(']');
}

fn conv_dims(out: &mut String, d: &ConvDimensionNumbers) {
    let rank = d.spatial_rank() + 2;
    out.push_str("#stablehlo.conv<");
    conv_layout(
        out,
        rank,
        (d.input_batch_dimension, 'b'),
        (d.input_feature_dimension, 'f'),
        &d.input_spatial_dimensions,
    );
    out.push('x');
    conv_layout(
        out,
        rank,
        (d.kernel_input_feature_dimension, 'i'),
        (d.kernel_output_feature_dimension, 'o'),
        &d.kernel_spatial_dimensions,
    );
    out.push_str("->");
    conv_layout(
        out,
        rank,
        (d.output_batch_dimension, 'b'),
        (d.output_feature_dimension, 'f'),
        &d.output_spatial_dimensions,
    );
    out.push('>');
}

pub(super) fn write_attrs(op: &Op, out: &mut String) -> fmt::Result {
    let mut d = Dict::new(out);
    match op {
        Op::Parameter { .. }
        | Op::ReplicaId
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Select
        | Op::Clamp
        | Op::Convert(_)
        | Op::BitcastConvert(_)
        | Op::Reshape(_)
        | Op::DynamicUpdateSlice
        | Op::OptimizationBarrier
        | Op::StopGradient => {}
        Op::Constant(l) => {
            let o = d.key("value");
            l.write_dense(o)?;
            write!(o, " : {}", crate::Shape::new(l.dtype(), l.dims()))?;
        }
        Op::Iota { dimension, .. } => d.i64("iota_dimension", *dimension as i64)?,
        Op::Compare {
            direction,
            compare_type,
        } => {
            write!(
                d.key("compare_type"),
                "#stablehlo<comparison_type {}>",
                compare_type.mlir_name()
            )?;
            write!(
                d.key("comparison_direction"),
                "#stablehlo<comparison_direction {}>",
                direction.mlir_name()
            )?;
        }
        Op::Transpose(perm) => d.i64_array("permutation", &usize_as_i64(perm))?,
        Op::BroadcastInDim {
            broadcast_dimensions,
            ..
        } => d.i64_array("broadcast_dimensions", &usize_as_i64(broadcast_dimensions))?,
        Op::Reverse(dims) => d.i64_array("dimensions", &usize_as_i64(dims))?,
        Op::Slice {
            start,
            limit,
            strides,
        } => {
            d.i64_array("limit_indices", limit)?;
            d.i64_array("start_indices", start)?;
            d.i64_array("strides", strides)?;
        }
        Op::DynamicSlice { sizes } => d.i64_array("slice_sizes", sizes)?,
        Op::Concatenate { dimension } => d.i64("dimension", *dimension as i64)?,
        Op::Pad {
            low,
            high,
            interior,
        } => {
            d.i64_array("edge_padding_high", high)?;
            d.i64_array("edge_padding_low", low)?;
            d.i64_array("interior_padding", interior)?;
        }
        Op::Reduce { dimensions, .. } => d.i64_array("dimensions", &usize_as_i64(dimensions))?,
        Op::DotGeneral(a) => {
            let o = d.key("dot_dimension_numbers");
            o.push_str("#stablehlo.dot<");
            let mut sep = "";
            field(
                o,
                &mut sep,
                "lhs_batching_dimensions",
                &a.dims.lhs_batching_dimensions,
            )?;
            field(
                o,
                &mut sep,
                "rhs_batching_dimensions",
                &a.dims.rhs_batching_dimensions,
            )?;
            field(
                o,
                &mut sep,
                "lhs_contracting_dimensions",
                &a.dims.lhs_contracting_dimensions,
            )?;
            field(
                o,
                &mut sep,
                "rhs_contracting_dimensions",
                &a.dims.rhs_contracting_dimensions,
            )?;
            o.push('>');
            d.precision(a.precision)?;
        }
        Op::Convolution(c) => {
            d.i64("batch_group_count", c.batch_group_count)?;
            conv_dims(d.key("dimension_numbers"), &c.dims);
            d.i64("feature_group_count", c.feature_group_count)?;
            d.i64_array("lhs_dilation", &c.lhs_dilation)?;
            if !c.padding.is_empty() {
                let o = d.key("padding");
                o.push_str("dense<[");
                for (i, (lo, hi)) in c.padding.iter().enumerate() {
                    if i > 0 {
                        o.push_str(", ");
                    }
                    write!(o, "[{lo}, {hi}]")?;
                }
                write!(o, "]> : tensor<{}x2xi64>", c.padding.len())?;
            }
            d.precision(c.precision)?;
            d.i64_array("rhs_dilation", &c.rhs_dilation)?;
            d.i64_array("window_strides", &c.window_strides)?;
        }
        Op::Gather(g) => {
            let o = d.key("dimension_numbers");
            o.push_str("#stablehlo.gather<");
            let mut sep = "";
            let n = &g.dims;
            field(o, &mut sep, "offset_dims", &n.offset_dims)?;
            field(o, &mut sep, "collapsed_slice_dims", &n.collapsed_slice_dims)?;
            field(
                o,
                &mut sep,
                "operand_batching_dims",
                &n.operand_batching_dims,
            )?;
            field(
                o,
                &mut sep,
                "start_indices_batching_dims",
                &n.start_indices_batching_dims,
            )?;
            field(o, &mut sep, "start_index_map", &n.start_index_map)?;
            write!(o, "{sep}index_vector_dim = {}>", n.index_vector_dim)?;
            d.bool("indices_are_sorted", g.indices_are_sorted)?;
            d.i64_array("slice_sizes", &g.slice_sizes)?;
        }
        Op::Scatter(s) => {
            d.bool("indices_are_sorted", s.indices_are_sorted)?;
            let o = d.key("scatter_dimension_numbers");
            o.push_str("#stablehlo.scatter<");
            let mut sep = "";
            let n = &s.dims;
            field(o, &mut sep, "update_window_dims", &n.update_window_dims)?;
            field(o, &mut sep, "inserted_window_dims", &n.inserted_window_dims)?;
            field(o, &mut sep, "input_batching_dims", &n.input_batching_dims)?;
            field(
                o,
                &mut sep,
                "scatter_indices_batching_dims",
                &n.scatter_indices_batching_dims,
            )?;
            field(
                o,
                &mut sep,
                "scatter_dims_to_operand_dims",
                &n.scatter_dims_to_operand_dims,
            )?;
            write!(o, "{sep}index_vector_dim = {}>", n.index_vector_dim)?;
            d.bool("unique_indices", s.unique_indices)?;
        }
        Op::AllReduce { replica_groups } => {
            let o = d.key("replica_groups");
            o.push_str("dense<[");
            for (i, grp) in replica_groups.iter().enumerate() {
                if i > 0 {
                    o.push_str(", ");
                }
                o.push('[');
                for (j, r) in grp.iter().enumerate() {
                    if j > 0 {
                        o.push_str(", ");
                    }
                    write!(o, "{r}")?;
                }
                o.push(']');
            }
            let width = replica_groups.first().map_or(0, |g| g.len());
            write!(o, "]> : tensor<{}x{width}xi64>", replica_groups.len())?;
        }
    }
    d.finish();
    Ok(())
}

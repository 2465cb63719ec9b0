//! Binding a traced model to its checkpoint: models ask for each weight by its checkpoint key
//! and shape, get a graph parameter in the compute dtype, and the binding remembers every
//! argument it made, in argument order, so the host can check the weight files and upload
//! tensors in exactly that order. Inputs that are not weights (token ids, latents) are declared
//! through the same binding so their place among the arguments is defined too.
//!
//! ```
//! use xla_graphs::models::params::{ParamKind, Params};
//! use xla_graphs::{DType, Graph, Shape};
//! let g = Graph::new();
//! let p = Params::new(&g, DType::F32);
//! let ids = p.input("input_ids", Shape::new(DType::I32, &[2, 77])).unwrap();
//! let w = p
//!     .scope("text_model.final_layer_norm", |p| p.get("weight", &[768]))
//!     .unwrap();
//! let specs = p.specs();
//! assert_eq!(specs[1].name, "text_model.final_layer_norm.weight");
//! assert_eq!(specs[1].kind, ParamKind::Weight);
//! assert_eq!((ids.dims(), w.dims()), (vec![2, 77], vec![768]));
//! ```

use crate::{DType, Graph, GraphError, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// What an argument of the traced program is fed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A frozen tensor read from the checkpoint under `name`.
    Weight,
    /// A value the caller supplies at run time (token ids, latents, a timestep).
    Input,
}

/// How the convolution kernels a gradient passes through are bound: a property of the backend
/// a program runs on, which the host chooses per device (`ti_xla::runtime::device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GradientKernels {
    /// Once: the convolution's VJP rearranges the kernel inside the program (GPU and TPU
    /// backends fold that into their backward-data convolution).
    #[default]
    InProgram,
    /// Also a second time, reversed and feature-exchanged by the host at upload, for a custom
    /// input-gradient rule (see `Params::with_reversed_kernels`): XLA's CPU backend otherwise
    /// copies every kernel on every run. Costs a second copy of the kernels.
    Uploaded,
}

/// One argument of the traced `@main`, as the host needs to feed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Position among the program's arguments.
    pub index: usize,
    /// Full checkpoint key for a weight; the interface name for an input.
    pub name: String,
    /// The argument's shape (for a transposed weight, not the checkpoint's: see
    /// `checkpoint_dims`).
    pub shape: Shape,
    pub kind: ParamKind,
    /// For a weight the program takes rearranged (see `WeightLayout`); the host rearranges
    /// the tensor once, at upload, so the program gets the layout its consumer wants (HWIO
    /// conv kernels) without a copy on every run.
    pub layout: Option<WeightLayout>,
}

/// How an argument is made from the checkpoint tensor: transposed so that argument dimension
/// `i` is checkpoint dimension `permutation[i]`, then reversed along the argument's
/// `reversed` dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightLayout {
    pub permutation: Vec<usize>,
    pub reversed: Vec<usize>,
}

impl ParamSpec {
    /// The tensor's dimensions as the checkpoint stores them.
    pub fn checkpoint_dims(&self) -> Vec<i64> {
        match &self.layout {
            None => self.shape.dims.clone(),
            Some(layout) => {
                let mut dims = vec![0; layout.permutation.len()];
                for (i, &src) in layout.permutation.iter().enumerate() {
                    dims[src] = self.shape.dims[i];
                }
                dims
            }
        }
    }
}

#[derive(Default)]
struct Bound {
    specs: Vec<ParamSpec>,
    /// Lets a weight asked for twice (tied weights) be one argument; one checkpoint tensor in
    /// two layouts is two arguments.
    by_name: HashMap<(String, Option<WeightLayout>), Tensor>,
    /// Activations recorded with `tap`, keyed by their module path.
    taps: Option<Vec<(String, Tensor)>>,
}

/// A view of the binding at one key prefix. Cloning shares the record; `scope` makes nested
/// views. All views of one binding must use one graph.
#[derive(Clone)]
pub struct Params {
    graph: Graph,
    dtype: DType,
    prefix: String,
    bound: Rc<RefCell<Bound>>,
    /// Convolutions under this view also bind their kernel reversed for the input gradient
    /// (see `with_reversed_kernels`).
    reversed_kernels: bool,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Params(prefix {:?}, {} arguments, {})",
            self.prefix,
            self.bound.borrow().specs.len(),
            self.dtype
        )
    }
}

impl Params {
    /// A binding whose weights are parameters of `graph` in `dtype` (the compute dtype).
    pub fn new(graph: &Graph, dtype: DType) -> Params {
        Params {
            graph: graph.clone(),
            dtype,
            prefix: String::new(),
            bound: Rc::default(),
            reversed_kernels: false,
        }
    }

    /// This view, with convolutions also binding each kernel a second time, reversed and
    /// feature-exchanged, for a custom input-gradient rule (`Graph::set_custom_vjp`), so that a
    /// gradient through them needs no kernel copy per run. For programs that differentiate
    /// through frozen convolutions on backends that copy (XLA's CPU); it costs a second copy
    /// of the kernels in device memory.
    pub fn with_reversed_kernels(&self) -> Params {
        Params {
            reversed_kernels: true,
            ..self.clone()
        }
    }

    /// This view with convolution kernels bound as `kernels` says.
    pub fn with_gradient_kernels(&self, kernels: GradientKernels) -> Params {
        match kernels {
            GradientKernels::InProgram => self.clone(),
            GradientKernels::Uploaded => self.with_reversed_kernels(),
        }
    }

    /// This view binding weights (and computing) in `dtype` instead: one model of a program
    /// kept in f32 while the others run in half precision (SDXL's `force_upcast` VAE).
    pub fn with_dtype(&self, dtype: DType) -> Params {
        Params {
            dtype,
            ..self.clone()
        }
    }

    /// Whether convolutions bind reversed kernels too (`with_reversed_kernels`).
    pub fn reversed_kernels(&self) -> bool {
        self.reversed_kernels
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The compute dtype weights are bound in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The key prefix of this view, without a trailing dot (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full checkpoint key of `name` under this view.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Runs `f` with a view whose keys start with `name` (which may hold dots, such as
    /// `layers.0`), inside the graph scope of the same name, so that a shape error raised by
    /// `f` names the module path the checkpoint uses.
    pub fn scope<T>(&self, name: impl AsRef<str>, f: impl FnOnce(&Params) -> T) -> T {
        let name = name.as_ref();
        let child = Params {
            prefix: self.key(name),
            ..self.clone()
        };
        // A closure rather than a returned guard keeps the graph's scope stack in step with
        // the views: a scope cannot outlive its parent or be popped out of order.
        self.graph.with_scope(name, || f(&child))
    }

    /// The weight `name` under this view, declared with `dims` in the compute dtype.
    pub fn get(&self, name: &str, dims: &[i64]) -> Result<Tensor> {
        self.get_as(name, dims, self.dtype)
    }

    /// The weight `name` in an explicit dtype (for tensors kept in f32 whatever the compute
    /// dtype). Asking twice for one key returns the same parameter; a different shape or dtype
    /// the second time is an error.
    pub fn get_as(&self, name: &str, dims: &[i64], dtype: DType) -> Result<Tensor> {
        self.bind(name, Shape::new(dtype, dims), None)
    }

    /// The weight `name`, stored in the checkpoint with `dims`, as a parameter transposed by
    /// `permutation` (argument dimension `i` is checkpoint dimension `permutation[i]`), in the
    /// compute dtype. The host transposes it at upload (see `ParamSpec::layout`).
    pub fn get_transposed(
        &self,
        name: &str,
        dims: &[i64],
        permutation: &[usize],
    ) -> Result<Tensor> {
        let layout = WeightLayout {
            permutation: permutation.to_vec(),
            reversed: Vec::new(),
        };
        self.get_laid_out(name, dims, layout)
    }

    /// The weight `name`, stored with `dims`, as the parameter `layout` makes of it, in the
    /// compute dtype.
    pub fn get_laid_out(&self, name: &str, dims: &[i64], layout: WeightLayout) -> Result<Tensor> {
        let rank = dims.len();
        let mut sorted = layout.permutation.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() || layout.reversed.iter().any(|&d| d >= rank) {
            return Err(GraphError::Invalid {
                what: "weight",
                reason: format!(
                    "{}: {layout:?} does not fit a weight of {rank} dimensions",
                    self.key(name)
                ),
            });
        }
        let arg: Vec<i64> = layout.permutation.iter().map(|&i| dims[i]).collect();
        self.bind(name, Shape::new(self.dtype, &arg), Some(layout))
    }

    fn bind(&self, name: &str, shape: Shape, layout: Option<WeightLayout>) -> Result<Tensor> {
        let key = (self.key(name), layout);
        if let Some(t) = self.bound.borrow().by_name.get(&key) {
            let have = t.shape();
            if have != shape {
                return Err(GraphError::Invalid {
                    what: "weight",
                    reason: format!(
                        "{} is bound as {have} and requested again as {shape}",
                        key.0
                    ),
                });
            }
            return Ok(t.clone());
        }
        let t = self.declare(key.0.clone(), shape, ParamKind::Weight, key.1.clone())?;
        self.bound.borrow_mut().by_name.insert(key, t.clone());
        Ok(t)
    }

    /// A run-time input named `name` (not prefixed: inputs are the program's interface, not
    /// checkpoint keys). Inputs keep the dtype given here.
    pub fn input(&self, name: &str, shape: Shape) -> Result<Tensor> {
        if self.bound.borrow().specs.iter().any(|s| s.name == name) {
            return Err(GraphError::Invalid {
                what: "input",
                reason: format!("{name} is declared twice"),
            });
        }
        self.declare(name.to_string(), shape, ParamKind::Input, None)
    }

    fn declare(
        &self,
        name: String,
        shape: Shape,
        kind: ParamKind,
        layout: Option<WeightLayout>,
    ) -> Result<Tensor> {
        let t = self.graph.parameter(name.clone(), shape.clone())?;
        // The argument index is the graph's (the one just made is the last), so parameters
        // made outside the binding (a trainer's optimizer state) cannot shift what goes where.
        let index = self.graph.parameters().len() - 1;
        self.bound.borrow_mut().specs.push(ParamSpec {
            index,
            name,
            shape,
            kind,
            layout,
        });
        Ok(t)
    }

    /// Every argument declared through this binding, in argument order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.bound.borrow().specs.clone()
    }

    /// The weights only, in argument order.
    pub fn weights(&self) -> Vec<ParamSpec> {
        self.of_kind(ParamKind::Weight)
    }

    /// The inputs only, in argument order.
    pub fn inputs(&self) -> Vec<ParamSpec> {
        self.of_kind(ParamKind::Input)
    }

    fn of_kind(&self, kind: ParamKind) -> Vec<ParamSpec> {
        let bound = self.bound.borrow();
        bound
            .specs
            .iter()
            .filter(|s| s.kind == kind)
            .cloned()
            .collect()
    }

    /// Starts recording activations passed to `tap` (for layer-by-layer parity checks).
    pub fn record_taps(&self) {
        self.bound.borrow_mut().taps.get_or_insert_with(Vec::new);
    }

    /// Records `t` as the output of the module at this view's prefix, when recording.
    pub fn tap(&self, t: &Tensor) {
        if let Some(taps) = self.bound.borrow_mut().taps.as_mut() {
            taps.push((self.prefix.clone(), t.clone()));
        }
    }

    /// The recorded activations, keyed by module path, in the order they were made.
    pub fn taps(&self) -> Vec<(String, Tensor)> {
        self.bound.borrow().taps.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_shapes_and_argument_order() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let ids = p
            .input("input_ids", Shape::new(DType::I32, &[1, 4]))
            .unwrap();
        let extra = g.parameter("state", Shape::scalar(DType::F32)).unwrap();
        let (w, b) = p
            .scope("encoder", |p| {
                p.scope("layers.0.fc1", |p| {
                    Ok::<_, GraphError>((p.get("weight", &[3, 2])?, p.get("bias", &[3])?))
                })
            })
            .unwrap();
        assert_eq!(w.dtype(), DType::BF16);
        assert_eq!(ids.dtype(), DType::I32);
        let specs = p.specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "input_ids",
                "encoder.layers.0.fc1.weight",
                "encoder.layers.0.fc1.bias"
            ]
        );
        let indices: Vec<usize> = specs.iter().map(|s| s.index).collect();
        assert_eq!(indices, [0, 2, 3]);
        assert_eq!(g.parameters()[1].id(), extra.id());
        assert_eq!(p.weights().len(), 2);
        assert_eq!(p.inputs()[0].shape, Shape::new(DType::I32, &[1, 4]));
        assert_eq!(b.dims(), vec![3]);
        assert_eq!(
            g.parameter_name(2).as_deref(),
            Some("encoder.layers.0.fc1.weight")
        );
    }

    #[test]
    fn a_weight_asked_for_twice_is_one_argument() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let a = p.get("tok.weight", &[5, 2]).unwrap();
        let b = p.get("tok.weight", &[5, 2]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(p.specs().len(), 1);
        let err = p.get("tok.weight", &[5, 3]).unwrap_err().to_string();
        assert!(err.contains("tok.weight") && err.contains("5x3"), "{err}");
        assert!(p.input("x", Shape::scalar(DType::F32)).is_ok());
        assert!(p.input("x", Shape::scalar(DType::F32)).is_err());
    }

    #[test]
    fn a_transposed_weight_keeps_its_checkpoint_shape() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let w = p
            .scope("conv", |p| {
                p.get_transposed("weight", &[6, 4, 3, 2], &[2, 3, 1, 0])
            })
            .unwrap();
        assert_eq!(w.dims(), vec![3, 2, 4, 6]);
        let spec = &p.specs()[0];
        assert_eq!(spec.name, "conv.weight");
        assert_eq!(spec.layout.as_ref().unwrap().permutation, vec![2, 3, 1, 0]);
        assert_eq!(spec.checkpoint_dims(), vec![6, 4, 3, 2]);
        let again = p.get_transposed("conv.weight", &[6, 4, 3, 2], &[2, 3, 1, 0]);
        assert_eq!(again.unwrap().id(), w.id());
        // The same tensor in another layout is another argument.
        let plain = p.get("conv.weight", &[6, 4, 3, 2]).unwrap();
        assert_ne!(plain.id(), w.id());
        assert_eq!(p.specs()[1].checkpoint_dims(), vec![6, 4, 3, 2]);
        // Not a permutation, or a reversed axis out of range: errors.
        assert!(p.get_transposed("other", &[2, 2], &[0, 0]).is_err());
        let bad = WeightLayout {
            permutation: vec![1, 0],
            reversed: vec![2],
        };
        assert!(p.get_laid_out("other", &[2, 2], bad).is_err());
    }

    #[test]
    fn shape_errors_name_the_module_path() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let err = p
            .scope("text_model.encoder", |p| {
                p.scope("layers.1", |p| {
                    let a = p.get("a", &[2])?;
                    let b = p.get("b", &[3])?;
                    a.add(&b)
                })
            })
            .unwrap_err();
        assert_eq!(err.path(), Some("text_model.encoder.layers.1"));
        assert_eq!(g.path(), "<root>");
    }

    #[test]
    fn taps_are_recorded_only_when_asked() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let x = p.get("x", &[2]).unwrap();
        p.tap(&x);
        assert!(p.taps().is_empty());
        p.record_taps();
        p.scope("encoder.layers.0", |p| p.tap(&x));
        let taps = p.taps();
        assert_eq!(taps.len(), 1);
        assert_eq!(taps[0].0, "encoder.layers.0");
    }
}

//! A program's calling convention, declared once where the program is built: its run-time
//! inputs and its outputs are structs generic over the value they hold, so one definition
//! serves the tracer (`Tensor`s), the compiled program's declaration (`Arg`, `Output`: shape,
//! dtype, placement, donation) and the host (device buffers). The names and the order of the
//! arguments come from the struct's fields, in the order they are written.
//!
//! ```
//! use xla_graphs::programs::interface::{declare, finish, Arg, Args, Traced};
//! use xla_graphs::models::params::Params;
//! use xla_graphs::{program_args, DType, Graph};
//!
//! program_args! {
//!     /// What the toy program takes.
//!     pub struct ToyInputs<T> { pub x: T, pub scale: Option<T> }
//! }
//! program_args! {
//!     pub struct ToyOutputs<T> { pub y: T }
//! }
//! let g = Graph::new();
//! let p = Params::new(&g, DType::F32);
//! let decl = ToyInputs { x: Arg::sharded(DType::F32, &[2]), scale: None };
//! let t = declare(&p, &decl).unwrap();
//! let program = finish(&p, decl, ToyOutputs { y: Traced::sharded(t.x.square().unwrap()) }).unwrap();
//! assert_eq!(program.inputs.names(), ["x"]);
//! assert_eq!(program.outputs.y.shape.dims, [2]);
//! ```

use crate::models::params::{ParamSpec, Params};
use crate::{ArgAttrs, DType, GraphError, Result, Shape, Tensor};

/// How a value is spread over the devices of a data-parallel run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The same value on every device (weights, the learning rate, the all-reduced loss).
    Replicated,
    /// Each device holds its own part of the batch (its samples' ids, latents, keys).
    Sharded,
}

/// One run-time input of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub shape: Shape,
    pub placement: Placement,
    /// The caller's buffer is consumed: it becomes the output of the same name.
    pub donated: bool,
}

impl Arg {
    pub fn sharded(dtype: DType, dims: &[i64]) -> Arg {
        Arg {
            shape: Shape::new(dtype, dims),
            placement: Placement::Sharded,
            donated: false,
        }
    }

    pub fn replicated(dtype: DType, dims: &[i64]) -> Arg {
        Arg {
            placement: Placement::Replicated,
            ..Arg::sharded(dtype, dims)
        }
    }

    /// This input, donated to the output of the same name (state that stays on the device).
    pub fn donated(self) -> Arg {
        Arg {
            donated: true,
            ..self
        }
    }
}

/// One output of a compiled program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub shape: Shape,
    pub placement: Placement,
}

/// An output while tracing: the tensor and how it lies over the devices.
#[derive(Clone, Debug)]
pub struct Traced {
    pub tensor: Tensor,
    pub placement: Placement,
}

impl Traced {
    pub fn sharded(tensor: Tensor) -> Traced {
        Traced {
            tensor,
            placement: Placement::Sharded,
        }
    }

    pub fn replicated(tensor: Tensor) -> Traced {
        Traced {
            tensor,
            placement: Placement::Replicated,
        }
    }
}

/// A struct of program values (inputs or outputs) holding `T`s, visited in argument order with
/// their names. `program_args!` writes the implementation from the struct's fields.
pub trait Args<T>: Sized {
    /// The same struct holding `U`s.
    type Of<U>: Args<U>;

    /// Calls `f` with every value and its argument name, in argument order.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a T));

    /// The same struct with `f` applied to every value, in argument order.
    fn try_map<U, E>(
        &self,
        f: &mut dyn FnMut(&str, &T) -> std::result::Result<U, E>,
    ) -> std::result::Result<Self::Of<U>, E>;

    /// Appends every value, in argument order.
    fn into_values(self, out: &mut Vec<T>);

    /// The same struct borrowing every value.
    fn as_refs(&self) -> Self::Of<&T>;

    /// Every argument name, in order.
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit(&mut |name, _| names.push(name.to_string()));
        names
    }

    /// Every value with its name, in order.
    fn named(&self) -> Vec<(String, &T)> {
        let mut out = Vec::new();
        self.visit(&mut |name, v| out.push((name.to_string(), v)));
        out
    }

    fn len(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, _| n += 1);
        n
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A struct shaped like this one (the same optional fields present, the same list
    /// lengths) holding `values` in order; `None` when their number differs.
    fn with_values<U>(&self, values: Vec<U>) -> Option<Self::Of<U>> {
        if values.len() != self.len() {
            return None;
        }
        let mut values = values.into_iter();
        self.try_map(&mut |_, _| values.next().ok_or(())).ok()
    }
}

/// Values with names given at run time (a parity run's debug taps): argument order is list
/// order.
#[derive(Clone, Debug, PartialEq)]
pub struct Named<T>(pub Vec<(String, T)>);

impl<T> Args<T> for Named<T> {
    type Of<U> = Named<U>;

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a T)) {
        for (name, v) in &self.0 {
            f(name, v);
        }
    }

    fn try_map<U, E>(
        &self,
        f: &mut dyn FnMut(&str, &T) -> std::result::Result<U, E>,
    ) -> std::result::Result<Named<U>, E> {
        let values = self
            .0
            .iter()
            .map(|(name, v)| Ok((name.clone(), f(name, v)?)))
            .collect::<std::result::Result<Vec<_>, E>>()?;
        Ok(Named(values))
    }

    fn into_values(self, out: &mut Vec<T>) {
        out.extend(self.0.into_iter().map(|(_, v)| v));
    }

    fn as_refs(&self) -> Named<&T> {
        Named(self.0.iter().map(|(n, v)| (n.clone(), v)).collect())
    }
}

/// Declares a struct of program values generic over `T` and implements [`Args`] for it. A
/// field is one value (`T`), an optional one (`Option<T>`, absent from the program when
/// `None`), a list (`Vec<T>`, named `field0`, `field1`, ...) or another such struct
/// (`RowState<T>`, whose fields keep their own names).
#[macro_export]
macro_rules! program_args {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<T> {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $kind:ident $(<$targ:ident>)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $name<T> {
            $( $(#[$fmeta])* $fvis $field: $kind $(<$targ>)?, )*
        }

        impl<T> $crate::programs::interface::Args<T> for $name<T> {
            type Of<U> = $name<U>;

            fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, &'a T)) {
                $( $crate::__program_field!(visit $kind, &self.$field, stringify!($field), f); )*
            }

            fn try_map<U, E>(
                &self,
                f: &mut dyn FnMut(&str, &T) -> ::std::result::Result<U, E>,
            ) -> ::std::result::Result<$name<U>, E> {
                Ok($name {
                    $( $field: $crate::__program_field!(map $kind, &self.$field, stringify!($field), f), )*
                })
            }

            fn into_values(self, out: &mut Vec<T>) {
                $( $crate::__program_field!(into $kind, self.$field, out); )*
            }

            fn as_refs(&self) -> $name<&T> {
                $name {
                    $( $field: $crate::__program_field!(refs $kind, &self.$field), )*
                }
            }
        }
    };
}

/// One field's part of a `program_args!` implementation, by the field's kind.
#[doc(hidden)]
#[macro_export]
macro_rules! __program_field {
    (visit T, $v:expr, $name:expr, $f:ident) => {
        $f($name, $v)
    };
    (visit Option, $v:expr, $name:expr, $f:ident) => {
        if let Some(x) = $v {
            $f($name, x)
        }
    };
    (visit Vec, $v:expr, $name:expr, $f:ident) => {
        for (i, x) in $v.iter().enumerate() {
            $f(&format!("{}{i}", $name), x)
        }
    };
    (visit $nested:ident, $v:expr, $name:expr, $f:ident) => {
        $crate::programs::interface::Args::visit($v, $f)
    };
    (map T, $v:expr, $name:expr, $f:ident) => {
        $f($name, $v)?
    };
    (map Option, $v:expr, $name:expr, $f:ident) => {
        match $v {
            Some(x) => Some($f($name, x)?),
            None => None,
        }
    };
    (map Vec, $v:expr, $name:expr, $f:ident) => {
        $v.iter()
            .enumerate()
            .map(|(i, x)| $f(&format!("{}{i}", $name), x))
            .collect::<::std::result::Result<Vec<_>, _>>()?
    };
    (map $nested:ident, $v:expr, $name:expr, $f:ident) => {
        $crate::programs::interface::Args::try_map($v, $f)?
    };
    (into T, $v:expr, $out:ident) => {
        $out.push($v)
    };
    (into Option, $v:expr, $out:ident) => {
        $out.extend($v)
    };
    (into Vec, $v:expr, $out:ident) => {
        $out.extend($v)
    };
    (into $nested:ident, $v:expr, $out:ident) => {
        $crate::programs::interface::Args::into_values($v, $out)
    };
    (refs T, $v:expr) => {
        $v
    };
    (refs Option, $v:expr) => {
        Option::as_ref($v)
    };
    (refs Vec, $v:expr) => {
        $v.iter().collect()
    };
    (refs $nested:ident, $v:expr) => {
        $crate::programs::interface::Args::as_refs($v)
    };
}

/// A printed program with its calling convention: the frozen weights it takes (bound under
/// each model's key prefix), its run-time inputs `I` (a struct of [`Arg`]) and its outputs `O`
/// (a struct of [`Output`]).
#[derive(Clone, Debug)]
pub struct Program<I, O> {
    pub text: String,
    /// The frozen weights in argument order, each named `<model>.<checkpoint key>`
    /// (`unet.conv_in.weight`), `<model>` being one of [`MODELS`].
    pub weights: Vec<ParamSpec>,
    /// For a model the program uses only part of (the VAE's encoder alone): every weight of
    /// its checkpoint (keys without the prefix), so that the files are checked whole.
    pub whole_models: Vec<(&'static str, Vec<ParamSpec>)>,
    pub inputs: I,
    pub outputs: O,
}

/// Key prefixes of the models a program binds weights from: each is also the model's folder in
/// a diffusers pipeline.
pub const TEXT_ENCODER: &str = "text_encoder";
/// SDXL's second text encoder (`CLIPTextModelWithProjection`).
pub const TEXT_ENCODER_2: &str = "text_encoder_2";
pub const UNET: &str = "unet";
pub const VAE: &str = "vae";
pub const MODELS: [&str; 4] = [TEXT_ENCODER, TEXT_ENCODER_2, UNET, VAE];

impl<I: Args<Arg>, O> Program<I, O> {
    /// Bytes of all the program's arguments (weights and run-time inputs) on one replica: what
    /// a device holds before the program starts, so a lower bound on the memory it needs.
    pub fn argument_bytes(&self) -> i64 {
        let bytes = |s: &Shape| s.numel().saturating_mul(s.dtype.size_in_bytes() as i64);
        let weights = self.weights.iter().map(|w| bytes(&w.shape));
        let inputs = self
            .inputs
            .named()
            .into_iter()
            .map(|(_, a)| bytes(&a.shape));
        weights.chain(inputs).fold(0i64, i64::saturating_add)
    }
}

impl<I, O> Program<I, O> {
    /// Records that the program uses part of `model`, whose checkpoint holds `whole`.
    pub fn using_part_of(mut self, model: &'static str, whole: Vec<ParamSpec>) -> Self {
        self.whole_models.push((model, whole));
        self
    }
}

/// Declares `inputs` as arguments of `p`'s graph, in field order, and returns them as tensors.
pub fn declare<I: Args<Arg>>(p: &Params, inputs: &I) -> Result<I::Of<Tensor>> {
    inputs.try_map(&mut |name, arg| p.input(name, arg.shape.clone()))
}

/// Prints `p`'s graph with `results` as its outputs, in field order. `inputs` must be what
/// [`declare`] declared, and the only inputs; each donated input aliases the output of the
/// same name, which must have its shape.
pub fn finish<I: Args<Arg>, R: Args<Traced>>(
    p: &Params,
    inputs: I,
    results: R,
) -> Result<Program<I, R::Of<Output>>> {
    let g = p.graph();
    let declared: Vec<String> = p.inputs().into_iter().map(|s| s.name).collect();
    if declared != inputs.names() {
        return Err(GraphError::invalid(
            "program",
            format!(
                "inputs {:?} were declared, the interface lists {:?}",
                declared,
                inputs.names()
            ),
        ));
    }
    let outputs = results.named();
    let params = g.parameters();
    for (name, arg) in inputs.named() {
        if !arg.donated {
            continue;
        }
        let target = outputs.iter().position(|(n, _)| *n == name);
        let out = target.map(|i| outputs[i].1.tensor.shape());
        if out.as_ref() != Some(&arg.shape) {
            return Err(GraphError::invalid(
                "program",
                format!(
                    "donated input {name} {} has no output of its name and shape",
                    arg.shape
                ),
            ));
        }
        let index = (0..params.len())
            .find(|&i| g.parameter_name(i).as_deref() == Some(name.as_str()))
            .ok_or_else(|| GraphError::invalid("program", format!("no argument {name}")))?;
        g.set_arg_attrs(
            &params[index],
            ArgAttrs {
                aliasing_output: target,
                sharding: None,
            },
        )?;
    }
    let tensors: Vec<&Tensor> = outputs.iter().map(|(_, t)| &t.tensor).collect();
    let text = g.to_stablehlo(&tensors)?;
    let outputs = results.try_map(&mut |_, t| {
        Ok::<_, GraphError>(Output {
            shape: t.tensor.shape(),
            placement: t.placement,
        })
    })?;
    Ok(Program {
        text,
        weights: p.weights(),
        whole_models: Vec::new(),
        inputs,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Graph;

    crate::program_args! {
        struct Inner<T> { pub a: T, pub b: T }
    }
    crate::program_args! {
        struct Outer<T> { pub first: T, pub maybe: Option<T>, pub list: Vec<T>, pub inner: Inner<T>, pub last: T }
    }

    fn outer(maybe: Option<u32>) -> Outer<u32> {
        Outer {
            first: 1,
            maybe,
            list: vec![3, 4],
            inner: Inner { a: 5, b: 6 },
            last: 7,
        }
    }

    #[test]
    fn fields_are_visited_in_order_with_their_names() {
        let o = outer(Some(2));
        assert_eq!(
            o.names(),
            ["first", "maybe", "list0", "list1", "a", "b", "last"]
        );
        let mut values = Vec::new();
        o.clone().into_values(&mut values);
        assert_eq!(values, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(outer(None).names().len(), 6);
        let doubled = o.try_map(&mut |_, v| Ok::<_, ()>(2 * v)).unwrap();
        assert_eq!(doubled.inner.b, 12);
        assert_eq!(doubled.maybe, Some(4));
        assert_eq!(*o.as_refs().list[1], 4);
    }

    #[test]
    fn with_values_follows_the_shape() {
        let o = outer(None);
        let s = o.with_values(vec!["x", "y", "z", "u", "v", "w"]).unwrap();
        assert_eq!((s.first, s.maybe, s.list[1], s.last), ("x", None, "z", "w"));
        assert!(o.with_values(vec![0; 7]).is_none());
        assert!(o.with_values(vec![0; 5]).is_none());
    }

    crate::program_args! {
        struct StepIn<T> { pub state: T, pub x: T }
    }
    crate::program_args! {
        struct StepOut<T> { pub loss: T, pub state: T }
    }

    #[test]
    fn donated_inputs_alias_the_output_of_their_name() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let w = p.get("w", &[3]).unwrap();
        let decl = StepIn {
            state: Arg::replicated(DType::F32, &[3]).donated(),
            x: Arg::sharded(DType::F32, &[3]),
        };
        let t = declare(&p, &decl).unwrap();
        let next = t.state.add(&t.x.multiply(&w).unwrap()).unwrap();
        let loss = next.sum_all().unwrap();
        let program = finish(
            &p,
            decl.clone(),
            StepOut {
                loss: Traced::replicated(loss.clone()),
                state: Traced::replicated(next.clone()),
            },
        )
        .unwrap();
        assert!(program.text.contains("tf.aliasing_output = 1 : i32"));
        assert_eq!(program.weights.len(), 1);
        assert_eq!(program.outputs.loss.shape, Shape::scalar(DType::F32));
        assert_eq!(program.outputs.state.placement, Placement::Replicated);

        // A donated input with no output of its shape, or an input declared outside the
        // interface, is refused.
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let t = declare(&p, &decl).unwrap();
        let bad = StepOut {
            loss: Traced::replicated(t.x.sum_all().unwrap()),
            state: Traced::replicated(t.x.sum_all().unwrap()),
        };
        assert!(finish(&p, decl.clone(), bad).is_err());
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let t = declare(&p, &decl).unwrap();
        p.input("extra", Shape::scalar(DType::F32)).unwrap();
        let out = StepOut {
            loss: Traced::replicated(t.x.sum_all().unwrap()),
            state: Traced::replicated(t.state.clone()),
        };
        assert!(finish(&p, decl, out).is_err());
    }
}

//! Feeding a traced model its weights: check the checkpoint against the weights the model
//! declared through `xla_graphs::models::params::Params`, upload each tensor (converted to
//! its declared dtype) once per device, and lay out each device's argument list with the
//! run-time inputs in the remaining places. UNet and VAE programs use it as the text encoder
//! does.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use xla_graphs::models::params::{ParamKind, ParamSpec};

use crate::io::weights::{WeightFiles, WeightSpec};
use crate::pjrt::{Client, DeviceBuffer};

/// The checkpoint names and shapes of the weights among `specs`, for `WeightFiles::check`.
pub fn weight_specs(specs: &[ParamSpec]) -> Vec<WeightSpec> {
    specs
        .iter()
        .filter(|s| s.kind == ParamKind::Weight)
        .map(|s| WeightSpec {
            name: s.name.clone(),
            shape: s.checkpoint_dims().iter().map(|&d| d as usize).collect(),
        })
        .collect()
}

/// One model's files in a multi-model program (see `DeviceWeights::upload_components`).
pub struct ComponentWeights<'a> {
    /// Key prefix of this model's weights in the program, without the dot (`unet`).
    pub prefix: &'a str,
    pub files: &'a WeightFiles,
    /// Every weight of the whole model, when the program uses only part of it.
    pub whole: Option<&'a [ParamSpec]>,
}

/// A model's weights on each of the first N devices of a client (replicated), with the argument
/// position of each.
pub struct DeviceWeights {
    /// Argument index of each weight, ascending.
    indices: Vec<usize>,
    /// `buffers[device][i]` holds the weight at `indices[i]`.
    buffers: Vec<Vec<DeviceBuffer>>,
}

impl DeviceWeights {
    /// Checks `files` against the weights in `specs` (named `what` in errors: "text_encoder"),
    /// then copies every weight to devices `0..devices`, reading and converting each once.
    pub fn upload(
        client: &Client,
        files: &WeightFiles,
        specs: &[ParamSpec],
        devices: usize,
        what: &str,
    ) -> Result<DeviceWeights> {
        files.check(&weight_specs(specs), what)?;
        Self::copy(client, files, specs, devices)
    }

    /// `upload` for a program that uses part of a checkpoint (the VAE's encoder alone):
    /// `files` are checked against `model`, every argument the whole model declares, so an
    /// incomplete or mismatched checkpoint is still reported, but only the weights among
    /// `specs` are uploaded.
    pub fn upload_part(
        client: &Client,
        files: &WeightFiles,
        specs: &[ParamSpec],
        model: &[ParamSpec],
        devices: usize,
        what: &str,
    ) -> Result<DeviceWeights> {
        let all = weight_specs(model);
        files.check(&all, what)?;
        if let Some(extra) = weight_specs(specs).into_iter().find(|s| !all.contains(s)) {
            bail!(
                "{what}: the program's weight {} {:?} is not among the model's",
                extra.name,
                extra.shape
            );
        }
        Self::copy(client, files, specs, devices)
    }

    /// Weights of a program that combines several models, each bound under its own key
    /// prefix (`text_encoder.`, `unet.`, `vae.`). Each component's files are checked against
    /// the weights of that prefix (or against `whole`, every weight of that model, when the
    /// program uses part of it), then uploaded under the program's argument indices.
    pub fn upload_components(
        client: &Client,
        components: &[ComponentWeights<'_>],
        specs: &[ParamSpec],
        devices: usize,
    ) -> Result<DeviceWeights> {
        let mut parts: Vec<(Vec<ParamSpec>, &WeightFiles)> = Vec::new();
        for c in components {
            let prefix = format!("{}.", c.prefix);
            let own: Vec<ParamSpec> = specs
                .iter()
                .filter(|s| s.kind == ParamKind::Weight)
                .filter_map(|s| {
                    let name = s.name.strip_prefix(&prefix)?.to_string();
                    Some(ParamSpec { name, ..s.clone() })
                })
                .collect();
            let all = weight_specs(c.whole.unwrap_or(&own));
            c.files.check(&all, c.prefix)?;
            if let Some(extra) = weight_specs(&own).into_iter().find(|s| !all.contains(s)) {
                bail!(
                    "{}: the program's weight {} {:?} is not among the model's",
                    c.prefix,
                    extra.name,
                    extra.shape
                );
            }
            parts.push((own, c.files));
        }
        let claimed: usize = parts.iter().map(|(own, _)| own.len()).sum();
        let total = specs.iter().filter(|s| s.kind == ParamKind::Weight).count();
        if claimed != total {
            bail!(
                "{} of the program's {total} weights belong to no component",
                total - claimed
            );
        }
        let mut merged = DeviceWeights {
            indices: Vec::new(),
            buffers: (0..devices).map(|_| Vec::new()).collect(),
        };
        let mut all: Vec<(usize, DeviceWeights)> = Vec::new();
        for (own, files) in &parts {
            let w = Self::copy(client, files, own, devices)?;
            all.push((0, w));
        }
        // Interleave the components' weights in ascending argument order.
        let mut entries: Vec<(usize, usize, usize)> = Vec::new(); // (arg index, part, position)
        for (part, (_, w)) in all.iter().enumerate() {
            entries.extend(w.indices.iter().enumerate().map(|(pos, &i)| (i, part, pos)));
        }
        entries.sort();
        let mut taken: Vec<Vec<Vec<Option<DeviceBuffer>>>> = all
            .into_iter()
            .map(|(_, w)| {
                w.buffers
                    .into_iter()
                    .map(|l| l.into_iter().map(Some).collect())
                    .collect()
            })
            .collect();
        for (index, part, pos) in entries {
            merged.indices.push(index);
            for (device, list) in merged.buffers.iter_mut().enumerate() {
                list.push(
                    taken[part][device][pos]
                        .take()
                        .expect("each weight is placed once"),
                );
            }
        }
        Ok(merged)
    }

    fn copy(
        client: &Client,
        files: &WeightFiles,
        specs: &[ParamSpec],
        devices: usize,
    ) -> Result<DeviceWeights> {
        let mut weights: Vec<&ParamSpec> = specs
            .iter()
            .filter(|s| s.kind == ParamKind::Weight)
            .collect();
        weights.sort_by_key(|s| s.index);
        let mut buffers: Vec<Vec<DeviceBuffer>> = (0..devices)
            .map(|_| Vec::with_capacity(weights.len()))
            .collect();
        for spec in &weights {
            let bytes = match &spec.layout {
                None => files.read_as(&spec.name, spec.shape.dtype)?,
                Some(l) => files.read_laid_out(
                    &spec.name,
                    spec.shape.dtype,
                    &l.permutation,
                    &l.reversed,
                )?,
            };
            for (device, list) in buffers.iter_mut().enumerate() {
                list.push(client.buffer_from_bytes(
                    &bytes,
                    spec.shape.dtype,
                    &spec.shape.dims,
                    device,
                )?);
            }
        }
        Ok(DeviceWeights {
            indices: weights.iter().map(|s| s.index).collect(),
            buffers,
        })
    }

    pub fn num_devices(&self) -> usize {
        self.buffers.len()
    }

    pub fn num_weights(&self) -> usize {
        self.indices.len()
    }

    /// `arguments` with each device's inputs given by name: `named[d]` maps the name of every
    /// spec in `inputs` (the program's run-time inputs, in argument order) to device d's
    /// buffer, whose shape and dtype must be the spec's. `what` names the program in errors.
    pub fn named_arguments<'a>(
        &'a self,
        inputs: &[ParamSpec],
        named: &[HashMap<&str, &'a DeviceBuffer>],
        what: &str,
    ) -> Result<Vec<Vec<&'a DeviceBuffer>>> {
        let lists = named
            .iter()
            .enumerate()
            .map(|(d, named)| {
                inputs
                    .iter()
                    .map(|spec| {
                        let buf = *named.get(spec.name.as_str()).with_context(|| {
                            format!("no {} for device {d} in the {what}", spec.name)
                        })?;
                        if buf.dims() != spec.shape.dims || buf.dtype() != spec.shape.dtype {
                            bail!(
                                "{} on device {d} is {}{:?}, the {what} expects {}{:?}",
                                spec.name,
                                buf.dtype(),
                                buf.dims(),
                                spec.shape.dtype,
                                spec.shape.dims
                            );
                        }
                        Ok(buf)
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        self.arguments(&lists)
    }

    /// Every device's full argument list: the weights at their indices and `inputs[d]` (every
    /// argument that is not a weight, in argument order) in the places left.
    pub fn arguments<'a>(
        &'a self,
        inputs: &[Vec<&'a DeviceBuffer>],
    ) -> Result<Vec<Vec<&'a DeviceBuffer>>> {
        if inputs.len() != self.buffers.len() {
            bail!(
                "{} input list(s) for weights on {} device(s)",
                inputs.len(),
                self.buffers.len()
            );
        }
        inputs
            .iter()
            .zip(&self.buffers)
            .map(|(ins, ws)| {
                let total = ins.len() + ws.len();
                if self.indices.last().is_some_and(|&i| i >= total) {
                    bail!(
                        "the program has weights beyond its {total} arguments: are all its inputs given?"
                    );
                }
                let mut ins = ins.iter();
                let mut ws = self.indices.iter().zip(ws).peekable();
                (0..total)
                    .map(|slot| match ws.peek() {
                        Some((&i, w)) if i == slot => {
                            let w: &'a DeviceBuffer = w;
                            ws.next();
                            Ok(w)
                        }
                        _ => ins
                            .next()
                            .copied()
                            .ok_or_else(|| anyhow::anyhow!("too few inputs for the program")),
                    })
                    .collect()
            })
            .collect()
    }
}

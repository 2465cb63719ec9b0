//! A program compiled once for N devices (one replica each), with its frozen weights uploaded
//! to every device, called with one input struct per device and returning one output struct
//! per device: the program's own interface (`xla_graphs::programs::interface`), so no caller
//! spells its arguments or reads its outputs by position.

use anyhow::{bail, Context, Result};
use xla_graphs::programs::interface::{Arg, Args, Output, Program};

use crate::model::component::upload_weights;
use crate::model::folder::ModelFolder;
use crate::pjrt::{Client, CompileOptions, DeviceBuffer, LoadedExecutable};
use crate::runtime::device_weights::DeviceWeights;

/// What a program is called in messages, and what to lower when it runs out of memory.
#[derive(Clone, Copy, Debug)]
pub struct ProgramName {
    /// "training step", "VAE decoder".
    pub what: &'static str,
    /// The flags that shrink it ("lower --train-batch-size or --resolution").
    pub out_of_memory: &'static str,
}

pub struct CompiledProgram<I, O> {
    exe: LoadedExecutable,
    weights: DeviceWeights,
    /// The declared inputs, flattened in argument order.
    inputs: Vec<(String, Arg)>,
    declared: I,
    outputs: O,
    name: ProgramName,
}

impl<I: Args<Arg>, O: Args<Output>> CompiledProgram<I, O> {
    /// Uploads the weights `program` takes from `folder` (checked against its checkpoints) and
    /// compiles it for devices `0..devices` (through the compile cache).
    pub fn new(
        client: &Client,
        folder: &ModelFolder,
        program: Program<I, O>,
        devices: usize,
        name: ProgramName,
    ) -> Result<Self> {
        // The weights first: a config that does not match its checkpoint is reported before a
        // compile of minutes.
        let weights = upload_weights(client, folder, &program, devices)?;
        let exe = compile(client, &program.text, devices, name)?;
        Ok(Self::with_weights(exe, weights, program, name))
    }

    /// `new` with the weights uploaded by the caller (a parity test's own files).
    pub fn with_weights(
        exe: LoadedExecutable,
        weights: DeviceWeights,
        program: Program<I, O>,
        name: ProgramName,
    ) -> Self {
        let inputs = program
            .inputs
            .named()
            .into_iter()
            .map(|(n, a)| (n, a.clone()))
            .collect();
        CompiledProgram {
            exe,
            weights,
            inputs,
            declared: program.inputs,
            outputs: program.outputs,
            name,
        }
    }

    pub fn inputs(&self) -> &I {
        &self.declared
    }

    pub fn outputs(&self) -> &O {
        &self.outputs
    }

    pub fn num_devices(&self) -> usize {
        self.weights.num_devices()
    }

    /// Runs the program; `inputs[d]` holds device d's buffers, as a struct of the program's
    /// input type (checked against the declaration by name, shape and dtype). Donated inputs
    /// are consumed.
    pub fn run<'b, A: Args<&'b DeviceBuffer>>(
        &self,
        inputs: &[A],
    ) -> Result<Vec<O::Of<DeviceBuffer>>> {
        let lists = inputs
            .iter()
            .enumerate()
            .map(|(d, given)| self.argument_list(d, given))
            .collect::<Result<Vec<_>>>()?;
        let args = self.weights.arguments(&lists)?;
        let results = self.exe.execute(&args).map_err(|e| {
            if e.is_out_of_memory() {
                anyhow::anyhow!(
                    "the device ran out of memory in the {}: {} ({e})",
                    self.name.what,
                    self.name.out_of_memory
                )
            } else {
                anyhow::Error::new(e).context(format!("the {} failed", self.name.what))
            }
        })?;
        results
            .into_iter()
            .map(|outs| {
                let n = outs.len();
                self.outputs.with_values(outs).with_context(|| {
                    format!(
                        "the {} returned {n} outputs, expected {}",
                        self.name.what,
                        self.outputs.len()
                    )
                })
            })
            .collect()
    }

    /// Device `d`'s inputs in argument order, each checked against its declaration.
    fn argument_list<'b, A: Args<&'b DeviceBuffer>>(
        &self,
        d: usize,
        given: &A,
    ) -> Result<Vec<&'b DeviceBuffer>> {
        let given = given.named();
        let what = self.name.what;
        let mut list = Vec::with_capacity(self.inputs.len());
        for (i, (name, arg)) in self.inputs.iter().enumerate() {
            let Some((given_name, buf)) = given.get(i) else {
                bail!("no {name} for device {d} in the {what}");
            };
            if given_name != name {
                bail!("the {what} takes {name} where device {d}'s inputs have {given_name}");
            }
            let shape = &arg.shape;
            if buf.dims() != shape.dims || buf.dtype() != shape.dtype {
                bail!(
                    "{name} on device {d} is {}{:?}, the {what} expects {}{:?}",
                    buf.dtype(),
                    buf.dims(),
                    shape.dtype,
                    shape.dims
                );
            }
            list.push(**buf);
        }
        if let Some((extra, _)) = given.get(self.inputs.len()) {
            bail!("the {what} takes no {extra} (device {d})");
        }
        Ok(list)
    }
}

/// Compiles `text` for `devices` replicas, naming the program in the error.
pub fn compile(
    client: &Client,
    text: &str,
    devices: usize,
    name: ProgramName,
) -> Result<LoadedExecutable> {
    client
        .compile(text, &CompileOptions::replicated(devices))
        .with_context(|| format!("cannot compile the {}", name.what))
}

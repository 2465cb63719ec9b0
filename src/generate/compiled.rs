//! A program compiled once for N devices (one replica each) with its frozen weights uploaded to
//! every device, run with the remaining inputs given by the names the program declared.

use std::collections::HashMap;

use anyhow::{Context, Result};
use xla_graphs::models::params::{ParamKind, ParamSpec};

use crate::model_weights::DeviceWeights;
use crate::pjrt::{Client, CompileOptions, DeviceBuffer, LoadedExecutable};

pub struct CompiledProgram {
    exe: LoadedExecutable,
    weights: DeviceWeights,
    /// The non-weight arguments in argument order.
    inputs: Vec<ParamSpec>,
    what: &'static str,
}

impl CompiledProgram {
    /// Compiles `text` for devices `0..devices`; `upload` puts the weights among `args` on them.
    pub fn new(
        client: &Client,
        what: &'static str,
        text: &str,
        args: &[ParamSpec],
        devices: usize,
        upload: impl FnOnce() -> Result<DeviceWeights>,
    ) -> Result<CompiledProgram> {
        let exe = client
            .compile(text, &CompileOptions::replicated(devices))
            .with_context(|| format!("cannot compile the {what}"))?;
        Ok(CompiledProgram {
            exe,
            weights: upload()?,
            inputs: args
                .iter()
                .filter(|s| s.kind == ParamKind::Input)
                .cloned()
                .collect(),
            what,
        })
    }

    /// Runs the program; `inputs[d]` maps every input name to device d's buffer. Returns each
    /// device's outputs.
    pub fn run(&self, inputs: &[HashMap<&str, &DeviceBuffer>]) -> Result<Vec<Vec<DeviceBuffer>>> {
        let args = self
            .weights
            .named_arguments(&self.inputs, inputs, self.what)?;
        self.exe.execute(&args).map_err(|e| {
            if e.is_out_of_memory() {
                anyhow::anyhow!(
                    "the device ran out of memory in the {}: lower --num-samples, --height and --width, or use --mixed-precision bf16 ({e})",
                    self.what
                )
            } else {
                anyhow::Error::new(e).context(format!("the {} failed", self.what))
            }
        })
    }
}

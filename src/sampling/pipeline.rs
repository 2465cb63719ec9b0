//! The sampling pipeline on the devices: the text, denoising-step and VAE-decode programs
//! compiled once for every device with their weights uploaded, and the host loop that encodes
//! the prompts, runs the step once per timestep with the scheduler's scalars and state fed
//! back, and decodes. Samples are sharded: device d holds sample slots `d * batch ..`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xla_graphs::programs::interface::{Arg, Args, Output, Program};
use xla_graphs::programs::sampling::{
    build_denoise_step, build_text_encode, build_vae_decode, DenoiseInputs, DenoiseOutputs,
    DenoiseStepConfig, StepNoise, TextEncodeConfig, TextEncodeInputs, TextEncodeOutputs,
    VaeDecodeInputs, VaeDecodeOutputs,
};
use xla_graphs::schedulers::Scheduler;
use xla_graphs::DType;

use crate::model::folder::ModelFolder;
use crate::pjrt::{Client, DeviceBuffer};
use crate::rng::Key;
use crate::runtime::program::{CompiledProgram, ProgramName};

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub compute_dtype: DType,
    pub devices: usize,
    /// Sample slots per device.
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Token ids per prompt.
    pub seq_len: usize,
    /// Learned rows appended to the token table.
    pub num_rows: usize,
    pub noise: StepNoise,
    /// The negative half is zeros (SDXL without a negative prompt, when the pipeline sets
    /// `force_zeros_for_empty_prompt`).
    pub zero_negative: bool,
}

/// Where Euler ancestral's noise comes from.
pub enum NoiseFeed<'a> {
    /// Deterministic schedulers.
    None,
    /// One key per sample slot; step i draws from `key.fold_in(i)` in the program.
    Keys(&'a [Key]),
    /// Standard normals per step, every slot's in slot order.
    Normals(&'a [Vec<f32>]),
}

/// One run's host inputs.
pub struct SampleRequest<'a> {
    /// Per tokenizer (SDXL has two), `[2, seq_len]`: the negative (or empty) prompt, then the
    /// prompt.
    pub input_ids: &'a [Vec<i32>],
    /// `[num_rows, hidden]` learned rows (SDXL: both tables' parts side by side).
    pub rows: &'a [f32],
    /// Standard-normal starting latents of every slot (`devices * batch`), in slot order; they
    /// are scaled by the scheduler's `init_noise_sigma` here.
    pub latents: &'a [f32],
    pub guidance_scale: f64,
    pub noise: NoiseFeed<'a>,
}

/// Every slot's outputs, in slot order.
pub struct Samples {
    /// `[slots, 3, height, width]` in [0, 1].
    pub images: Vec<f32>,
    /// `[slots, C, h, w]` final latents.
    pub latents: Vec<f32>,
    pub times: SampleTimes,
}

/// Wall time of each part of [`Pipeline::sample`] (every program run is awaited, so these are
/// the devices' times plus the host's transfers).
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleTimes {
    /// Uploading the prompt ids and rows, and the text encoder.
    pub text: Duration,
    /// Uploading the starting latents, and every denoising step.
    pub denoise: Duration,
    /// The VAE decoder, and reading the images and latents back.
    pub decode: Duration,
}

type TextProgram = CompiledProgram<TextEncodeInputs<Arg>, TextEncodeOutputs<Output>>;
type StepProgram = CompiledProgram<DenoiseInputs<Arg>, DenoiseOutputs<Output>>;
type DecodeProgram = CompiledProgram<VaeDecodeInputs<Arg>, VaeDecodeOutputs<Output>>;

/// What to lower when sampling runs out of memory.
const OUT_OF_MEMORY: &str =
    "lower --num-samples, --height and --width, or use --mixed-precision bf16";

const fn name(what: &'static str) -> ProgramName {
    ProgramName {
        what,
        out_of_memory: OUT_OF_MEMORY,
    }
}

pub const TEXT: ProgramName = name("text encoder");
pub const STEP: ProgramName = name("denoising step");
pub const DECODE: ProgramName = name("VAE decoder");

/// The three programs of a pipeline, traced (nothing compiled or uploaded).
pub struct PipelinePrograms {
    pub text: Program<TextEncodeInputs<Arg>, TextEncodeOutputs<Output>>,
    pub step: Program<DenoiseInputs<Arg>, DenoiseOutputs<Output>>,
    pub decode: Program<VaeDecodeInputs<Arg>, VaeDecodeOutputs<Output>>,
}

/// Traces the text encoder, the denoising step and the VAE decoder for `config`;
/// `scheduler` has its timesteps set.
pub fn programs(
    folder: &ModelFolder,
    scheduler: &dyn Scheduler,
    c: &PipelineConfig,
) -> Result<PipelinePrograms> {
    let f = folder.vae.downscale_factor();
    let latent_size = [c.height / f, c.width / f];
    let dtype = c.compute_dtype;
    let text = build_text_encode(&TextEncodeConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: folder.text_encoder_2.clone(),
        dtype,
        seq_len: c.seq_len,
        num_rows: c.num_rows,
        zero_negative: c.zero_negative,
    })
    .context("cannot trace the text encoder")?;
    let step = build_denoise_step(&DenoiseStepConfig {
        unet: folder.unet.clone(),
        compute_dtype: dtype,
        batch: c.batch,
        latent_size,
        seq_len: c.seq_len,
        context_dim: folder.row_width(),
        text_time: folder.text_time()?,
        scheduler,
        noise: c.noise,
    })
    .context("cannot trace the denoising step")?;
    let decode = build_vae_decode(&folder.vae, folder.vae_dtype(dtype), c.batch, latent_size)
        .context("cannot trace the VAE decoder")?;
    Ok(PipelinePrograms { text, step, decode })
}

pub struct Pipeline {
    text: TextProgram,
    step: StepProgram,
    decode: DecodeProgram,
    scheduler: Box<dyn Scheduler>,
    config: PipelineConfig,
    /// One device's latents.
    latent_dims: [i64; 4],
    /// SDXL's time ids for the output size, `[2, 6]` (negative and positive alike).
    time_ids: Option<Vec<f32>>,
}

impl Pipeline {
    /// Traces, compiles and uploads the three programs; `scheduler` has its timesteps set.
    pub fn new(
        client: &Client,
        folder: &ModelFolder,
        scheduler: Box<dyn Scheduler>,
        config: PipelineConfig,
    ) -> Result<Pipeline> {
        let c = &config;
        let f = folder.vae.downscale_factor();
        let latent_size = [c.height / f, c.width / f];

        let programs = programs(folder, scheduler.as_ref(), c)?;
        let text = CompiledProgram::new(client, folder, programs.text, c.devices, TEXT)?;
        let step = CompiledProgram::new(client, folder, programs.step, c.devices, STEP)?;
        let decode = CompiledProgram::new(client, folder, programs.decode, c.devices, DECODE)?;
        let text_time = folder.text_time()?;
        let latent_dims = [
            c.batch as i64,
            folder.unet.in_channels as i64,
            latent_size[0] as i64,
            latent_size[1] as i64,
        ];
        // diffusers' `_get_add_time_ids`: original size = target size = the output's, crop
        // (0, 0), the same for the negative prompt.
        let (hh, ww) = (c.height as f32, c.width as f32);
        let time_ids = text_time.map(|_| [hh, ww, 0.0, 0.0, hh, ww].repeat(2));
        Ok(Pipeline {
            text,
            step,
            decode,
            scheduler,
            config,
            latent_dims,
            time_ids,
        })
    }

    pub fn scheduler(&self) -> &dyn Scheduler {
        self.scheduler.as_ref()
    }

    /// Sample slots (`devices * batch`).
    pub fn slots(&self) -> usize {
        self.config.devices * self.config.batch
    }

    /// Values in one slot's latents.
    pub fn latent_len(&self) -> usize {
        self.latent_dims[1..].iter().product::<i64>() as usize
    }

    /// Runs the whole pipeline; `on_step(i)` is called after denoising step i.
    pub fn sample(
        &self,
        client: &Client,
        request: &SampleRequest<'_>,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Samples> {
        let started = Instant::now();
        let per_device = self.config.batch * self.latent_len();
        anyhow::ensure!(
            request.latents.len() == self.config.devices * per_device,
            "{} starting latent values for {} slots of {}",
            request.latents.len(),
            self.slots(),
            self.latent_len()
        );
        let text = self.encode_text(client, request)?;
        let encoded = Instant::now();
        let latents = self.denoise(client, request, &text, on_step)?;
        let denoised = Instant::now();
        let mut images = Vec::new();
        let inputs: Vec<_> = latents
            .iter()
            .map(|latents| VaeDecodeInputs { latents })
            .collect();
        for out in self.decode.run(&inputs)? {
            images.extend(out.images.to_vec::<f32>()?);
        }
        let mut final_latents = Vec::with_capacity(self.slots() * self.latent_len());
        for l in &latents {
            final_latents.extend(l.to_vec::<f32>()?);
        }
        Ok(Samples {
            images,
            latents: final_latents,
            times: SampleTimes {
                text: encoded - started,
                denoise: denoised - encoded,
                decode: denoised.elapsed(),
            },
        })
    }

    /// The encoder states (and SDXL's pooled embeddings) of the negative prompt and the
    /// prompt, on every device.
    fn encode_text(
        &self,
        client: &Client,
        request: &SampleRequest<'_>,
    ) -> Result<Vec<TextEncodeOutputs<DeviceBuffer>>> {
        let c = &self.config;
        let upload = |d: usize| -> Result<TextEncodeInputs<DeviceBuffer>> {
            let dims = [2, c.seq_len as i64];
            let ids = |i: usize| -> Result<Option<DeviceBuffer>> {
                request
                    .input_ids
                    .get(i)
                    .map(|ids| client.buffer_from_host(ids, &dims, d))
                    .transpose()
                    .map_err(Into::into)
            };
            let rows = match c.num_rows {
                0 => None,
                n => {
                    let hidden = (request.rows.len() / n) as i64;
                    Some(client.buffer_from_host(request.rows, &[n as i64, hidden], d)?)
                }
            };
            Ok(TextEncodeInputs {
                input_ids: ids(0)?.context("no prompt ids")?,
                input_ids_2: ids(1)?,
                rows,
            })
        };
        let owned = (0..c.devices).map(upload).collect::<Result<Vec<_>>>()?;
        let inputs: Vec<_> = owned.iter().map(Args::as_refs).collect();
        self.text.run(&inputs)
    }

    /// Every denoising step from the scaled starting latents; returns each device's final
    /// latents.
    fn denoise(
        &self,
        client: &Client,
        request: &SampleRequest<'_>,
        text: &[TextEncodeOutputs<DeviceBuffer>],
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Vec<DeviceBuffer>> {
        let (devices, batch) = (self.config.devices, self.config.batch);
        let per_device = batch * self.latent_len();
        let dims = self.latent_dims;
        let on = |d: usize| -> std::ops::Range<usize> { d * per_device..(d + 1) * per_device };
        let s = self.scheduler.as_ref();
        let sigma = s.init_noise_sigma() as f32;
        let scaled: Vec<f32> = request.latents.iter().map(|&v| v * sigma).collect();
        let zeros = vec![0f32; per_device];
        let mut current = (0..devices)
            .map(|d| {
                Ok(DenoiseOutputs {
                    latents: client.buffer_from_host(&scaled[on(d)], &dims, d)?,
                    state: (0..s.num_state())
                        .map(|_| client.buffer_from_host(&zeros, &dims, d))
                        .collect::<Result<Vec<_>, _>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let guidance = (0..devices)
            .map(|d| client.buffer_from_host(&[request.guidance_scale as f32], &[], d))
            .collect::<Result<Vec<_>, _>>()?;
        let time_ids = (0..devices)
            .map(|d| {
                self.time_ids
                    .as_ref()
                    .map(|t| client.buffer_from_host(t, &[2, t.len() as i64 / 2], d))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;

        for (i, &t) in s.timesteps().iter().enumerate() {
            let scalars: Vec<f32> = s.step_scalars(i).iter().map(|&v| v as f32).collect();
            let k = scalars.len() as i64;
            let mut per_step = Vec::with_capacity(devices);
            for d in 0..devices {
                let (mut keys, mut noise) = (None, None);
                match &request.noise {
                    NoiseFeed::None => {}
                    NoiseFeed::Keys(all) => {
                        let words: Vec<u32> = all[d * batch..(d + 1) * batch]
                            .iter()
                            .flat_map(|key| key.fold_in(i as u32).data())
                            .collect();
                        keys = Some(client.buffer_from_host(&words, &[batch as i64, 2], d)?);
                    }
                    NoiseFeed::Normals(steps) => {
                        let normals = steps.get(i).with_context(|| {
                            format!("no noise for step {i} ({} given)", steps.len())
                        })?;
                        noise = Some(client.buffer_from_host(&normals[on(d)], &dims, d)?);
                    }
                }
                let timestep = client.buffer_from_host(&[t as f32], &[], d)?;
                let scalars = client.buffer_from_host(&scalars, &[k], d)?;
                per_step.push((timestep, scalars, keys, noise));
            }
            let inputs: Vec<DenoiseInputs<&DeviceBuffer>> = per_step
                .iter()
                .zip(&current)
                .enumerate()
                .map(
                    |(d, ((timestep, scalars, keys, noise), now))| DenoiseInputs {
                        latents: &now.latents,
                        context: &text[d].context,
                        text_embeds: text[d].text_embeds.as_ref(),
                        time_ids: time_ids[d].as_ref(),
                        timestep,
                        scalars,
                        guidance_scale: &guidance[d],
                        state: now.state.iter().collect(),
                        keys: keys.as_ref(),
                        noise: noise.as_ref(),
                    },
                )
                .collect();
            let next = self.step.run(&inputs)?;
            drop(inputs);
            current = next;
            on_step(i);
        }
        Ok(current.into_iter().map(|o| o.latents).collect())
    }
}

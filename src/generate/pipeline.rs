//! The sampling pipeline on the devices: the text, denoising-step and VAE-decode programs
//! compiled once for every device with their weights uploaded, and the host loop that encodes
//! the prompts, runs the step once per timestep with the scheduler's scalars and state fed
//! back, and decodes. Samples are sharded: device d holds sample slots `d * batch ..`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xla_graphs::models::vae::AutoencoderKL;
use xla_graphs::programs::sampling::{
    build_denoise_step, build_text_encode, build_vae_decode, DenoiseStepConfig, StepNoise,
    STEP_LATENTS,
};
use xla_graphs::schedulers::Scheduler;
use xla_graphs::DType;

use super::compiled::CompiledProgram;
use crate::model_folder::ModelFolder;
use crate::model_weights::DeviceWeights;
use crate::pjrt::{Client, DeviceBuffer};
use crate::rng::Key;
use crate::train::step::open_component;

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
    /// `[2, seq_len]`: the negative (or empty) prompt, then the prompt.
    pub input_ids: &'a [i32],
    /// `[num_rows, hidden]` learned rows.
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

pub struct Pipeline {
    text: CompiledProgram,
    step: CompiledProgram,
    decode: CompiledProgram,
    scheduler: Box<dyn Scheduler>,
    config: PipelineConfig,
    /// One device's latents.
    latent_dims: [i64; 4],
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
        let dtype = c.compute_dtype;

        let program = build_text_encode(&folder.text_encoder, dtype, c.seq_len, c.num_rows)
            .context("cannot trace the text encoder")?;
        let text = CompiledProgram::new(
            client,
            "text encoder",
            &program.text,
            &program.args,
            c.devices,
            || {
                let files = open_component(folder, "text_encoder", "model")?;
                DeviceWeights::upload(client, &files, &program.args, c.devices, "text_encoder")
            },
        )?;

        let program = build_denoise_step(&DenoiseStepConfig {
            unet: folder.unet.clone(),
            compute_dtype: dtype,
            batch: c.batch,
            latent_size,
            seq_len: c.seq_len,
            context_dim: folder.text_encoder.hidden_size,
            scheduler: scheduler.as_ref(),
            noise: c.noise,
        })
        .context("cannot trace the denoising step")?;
        let step = CompiledProgram::new(
            client,
            "denoising step",
            &program.text,
            &program.args,
            c.devices,
            || {
                let files = open_component(folder, "unet", "diffusion_pytorch_model")?;
                DeviceWeights::upload(client, &files, &program.args, c.devices, "unet")
            },
        )?;

        let program = build_vae_decode(&folder.vae, dtype, c.batch, latent_size)
            .context("cannot trace the VAE decoder")?;
        let decode = CompiledProgram::new(
            client,
            "VAE decoder",
            &program.text,
            &program.args,
            c.devices,
            || {
                let files = open_component(folder, "vae", "diffusion_pytorch_model")?;
                let whole = AutoencoderKL::new(folder.vae.clone())?.weight_specs(dtype)?;
                DeviceWeights::upload_part(client, &files, &program.args, &whole, c.devices, "vae")
            },
        )?;

        let latent_dims = [
            c.batch as i64,
            folder.unet.in_channels as i64,
            latent_size[0] as i64,
            latent_size[1] as i64,
        ];
        Ok(Pipeline {
            text,
            step,
            decode,
            scheduler,
            config,
            latent_dims,
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
        let c = &self.config;
        let (devices, batch) = (c.devices, c.batch);
        let per_device = batch * self.latent_len();
        anyhow::ensure!(
            request.latents.len() == devices * per_device,
            "{} starting latent values for {} slots of {}",
            request.latents.len(),
            self.slots(),
            self.latent_len()
        );
        let dims = self.latent_dims;
        let on = |d: usize| -> std::ops::Range<usize> { d * per_device..(d + 1) * per_device };

        let ids = (0..devices)
            .map(|d| client.buffer_from_host(request.input_ids, &[2, c.seq_len as i64], d))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = (0..devices)
            .filter(|_| c.num_rows > 0)
            .map(|d| {
                let hidden = (request.rows.len() / c.num_rows) as i64;
                client.buffer_from_host(request.rows, &[c.num_rows as i64, hidden], d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let named = (0..devices)
            .map(|d| {
                let mut m = HashMap::from([("input_ids", &ids[d])]);
                if let Some(r) = rows.get(d) {
                    m.insert("rows", r);
                }
                m
            })
            .collect::<Vec<_>>();
        let context: Vec<DeviceBuffer> = self
            .text
            .run(&named)?
            .into_iter()
            .map(|mut outs| outs.remove(0))
            .collect();
        let encoded = Instant::now();

        let s = self.scheduler.as_ref();
        let sigma = s.init_noise_sigma() as f32;
        let scaled: Vec<f32> = request.latents.iter().map(|&v| v * sigma).collect();
        let mut latents = (0..devices)
            .map(|d| client.buffer_from_host(&scaled[on(d)], &dims, d))
            .collect::<Result<Vec<_>, _>>()?;
        let zeros = vec![0f32; per_device];
        let mut state = (0..devices)
            .map(|d| {
                (0..s.num_state())
                    .map(|_| client.buffer_from_host(&zeros, &dims, d))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let guidance = (0..devices)
            .map(|d| client.buffer_from_host(&[request.guidance_scale as f32], &[], d))
            .collect::<Result<Vec<_>, _>>()?;
        let state_names: Vec<String> = (0..s.num_state()).map(|i| format!("state{i}")).collect();

        for (i, &t) in s.timesteps().iter().enumerate() {
            let scalars: Vec<f32> = s.step_scalars(i).iter().map(|&v| v as f32).collect();
            let k = scalars.len() as i64;
            let mut per_step = Vec::with_capacity(devices);
            for d in 0..devices {
                let mut bufs = vec![
                    ("timestep", client.buffer_from_host(&[t as f32], &[], d)?),
                    ("scalars", client.buffer_from_host(&scalars, &[k], d)?),
                ];
                match &request.noise {
                    NoiseFeed::None => {}
                    NoiseFeed::Keys(keys) => {
                        let words: Vec<u32> = keys[d * batch..(d + 1) * batch]
                            .iter()
                            .flat_map(|key| key.fold_in(i as u32).data())
                            .collect();
                        let buf = client.buffer_from_host(&words, &[batch as i64, 2], d)?;
                        bufs.push(("keys", buf));
                    }
                    NoiseFeed::Normals(steps) => {
                        let normals = steps.get(i).with_context(|| {
                            format!("no noise for step {i} ({} given)", steps.len())
                        })?;
                        let buf = client.buffer_from_host(&normals[on(d)], &dims, d)?;
                        bufs.push(("noise", buf));
                    }
                }
                per_step.push(bufs);
            }
            let named = (0..devices)
                .map(|d| {
                    let mut m: HashMap<&str, &DeviceBuffer> =
                        per_step[d].iter().map(|(k, v)| (*k, v)).collect();
                    m.insert("latents", &latents[d]);
                    m.insert("context", &context[d]);
                    m.insert("guidance_scale", &guidance[d]);
                    for (name, buf) in state_names.iter().zip(&state[d]) {
                        m.insert(name.as_str(), buf);
                    }
                    m
                })
                .collect::<Vec<_>>();
            let outputs = self.step.run(&named)?;
            drop(named);
            (latents, state) = outputs
                .into_iter()
                .map(|mut outs| {
                    let next = outs.remove(STEP_LATENTS);
                    (next, outs)
                })
                .unzip();
            on_step(i);
        }
        let denoised = Instant::now();

        let named = latents
            .iter()
            .map(|l| HashMap::from([("latents", l)]))
            .collect::<Vec<_>>();
        let mut images = Vec::new();
        for mut outs in self.decode.run(&named)? {
            images.extend(outs.remove(0).to_vec::<f32>()?);
        }
        let mut final_latents = Vec::with_capacity(devices * per_device);
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
}

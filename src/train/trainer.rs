//! The training loop: compile the step once for every device, cache the VAE moments, then feed
//! each step its batch shards, keys and learning rate, keeping the rows and optimizer state on
//! the devices; read losses back in batches, save embeddings and checkpoints, stop cleanly on
//! Ctrl-C or a non-finite loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use half::bf16;
use xla_graphs::models::vae::AutoencoderKL;
use xla_graphs::programs::train_step::{build_encode_moments, LatentSource, TrainStepConfig, VAE};
use xla_graphs::schedulers::NoiseScheduleConfig;
use xla_graphs::DType;

use super::args::TrainArgs;
use super::checkpoint::{self, RowState, TrainerState};
use super::progress::{Progress, StepRecord};
use super::setup::{plan, RunPlan};
use super::step::{open_component, CompiledStep};
use super::validation::{self, Validation};
use crate::data::dataset::{epoch_plan, Sample};
use crate::device::{open_client, DeviceKind};
use crate::export::write_learned_embeds;
use crate::model_weights::DeviceWeights;
use crate::pjrt::{Client, CompileOptions, DeviceBuffer};
use crate::rng::Key;

/// Ctrl-C stopped the run after writing a checkpoint (the binary exits with 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: checkpoint written to {0}; continue with --resume-from-checkpoint latest")]
pub struct Interrupted(pub PathBuf);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What a finished run produced.
pub struct TrainOutcome {
    pub learned_embeds: PathBuf,
    pub steps: usize,
    pub last_loss: Option<f64>,
}

/// How many optimizer steps' losses to gather before reading them back.
const LOSS_READ_EVERY: usize = 10;

pub fn train(args: &TrainArgs) -> Result<TrainOutcome> {
    let client = open_client(&args.device)?;
    let devices = args.num_devices.unwrap_or(client.device_count());
    if devices == 0 || devices > client.device_count() {
        bail!(
            "--num-devices {devices}: the {} plugin has {} device(s)",
            args.device.device.name(),
            client.device_count()
        );
    }
    let run = plan(args, devices)?;
    // Installed once the model is open (downloaded): Ctrl-C during a download ends the process
    // at once, and the next run resumes the partial file. Installing the handler twice in one
    // process (tests) is harmless: the first one stays.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let out = &args.output_dir;
    let resume = match &args.resume_from_checkpoint {
        Some(spec) => Some(checkpoint::load(&checkpoint::resolve(out, spec)?)?),
        None => {
            prepare_output_dir(out, args.overwrite)?;
            None
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let fingerprint = fingerprint(args, &run, devices);

    let latents = if args.no_cache_latents {
        LatentSource::Encode
    } else {
        LatentSource::Cached {
            entries: 2 * run.images.len(),
        }
    };
    let noise = serde_json::from_value::<NoiseScheduleConfig>(run.folder.scheduler.clone())
        .context("scheduler/scheduler_config.json has no usable noise schedule")?;
    let config = TrainStepConfig {
        text_encoder: run.folder.text_encoder.clone(),
        unet: run.folder.unet.clone(),
        vae: run.folder.vae.clone(),
        noise,
        compute_dtype: run.compute_dtype,
        batch: args.train_batch_size,
        resolution: args.resolution,
        seq_len: run.tokenizer.max_length(),
        num_vectors: args.num_vectors,
        num_devices: devices,
        latents,
        adamw: args.adamw.config(),
        gradient_accumulation_steps: args.gradient_accumulation_steps,
        explicit_randomness: false,
        reversed_kernels: args.device.device == DeviceKind::Cpu,
    };
    eprintln!(
        "training {:?} on {devices} {} device(s), {} image(s), {} steps, lr {:.3e}, {}",
        run.placeholder_text,
        args.device.device.name(),
        run.images.len(),
        run.total_steps,
        run.schedule.base_lr,
        run.compute_dtype
    );
    eprintln!("compiling the training step (cached after the first run) ...");
    let step_program = CompiledStep::new(&client, &run.folder, config)?;
    let validation = Validation::new(&client, &run, args, devices)?;
    let moment_table = match latents {
        LatentSource::Cached { .. } => {
            Some(cache_moments(&client, &run, args.resolution, devices)?)
        }
        LatentSource::Encode => None,
    };

    let (mut state, rows) = match resume {
        Some((state, rows)) => {
            if state.fingerprint != fingerprint {
                let changed: Vec<&String> = fingerprint
                    .keys()
                    .filter(|k| state.fingerprint.get(*k) != fingerprint.get(*k))
                    .collect();
                bail!("cannot resume: the checkpoint was made with different settings ({changed:?}); use the original flags");
            }
            (state, rows)
        }
        None => {
            let n = run.initial_rows.len();
            let key = Key::from_seed(args.seed).data();
            let state = TrainerState {
                step: 0,
                epoch: 0,
                position: 0,
                key,
                fingerprint,
            };
            (
                state,
                RowState {
                    hidden: run.hidden,
                    rows: run.initial_rows.clone(),
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                },
            )
        }
    };
    let mut buffers = upload_rows(&client, &rows, devices)?;
    let mut progress = Progress::new(out, state.step, run.total_steps)?;
    let mut pending: Vec<(usize, f64, DeviceBuffer)> = Vec::new();
    let mut last_loss = None;
    let global = args.train_batch_size * devices;
    let mut order = epoch_plan(
        args.seed,
        state.epoch,
        run.images.len(),
        args.repeats,
        args.learnable_property.templates().len(),
    );

    while state.step < run.total_steps {
        let lr = run.schedule.lr(state.step as u64);
        for micro in 0..args.gradient_accumulation_steps {
            if state.position + global > run.batches_per_epoch * global {
                state.epoch += 1;
                state.position = 0;
                order = epoch_plan(
                    args.seed,
                    state.epoch,
                    run.images.len(),
                    args.repeats,
                    args.learnable_property.templates().len(),
                );
            }
            let samples = &order[state.position..state.position + global];
            state.position += global;
            let apply = micro + 1 == args.gradient_accumulation_steps;
            // As the Flax trainer: (dropout, sample, next) = split(key, 3) each step.
            let keys = Key::from_data(state.key).split(3);
            state.key = keys[2].data();
            let inputs = (0..devices)
                .map(|d| {
                    let shard =
                        &samples[d * args.train_batch_size..(d + 1) * args.train_batch_size];
                    let first = (d * args.train_batch_size) as i32;
                    let key = (keys[1], first);
                    device_inputs(&client, &run, args, shard, key, d, lr, state.step, apply)
                })
                .collect::<Result<Vec<_>>>()?;
            let named: Vec<HashMap<&str, &DeviceBuffer>> = inputs
                .iter()
                .zip(&buffers)
                .enumerate()
                .map(|(d, (ins, st))| {
                    let mut m: HashMap<&str, &DeviceBuffer> =
                        ins.iter().map(|(k, v)| (*k, v)).collect();
                    for (name, buf) in ["rows", "exp_avg", "exp_avg_sq", "grad_acc"]
                        .into_iter()
                        .zip(st)
                    {
                        m.insert(name, buf);
                    }
                    if let Some(tables) = &moment_table {
                        m.insert("moment_table", &tables[d]);
                    }
                    m
                })
                .collect();
            let outputs = step_program.run(&named)?;
            drop(named);
            let mut next = Vec::with_capacity(devices);
            for (d, mut outs) in outputs.into_iter().enumerate() {
                let loss = outs.pop().context("the step returned no loss")?;
                if d == 0 {
                    pending.push((state.step, lr, loss));
                }
                next.push(<[DeviceBuffer; 4]>::try_from(outs).map_err(|_| {
                    anyhow::anyhow!("the step returned the wrong number of outputs")
                })?);
            }
            buffers = next;
        }
        state.step += 1;
        let save_due = args.save_steps > 0 && state.step % args.save_steps == 0;
        let checkpoint_due =
            args.checkpointing_steps > 0 && state.step % args.checkpointing_steps == 0;
        let stop = INTERRUPTED.load(Ordering::SeqCst);
        if pending.len() >= LOSS_READ_EVERY * args.gradient_accumulation_steps
            || save_due
            || checkpoint_due
            || stop
            || state.step == run.total_steps
        {
            last_loss = flush_losses(
                &mut pending,
                &mut progress,
                args.gradient_accumulation_steps,
                out,
            )?
            .or(last_loss);
        }
        if save_due {
            let path = out.join(format!("learned_embeds-steps-{}.safetensors", state.step));
            write_learned_embeds(
                &path,
                &args.placeholder_token,
                &buffers[0][0].to_vec::<f32>()?,
                run.hidden,
            )?;
        }
        if checkpoint_due || stop {
            let dir = checkpoint::save(
                out,
                &state,
                &read_rows(&buffers[0], run.hidden)?,
                args.checkpoints_total_limit,
            )?;
            if stop {
                progress.finish();
                return Err(Interrupted(dir).into());
            }
        }
        if let Some(v) = validation.as_ref().filter(|v| v.due(state.step)) {
            let dir = v.run(&client, state.step, &buffers[0][0].to_vec::<f32>()?, out)?;
            progress.println(&format!("validation images: {}", dir.display()));
        }
    }
    progress.finish();
    let learned_embeds = out.join("learned_embeds.safetensors");
    write_learned_embeds(
        &learned_embeds,
        &args.placeholder_token,
        &buffers[0][0].to_vec::<f32>()?,
        run.hidden,
    )?;
    if args.save_as_full_pipeline {
        let tokenizer = args
            .tokenizer_name
            .clone()
            .unwrap_or_else(|| run.folder.component("tokenizer"));
        let names =
            crate::tokenizer::placeholder_token_names(&args.placeholder_token, args.num_vectors);
        let rows = buffers[0][0].to_vec::<f32>()?;
        let learned = crate::full_pipeline::LearnedTokens {
            names: &names,
            first_id: run.placeholder_ids[0] as usize,
            rows: &rows,
            hidden: run.hidden,
        };
        let (root, variant) = (&run.folder.root, run.folder.variant.as_deref());
        crate::full_pipeline::save_full_pipeline(root, &tokenizer, variant, out, &learned)?;
    }
    // The whole run's curve, from the log (which a resumed run appends to).
    let logged: Vec<f64> = std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    super::loss_plot::write(&out.join("loss.png"), &logged, &validation::marks(out))?;
    Ok(TrainOutcome {
        learned_embeds,
        steps: state.step,
        last_loss,
    })
}

/// Refuses to mix a new run into an earlier one's outputs unless `--overwrite` says so.
fn prepare_output_dir(out: &Path, overwrite: bool) -> Result<()> {
    let earlier: Vec<PathBuf> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("learned_embeds")
                || name.starts_with("checkpoint-")
                || name == "train_log.jsonl"
                || name == "validation"
        })
        .collect();
    if earlier.is_empty() {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} already holds a training run ({}); pass --overwrite to replace it, --resume-from-checkpoint latest to continue it, or another --output-dir",
            out.display(),
            earlier[0].file_name().and_then(|n| n.to_str()).unwrap_or("")
        );
    }
    for p in earlier {
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

fn fingerprint(args: &TrainArgs, run: &RunPlan, devices: usize) -> HashMap<String, String> {
    [
        ("seed", args.seed.to_string()),
        ("devices", devices.to_string()),
        ("train_batch_size", args.train_batch_size.to_string()),
        (
            "gradient_accumulation_steps",
            args.gradient_accumulation_steps.to_string(),
        ),
        ("repeats", args.repeats.to_string()),
        ("num_vectors", args.num_vectors.to_string()),
        ("placeholder_token", args.placeholder_token.clone()),
        ("resolution", args.resolution.to_string()),
        ("images", run.images.len().to_string()),
        (
            "learnable_property",
            format!("{:?}", args.learnable_property),
        ),
        ("center_crop", args.center_crop.to_string()),
        ("compute_dtype", run.compute_dtype.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The VAE moments of every (image, flip) pair, entry `2 * image + flip`, on every device.
fn cache_moments(
    client: &Client,
    run: &RunPlan,
    resolution: usize,
    devices: usize,
) -> Result<Vec<DeviceBuffer>> {
    let dtype = run.compute_dtype;
    let program = build_encode_moments(&run.folder.vae, dtype, 1, resolution)?;
    let exe = client
        .compile(&program.text, &CompileOptions::replicated(1))
        .context("cannot compile the VAE encoder")?;
    let files = open_component(&run.folder, "vae", "diffusion_pytorch_model")?;
    let whole = AutoencoderKL::new(run.folder.vae.clone())?.weight_specs(dtype)?;
    let weights = DeviceWeights::upload_part(client, &files, &program.args, &whole, 1, VAE)?;
    let mut table = Vec::new();
    let mut width = 0;
    for image in 0..run.images.len() {
        for flip in [false, true] {
            let px = pixels(
                &run.images.pixel_values(&[Sample {
                    image,
                    template: 0,
                    flip,
                }]),
                dtype,
            );
            let input = client.buffer_from_bytes(
                &px,
                dtype,
                &[1, 3, resolution as i64, resolution as i64],
                0,
            )?;
            let out = exe
                .execute(&weights.arguments(&[vec![&input]])?)?
                .remove(0)
                .remove(0);
            width = out.dims()[1];
            table.extend(out.to_bytes()?);
        }
    }
    let dims = [2 * run.images.len() as i64, width];
    (0..devices)
        .map(|d| Ok(client.buffer_from_bytes(&table, dtype, &dims, d)?))
        .collect()
}

/// bf16 pixels as the bytes of the compute dtype.
fn pixels(values: &[bf16], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::BF16 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => values
            .iter()
            .flat_map(|v| v.to_f32().to_le_bytes())
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn device_inputs(
    client: &Client,
    run: &RunPlan,
    args: &TrainArgs,
    shard: &[Sample],
    (key, first_index): (Key, i32),
    device: usize,
    lr: f64,
    step: usize,
    apply: bool,
) -> Result<Vec<(&'static str, DeviceBuffer)>> {
    let b = shard.len() as i64;
    let mut ids = Vec::with_capacity(shard.len() * run.tokenizer.max_length());
    for s in shard {
        let caption = args
            .learnable_property
            .caption(s.template, &run.placeholder_text);
        ids.extend(
            run.tokenizer
                .encode(&caption)?
                .into_iter()
                .map(|i| i as i32),
        );
    }
    let indices: Vec<i32> = (first_index..first_index + shard.len() as i32).collect();
    let scalar = |v: f64| client.buffer_from_host(&[v as f32], &[], device);
    let mut inputs = vec![
        (
            "input_ids",
            client.buffer_from_host(&ids, &[b, run.tokenizer.max_length() as i64], device)?,
        ),
        ("key", client.buffer_from_host(&key.data(), &[2], device)?),
        (
            "sample_index",
            client.buffer_from_host(&indices, &[b], device)?,
        ),
        (
            "sample_index",
            client.buffer_from_host(
                &(first_index..first_index + b as i32).collect::<Vec<_>>(),
                &[b],
                device,
            )?,
        ),
        ("lr", scalar(lr)?),
        ("step", scalar(step as f64 + 1.0)?),
        ("apply", scalar(if apply { 1.0 } else { 0.0 })?),
    ];
    if args.no_cache_latents {
        let px = pixels(&run.images.pixel_values(shard), run.compute_dtype);
        let r = args.resolution as i64;
        inputs.push((
            "pixel_values",
            client.buffer_from_bytes(&px, run.compute_dtype, &[b, 3, r, r], device)?,
        ));
    } else {
        let index: Vec<i32> = shard
            .iter()
            .map(|s| 2 * s.image as i32 + s.flip as i32)
            .collect();
        inputs.push((
            "moment_index",
            client.buffer_from_host(&index, &[b], device)?,
        ));
    }
    Ok(inputs)
}

fn upload_rows(client: &Client, rows: &RowState, devices: usize) -> Result<Vec<[DeviceBuffer; 4]>> {
    let n = rows.rows.len() / rows.hidden;
    let dims = [n as i64, rows.hidden as i64];
    let zeros = vec![0f32; rows.rows.len()];
    (0..devices)
        .map(|d| {
            Ok([
                client.buffer_from_host(&rows.rows, &dims, d)?,
                client.buffer_from_host(&rows.exp_avg, &dims, d)?,
                client.buffer_from_host(&rows.exp_avg_sq, &dims, d)?,
                client.buffer_from_host(&zeros, &dims, d)?,
            ])
        })
        .collect()
}

fn read_rows(state: &[DeviceBuffer; 4], hidden: usize) -> Result<RowState> {
    Ok(RowState {
        hidden,
        rows: state[0].to_vec()?,
        exp_avg: state[1].to_vec()?,
        exp_avg_sq: state[2].to_vec()?,
    })
}

/// Reads the pending losses, averages each optimizer step's micro-steps, logs them; a
/// non-finite loss ends the run with the step named.
fn flush_losses(
    pending: &mut Vec<(usize, f64, DeviceBuffer)>,
    progress: &mut Progress,
    accumulation: usize,
    out: &Path,
) -> Result<Option<f64>> {
    let mut records = Vec::new();
    for chunk in pending.chunks(accumulation) {
        let mut sum = 0.0;
        for (step, _, buf) in chunk {
            let loss = buf.to_vec::<f32>()?[0] as f64;
            if !loss.is_finite() {
                let last = checkpoint::list_checkpoints(out)
                    .pop()
                    .map(|c| c.1.display().to_string());
                bail!(
                    "the loss became {loss} at step {}; {}; try a lower --learning-rate or --mixed-precision no",
                    step + 1,
                    last.map_or("no checkpoint was written".into(), |l| format!("the last good checkpoint is {l}"))
                );
            }
            sum += loss;
        }
        let (step, lr, _) = &chunk[0];
        records.push(StepRecord {
            step: *step,
            loss: sum / chunk.len() as f64,
            lr: *lr,
            seconds: progress.seconds(),
        });
    }
    pending.clear();
    progress.record(&records)?;
    Ok(records.last().map(|r| r.loss))
}

//! The training loop: compile the step once for every device, cache the VAE moments, then feed
//! each step its batch shards, keys and learning rate, keeping the rows and optimizer state on
//! the devices; read losses back in batches, save embeddings and checkpoints, stop cleanly on
//! Ctrl-C or a non-finite loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xla_graphs::programs::interface::Args;
use xla_graphs::programs::train_step::{LatentSource, TrainStepInputs};

use super::args::TrainArgs;
use super::checkpoint::{self, RowState, TrainerState};
use super::progress::{Progress, StepRecord};
use super::settings::{self, RunSettings};
use super::setup::{plan, RunPlan};
use super::step::{
    cache_moments, compile_step, pixel_bytes, read_rows, step_config, upload_rows, CompiledStep,
    Rows,
};
use super::validation::{self, Validation};
use crate::data::dataset::{epoch_plan, Sample};
use crate::hub::push::push_during_training;
use crate::io::learned_embeds::write_learned_embeds;
use crate::io::output_dir::{
    check_outside, has_previous, recover_previous, remove_stale_checkpoint_tmp, written_by_ti_xla,
    OutputLock, RunManifest, SetAside,
};
use crate::model::full_pipeline::{save_full_pipeline, LearnedTokens};
use crate::model::tokenizer::placeholder_token_names;
use crate::pjrt::{Client, DeviceBuffer};
use crate::rng::Key;
use crate::runtime::device::{open_client, resolve_devices};
use crate::signals;

/// Ctrl-C stopped the run after writing a checkpoint (the binary exits with 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: checkpoint written to {0}; continue with --resume-from-checkpoint latest")]
pub struct Interrupted(pub PathBuf);

/// What a finished run produced.
pub struct TrainOutcome {
    pub learned_embeds: PathBuf,
    pub steps: usize,
    pub last_loss: Option<f64>,
}

/// How many optimizer steps' losses to gather before reading them back.
const LOSS_READ_EVERY: usize = 10;

pub fn train(args: &TrainArgs) -> Result<TrainOutcome> {
    signals::install();
    let out = &args.output_dir;
    let client = open_client(&args.device)?;
    let devices = resolve_devices(&client, args.num_devices, args.device.device)?;
    let run = plan(args, devices)?;
    let _lock = OutputLock::acquire(out)?;
    // A resume continues the run that set an earlier run's files aside (an interrupted
    // --overwrite run): they stay aside until it succeeds. A fresh run puts back what a killed
    // one left aside.
    let resuming = args.resume_from_checkpoint.is_some();
    if !resuming && has_previous(out) {
        // A replacing run that left a checkpoint can still be resumed: neither run's files
        // are given up without the user's say.
        let ours = written_by_ti_xla(out)?;
        let resumable = checkpoint::list_checkpoints(out)
            .into_iter()
            .find(|(_, d)| d.strip_prefix(out).is_ok_and(|rel| ours.contains(rel)));
        if let Some((_, dir)) = resumable {
            bail!(
                "{} holds an interrupted --overwrite run ({}) and, in {}, the earlier run it is replacing; continue it with --resume-from-checkpoint latest, or delete {} to give up the earlier run",
                out.display(),
                dir.display(),
                out.join(".ti-xla-previous").display(),
                out.join(".ti-xla-previous").display(),
            );
        }
        recover_previous(out)?;
        let backup = out.join(".ti-xla-previous");
        if has_previous(out) {
            bail!(
                "{} holds files of an earlier run that could not be put back (a file of yours is in their place); move what you want to keep out of it and delete it",
                backup.display()
            );
        }
        eprintln!(
            "warning: put back the files of an earlier run in {} that a killed --overwrite run had set aside",
            out.display()
        );
    }
    remove_stale_checkpoint_tmp(out);
    let manifest = RunManifest::begin(out)?;
    let (resume, earlier) = match &args.resume_from_checkpoint {
        Some(spec) => (
            Some(checkpoint::load(&checkpoint::resolve(out, spec)?)?),
            Vec::new(),
        ),
        None => (None, earlier_run(out, &manifest, args)?),
    };
    let mut planned: Vec<PathBuf> = RUN_FILES.map(PathBuf::from).to_vec();
    planned.push(PathBuf::from("validation"));
    planned.extend(log_root(args));
    if args.save_as_full_pipeline {
        planned.extend(check_pipeline_targets(args, &run, &manifest)?);
    }
    let (state, rows) = starting_point(args, &run, devices, resume)?;
    if args.resume_from_checkpoint.is_some() {
        super::progress::truncate_log(out, state.step)?;
    }
    eprintln!(
        "training {:?} on {devices} {} device(s), {} image(s), {} steps, lr {:.3e}, {}",
        run.placeholder_text,
        args.device.device.name(),
        run.images.len(),
        run.total_steps,
        run.schedule.base_lr,
        run.compute_dtype
    );
    let trainer = Trainer::new(&client, &run, args, devices, &manifest)?;
    let rows = upload_rows(&client, &rows, devices)?;
    // From the first step on, an interrupt writes a checkpoint; the earlier run's files wait
    // aside until this one has replaced them.
    signals::training_started();
    let previous = if resuming {
        SetAside::pending(out)
    } else {
        manifest.set_aside(&earlier)?
    };
    // Listed before they are written: a run killed from here on (SIGKILL, a second Ctrl-C)
    // leaves files the next run knows as ti-xla's.
    manifest.claim(&planned)?;
    RunSettings::new(args, &run, devices)?.write(out)?;
    let result = trainer
        .run(state, rows)
        .and_then(|(steps, last_loss, rows)| {
            let rows = rows[0].rows.to_vec::<f32>()?;
            let learned_embeds = write_outputs(args, &run, &rows)?;
            Ok(TrainOutcome {
                learned_embeds,
                steps,
                last_loss,
            })
        });
    match &result {
        Ok(_) => previous.discard()?,
        // The checkpoint continues this run; the earlier one's files stay aside until it ends.
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {}
        Err(_) => previous.restore()?,
    }
    manifest.save()?;
    result
}

/// A fresh run's state, or the checkpoint's when its settings match this run's.
fn starting_point(
    args: &TrainArgs,
    run: &RunPlan,
    devices: usize,
    resume: Option<(TrainerState, RowState)>,
) -> Result<(TrainerState, RowState)> {
    let fingerprint = fingerprint(args, run, devices);
    if let Some((state, rows)) = resume {
        if state.fingerprint != fingerprint {
            let changed: Vec<&String> = fingerprint
                .keys()
                .filter(|k| state.fingerprint.get(*k) != fingerprint.get(*k))
                .collect();
            bail!("cannot resume: the checkpoint was made with different settings ({changed:?}); use the original flags");
        }
        return Ok((state, rows));
    }
    let n = run.initial_rows.len();
    let state = TrainerState {
        step: 0,
        epoch: 0,
        position: 0,
        key: Key::from_seed(args.seed).data(),
        fingerprint,
    };
    let rows = RowState {
        hidden: run.hidden,
        rows: run.initial_rows.clone(),
        exp_avg: vec![0.0; n],
        exp_avg_sq: vec![0.0; n],
    };
    Ok((state, rows))
}

/// The final embedding, the full pipeline when asked, and the loss plot; returns the
/// embedding's path.
fn write_outputs(args: &TrainArgs, run: &RunPlan, rows: &[f32]) -> Result<PathBuf> {
    let out = &args.output_dir;
    let learned_embeds = out.join("learned_embeds.safetensors");
    let widths = run.folder.row_widths();
    write_learned_embeds(&learned_embeds, &args.placeholder_token, rows, &widths)?;
    if args.save_as_full_pipeline {
        let tokenizer = args
            .tokenizer_name
            .clone()
            .unwrap_or_else(|| run.folder.component("tokenizer"));
        let tokenizer_2 = run.folder.component("tokenizer_2");
        let tokenizers = [tokenizer.as_path(), tokenizer_2.as_path()];
        let names = placeholder_token_names(&args.placeholder_token, args.num_vectors);
        let first_ids: Vec<usize> = run
            .folder
            .text_encoders()
            .iter()
            .map(|c| c.vocab_size)
            .collect();
        let learned = LearnedTokens {
            names: &names,
            first_ids: &first_ids,
            rows,
            widths: &widths,
        };
        let (root, variant) = (&run.folder.root, run.folder.variant.as_deref());
        save_full_pipeline(root, &tokenizers[..widths.len()], variant, out, &learned)?;
    }
    // The whole run's curve, from the log (which a resumed run appends to).
    let logged = super::loss_plot::read_log(&out.join("train_log.jsonl"))?;
    let title = super::loss_plot::title(&args.placeholder_token, &args.model.display_name());
    super::loss_plot::write(
        &out.join("loss.png"),
        &title,
        &logged,
        &validation::marks(out),
    )?;
    Ok(learned_embeds)
}

/// The compiled programs of a run and what they read, with the host loop around them.
struct Trainer<'a> {
    client: &'a Client,
    /// What in the output folder is ti-xla's: no save replaces a user's file.
    manifest: &'a RunManifest,
    run: &'a RunPlan,
    args: &'a TrainArgs,
    devices: usize,
    step: CompiledStep,
    validation: Option<Validation>,
    /// The VAE moments on each device, with the latent cache.
    moment_table: Option<Vec<DeviceBuffer>>,
}

/// One device's inputs of one micro-step, uploaded.
struct DeviceBatch {
    input_ids: DeviceBuffer,
    /// SDXL: the second tokenizer's ids and the time ids.
    input_ids_2: Option<DeviceBuffer>,
    time_ids: Option<DeviceBuffer>,
    key: DeviceBuffer,
    sample_index: DeviceBuffer,
    lr: DeviceBuffer,
    step: DeviceBuffer,
    apply: DeviceBuffer,
    pixel_values: Option<DeviceBuffer>,
    moment_index: Option<DeviceBuffer>,
    loss_mask: Option<DeviceBuffer>,
}

impl<'a> Trainer<'a> {
    fn new(
        client: &'a Client,
        run: &'a RunPlan,
        args: &'a TrainArgs,
        devices: usize,
        manifest: &'a RunManifest,
    ) -> Result<Self> {
        let config = step_config(
            &run.folder,
            args,
            run.compute_dtype,
            run.resolution,
            run.tokenizers.max_length(),
            run.images.len(),
            devices,
            &run.median_norms,
        )?;
        let latents = config.latents;
        eprintln!("compiling the training step (cached after the first run) ...");
        let step = compile_step(client, &run.folder, &config)?;
        let validation = Validation::new(client, run, args, devices)?;
        let moment_table = match latents {
            LatentSource::Cached { .. } => Some(cache_moments(
                client,
                &run.folder,
                &run.images,
                run.folder.vae_dtype(run.compute_dtype),
                run.resolution,
                devices,
            )?),
            LatentSource::Encode => None,
        };
        Ok(Trainer {
            client,
            manifest,
            run,
            args,
            devices,
            step,
            validation,
            moment_table,
        })
    }

    /// Runs optimizer steps from `state` to the end; returns the steps done, the last loss and
    /// the rows on each device. Ctrl-C writes a checkpoint and ends with `Interrupted`.
    fn run(
        &self,
        mut state: TrainerState,
        mut rows: Vec<Rows>,
    ) -> Result<(usize, Option<f64>, Vec<Rows>)> {
        let (args, run) = (self.args, self.run);
        let out = &args.output_dir;
        let settings = serde_json::to_value(args)?;
        let tensorboard = args.tensorboard_dir();
        let tensorboard = tensorboard.as_deref().map(|dir| (dir, &settings));
        let mut progress = Progress::new(out, state.step, run.total_steps, tensorboard)?;
        let mut pending: Vec<(usize, f64, DeviceBuffer)> = Vec::new();
        let mut last_loss = None;
        let mut order = self.epoch_order(state.epoch);
        while state.step < run.total_steps {
            let lr = run.schedule.lr(state.step as u64);
            for micro in 0..args.gradient_accumulation_steps {
                let apply = micro + 1 == args.gradient_accumulation_steps;
                let (next, loss) = self.micro_step(&mut state, &mut order, &rows, lr, apply)?;
                rows = next;
                pending.push((state.step, lr, loss));
            }
            state.step += 1;
            let save_due = args.save_steps > 0 && state.step.is_multiple_of(args.save_steps);
            let checkpoint_due =
                args.checkpointing_steps > 0 && state.step.is_multiple_of(args.checkpointing_steps);
            let stop = signals::interrupted();
            if pending.len() >= LOSS_READ_EVERY * args.gradient_accumulation_steps
                || save_due
                || checkpoint_due
                || stop
                || state.step == run.total_steps
            {
                let accumulation = args.gradient_accumulation_steps;
                last_loss =
                    flush_losses(&mut pending, &mut progress, accumulation, out)?.or(last_loss);
            }
            if save_due {
                let name = format!("learned_embeds-steps-{}.safetensors", state.step);
                self.manifest.check_writable(Path::new(&name))?;
                self.manifest.claim(&[PathBuf::from(&name)])?;
                let path = out.join(name);
                let values = rows[0].rows.to_vec::<f32>()?;
                let widths = run.folder.row_widths();
                write_learned_embeds(&path, &args.placeholder_token, &values, &widths)?;
                if args.push_every_save {
                    self.manifest.save()?;
                    if let Some(warning) = push_during_training(out, &args.hub) {
                        progress.println(&warning);
                    }
                }
            }
            if checkpoint_due || stop {
                let limit = args.checkpoints_total_limit;
                let name = checkpoint::checkpoint_dir(Path::new(""), state.step);
                self.manifest.check_writable(&name)?;
                self.manifest.claim(std::slice::from_ref(&name))?;
                let owned = |rel: &Path| self.manifest.owns(rel);
                let row_state = read_rows(&rows[0], run.hidden)?;
                let dir = checkpoint::save(out, &state, &row_state, limit, &owned)?;
                self.manifest.save()?;
                if stop {
                    progress.finish();
                    return Err(Interrupted(dir).into());
                }
            }
            if let Some(v) = self.validation.as_ref().filter(|v| v.due(state.step)) {
                let values = rows[0].rows.to_vec::<f32>()?;
                let dir = v.run(self.client, state.step, &values, out)?;
                progress.validation_images(state.step, &dir)?;
                self.manifest.save()?;
                progress.println(&format!("validation images: {}", dir.display()));
            }
        }
        progress.finish();
        Ok((state.step, last_loss, rows))
    }

    fn epoch_order(&self, epoch: u64) -> Vec<Sample> {
        let args = self.args;
        let templates = self.run.captions.template_count();
        epoch_plan(
            args.seed,
            epoch,
            self.run.images.len(),
            args.repeats,
            templates,
        )
    }

    /// One forward and backward pass over the next global batch: returns the rows (updated
    /// when `apply`, else with the gradient accumulated) and device 0's loss, still on the
    /// device.
    fn micro_step(
        &self,
        state: &mut TrainerState,
        order: &mut Vec<Sample>,
        rows: &[Rows],
        lr: f64,
        apply: bool,
    ) -> Result<(Vec<Rows>, DeviceBuffer)> {
        let (args, run) = (self.args, self.run);
        let per_device = args.train_batch_size;
        let global = per_device * self.devices;
        if state.position + global > run.batches_per_epoch * global {
            state.epoch += 1;
            state.position = 0;
            *order = self.epoch_order(state.epoch);
        }
        let start = state.position;
        let samples = &order[start..start + global];
        state.position += global;
        // As the Flax trainer: (dropout, sample, next) = split(key, 3) each step.
        let keys = Key::from_data(state.key).split(3);
        state.key = keys[2].data();
        let batches = (0..self.devices)
            .map(|d| {
                let shard = &samples[d * per_device..(d + 1) * per_device];
                let first = (d * per_device) as i32;
                let at = (state.epoch, start + d * per_device);
                self.device_batch(shard, at, (keys[1], first), d, lr, state.step, apply)
            })
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<TrainStepInputs<&DeviceBuffer>> = batches
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(d, (b, rows))| TrainStepInputs {
                pixel_values: b.pixel_values.as_ref(),
                moment_table: self.moment_table.as_ref().map(|t| &t[d]),
                moment_index: b.moment_index.as_ref(),
                input_ids: &b.input_ids,
                input_ids_2: b.input_ids_2.as_ref(),
                time_ids: b.time_ids.as_ref(),
                state: rows.as_refs(),
                lr: &b.lr,
                step: &b.step,
                apply: &b.apply,
                key: Some(&b.key),
                sample_index: Some(&b.sample_index),
                latent_eps: None,
                noise: None,
                timesteps: None,
                offset_noise: None,
                loss_mask: b.loss_mask.as_ref(),
            })
            .collect();
        let mut outputs = self.step.run(&inputs)?.into_iter();
        let first = outputs.next().context("the step returned nothing")?;
        let mut next = vec![first.state];
        next.extend(outputs.map(|o| o.state));
        Ok((next, first.loss))
    }

    /// Device `device`'s shard of the batch (from `position` of epoch `epoch`), its key and
    /// the step's scalars, uploaded.
    #[allow(clippy::too_many_arguments)]
    fn device_batch(
        &self,
        shard: &[Sample],
        (epoch, position): (u64, usize),
        (key, first_index): (Key, i32),
        device: usize,
        lr: f64,
        step: usize,
        apply: bool,
    ) -> Result<DeviceBatch> {
        let (client, run, args) = (self.client, self.run, self.args);
        let b = shard.len() as i64;
        let seq_len = run.tokenizers.max_length();
        let mut ids: Vec<Vec<i32>> = vec![Vec::new(); run.tokenizers.all.len()];
        for (i, s) in shard.iter().enumerate() {
            let dropped = run.captions.dropped(args.seed, epoch, position + i);
            let caption = run
                .captions
                .text(s.image, s.template, &run.placeholder_text, dropped);
            for (all, one) in ids.iter_mut().zip(run.tokenizers.encode(&caption)?) {
                all.extend(one);
            }
        }
        let ids_dims = [b, seq_len as i64];
        let input_ids_2 = ids
            .get(1)
            .map(|i| client.buffer_from_host(i, &ids_dims, device))
            .transpose()?;
        let time_ids = match run.folder.text_time()? {
            Some([_, n]) => {
                let values = run.images.time_ids(shard);
                Some(client.buffer_from_host(&values, &[b, n as i64], device)?)
            }
            None => None,
        };
        let indices: Vec<i32> = (first_index..first_index + b as i32).collect();
        let scalar = |v: f64| client.buffer_from_host(&[v as f32], &[], device);
        let (pixel_values, moment_index) = if args.no_cache_latents {
            let vae_dtype = run.folder.vae_dtype(run.compute_dtype);
            let px = pixel_bytes(&run.images.pixel_values(shard), vae_dtype);
            let r = run.resolution as i64;
            let dims = [b, 3, r, r];
            let buf = client.buffer_from_bytes(&px, vae_dtype, &dims, device)?;
            (Some(buf), None)
        } else {
            let index: Vec<i32> = shard
                .iter()
                .map(|s| 2 * s.image as i32 + s.flip as i32)
                .collect();
            (None, Some(client.buffer_from_host(&index, &[b], device)?))
        };
        Ok(DeviceBatch {
            input_ids: client.buffer_from_host(&ids[0], &ids_dims, device)?,
            input_ids_2,
            time_ids,
            key: client.buffer_from_host(&key.data(), &[2], device)?,
            sample_index: client.buffer_from_host(&indices, &[b], device)?,
            lr: scalar(lr)?,
            step: scalar(step as f64 + 1.0)?,
            apply: scalar(if apply { 1.0 } else { 0.0 })?,
            pixel_values,
            moment_index,
            loss_mask: match &run.masks {
                Some(m) => {
                    let dims = [b, 1, m.size as i64, m.size as i64];
                    Some(client.buffer_from_host(&m.batch(shard), &dims, device)?)
                }
                None => None,
            },
        })
    }
}

/// The files every training run writes at the top of its output folder.
const RUN_FILES: [&str; 4] = [
    "train_log.jsonl",
    "learned_embeds.safetensors",
    "loss.png",
    settings::FILE,
];

/// The names a training run writes at the top of its output folder (`logs`: the top of
/// --logging-dir when that is inside it).
fn is_run_output(name: &str, logs: Option<&Path>) -> bool {
    name.starts_with("learned_embeds")
        || name.starts_with("checkpoint-")
        || name == "validation"
        || RUN_FILES.contains(&name)
        || logs.is_some_and(|l| l == Path::new(name))
}

/// The top-level name of --logging-dir inside the output folder (`logs`), if it is there.
fn log_root(args: &TrainArgs) -> Option<PathBuf> {
    match args.logging_dir.components().next()? {
        std::path::Component::Normal(name) => Some(PathBuf::from(name)),
        _ => None,
    }
}

/// The earlier run's outputs (top-level names) that this run replaces: refused without
/// `--overwrite`. A file of the same name that ti-xla did not write is never replaced.
fn earlier_run(out: &Path, manifest: &RunManifest, args: &TrainArgs) -> Result<Vec<PathBuf>> {
    let overwrite = args.overwrite;
    let logs = log_root(args);
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| PathBuf::from(e.file_name()))
        .filter(|n| is_run_output(&n.to_string_lossy(), logs.as_deref()))
        .collect();
    names.sort();
    for fixed in RUN_FILES {
        manifest.check_writable(Path::new(fixed))?;
    }
    let ours: Vec<PathBuf> = names.into_iter().filter(|n| manifest.owns(n)).collect();
    if ours.is_empty() {
        return Ok(ours);
    }
    if !overwrite {
        bail!(
            "{} already holds a training run ({}); pass --overwrite to replace it, --resume-from-checkpoint latest to continue it, or another --output-dir",
            out.display(),
            ours[0].display()
        );
    }
    Ok(ours)
}

/// `--save-as-full-pipeline` writes the model's files into the output folder: none of them may
/// be a file of the user's. Returns what it will write there (files and their folders).
fn check_pipeline_targets(
    args: &TrainArgs,
    run: &RunPlan,
    manifest: &RunManifest,
) -> Result<Vec<PathBuf>> {
    if let Some(t) = &args.tokenizer_name {
        check_outside(&args.output_dir, t, "--output-dir")?;
    }
    let root = &run.folder.root;
    let mut targets: Vec<PathBuf> = walk_files(root)
        .iter()
        .map(|entry| {
            entry
                .strip_prefix(root)
                .expect("under the root")
                .to_path_buf()
        })
        .chain(["tokenizer", "tokenizer_2", "model_index.json"].map(PathBuf::from))
        .collect();
    for rel in &targets {
        manifest.check_writable(rel)?;
    }
    let folders: Vec<PathBuf> = targets
        .iter()
        .flat_map(|rel| rel.ancestors().skip(1).map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    targets.extend(folders);
    Ok(targets)
}

/// Every non-hidden file under `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
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
        ("resolution", run.resolution.to_string()),
        ("images", run.images.len().to_string()),
        (
            "learnable_property",
            format!("{:?}", args.learnable_property),
        ),
        ("center_crop", args.center_crop.to_string()),
        ("compute_dtype", run.compute_dtype.to_string()),
    ]
    .into_iter()
    // Settings of the options, only when used (checkpoints made without them still match).
    .chain(
        [
            ("caption_extension", args.caption_extension.clone()),
            (
                "caption_dropout_rate",
                (args.caption_dropout_rate > 0.0).then(|| args.caption_dropout_rate.to_string()),
            ),
            (
                "templates",
                args.templates.as_ref().map(|t| t.display().to_string()),
            ),
            ("masked_loss", args.masked_loss.then(|| "true".to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?))),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect()
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

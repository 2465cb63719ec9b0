#!/usr/bin/env python3
"""Compiles the JAX/Flax Textual Inversion step (diffusers 0.39.0's textual_inversion_flax.py
`train_step`, as scripts/bench_train_flax.py builds it) ahead of time for a Cloud TPU topology
with JAX's AOT path, on a machine without a TPU, and prints its memory and cost analysis beside
`ti-xla train --compile-only --topology` for the same model, topology, resolution, per-chip
batch and precision.

Only shapes are needed: the models are built from the folder's configs and their parameters
are abstract (jax.eval_shape), so a folder from
`python3 scripts/make_sd15_random.py /tmp/sd15-configs --configs-only` is enough.

    python -m venv /tmp/flaxbench && /tmp/flaxbench/bin/pip install "jax==0.10.2" \\
        "jaxlib==0.10.2" "libtpu==0.0.52" flax "diffusers==0.39.0" "transformers==4.57.6" \\
        safetensors pillow
    cargo build --release
    /tmp/flaxbench/bin/python scripts/tpu_compile_side_by_side.py --model /tmp/sd15-configs \\
        --topology v5e:2x2 --resolution 512 --batches 1,8 --precision bf16 --json out.json

How the Flax step is placed on the slice: the script's `jax.pmap(train_step, "batch",
donate_argnums=(0,))` has no AOT path for a topology without devices, so the same
`train_step` (unchanged, with its `pmean(..., "batch")`) runs under `jax.shard_map` over a
one-axis mesh of the topology's devices, jitted with the state donated: parameters replicated,
pixels, ids and the per-device PRNG keys split over the axis, which is what pmap does.
`--precision bf16` is the script's `--mixed_precision bf16`: the VAE and UNet compute in bf16
(their modules' dtype), the text encoder and every parameter stay f32. ti-xla is run twice:
with its latent cache (its default: the step takes cached VAE moments, the encoder runs once
before the loop) and with --no-cache-latents (the VAE encoder inside the step, as in the Flax
step).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TPU_ACCELERATOR_TYPE", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax.training import train_state  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from diffusers import FlaxAutoencoderKL, FlaxDDPMScheduler, FlaxUNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = float(1 << 30)
# Peak bf16 FLOP/s and HBM bytes/s per chip (Google's published figures; the same table as
# src/runtime/topology.rs), for a roofline time on the same basis for both tools, since
# libtpu's own `optimal_seconds` comes out negative for programs this large.
CHIPS = {"v4": (275e12, 1228e9), "v5e": (197e12, 819e9), "v5p": (459e12, 2765e9),
         "v6e": (918e12, 1640e9)}


def flax_step(args, devices, batch):
    """Compiles the Flax TI step for `devices` at `batch` per device; returns its analyses."""
    weight_dtype = {"f32": jnp.float32, "bf16": jnp.bfloat16}[args.precision]
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    assert tokenizer.add_tokens("<cat-toy>") == 1
    initializer_token_id = tokenizer.encode("toy", add_special_tokens=False)[0]
    placeholder_token_id = tokenizer.convert_tokens_to_ids("<cat-toy>")
    vocab = len(tokenizer)

    te_config = CLIPTextConfig.from_pretrained(args.model, subfolder="text_encoder")
    te_config.vocab_size = vocab  # resize_token_embeddings
    text_encoder = FlaxCLIPTextModel(te_config, _do_init=False)
    te_params = jax.eval_shape(lambda rng: text_encoder.init_weights(rng, (1, 77)),
                               jax.random.PRNGKey(0))
    vae = FlaxAutoencoderKL.from_config(
        FlaxAutoencoderKL.load_config(args.model, subfolder="vae"), dtype=weight_dtype)
    vae_params = jax.eval_shape(vae.init_weights, jax.random.PRNGKey(0))
    unet = FlaxUNet2DConditionModel.from_config(
        FlaxUNet2DConditionModel.load_config(args.model, subfolder="unet"), dtype=weight_dtype)
    unet_params = jax.eval_shape(unet.init_weights, jax.random.PRNGKey(0))

    # The script closes over the resized table (a constant of the compiled step); random values
    # so that XLA cannot fold it.
    dim = te_config.hidden_size
    original_token_embeds = jnp.asarray(
        np.random.default_rng(0).standard_normal((vocab, dim), dtype=np.float32))
    del initializer_token_id  # only the initial values depend on it

    optimizer = optax.adamw(learning_rate=optax.constant_schedule(1e-4), b1=0.9, b2=0.999,
                            eps=1e-8, weight_decay=1e-2)

    def create_mask(params, label_fn):
        def _map(params, mask, label_fn):
            for k in params:
                if label_fn(k):
                    mask[k] = "token_embedding"
                elif isinstance(params[k], dict):
                    mask[k] = {}
                    _map(params[k], mask[k], label_fn)
                else:
                    mask[k] = "zero"

        mask = {}
        _map(params, mask, label_fn)
        return mask

    def zero_grads():
        def init_fn(_):
            return ()

        def update_fn(updates, state, params=None):
            return jax.tree_util.tree_map(jnp.zeros_like, updates), ()

        return optax.GradientTransformation(init_fn, update_fn)

    tx = optax.multi_transform(
        {"token_embedding": optimizer, "zero": zero_grads()},
        create_mask(te_params, lambda s: s == "token_embedding"),
    )
    state = jax.eval_shape(
        lambda p: train_state.TrainState.create(apply_fn=text_encoder.__call__, params=p, tx=tx),
        te_params)
    noise_scheduler = FlaxDDPMScheduler(beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", num_train_timesteps=1000)
    noise_scheduler_state = noise_scheduler.create_state()

    # ---- textual_inversion_flax.py's train_step ----
    def train_step(state, vae_params, unet_params, batch, train_rng):
        dropout_rng, sample_rng, new_train_rng = jax.random.split(train_rng, 3)

        def compute_loss(params):
            vae_outputs = vae.apply(
                {"params": vae_params}, batch["pixel_values"], deterministic=True, method=vae.encode
            )
            latents = vae_outputs.latent_dist.sample(sample_rng)
            latents = jnp.transpose(latents, (0, 3, 1, 2))
            latents = latents * vae.config.scaling_factor
            noise_rng, timestep_rng = jax.random.split(sample_rng)
            noise = jax.random.normal(noise_rng, latents.shape)
            bsz = latents.shape[0]
            timesteps = jax.random.randint(timestep_rng, (bsz,), 0, noise_scheduler.config.num_train_timesteps)
            noisy_latents = noise_scheduler.add_noise(noise_scheduler_state, latents, noise, timesteps)
            encoder_hidden_states = state.apply_fn(
                batch["input_ids"], params=params, dropout_rng=dropout_rng, train=True
            )[0]
            model_pred = unet.apply(
                {"params": unet_params}, noisy_latents, timesteps, encoder_hidden_states, train=False
            ).sample
            if noise_scheduler.config.prediction_type == "epsilon":
                target = noise
            elif noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(noise_scheduler_state, latents, noise, timesteps)
            else:
                raise ValueError(f"Unknown prediction type {noise_scheduler.config.prediction_type}")
            loss = (target - model_pred) ** 2
            loss = loss.mean()
            return loss

        grad_fn = jax.value_and_grad(compute_loss)
        loss, grad = grad_fn(state.params)
        grad = jax.lax.pmean(grad, "batch")
        new_state = state.apply_gradients(grads=grad)
        token_embeds = original_token_embeds.at[placeholder_token_id].set(
            new_state.params["text_model"]["embeddings"]["token_embedding"]["embedding"][placeholder_token_id]
        )
        new_state.params["text_model"]["embeddings"]["token_embedding"]["embedding"] = token_embeds
        metrics = {"loss": loss}
        metrics = jax.lax.pmean(metrics, axis_name="batch")
        return new_state, metrics, new_train_rng
    # ---- end ----

    mesh = Mesh(np.array(devices), ("batch",))

    def per_device(state, vae_params, unet_params, batch, rngs):
        # pmap hands each device its key as [2]; shard_map hands it its [1, 2] slice.
        state, metrics, rng = train_step(state, vae_params, unet_params, batch, rngs[0])
        return state, metrics, rng[None]

    step = jax.jit(
        jax.shard_map(per_device, mesh=mesh,
                      in_specs=(P(), P(), P(), P("batch"), P("batch")),
                      out_specs=(P(), P(), P("batch")), check_vma=False),
        donate_argnums=(0,))

    def placed(tree, spec):
        sharding = NamedSharding(mesh, spec)
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)

    n = len(devices)
    r = args.resolution
    batch_shapes = {
        "pixel_values": jax.ShapeDtypeStruct((n * batch, 3, r, r), jnp.float32),
        "input_ids": jax.ShapeDtypeStruct((n * batch, tokenizer.model_max_length), jnp.int32),
    }
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.PRNGKey(0), n))
    t0 = time.perf_counter()
    compiled = step.lower(placed(state, P()), placed(vae_params, P()), placed(unet_params, P()),
                          placed(batch_shapes, P("batch")), placed(keys, P("batch"))).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    out = {
        "tool": "diffusers JAX/Flax (AOT)",
        "compile_s": seconds,
        "argument_bytes": mem.argument_size_in_bytes,
        "output_bytes": mem.output_size_in_bytes,
        "alias_bytes": mem.alias_size_in_bytes,
        "temp_bytes": mem.temp_size_in_bytes,
        "code_bytes": mem.generated_code_size_in_bytes,
        "flops": cost.get("flops"),
        "bytes_accessed": cost.get("bytes accessed"),
        "estimated_step_seconds": cost.get("optimal_seconds"),
    }
    out["needed_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                           + out["temp_bytes"] + out["code_bytes"])
    return out


def ti_xla(args, batch, cache_latents):
    cmd = [args.ti_xla, "train", "--pretrained-model-name-or-path", args.model,
           "--train-data-dir", args.images, "--placeholder-token", "<cat-toy>",
           "--initializer-token", "toy", "--resolution", str(args.resolution),
           "--train-batch-size", str(batch), "--mixed-precision",
           {"f32": "no", "bf16": "bf16"}[args.precision], "--device", "tpu",
           "--compile-only", "--topology", args.topology, "--json", "--batch-search", "0"]
    if not cache_latents:
        cmd.append("--no-cache-latents")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"tool": "ti-xla", "error": (run.stderr.strip().splitlines() or ["?"])[-1]}
    report = json.loads(lines[-1])
    step = report["programs"][0]
    return {
        "tool": "ti-xla" + ("" if cache_latents else " --no-cache-latents"),
        "compile_s": seconds,
        "argument_bytes": report["argument_bytes"],
        "output_bytes": report["output_bytes"],
        "temp_bytes": report["temp_bytes"],
        "code_bytes": report["code_bytes"],
        "needed_bytes": report["needed_bytes"],
        "flops": step["flops"],
        "bytes_accessed": step["bytes_accessed"],
        "estimated_step_seconds": report["estimated_step_seconds"],
        "fits": report["fits"],
    }


def gib(x):
    return f"{x / GIB:8.2f}" if x is not None else "       -"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a diffusers SD 1.x/2.x folder (configs suffice)")
    ap.add_argument("--images", default=os.path.join(ROOT, "tests", "fixtures", "sample-images"))
    ap.add_argument("--topology", default="v5e:2x2")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batches", default="1,8", help="per-chip batch sizes, comma-separated")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="bf16")
    ap.add_argument("--ti-xla", default=os.path.join(ROOT, "target", "release", "ti-xla"))
    ap.add_argument("--json")
    args = ap.parse_args()

    topo = topologies.get_topology_desc(topology_name=args.topology, platform="tpu")
    devices = topo.devices
    print(f"{args.topology}: {len(devices)} x {devices[0].device_kind}, jax {jax.__version__}",
          file=sys.stderr)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for row in (flax_step(args, devices, batch), ti_xla(args, batch, True),
                    ti_xla(args, batch, False)):
            row.update(batch=batch, topology=args.topology, resolution=args.resolution,
                       precision=args.precision)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    peak, bandwidth = CHIPS[args.topology.split(":")[0]]
    for r in rows:
        if r.get("flops") and r.get("bytes_accessed"):
            r["roofline_step_seconds"] = max(r["flops"] / peak, r["bytes_accessed"] / bandwidth)
    print(f"\n{args.topology}, {args.resolution} px, {args.precision}, per chip (GiB; the "
          "training step's TFLOP and roofline seconds per chip)")
    print(f"{'batch':>5}  {'tool':<28} {'args':>8} {'outputs':>8} {'temps':>8} {'needed':>8} "
          f"{'TFLOP':>8} {'roof. s':>8} {'compile s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['batch']:>5}  {r['tool']:<28} {r['error']}")
            continue
        flops = f"{r['flops'] / 1e12:8.3f}" if r.get("flops") else "       -"
        est = r.get("roofline_step_seconds")
        est = f"{est:8.4f}" if est else "       -"
        print(f"{r['batch']:>5}  {r['tool']:<28} {gib(r['argument_bytes'])} "
              f"{gib(r['output_bytes'])} {gib(r['temp_bytes'])} {gib(r['needed_bytes'])} "
              f"{flops} {est} {r['compile_s']:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

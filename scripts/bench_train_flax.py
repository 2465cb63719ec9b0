#!/usr/bin/env python3
"""Times the JAX/Flax Textual Inversion training step (diffusers 0.39.0 +
transformers 4.57.6, the last with Flax models) on this machine's CPU, for
scripts/bench_train.sh.

`train_step` below is examples/textual_inversion/textual_inversion_flax.py's, unchanged: VAE
encode (deterministic) -> latent_dist.sample x scaling_factor, noise, timesteps, add_noise
(FlaxDDPMScheduler, scaled_linear 0.00085..0.012), the text encoder with train=True on the whole
text-encoder params (gradient of every parameter, then optax.multi_transform zeroes all but the
token embedding), UNet, MSE, pmean, AdamW, restore every row but the placeholder's; compiled
with jax.pmap(donate_argnums=(0,)) over the local devices (one CPU device here). The script's
set-up is also reproduced (tokenizer + placeholder, resize_token_embeddings with the new row
copied from the initializer's). Left out: the data loader (pixel values are prepared once from
the sample images, bicubic-resized like the example's dataset) and the saves. Each timed step
ends with block_until_ready on the loss (the example never waits; on a CPU this changes
nothing but where the time is counted).

Weights: the same diffusers folder as the other benchmarks (PyTorch safetensors), converted
with numpy to Flax names here, so no torch is needed in this venv.

    python -m venv /tmp/flaxbench && /tmp/flaxbench/bin/pip install "jax[cpu]" flax \
        "diffusers==0.39.0" "transformers==4.57.6" safetensors pillow
    /tmp/flaxbench/bin/python scripts/bench_train_flax.py --model /tmp/sd15-random \
        --images tests/fixtures/sample-images --resolution 256 --steps 5 --json out.json
"""

import argparse
import json
import os
import resource
import statistics
import time

T_START = time.perf_counter()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import jax_utils  # noqa: E402
from flax.training import train_state  # noqa: E402
from flax.training.common_utils import shard  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from diffusers import FlaxAutoencoderKL, FlaxDDPMScheduler, FlaxUNet2DConditionModel  # noqa: E402
from diffusers.models import modeling_flax_pytorch_utils as dfx  # noqa: E402
from transformers import CLIPTextConfig, CLIPTokenizer, FlaxCLIPTextModel  # noqa: E402
from flax.traverse_util import unflatten_dict  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AsTorch:
    """What diffusers' converter needs of a torch tensor: `.numpy()`."""

    def __init__(self, a):
        self.a = a

    def numpy(self):
        return self.a


def diffusers_params(model, path):
    """diffusers' own PyTorch -> Flax conversion, with the random init replaced by its shapes."""
    sd = {k: _AsTorch(v.astype(np.float32)) for k, v in load_file(path).items()}
    real_init = model.init_weights
    model.init_weights = lambda rng: jax.eval_shape(real_init, rng)
    try:
        return dfx.convert_pytorch_state_dict_to_flax(sd, model)
    finally:
        model.init_weights = real_init


def clip_params(path, num_layers):
    """SD's text_encoder/model.safetensors -> FlaxCLIPTextModel params (Linear weights transposed)."""
    sd = load_file(path)
    flat = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        parts = k.split(".")
        if parts[-2] in ("token_embedding", "position_embedding"):
            flat[tuple(parts[:-1]) + ("embedding",)] = v
        elif "layer_norm" in parts[-2]:
            flat[tuple(parts[:-1]) + ("scale" if parts[-1] == "weight" else "bias",)] = v
        elif parts[-1] == "weight":
            flat[tuple(parts[:-1]) + ("kernel",)] = v.T
        else:
            flat[tuple(parts)] = v
    assert sum(1 for k in flat if k[-1] == "kernel") == num_layers * 6, "unexpected CLIP keys"
    return unflatten_dict({k: jnp.asarray(v.astype(np.float32)) for k, v in flat.items()})


def load_pixels(folder, size):
    out = []
    for name in sorted(os.listdir(folder)):
        try:
            img = Image.open(os.path.join(folder, name)).convert("RGB")
        except Exception:
            continue
        img = img.resize((size, size), resample=Image.Resampling.BICUBIC)
        arr = (np.array(img).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        out.append(arr.transpose(2, 0, 1))
    if not out:
        raise SystemExit(f"no images in {folder}")
    return out


def resize_token_embeddings(model, new_num_tokens, initializer_token_id, placeholder_token_id, rng):
    # textual_inversion_flax.py's
    if model.config.vocab_size == new_num_tokens or new_num_tokens is None:
        return
    model.config.vocab_size = new_num_tokens
    params = model.params
    old_embeddings = params["text_model"]["embeddings"]["token_embedding"]["embedding"]
    old_num_tokens, emb_dim = old_embeddings.shape
    initializer = jax.nn.initializers.normal()
    new_embeddings = initializer(rng, (new_num_tokens, emb_dim))
    new_embeddings = new_embeddings.at[:old_num_tokens].set(old_embeddings)
    new_embeddings = new_embeddings.at[placeholder_token_id].set(new_embeddings[initializer_token_id])
    params["text_model"]["embeddings"]["token_embedding"]["embedding"] = new_embeddings
    model.params = params
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1, help="per device")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up step(s)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--placeholder-token", default="<cat-toy>")
    ap.add_argument("--initializer-token", default="toy")
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    assert tokenizer.add_tokens(args.placeholder_token) == 1
    token_ids = tokenizer.encode(args.initializer_token, add_special_tokens=False)
    assert len(token_ids) == 1, token_ids
    initializer_token_id = token_ids[0]
    placeholder_token_id = tokenizer.convert_tokens_to_ids(args.placeholder_token)

    te_config = CLIPTextConfig.from_pretrained(args.model, subfolder="text_encoder")
    text_encoder = FlaxCLIPTextModel(te_config, seed=args.seed)  # random init, replaced below
    text_encoder.params = clip_params(
        os.path.join(args.model, "text_encoder", "model.safetensors"), te_config.num_hidden_layers)
    vae = FlaxAutoencoderKL.from_config(FlaxAutoencoderKL.load_config(args.model, subfolder="vae"))
    vae_params = diffusers_params(vae, os.path.join(args.model, "vae", "diffusion_pytorch_model.safetensors"))
    unet = FlaxUNet2DConditionModel.from_config(
        FlaxUNet2DConditionModel.load_config(args.model, subfolder="unet"))
    unet_params = diffusers_params(unet, os.path.join(args.model, "unet", "diffusion_pytorch_model.safetensors"))

    rng = jax.random.PRNGKey(args.seed)
    rng, _ = jax.random.split(rng)
    text_encoder = resize_token_embeddings(text_encoder, len(tokenizer), initializer_token_id,
                                           placeholder_token_id, rng)
    original_token_embeds = text_encoder.params["text_model"]["embeddings"]["token_embedding"]["embedding"]

    optimizer = optax.adamw(learning_rate=optax.constant_schedule(args.learning_rate), b1=0.9,
                            b2=0.999, eps=1e-8, weight_decay=1e-2)

    def create_mask(params, label_fn):
        def _map(params, mask, label_fn):
            for k in params:
                if label_fn(k):
                    mask[k] = "token_embedding"
                else:
                    if isinstance(params[k], dict):
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
        create_mask(text_encoder.params, lambda s: s == "token_embedding"),
    )
    state = train_state.TrainState.create(apply_fn=text_encoder.__call__, params=text_encoder.params, tx=tx)
    noise_scheduler = FlaxDDPMScheduler(beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", num_train_timesteps=1000)
    noise_scheduler_state = noise_scheduler.create_state()
    train_rngs = jax.random.split(rng, jax.local_device_count())

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

    p_train_step = jax.pmap(train_step, "batch", donate_argnums=(0,))
    # ---- end ----

    state = jax_utils.replicate(state)
    vae_params = jax_utils.replicate(vae_params)
    unet_params = jax_utils.replicate(unet_params)
    load_s = time.perf_counter() - t0

    pixels = load_pixels(args.images, args.resolution)
    total = args.batch * jax.local_device_count()
    prompt = f"a photo of a {args.placeholder_token}"
    input_ids = tokenizer([prompt] * total, padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="np").input_ids

    times, cpu_times, losses = [], [], []
    for i in range(args.warmup + args.steps):
        px = np.stack([pixels[(i * total + j) % len(pixels)][..., ::-1] if (i + j) % 2
                       else pixels[(i * total + j) % len(pixels)] for j in range(total)])
        batch = shard({"pixel_values": np.ascontiguousarray(px), "input_ids": input_ids})
        s, c = time.perf_counter(), time.process_time()
        state, train_metric, train_rngs = p_train_step(state, vae_params, unet_params, batch, train_rngs)
        losses.append(float(jax.block_until_ready(train_metric["loss"])[0]))
        times.append(time.perf_counter() - s)
        cpu_times.append(time.process_time() - c)
        print(f"step {i}: {times[-1]:.3f} s  loss {losses[-1]:.4f}", flush=True)

    timed = times[args.warmup:]
    result = {
        "tool": "diffusers JAX/Flax",
        "versions": f"jax {jax.__version__}, {jax.local_device_count()} device(s)",
        "resolution": args.resolution,
        "batch": args.batch,
        "load_s": load_s,
        "first_step_s": times[0],
        "step_times": timed,
        "cpu_step_times": cpu_times[args.warmup:],
        "median_s": statistics.median(timed),
        "startup_to_first_step_s": time.perf_counter() - T_START - sum(timed),
        "rss_after_mb": rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": losses,
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

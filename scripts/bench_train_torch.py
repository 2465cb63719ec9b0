#!/usr/bin/env python3
"""Times diffusers' PyTorch Textual Inversion training step on this machine's CPU, for
scripts/bench_train.sh.

The loop is written here, not run from examples/textual_inversion/textual_inversion.py, but its
step is that script's, statement for statement (diffusers 0.42.1 example, accelerate on one CPU
process and mixed_precision "no" reduce to exactly this): the tokenizer gets the placeholder,
the text encoder's token table is resized and the new row copied from the initializer's; the
VAE, UNet and every text-encoder part except the token embedding are frozen; AdamW runs over the
whole (dense) token-embedding table; then each step does

    VAE encode -> latent_dist.sample() x scaling_factor, noise = randn_like, timesteps =
    randint(0, 1000), noisy = DDPMScheduler.add_noise, text_encoder(input_ids)[0], UNet,
    target (epsilon / v_prediction from the scheduler config), F.mse_loss, backward,
    optimizer.step, lr_scheduler.step, zero_grad, restore every row but the placeholder's.

Left out, as they are not part of the step: the data loader (pixel values are prepared once
from the sample images, bicubic-resized like the example's dataset, flipped per step), logging,
saves. `loss.item()` ends each timed step (CPU torch is synchronous anyway).

    /tmp/fxenv/bin/python scripts/bench_train_torch.py --model /tmp/sd15-random \
        --images tests/fixtures/sample-images --resolution 256 --steps 5 --json out.json
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.optimization import get_scheduler  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_pixels(folder, size):
    """The example dataset's pixels: RGB, bicubic resize to size x size, x/127.5 - 1."""
    out = []
    for name in sorted(os.listdir(folder)):
        try:
            img = Image.open(os.path.join(folder, name)).convert("RGB")
        except Exception:
            continue
        img = img.resize((size, size), resample=Image.Resampling.BICUBIC)
        arr = (np.array(img).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    if not out:
        raise SystemExit(f"no images in {folder}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up step(s)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--placeholder-token", default="<cat-toy>")
    ap.add_argument("--initializer-token", default="toy")
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
                    help="as the example's flag: frozen VAE/UNet in that dtype, the text encoder "
                         "in f32 under autocast (what accelerate does)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    # accelerate.prepare(text_encoder) wraps its forward in autocast when mixed precision is on.
    autocast = (torch.autocast(device_type=device.type, dtype=weight_dtype)
                if args.mixed_precision != "no" else contextlib.nullcontext())

    t0 = time.perf_counter()
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    text_encoder = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")

    placeholder_tokens = [args.placeholder_token]
    assert tokenizer.add_tokens(placeholder_tokens) == 1
    token_ids = tokenizer.encode(args.initializer_token, add_special_tokens=False)
    assert len(token_ids) == 1, token_ids
    initializer_token_id = token_ids[0]
    placeholder_token_ids = tokenizer.convert_tokens_to_ids(placeholder_tokens)
    text_encoder.resize_token_embeddings(len(tokenizer))
    token_embeds = text_encoder.get_input_embeddings().weight.data
    with torch.no_grad():
        for token_id in placeholder_token_ids:
            token_embeds[token_id] = token_embeds[initializer_token_id].clone()

    vae.requires_grad_(False)
    unet.requires_grad_(False)
    # transformers 5's CLIPTextModel has no `text_model` wrapper (4.x does).
    text_model = getattr(text_encoder, "text_model", text_encoder)
    text_model.encoder.requires_grad_(False)
    text_model.final_layer_norm.requires_grad_(False)
    text_model.embeddings.position_embedding.requires_grad_(False)

    text_encoder.to(device)  # before the optimizer, as accelerate.prepare does
    optimizer = torch.optim.AdamW(
        text_encoder.get_input_embeddings().parameters(),
        lr=args.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8,
    )
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0,
                                 num_training_steps=args.warmup + args.steps)
    text_encoder.to(device)
    unet.to(device, dtype=weight_dtype)
    vae.to(device, dtype=weight_dtype)
    orig_embeds_params = text_encoder.get_input_embeddings().weight.data.clone()
    load_s = time.perf_counter() - t0

    pixels = load_pixels(args.images, args.resolution)
    prompt = f"a photo of a {args.placeholder_token}"
    input_ids = tokenizer([prompt] * args.batch, padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="pt").input_ids

    text_encoder.train()
    times, cpu_times, losses = [], [], []
    for i in range(args.warmup + args.steps):
        batch = {
            "pixel_values": torch.stack(
                [pixels[(i * args.batch + j) % len(pixels)].flip(-1) if (i + j) % 2
                 else pixels[(i * args.batch + j) % len(pixels)] for j in range(args.batch)]),
            "input_ids": input_ids,
        }
        batch = {k: v.to(device) for k, v in batch.items()}
        s, c = time.perf_counter(), time.process_time()
        # ---- textual_inversion.py's step ----
        latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample().detach()
        latents = latents * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
        timesteps = timesteps.long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            encoder_hidden_states = text_encoder(batch["input_ids"])[0].to(dtype=weight_dtype)
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
        if noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        elif noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"Unknown prediction type {noise_scheduler.config.prediction_type}")
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
        index_no_updates[min(placeholder_token_ids): max(placeholder_token_ids) + 1] = False
        with torch.no_grad():
            text_encoder.get_input_embeddings().weight[index_no_updates] = orig_embeds_params[index_no_updates]
        losses.append(loss.detach().item())
        # ---- end of the step ----
        times.append(time.perf_counter() - s)
        cpu_times.append(time.process_time() - c)
        print(f"step {i}: {times[-1]:.3f} s  loss {losses[-1]:.4f}", flush=True)

    timed = times[args.warmup:]
    result = {
        "tool": "diffusers PyTorch",
        "versions": f"torch {torch.__version__}, {args.device}, {args.mixed_precision}, "
                    f"{torch.get_num_threads()} threads",
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
    if device.type == "cuda":
        result["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

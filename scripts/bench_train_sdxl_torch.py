#!/usr/bin/env python3
"""Times diffusers' SDXL Textual Inversion training step on this machine's CPU, for
scripts/bench_train.sh (used when the model folder has text_encoder_2/).

The step is examples/textual_inversion/textual_inversion_sdxl.py's (diffusers 0.42.1; accelerate
on one CPU process, mixed_precision "no"), statement for statement: the placeholder is added to
both tokenizers, both token tables are resized and the new rows copied from the initializer's;
everything but the two token embeddings is frozen; AdamW runs over both (dense) tables; each step
does VAE encode -> sample x scaling_factor, noise, timesteps, add_noise, both text encoders with
output_hidden_states (penultimate states concatenated, text_encoder_2's text_embeds), the time
ids from the original size, crop (0, 0) and target size, the UNet with added_cond_kwargs, MSE,
backward, optimizer and scheduler steps, zero_grad, and both tables' other rows restored.
Left out, as in scripts/bench_train_torch.py: the data loader (pixels prepared once), logging,
saves.

    /tmp/fxenv/bin/python scripts/bench_train_sdxl_torch.py --model /tmp/sdxl-random \
        --images tests/fixtures/sample-images --resolution 512 --steps 3 --json out.json
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.optimization import get_scheduler  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_torch import load_pixels, rss_mb  # noqa: E402  (the SD bench's data and memory)


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
    tok1 = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer_2")
    noise_scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    te1 = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder", torch_dtype=torch.float32)
    te2 = CLIPTextModelWithProjection.from_pretrained(args.model, subfolder="text_encoder_2",
                                                      torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float32)

    placeholder_tokens = [args.placeholder_token]
    ids = {}
    for name, tok, te in [("1", tok1, te1), ("2", tok2, te2)]:
        assert tok.add_tokens(placeholder_tokens) == 1
        init = tok.encode(args.initializer_token, add_special_tokens=False)
        assert len(init) == 1, init
        ids[name] = tok.convert_tokens_to_ids(placeholder_tokens)
        te.resize_token_embeddings(len(tok))
        table = te.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in ids[name]:
                table[token_id] = table[init[0]].clone()

    vae.requires_grad_(False)
    unet.requires_grad_(False)
    for te in [te1, te2]:
        text_model = getattr(te, "text_model", te)
        text_model.encoder.requires_grad_(False)
        text_model.final_layer_norm.requires_grad_(False)
        text_model.embeddings.position_embedding.requires_grad_(False)
    te2.text_projection.requires_grad_(False)
    te1.to(device)
    te2.to(device)
    optimizer = torch.optim.AdamW(
        list(te1.get_input_embeddings().parameters()) + list(te2.get_input_embeddings().parameters()),
        lr=args.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8,
    )
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0,
                                 num_training_steps=args.warmup + args.steps)
    unet.to(device, dtype=weight_dtype)
    vae.to(device, dtype=weight_dtype)
    orig1 = te1.get_input_embeddings().weight.data.clone()
    orig2 = te2.get_input_embeddings().weight.data.clone()
    load_s = time.perf_counter() - t0

    pixels = load_pixels(args.images, args.resolution)
    prompt = f"a photo of a {args.placeholder_token}"
    enc = lambda tok: tok([prompt] * args.batch, padding="max_length", truncation=True,  # noqa: E731
                          max_length=tok.model_max_length, return_tensors="pt").input_ids
    input_ids_1, input_ids_2 = enc(tok1), enc(tok2)
    # The sample images' original sizes and crop (0, 0): the SDXL script's dataset resizes first.
    sizes = [(512, 512)] * args.batch

    te1.train()
    te2.train()
    times, cpu_times, losses = [], [], []
    for i in range(args.warmup + args.steps):
        pixel_values = torch.stack(
            [pixels[(i * args.batch + j) % len(pixels)].flip(-1) if (i + j) % 2
             else pixels[(i * args.batch + j) % len(pixels)] for j in range(args.batch)]).to(device)
        s, c = time.perf_counter(), time.process_time()
        # ---- textual_inversion_sdxl.py's step ----
        latents = vae.encode(pixel_values.to(dtype=weight_dtype)).latent_dist.sample().detach()
        latents = latents * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
        timesteps = timesteps.long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            encoder_hidden_states_1 = te1(input_ids_1.to(device), output_hidden_states=True).hidden_states[-2].to(
                dtype=weight_dtype)
            encoder_output_2 = te2(input_ids_2.to(device), output_hidden_states=True)
            encoder_hidden_states_2 = encoder_output_2.hidden_states[-2].to(dtype=weight_dtype)
        target_size = (args.resolution, args.resolution)
        add_time_ids = torch.cat(
            [torch.tensor(sizes[b] + (0, 0) + target_size) for b in range(bsz)]
        ).to(device, dtype=weight_dtype).reshape(bsz, -1)
        added_cond_kwargs = {"text_embeds": encoder_output_2[0], "time_ids": add_time_ids}
        encoder_hidden_states = torch.cat([encoder_hidden_states_1, encoder_hidden_states_2], dim=-1)
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs).sample
        target = noise
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        for tok, te, orig, pids in [(tok1, te1, orig1, ids["1"]), (tok2, te2, orig2, ids["2"])]:
            keep = torch.ones((len(tok),), dtype=torch.bool)
            keep[min(pids): max(pids) + 1] = False
            with torch.no_grad():
                te.get_input_embeddings().weight[keep] = orig[keep]
        losses.append(loss.detach().item())
        # ---- end of the step ----
        times.append(time.perf_counter() - s)
        cpu_times.append(time.process_time() - c)
        print(f"step {i}: {times[-1]:.3f} s  loss {losses[-1]:.4f}", flush=True)

    timed = times[args.warmup:]
    result = {
        "tool": "diffusers PyTorch (SDXL)",
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

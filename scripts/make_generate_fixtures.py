#!/usr/bin/env python3
"""Reference images of diffusers' StableDiffusionPipeline for `ti-xla generate`
(tests/generate_parity.rs): for each tiny fixture model and each sampling scheduler, the
pipeline's float images from fixed starting latents, with and without a learned embedding.

Written to tests/fixtures/<model>/reference/:
- `learned_embeds.safetensors`: a 2-vector embedding `<cat-toy>` [2, D] in diffusers' format
  (loaded with `pipe.load_textual_inversion`, so the prompt's `<cat-toy>` expands to
  `<cat-toy> <cat-toy>_1`);
- (tiny-sd1 only) `learned_embeds.pt`, the same rows as A1111's `.pt` dict, and
  `learned_embeds.bin`, as diffusers' `torch.save({token: tensor})` in float16;
- `generate.safetensors`: `latents` [1, 4, h, w] (standard normals: the pipeline multiplies them
  by init_noise_sigma, as `ti-xla generate --latents` does), `noise` [steps, 1, 4, h, w]
  (Euler ancestral's draws, patched in for `randn_tensor`), and `<case>.<scheduler>.images`
  [1, 3, H, W] float32 in [0, 1] (`output_type="np"`, before quantising); the metadata's
  `cases` is JSON with each case's prompt and negative prompt, and the steps, guidance and size.

Each scheduler is built with `XScheduler.from_config(<the model's scheduler config>)`, as
`ti-xla generate --scheduler` builds it, PNDM with `skip_prk_steps=True` (ti-xla implements
PLMS only and says so when a config would ask for the Runge-Kutta warm-up). The pipeline runs in float32 on the CPU from the
stored float16 weights. Deterministic (torch seed); run from the repository root:
    /tmp/fxenv/bin/python scripts/make_generate_fixtures.py
"""

import json
import os

import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a_module
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
# --scheduler names.
SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpmpp-2m": DPMSolverMultistepScheduler,
}
STEPS = 5
GUIDANCE = 7.5
# Image size: 16x16 is 8x8 latents for tiny-sd1 and 4x4 for tiny-sd2 (smaller than its
# native 32x32, to keep the fixtures small).
SIZE = 16
CASES = {
    "plain": {"prompt": "a photo of a cat toy", "negative_prompt": ""},
    "embed": {"prompt": "a photo of <cat-toy> on a beach", "negative_prompt": "blurry, dark"},
}


def make(model):
    path = os.path.join(ROOT, model)
    out_dir = os.path.join(path, "reference")
    pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(pipe.scheduler.config)
    hidden = pipe.text_encoder.config.hidden_size
    factor = pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(1234)
    shape = (1, pipe.unet.config.in_channels, SIZE // factor, SIZE // factor)
    latents = torch.randn(shape, generator=gen)
    noise = torch.randn((STEPS, *shape), generator=gen)
    # The token table's scale (the fixtures draw embeddings as 0.5 N(0, 1)).
    rows = 0.5 * torch.randn((2, hidden), generator=gen)
    embeds_path = os.path.join(out_dir, "learned_embeds.safetensors")
    save_file({"<cat-toy>": rows.contiguous()}, embeds_path, metadata={"format": "pt"})
    if model == "tiny-sd1":
        # The same rows as PyTorch files: A1111's dict (as its textual_inversion.py saves it,
        # the rows a Parameter) and diffusers' `.bin`.
        a1111 = {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.nn.Parameter(rows.clone())},
            "name": "<cat-toy>",
            "step": 100,
            "sd_checkpoint": "0123abcd",
            "sd_checkpoint_name": "tiny-sd1",
        }
        torch.save(a1111, os.path.join(out_dir, "learned_embeds.pt"))
        torch.save({"<cat-toy>": rows.half()}, os.path.join(out_dir, "learned_embeds.bin"))

    tensors = {"latents": latents, "noise": noise}
    for case, prompts in CASES.items():
        if case == "embed":
            pipe.load_textual_inversion(embeds_path)
        for name, cls in SCHEDULERS.items():
            # ti-xla's PNDM is PLMS only: where the config leaves skip_prk_steps to PNDM's
            # default (tiny-sd2's DDIM config), it warns and skips the Runge-Kutta warm-up.
            extra = {"skip_prk_steps": True} if cls is PNDMScheduler else {}
            pipe.scheduler = cls.from_config(base_config, **extra)
            draws = iter(noise)
            euler_a_module.randn_tensor = lambda *a, **k: next(draws).clone()
            result = pipe(
                prompts["prompt"],
                negative_prompt=prompts["negative_prompt"] or None,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                latents=latents.clone(),
                height=SIZE,
                width=SIZE,
                output_type="np",
            )
            images = torch.from_numpy(result.images).permute(0, 3, 1, 2).contiguous()
            tensors[f"{case}.{name}.images"] = images.float()
            print(f"{model} {case} {name}: images {tuple(images.shape)} "
                  f"mean {images.mean():.4f} min {images.min():.3f} max {images.max():.3f}")
    meta = {"cases": CASES, "steps": STEPS, "guidance_scale": GUIDANCE, "size": SIZE}
    save_file(tensors, os.path.join(out_dir, "generate.safetensors"),
              metadata={"cases": json.dumps(meta)})


def main():
    torch.manual_seed(0)
    for model in ["tiny-sd1", "tiny-sd2"]:
        make(model)


if __name__ == "__main__":
    main()

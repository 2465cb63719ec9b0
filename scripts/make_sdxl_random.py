#!/usr/bin/env python3
"""Writes an SDXL-base-shaped model in diffusers layout with random weights, for benchmarks (no
download): the configs of stabilityai/stable-diffusion-xl-base-1.0 (text_encoder CLIP ViT-L,
text_encoder_2 OpenCLIP ViT-bigG with its projection, the text-time UNet, the VAE, the Euler
scheduler) and the real CLIP BPE tokenizer of tests/fixtures/tiny-sd1 for both tokenizers
(tokenizer_2 padding with "!", as SDXL's).

    /tmp/fxenv/bin/python scripts/make_sdxl_random.py OUT_DIR [--dtype float16|float32]

About 7 GB in float16 (the default; ti-xla and diffusers both compute in float32 from it):
write OUT_DIR outside the repository. Weights come from the libraries' own initialisers.
"""

import argparse
import json
import os
import shutil
import time

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl", "tokenizer")
TOKENIZER_2 = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl", "tokenizer_2")

COMMON = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0,
              eos_token_id=2, pad_token_id=1, attention_dropout=0.0, dropout=0.0)
# stabilityai/stable-diffusion-xl-base-1.0/text_encoder/config.json
TEXT_ENCODER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768, **COMMON)
# .../text_encoder_2/config.json
TEXT_ENCODER_2 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                      num_attention_heads=20, hidden_act="gelu", projection_dim=1280, **COMMON)
# .../unet/config.json
UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64,
    addition_time_embed_dim=256, attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
    center_input_sample=False, cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)
# .../vae/config.json
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3, latent_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=1024,
    scaling_factor=0.13025, force_upcast=True, up_block_types=["UpDecoderBlock2D"] * 4,
)
# .../scheduler/scheduler_config.json, every value (Euler keeps the keys it does not take, such as
# clip_sample, for DDIM/PNDM built from it)
SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
    interpolation_type="linear", num_train_timesteps=1000, prediction_type="epsilon",
    sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False,
)
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def count(model):
    return sum(p.numel() for p in model.parameters())


def save_text_encoder(model, path, arch, dtype):
    model.to(dtype).save_pretrained(path, safe_serialization=True)
    file = os.path.join(path, "model.safetensors")
    weights = {k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k: v.contiguous()
               for k, v in load_file(file).items()}
    save_file(weights, file, metadata={"format": "pt"})
    cfg_path = os.path.join(path, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["architectures"] = [arch]
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    if out == ROOT or out.startswith(ROOT + os.sep):
        raise SystemExit(f"error: {out} is inside the repository; write the model elsewhere")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.perf_counter()
    # One model at a time, to keep the peak memory at the UNet's.
    te = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval()
    print(f"text_encoder {count(te) / 1e6:.0f}M")
    save_text_encoder(te, os.path.join(tmp, "text_encoder"), "CLIPTextModel", dtype)
    del te
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2)).eval()
    print(f"text_encoder_2 {count(te2) / 1e6:.0f}M")
    save_text_encoder(te2, os.path.join(tmp, "text_encoder_2"), "CLIPTextModelWithProjection", dtype)
    del te2
    unet = UNet2DConditionModel(**UNET).eval()
    print(f"unet {count(unet) / 1e6:.0f}M")
    unet.to(dtype).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    del unet
    vae = AutoencoderKL(**VAE).eval()
    vae.to(dtype).save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
    EulerDiscreteScheduler.from_config(SCHEDULER).save_pretrained(os.path.join(tmp, "scheduler"))
    shutil.copytree(TOKENIZER, os.path.join(tmp, "tokenizer"))
    shutil.copytree(TOKENIZER_2, os.path.join(tmp, "tokenizer_2"))
    import diffusers
    json.dump({"_diffusers_version": diffusers.__version__, **MODEL_INDEX},
              open(os.path.join(tmp, "model_index.json"), "w"), indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({size / 1e9:.2f} GB, {args.dtype}) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a Stable Diffusion 1.5-shaped model in diffusers layout with random weights, for
benchmarks (no download): the real SD 1.5 configs (runwayml/stable-diffusion-v1-5) for the text
encoder (CLIP ViT-L/14 text tower), UNet2DConditionModel, AutoencoderKL and the PNDM scheduler,
and the real CLIP BPE tokenizer copied from tests/fixtures/tiny-sd1/tokenizer/.

    /tmp/fxenv/bin/python scripts/make_sd15_random.py OUT_DIR [--dtype float32|float16] [--seed 0]
    python3 scripts/make_sd15_random.py OUT_DIR --configs-only   # no weights, no torch needed

`--configs-only` writes the same folder without weight files (a few KB): enough for
`ti-xla train --compile-only` and scripts/tpu_compile_side_by_side.py, which need shapes only.

Weights come from the libraries' own initialisers (seeded), so activations keep realistic
scales; they mean nothing. About 4.3 GB in float32 (2.1 GB in float16): write OUT_DIR outside
the repository. The text encoder's keys carry the `text_model.` prefix (and the old
`position_ids` buffer) as the SD 1.5 file does; transformers 5 would drop the prefix.
"""

import argparse
import json
import os
import shutil
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tiny-sd1", "tokenizer")

# runwayml/stable-diffusion-v1-5/text_encoder/config.json
TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0, initializer_range=0.02,
    initializer_factor=1.0, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
# runwayml/stable-diffusion-v1-5/unet/config.json
UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
# runwayml/stable-diffusion-v1-5/vae/config.json
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3, latent_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
# runwayml/stable-diffusion-v1-5/scheduler/scheduler_config.json
SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None,
)
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_configs_only(tmp):
    """The folder's configs and tokenizer as diffusers/transformers write them, no weights."""

    def dump(obj, *path):
        os.makedirs(os.path.join(tmp, *path[:-1]), exist_ok=True)
        with open(os.path.join(tmp, *path), "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

    dump({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
          "torch_dtype": "float32", **TEXT_ENCODER}, "text_encoder", "config.json")
    dump({"_class_name": "UNet2DConditionModel", **UNET}, "unet", "config.json")
    dump({"_class_name": "AutoencoderKL", "scaling_factor": 0.18215, **VAE}, "vae", "config.json")
    dump({"_class_name": "PNDMScheduler", "prediction_type": "epsilon", **SCHEDULER},
         "scheduler", "scheduler_config.json")
    shutil.copytree(TOKENIZER, os.path.join(tmp, "tokenizer"))
    dump(MODEL_INDEX, "model_index.json")


def count(model):
    return sum(p.numel() for p in model.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs-only", action="store_true", help="configs and tokenizer, no weights")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    if out == ROOT or out.startswith(ROOT + os.sep):
        raise SystemExit(f"error: {out} is inside the repository; write the model elsewhere")
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.perf_counter()
    if args.configs_only:
        write_configs_only(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp, out)
        print(f"wrote {out} (configs only)")
        return

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)

    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    print(f"text_encoder {count(text_encoder) / 1e6:.1f}M, unet {count(unet) / 1e6:.1f}M, "
          f"vae {count(vae) / 1e6:.1f}M parameters ({time.perf_counter() - t0:.1f} s)")

    text_encoder.to(dtype).save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
    unet.to(dtype).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    vae.to(dtype).save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
    PNDMScheduler(**SCHEDULER).save_pretrained(os.path.join(tmp, "scheduler"))
    shutil.copytree(TOKENIZER, os.path.join(tmp, "tokenizer"))

    # SD 1.5's text encoder file: `text_model.`-prefixed keys and the position_ids buffer.
    te = os.path.join(tmp, "text_encoder")
    weights = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
               for k, v in load_file(os.path.join(te, "model.safetensors")).items()}
    weights["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    save_file(weights, os.path.join(te, "model.safetensors"), metadata={"format": "pt"})
    cfg_path = os.path.join(te, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["architectures"] = ["CLIPTextModel"]
    cfg["torch_dtype"] = args.dtype
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)

    import diffusers
    index = {"_diffusers_version": diffusers.__version__, **MODEL_INDEX}
    json.dump(index, open(os.path.join(tmp, "model_index.json"), "w"), indent=2)

    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({size / 1e9:.2f} GB, {args.dtype}) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

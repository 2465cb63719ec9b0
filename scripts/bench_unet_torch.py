#!/usr/bin/env python3
"""Times diffusers' UNet2DConditionModel forward with the SD 1.5 config and random weights
(no download) on this machine's CPU: batch 1, f32, torch.no_grad, 32x32 and 64x64 latents,
the shapes `cargo run --example bench_unet` times for ti-xla.

    /tmp/fxenv/bin/python scripts/bench_unet_torch.py [--runs 5] [--sizes 32,64]
"""

import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

# runwayml/stable-diffusion-v1-5/unet/config.json, as UNet2DConditionConfig::v1_5() copies it.
SD15 = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="32,64")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD15).eval()
    built = time.perf_counter() - t0
    print(
        f"diffusers UNet2DConditionModel (SD 1.5 config), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, f32, batch 1, {args.runs} runs per size; "
        f"built in {built:.1f} s"
    )
    print("| latents | forward (median) | forward (min) | CPU time per forward |")
    print("|---|---|---|---|")
    ctx = torch.randn(1, 77, 768)
    t = torch.tensor([500.0])
    with torch.no_grad():
        for hw in map(int, args.sizes.split(",")):
            x = torch.randn(1, 4, hw, hw)
            times, cpu = [], 0.0
            for run in range(args.runs + 1):
                c = time.process_time()  # all threads: steadier than wall time on a busy machine
                s = time.perf_counter()
                y = unet(x, t, encoder_hidden_states=ctx).sample
                took = time.perf_counter() - s
                if run > 0:  # the first run pays for one-time allocations
                    times.append(took)
                    cpu += time.process_time() - c
            assert torch.isfinite(y).all()
            print(
                f"| {hw}x{hw} | {statistics.median(times):.3f} s | {min(times):.3f} s "
                f"| {cpu / args.runs:.2f} s |"
            )


if __name__ == "__main__":
    main()

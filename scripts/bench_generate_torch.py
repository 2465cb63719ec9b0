#!/usr/bin/env python3
"""Times diffusers' StableDiffusionPipeline making images, for scripts/bench_generate.sh: the
same work as `ti-xla generate` with the same flags (prompt, empty negative prompt,
classifier-free guidance, the scheduler built `from_config(pipe.scheduler.config)`, height and
width), on this machine's CPU or a CUDA GPU.

The pipeline is loaded from a local diffusers folder (random weights are fine: the work does not
depend on them) with safety_checker=None. One warm-up call (1 step, a full batch) is left out
of the timing; then the K samples are made in calls of --batch images (default: all K in one
call, as ti-xla does on one device), each with output_type="np" (no PIL conversion or saving:
ti-xla's sampling time ends when the float images are on the host too). Reported: load time,
warm-up, wall and CPU seconds (time.process_time, all threads) of the timed calls, seconds per
image, images/s, CPU seconds per UNet step (after the first tenth of the steps), and the split of each call into denoising (from the call's start to the last
step's callback: the text encoder and the steps) and decoding (the VAE decoder, to the host).
The last line of stdout is one JSON object with these numbers (also written to --json).

    /tmp/fxenv/bin/python scripts/bench_generate_torch.py --model tests/fixtures/tiny-sd1 \
        --num-samples 4 --num-inference-steps 50 [--scheduler dpmpp-2m] [--height 256]
    python scripts/bench_generate_torch.py --model /tmp/sd15-random --device cuda --dtype bf16 \
        --num-samples 8
"""

import argparse
import json
import os
import resource
import time

T_START = time.perf_counter()

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)

# ti-xla's --scheduler names.
SCHEDULERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp-2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local diffusers folder")
    ap.add_argument("--prompt", default="a photo of a cat")
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--num-inference-steps", type=int, default=50)
    ap.add_argument("--guidance-scale", type=float, default=7.5)
    ap.add_argument("--height", type=int, help="default: the model's (the UNet's sample_size x 8)")
    ap.add_argument("--width", type=int, help="default: as the height")
    ap.add_argument("--scheduler", choices=sorted(SCHEDULERS),
                    help="default: the model's scheduler_config.json")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--batch", type=int, help="images per pipeline call (default: all samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=cpu_count(),
                    help="torch intra-op threads (default: the CPUs this process may use)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    if args.num_samples < 1 or args.num_inference_steps < 1:
        ap.error("--num-samples and --num-inference-steps must be at least 1")
    batch = min(args.batch or args.num_samples, args.num_samples)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(
        args.model, torch_dtype=dtype, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    if args.scheduler:
        cls, extra = SCHEDULERS[args.scheduler]
    else:
        cls, extra = type(pipe.scheduler), {}
    if cls is PNDMScheduler:
        extra = {**extra, "skip_prk_steps": True}  # ti-xla's PNDM is PLMS only
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    sync()
    load_s = time.perf_counter() - t0
    startup_s = time.perf_counter() - T_START
    height = args.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = args.width or args.height or height

    def call(n, steps, generator, marks):
        def on_step(_pipe, i, _t, kwargs):
            sync()
            marks.append((time.perf_counter(), time.process_time()))
            return kwargs

        return pipe(
            [args.prompt] * n, num_inference_steps=steps, guidance_scale=args.guidance_scale,
            height=height, width=width, generator=generator, output_type="np",
            callback_on_step_end=on_step,
        ).images

    with torch.inference_mode():
        s = time.perf_counter()
        call(batch, 1, torch.Generator(device).manual_seed(args.seed), [])
        sync()
        warmup_s = time.perf_counter() - s

        generator = torch.Generator(device).manual_seed(args.seed)
        denoise_s = decode_s = 0.0
        steps_run = 0
        window_cpu, window_steps = 0.0, 0
        made = 0
        s, c = time.perf_counter(), time.process_time()
        while made < args.num_samples:
            n = min(batch, args.num_samples - made)
            marks = []
            start = time.perf_counter()
            images = call(n, args.num_inference_steps, generator, marks)
            sync()
            end = time.perf_counter()
            assert images.shape == (n, height, width, 3), images.shape
            denoise_s += marks[-1][0] - start
            decode_s += end - marks[-1][0]
            steps_run = len(marks)
            # CPU seconds per UNet step over the steps after ti-xla's first progress line (it
            # prints one every tenth of the run), so that the bench compares the same window.
            first = max(steps_run // 10, 1)
            if steps_run > first:
                window_cpu += marks[-1][1] - marks[first - 1][1]
                window_steps += steps_run - first
            made += n
        sampling_s = time.perf_counter() - s
        cpu_s = time.process_time() - c

    result = {
        "tool": "diffusers PyTorch",
        "versions": f"torch {torch.__version__}, diffusers {__import__('diffusers').__version__}, "
                    f"{args.device}, {torch.get_num_threads()} threads",
        "model": args.model,
        "height": height,
        "width": width,
        "steps": args.num_inference_steps,
        "unet_steps_per_call": steps_run,
        "samples": args.num_samples,
        "batch": batch,
        "scheduler": type(pipe.scheduler).__name__,
        "dtype": args.dtype,
        "device": args.device,
        "load_s": load_s,
        "startup_s": startup_s,  # imports + load
        "warmup_s": warmup_s,
        "sampling_s": sampling_s,
        "s_per_image": sampling_s / args.num_samples,
        "images_per_s": args.num_samples / sampling_s,
        "cpu_s": cpu_s,
        "cpu_s_per_image": cpu_s / args.num_samples,
        "cpu_step_s": window_cpu / window_steps if window_steps else None,
        "denoise_s": denoise_s,
        "decode_s": decode_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"load {load_s:.1f} s, warm-up {warmup_s:.1f} s; {args.num_samples} image(s) of "
          f"{width}x{height} x {args.num_inference_steps} steps in {sampling_s:.2f} s "
          f"({result['s_per_image']:.3f} s/image, {result['images_per_s']:.3f} images/s, "
          f"CPU {cpu_s:.1f} s; denoise {denoise_s:.2f} s, decode {decode_s:.2f} s)", flush=True)
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

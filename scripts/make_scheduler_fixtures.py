#!/usr/bin/env python3
"""Reference tables and update steps of diffusers' sampling schedulers, for
tests/fixtures/schedules/sampling.json (read by tests/schedulers.rs).

Configs are the hub's `scheduler_config.json` files as they are (SD 1.5: PNDMScheduler; SD 2.1:
DDIMScheduler, v_prediction), given to each class with `from_config`, so a field the file lacks
takes the *target* class's default, as `XScheduler.from_config(pipe.scheduler.config)` does.

- tables: (rows 0-3, every fifth and the last three of) timesteps, sigmas (Euler, Euler ancestral, DPM-Solver++), init_noise_sigma, and for
  PNDM and DDIM the (alpha_prod_t, alpha_prod_t_prev) pair each step uses, read from inside
  diffusers' step (PNDM's repeated timestep and `set_alpha_to_one` show up there).
- steps: a whole 5-step run from a fixed float32 sample with fixed float32 model outputs (and, for
  Euler ancestral, fixed noise patched in for `randn_tensor`), every step's output kept. Euler,
  Euler ancestral and DPM-Solver++ run in float32 as the pipeline calls them (their `step` casts
  to float32); PNDM and DDIM run their own step code in float64 with float64 tables (see
  `use_float64_tables`).

Deterministic (numpy seed); run from the repository root with the reference venv:
    /tmp/fxenv/bin/python scripts/make_scheduler_fixtures.py
"""

import json
import os

import diffusers
import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a_module

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "schedules", "sampling.json")

# runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1, scheduler/scheduler_config.json.
CONFIGS = {
    "sd15": {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False,
    },
    "sd21": {
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    },
}
CLASSES = {
    c.__name__: c
    for c in [PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler,
              EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler]
}
DIMS = [2, 2, 2, 3]
STEPS = 5


def f32(x):
    """A float32 value as the shortest decimal that reads back to it."""
    return float(f"{float(np.float32(x)):.9g}")


def make(cls_name, config, overrides):
    cfg = dict(CONFIGS[config])
    cfg.update(overrides)
    return CLASSES[cls_name].from_config(cfg)


def record_alphas(s):
    """Wraps the method each PNDM/DDIM step calls with its (timestep, prev_timestep)."""
    seen = []

    def alphas(t, prev):
        a = s.alphas_cumprod[t]
        b = s.alphas_cumprod[prev] if prev >= 0 else s.final_alpha_cumprod
        seen.append([f32(a), f32(b)])

    if isinstance(s, PNDMScheduler):
        inner = s._get_prev_sample

        def wrapped(sample, t, prev, mo):
            alphas(t, prev)
            return inner(sample, t, prev, mo)

        s._get_prev_sample = wrapped
    else:
        inner = s._get_variance

        def wrapped(t, prev):
            alphas(t, prev)
            return inner(t, prev)

        s._get_variance = wrapped
    return seen


def kept(length):
    """Rows kept of a long table: the first four, every fifth, the last three."""
    return [i for i in range(length) if i < 4 or i % 5 == 0 or i >= length - 3]


def table(cls_name, config, overrides, n):
    s = make(cls_name, config, overrides)
    s.set_timesteps(n)
    ts = s.timesteps.tolist()
    rows = kept(len(ts))
    entry = {"scheduler": cls_name, "config": config, "overrides": overrides, "steps": n,
             "num_timesteps": len(ts),
             "timesteps": [f32(ts[i]) for i in rows],
             "init_noise_sigma": f32(s.init_noise_sigma)}
    if cls_name in ("PNDMScheduler", "DDIMScheduler"):
        seen = record_alphas(s)
        x = torch.zeros([1])
        for t in s.timesteps:
            s.step(x, t, x)
        entry["alphas"] = [seen[i] for i in rows]
    else:
        # One sigma per timestep plus the final one, which is always kept.
        sigmas = s.sigmas.tolist()
        assert len(sigmas) == len(ts) + 1
        entry["sigmas"] = [f32(sigmas[i]) for i in rows] + [f32(sigmas[-1])]
    return entry


def use_float64_tables(s):
    """PNDM and DDIM index `alphas_cumprod` and do their scalar arithmetic in the table's dtype:
    in float32, `1 - alpha_prod_t` near t = 0 loses 1e-5 of itself, which the sample-prediction
    DDIM step amplifies to 1.5e-5 of its output. With float64 tables (and inputs) diffusers' own
    step code gives the exact update."""
    cfg = s.config
    assert cfg.trained_betas is None and not getattr(cfg, "rescale_betas_zero_snr", False)
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "scaled_linear":
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float64) ** 2
    else:
        assert cfg.beta_schedule == "linear"
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
    s.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    s.final_alpha_cumprod = (torch.tensor(1.0, dtype=torch.float64) if cfg.set_alpha_to_one
                             else s.alphas_cumprod[0])


def run_steps(cls_name, config, overrides, sample, outputs, noise):
    s = make(cls_name, config, overrides)
    s.set_timesteps(STEPS)
    # Euler, Euler ancestral and DPM-Solver++ cast the sample to float32 inside `step`.
    dtype = torch.float64 if cls_name in ("PNDMScheduler", "DDIMScheduler") else torch.float32
    if dtype == torch.float64:
        use_float64_tables(s)
    x = torch.from_numpy(sample * np.float32(s.init_noise_sigma)).to(dtype)
    draws = iter(noise)
    euler_a_module.randn_tensor = lambda *a, **k: torch.from_numpy(next(draws))
    got = []
    for i, t in enumerate(s.timesteps):
        mo = torch.from_numpy(outputs[i]).to(dtype)
        scaled = s.scale_model_input(x, t)
        assert scaled.dtype == dtype
        x = s.step(mo, t, x).prev_sample
        assert x.dtype == dtype
        got.append([float(f"{v:.9g}") for v in x.flatten().tolist()])
    return {"scheduler": cls_name, "config": config, "overrides": overrides,
            "num_inference_steps": STEPS, "dtype": str(dtype).removeprefix("torch."),
            "outputs": got}


def main():
    out = {"diffusers_version": diffusers.__version__, "torch_version": torch.__version__,
           "configs": CONFIGS, "tables": [], "steps": []}
    for config in CONFIGS:
        for cls_name in CLASSES:
            for n in (50, 20, 7):
                out["tables"].append(table(cls_name, config, {}, n))
    variants = [{"timestep_spacing": "trailing"}, {"timestep_spacing": "linspace"},
                {"timestep_spacing": "leading"}, {"set_alpha_to_one": True},
                {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}]
    for overrides in variants:
        for cls_name in CLASSES:
            for n in (20, 7) if overrides == variants[0] else (7,):
                out["tables"].append(table(cls_name, "sd15", overrides, n))

    # DPM-Solver++ and Euler options that change the tables.
    for cls_name, overrides in [
        ("DPMSolverMultistepScheduler", {"lambda_min_clipped": -2.5}),
        ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}),
        ("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}),
    ]:
        for n in (20, 7):
            out["tables"].append(table(cls_name, "sd15", overrides, n))

    # Karras sigmas ("DPM++ 2M Karras", "Euler Karras"), including Euler's own bounds.
    for config in CONFIGS:
        for cls_name, overrides, steps in [
            ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, (50, 20, 7)),
            ("DPMSolverMultistepScheduler",
             {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, (7,)),
            ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, (50, 20, 7)),
            ("EulerDiscreteScheduler",
             {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 10.0}, (7,)),
        ]:
            for n in steps:
                out["tables"].append(table(cls_name, config, overrides, n))

    rng = np.random.RandomState(0)
    n = int(np.prod(DIMS))
    sample = rng.standard_normal(DIMS).astype(np.float32)
    # PNDM takes one more model output than it has inference steps.
    outputs = rng.standard_normal([STEPS + 1] + DIMS).astype(np.float32)
    noise = rng.standard_normal([STEPS] + DIMS).astype(np.float32)
    out["inputs"] = {"dims": DIMS, "sample": [f32(v) for v in sample.flatten()],
                     "model_outputs": [[f32(v) for v in o.flatten()] for o in outputs],
                     "noise": [[f32(v) for v in z.flatten()] for z in noise]}
    assert len(out["inputs"]["sample"]) == n
    cases = [
        ("PNDMScheduler", "sd15", {}),
        ("PNDMScheduler", "sd21", {}),
        ("DDIMScheduler", "sd15", {}),
        ("DDIMScheduler", "sd21", {}),
        ("DDIMScheduler", "sd15", {"prediction_type": "sample"}),
        ("DDIMScheduler", "sd15", {"clip_sample": True, "set_alpha_to_one": True,
                                   "timestep_spacing": "trailing"}),
        ("EulerDiscreteScheduler", "sd15", {}),
        ("EulerDiscreteScheduler", "sd21", {}),
        ("EulerDiscreteScheduler", "sd15", {"prediction_type": "sample",
                                            "timestep_spacing": "leading"}),
        ("EulerAncestralDiscreteScheduler", "sd15", {}),
        ("EulerAncestralDiscreteScheduler", "sd21", {}),
        ("DPMSolverMultistepScheduler", "sd15", {}),
        ("DPMSolverMultistepScheduler", "sd21", {}),
        ("DPMSolverMultistepScheduler", "sd15", {"prediction_type": "sample"}),
        ("DPMSolverMultistepScheduler", "sd15", {"solver_type": "heun",
                                                 "final_sigmas_type": "sigma_min"}),
        ("DPMSolverMultistepScheduler", "sd15", {"use_karras_sigmas": True}),
        ("DPMSolverMultistepScheduler", "sd21", {"use_karras_sigmas": True}),
        ("EulerDiscreteScheduler", "sd15", {"use_karras_sigmas": True}),
    ]
    for cls_name, config, overrides in cases:
        out["steps"].append(run_steps(cls_name, config, overrides, sample, outputs, noise))

    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", OUT, os.path.getsize(OUT), "bytes; diffusers", diffusers.__version__)


if __name__ == "__main__":
    main()

"""Reference noise-schedule tables from diffusers' DDPMScheduler (the trainers' noise
scheduler), for tests/fixtures/schedules/ddpm_tables.json. Needs torch + diffusers:
    python3 scripts/make_schedule_fixtures.py
"""
import json

import diffusers
import torch
from diffusers import DDPMScheduler

cases = {
    "sd_scaled_linear": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    "linear_default": dict(),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "sd_zero_snr": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        rescale_betas_zero_snr=True),
}
out = {"diffusers_version": diffusers.__version__, "torch_version": torch.__version__, "cases": {}}
for name, cfg in cases.items():
    s = DDPMScheduler(**cfg)
    # Every 37th step and the last keep the file small and still cover the whole range.
    idx = list(range(0, 1000, 37)) + [999]
    out["cases"][name] = {
        "config": cfg,
        "indices": idx,
        "betas": [s.betas.double()[i].item() for i in idx],
        "alphas_cumprod": [s.alphas_cumprod.double()[i].item() for i in idx],
    }
with open("tests/fixtures/schedules/ddpm_tables.json", "w") as f:
    json.dump(out, f)
print("ok", diffusers.__version__)

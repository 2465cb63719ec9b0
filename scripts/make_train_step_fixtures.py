#!/usr/bin/env python3
"""Reference Textual Inversion steps for the tiny fixtures, as diffusers' PyTorch trainer
(examples/textual_inversion/textual_inversion.py) computes one step, with its random draws
given explicitly: the VAE sampling noise, the diffusion noise and the timesteps.

For each fixture writes <model>/reference/train_step.safetensors with
  inputs:  pixel_values [B,3,H,W], input_ids [B,77] (holding the placeholder ids), latent_eps,
           noise [B,4,h,w], timesteps [B] (int64), rows [n,D] (the trainable rows; n=2 here,
           the placeholder tokens P and P_1 appended after the vocabulary)
  outputs: loss [], grad_rows [n,D], rows_after [n,D] (one torch.optim.AdamW step from zero
           moments with lr 1e-2, betas (0.9, 0.999), weight_decay 1e-2, eps 1e-8)
computed in float64 from the stored f16 weights. Run from the repository root with the fixture
venv (tests/fixtures/README.md):
    /tmp/fxenv/bin/python scripts/make_train_step_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
LR, BETAS, WD, EPS = 1e-2, (0.9, 0.999), 1e-2, 1e-8
NUM_VECTORS = 2


def step(name, seed, batch, initializer):
    torch.manual_seed(seed)
    d = os.path.join(ROOT, name)
    dt = torch.float64
    tok = CLIPTokenizer.from_pretrained(d, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(d, subfolder="text_encoder").to(dt)
    vae = AutoencoderKL.from_pretrained(d, subfolder="vae").to(dt)
    unet = UNet2DConditionModel.from_pretrained(d, subfolder="unet").to(dt)
    sched = DDPMScheduler.from_pretrained(d, subfolder="scheduler")

    placeholders = ["<cat-toy>"] + [f"<cat-toy>_{i}" for i in range(1, NUM_VECTORS)]
    vocab = text.config.vocab_size
    assert tok.add_tokens(placeholders) == NUM_VECTORS
    ids_new = tok.convert_tokens_to_ids(placeholders)
    assert ids_new == list(range(vocab, vocab + NUM_VECTORS)), ids_new
    init_id = tok.encode(initializer, add_special_tokens=False)
    assert len(init_id) == 1, init_id
    table = text.get_input_embeddings().weight.detach()
    # Start away from the initializer's row so the gradient is not special.
    rows0 = table[init_id[0]].repeat(NUM_VECTORS, 1) + 0.05 * torch.randn(NUM_VECTORS, table.shape[1], dtype=dt)

    prompts = ["a photo of a <cat-toy> <cat-toy>_1", "a rendering of a <cat-toy> <cat-toy>_1 toy",
               "the <cat-toy> <cat-toy>_1 on a table"][:batch]
    input_ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    res = vae.config.sample_size
    pixel_values = torch.rand(batch, 3, res, res, dtype=dt) * 2 - 1
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (batch, vae.config.latent_channels, res // f, res // f)
    latent_eps = torch.randn(latent_shape, dtype=dt)
    noise = torch.randn(latent_shape, dtype=dt)
    timesteps = torch.tensor([7, 912, 431][:batch], dtype=torch.int64)

    rows = torch.nn.Parameter(rows0.clone())
    with torch.no_grad():
        dist = vae.encode(pixel_values).latent_dist
    latents = (dist.mean + dist.std * latent_eps) * vae.config.scaling_factor
    noisy = sched.add_noise(latents, noise, timesteps)
    full = torch.cat([table, rows], 0)
    # The stock text model with the extended table swapped in; gradients reach `rows`.
    key = [k for k, _ in text.named_parameters() if k.endswith("token_embedding.weight")][0]
    ehs = torch.func.functional_call(text, {key: full}, (input_ids,)).last_hidden_state
    # Check against the stock forward for the placeholder-free case of the same ids.
    pred = unet(noisy, timesteps, ehs).sample
    pt = sched.config.prediction_type
    target = noise if pt == "epsilon" else sched.get_velocity(latents, noise, timesteps)
    loss = F.mse_loss(pred.double(), target.double(), reduction="mean")
    loss.backward()
    grad = rows.grad.detach().clone()
    opt = torch.optim.AdamW([rows], lr=LR, betas=BETAS, weight_decay=WD, eps=EPS)
    opt.step()

    out = {
        "pixel_values": pixel_values.float(), "input_ids": input_ids, "latent_eps": latent_eps.float(),
        "noise": noise.float(), "timesteps": timesteps, "rows": rows0.float(),
        "loss": loss.detach().float().reshape(()), "grad_rows": grad.float(), "rows_after": rows.detach().float(),
    }
    path = os.path.join(d, "reference", "train_step.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()},
              path, metadata={"learning_rate": str(LR), "adam_beta1": str(BETAS[0]), "adam_beta2": str(BETAS[1]),
                              "adam_weight_decay": str(WD), "adam_epsilon": str(EPS),
                              "placeholder_token": "<cat-toy>", "num_vectors": str(NUM_VECTORS),
                              "prediction_type": pt})
    print(name, pt, "loss", loss.item(), "grad max", grad.abs().max().item())


step("tiny-sd1", 11, 2, "toy")
step("tiny-sd2", 12, 3, "a")

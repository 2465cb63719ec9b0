#!/usr/bin/env python3
"""Builds the tiny random SDXL-style fixture tests/fixtures/tiny-sdxl/ and its references.

A diffusers `StableDiffusionXLPipeline` folder (loadable with `from_pretrained`): `tokenizer/`
and `tokenizer_2/` (the real 49,408-entry CLIP BPE of tiny-sd1; `tokenizer_2` pads with "!" as
SDXL's does), `text_encoder/` (CLIPTextModel) and `text_encoder_2/` (CLIPTextModelWithProjection),
both with the legacy `eos_token_id` 2 of the real SDXL configs, an SDXL-style UNet (text-time
conditioning, per-block transformer depths, heads per block), an SDXL-style VAE (scaling 0.13025,
force_upcast) and SDXL base's EulerDiscreteScheduler config. Sizes differ from each other and
from SDXL base's one-value-everywhere on purpose (see tests/fixtures/README.md).

References in tiny-sdxl/reference/, computed in float64 from the stored float16 weights and
saved as float32 (the f32-vs-f64 error of each is printed):
  text_encoder.safetensors    input_ids, last_hidden_state, penultimate_hidden_state, debug.*
  text_encoder_2.safetensors  the same, text_embeds (legacy argmax pooling + text_projection),
                              and input_ids_eos / text_embeds_eos: the same weights with
                              config.eos_token_id = metadata eos_token_id (first-eos pooling)
  unet.safetensors            sample, timestep, encoder_hidden_states, text_embeds, time_ids,
                              out_sample, debug.* (time_proj ... up_blocks.2, add_embedding)
  vae_encoder / vae_decoder   as for the SD fixtures
  train_step.safetensors      one SDXL Textual Inversion step as diffusers'
                              examples/textual_inversion/textual_inversion_sdxl.py computes it,
                              random draws given (see step())
  learned_embeds.safetensors  a 2-vector {"clip_l": [2, 12], "clip_g": [2, 20]} embedding
  generate.safetensors        StableDiffusionXLPipeline images from given latents, per case and
                              scheduler (see make_generate())

Run from the repository root with the fixture venv (tests/fixtures/README.md):
    /tmp/fxenv/bin/python scripts/make_sdxl_fixtures.py
"""

import json
import os
import shutil
import struct
import sys

import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a_module
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (randomize_, write_reference: the SD fixtures' rules)

ROOT = mf.ROOT
NAME = "tiny-sdxl"
OUT = os.path.join(ROOT, NAME)
MAX_LENGTH = 77
SEED = 3

TEXT_1 = dict(hidden_size=12, intermediate_size=28, num_hidden_layers=2, num_attention_heads=3,
              hidden_act="quick_gelu", projection_dim=12)
TEXT_2 = dict(hidden_size=20, intermediate_size=44, num_hidden_layers=3, num_attention_heads=4,
              hidden_act="gelu", projection_dim=14)
TIME_EMBED_DIM = 8
UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(8, 16, 24),
    layers_per_block=2,
    norm_num_groups=4,
    transformer_layers_per_block=[1, 1, 2],
    attention_head_dim=[2, 2, 4],
    use_linear_projection=True,
    upcast_attention=False,
    cross_attention_dim=TEXT_1["hidden_size"] + TEXT_2["hidden_size"],
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=TEXT_2["projection_dim"] + 6 * TIME_EMBED_DIM,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
)
VAE = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    act_fn="silu",
    scaling_factor=0.13025,
    force_upcast=True,
)
# stabilityai/stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json, every value: the
# keys Euler does not take (clip_sample, set_alpha_to_one, skip_prk_steps, sample_max_value)
# stay in the saved config and reach DDIM/PNDM built with `from_config`, as for SDXL base.
SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
    interpolation_type="linear", num_train_timesteps=1000, prediction_type="epsilon",
    sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False)

TEXT_PROMPTS = ["a photo of a cat toy!", "A cat statue, in the style of van gogh"]
# The first-eos rule's id for text_embeds_eos: "cat</w>". EOS_PROMPTS hold it before their end,
# the first twice (so the first occurrence is not the last) and the second at another place.
CAT = 2368
EOS_PROMPTS = ["a cat photo of a cat toy!", "the statue of a cat, in the style of van gogh"]


def save_sorted(tensors, path, metadata):
    """save_file with the metadata in key order: safetensors writes its metadata map in hash
    order, so a file with several keys would differ from run to run."""
    data = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[8 + n:])


def write_tokenizers():
    """Both tokenizers from tiny-sd1's real CLIP BPE files; tokenizer_2 pads with "!" (id 0)."""
    src = os.path.join(ROOT, "tiny-sd1", "tokenizer")
    for name, pad in [("tokenizer", mf.EOS), ("tokenizer_2", "!")]:
        out = os.path.join(OUT, name)
        os.makedirs(out, exist_ok=True)
        for f in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]:
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
        if pad != mf.EOS:
            special_path = os.path.join(out, "special_tokens_map.json")
            special = json.load(open(special_path))
            special["pad_token"] = mf.added_token(pad, False)
            json.dump(special, open(special_path, "w"), indent=2)
            config_path = os.path.join(out, "tokenizer_config.json")
            config = json.load(open(config_path))
            config["pad_token"] = pad
            json.dump(config, open(config_path, "w"), indent=2)


def text_config(spec, eos_token_id=2):
    # bos 0 / eos 2 / pad 1: the (legacy) ids SDXL's text encoder configs carry.
    return CLIPTextConfig(vocab_size=49408, max_position_embeddings=MAX_LENGTH, layer_norm_eps=1e-5,
                          bos_token_id=0, eos_token_id=eos_token_id, pad_token_id=1, **spec)


def build_pipeline():
    g = torch.Generator().manual_seed(SEED)
    text_encoder = CLIPTextModel(text_config(TEXT_1))
    mf.randomize_(text_encoder, g)
    text_encoder_2 = CLIPTextModelWithProjection(text_config(TEXT_2))
    mf.randomize_(text_encoder_2, g)
    unet = UNet2DConditionModel(**UNET)
    mf.randomize_(unet, g)
    vae = AutoencoderKL(**VAE)
    mf.randomize_(vae, g)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(OUT, "tokenizer")),
        tokenizer_2=CLIPTokenizer.from_pretrained(os.path.join(OUT, "tokenizer_2")),
        unet=unet, scheduler=EulerDiscreteScheduler.from_config(SCHEDULER),
        force_zeros_for_empty_prompt=True)


def save_pipeline(pipe):
    """float16 safetensors; text encoder keys as SDXL's files have them (`text_model.*`,
    `text_projection.weight`), which transformers 5 writes without the prefix."""
    tmp = OUT + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    for part in ["text_encoder", "text_encoder_2", "unet", "vae", "scheduler"]:
        shutil.rmtree(os.path.join(OUT, part), ignore_errors=True)
        shutil.move(os.path.join(tmp, part), os.path.join(OUT, part))
    shutil.move(os.path.join(tmp, "model_index.json"), os.path.join(OUT, "model_index.json"))
    shutil.rmtree(tmp)
    for part, arch in [("text_encoder", "CLIPTextModel"),
                       ("text_encoder_2", "CLIPTextModelWithProjection")]:
        te = os.path.join(OUT, part)
        weights = {}
        for k, v in load_file(os.path.join(te, "model.safetensors")).items():
            if not (k.startswith("text_model.") or k.startswith("text_projection.")):
                k = "text_model." + k
            weights[k] = v.contiguous()
        save_file(weights, os.path.join(te, "model.safetensors"), metadata={"format": "pt"})
        cfg_path = os.path.join(te, "config.json")
        cfg = json.load(open(cfg_path))
        cfg["architectures"] = [arch]
        cfg["torch_dtype"] = "float16"
        json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)


def check_roundtrip(pipe):
    loaded = StableDiffusionXLPipeline.from_pretrained(OUT, torch_dtype=torch.float16)
    for part in ["text_encoder", "text_encoder_2", "unet", "vae"]:
        want = getattr(pipe, part).state_dict()
        got = getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        for k in want:
            assert torch.equal(want[k], got[k]), f"{part}.{k} did not round-trip"


def text_outputs(with_projection):
    def fn(m, x):
        out = m(x["input_ids"], output_hidden_states=True)
        result = {"last_hidden_state": out.last_hidden_state,
                  "penultimate_hidden_state": out.hidden_states[-2]}
        if with_projection:
            result["text_embeds"] = out.text_embeds
        return result
    return fn


def write_references(report):
    pipe = StableDiffusionXLPipeline.from_pretrained(OUT, torch_dtype=torch.float32)
    g = torch.Generator().manual_seed(100 + SEED)
    spec = {"name": NAME}
    # transformers 5's CLIPTextModel has its modules at the top, the projection model under
    # `text_model`; only the first encoder's activations are kept.
    for component, model, tok, proj, debug in [
            ("text_encoder", pipe.text_encoder, pipe.tokenizer, False, ["embeddings", "encoder.layers.0"]),
            ("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, True, [])]:
        ids = tok(TEXT_PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                  return_tensors="pt").input_ids
        mf.write_reference(spec, component, model, text_outputs(proj), {"input_ids": ids}, debug, report)
    # The first-eos rule on the same weights: text_encoder_2 with eos_token_id = CAT, on ids
    # where the first CAT is neither the argmax (the legacy rule) nor, in row 0, the last CAT.
    ids = pipe.tokenizer_2(EOS_PROMPTS, padding="max_length", max_length=MAX_LENGTH,
                           truncation=True, return_tensors="pt").input_ids
    first = [row.tolist().index(CAT) for row in ids]
    last = [MAX_LENGTH - 1 - row.tolist()[::-1].index(CAT) for row in ids]
    assert first != ids.argmax(-1).tolist() and first[0] != last[0] and first[0] != first[1], (first, last)
    first_eos = CLIPTextModelWithProjection(text_config(TEXT_2, eos_token_id=CAT))
    first_eos.load_state_dict(pipe.text_encoder_2.state_dict())
    path = os.path.join(OUT, "reference", "text_encoder_2.safetensors")
    tensors = dict(load_file(path))
    with torch.no_grad():
        out = first_eos.to(torch.float64)(ids)
        embeds = out.text_embeds
        legacy = pipe.text_encoder_2.to(torch.float64)(ids).text_embeds
        at_last = first_eos.text_projection(out.last_hidden_state[torch.arange(2), torch.tensor(last)])
    assert (embeds - legacy).abs().max() > 1e-3, "the two pooling rules must differ here"
    assert (embeds - at_last).abs().max() > 1e-3, "the first and the last CAT must differ here"
    tensors["input_ids_eos"] = ids.contiguous()
    tensors["text_embeds_eos"] = embeds.float().contiguous()
    save_file(tensors, path, metadata={"eos_token_id": str(CAT)})
    pipe.text_encoder_2.to(torch.float32)

    h = UNET["sample_size"]
    unet_inputs = {
        "sample": torch.randn((2, 4, h, h), generator=g),
        "timestep": torch.tensor([999.0, 47.0]),
        "encoder_hidden_states": torch.randn((2, MAX_LENGTH, UNET["cross_attention_dim"]), generator=g),
        "text_embeds": torch.randn((2, TEXT_2["projection_dim"]), generator=g),
        "time_ids": torch.tensor([[40.0, 24.0, 4.0, 0.0, 16.0, 16.0], [16.0, 16.0, 0.0, 0.0, 16.0, 16.0]]),
    }
    mf.write_reference(
        spec, "unet", pipe.unet,
        lambda m, x: {"out_sample": m(x["sample"], x["timestep"], x["encoder_hidden_states"],
                                      added_cond_kwargs={"text_embeds": x["text_embeds"],
                                                         "time_ids": x["time_ids"]}).sample},
        unet_inputs, ["time_proj", "time_embedding", "add_embedding", "conv_in", "down_blocks.0",
                      "down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1",
                      "up_blocks.2"], report)

    size = VAE["sample_size"]
    pixels = torch.rand((2, 3, size, size), generator=g) * 2 - 1
    mf.write_reference(spec, "vae_encoder", pipe.vae,
                       lambda m, x: (lambda d: {"mean": d.mean, "logvar": d.logvar})(
                           m.encode(x["pixel_values"]).latent_dist),
                       {"pixel_values": pixels}, ["encoder.down_blocks.0", "encoder.mid_block", "encoder"],
                       report)
    latent = size // 2 ** (len(VAE["block_out_channels"]) - 1)
    latents = torch.randn((2, 4, latent, latent), generator=g)
    mf.write_reference(spec, "vae_decoder", pipe.vae,
                       lambda m, x: {"out_sample": m.decode(x["latents"]).sample},
                       {"latents": latents}, ["post_quant_conv", "decoder.mid_block", "decoder.up_blocks.0"],
                       report)


LR, BETAS, WD, EPS = 1e-2, (0.9, 0.999), 1e-2, 1e-8
NUM_VECTORS = 2


def step():
    """One step of textual_inversion_sdxl.py (lines ~915-990) in float64 with its draws given:
    both tokenizers get the placeholder tokens, each table a trainable row per token (from the
    initializer's row of its own table, moved a little so the gradient is not special), the
    conditioning is both encoders' penultimate states side by side plus text_encoder_2's
    text_embeds and each sample's time ids, the loss the MSE to the noise, then one AdamW step."""
    torch.manual_seed(13)
    dt = torch.float64
    tok1 = CLIPTokenizer.from_pretrained(OUT, subfolder="tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(OUT, subfolder="tokenizer_2")
    te1 = CLIPTextModel.from_pretrained(OUT, subfolder="text_encoder").to(dt)
    te2 = CLIPTextModelWithProjection.from_pretrained(OUT, subfolder="text_encoder_2").to(dt)
    vae = AutoencoderKL.from_pretrained(OUT, subfolder="vae").to(dt)
    unet = UNet2DConditionModel.from_pretrained(OUT, subfolder="unet").to(dt)
    sched = DDPMScheduler.from_pretrained(OUT, subfolder="scheduler")
    placeholders = ["<cat-toy>"] + [f"<cat-toy>_{i}" for i in range(1, NUM_VECTORS)]
    rows0 = []
    for tok, te in [(tok1, te1), (tok2, te2)]:
        vocab = te.config.vocab_size
        assert tok.add_tokens(placeholders) == NUM_VECTORS
        assert tok.convert_tokens_to_ids(placeholders) == list(range(vocab, vocab + NUM_VECTORS))
        init = tok.encode("toy", add_special_tokens=False)
        assert len(init) == 1
        table = te.get_input_embeddings().weight.detach()
        rows0.append(table[init[0]].repeat(NUM_VECTORS, 1)
                     + 0.05 * torch.randn(NUM_VECTORS, table.shape[1], dtype=dt))
    batch = 3
    prompts = ["a photo of a <cat-toy> <cat-toy>_1", "a rendering of a <cat-toy> <cat-toy>_1 toy",
               "the <cat-toy> <cat-toy>_1 on a table"]
    enc = lambda tok: tok(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True,  # noqa: E731
                          return_tensors="pt").input_ids
    ids1, ids2 = enc(tok1), enc(tok2)
    res = VAE["sample_size"]
    pixel_values = torch.rand(batch, 3, res, res, dtype=dt) * 2 - 1
    f = 2 ** (len(VAE["block_out_channels"]) - 1)
    shape = (batch, 4, res // f, res // f)
    latent_eps = torch.randn(shape, dtype=dt)
    noise = torch.randn(shape, dtype=dt)
    timesteps = torch.tensor([7, 912, 431], dtype=torch.int64)
    # original size, crop top left, target size per sample, as the script's add_time_ids.
    time_ids = torch.tensor([[40, 24, 0, 0, res, res], [16, 16, 0, 0, res, res],
                             [24, 60, 3, 11, res, res]], dtype=dt)

    rows = [torch.nn.Parameter(r.clone()) for r in rows0]
    with torch.no_grad():
        dist = vae.encode(pixel_values).latent_dist
    latents = (dist.mean + dist.std * latent_eps) * vae.config.scaling_factor
    noisy = sched.add_noise(latents, noise, timesteps)

    def extended(te, r):
        key = [k for k, _ in te.named_parameters() if k.endswith("token_embedding.weight")][0]
        return {key: torch.cat([te.get_input_embeddings().weight.detach(), r], 0)}

    out1 = torch.func.functional_call(te1, extended(te1, rows[0]), (ids1,), {"output_hidden_states": True})
    out2 = torch.func.functional_call(te2, extended(te2, rows[1]), (ids2,), {"output_hidden_states": True})
    # The legacy pooling (argmax of the ids) lands on the placeholder, the largest id.
    pooled_at = ids2.argmax(-1)
    assert all(ids2[i, pooled_at[i]] >= 49408 for i in range(batch))
    ehs = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    added = {"text_embeds": out2[0], "time_ids": time_ids}
    pred = unet(noisy, timesteps, ehs, added_cond_kwargs=added).sample
    loss = F.mse_loss(pred.double(), noise.double(), reduction="mean")
    loss.backward()
    grads = [r.grad.detach().clone() for r in rows]
    opt = torch.optim.AdamW(rows, lr=LR, betas=BETAS, weight_decay=WD, eps=EPS)
    opt.step()
    out = {
        "pixel_values": pixel_values.float(), "input_ids": ids1, "input_ids_2": ids2,
        "latent_eps": latent_eps.float(), "noise": noise.float(), "timesteps": timesteps,
        "time_ids": time_ids.float(), "rows": rows0[0].float(), "rows_2": rows0[1].float(),
        "loss": loss.detach().float().reshape(()), "grad_rows": grads[0].float(),
        "grad_rows_2": grads[1].float(), "rows_after": rows[0].detach().float(),
        "rows_2_after": rows[1].detach().float(),
    }
    save_sorted({k: v.contiguous() for k, v in out.items()},
                os.path.join(OUT, "reference", "train_step.safetensors"),
                metadata={"learning_rate": str(LR), "adam_beta1": str(BETAS[0]), "adam_beta2": str(BETAS[1]),
                          "adam_weight_decay": str(WD), "adam_epsilon": str(EPS),
                          "placeholder_token": "<cat-toy>", "num_vectors": str(NUM_VECTORS),
                          "prediction_type": sched.config.prediction_type})
    print("train step loss", loss.item(), "grad max", grads[0].abs().max().item(), grads[1].abs().max().item())


SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpmpp-2m": DPMSolverMultistepScheduler,
}
STEPS, GUIDANCE, SIZE = 5, 7.5, 16
CASES = {
    "plain": {"prompt": "a photo of a cat toy", "negative_prompt": None},
    "plain_empty_negative": {"prompt": "a photo of a cat toy", "negative_prompt": ""},
    "embed": {"prompt": "a photo of <cat-toy> on a beach", "negative_prompt": "blurry, dark"},
    "embed_no_negative": {"prompt": "a photo of <cat-toy> on a beach", "negative_prompt": None},
}


def make_generate():
    """StableDiffusionXLPipeline (float32) from fixed latents, every case and scheduler; the
    embedding cases after loading the {clip_l, clip_g} file with one call per text encoder."""
    out_dir = os.path.join(OUT, "reference")
    pipe = StableDiffusionXLPipeline.from_pretrained(OUT, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(1234)
    shape = (1, 4, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor)
    latents = torch.randn(shape, generator=gen)
    noise = torch.randn((STEPS, *shape), generator=gen)
    rows = {"clip_l": 0.5 * torch.randn((2, TEXT_1["hidden_size"]), generator=gen),
            "clip_g": 0.5 * torch.randn((2, TEXT_2["hidden_size"]), generator=gen)}
    embeds_path = os.path.join(out_dir, "learned_embeds.safetensors")
    save_file({k: v.contiguous() for k, v in rows.items()}, embeds_path, metadata={"format": "pt"})
    tensors = {"latents": latents, "noise": noise}
    loaded = False
    for case, prompts in CASES.items():
        if case.startswith("embed") and not loaded:
            state = load_file(embeds_path)
            pipe.load_textual_inversion(state["clip_l"], token="<cat-toy>", text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(state["clip_g"], token="<cat-toy>", text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
            loaded = True
        embeds = pipe.encode_prompt(prompts["prompt"], device="cpu", num_images_per_prompt=1,
                                    do_classifier_free_guidance=True,
                                    negative_prompt=prompts["negative_prompt"])
        prompt_embeds, negative_embeds, pooled, negative_pooled = embeds
        tensors[f"{case}.prompt_embeds"] = torch.cat([negative_embeds, prompt_embeds]).float()
        tensors[f"{case}.pooled_prompt_embeds"] = torch.cat([negative_pooled, pooled]).float()
        for name, cls in SCHEDULERS.items():
            extra = {"skip_prk_steps": True} if cls is PNDMScheduler else {}
            pipe.scheduler = cls.from_config(base_config, **extra)
            draws = iter(noise)
            euler_a_module.randn_tensor = lambda *a, **k: next(draws).clone()
            result = pipe(prompts["prompt"], negative_prompt=prompts["negative_prompt"],
                          num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=latents.clone(),
                          height=SIZE, width=SIZE, output_type="np")
            images = torch.from_numpy(result.images).permute(0, 3, 1, 2).contiguous()
            tensors[f"{case}.{name}.images"] = images.float()
            print(f"{NAME} {case} {name}: mean {images.mean():.4f} min {images.min():.3f} max {images.max():.3f}")
    tensors["add_time_ids"] = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]] * 2, dtype=torch.float32)
    meta = {"cases": CASES, "steps": STEPS, "guidance_scale": GUIDANCE, "size": SIZE}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "generate.safetensors"),
              metadata={"cases": json.dumps(meta)})


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    write_tokenizers()
    pipe = build_pipeline()
    save_pipeline(pipe)
    check_roundtrip(pipe)
    report = []
    write_references(report)
    step()
    make_generate()
    print("\n".join(report))


if __name__ == "__main__":
    main()

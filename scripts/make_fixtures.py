#!/usr/bin/env python3
"""Builds the tiny random Stable Diffusion fixtures under tests/fixtures/ and their references.

Two models in the diffusers layout, both loadable with `StableDiffusionPipeline.from_pretrained`:
  tiny-sd1/  SD 1.x style: quick_gelu CLIP, `attention_head_dim` an int, no linear projection,
             PNDM epsilon scheduler, VAE scaling 0.18215, the real 49,408-entry CLIP BPE.
  tiny-sd2/  SD 2.x style: gelu CLIP, per-block `attention_head_dim`, linear projection,
             upcast attention, DDIM v_prediction scheduler, VAE scaling 0.13025, a reduced
             1,000-entry BPE (byte tokens + the first merges), padding with "!" like SD 2.
Weights are random (fixed seeds) and stored as float16. References are computed from the stored
(f16-rounded) weights upcast to float64 and saved as float32 safetensors in <model>/reference/.
Also writes tests/fixtures/tokenizer_cases.json (CLIPTokenizer ids for check strings).

Run from the repository root with the reference venv (see tests/fixtures/README.md):
    /tmp/fxenv/bin/python scripts/make_fixtures.py
Python lives in scripts/ only; the product never runs it.
"""

import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# SD 1.x-style model. Dimensions are small and pairwise distinct where a mix-up could hide.
SD1 = dict(
    name="tiny-sd1",
    seed=1,
    bpe_merges=None,  # all 48,894 merges: the real CLIP vocabulary
    pad_token=EOS,
    text=dict(hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
              hidden_act="quick_gelu"),
    unet=dict(
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 24),
        layers_per_block=2,
        norm_num_groups=2,
        attention_head_dim=2,  # an int: diffusers reads it as the number of heads
        use_linear_projection=False,
        upcast_attention=False,
    ),
    vae=dict(
        sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=2,
        norm_num_groups=4,
        scaling_factor=0.18215,
    ),
    scheduler=(PNDMScheduler, dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        trained_betas=None, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
        prediction_type="epsilon")),
    timesteps=[999.0, 47.0],
)

# SD 2.x-style model: every size differs from SD1, three UNet/VAE levels instead of two.
SD2 = dict(
    name="tiny-sd2",
    seed=2,
    bpe_merges=1000 - 512 - 2,  # byte tokens, their </w> forms, the first merges, bos, eos
    pad_token="!",
    text=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=3, num_attention_heads=5,
              hidden_act="gelu"),
    unet=dict(
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=[2, 4, 4],  # per block, as SD 2 writes it: head dim 4 everywhere
        use_linear_projection=True,
        upcast_attention=True,
    ),
    vae=dict(
        sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=2,
        scaling_factor=0.13025,
    ),
    scheduler=(DDIMScheduler, dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        trained_betas=None, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        prediction_type="v_prediction")),
    timesteps=[1.0, 500.0],
)

# Prompts encoded for the text-encoder references (one batch of two).
TEXT_PROMPTS = ["a photo of a cat toy", "A cat statue, in the style of van gogh"]

# Strings for tokenizer_cases.json. The first two are REFERENCE.md's check strings.
TOKENIZER_STRINGS = [
    "a photo of a <cat-toy> toy",
    "A cat statue, in the style of van gogh",
    "a rendering of a <cat-toy>",
    "a painting in the style of <cat-toy>",
    "",
    "   leading, trailing   and  inner   spaces\t\ttabs\nnewlines  ",
    "CAPITALS and MiXeD CaSe: Hello World",
    "numbers 0 12 345 6789 3.14159 1,000,000 2nd 21st",
    "punctuation!?... (brackets) [square] {curly} \"quotes\" 'single' a-b_c/d\\e @#$%^&*~`|",
    "contractions: it's don't we're they've I'm we'll he'd IT'S",
    "unicode: café naïve résumé Ünïcödé ñ ß Œuvre",
    "decomposed: cafe\u0301 and nai\u0308ve",
    "greek αβγ δέλτα, cyrillic привет мир",
    "cjk: 東京タワー 北京 한국어",
    "emoji: 🐱 🧸🎨 ❤️ 👍🏽",
    "curly quotes: \u201cquoted\u201d and it\u2019s \u2014 dash",
    "! !! !!! exclamations!",
    "a photo of a <CAT-TOY> Toy",
    "<cat-toy><cat-toy> glued<cat-toy>glued",
    "<|startoftext|> special <|endoftext|> tokens in text",
    "a photo of a <cat-toy> <cat-toy>_1 <cat-toy>_2",
    "<cat-toy>_1 alone and <cat-toy>_10 and <cat-toy>_",
    " ".join(["word"] * 80),
    "a very long prompt " + ", ".join(f"detail number {i}" for i in range(40)),
]
PLACEHOLDER = "<cat-toy>"
NUM_VECTORS = 3


# ---------------------------------------------------------------------------------------------
# Tokenizer files


def clip_bpe_path():
    # Not `import clip`: its __init__ needs pkg_resources, which recent setuptools removed.
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("clip-anytorch is not installed: pip install clip-anytorch")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode():
    """GPT-2/CLIP byte -> printable unicode char table, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(num_merges):
    """The OpenAI CLIP vocabulary as clip/simple_tokenizer.py builds it (optionally truncated)."""
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    assert len(merges) == 48894, len(merges)
    if num_merges is not None:
        merges = merges[:num_merges]
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def added_token(content, normalized):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False}


def write_tokenizer(spec, out):
    """Writes vocab.json + merges.txt + configs the way the SD 1.5 / SD 2.x repositories have them.

    SD 2's special_tokens_map.json sets pad "!" (id 0). tiny-sd2's tokenizer_config.json keeps
    "<|endoftext|>", so the precedence is exercised: transformers (4.57 and 5.x alike) lets
    special_tokens_map.json win. tiny-sd2 also gets a tokenizer.json (as transformers 5 saves
    it) to cover that path.
    """
    os.makedirs(out, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(spec["bpe_merges"])
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    if spec["name"] == "tiny-sd2":
        tok = CLIPTokenizer(vocab=vocab, merges=list(merges),
                            pad_token=spec["pad_token"], model_max_length=MAX_LENGTH)
        tmp = out + ".tmp"
        tok.save_pretrained(tmp)
        shutil.move(os.path.join(tmp, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
        shutil.rmtree(tmp)
    typed = lambda t: dict(__type="AddedToken", **added_token(t, True))  # noqa: E731
    config = {
        "add_prefix_space": False,
        "bos_token": typed(BOS),
        "do_lower_case": True,
        "eos_token": typed(EOS),
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": typed(EOS),
    }
    pad = spec["pad_token"]
    special = {
        "bos_token": added_token(BOS, True),
        "eos_token": added_token(EOS, True),
        "pad_token": EOS if pad == EOS else added_token(pad, False),
        "unk_token": added_token(EOS, True),
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    return len(vocab)


def tokenizer_cases():
    """CLIPTokenizer ids (padding="max_length", truncation, 77) for both fixture tokenizers."""
    cases = {"max_length": MAX_LENGTH, "placeholder_token": PLACEHOLDER,
             "num_vectors": NUM_VECTORS, "models": {}}
    for spec in (SD1, SD2):
        path = os.path.join(ROOT, spec["name"], "tokenizer")
        tok = CLIPTokenizer.from_pretrained(path)
        assert tok.model_max_length == MAX_LENGTH and tok.pad_token == spec["pad_token"], (
            tok.model_max_length, tok.pad_token)
        enc = lambda t, s: t(s, padding="max_length", max_length=MAX_LENGTH,  # noqa: E731
                             truncation=True).input_ids
        base = [enc(tok, s) for s in TOKENIZER_STRINGS]
        # As diffusers' textual_inversion.py: add P (then P_1.. for several vectors) with add_tokens.
        one = CLIPTokenizer.from_pretrained(path)
        assert one.add_tokens([PLACEHOLDER]) == 1
        multi = CLIPTokenizer.from_pretrained(path)
        names = [PLACEHOLDER] + [f"{PLACEHOLDER}_{i}" for i in range(1, NUM_VECTORS)]
        assert multi.add_tokens(names) == NUM_VECTORS
        entry = {
            "vocab_size": len(tok),
            "pad_token": tok.pad_token,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "placeholder_ids": one.convert_tokens_to_ids([PLACEHOLDER]),
            "multi_vector_placeholder_ids": multi.convert_tokens_to_ids(names),
            "initializer_ids": {w: tok.encode(w, add_special_tokens=False)
                                for w in ["toy", "cat", "painting", "sculpture", "cat-toy", "van gogh"]},
            "cases": [
                {"text": s, "ids": b, "ids_with_placeholder": enc(one, s),
                 "ids_with_multi_vector_placeholder": enc(multi, s)}
                for s, b in zip(TOKENIZER_STRINGS, base)
            ],
        }
        cases["models"][spec["name"]] = entry
    text = json.dumps(cases, ensure_ascii=False, indent=1)
    # One line per id list keeps the file small and its diffs readable.
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with open(os.path.join(ROOT, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    # REFERENCE.md's check strings, as a guard on the script itself.
    sd1 = cases["models"]["tiny-sd1"]["cases"]
    assert sd1[0]["ids"][:12] == [49406, 320, 1125, 539, 320, 283, 2368, 268, 5988, 285, 5988, 49407]
    assert sd1[0]["ids_with_placeholder"][:8] == [49406, 320, 1125, 539, 320, 49408, 5988, 49407]
    assert sd1[1]["ids"][:12] == [49406, 320, 2368, 8222, 267, 530, 518, 1844, 539, 2451, 19697, 49407]


# ---------------------------------------------------------------------------------------------
# Models


def randomize_(model, generator):
    """Random weights that make every parameter matter (norm scales and biases are not 1 and 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith("weight") else 0.0  # norm scale vs bias
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=generator))
            elif "embedding" in name and p.ndim == 2 and "linear" not in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=generator) / np.sqrt(fan_in))


def build_pipeline(spec, vocab_size):
    g = torch.Generator().manual_seed(spec["seed"])
    vocab = json.load(open(os.path.join(ROOT, spec["name"], "tokenizer", "vocab.json"), encoding="utf-8"))
    text_config = CLIPTextConfig(
        vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH, layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[spec["pad_token"]],
        projection_dim=spec["text"]["hidden_size"], **spec["text"])
    text_encoder = CLIPTextModel(text_config)
    randomize_(text_encoder, g)
    hidden = spec["text"]["hidden_size"]
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, flip_sin_to_cos=True, freq_shift=0,
                                act_fn="silu", norm_eps=1e-5, cross_attention_dim=hidden,
                                center_input_sample=False, downsample_padding=1,
                                mid_block_scale_factor=1, **spec["unet"])
    randomize_(unet, g)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", **spec["vae"])
    randomize_(vae, g)
    sched_cls, sched_cfg = spec["scheduler"]
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(ROOT, spec["name"], "tokenizer"))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched_cls(**sched_cfg), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def save_pipeline(pipe, spec):
    """Saves the model parts as float16 safetensors, keeping the tokenizer files written above."""
    out = os.path.join(ROOT, spec["name"])
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    for part in ["text_encoder", "unet", "vae", "scheduler"]:
        shutil.rmtree(os.path.join(out, part), ignore_errors=True)
        shutil.move(os.path.join(tmp, part), os.path.join(out, part))
    shutil.move(os.path.join(tmp, "model_index.json"), os.path.join(out, "model_index.json"))
    shutil.rmtree(tmp)
    # transformers 5 drops CLIPTextModel's `text_model.` prefix; SD checkpoints have it.
    te = os.path.join(out, "text_encoder")
    weights = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
               for k, v in load_file(os.path.join(te, "model.safetensors")).items()}
    if spec["name"] == "tiny-sd1":
        # SD 1.5's file still carries the old position_ids buffer; loaders must skip it.
        weights["text_model.embeddings.position_ids"] = torch.arange(MAX_LENGTH, dtype=torch.int64)[None]
    save_file(weights, os.path.join(te, "model.safetensors"), metadata={"format": "pt"})
    cfg_path = os.path.join(te, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["architectures"] = ["CLIPTextModel"]
    cfg["torch_dtype"] = "float16"
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# References


class Recorder:
    """Forward hooks that keep chosen submodule outputs (the first tensor of a tuple)."""

    def __init__(self, model, names):
        self.out, self.handles = {}, []
        modules = dict(model.named_modules())
        for n in names:
            self.handles.append(modules[n].register_forward_hook(self._hook(n)))

    def _hook(self, name):
        def hook(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            if hasattr(output, "last_hidden_state"):
                output = output.last_hidden_state
            self.out[name] = output.detach()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def run(model, fn, inputs, debug_modules, dtype):
    model = model.to(dtype)
    rec = Recorder(model, debug_modules)
    with torch.no_grad():
        outputs = fn(model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()})
    rec.close()
    outputs.update({"debug." + k: v for k, v in rec.out.items()})
    return outputs


def write_reference(spec, component, model, fn, inputs, debug_modules, report):
    """Runs the model in float64 (reference) and float32 (to report the f32 error), saves f32."""
    ref = run(model, fn, inputs, debug_modules, torch.float64)
    f32 = run(model, fn, inputs, debug_modules, torch.float32)
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    for k, v in ref.items():
        tensors[k] = v.to(torch.float32).contiguous()
        err = (f32[k].double() - v).abs().max().item()
        scale = v.abs().max().item()
        report.append(f"{spec['name']:9s} {component:13s} {k:34s} {tuple(v.shape)!s:18s} "
                      f"max|ref| {scale:9.4g}  f32 max abs err {err:.3g} rel {err / max(scale, 1e-30):.3g}")
    out = os.path.join(ROOT, spec["name"], "reference")
    os.makedirs(out, exist_ok=True)
    # One metadata key only: safetensors writes the metadata map in hash order.
    save_file(tensors, os.path.join(out, f"{component}.safetensors"), metadata={"format": "pt"})


def write_references(spec, report):
    path = os.path.join(ROOT, spec["name"])
    pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32)
    g = torch.Generator().manual_seed(100 + spec["seed"])

    ids = pipe.tokenizer(TEXT_PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                         return_tensors="pt").input_ids
    write_reference(spec, "text_encoder", pipe.text_encoder,
                    lambda m, x: {"last_hidden_state": m(x["input_ids"]).last_hidden_state},
                    {"input_ids": ids}, ["embeddings", "encoder.layers.0"], report)

    cfg = pipe.unet.config
    h = cfg.sample_size
    hidden = pipe.text_encoder.config.hidden_size
    unet_inputs = {
        "sample": torch.randn((2, 4, h, h), generator=g),
        "timestep": torch.tensor(spec["timesteps"], dtype=torch.float32),
        "encoder_hidden_states": torch.randn((2, MAX_LENGTH, hidden), generator=g),
    }
    write_reference(spec, "unet", pipe.unet,
                    lambda m, x: {"out_sample": m(x["sample"], x["timestep"], x["encoder_hidden_states"]).sample},
                    unet_inputs, ["time_proj", "time_embedding", "conv_in", "down_blocks.0", "mid_block",
                                  "up_blocks.0"], report)

    vcfg = pipe.vae.config
    size = vcfg.sample_size
    pixels = torch.rand((2, 3, size, size), generator=g) * 2 - 1
    write_reference(spec, "vae_encoder", pipe.vae,
                    lambda m, x: (lambda d: {"mean": d.mean, "logvar": d.logvar})(
                        m.encode(x["pixel_values"]).latent_dist),
                    {"pixel_values": pixels}, ["encoder.down_blocks.0", "encoder.mid_block", "encoder"],
                    report)
    latent = size // 2 ** (len(vcfg.block_out_channels) - 1)
    latents = torch.randn((2, 4, latent, latent), generator=g)
    write_reference(spec, "vae_decoder", pipe.vae,
                    lambda m, x: {"out_sample": m.decode(x["latents"]).sample},
                    {"latents": latents}, ["post_quant_conv", "decoder.mid_block", "decoder.up_blocks.0"],
                    report)


def check_roundtrip(spec, pipe):
    """The saved folder loads back (diffusers + transformers) to exactly the f16-rounded weights."""
    loaded = StableDiffusionPipeline.from_pretrained(os.path.join(ROOT, spec["name"]),
                                                     torch_dtype=torch.float16)
    for part in ["text_encoder", "unet", "vae"]:
        want = getattr(pipe, part).state_dict()
        got = getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        for k in want:
            assert torch.equal(want[k], got[k]), f"{part}.{k} did not round-trip"


def versions():
    names = ["torch", "diffusers", "transformers", "tokenizers", "safetensors", "numpy", "clip-anytorch"]
    return {n: importlib.metadata.version(n) for n in names}


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    report = []
    for spec in (SD1, SD2):
        out = os.path.join(ROOT, spec["name"])
        shutil.rmtree(out, ignore_errors=True)
        vocab_size = write_tokenizer(spec, os.path.join(out, "tokenizer"))
        pipe = build_pipeline(spec, vocab_size)
        save_pipeline(pipe, spec)
        check_roundtrip(spec, pipe)
        write_references(spec, report)
    tokenizer_cases()
    with open(os.path.join(ROOT, "versions.json"), "w") as f:
        json.dump(versions(), f, indent=2)
    print("\n".join(report))
    print(json.dumps(versions()))


if __name__ == "__main__":
    main()

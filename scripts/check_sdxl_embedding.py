#!/usr/bin/env python3
"""Checks that an SDXL embedding written by `ti-xla train` loads in real diffusers.

    /tmp/fxenv/bin/python scripts/check_sdxl_embedding.py EMBEDDING MODEL_FOLDER [TOKEN]

Loads `{"clip_l": [n, D1], "clip_g": [n, D2]}` with one `load_textual_inversion` call per text
encoder into `StableDiffusionXLPipeline.from_pretrained(MODEL_FOLDER)`, checks that each table's
new rows equal the file's (max |difference| printed, must be 0) and that the prompt's token
expands to its n ids in both tokenizers, then runs a 2-step generation with it.
"""
import sys

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file


def main():
    path, model = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else "<cat-toy>"
    state = load_file(path)
    assert sorted(state) == ["clip_g", "clip_l"], sorted(state)
    pipe = StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    sizes = [len(pipe.tokenizer), len(pipe.tokenizer_2)]
    pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    n = state["clip_l"].shape[0]
    for key, encoder, tokenizer, before in [("clip_l", pipe.text_encoder, pipe.tokenizer, sizes[0]),
                                            ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2, sizes[1])]:
        table = encoder.get_input_embeddings().weight.detach()
        rows = table[before:before + n]
        diff = (rows - state[key].float()).abs().max().item()
        prompt = pipe.maybe_convert_prompt(f"a photo of {token}", tokenizer)
        ids = tokenizer(prompt).input_ids
        new = [i for i in ids if i >= before]
        print(f"{key}: rows {tuple(state[key].shape)} at ids {before}..{before + n - 1}, "
              f"max |table - file| = {diff:.3g}; prompt ids of the token {new}")
        assert diff == 0.0 and new == list(range(before, before + n))
    image = pipe(f"a photo of {token}", num_inference_steps=2, output_type="np").images[0]
    print(f"2-step generation: image {image.shape}, mean {image.mean():.4f}")


if __name__ == "__main__":
    main()

"""Fixtures for --masked-loss (tests/data_images.rs): an RGBA photo whose alpha is the mask, a
photo with a NAME.mask.png beside it, and the latent-size masks kohya's masked loss gives for
them, computed here with Pillow and numpy as the reference trainers prepare data: the mask
cropped as its image (the centred square, numpy slicing as diffusers' dataset), resized with
Pillow's bicubic to the resolution, scaled to [0, 1] and averaged over 8 x 8 blocks (PyTorch's
interpolate(mode="area") for a whole factor), plus the horizontally mirrored mask.

Run from the repository root with Pillow and numpy installed:
    python3 scripts/make_mask_fixtures.py
Writes tests/fixtures/data/masks/ (a few KB); deterministic.
"""
import json
import os

import numpy as np
from PIL import Image

OUT = "tests/fixtures/data/masks"
os.makedirs(OUT, exist_ok=True)
RESOLUTION, FACTOR = 32, 8

h, w = 27, 45
yy, xx = np.mgrid[0:h, 0:w]
rgb = np.stack([(xx * 5) % 256, (yy * 9) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
# An off-centre soft disc, so that crop, resize and pooling all show.
alpha = np.clip(255 * (1.2 - np.hypot(xx - 30, yy - 10) / 12), 0, 255).astype(np.uint8)
Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(os.path.join(OUT, "alpha.png"))
# A photo without alpha, and its mask file: a hard-edged band.
Image.fromarray(rgb, "RGB").save(os.path.join(OUT, "banded.png"))
band = np.where((xx > 8) & (xx < 20), 255, np.where(yy > 20, 128, 0)).astype(np.uint8)
Image.fromarray(band, "L").save(os.path.join(OUT, "banded.mask.png"))


def latent_mask(gray, center_crop):
    if center_crop:
        crop = min(gray.shape)
        hh, ww = gray.shape
        gray = gray[(hh - crop) // 2:(hh + crop) // 2, (ww - crop) // 2:(ww + crop) // 2]
    img = Image.fromarray(gray, "L").resize((RESOLUTION, RESOLUTION), resample=Image.BICUBIC)
    m = np.asarray(img).astype(np.float64) / 255.0
    s = RESOLUTION // FACTOR
    pooled = m.reshape(s, FACTOR, s, FACTOR).mean(axis=(1, 3))
    return [pooled.ravel().tolist(), pooled[:, ::-1].ravel().tolist()]


expected = {
    "resolution": RESOLUTION,
    "factor": FACTOR,
    "alpha.png": {str(c).lower(): latent_mask(alpha, c) for c in (False, True)},
    "banded.png": {str(c).lower(): latent_mask(band, c) for c in (False, True)},
}
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", OUT)

"""Fixtures for the training-data tests: Pillow's bicubic resizes (the reference trainers
resize with `Image.resize(..., BICUBIC)`), and small odd image files (grayscale, RGBA, 16-bit,
EXIF-rotated, webp/bmp/tiff, corrupt, not an image) with the RGB pixels ti-xla must read.

Run from the repository root with Pillow and numpy installed:
    python3 scripts/make_data_fixtures.py
Writes tests/fixtures/data/ (a few KB); deterministic.
"""
import io
import json
import os

import numpy as np
from PIL import Image

OUT = "tests/fixtures/data"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(1234)


def save(name, img, **kw):
    img.save(os.path.join(OUT, name), **kw)


# A 37x23 pattern: smooth ramps plus noise, so both the filter shape and the rounding matter.
yy, xx = np.mgrid[0:23, 0:37]
pattern = np.stack(
    [
        (xx * 7 + yy * 3) % 256,
        (128 + 100 * np.sin(xx / 4.0) * np.cos(yy / 3.0)),
        rng.integers(0, 256, size=(23, 37)),
    ],
    axis=-1,
).astype(np.uint8)
src = Image.fromarray(pattern, "RGB")
save("pattern.png", src)
resizes = {}
for w, h in [(16, 16), (50, 41), (37, 11), (5, 23)]:
    save(f"pattern_{w}x{h}.png", src.resize((w, h), resample=Image.BICUBIC))
# The trainers' centre crop (numpy slicing, floor division) then resize.
h, w = pattern.shape[:2]
s = min(h, w)
crop = pattern[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
save("pattern_crop_16x16.png", Image.fromarray(crop).resize((16, 16), resample=Image.BICUBIC))

# Odd inputs and the RGB8 pixels each must give (written as raw PNG RGB).
expected = {}
base = rng.integers(0, 256, size=(6, 5, 3)).astype(np.uint8)

gray = base[..., 0]
save("odd_gray.png", Image.fromarray(gray, "L"))
expected["odd_gray.png"] = np.repeat(gray[..., None], 3, axis=-1)

rgba = np.concatenate([base, rng.integers(0, 256, size=(6, 5, 1)).astype(np.uint8)], axis=-1)
save("odd_rgba.png", Image.fromarray(rgba, "RGBA"))
expected["odd_rgba.png"] = base  # alpha is dropped, as Pillow's convert("RGB") does

g16 = rng.integers(0, 65536, size=(6, 5)).astype(np.uint16)
Image.fromarray(g16).save(os.path.join(OUT, "odd_gray16.png"))
scaled = ((g16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
expected["odd_gray16.png"] = np.repeat(scaled[..., None], 3, axis=-1)

save("odd.bmp", Image.fromarray(base, "RGB"))
expected["odd.bmp"] = base
save("odd.tiff", Image.fromarray(base, "RGB"))
expected["odd.tiff"] = base
save("odd.webp", Image.fromarray(base, "RGB"), lossless=True)
expected["odd.webp"] = base

# EXIF orientation 6 (rotate 90 CW to display): stored 5 wide x 6 high, shown 6 wide x 5 high.
# A lossless-ish PNG can carry EXIF too, so the expected pixels are exact.
exif = Image.Exif()
exif[0x0112] = 6
save("odd_exif_rotated.png", Image.fromarray(base, "RGB"), exif=exif.tobytes())
expected["odd_exif_rotated.png"] = np.rot90(base, k=-1)

# A JPEG cut in half and a text file with an image extension: both must name the file.
buf = io.BytesIO()
Image.fromarray(np.repeat(np.repeat(base, 8, 0), 8, 1), "RGB").save(buf, format="JPEG", quality=90)
open(os.path.join(OUT, "corrupt.jpg"), "wb").write(buf.getvalue()[: len(buf.getvalue()) // 2])
open(os.path.join(OUT, "not_an_image.png"), "w").write("this is text\n")

with open(os.path.join(OUT, "expected_rgb.json"), "w") as f:
    json.dump({k: {"height": int(v.shape[0]), "width": int(v.shape[1]), "rgb": v.reshape(-1).tolist()}
               for k, v in expected.items()}, f)
print("wrote", sorted(os.listdir(OUT)))

"""The bundled sample images for the quickstart: four framings of "Chelsea the cat", a CC0
photograph by Stefan van der Walt shipped in the scikit-image wheel (skimage/data/chelsea.png),
cropped and downscaled to 96x96 JPEGs.

    pip download scikit-image --no-deps -d /tmp/skimg && unzip -o /tmp/skimg/*.whl 'skimage/data/chelsea.png' -d /tmp/skimg
    python3 scripts/make_sample_images.py /tmp/skimg/skimage/data/chelsea.png
"""
import os
import sys

from PIL import Image

src = Image.open(sys.argv[1]).convert("RGB")  # 451 x 300
out = "tests/fixtures/sample-images"
os.makedirs(out, exist_ok=True)
# (left, top, right, bottom): the face, a wider view, face shifted left and right.
boxes = [(120, 20, 380, 280), (80, 0, 380, 300), (150, 40, 350, 240), (100, 30, 330, 260)]
for i, box in enumerate(boxes):
    img = src.crop(box).resize((96, 96), resample=Image.BICUBIC)
    img.save(os.path.join(out, f"chelsea-{i + 1}.jpg"), quality=90)
# The licence note sits beside the folder: the trainer reads every file inside it.
with open(out + ".LICENSE.txt", "w") as f:
    f.write(
        "chelsea-*.jpg are crops of skimage/data/chelsea.png from the scikit-image wheel (PyPI).\n"
        "Photograph: Stefan van der Walt. Licence: CC0 (\"No copyright restrictions\", per\n"
        "skimage.data.chelsea's documentation). Made by scripts/make_sample_images.py.\n"
    )
print(sorted(os.listdir(out)))

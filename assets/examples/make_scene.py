"""Draw assets/examples/scene.png: a simple landscape (sky, sun, hills, a house), made by the project.

    python assets/examples/make_scene.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(size: int = 512) -> Image.Image:
    y = np.linspace(0, 1, size)[:, None, None]
    sky = (np.array([70, 130, 220]) * (1 - y) + np.array([200, 225, 250]) * y).repeat(size, axis=1)
    im = Image.fromarray(sky.astype(np.uint8))
    d = ImageDraw.Draw(im)
    s = size / 512
    d.ellipse([380 * s, 50 * s, 460 * s, 130 * s], fill=(255, 210, 60))
    d.ellipse([-200 * s, 300 * s, 400 * s, 700 * s], fill=(70, 150, 70))
    d.ellipse([200 * s, 330 * s, 800 * s, 760 * s], fill=(50, 120, 55))
    d.rectangle([150 * s, 280 * s, 290 * s, 390 * s], fill=(210, 90, 60))
    d.polygon([(135 * s, 285 * s), (220 * s, 210 * s), (305 * s, 285 * s)], fill=(120, 60, 40))
    d.rectangle([200 * s, 330 * s, 240 * s, 390 * s], fill=(90, 50, 30))
    d.rectangle([165 * s, 300 * s, 190 * s, 325 * s], fill=(240, 240, 200))
    return im.filter(ImageFilter.GaussianBlur(1))


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "scene.png"
    scene().save(out)
    print("wrote", out)

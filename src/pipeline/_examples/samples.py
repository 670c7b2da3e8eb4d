"""Sample images for the image pipeline: shapes, gradients, noise and stripes.

The same seed gives the same files. Sizes vary between half the given size
and all of it on each side; modes and formats vary too (RGB, RGBA, L, P,
CMYK; PNG, JPEG, GIF, BMP, TIFF), so the loading stage has conversions to
do. One extra file, ``truncated.png``, is cut short as a broken download
would be: the pipeline records it as a dead letter.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     paths = generate(Path(folder), 3, seed=1, size=32)
...     [p.name for p in paths]
['sample-000-shapes.png', 'sample-001-gradient.png', 'sample-002-noise.jpg', 'truncated.png']
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

__all__ = ["CORRUPT_NAME", "generate"]

CORRUPT_NAME = "truncated.png"
"""The name of the one broken file among the samples."""

Colour = tuple[int, int, int]

# (mode, format, suffix), in turn: every format the loading stage must handle.
_FORMATS = (
    ("RGB", "PNG", ".png"),
    ("RGBA", "PNG", ".png"),
    ("RGB", "JPEG", ".jpg"),
    ("L", "PNG", ".png"),
    ("P", "GIF", ".gif"),
    ("RGB", "BMP", ".bmp"),
    ("CMYK", "TIFF", ".tif"),
)


def _colour(rng: random.Random) -> Colour:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _shapes(size: tuple[int, int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", size, _colour(rng))
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(rng.randint(3, 8)):
        x0, x1 = sorted((rng.randrange(width), rng.randrange(width)))
        y0, y1 = sorted((rng.randrange(height), rng.randrange(height)))
        shape = rng.choice(("ellipse", "rectangle", "polygon", "line"))
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == "polygon":
            points = [(rng.randrange(width), rng.randrange(height)) for _ in range(5)]
            draw.polygon(points, fill=_colour(rng))
        else:
            draw.line((x0, y0, x1, y1), fill=_colour(rng), width=max(1, width // 40))
    return image


def _gradient(size: tuple[int, int], rng: random.Random) -> Image.Image:
    ramp = Image.radial_gradient("L") if rng.random() < 0.5 else Image.linear_gradient("L")
    ramp = ramp.rotate(rng.uniform(0, 360)).resize(size)
    return ImageOps.colorize(ramp, _colour(rng), _colour(rng))


def _noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    width, height = size
    noise = Image.frombytes("RGB", size, rng.randbytes(width * height * 3))
    return noise.filter(ImageFilter.GaussianBlur(rng.choice((0, 0.8, 3))))


def _stripes(size: tuple[int, int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", size, _colour(rng))
    draw = ImageDraw.Draw(image)
    step = rng.randint(4, 24)
    ink = _colour(rng)
    for x in range(-size[1], size[0], 2 * step):  # diagonal bands
        draw.polygon(
            [(x, 0), (x + step, 0), (x + step + size[1], size[1]), (x + size[1], size[1])], ink
        )
    return image


_KINDS: tuple[tuple[str, Callable[[tuple[int, int], random.Random], Image.Image]], ...] = (
    ("shapes", _shapes),
    ("gradient", _gradient),
    ("noise", _noise),
    ("stripes", _stripes),
)


def generate(folder: Path, count: int, *, seed: int, size: int = 512) -> list[Path]:
    """Write ``count`` sample images and one truncated file into ``folder``; return their paths.

    Args:
        folder: where to write them (created if need be).
        count: how many images.
        seed: the same seed gives the same images.
        size: the longest side an image may have, in pixels (at least 2).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for number in range(count):
        kind, draw = _KINDS[number % len(_KINDS)]
        mode, image_format, suffix = _FORMATS[number % len(_FORMATS)]
        shape = (rng.randint(max(1, size // 2), size), rng.randint(max(1, size // 2), size))
        image = draw(shape, rng)
        if mode == "RGBA":  # a transparent corner, so loading has alpha to flatten
            image.putalpha(ImageOps.invert(Image.linear_gradient("L").resize(shape)))
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        else:
            image = image.convert(mode)
        path = folder / f"sample-{number:03d}-{kind}{suffix}"
        image.save(path, image_format)
        paths.append(path)
    whole = io.BytesIO()
    _shapes((64, 64), rng).save(whole, "PNG")
    corrupt = folder / CORRUPT_NAME
    corrupt.write_bytes(whole.getvalue()[:120])  # the header, then the data cut short
    paths.append(corrupt)
    return paths

"""Backdrops that training never shows: photographs and textures, and held-out colours.

``aug=background`` composites hands onto generated backdrops (solid colours, gradients,
noise, stripes) and draws no colour from ``rps.augment.HELD_OUT_HUES``. The proxy uses what
that leaves out: photographs of scenes and textures, which no generator reproduces, and solid
colours inside the held-out hue band. A model can only score well
here by ignoring backdrops it has never seen, which is what a webcam asks of it.
"""

from __future__ import annotations

import colorsys
import functools
from importlib.metadata import version

import cv2
import numpy as np

from rps.augment import HELD_OUT_HUES

# scikit-image's bundled sample images (``skimage.data``). Their licenses, as its docstrings
# give them: astronaut (NASA), rocket (SpaceX) public domain; brick, gravel (cc0textures.com),
# grass (linolafett on DeviantArt), chelsea (Stefan van der Walt), coffee (Rachel Michetti)
# CC0. The greyscale textures get a natural tint, as the real thing has.
PHOTOS = ("astronaut", "brick", "chelsea", "coffee", "grass", "gravel", "rocket")
TINTS = {"brick": (0.85, 0.5, 0.4), "grass": (0.5, 0.8, 0.35), "gravel": (0.8, 0.75, 0.65)}
SOLID_SHARE = 0.25  # of backdrops: a solid held-out colour; the rest are photo crops
CROP_SIDE = (0.3, 1.0)  # of the photo's shorter side: close-ups and wide views
SATURATION = (0.3, 0.9)
VALUE = (0.3, 0.95)


def identity() -> list:
    """What the backdrops depend on besides this module's code: part of a set's cache key."""
    return [solid_hues(), version("scikit-image")]


@functools.cache
def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        grey = image.astype(np.float32)[:, :, None]
        image = np.clip(grey * np.array(TINTS[name], np.float32), 0, 255).astype(np.uint8)
    return image


def solid_hues() -> tuple[float, float]:
    """The middle half of the held-out band: training's hue and white-balance jitter can
    nudge a generated colour a little way into the band, but not this far."""
    lo, hi = HELD_OUT_HUES
    quarter = (hi - lo) / 4
    return lo + quarter, hi - quarter


def solid(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A uniform colour with a held-out hue."""
    hue = rng.uniform(*solid_hues())
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*SATURATION), rng.uniform(*VALUE))
    return np.full((*shape, 3), np.rint(np.array(rgb) * 255), dtype=np.uint8)


def crop(rng: np.random.Generator, shape: tuple[int, int],
         name: str) -> np.ndarray:
    """A random crop of the photo ``name``, at a random scale, resized to ``shape``."""
    image = photo(name)
    h, w = image.shape[:2]
    side = rng.uniform(*CROP_SIDE) * min(h, w)
    ch, cw = (int(side), int(side * shape[1] / shape[0]))
    ch, cw = min(ch, h), min(cw, w)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    piece = image[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        piece = piece[:, ::-1]
    return cv2.resize(np.ascontiguousarray(piece), (shape[1], shape[0]),
                      interpolation=cv2.INTER_AREA)


def draw(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[str, np.ndarray]:
    """One HxWx3 uint8 backdrop of ``shape`` (height, width), and its kind: ``solid`` or
    the photo's name."""
    if rng.random() < SOLID_SHARE:
        return "solid", solid(rng, shape)
    name = str(rng.choice(PHOTOS))
    return name, crop(rng, shape, name)

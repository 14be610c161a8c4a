"""Image decoding and the product's single crop policy.

Training data, evaluation and live prediction all go through these functions, so a photo
looks the same to the model wherever it comes from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rps.data.crop import centre_square

if TYPE_CHECKING:  # TensorFlow loads where an image is resized, so config checks run first
    import keras
    import tensorflow as tf

# 16-bit greyscale modes; "I" is how Pillow opens 16-bit PNGs.
_WIDE_GREY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}

# What Pillow raises for a file it cannot decode: unknown format, truncation, a broken
# chunk (SyntaxError), an unsupported mode (ValueError) or a decompression bomb.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class BadImage(Exception):
    """A file that is not a readable image; data loading collects these to report them all."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow image as uint8 RGB, transparency composited on white.

    White, because the training photos are hands on a white background: a cut-out hand
    with a transparent background should look like one, not like a hand on black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_GREY:
        grey = np.asarray(img, dtype=np.float64).clip(0, 65535) / 257.0
        grey = np.rint(grey).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema() != (255, 255):
            return _on_white(np.asarray(rgba))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend onto white in integers: (c*a + 255*(255-a)) / 255, rounded."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def read_rgb(path: str | Path | IO[bytes]) -> np.ndarray:
    """Decode a whole file (or its bytes) now, so a truncated or corrupt one fails here,
    named."""
    name = path if isinstance(path, str | Path) else "image bytes"
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise BadImage(name, "not an image Pillow can read") from None
    except _DECODE_ERRORS as err:
        raise BadImage(name, str(err) or type(err).__name__) from None


def square_resizer(size: int) -> keras.layers.Resizing:
    """The crop policy (:mod:`rps.data.crop`) as the model's first layer: Keras crops the same
    centred square, then resizes."""
    import keras

    return keras.layers.Resizing(size, size, crop_to_aspect_ratio=True, interpolation="bilinear")


@functools.cache
def _resizer(size: int) -> Callable[[np.ndarray], tf.Tensor]:
    """One layer per size, traced once for any HxWx3: an eager Keras call per image costs
    more Python than decoding a small image does, and the traced graph a fraction of it."""
    import tensorflow as tf

    resize = tf.function(
        square_resizer(size), input_signature=[tf.TensorSpec([None, None, 3], tf.float32)]
    )
    resize.get_concrete_function()  # trace now, not in several loader threads at once
    return resize


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Apply the crop policy to one HxWx3 uint8 image, back to uint8."""
    top, left, side = centre_square(*image.shape[:2])
    square = image[top : top + side, left : left + side]
    out = _resizer(size)(square.astype(np.float32)).numpy()
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

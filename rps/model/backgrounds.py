"""The backgrounds ``aug.background`` pastes a hand onto: generated patterns, and crops of
photos (bundled, or the user's ``aug.background_dir``), sometimes recoloured."""

from __future__ import annotations

import functools
import math
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from rps.data.images import BadImage, read_rgb
from rps.errors import ConfigError

WHITE = 255.0  # the renders' background, and the top of the 0..255 pixel range
PATTERNS = 6  # solid, gradient, fractal noise, patches, stripes, checks
NOISE_GRIDS = (3, 6, 12, 24, 48)  # value-noise octaves, cells per side
PATTERN_SIZE = 112  # the side patterns are drawn at, before they are resized to the image
# Photographs that ship inside rps's own dependencies, free to use: (package, file). No
# generator draws a face, a building or a plant, and a webcam sees all three behind a hand.
PHOTOS = (
    ("sklearn.datasets.images", "china.jpg"),  # CC BY 2.0, danielbuechele on Flickr
    ("sklearn.datasets.images", "flower.jpg"),  # CC BY 2.0, vultilion on Flickr
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # public domain (US Navy)
)
PHOTO_CROP = (0.25, 1.0)  # a crop's side, as a share of its photo's shorter side
# A user's photo is shrunk to at most this side first: a crop is resized to the input size
# anyway, and every photo lives on one canvas in memory.
USER_PHOTO_SIDE = 640


def random_colours(uniform, batch: tf.Tensor) -> tf.Tensor:
    """Random RGB colours (B, 1, 1, 3) in 0..255, of any hue."""
    hue = uniform([batch])
    saturation = tf.sqrt(uniform([batch]))  # favour coloured over grey
    value = uniform([batch], 0.15, 1.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], axis=-1))
    return WHITE * rgb[:, None, None, :]


def _fractal_noise(uniform, batch: tf.Tensor) -> tf.Tensor:
    """Two independent fields of value noise, summed over octaves, each octave fainter by a
    random persistence: (B, P, P, 2), each field stretched to 0..1."""
    persistence = uniform([batch, 1, 1, 2], 0.35, 0.75)
    total = 0.0
    for octave, cells in enumerate(NOISE_GRIDS):
        grid = uniform([batch, cells, cells, 2])
        total += persistence**octave * tf.image.resize(grid, [PATTERN_SIZE] * 2, "bicubic")
    low = tf.reduce_min(total, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(total, axis=[1, 2], keepdims=True)
    return (total - low) / tf.maximum(high - low, 1e-6)


def _sharpen(wave: tf.Tensor, uniform, batch: tf.Tensor) -> tf.Tensor:
    """A -1..1 wave as a 0..1 pattern, from soft (a sinusoid) to hard-edged (a square wave)."""
    hardness = uniform([batch, 1, 1, 1], 0.5, 20.0)
    return 0.5 + 0.5 * tf.tanh(hardness * wave) / tf.tanh(hardness)


def backgrounds(uniform, shape: tf.Tensor) -> tf.Tensor:
    """One generated background per image, (B, H, W, 3) in 0..255.

    Each is a pattern (solid, linear gradient, fractal noise, noise patches, stripes or
    checks, at a random angle and scale) blending two random colours, times a random film of
    fine noise, as on a wall or a desk. ``uniform(shape, low, high)`` draws the randomness.
    Patterns are drawn at ``PATTERN_SIZE`` and resized, a quarter of the work at 224.
    """
    batch = shape[0]
    y = tf.linspace(-1.0, 1.0, PATTERN_SIZE)[None, :, None, None]
    x = tf.linspace(-1.0, 1.0, PATTERN_SIZE)[None, None, :, None]
    angle = uniform([batch, 1, 1, 1], 0.0, 2 * math.pi)
    along = tf.cos(angle) * x + tf.sin(angle) * y
    across = tf.cos(angle) * y - tf.sin(angle) * x
    frequency = uniform([batch, 1, 1, 1], 1.0, 8.0)
    phase = uniform([batch, 1, 1, 1], 0.0, 2 * math.pi)
    noise, film = tf.split(_fractal_noise(uniform, batch), 2, axis=-1)
    stripes = tf.sin(math.pi * frequency * along + phase)
    patterns = [
        tf.zeros_like(along + across),
        0.5 + along / (2 * math.sqrt(2.0)),
        noise,
        _sharpen(noise - 0.5, uniform, batch),
        _sharpen(stripes, uniform, batch),
        _sharpen(stripes * tf.sin(math.pi * frequency * across + phase), uniform, batch),
    ]
    kind = tf.one_hot(tf.cast(uniform([batch], 0.0, PATTERNS), tf.int32), PATTERNS)
    pattern = tf.reduce_sum(
        tf.concat(patterns, axis=-1) * kind[:, None, None, :], axis=-1, keepdims=True
    )
    grain = uniform([batch, 1, 1, 1], 0.0, 0.3) * (2.0 * film - 1.0)
    pattern, grain = tf.split(
        tf.image.resize(tf.concat([pattern, grain], axis=-1), shape[1:3], "bilinear"), 2, axis=-1
    )
    return tf.clip_by_value(two_colours(uniform, pattern) * (1.0 + grain), 0.0, WHITE)


def two_colours(uniform, pattern: tf.Tensor) -> tf.Tensor:
    """A 0..1 pattern (B, H, W, 1) drawn as a blend of two random colours per image."""
    batch = tf.shape(pattern)[0]
    first, second = random_colours(uniform, batch), random_colours(uniform, batch)
    return first + (second - first) * pattern


def recoloured(uniform, images: tf.Tensor) -> tf.Tensor:
    """Each image's light and shade, stretched to 0..1, in two random colours: a photo's
    shapes and textures (bricks, fur, wood) in colours it never had, skin's among them."""
    luma = tf.image.rgb_to_grayscale(images)
    low = tf.reduce_min(luma, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(luma, axis=[1, 2, 3], keepdims=True)
    return two_colours(uniform, (luma - low) / tf.maximum(high - low, 1.0))


def photos(folder: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled photos, then those in ``folder``, on one uint8 canvas (N, H, W, 3), each
    at its top left, and each one's (height, width). Loaded once per state of the folder: an
    edited or added photo is read again."""
    stamp = None
    if folder is not None and Path(folder).expanduser().is_dir():
        stamp = tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(Path(folder).expanduser().iterdir())
        )
    return _canvas(folder, stamp)


@functools.cache
def _canvas(folder: str | None, stamp: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled photos, then the user's."""
    images = [
        cv2.cvtColor(_bundled(str(files(package) / name)), cv2.COLOR_BGR2RGB)
        for package, name in PHOTOS
    ]
    if folder is not None:
        images += user_photos(Path(folder).expanduser())
    sizes = np.array([image.shape[:2] for image in images])
    canvas = np.zeros((len(images), *sizes.max(axis=0), 3), np.uint8)
    for canvas_image, image in zip(canvas, images, strict=True):
        canvas_image[: image.shape[0], : image.shape[1]] = image
    return canvas, sizes


def _bundled(path: str) -> np.ndarray:
    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(
            f"{path}, a photo that installs with rps, cannot be read: reinstall rps"
        )
    return image


def user_photos(folder: Path) -> list[np.ndarray]:
    """Every file in ``folder`` (dotfiles aside) as RGB, shrunk to ``USER_PHOTO_SIDE``."""
    if not folder.is_dir():
        raise ConfigError(
            f"aug.background_dir={str(folder)!r} is not a folder: point it at a "
            "folder of photos of the places the camera will see, or drop it."
        )
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images, bad = [], []
    for path in paths:
        try:
            image = read_rgb(path)
        except BadImage as err:
            bad.append(f"{path.name} ({err.reason})")
            continue
        scale = USER_PHOTO_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        images.append(image)
    if bad:
        raise ConfigError(
            f"aug.background_dir={str(folder)!r} has {len(bad)} file(s) that are "
            f"not readable images: {'; '.join(bad[:5])}"
            f"{'; ...' if len(bad) > 5 else ''}. Delete or replace them."
        )
    if not images:
        raise ConfigError(
            f"aug.background_dir={str(folder)!r} has no images: add photos of "
            "the places the camera will see (any format Pillow reads)."
        )
    return images


def photo_crops(uniform, shape: tf.Tensor, folder: str | None = None) -> tf.Tensor:
    """A random square crop of a random photo (bundled, or from ``folder``) per image, at a
    random scale and mirrored half the time: (B, H, W, 3) in 0..255."""
    canvas, sizes = photos(folder)
    batch = shape[0]
    index = tf.minimum(tf.cast(uniform([batch], 0.0, len(sizes)), tf.int32), len(sizes) - 1)
    height, width = tf.unstack(tf.gather(tf.constant(sizes, tf.float32), index), axis=1)
    side = uniform([batch], *PHOTO_CROP) * tf.minimum(height, width)
    top, left = uniform([batch]) * (height - side), uniform([batch]) * (width - side)
    right = left + side
    mirrored = uniform([batch]) < 0.5  # crop_and_resize flips a box whose x2 < x1
    left, right = tf.where(mirrored, right, left), tf.where(mirrored, left, right)
    canvas_h, canvas_w = canvas.shape[1:3]
    boxes = tf.stack(
        [top / canvas_h, left / canvas_w, (top + side) / canvas_h, right / canvas_w], axis=1
    )
    return tf.image.crop_and_resize(tf.constant(canvas), boxes, index, shape[1:3])

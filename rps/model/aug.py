"""Training-time augmentation as Keras layers, so it lives in the model and is off at inference.

The training hands are CGI renders on a white background, and a webcam sees desks, walls and
faces. ``aug.background`` is domain randomization for that gap: each hand is cut out by its
white background and pasted onto a generated one, so "white around the hand" stops being a
feature the classifier can lean on.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from rps.config.model import AugConfig, ImageAugConfig, LandmarkAugConfig
from rps.model import backgrounds
from rps.model.backgrounds import WHITE

LAYER_NAME = "augment"
POLICY_VERSION = 3  # bump when a policy's draws change meaning: it is part of the feature cache key
# The renders' background is white with soft grey shading. A pixel is background when its
# darkest channel is bright AND it is grey: pale skin is as bright, but never that grey. Each
# pair is a smoothstep ramp: below the first value the test fails, above the second it holds.
WHITENESS = (0.70, 0.85)  # darkest channel / 255
SATURATION = (0.02, 0.06)  # (max - min) / max; background below the ramp
# How a hand darkens as skin gets darker, per RGB channel: blue most, red least.
SKIN_DARKENING = (0.6, 0.7, 0.75)


def on_images(cfg: AugConfig) -> ImageAugConfig | None:
    """The option's image transforms, if it has any: the one place an aug option's kind
    decides whether images are augmented."""
    return cfg if isinstance(cfg, ImageAugConfig) and cfg.on_images else None


def on_landmarks(cfg: AugConfig) -> LandmarkAugConfig | None:
    """The option's landmark moves, if it has any (``backbone=hand_landmarks``)."""
    return cfg if isinstance(cfg, LandmarkAugConfig) and cfg.on_landmarks else None


def build(cfg: ImageAugConfig, seed: int) -> keras.Sequential:
    """Random transforms on 0..255 RGB, none when every transform is off (which
    ``cfg.on_images`` tells without building them)."""
    hand = cfg.background > 0 or cfg.skin_tone > 0
    # With a hand mask, what geometry uncovers must be white, so the mask calls it background.
    fill = {"fill_mode": "constant", "fill_value": WHITE} if hand else {}
    transforms = []
    if cfg.flip:
        transforms.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        transforms.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 1, **fill))
    if cfg.zoom_in or cfg.zoom_out:
        transforms.append(
            keras.layers.RandomZoom((-cfg.zoom_in, cfg.zoom_out), seed=seed + 2, **fill)
        )
    if cfg.translation:
        transforms.append(
            keras.layers.RandomTranslation(cfg.translation, cfg.translation, seed=seed + 3, **fill)
        )
    if hand:
        if cfg.background_dir is not None:
            backgrounds.photos(cfg.background_dir)  # a bad folder fails now, not in the first batch
        transforms.append(
            HandComposite(
                cfg.background,
                cfg.skin_tone,
                cfg.background_photos,
                cfg.background_recolour,
                cfg.background_dir,
                seed=seed + 8,
            )
        )
    if cfg.brightness:
        transforms.append(keras.layers.RandomBrightness(cfg.brightness, seed=seed + 4))
    if cfg.contrast:
        transforms.append(
            keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5)
        )
    if cfg.saturation:
        # Keras reads 0.5 as "unchanged", so jitter symmetrically around it.
        band = (0.5 - cfg.saturation / 2, 0.5 + cfg.saturation / 2)
        transforms.append(keras.layers.RandomSaturation(band, seed=seed + 6))
    if cfg.hue:
        transforms.append(keras.layers.RandomHue(cfg.hue, value_range=(0, 255), seed=seed + 7))
    if cfg.white_balance:
        transforms.append(WhiteBalance(cfg.white_balance, seed=seed + 9))
    if cfg.blur:
        transforms.append(RandomBlur(cfg.blur, seed=seed + 10))
    return keras.Sequential(transforms, name=LAYER_NAME)


def _smoothstep(edges: tuple[float, float], x: tf.Tensor) -> tf.Tensor:
    t = tf.clip_by_value((x - edges[0]) / (edges[1] - edges[0]), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def hand_mask(images: tf.Tensor) -> tf.Tensor:
    """1 on the hand, 0 on the white background, soft at the edge: (B, H, W, 1) in 0..1.

    Per pixel from colour alone. Then a 3x3 erosion drops specks of shading and pulls the
    edge in by a pixel, off the hand's anti-aliased rim, which would paste a white halo; a
    5x5 closing fills highlights on pale skin; a 3x3 mean feathers the edge.
    """
    brightest = tf.reduce_max(images, axis=-1, keepdims=True)
    darkest = tf.reduce_min(images, axis=-1, keepdims=True)
    saturation = (brightest - darkest) / tf.maximum(brightest, 1.0)
    background = _smoothstep(WHITENESS, darkest / WHITE) * (
        1.0 - _smoothstep(SATURATION, saturation)
    )
    hand = -_dilate(-(1.0 - background), 3)
    hand = -_dilate(-_dilate(hand, 5), 5)
    return tf.nn.avg_pool2d(hand, 3, 1, "SAME")


def _dilate(mask: tf.Tensor, size: int) -> tf.Tensor:
    """A size x size max filter, as two 1-D passes: a 5x5 costs 10 comparisons, not 25."""
    return tf.nn.max_pool2d(tf.nn.max_pool2d(mask, [size, 1], 1, "SAME"), [1, size], 1, "SAME")


class _Random(keras.layers.Layer):
    """A training-only layer with a seeded stream of draws, like Keras' own random layers."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def uniform(self, shape, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="rps")
class HandComposite(_Random):
    """Jitters each hand's skin tone and pastes it onto a new background.

    ``probability`` is the share of images that get a new background (the rest keep the
    white), ``photo_share`` the share of new backgrounds cut from a photo (bundled, or in
    ``photo_dir``; the rest are generated), ``recolour`` the share of those photo crops redrawn by
    :func:`recoloured`; ``skin_tone`` darkens or lightens each hand by up to that fraction,
    warmer as it darkens, as real skin does. All act through :func:`hand_mask`.
    """

    def __init__(
        self,
        probability: float,
        skin_tone: float,
        photo_share: float = 0.0,
        recolour: float = 0.0,
        photo_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.probability = probability
        self.skin_tone = skin_tone
        self.photo_share = photo_share
        self.recolour = recolour
        self.photo_dir = photo_dir  # read when training calls the layer, never on reload

    def call(self, images, training=True):
        if not training:
            return images
        shape = tf.shape(images)
        mask = hand_mask(images)
        shade = self.uniform([shape[0], 1, 1, 1], -self.skin_tone, self.skin_tone)
        hand = tf.clip_by_value(images * (1.0 - shade * tf.constant(SKIN_DARKENING)), 0.0, WHITE)
        replace = self.uniform([shape[0], 1, 1, 1]) < self.probability
        new = backgrounds.backgrounds(self.uniform, shape)
        if self.photo_share > 0:
            photo = self.uniform([shape[0], 1, 1, 1]) < self.photo_share
            crops = backgrounds.photo_crops(self.uniform, shape, self.photo_dir)
            if self.recolour > 0:
                recolour = self.uniform([shape[0], 1, 1, 1]) < self.recolour
                crops = tf.where(recolour, backgrounds.recoloured(self.uniform, crops), crops)
            new = tf.where(photo, crops, new)
        behind = tf.where(replace, new, images)
        return mask * hand + (1.0 - mask) * behind

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "probability": self.probability,
            "skin_tone": self.skin_tone,
            "photo_share": self.photo_share,
            "recolour": self.recolour,
            "photo_dir": self.photo_dir,
        }


@keras.saving.register_keras_serializable(package="rps")
class WhiteBalance(_Random):
    """Multiplies each colour channel by its own gain in [1 - gain, 1 + gain], per image, as
    cameras disagree about the colour of the light."""

    def __init__(self, gain: float, **kwargs):
        super().__init__(**kwargs)
        self.gain = gain

    def call(self, images, training=True):
        if not training:
            return images
        gains = self.uniform([tf.shape(images)[0], 1, 1, 3], 1.0 - self.gain, 1.0 + self.gain)
        return tf.clip_by_value(images * gains, 0.0, WHITE)

    def get_config(self) -> dict:
        return {**super().get_config(), "gain": self.gain}


@keras.saving.register_keras_serializable(package="rps")
class RandomBlur(_Random):
    """Gaussian blur with a sigma drawn per image in [0, sigma] pixels: defocus and cheap
    webcam optics. (Keras' RandomGaussianBlur draws one sigma per batch, at most 1.)

    The batch is folded into channels so one depthwise convolution per axis blurs every image
    with its own kernel.
    """

    def __init__(self, sigma: float, **kwargs):
        super().__init__(**kwargs)
        self.sigma = sigma

    def call(self, images, training=True):
        if not training:
            return images
        shape = tf.shape(images)
        radius = math.ceil(2 * self.sigma)
        sigmas = self.uniform([shape[0], 1], 1e-3, self.sigma)
        taps = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
        weights = tf.exp(-0.5 * (taps / sigmas) ** 2)
        weights /= tf.reduce_sum(weights, axis=1, keepdims=True)  # (B, K)
        kernel = tf.reshape(tf.transpose(tf.repeat(weights, 3, axis=0)), [-1, 1])  # (K, B*3)
        kernel = tf.reshape(kernel, [2 * radius + 1, 1, -1, 1])
        folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
        padded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
        blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
        blurred = tf.nn.depthwise_conv2d(
            blurred, tf.transpose(kernel, [1, 0, 2, 3]), [1, 1, 1, 1], "VALID"
        )
        unfolded = tf.reshape(blurred, [shape[1], shape[2], shape[0], 3])
        return tf.transpose(unfolded, [2, 0, 1, 3])

    def get_config(self) -> dict:
        return {**super().get_config(), "sigma": self.sigma}

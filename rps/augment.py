"""Training-time augmentation as Keras layers, so it lives in the model and is off at inference."""

from __future__ import annotations

import keras

from rps.config import AugConfig

LAYER_NAME = "augment"


def build(cfg: AugConfig, seed: int) -> keras.Sequential | None:
    """Random transforms on 0..255 RGB; None when every transform is off."""
    transforms = []
    if cfg.flip:
        transforms.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        transforms.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 1))
    if cfg.zoom:
        transforms.append(keras.layers.RandomZoom(cfg.zoom, seed=seed + 2))
    if cfg.translation:
        transforms.append(
            keras.layers.RandomTranslation(cfg.translation, cfg.translation, seed=seed + 3))
    if cfg.brightness:
        transforms.append(keras.layers.RandomBrightness(cfg.brightness, seed=seed + 4))
    if cfg.contrast:
        transforms.append(
            keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5))
    if cfg.saturation:
        # Keras reads 0.5 as "unchanged", so jitter symmetrically around it.
        band = (0.5 - cfg.saturation / 2, 0.5 + cfg.saturation / 2)
        transforms.append(keras.layers.RandomSaturation(band, seed=seed + 6))
    if cfg.hue:
        transforms.append(keras.layers.RandomHue(cfg.hue, value_range=(0, 255), seed=seed + 7))
    if not transforms:
        return None
    return keras.Sequential(transforms, name=LAYER_NAME)

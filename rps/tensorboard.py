"""TensorBoard logs of a job: epoch scalars, the graph, and what augmentation feeds the model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rps import augment
from rps.config import AugConfig

IMAGES_SHOWN = 8


def callback(log_dir: Path) -> keras.callbacks.TensorBoard:
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=True,
                                       update_freq="epoch")


class AugmentedImages(keras.callbacks.Callback):
    """Writes a few training images through the augmentation policy, once, so a user can
    check what it really does (the same policy whether stage 1 trains on images or on
    cached features)."""

    def __init__(self, images: np.ndarray, aug: AugConfig, log_dir: Path, seed: int) -> None:
        super().__init__()
        pick = np.random.default_rng(seed).permutation(len(images))[:IMAGES_SHOWN]
        self.images = images[pick].astype("float32")
        self.augmentation = augment.build(aug, seed)
        self.log_dir = log_dir
        self.written = False

    def on_train_begin(self, logs=None):
        if self.written:
            return
        augmented = (self.images if self.augmentation is None
                     else self.augmentation(self.images, training=True))
        pixels = np.clip(keras.ops.convert_to_numpy(augmented), 0, 255).astype(np.uint8)
        with tf.summary.create_file_writer(str(self.log_dir / "images")).as_default():
            tf.summary.image("augmented_training_images", pixels, step=0,
                             max_outputs=IMAGES_SHOWN)
        self.written = True

"""TensorBoard logs of a job: epoch scalars, the graph, and what augmentation feeds the model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rps.data.splits import Split

IMAGES_SHOWN = 8


def callback(log_dir: Path) -> keras.callbacks.TensorBoard:
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=True, update_freq="epoch")


class AugmentedImages(keras.callbacks.Callback):
    """Writes a few training images through the model's augment stage, once, so a user can
    check what it really does (the same policy whether stage 1 trains on images or on
    cached features). It draws through a copy of that stage: its draws start where the
    model's own do, and the model's are left as they would be without it."""

    def __init__(
        self, train: Split, augmentation: keras.Sequential | None, log_dir: Path, seed: int
    ) -> None:
        super().__init__()
        pick = np.random.default_rng(seed).permutation(len(train))[:IMAGES_SHOWN]
        self.images = train.take(pick).astype("float32")
        self.augmentation = (
            None
            if augmentation is None
            else keras.Sequential.from_config(augmentation.get_config())
        )
        self.log_dir = log_dir
        self.written = False

    def on_train_begin(self, logs=None):
        if self.written:
            return
        augmented = (
            self.images
            if self.augmentation is None
            else self.augmentation(self.images, training=True)
        )
        pixels = np.clip(keras.ops.convert_to_numpy(augmented), 0, 255).astype(np.uint8)
        with tf.summary.create_file_writer(str(self.log_dir / "images")).as_default():
            tf.summary.image("augmented_training_images", pixels, step=0, max_outputs=IMAGES_SHOWN)
        self.written = True

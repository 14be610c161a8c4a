"""The one data path: raw RGB -> crop -> augment -> preprocess -> backbone -> head -> logits.

Everything sits in one functional Keras model, so a saved ``model.keras`` classifies raw
frames the same way in training, live inference and serving.
"""

from __future__ import annotations

from pathlib import Path

import keras

from rps import augment, backbones, heads
from rps.config import Config
from rps.images import square_resizer

BACKBONE = "backbone"
HEAD = "head"
LABELS = "class_names"


@keras.saving.register_keras_serializable(package="rps")
class ClassNames(keras.layers.Layer):
    """Identity on the logits that carries the class names inside the saved model."""

    def __init__(self, names: list[str], **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)

    def call(self, logits):
        return logits

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "names": self.names}


def build(cfg: Config, class_names: list[str]) -> keras.Model:
    size = cfg.backbone.input_size
    images = keras.Input((None, None, 3), name="image")
    x = square_resizer(size)(images)
    augmentation = augment.build(cfg.aug, cfg.trainer.seed)
    if augmentation is not None:
        x = augmentation(x)
    x = backbones.BackbonePreprocess(cfg.backbone.name.value, name="preprocess")(x)
    backbone = backbones.build(cfg.backbone)
    backbone.name = BACKBONE
    # training=False keeps BatchNorm in inference mode even when fine-tuning unfreezes it.
    x = backbone(x, training=False)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = heads.build(cfg.head, features.shape[-1], len(class_names))
    logits = ClassNames(class_names, name=LABELS)(head(features))
    return keras.Model(images, logits, name=f"rps_{cfg.backbone.name.value}")


def class_names(model: keras.Model) -> list[str]:
    return list(model.get_layer(LABELS).names)


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE)


def load(path: str | Path) -> keras.Model:
    """Load a saved classifier; ``compile=False`` because inference needs no optimizer."""
    return keras.models.load_model(str(path), compile=False)

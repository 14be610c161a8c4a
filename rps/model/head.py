"""Classification heads: pooled features in, logits out."""

from __future__ import annotations

import keras

from rps.config.model import DenseHeadConfig, HeadConfig


def build(cfg: HeadConfig, num_features: int, num_classes: int) -> keras.Model:
    """A dense head's ``depth`` hidden ReLU layers, each Dense preceded by Dropout, then a
    logits layer (the one layer of a linear head).

    A model of its own, so it can be trained alone on cached features and then reused
    inside the full image model.
    """
    features = keras.Input((num_features,), name="features")
    x = features
    if isinstance(cfg, DenseHeadConfig):
        for index in range(cfg.depth):
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{index}")(x)
            x = keras.layers.Dense(cfg.units, activation="relu", name=f"dense_{index}")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout_logits")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(features, logits, name="head")

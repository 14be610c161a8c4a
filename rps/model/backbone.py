"""Pretrained feature extractors and the preprocessing each one was trained with."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from rps.config.model import BackboneConfig, BackboneName
from rps.errors import WeightsError, first_line
from rps.model import efficientnet_lite

log = logging.getLogger(__name__)

# Constructors take keras.applications' signature: (include_top, weights, input_shape).
CONSTRUCTORS: dict[BackboneName, Callable[..., keras.Model]] = {
    BackboneName.resnet50: keras.applications.ResNet50,
    BackboneName.mobilenet_v2: keras.applications.MobileNetV2,
    BackboneName.efficientnet_b0: keras.applications.EfficientNetB0,
    BackboneName.efficientnet_lite0: efficientnet_lite.EfficientNetLite0,
}

# ImageNet channel means, in the BGR order ResNet's "caffe" preprocessing expects.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocessing(name: BackboneName) -> keras.layers.Layer:
    """The backbone's own input scaling as a built-in Keras layer, for raw 0..255 RGB.

    Built-in layers only, so a saved model reloads with plain Keras (and MLflow serving)
    without importing rps. Each matches its ``preprocess_input`` exactly (a test checks).
    """
    if name is BackboneName.resnet50:
        # RGB -> BGR and mean subtraction, as a fixed 1x1 convolution.
        layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        layer.build((None, None, None, 3))
        swap = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)
        layer.set_weights([swap, -np.array(CAFFE_MEAN_BGR, dtype="float32")])
        return layer
    if name is BackboneName.mobilenet_v2:
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")
    if name is BackboneName.efficientnet_lite0:
        return keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="preprocess")
    # Keras' EfficientNet normalises inside the backbone: its preprocess_input is identity.
    return keras.layers.Identity(name="preprocess")


def _offline_hint(name: str) -> str:
    return (
        f"Could not download the ImageNet weights of {name}: this machine may be offline. "
        "Run once with internet (Keras caches them in ~/.keras/models), or pass a local file "
        "with backbone.weights=/path/to/file.weights.h5, or train from scratch with "
        "backbone.weights=null."
    )


def build(cfg: BackboneConfig) -> keras.Model:
    """Build the headless backbone with ``cfg.weights`` loaded, failing with a fix to try."""
    ctor = CONSTRUCTORS[cfg.name]
    shape = (cfg.input_size, cfg.input_size, 3)
    weights = cfg.weights
    if weights is None or weights == "imagenet":
        try:
            return ctor(include_top=False, weights=weights, input_shape=shape)
        except WeightsError:
            raise
        except Exception as err:  # keras.utils.get_file raises a bare Exception
            if "fetch failure" in str(err) or isinstance(err, OSError):
                raise WeightsError(f"{_offline_hint(cfg.name.value)} ({err})") from None
            raise
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"backbone.weights={weights!r} is neither 'imagenet', null, nor an existing file. "
            "Give the path of a Keras .weights.h5 or .h5 file saved from "
            f"{cfg.name.value} without its top."
        )
    model = ctor(include_top=False, weights=None, input_shape=shape)
    try:
        with warnings.catch_warnings():
            # Keras only warns when parts of a file match nothing: that is a misfit too.
            warnings.simplefilter("error")
            model.load_weights(str(path))
    except Exception as err:
        raise WeightsError(
            f"backbone.weights={str(path)!r} does not fit backbone={cfg.name.value} "
            f"({type(err).__name__}: {first_line(err)}). Use a weights file saved from the "
            "same architecture without its classification top (include_top=False), or pick "
            "the backbone the file belongs to."
        ) from None
    log.info("loaded %s weights from %s", cfg.name.value, path)
    return model


def freeze(backbone: keras.Model) -> None:
    backbone.trainable = False


def unfreeze_top(backbone: keras.Model, layers: int | None) -> int:
    """Unfreeze the top ``layers`` layers (all if None) for fine-tuning.

    BatchNormalization stays frozen: its statistics came from ImageNet and small batches
    would wreck them. Returns how many weight-carrying layers became trainable.
    """
    backbone.trainable = True
    cut = 0 if layers is None else max(len(backbone.layers) - layers, 0)
    count = 0
    for index, layer in enumerate(backbone.layers):
        trainable = index >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += int(trainable and bool(layer.weights))
    return count

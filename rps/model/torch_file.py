"""A legacy-format torch state dict, read with a restricted unpickler and numpy: neither
torch nor code execution from a weights file is ever needed."""

from __future__ import annotations

import collections
import pickle
from typing import NamedTuple

import numpy as np

from rps.errors import WeightsError

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


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


def load_legacy(path) -> dict[str, np.ndarray]:
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

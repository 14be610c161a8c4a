"""The EfficientNet-Lite0 port: right answers on real photos, a reader that runs no code, and
a weights cache that is built once."""

import collections
import math
import os
import pickle

import numpy as np
import pytest
from skimage import data, transform

from rps.model import efficientnet_lite, torch_file

TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
COFFEE_MUG, ESPRESSO = 504, 967


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rps_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RPS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def top_model(cache_dir):
    return efficientnet_lite.EfficientNetLite0(include_top=True, weights="imagenet")


def center_square_224(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    return transform.resize(square, (224, 224), anti_aliasing=True, preserve_range=True).astype(
        "float32"
    )


@pytest.mark.parametrize(
    "image, expected",
    [
        (data.chelsea, {TABBY, TIGER_CAT, EGYPTIAN_CAT}),
        (data.coffee, {COFFEE_MUG, ESPRESSO}),
    ],
)
def test_imagenet_top1(top_model, image, expected):
    x = efficientnet_lite.preprocess_input(center_square_224(image())[None])
    logits = np.asarray(top_model(x, training=False))[0]
    top5 = np.argsort(-logits)[:5]
    print(image.__name__, "top-5:", top5.tolist())
    assert top5[0] in expected


def test_padding_matches_torch_same_padding(top_model):
    """The torch port pads stride-2 convs by (0, 1) like TF "SAME"; symmetric padding would
    still classify easy images but shifts logits by more than 1."""
    state = torch_file.load_legacy(efficientnet_lite._torch_weights_path())
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    x = np.asarray(efficientnet_lite.preprocess_input(image))[0]

    kernel = state["_conv_stem.weight"]
    padded = np.pad(x, ((0, 1), (0, 1), (0, 0)))
    expected = np.zeros((16, 16, 32))
    for i in range(3):
        for j in range(3):
            expected += padded[i : i + 32 : 2, j : j + 32 : 2] @ kernel[:, :, i, j].T

    stem = top_model.get_layer("stem_conv")
    got = np.asarray(stem(x[None]))[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


class _Global:
    """A torch name written as a pickle GLOBAL; callable only because pickle's REDUCE checks."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise NotImplementedError


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _LegacyWriter(pickle._Pickler):
    """Writes what ``torch.save(..., _use_new_zipfile_serialization=False)`` would, torch-free."""

    TYPES = {"float32": _Global("torch", "FloatStorage"), "int64": _Global("torch", "LongStorage")}
    REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return (
                "storage",
                self.TYPES[obj.array.dtype.name],
                obj.key,
                "cpu",
                obj.array.size,
                None,
            )
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Global):
            return obj.name
        if isinstance(obj, _Tensor):
            return self.REBUILD, (
                obj.storage,
                obj.offset,
                obj.size,
                obj.stride,
                False,
                collections.OrderedDict(),
            )
        return NotImplemented

    def save_global(self, obj, name=None):
        if not isinstance(obj, _Global):
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())


def write_legacy(path, state, storages):
    with open(path, "wb") as f:
        for part in (
            torch_file._TORCH_MAGIC,
            torch_file._TORCH_PROTOCOL,
            {"little_endian": True},
            state,
            [s.key for s in storages],
        ):
            _LegacyWriter(f, protocol=2).dump(part)
        for storage in storages:
            f.write(np.int64(storage.array.size).tobytes() + storage.array.tobytes())


def test_reader_applies_offset_and_stride(tmp_path):
    floats = _Storage("0", np.arange(12, dtype="<f4"))
    longs = _Storage("1", np.array([7], dtype="<i8"))
    state = collections.OrderedDict(
        rows=_Tensor(floats, 2, (2, 3), (3, 1)),
        transposed=_Tensor(floats, 0, (4, 3), (1, 4)),
        scalar=_Tensor(floats, 5, (), ()),
        count=_Tensor(longs, 0, (), ()),
    )
    write_legacy(tmp_path / "ok.pth", state, [floats, longs])

    got = torch_file.load_legacy(tmp_path / "ok.pth")
    np.testing.assert_array_equal(got["rows"], [[2, 3, 4], [5, 6, 7]])
    np.testing.assert_array_equal(got["transposed"], np.arange(12).reshape(3, 4).T)
    assert got["scalar"].shape == () and got["scalar"] == 5
    assert got["count"].dtype == np.int64 and got["count"] == 7

    overrun = collections.OrderedDict(bad=_Tensor(floats, 4, (3, 3), (3, 1)))
    write_legacy(tmp_path / "bad.pth", overrun, [floats])
    with pytest.raises(efficientnet_lite.WeightsError, match="past its storage"):
        torch_file.load_legacy(tmp_path / "bad.pth")


@pytest.mark.parametrize(
    "payload", [(os.system, "touch {marker}"), (exec, "open(r'{marker}', 'w').close()")]
)
def test_reader_refuses_code_in_pickle(tmp_path, payload):
    func, template = payload
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return func, (template.format(marker=marker),)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for part in (
            torch_file._TORCH_MAGIC,
            torch_file._TORCH_PROTOCOL,
            {"little_endian": True},
            {"_conv_stem.weight": Evil()},
            [],
        ):
            pickle.dump(part, f, protocol=2)

    with pytest.raises(efficientnet_lite.WeightsError, match="not allowed"):
        torch_file.load_legacy(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "target", [b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n"]
)
def test_reader_stand_ins_cannot_be_altered(tmp_path, target):
    """A BUILD opcode on a shared stand-in (here: set its dtype to None) must fail, or one file
    could corrupt how the next one is read."""
    header = b"".join(
        pickle.dumps(part, protocol=2)
        for part in (
            torch_file._TORCH_MAGIC,
            torch_file._TORCH_PROTOCOL,
            {"little_endian": True},
        )
    )
    tamper = b"\x80\x02" + target + b"N}X\x05\x00\x00\x00dtypeNs\x86b."
    path = tmp_path / "tamper.pth"
    path.write_bytes(header + tamper)

    with pytest.raises(efficientnet_lite.WeightsError):
        torch_file.load_legacy(path)
    assert torch_file._STORAGE_TYPES["FloatStorage"].dtype == np.float32


def test_weights_cache_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RPS_CACHE_DIR", str(tmp_path))
    first = efficientnet_lite.imagenet_weights_file(include_top=False)
    assert first.parent == tmp_path / "weights"
    assert first.is_file()
    stamp = first.stat().st_mtime_ns

    def no_second_conversion(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(efficientnet_lite, "_convert", no_second_conversion)
    assert efficientnet_lite.imagenet_weights_file(include_top=False) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_notop_model_shares_top_weights(top_model):
    backbone = efficientnet_lite.EfficientNetLite0(include_top=False, weights="imagenet")
    assert backbone.name == "efficientnet_lite0"
    assert backbone(np.zeros((1, 224, 224, 3), "float32")).shape == (1, 7, 7, 1280)

    shared = [layer for layer in backbone.layers if layer.weights]
    assert len(shared) == len([layer for layer in top_model.layers if layer.weights]) - 1
    for layer in shared:
        theirs = top_model.get_layer(layer.name).get_weights()
        for mine, other in zip(layer.get_weights(), theirs, strict=True):
            np.testing.assert_array_equal(mine, other)

    any_size = efficientnet_lite.EfficientNetLite0(
        include_top=False, weights="imagenet", input_shape=(None, None, 3)
    )
    out = any_size(np.zeros((1, 300, 300, 3), "float32"))
    assert out.shape == (1, math.ceil(300 / 32), math.ceil(300 / 32), 1280)

"""Backbone weights: ImageNet, random, local files, and the errors when they do not fit."""

import urllib.error

import keras
import numpy as np
import pytest
from conftest import SHARED

from rps.config.model import BackboneConfig, BackboneName
from rps.errors import WeightsError
from rps.model import backbone, efficientnet_lite


def cfg(name: str, weights, size: int = 64) -> BackboneConfig:
    return BackboneConfig(name=BackboneName(name), input_size=size, weights=weights)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached Keras weights and a network that refuses, as on these machines."""
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


def test_imagenet_download_offline_says_what_to_do(offline):
    with pytest.raises(WeightsError, match="offline") as info:
        backbone.build(cfg("resnet50", "imagenet"))
    assert "backbone.weights=null" in str(info.value)


def test_local_weights_file_roundtrip(tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    loaded = backbone.build(cfg("mobilenet_v2", str(path)))
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    with pytest.raises(WeightsError, match="does not fit backbone=efficientnet_b0"):
        backbone.build(cfg("efficientnet_b0", str(path)))


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="neither 'imagenet', null, nor an existing file"):
        backbone.build(cfg("mobilenet_v2", str(tmp_path / "nope.weights.h5")))


@pytest.mark.integration
def test_shared_imagenet_mobilenet_file_loads():
    path = SHARED.parent.parent / "weights" / "mobilenet_v2_1.0_224_imagenet_notop.weights.h5"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    model = backbone.build(cfg("mobilenet_v2", str(path), size=224))
    random_init = backbone.build(cfg("mobilenet_v2", None, size=224))
    kernel = model.get_layer("Conv1").get_weights()[0]
    assert not np.allclose(kernel, random_init.get_layer("Conv1").get_weights()[0])


def test_unfreeze_top_keeps_batchnorm_frozen():
    model = backbone.build(cfg("mobilenet_v2", None))
    backbone.freeze(model)
    assert not model.trainable_weights
    count = backbone.unfreeze_top(model, 10)
    top = model.layers[-10:]
    assert count == sum(
        1
        for layer in top
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    )
    assert all(not layer.trainable for layer in model.layers[:-10])
    assert all(
        not layer.trainable
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert count > 0


@pytest.mark.parametrize(
    "name,reference",
    [
        ("resnet50", keras.applications.resnet.preprocess_input),
        ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input),
        ("efficientnet_b0", keras.applications.efficientnet.preprocess_input),
        ("efficientnet_lite0", efficientnet_lite.preprocess_input),
    ],
)
def test_preprocessing_layer_matches_the_backbones_own_function(name, reference):
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    layer = backbone.preprocessing(BackboneName(name))
    expected = keras.ops.convert_to_numpy(reference(images.copy()))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images)), expected, atol=1e-4)
    assert layer.__class__.__module__.startswith("keras."), "must reload without rps"

"""A problem found before training starts (the data, a download, the hand models, the
weights) refuses the job with one paragraph before any MLflow run opens, and removes the
output folder Hydra made for it."""

import socket
import urllib.error
from pathlib import Path

import pytest
from conftest import compose_cfg, make_folder_dataset
from mlflow.tracking import MlflowClient

from rps.config.context import JobContext
from rps.errors import DataError, UserError, WeightsError
from rps.train import job

TINY = ["backbone.input_size=32", "trainer.epochs=1", "cache.enabled=false", "finetune=none"]


def refused_job(tmp_path: Path, store: str, *overrides: str) -> UserError:
    """``job.run`` as Hydra calls it, in an output folder holding Hydra's config and a log;
    the refusal it raises, once checked that it left nothing behind."""
    out = tmp_path / "outputs" / "runs" / "now"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("{}")
    (out / "run.log").write_text("")
    ctx = JobContext(output_dir=out, root=tmp_path, overrides=list(overrides))
    with pytest.raises(UserError) as refused:
        job.run(compose_cfg(*overrides), ctx)
    assert not (tmp_path / "outputs").exists()
    client = MlflowClient(store)  # the test's own (conftest's mlflow_store), where jobs log
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    return refused.value


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "data", n_train=4, n_test=2)


def test_the_tfds_download_offline(mlflow_store, tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    err = refused_job(
        tmp_path,
        mlflow_store,
        "data=rps",
        f"data.tfds_dir={tmp_path / 'tfds'}",
        "backbone=mobilenet_v2",
        "backbone.weights=null",
        *TINY,
    )
    assert isinstance(err, DataError) and "machine may be offline" in str(err)


def test_the_hand_models_offline(mlflow_store, tmp_path, monkeypatch, data):
    monkeypatch.setenv("RPS_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip download finds no package index
    err = refused_job(tmp_path, mlflow_store, "data=folder", f"data.root={data}", *TINY)
    assert isinstance(err, WeightsError)
    assert "could not fetch MediaPipe's hand models" in str(err)


def test_the_imagenet_weights_offline(mlflow_store, tmp_path, monkeypatch, data):
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    err = refused_job(
        tmp_path, mlflow_store, "data=folder", f"data.root={data}", "backbone=mobilenet_v2", *TINY
    )
    assert isinstance(err, WeightsError) and "offline" in str(err)


def test_a_class_with_no_readable_image(mlflow_store, tmp_path, data):
    for image in (data / "train" / "rock").iterdir():
        image.write_bytes(b"not an image")
    err = refused_job(
        tmp_path,
        mlflow_store,
        "data=folder",
        f"data.root={data}",
        "backbone=mobilenet_v2",
        "backbone.weights=null",
        *TINY,
    )
    assert isinstance(err, DataError) and "rock" in str(err)

"""Training end to end: the CLI, its outputs, both stages, the saved model, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import compose_cfg, fit, make_folder_dataset, run_cli

from rps.config import compose
from rps.data import dataset
from rps.model import network
from rps.train import callbacks

TINY = [
    "backbone=mobilenet_v2",
    "backbone.weights=null",
    "backbone.input_size=32",
    "trainer.batch_size=8",
    "finetune=none",
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("tiny"), n_train=12, n_test=4)


def test_cli_writes_model_metrics_and_hydra_folder(tiny_root, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "data=folder", f"data.root={tiny_root}", *TINY, "trainer.epochs=2", f"hydra.run.dir={out}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "best_val_accuracy",
        "per_class",
        "confusion_matrix",
        "num_train",
        "num_val",
        "num_test",
        "train_seconds",
    ):
        assert key in metrics, key
    assert metrics["num_test"] == 12 and metrics["num_train"] + metrics["num_val"] == 36
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert set(metrics["per_class"]) == {"paper", "rock", "scissors"}
    assert {"precision", "recall", "f1"} <= set(metrics["per_class"]["rock"])
    assert len(metrics["history"]) == 2
    assert (out / "model.keras").is_file() and (out / ".hydra" / "config.yaml").is_file()


def test_multirun_sweeps_head_units(tiny_root, tmp_path):
    proc = run_cli(
        "-m",
        "data=folder",
        f"data.root={tiny_root}",
        *TINY,
        "trainer.epochs=1",
        "head.units=8,16",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, units in ((0, 8), (1, 16)):
        folder = tmp_path / str(job)
        assert f"head.units={units}" in (folder / ".hydra" / "overrides.yaml").read_text()
        assert json.loads((folder / "metrics.json").read_text())["num_test"] == 12
        head = network.load(folder)[0].get_layer("head")
        assert head.get_layer("dense_0").units == units


def test_saved_model_gives_same_logits_in_a_fresh_process(tiny_root, tmp_path):
    cfg = compose.to_object(
        compose_cfg(
            "data=folder", f"data.root={tiny_root}", *TINY, "trainer.epochs=1", "aug=strong"
        )
    )
    data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed)
    classifier, _ = fit(cfg, data)
    path = network.save(classifier.inference, data.class_names, tmp_path)
    np.save(tmp_path / "images.npy", data.test.images)
    before = classifier.inference.predict(data.test.images, verbose=0)
    script = (  # plain Keras, not even rps: the model is built from Keras' own layers
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1], compile=False)\n"
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "after.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "after.npy"), before, atol=1e-5)
    assert network.load(tmp_path)[1] == data.class_names


def test_finetune_continues_the_epoch_count(tiny_root):
    cfg = compose.to_object(
        compose_cfg(
            "data=folder",
            f"data.root={tiny_root}",
            *TINY,
            "trainer.epochs=2",
            "trainer.patience=null",
            "finetune=top",
            "finetune.epochs=2",
            "finetune.layers=6",
        )
    )
    data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed)
    classifier, fitted = fit(cfg, data)
    assert [(h["epoch"], h["stage"]) for h in fitted.history] == [(0, 1), (1, 1), (2, 2), (3, 2)]
    stage2_lr = fitted.history[2]["lr"]
    assert stage2_lr == pytest.approx(cfg.optimizer.lr * cfg.finetune.lr_factor)
    backbone = classifier.backbone
    assert any(layer.trainable_weights for layer in backbone.layers[-6:])
    assert not any(layer.trainable for layer in backbone.layers[:-6])


def test_best_weights_are_restored_with_loss_breaking_ties():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best = callbacks.BestWeights(model)
    logs = [(0.5, 1.0), (0.9, 0.8), (0.9, 0.5), (0.7, 0.1)]
    snapshots = []
    for epoch, (acc, loss) in enumerate(logs):
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch), "float32"))
        snapshots.append(model.get_weights())
        best.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    best.restore()
    assert best.epoch == 2 and best.val_accuracy == 0.9
    np.testing.assert_array_equal(model.get_weights()[0], snapshots[2][0])


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["head.units=-4"], "head.units"),
        (["head.dropout=1.5"], "head.dropout"),
        (["data=folder", "data.root=/nonexistent/rps"], "/nonexistent/rps"),
        (["data=folder"], "data.root"),
    ],
)
def test_bad_input_is_one_paragraph_without_traceback(overrides, needle, tmp_path):
    proc = run_cli(*overrides, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_option_lists_the_choices(tmp_path):
    proc = run_cli("head=huge", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "head/huge" in proc.stderr and "deep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_weights_that_do_not_fit_fail_before_training(tiny_root, tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    weights = tmp_path / "mobilenet.weights.h5"
    source.save_weights(weights)
    proc = run_cli(
        "data=folder",
        f"data.root={tiny_root}",
        "backbone=efficientnet_b0",
        "backbone=efficientnet_lite0",
        f"backbone.weights={weights}",
        "backbone.input_size=32",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2
    assert "does not fit" in proc.stderr and "Traceback" not in proc.stderr


def test_each_epoch_shows_every_image_once_in_one_of_its_views():
    from rps.train import stages

    n_views, n, batch = 3, 20, 8
    # Row i of view v holds (v, i): what was drawn can be read back.
    views = np.stack(
        [np.stack([np.full(n, v), np.arange(n)], axis=1) for v in range(n_views)]
    ).astype(np.float32)
    labels = np.arange(n) % 3
    ds = stages.view_sampling_dataset(views, labels, 3, batch, seed=7)
    epochs = []
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in ds]
        assert [len(x) for x, _ in batches] == [8, 8, 4]
        drawn = np.concatenate([x for x, _ in batches])
        onehot = np.concatenate([y for _, y in batches])
        images = drawn[:, 1].astype(int)
        assert sorted(images) == list(range(n))  # every image once
        assert (onehot.argmax(axis=1) == labels[images]).all()  # with its own label
        assert set(drawn[:, 0].astype(int)) <= set(range(n_views))
        epochs.append(drawn)
    assert not np.array_equal(*epochs)  # another order, other views
    assert len(set(epochs[0][:, 0].astype(int))) > 1  # views are mixed within an epoch

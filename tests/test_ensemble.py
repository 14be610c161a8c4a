"""ensemble.py: one saved model averaging finished runs' logits, tested and tracked."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, TINY, compose_cfg, logged_runs, make_folder_dataset, run_cli
from mlflow.tracking import MlflowClient

from rps.apps import ensemble
from rps.config import compose
from rps.data.images import fit_square, read_rgb
from rps.errors import ConfigError, UserError
from rps.features import sources
from rps.features.hand import HandSource
from rps.hands import landmarks
from rps.model import network
from rps.serve import logged_model
from rps.tracking import mlflow_runs
from rps.train import outputs


def tiny(size: int, seed: int):
    """An untrained classifier: the bundled backbone weights, a head drawn from ``seed``."""
    cfg = compose.to_object(
        compose_cfg(
            "backbone=efficientnet_lite0",
            f"backbone.input_size={size}",
            "head=linear",
            "aug=none",
            "data=folder",
            "data.root=unused",
        )
    )
    keras.utils.set_random_seed(seed)
    return sources.classifier(cfg, 3).inference


def test_average_averages_members_of_any_input_size_and_reloads_in_a_fresh_process(tmp_path):
    members = [tiny(32, 1), tiny(48, 2)]
    images = np.random.default_rng(0).uniform(0, 255, (4, 60, 80, 3)).astype("float32")
    logits = [m.predict(images, verbose=0) for m in members]
    assert not np.allclose(logits[0], logits[1])  # the members differ, so the mean is a test
    combined = sources.average(members)
    np.testing.assert_allclose(
        combined.predict(images, verbose=0), np.mean(logits, axis=0), atol=1e-5
    )
    assert network.input_size(combined) == 48
    network.save(combined, ["paper", "rock", "scissors"], tmp_path)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras; from pathlib import Path; p = Path(sys.argv[1]); "
        "m = keras.models.load_model(p / 'model.keras', compile=False); "
        "np.save(p / 'out.npy', m.predict(np.load(p / 'images.npy'), verbose=0))"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.mean(logits, axis=0), atol=1e-5)


def test_one_member_is_not_an_ensemble():
    with pytest.raises(UserError, match="two or more"):
        sources.average([tiny(32, 1)])


def test_landmark_heads_average_on_features_and_do_not_mix_with_image_models():
    def head(seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        return sources.classifier(compose.to_object(compose_cfg("head=linear")), 3).inference

    members = [head(1), head(2)]
    features = np.random.default_rng(0).normal(size=(5, landmarks.SIZE)).astype("float32")
    combined = sources.average(members)
    assert isinstance(sources.of_model(combined), HandSource)
    np.testing.assert_allclose(
        combined.predict(features, verbose=0),
        np.mean([m.predict(features, verbose=0) for m in members], axis=0),
        atol=1e-5,
    )
    with pytest.raises(UserError, match="mix landmark runs"):
        sources.average([head(3), tiny(32, 1)])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "got neither"),
        (["runs=[a,b]", "sweep_id=c"], "got both"),
        (["runs=[a,a]"], "names a run twice"),
    ],
)
def test_members_are_runs_or_a_sweep(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose.to_object(compose.config(REPO / "conf", overrides, name="ensemble"))


def test_conf_ensemble_composes_with_its_members():
    conf = compose.to_object(
        compose.config(REPO / "conf", ["runs=[a,b]", "data.root=/data"], name="ensemble")
    )
    assert (conf.runs, conf.sweep_id, conf.data.root) == (["a", "b"], None, "/data")
    assert conf.tracking.uri is None and conf.tracking.experiment is None


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> dict:
    """Two tiny jobs of one sweep (seeds 1 and 2), in a store of their own."""
    folder = tmp_path_factory.mktemp("swept")
    root = make_folder_dataset(folder / "data", n_train=8, n_test=3)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = run_cli(
        "-m",
        "data=folder",
        f"data.root={root}",
        *TINY,
        "trainer.seed=1,2",
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={folder / 'sweep'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = logged_runs(uri)
    (parent,) = [r for r in found if mlflow_runs.PARENT_TAG not in r.data.tags]
    children = [r.info.run_id for r in found if mlflow_runs.PARENT_TAG in r.data.tags]
    return {
        "root": root,
        "uri": uri,
        "parent": parent.info.run_id,
        "children": children,
        "folder": folder,
    }


def flat(text: str) -> str:
    """The error paragraph on one line: it is wrapped at 100 columns."""
    return " ".join(text.split())


def _ensemble(swept: dict, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(
        *overrides,
        f"tracking.uri={swept['uri']}",
        f"hydra.run.dir={tmp_path / 'ensemble'}",
        script="ensemble.py",
    )


@pytest.mark.parametrize("members", ["runs", "sweep_id"])
def test_ensemble_of_tracked_runs_is_tested_logged_and_served(swept, tmp_path, members):
    given = (
        f"runs=[{','.join(swept['children'])}]"
        if members == "runs"
        else f"sweep_id={swept['parent']}"
    )
    proc = _ensemble(swept, tmp_path, given)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ensemble" / outputs.METRICS_FILE).read_text())
    assert sorted(metrics["members"]) == sorted(swept["children"])
    client = MlflowClient(swept["uri"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("rps").experiment_id],
        filter_string=f"tags.output_dir = '{tmp_path / 'ensemble'}'",
    )
    assert run.info.status == "FINISHED" and run.info.run_name == "ensemble of 2 runs"
    assert json.loads(run.data.tags[ensemble.MEMBERS_TAG]) == metrics["members"]
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])
    members_accuracy = [client.get_run(r).data.metrics["test/accuracy"] for r in metrics["members"]]
    assert run.data.metrics["members/test_accuracy_min"] == pytest.approx(min(members_accuracy))
    # The logged model, as live.py loads it, is the members' mean. The test images are
    # decoded and cropped as the ensemble's test decodes them.
    loaded = logged_model.load(run.info.run_id, tracking_uri=swept["uri"])
    model, names = loaded.model, loaded.class_names
    assert names == ["paper", "rock", "scissors"]
    files = sorted((swept["root"] / "test").glob("*/*.png"))
    images = np.stack([fit_square(read_rgb(p), 64) for p in files]).astype(np.float32)
    expected = np.mean(
        [
            logged_model.load(r, tracking_uri=swept["uri"]).model.predict(images, verbose=0)
            for r in metrics["members"]
        ],
        axis=0,
    )
    logits = model.predict(images, verbose=0)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    labels = [names.index(p.parent.name) for p in files]
    assert metrics["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert (tmp_path / "ensemble" / "plots" / "confusion_matrix.png").is_file()


def test_unknown_or_unfinished_members_are_one_paragraph(swept, tmp_path):
    proc = _ensemble(swept, tmp_path, f"runs=[{swept['children'][0]}]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "names one run" in flat(proc.stderr)
    proc = _ensemble(swept, tmp_path, f"runs=[{swept['children'][0]},0123456789abcdef]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no run 0123456789abcdef" in flat(proc.stderr)
    client = MlflowClient(swept["uri"])
    failed = client.create_run(client.get_experiment_by_name("rps").experiment_id)
    client.set_terminated(failed.info.run_id, "FAILED")
    proc = _ensemble(swept, tmp_path, f"runs=[{swept['children'][0]},{failed.info.run_id}]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "did not finish" in flat(proc.stderr)
    assert f"{failed.info.run_id} (FAILED)" in flat(proc.stderr)
    proc = _ensemble(swept, tmp_path, f"sweep_id={swept['children'][0]}")  # a job, not a parent
    assert proc.returncode == 2 and "has 0 finished job(s)" in flat(proc.stderr)


@pytest.mark.parametrize(
    "classes, message",
    [(("paper", "rock"), "same classes"), (("paper", "rock", "scissors"), "share one")],
)
def test_members_of_other_classes_or_test_splits_are_refused(swept, tmp_path, classes, message):
    other = make_folder_dataset(tmp_path / "other", classes=classes, n_train=8, n_test=3)
    out = tmp_path / "run"
    proc = run_cli(
        "data=folder",
        f"data.root={other}",
        *TINY,
        f"tracking.uri={swept['uri']}",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(swept["uri"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("rps").experiment_id],
        filter_string=f"tags.output_dir = '{out}'",
    )
    proc = _ensemble(swept, tmp_path, f"runs=[{swept['children'][0]},{run.info.run_id}]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr.replace("\n", " ")

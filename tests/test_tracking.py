"""MLflow and TensorBoard tracking on a real SQLite store, with tiny generated data."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    make_folder_dataset,
    post,
    post_images,
    run_cli,
    served_model,
    tracked_job,
)
from mlflow.tracking import MlflowClient

from rps.config.job import TrackingConfig
from rps.model import network
from rps.serve import logged_model
from rps.serve.predictor import Predictor
from rps.tracking import backend, mlflow_runs, sweep

# A real pretrained backbone (its weights install with rps) on small inputs: it learns the
# colour-coded classes in a few epochs, so served predictions can be checked for the class.
SMALL = [
    "backbone=efficientnet_lite0",
    "backbone.input_size=64",
    "trainer.batch_size=8",
    "head=linear",
    "aug=none",
    "finetune=none",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"), n_train=10, n_test=4)


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rps")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope="module")
def single(root, tmp_path_factory):
    """One tracked job, shared by the tests that inspect what it logged."""
    uri, out, run, proc = tracked_job(
        tmp_path_factory.mktemp("single"),
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "trainer.epochs=3",
        "trainer.patience=null",
        "tracking.register=rps_test",
        "head.dropout=0.1",
    )
    return {"uri": uri, "out": out, "run": run, "client": MlflowClient(uri), "log": proc.stdout}


def test_run_has_params_tags_and_per_epoch_metrics(single, root):
    run, client = single["run"], single["client"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == (  # what was chosen; file locations are left out
        "data=folder,backbone=efficientnet_lite0,backbone.input_size=64,trainer.batch_size=8,"
        "head=linear,aug=none,finetune=none,trainer.epochs=3,trainer.patience=null,"
        "head.dropout=0.1"
    )
    params = run.data.params
    assert params["head.dropout"] == "0.1" and params["backbone.name"] == "efficientnet_lite0"
    assert "head.units" not in params and not any(k.startswith("finetune.") for k in params)
    assert params["trainer.epochs"] == "3" and params["data.root"] == str(root)
    tags = run.data.tags
    assert json.loads(tags["overrides"])[0] == "data=folder"
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["git_dirty"] in {"true", "false", "unknown"}
    assert tags["tensorboard_logdir"].startswith(str(single["out"]))
    for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0, 1, 2], key
    metrics = run.data.metrics
    local = json.loads((single["out"] / "metrics.json").read_text())
    assert metrics["test/accuracy"] == pytest.approx(local["test_accuracy"])
    assert metrics["val/best_accuracy"] == pytest.approx(local["best_val_accuracy"])
    for name in ("paper", "rock", "scissors"):
        assert metrics[f"test/f1/{name}"] == pytest.approx(local["per_class"][name]["f1"])
    assert metrics["time/train_s"] > 0 and metrics["time/images_per_s"] > 0
    assert metrics["time/total_s"] >= metrics["time/train_s"]


def test_the_experiment_is_model_training_and_the_data_its_runs_inputs(single, root):
    run, client = single["run"], single["client"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[backend.EXPERIMENT_KIND_TAG] == "custom_model_development"
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert list(inputs) == ["train", "val", "test"]
    for split, dataset in inputs.items():
        assert dataset.name == f"{root.name} {split}"
        assert json.loads(dataset.source) == {"uri": str(root)}
        assert json.loads(dataset.schema)["classes"] == ["paper", "rock", "scissors"]
    counts = {split: json.loads(d.profile)["per_class"] for split, d in inputs.items()}
    assert counts["test"] == {"paper": 4, "rock": 4, "scissors": 4}
    assert {n for c in (counts["train"], counts["val"]) for n in c.values()} <= set(range(11))
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 30
    assert len({d.digest for d in inputs.values()}) == 3
    # MLflow 3.17's UI shows runs in its model-training view, which this link opens.
    link = (
        f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/"
        f"{run.info.run_id}?workflowType=machine_learning"
    )
    assert f"in mlflow ui: {link}" in single["log"]
    assert backend.ui_link("http://host:5000/", "7") == (
        "http://host:5000/#/experiments/7?workflowType=machine_learning"
    )


def test_run_artifacts(single):
    client, run_id = single["client"], single["run"].info.run_id

    def names(folder: str = "") -> set[str]:
        return {Path(f.path).name for f in client.list_artifacts(run_id, folder)}

    assert {"metrics.json", "class_names.json", "plots", "hydra", "config"} <= names()
    assert {"confusion_matrix.png", "learning_curves.png", "misclassified.png"} <= names("plots")
    assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= names("hydra")
    assert "config.yaml" in names("config")


def test_logged_model_loads_with_class_names_and_matches_the_local_one(single):
    loaded = logged_model.load(single["run"].info.run_id, tracking_uri=single["uri"])
    model, class_names = loaded.model, loaded.class_names
    local, local_names = network.load(single["out"])
    assert class_names == local_names == ["paper", "rock", "scissors"]
    images = np.random.default_rng(0).uniform(0, 255, (3, 50, 70, 3)).astype("float32")
    np.testing.assert_allclose(
        model.predict(images, verbose=0), local.predict(images, verbose=0), atol=1e-5
    )


def test_model_is_registered(single):
    versions = single["client"].search_model_versions("name='rps_test'")
    assert [v.run_id for v in versions] == [single["run"].info.run_id]
    loaded = logged_model.load(model_uri="models:/rps_test/1", tracking_uri=single["uri"])
    assert loaded.class_names == ["paper", "rock", "scissors"]


def test_unknown_run_id_is_a_clear_error(single):
    with pytest.raises(backend.TrackingError, match="cannot load the model of run 0123"):
        logged_model.load("0123456789abcdef", tracking_uri=single["uri"])


def test_tensorboard_holds_epoch_scalars_and_augmented_images(single):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = Path(single["run"].data.tags["tensorboard_logdir"])
    for split in ("train", "validation"):
        events = EventAccumulator(str(logdir / split), size_guidance={"tensors": 0}).Reload()
        for tag in ("epoch_loss", "epoch_accuracy"):
            assert [e.step for e in events.Tensors(tag)] == [0, 1, 2], (split, tag)
    images = EventAccumulator(str(logdir / "images"), size_guidance={"tensors": 0}).Reload()
    assert "augmented_training_images" in images.Tags()["tensors"]


def test_mlflow_models_serve_classifies_image_files_and_pixels(single, root, tmp_path):
    from PIL import Image

    png = root / "test" / "rock" / "rock_000.png"
    image = np.asarray(Image.open(png).convert("RGB"))
    jpeg = tmp_path / "rock.jpg"
    Image.fromarray(image).save(jpeg, quality=95)
    files = [base64.b64encode(path.read_bytes()).decode() for path in (png, jpeg)]
    local = Predictor.of(*network.load(single["out"]))
    names = local.class_names
    expected = local.probabilities([image, np.asarray(Image.open(jpeg))])
    with served_model(f"runs:/{single['run'].info.run_id}/model", single["uri"]) as url:
        pixels = post_images(url, image[None])
        status, as_files = post(url, {"inputs": files})
        status_named, named = post(
            url, {"dataframe_split": {"columns": ["image"], "data": [[f] for f in files]}}
        )
        scaled = post(url, {"inputs": (image[None] / 255.0).tolist()})
        garbage = post(url, {"inputs": ["bm90IGFuIGltYWdl"]})  # "not an image"
    assert status == status_named == 200, (as_files, named)
    for row, probs in zip(
        [*pixels, *as_files["predictions"]], [expected[0], *expected], strict=True
    ):
        np.testing.assert_allclose([row[name] for name in names], probs, atol=1e-4)
        assert row["label"] == names[int(probs.argmax())]
    assert named == as_files
    assert scaled[0] == 400 and "scaled to 0..1" in scaled[1]["message"]
    assert garbage[0] == 400 and "image 0 is not a base64-encoded image" in garbage[1]["message"]


def test_sweep_has_a_parent_with_children_and_a_summary(root, tmp_path, mlflow_store):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "trainer.epochs=1",
        "head=shallow",
        "head.units=8,16",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = runs(mlflow_store)
    (parent,) = [r for r in found if mlflow_runs.PARENT_TAG not in r.data.tags]
    children = [r for r in found if r.data.tags.get(mlflow_runs.PARENT_TAG) == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["head.units=16", "head.units=8"]
    assert {r.info.status for r in children} == {"FINISHED"} == {parent.info.status}
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in children}
    summary = (sweep_dir / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("job,head.units,status,val_accuracy,test_accuracy")
    assert [line.split(",")[:3] for line in summary[1:]] == [
        ["0", "8", "FINISHED"],
        ["1", "16", "FINISHED"],
    ]
    assert "| job | head.units |" in proc.stdout
    artifacts = {f.path for f in MlflowClient(mlflow_store).list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "summary.png"} <= artifacts


def test_a_failing_job_does_not_stop_the_sweep(root, tmp_path, mlflow_store):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "trainer.epochs=1",
        "head=shallow",
        "head.units=-1,8",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 1
    assert "1 of 2 sweep jobs failed" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "head.units=-1 is out of range" in proc.stdout + proc.stderr
    # The job whose config did not validate opened no run; the summary still lists it.
    children = {
        r.info.run_name: r for r in runs(mlflow_store) if mlflow_runs.PARENT_TAG in r.data.tags
    }
    assert list(children) == ["head.units=8"]
    assert children["head.units=8"].info.status == "FINISHED"
    rows = (sweep_dir / "summary.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:3] for row in rows] == [["0", "-1", "FAILED"], ["1", "8", "FINISHED"]]


@pytest.mark.parametrize("override", ["head.dropout=2", "optimizer.lr=-1"])
def test_a_config_that_does_not_validate_opens_no_run(root, tmp_path, mlflow_store, override):
    proc = run_cli(
        "data=folder", f"data.root={root}", override, f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert proc.returncode == 2 and override.split("=")[0] in proc.stderr
    assert runs(mlflow_store) == []


def test_a_data_error_found_while_decoding_leaves_no_run_and_no_folder(tmp_path, mlflow_store):
    # An unreadable image shows only when decoding: the data loads before the run opens.
    root = make_folder_dataset(tmp_path / "data", n_train=4, n_test=2)
    (root / "train" / "rock" / "broken.png").write_bytes(b"not a png")
    proc = run_cli("data=folder", f"data.root={root}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "not readable images" in " ".join(proc.stderr.split())
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    assert runs(mlflow_store) == []
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_jobs_and_sweeps_started_at_once_on_a_new_store_all_succeed(root, tmp_path):
    """Three processes, as three terminals on a fresh clone: each creates MLflow's tables
    in the one new SQLite store unless another has."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    tiny = [
        "data=folder",
        f"data.root={root}",
        "backbone=mobilenet_v2",
        "backbone.weights=null",
        "backbone.input_size=32",
        "trainer.epochs=1",
        "aug=none",
        "finetune=none",
        f"tracking.uri={uri}",
    ]
    commands = [[*tiny, f"hydra.run.dir={tmp_path / f'job{i}'}"] for i in range(2)]
    commands.append(["-m", *tiny, "head.units=8,16", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, stderr in zip(procs, errors, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    found = runs(uri)
    assert len(found) == 2 + 3  # two jobs; a sweep's parent and two jobs
    assert {run.info.status for run in found} == {"FINISHED"}


def test_tracking_can_be_turned_off(root, tmp_path, mlflow_store):
    proc = run_cli(
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "trainer.epochs=1",
        "tracking.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not Path(mlflow_store.removeprefix("sqlite:///")).exists()
    assert (tmp_path / "run" / "model.keras").is_file()


def test_default_store_is_the_project_root_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = backend.store_uri(TrackingConfig(), tmp_path / "project")
    assert uri == f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    assert (
        backend.artifact_location(uri, "rps") == (tmp_path / "project" / "mlruns" / "rps").as_uri()
    )
    assert (
        backend.store_uri(TrackingConfig(uri="http://127.0.0.1:5000"), tmp_path)
        == "http://127.0.0.1:5000"
    )


def test_params_are_flattened_and_bounded():
    flat = mlflow_runs.flatten(
        {"head": {"units": 256, "depth": 1}, "data": {"root": "x" * 9000}, "experiment": None}
    )
    assert flat["head.units"] == "256" and flat["experiment"] == "None"
    assert len(flat["data.root"]) == mlflow_runs.PARAM_VALUE_CHARS


def test_run_names_keep_choices_and_drop_locations():
    assert (
        mlflow_runs.run_name(
            [
                "head=deep",
                "data.root=/x",
                "+aug=strong",
                "tracking.uri=sqlite:///x",
                "hydra.run.dir=y",
            ]
        )
        == "head=deep,aug=strong"
    )
    assert mlflow_runs.run_name(["hydra.run.dir=y"]) == "defaults"
    assert (
        mlflow_runs.run_name(["head=deep", "head.units=8"], varying=["head.units"])
        == "head.units=8"
    )
    # Where nothing else says what ran, the data it ran on does.
    assert mlflow_runs.run_name(["data.root=/x", "hydra.run.dir=y"]) == "data.root=/x"
    assert mlflow_runs.run_name(["data.root=/x", "head=deep"], varying=[]) == "head=deep"


def test_a_sweep_whose_every_job_failed_has_a_failed_parent(tmp_path, mlflow_store):
    proc = run_cli(
        "-m",
        "data=folder",
        f"data.root={tmp_path / 'nowhere'}",
        "head.units=8,16",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 1 and "2 of 2 sweep jobs failed" in proc.stdout
    assert "Traceback" not in proc.stderr
    (parent,) = runs(mlflow_store)  # the jobs' data folder was refused before any opened a run
    assert parent.info.status == "FAILED"


def test_best_child_is_chosen_on_validation_not_test():
    rows = [
        sweep.Row("0", "a", "FINISHED", 0.90, 0.99, 1.0, "r0", {"head.units": "8"}),
        sweep.Row("1", "b", "FINISHED", 0.95, 0.80, 1.0, "r1", {"head.units": "16"}),
        sweep.Row("2", "c", "FAILED", None, None, None, "r2", {"head.units": "-1"}),
    ]
    assert sweep.best(rows).run_id == "r1"
    header, body = sweep.table(rows)
    assert header[:2] == ["job", "head.units"] and body[2][2] == "FAILED"

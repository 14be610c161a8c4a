"""trainer.members: one job trains several seeds and saves their average as its one model."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_after_checkpoint, make_folder_dataset, run_cli
from mlflow.tracking import MlflowClient

from rps import checkpoint, tracking
from rps import model as model_lib
from rps.images import fit, read_rgb

TINY = ["backbone=mobilenet_v2", "backbone.weights=null", "backbone.input_size=32",
        "trainer.batch_size=8", "trainer.patience=null", "head=linear", "aug=none"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"), n_train=10, n_test=4)


def decoded_test_images(root: Path) -> np.ndarray:
    files = sorted((root / "test").glob("*/*.png"))
    return np.stack([fit(read_rgb(f), 32) for f in files]).astype("float32")


def test_members_train_with_successive_seeds_and_the_job_saves_their_mean(root, tmp_path,
                                                                         mlflow_store):
    out = tmp_path / "run"
    proc = run_cli("data=folder", f"data.root={root}", *TINY, "trainer.epochs=2",
                   "finetune=none", "trainer.seed=7", "trainer.members=2",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = decoded_test_images(root)
    model, names = model_lib.load(out)
    members = [model_lib.load(out / checkpoint.MEMBERS_DIR / str(i))[0] for i in range(2)]
    logits = [m.predict(images, verbose=0) for m in members]
    assert not np.allclose(logits[0], logits[1])  # two seeds, two models
    np.testing.assert_allclose(model.predict(images, verbose=0), np.mean(logits, axis=0),
                               atol=1e-5)

    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [7, 8]
    assert metrics["epochs_run"] == 4
    assert metrics["best_val_accuracy"] == pytest.approx(
        np.mean([m["best_val_accuracy"] for m in metrics["members"]]))
    mean_logits = np.mean(logits, axis=0)
    labels = np.repeat(np.arange(3), 4)  # test files sorted by class, 4 each
    assert metrics["test_accuracy"] == pytest.approx((mean_logits.argmax(1) == labels).mean())
    for i in range(2):
        assert (out / "plots" / f"learning_curves_member{i}.png").is_file()
        assert not checkpoint.path(out / checkpoint.MEMBERS_DIR / str(i)).exists()

    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    for i in range(2):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id,
                                                                 f"member{i}/val/accuracy"))
        assert steps == [0, 1]
        assert run.data.metrics[f"member{i}/test/accuracy"] == metrics["members"][i][
            "test_accuracy"]
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["members/test_accuracy_min"] == min(
        m["test_accuracy"] for m in metrics["members"])
    logged, logged_names = tracking.load_model(run.info.run_id, tracking_uri=mlflow_store)
    assert logged_names == names
    np.testing.assert_allclose(logged.predict(images, verbose=0), mean_logits, atol=1e-5)

    # Member 1 is the model a one-model job with its seed trains.
    single = tmp_path / "single"
    proc = run_cli("data=folder", f"data.root={root}", *TINY, "trainer.epochs=2",
                   "finetune=none", "trainer.seed=8", f"hydra.run.dir={single}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(model_lib.load(single)[0].predict(images, verbose=0), logits[1],
                               atol=1e-4)


@pytest.mark.slow
def test_a_job_killed_in_its_second_member_keeps_the_first_when_resumed(root, tmp_path,
                                                                        mlflow_store):
    """Killed with SIGKILL once member 1 checkpointed an epoch: the resume reloads member 0
    as it finished, and member 1 goes on from its checkpoint."""
    out = tmp_path / "run"
    epochs = 8
    second = out / checkpoint.MEMBERS_DIR / "1"
    killed = kill_after_checkpoint(
        ["data=folder", f"data.root={root}", *TINY, f"trainer.epochs={epochs}",
         "cache.enabled=false", "finetune=none", "trainer.members=2", f"hydra.run.dir={out}"],
        second, 1)
    assert killed.epoch < epochs - 1
    first = out / checkpoint.MEMBERS_DIR / "0"
    assert checkpoint.finished(first)
    first_model = (first / model_lib.MODEL_FILE).stat().st_mtime_ns

    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    resumed = run_cli(f"trainer.resume={run.info.run_id}", f"hydra.run.dir={tmp_path / 'r'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "member 0 finished before the interruption" in resumed.stdout + resumed.stderr
    assert (first / model_lib.MODEL_FILE).stat().st_mtime_ns == first_model
    assert f"Epoch {killed.epoch + 2}/{epochs}" in resumed.stdout
    assert "Epoch 1/" not in resumed.stdout

    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["member1/resumed_after_epoch"] == str(killed.epoch + 1)
    for i in range(2):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id,
                                                                 f"member{i}/stage"))
        assert steps == list(range(epochs)), i
    images = decoded_test_images(root)
    members = [model_lib.load(out / checkpoint.MEMBERS_DIR / str(i))[0] for i in range(2)]
    np.testing.assert_allclose(
        model_lib.load(out)[0].predict(images, verbose=0),
        np.mean([m.predict(images, verbose=0) for m in members], axis=0), atol=1e-5)
    assert not checkpoint.path(second).exists()


def test_progress_of_any_member_makes_a_run_resumable(tmp_path):
    assert not checkpoint.resumable(tmp_path)
    member = tmp_path / checkpoint.MEMBERS_DIR / "0"
    member.mkdir(parents=True)
    assert not checkpoint.resumable(tmp_path)
    checkpoint.finish(member)
    assert checkpoint.resumable(tmp_path)

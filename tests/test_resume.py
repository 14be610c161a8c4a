"""trainer.resume: checkpoints, their round trip, a real SIGKILL and the resumed MLflow run."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, compose_cfg, fit, kill_after_checkpoint, make_folder_dataset, run_cli
from mlflow.tracking import MlflowClient

from rps import cache
from rps.config import compose
from rps.data import dataset
from rps.errors import ConfigError, UserError
from rps.serve import logged_model
from rps.tracking import mlflow_runs
from rps.train import callbacks, checkpoint, resume

TINY = [
    "backbone=mobilenet_v2",
    "backbone.weights=null",
    "backbone.input_size=32",
    "trainer.batch_size=8",
    "trainer.patience=null",
]
STAGE1_EPOCHS, STAGE2_EPOCHS = 12, 2


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"), n_train=10, n_test=4)


def epoch_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_a_killed_sweep_job_resumes_into_its_run(root, tmp_path, mlflow_store):
    """Stage 1 on images (no cache: epochs slow enough to kill), killed with SIGKILL after
    its checkpoint of epoch 3 or later, then resumed: it goes on through stage 2."""
    sweep_dir = tmp_path / "sweep"
    out = sweep_dir / "0"
    killed = kill_after_checkpoint(
        [
            "-m",
            "data=folder",
            f"data.root={root}",
            *TINY,
            f"trainer.epochs={STAGE1_EPOCHS}",
            "cache.enabled=false",
            "finetune=top",
            f"finetune.epochs={STAGE2_EPOCHS}",
            "finetune.layers=6",
            "head.units=8",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        out,
        2,
    )
    assert killed.stage == 1 and killed.epoch < STAGE1_EPOCHS - 1

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("rps").experiment_id
    (child,) = client.search_runs([experiment], f"tags.`{mlflow_runs.PARENT_TAG}` != ''")
    assert child.info.status == "RUNNING"

    resumed = run_cli(f"trainer.resume={child.info.run_id}", f"hydra.run.dir={tmp_path / 'resume'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Keras counts on from the checkpoint: the first epoch it runs is the one after it.
    assert f"Epoch {killed.epoch + 2}/{STAGE1_EPOCHS}" in resumed.stdout
    assert "Epoch 1/" not in resumed.stdout

    run = client.get_run(child.info.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([experiment])) == 2  # the sweep's parent and this job
    assert run.data.tags[mlflow_runs.PARENT_TAG] == child.data.tags[mlflow_runs.PARENT_TAG]
    assert run.data.tags["resumed_after_epoch"] == str(killed.epoch + 1)
    total = STAGE1_EPOCHS + STAGE2_EPOCHS
    for key in (*mlflow_runs.EPOCH_METRICS.values(), "stage"):
        assert epoch_steps(client, run.info.run_id, key) == list(range(total)), key
    stages = sorted(client.get_metric_history(run.info.run_id, "stage"), key=lambda m: m.step)
    assert [m.value for m in stages] == [1] * STAGE1_EPOCHS + [2] * STAGE2_EPOCHS
    for key in ("test/accuracy", "val/best_accuracy", "time/train_s", "replicas"):
        assert key in run.data.metrics, key
    local = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in local["history"]] == list(range(total))
    assert local["history"][: killed.epoch + 1] == killed.history
    loaded = logged_model.load(run.info.run_id, tracking_uri=mlflow_store)
    assert loaded.class_names == ["paper", "rock", "scissors"]
    assert not checkpoint.path(out).exists()

    with pytest.raises(UserError, match="is FINISHED"):
        resume.prepare(compose_cfg(f"trainer.resume={run.info.run_id}"), [], REPO)


class Killed(Exception):
    pass


def training_state(model: keras.Model) -> list[np.ndarray]:
    return [
        keras.ops.convert_to_numpy(v)
        for v in (*model.trainable_weights, *model.optimizer.variables)
    ]


class Kill(keras.callbacks.Callback):
    """Stands for a kill just after epoch ``at`` was checkpointed, and keeps the state that
    the checkpoint must give back."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.state: list[np.ndarray] = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            self.state = training_state(self.model)
            raise Killed


class Probe(keras.callbacks.Callback):
    """The state the resumed run starts from."""

    def __init__(self) -> None:
        super().__init__()
        self.state: list[np.ndarray] = []

    def on_train_begin(self, logs=None):
        self.state = self.state or training_state(self.model)


@pytest.mark.parametrize(
    "at,finetune",
    [
        (1, ["finetune=none"]),
        (3, ["finetune=top", "finetune.epochs=2", "finetune.layers=6"]),
    ],
    ids=["stage1-on-features", "stage2"],
)
def test_checkpoint_round_trip(root, tmp_path, at, finetune):
    """Stage 1 runs epochs 0-2 on cached features, stage 2 (if any) epochs 3-4 on images."""
    cfg = compose.to_object(
        compose_cfg(
            "data=folder", f"data.root={root}", *TINY, "trainer.epochs=3", "head.units=8", *finetune
        )
    )
    data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed)
    store = cache.of(cfg.cache)
    kill = Kill(at)
    with pytest.raises(Killed):
        fit(cfg, data, callbacks=[kill], cache=store, checkpoints=tmp_path)
    state = checkpoint.load(tmp_path)
    assert (state.epoch, state.stage, state.stage_done) == (at, 1 if at < 3 else 2, False)

    probe = Probe()
    _, fitted = fit(cfg, data, callbacks=[probe], cache=store, checkpoints=tmp_path, resume=state)
    assert len(probe.state) == len(kill.state) > 2
    for saved, restored in zip(kill.state, probe.state, strict=True):
        np.testing.assert_array_equal(saved, restored)
    assert [(h["epoch"], h["stage"]) for h in fitted.history] == [
        (0, 1),
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 2),
    ][: cfg.trainer.epochs + (at == 3) * 2]
    assert fitted.history[: at + 1] == state.history


def test_early_stopping_counters_carry_over():
    stopping = callbacks.EarlyStopping(patience=3)
    stopping.resumed = {"wait": 2, "best": 0.75, "best_epoch": 4}
    stopping.on_train_begin()
    assert stopping.state() == {"wait": 2, "best": 0.75, "best_epoch": 4}


def test_a_live_run_cannot_be_resumed(tmp_path):
    """The lock is what tells an interrupted RUNNING run from one still training."""
    with checkpoint.lock(tmp_path):
        with pytest.raises(UserError, match="still training"):
            with checkpoint.lock(tmp_path):
                pass
    with checkpoint.lock(tmp_path):  # released with its holder
        pass


def interrupted_run(client: MlflowClient, folder: Path, status: str = "KILLED") -> str:
    experiment = client.create_experiment("rps")
    run = client.create_run(experiment, tags={"output_dir": str(folder), "overrides": "[]"})
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.mark.parametrize(
    "status,needle",
    [
        ("KILLED", "has no checkpoint"),
        ("FINISHED", "is FINISHED: there is nothing to resume"),
    ],
)
def test_runs_that_cannot_resume_are_refused(tmp_path, mlflow_store, status, needle):
    run_id = interrupted_run(MlflowClient(mlflow_store), tmp_path, status)
    with pytest.raises(UserError, match=needle):
        resume.prepare(compose_cfg(f"trainer.resume={run_id}"), [], REPO)


def test_overrides_that_change_the_training_are_refused(tmp_path, mlflow_store):
    run_id = interrupted_run(MlflowClient(mlflow_store), tmp_path)
    overrides = [f"trainer.resume={run_id}", "data.tfds_dir=/elsewhere", "head.units=8"]
    with pytest.raises(ConfigError, match="but got head.units=8. Only these") as err:
        resume.prepare(compose_cfg(*overrides), overrides, REPO)
    assert "data.tfds_dir=/elsewhere" not in str(err.value)


def test_unknown_run_id_is_one_paragraph_and_exit_2(tmp_path):
    proc = run_cli("trainer.resume=0123456789abcdef", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "no run 0123456789abcdef in the tracking store" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()

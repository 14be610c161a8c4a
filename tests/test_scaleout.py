"""Scale-out on loopback: parallel and Ray sweeps into one SQLite store, an Optuna search, and
an MLflow tracking server; tiny generated images and random weights keep each run cheap."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port, logged_runs, make_folder_dataset, run_cli, wait_for
from mlflow.tracking import MlflowClient

from rps.serve import logged_model
from rps.tracking import mlflow_runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    root = make_folder_dataset(tmp_path_factory.mktemp("data"))
    return [
        "data=folder",
        f"data.root={root}",
        "backbone=efficientnet_lite0",
        "backbone.weights=null",
        "backbone.input_size=32",
        "trainer.epochs=1",
        "trainer.batch_size=8",
        "aug=none",
        "finetune=none",
    ]


def sweep_runs(uri: str):
    """The sweep's parent run and its children, by job number."""
    found = logged_runs(uri)
    (parent,) = [r for r in found if mlflow_runs.PARENT_TAG not in r.data.tags]
    children = [r for r in found if r.data.tags.get(mlflow_runs.PARENT_TAG) == parent.info.run_id]
    return parent, sorted(children, key=lambda r: int(r.data.tags["job_num"]))


def hydra_cfg(*overrides: str):
    """The config with its ``hydra`` node, as ``python run.py <overrides> --cfg all`` shows."""
    from rps.config import compose

    return compose.config(REPO / "conf", overrides, with_hydra=True)


@pytest.mark.slow
def test_joblib_runs_jobs_at_once_into_one_sqlite_store(tiny, tmp_path, mlflow_store):
    proc = run_cli(
        "-m",
        *tiny,
        "head.units=8,16,32,-1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        fresh=True,  # a launcher of processes, from a process of its own as a user starts it
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]  # the last job is meant to fail
    assert "1 of 4 sweep jobs failed" in proc.stdout
    assert "database is locked" not in output
    parent, children = sweep_runs(mlflow_store)
    # head.units=-1 does not validate, so it opens no run.
    assert [r.info.run_name for r in children] == [
        "head.units=8",
        "head.units=16",
        "head.units=32",
    ]
    good = children
    assert {r.info.status for r in good} == {"FINISHED"} == {parent.info.status}
    for run in good:
        assert {"val/best_accuracy", "test/accuracy", "val/accuracy"} <= set(run.data.metrics)
    # The three good jobs ran side by side: each started before any of them ended.
    assert max(r.info.start_time for r in good) < min(r.info.end_time for r in good)
    assert (parent.data.tags["jobs"], parent.data.tags["failed_jobs"]) == ("4", "1")


@pytest.mark.slow
def test_ray_runs_the_jobs_as_ray_tasks(tiny, tmp_path, mlflow_store):
    proc = run_cli(
        "-m",
        *tiny,
        "head.units=8,16",
        "hydra/launcher=ray",
        "++hydra.launcher.ray.init.num_cpus=2",
        "++hydra.launcher.ray.init.include_dashboard=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        fresh=True,  # Ray's workers and its output capture belong to a process of its own
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Started a local Ray instance" in output
    assert "(_run_job pid=" in output  # Ray's prefix for what its worker processes print
    parent, children = sweep_runs(mlflow_store)
    assert [r.info.run_name for r in children] == ["head.units=8", "head.units=16"]
    assert {r.info.status for r in children} == {"FINISHED"} == {parent.info.status}
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in children}


def test_submitit_slurm_launcher_composes():
    launcher = hydra_cfg(
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
    ).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node) == ("gpu", 1)


def test_optuna_preset_maximises_validation_accuracy_with_a_seeded_sampler():
    cfg = hydra_cfg("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert (sweeper.direction, sweeper.n_trials) == ("maximize", 20)
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed is not None
    assert set(sweeper.params) == {
        "head.units",
        "head.depth",
        "head.dropout",
        "optimizer.lr",
        "optimizer.label_smoothing",
    }


@pytest.mark.slow
def test_optuna_search_goes_on_past_a_failed_trial_and_records_the_best(
    tiny, tmp_path, mlflow_store
):
    sweep_dir = tmp_path / "sweep"
    # Every searched key but head.units is fixed, to stay cheap; with this seed, the two
    # trials draw both of its values.
    proc = run_cli(
        "-m",
        *tiny,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=42",
        "head.units=-1,8",
        "head.depth=1",
        "head.dropout=0.0",
        "optimizer.lr=0.01",
        "optimizer.label_smoothing=0.1",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 sweep jobs failed" in proc.stdout
    parent, children = sweep_runs(mlflow_store)
    statuses = {r.data.params["head.units"]: r.info.status for r in children}
    assert statuses == {"8": "FINISHED"}  # head.units=-1 did not validate: no run
    (best,) = children
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_params"]["head.units"] == 8
    assert results["best_value"] == pytest.approx(best.data.metrics["val/best_accuracy"])
    assert parent.data.params["best/head.units"] == "8"
    assert parent.data.params["best/optimizer.label_smoothing"] == "0.1"
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best/val_accuracy"] == best.data.metrics["val/best_accuracy"]
    artifacts = {f.path for f in MlflowClient(mlflow_store).list_artifacts(parent.info.run_id)}
    assert {"optimization_results.yaml", "summary.md"} <= artifacts


def test_an_optuna_search_whose_every_trial_failed_ends_in_its_summary(
    tiny, tmp_path, mlflow_store
):
    proc = run_cli(
        "-m",
        *tiny,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "head.units=-1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 1
    assert "1 of 1 sweep jobs failed" in proc.stdout and "Traceback" not in proc.stderr
    assert "head.units=-1 is out of range" in proc.stdout + proc.stderr
    parent, children = sweep_runs(mlflow_store)
    assert (parent.info.status, children) == ("FAILED", [])
    assert "| 0 | FAILED |" in (tmp_path / "sweep" / "summary.md").read_text()


@pytest.fixture
def server(tmp_path):
    """``make mlflow-server`` on a free loopback port, its store in a temporary folder."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "-C",
            str(REPO),
            "-o",
            ".venv/.installed",
            "mlflow-server",
            f"PORT={port}",
            f"SERVER_DIR={tmp_path / 'server'}",
            f"BIN={Path(sys.executable).parent}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", proc)
        yield uri
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Ends make and the whole server under it: its workers outlive make by seconds, and a
    test server needs no graceful end."""
    os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_a_job_logs_to_the_tracking_server_model_included(tiny, tmp_path, server):
    import mlflow

    proc = run_cli(*tiny, f"tracking.uri={server}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone.input_size"] == "32"
    assert run.data.metrics["test/accuracy"] >= 0 and "val/best_accuracy" in run.data.metrics
    assert "metrics.json" in {f.path for f in client.list_artifacts(run.info.run_id)}
    try:
        loaded = logged_model.load(run.info.run_id, tracking_uri=server)
    finally:
        mlflow.set_tracking_uri(None)  # back to this test session's own store
    assert loaded.class_names == ["paper", "rock", "scissors"]
    assert loaded.model.output_shape == (None, 3)


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_an_unreachable_server_fails_fast_with_one_paragraph(tiny, tmp_path, multirun):
    started = time.monotonic()
    proc = run_cli(
        *(["-m", "head.units=8,16"] if multirun else []),
        *tiny,
        f"tracking.uri=http://127.0.0.1:{free_port()}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 2
    assert "error: cannot reach the MLflow tracking server at http://127.0.0.1:" in proc.stderr
    assert "make mlflow-server" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60

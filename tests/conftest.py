"""Shared test helpers: repository paths and small generated image datasets."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The real rock/paper/scissors images, beside the checkout; tests that need them skip without.
SHARED = Path(
    os.environ.get("RPS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data/rps")
)

# Real photos for evaluation only: never trained on, never used to choose anything.
REAL_DEV = SHARED.parent / "rps-real-dev"  # close-ups on green
REAL_FRAMES = SHARED.parent / "rps-real-frames"  # whole frames of people in their rooms

CLASSES = ("paper", "rock", "scissors")
# One clearly different colour per class, so a model can tell generated classes apart.
_COLOURS = [
    (220, 40, 40),
    (40, 200, 60),
    (50, 70, 230),
    (230, 200, 40),
    (160, 50, 200),
    (40, 200, 210),
]


def make_folder_dataset(
    root: Path,
    classes: Sequence[str] = CLASSES,
    n_train: int = 6,
    n_test: int = 2,
    n_val: int = 0,
    size: tuple[int, int] = (40, 30),
    ext: str = "png",
) -> Path:
    """Write ``root/{train,test[,val]}/<class>/<class>_<i>.<ext>``; return ``root``.

    Counts are per class; ``size`` is (width, height). Each image is its class colour plus
    seeded noise, so no two files are alike and the same call writes the same bytes.
    """
    rng = np.random.default_rng(0)
    counts = {"train": n_train, "test": n_test, "val": n_val}
    for split, count in counts.items():
        for k, name in enumerate(classes):
            folder = root / split / name
            if count:
                folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(-25, 26, size=(size[1], size[0], 3))
                pixels = np.clip(np.array(_COLOURS[k % len(_COLOURS)]) + noise, 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i:03d}.{ext}")
    return root


def compose_cfg(*overrides: str):
    """The job config exactly as ``python run.py <overrides>`` would compose it."""
    from rps.config import compose

    return compose.config(REPO / "conf", overrides)


def fit(cfg, data, callbacks=(), cache=None, checkpoints=None, resume=None):
    """A config's classifier, built and trained on ``data`` as a job does, with ``callbacks``
    after its own, checkpoints saved into ``checkpoints`` and resumed from ``resume``.
    Returns the classifier (at its best epoch) and what training reports."""
    import rps.train.callbacks
    from rps.train import pipeline, stages

    strategy = stages.distribution(cfg.trainer.strategy)
    classifier = pipeline.built(cfg, len(data.class_names), strategy)
    loop = rps.train.callbacks.training_loop(
        classifier.train, cfg.trainer.patience, checkpoints, resume, others=callbacks
    )
    return classifier, stages.fit(cfg, classifier, data, strategy, loop, cache)


# The files that take longest (pytest --durations), longest first. `make test` hands whole
# files to its two workers (pytest-xdist's loadfile) in the order they are collected: one of
# these started last would run alone while the other worker idles.
LONGEST_FILES = (
    "test_hands.py",
    "test_real_data.py",
    "test_ensemble.py",
    "test_tracking.py",
    "test_live.py",
    "test_cache.py",
    "test_scaleout.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then the files with slow tests, each file's slow tests first."""

    def cost(item: pytest.Item) -> tuple[int, bool]:
        name = item.path.name
        rank = LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)
        return rank, item.get_closest_marker("slow") is None

    items.sort(key=cost)


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test tracks into its own MLflow store, never the project's mlflow.db."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def kill_after_checkpoint(overrides: Sequence[str], folder: Path, epoch: int):
    """Start ``python run.py <overrides>`` and SIGKILL it once ``folder`` holds a checkpoint
    of ``epoch`` (counted from 0) or later; return that checkpoint."""
    from rps.train import checkpoint

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while (
            state := checkpoint.load(folder) if checkpoint.path(folder).exists() else None
        ) is None or state.epoch < epoch:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} in 300 s"
            time.sleep(0.1)
    finally:
        proc.kill()
    proc.wait(timeout=60)
    return checkpoint.load(folder)


# A real pretrained backbone on small inputs, two epochs: a model in seconds that learns the
# generated datasets' colour-coded classes.
TINY = (
    "backbone=efficientnet_lite0",
    "backbone.input_size=64",
    "head=linear",
    "aug=none",
    "finetune=none",
    "trainer.epochs=2",
    "trainer.batch_size=8",
)


def tracked_job(folder: Path, *overrides: str):
    """``python run.py <overrides>``, tracked in a store of its own in ``folder``: the store's
    URI, the job's output folder, its run and the finished process."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    out = folder / "run"
    proc = run_cli(*overrides, f"tracking.uri={uri}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = logged_runs(uri)
    return uri, out, run, proc


TINY_REGISTERED = "rps_tiny"  # the registered model name of the shared tiny run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny tracked model per worker, for the tests that use a model but not how it was
    trained (live.py's, evaluate.py's): its output folder, its store's URI, its run id
    (registered as ``rps_tiny``, version 1) and its test folder, which it never saw."""
    home = tmp_path_factory.mktemp("tiny-run")
    root = make_folder_dataset(home / "data", n_train=8, n_test=3)
    uri, out, run, _ = tracked_job(
        home, "data=folder", f"data.root={root}", *TINY, f"tracking.register={TINY_REGISTERED}"
    )
    return {"out": out, "uri": uri, "run_id": run.info.run_id, "folder": root / "test"}


def logged_runs(uri: str, experiment: str = "rps") -> list:
    """The runs of an experiment in the store at ``uri`` (none if it has no such experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found is not None else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    """Until ``url`` answers; fails with the server's output if it exits first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert server.poll() is None, server.stderr.read()[-3000:] if server.stderr else ""
            assert time.monotonic() < deadline, f"server did not start in {seconds:.0f} s"
            time.sleep(1)


@contextlib.contextmanager
def served_model(
    model_uri: str, tracking_uri: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``make serve`` of a logged model, as the README shows it, with nothing of the venv's
    on PATH (MLflow starts ``uvicorn`` through the shell); yields its URL."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != bin_dir.resolve()
    )
    env = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    server = subprocess.Popen(
        ["make", "-s", "serve", f"BIN={bin_dir}", f"MODEL_URI={model_uri}", f"SERVE_PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ping", server)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def post(url: str, body: dict) -> tuple[int, dict]:
    """The served model's status and answer to a JSON request."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post_images(url: str, images: np.ndarray) -> list[dict]:
    """The served model's rows for a batch of same-size RGB images."""
    status, answer = post(url, {"inputs": images.astype(float).tolist()})
    assert status == 200, answer
    return answer["predictions"]


def run_cli(
    *overrides: str,
    script: str = "run.py",
    cwd: Path = REPO,
    timeout: float = 600,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would and capture its output and exit status.

    In this process by default: the script runs from its ``__main__`` block on, as a fresh
    process would, but without starting Python, TensorFlow and MLflow again (seconds per
    call). ``fresh`` starts a new process, for what only a process shows: launchers that
    start processes of their own, and what TensorFlow's C++ start-up writes to the console.
    (The tests of imports, kill and resume, Ctrl-C, the window and servers start their own.)"""
    if fresh:
        env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
        return subprocess.run(
            [sys.executable, str(REPO / script), *overrides],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    return _in_process(script, overrides, cwd)


def _in_process(script: str, overrides: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    """What the process would leave behind is put back: the working directory, the
    environment (MLflow writes its tracking URI there), MLflow's global tracking URI and
    the root logger's handlers, which Hydra's logging config replaces."""
    import logging

    import mlflow
    from absl import logging as absl_logging

    # absl's handler closes its stream when logging is configured again, unless that stream
    # is the process's own: pytest's capture, or this call's, would be closed under us.
    absl_logging.get_absl_handler().python_handler.setStream(sys.__stderr__)

    argv, here, environ = sys.argv, os.getcwd(), dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    status = 0
    try:
        sys.argv = [str(REPO / script), *overrides]
        os.environ["HYDRA_FULL_ERROR"] = "0"
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as done:
                if isinstance(done.code, str):
                    print(done.code, file=sys.stderr)
                status = done.code if isinstance(done.code, int) else int(done.code is not None)
            except Exception:  # what Python does with an exception no one caught
                traceback.print_exc()
                status = 1
    finally:
        sys.argv = argv
        os.chdir(here)
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the environment's
        os.environ.clear()
        os.environ.update(environ)
        for handler in root.handlers:
            if handler not in handlers and isinstance(handler, logging.FileHandler):
                handler.close()  # the job's log file; a stream handler's stream is not its own
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess([script, *overrides], status, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True, scope="session")
def rps_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the whole session, never the user's, shared by pytest-xdist's workers:
    keys cover every input, so tests that share inputs may share entries (a landmark pass
    of the renders is paid once), exactly as concurrent jobs do."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "rps-cache"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("rps-cache")
    previous = os.environ.get("RPS_CACHE_DIR")
    os.environ["RPS_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["RPS_CACHE_DIR"]
    else:
        os.environ["RPS_CACHE_DIR"] = previous

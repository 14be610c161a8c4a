"""Ctrl-C stops training, even when Python swallows the first KeyboardInterrupt, and keeps
what a resume needs."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, make_folder_dataset
from mlflow.tracking import MlflowClient

from rps.train import checkpoint

# Run in a fresh interpreter whose SIGINT is Python's own, whatever the test runner's is.
SCRIPT = """
import os, signal, time
from rps.train.interrupt import CtrlC

class Freed:
    def __del__(self):  # as TensorFlow's iterators are freed: Python drops what this raises
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)

guard = CtrlC()
with guard.installed():
    Freed()
    print("went on", flush=True)
    try:
        guard.on_train_batch_end(0)
    except KeyboardInterrupt:
        print("raised at the next batch", flush=True)
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
with CtrlC().installed():
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a background job stays as is
print("done", flush=True)
"""


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_batch():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["went on", "raised at the next batch", "done"]
    assert "KeyboardInterrupt" in proc.stderr  # Python's "Exception ignored in __del__"


@pytest.mark.parametrize("sweep", [False, True], ids=["job", "sweep"])
def test_ctrl_c_kills_the_run_keeps_its_checkpoint_and_says_how_to_resume(
    sweep, tmp_path, mlflow_store
):
    """SIGINT to the process group, as a terminal sends Ctrl-C, once epoch 2 is saved."""
    root = make_folder_dataset(tmp_path / "data", n_train=10, n_test=4)
    out = tmp_path / "out"
    where = [f"hydra.sweep.dir={out}", "head.units=8,16"] if sweep else [f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "run.py"),
            *(["-m"] if sweep else []),
            "data=folder",
            f"data.root={root}",
            "backbone=mobilenet_v2",
            "backbone.weights=null",
            "backbone.input_size=32",
            "trainer.batch_size=8",
            "trainer.epochs=500",
            "cache.enabled=false",
            "finetune=none",
            *where,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    folder = out / "0" if sweep else out
    deadline = time.monotonic() + 300
    while (
        state := checkpoint.load(folder) if checkpoint.path(folder).exists() else None
    ) is None or state.epoch < 1:
        assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    stopped = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - stopped < 15
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr

    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    job = next(r for r in runs if r.data.tags.get("output_dir") == str(folder))
    assert job.info.status == "KILLED"
    assert all(r.info.status == "KILLED" for r in runs)  # a sweep's parent too
    assert len(runs) == (2 if sweep else 1)  # a sweep's second job never started
    kept = checkpoint.load(folder)
    assert kept is not None and kept.epoch >= 1
    said = " ".join(stderr.split())
    assert f"python run.py trainer.resume={job.info.run_id}" in said
    assert f"checkpoint of epoch {kept.epoch + 1} is kept" in said
    assert ("later jobs did not run" in said) == sweep

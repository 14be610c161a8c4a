"""First contact with the entry points: their help, and a config typo that leaves nothing."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, make_folder_dataset, run_cli
from mlflow.tracking import MlflowClient

from rps import errors

APPS = ["run.py", "live.py", "evaluate.py", "ensemble.py"]
HEAVY = ("tensorflow", "keras", "mlflow", "cv2")
# An app in a fresh process, reporting the heavy modules it imported.
LAUNCH = """
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps([m for m in {heavy} if m in sys.modules])))
sys.argv = [{script!r}, *{args!r}]
if {through_hydra!r}:
    import rps.config.helptext
    rps.config.helptext.answer = lambda *args, **kwargs: None
runpy.run_path({script!r}, run_name="__main__")
"""


def launched(app: str, *args: str, through_hydra: bool = False) -> subprocess.CompletedProcess:
    """``app args`` in a fresh process whose last stdout line lists the heavy modules it
    imported."""
    code = LAUNCH.format(
        heavy=HEAVY, script=str(REPO / app), args=args, through_hydra=through_hydra
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def help_of(app: str, *args: str, through_hydra: bool = False) -> tuple[str, list[str]]:
    """``app [args] --help``'s text and heavy imports; ``through_hydra``: Hydra's own
    ``--help`` with the same template, which rps.config.helptext answers faster."""
    proc = launched(app, *args, "--help", through_hydra=through_hydra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *text, imported = proc.stdout.rstrip().splitlines()
    return "\n".join(text), json.loads(imported)


@pytest.mark.parametrize("app", APPS)
def test_help_is_the_apps_own_and_imports_no_tensorflow(app):
    text, imported = help_of(app)
    assert text.startswith(f"{app}: ") and "powered by Hydra" not in text
    assert "== Examples" in text and f"python {app}" in text and "Exit status" in text
    assert "schema" not in text.split("== Config groups")[-1]  # no option of its own
    assert imported == []


@pytest.mark.parametrize(
    "app,args",
    [
        *((app, ()) for app in APPS),
        ("run.py", ("backbone=efficientnet_lite0", "aug=light", "trainer.epochs=2")),
    ],
)
def test_help_says_what_hydras_own_help_says(app, args):
    fast, _ = help_of(app, *args)
    assert fast == help_of(app, *args, through_hydra=True)[0]
    if args:
        assert "  backbone        efficientnet_lite0 | " in fast and "epochs: 2" in fast


def test_help_leaves_flags_and_bad_overrides_to_hydra():
    proc = run_cli("--hydra-help")
    assert proc.returncode == 0 and "Hydra (1." in proc.stdout
    proc = run_cli("head=bogus", "--help")
    assert proc.returncode == 2 and "Could not find 'head/bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "script,override,needle",
    [
        ("run.py", "head=huge", "Could not find 'head/huge'"),
        ("run.py", "head.units=abc", "head.units"),
        ("run.py", "trainer.batch_size=1.5", "trainer.batch_size"),
        ("evaluate.py", "batch_size=abc", "batch_size"),
        ("run.py", "head.units=", "head.units"),
    ],
)
def test_a_config_hydra_cannot_compose_exits_2_and_leaves_nothing(
    tmp_path, script, override, needle
):
    """Exit status 1 is a sweep's with failed jobs; a typo Hydra refuses is the user's to fix."""
    out = tmp_path / "out"
    proc = run_cli(override, f"hydra.run.dir={out}", script=script)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_run_help_lists_every_group_and_option_the_chosen_first():
    text, _ = help_of("run.py")
    for group in sorted(p for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "hydra"):
        (line,) = [line for line in text.splitlines() if line.split()[:1] == [group.name]]
        listed = line.split(None, 1)[1].replace("|", ",").replace(" ", "").split(",")
        assert sorted(listed) == sorted(p.stem for p in group.glob("*.yaml")), line
    assert "  backbone        hand_landmarks | " in text  # the default, first
    assert "  aug             landmarks | " in text  # what the default backbone brings


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1.0 is out of range"),
        (["data=folder"], "data.root has no value"),
        (["data=folder", "data.root=/nonexistent"], "data.root=/nonexistent is not a folder"),
        (["+head.unit=128"], "head.unit is not a key of head"),
        (["backbone=resnet50", "+aug.rotatoin=0.5"], "aug.rotatoin is not a key of aug"),
    ],
)
def test_a_config_typo_leaves_no_output_folder_and_no_run(
    overrides, message, tmp_path, mlflow_store
):
    out = tmp_path / "outputs" / "runs" / "now"
    proc = run_cli(*overrides, f"hydra.run.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")  # nothing of TensorFlow's comes first
    said = " ".join((proc.stdout + proc.stderr).split())
    assert said.count(message) == 1, said  # printed once: the paragraph, not a log line too
    assert not out.exists()
    assert MlflowClient(mlflow_store).search_experiments(filter_string="name = 'rps'") == []


@pytest.mark.parametrize(
    "app,args",
    [
        ("run.py", ["head.units=-1"]),
        ("evaluate.py", ["model_path=x", "data.root=y", "batch_size=0"]),
        ("live.py", ["run_id=x", "smooth=0"]),
    ],
)
def test_a_config_is_refused_before_tensorflow_loads(app, args, tmp_path):
    proc = launched(app, *args, f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr[-2000:]
    assert "tensorflow" not in json.loads(proc.stdout.splitlines()[-1])


def test_the_other_apps_leave_no_output_folder_either(tmp_path):
    out = tmp_path / "evaluation"
    proc = run_cli(
        "model_path=x", "data.root=y", "batch_size=0", f"hydra.run.dir={out}", script="evaluate.py"
    )
    assert proc.returncode == 2 and "batch_size=0 is out of range" in proc.stderr
    assert not out.exists()


def test_debug_runs_a_config_end_to_end_on_a_few_images(tmp_path, mlflow_store):
    root = make_folder_dataset(tmp_path / "data", n_train=12, n_test=10)
    out = tmp_path / "run"
    relative = os.path.relpath(root, REPO)  # as a user types it, from the project root
    proc = run_cli(
        "debug=default",
        "data=folder",
        f"data.root={relative}",
        "backbone=efficientnet_lite0",
        "backbone.input_size=64",
        "aug=none",  # its background views cost seconds, and test_aug covers them
        f"hydra.run.dir={out}",
        fresh=True,  # what the console shows of TensorFlow's C++ start-up is the process's
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TensorFlow's start-up lines from C++ (I0000 ..., E0000 ... cuInit) stay off the console,
    # and so do the libraries' Python warnings (MLflow's on the logged model).
    assert not re.search(r"^[IWE]\d{4} |cuInit|absl::InitializeLog", proc.stderr, re.M)
    assert "Warning:" not in proc.stdout + proc.stderr
    train, val, test = map(
        int, re.search(r"(\d+) train, (\d+) val, (\d+) test", proc.stdout).groups()
    )
    assert (train + val, test) == (3 * 8, 3 * 8)  # the first 8 of each class in each split
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["trainer.epochs"] == "1"
    assert run.data.params["data.root"] == str(root.resolve())  # logged absolute
    # The process ends without Python's teardown, and what it printed is all there.
    assert proc.stdout.rstrip().splitlines()[-1].endswith(f"outputs in {out}")


# An app's own process, `python app.py ...`, as errors.exit_status ends it.
APP = """
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from rps import errors

class Held:
    def __del__(self):
        print("torn down")

held = Held()
atexit.register(print, "exit handler ran")
pool = ThreadPoolExecutor(1)  # left open, as a sweep's launcher leaves its pool

def work():
    time.sleep(0.2)
    print("thread finished")

def main():
    pool.submit(work)
    print("printed", end="")
    if sys.argv[1:] == ["fail"]:
        raise SystemExit(3)

errors.exit_status(main)
"""


def started(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    """Python started on ``argv``, where ``{app}`` is APP written to a file."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    return subprocess.run(
        [sys.executable, *(a.format(app=app) for a in argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": ""},  # a pipe buffers the app's stdout
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args,status", [([], 0), (["fail"], 3)])
def test_an_apps_own_process_ends_without_the_teardown_and_loses_nothing(tmp_path, args, status):
    proc = started(tmp_path, "{app}", *args)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert proc.stdout.startswith("printed")  # flushed
    assert "thread finished" in proc.stdout and "exit handler ran" in proc.stdout
    assert "torn down" not in proc.stdout  # a module's objects are left to the OS


def test_a_profiler_running_an_app_still_writes_its_profile(tmp_path):
    profile = tmp_path / "app.prof"
    proc = started(tmp_path, "-m", "cProfile", "-o", str(profile), "{app}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert profile.stat().st_size > 0  # written after the app returned, as cProfile does


def test_an_app_run_by_another_program_leaves_it_running():
    errors.exit_status(lambda: None)  # returns: this test process goes on
    with pytest.raises(SystemExit) as stopped:
        errors.exit_status(lambda: sys.exit(3))
    assert stopped.value.code == 3

"""Wall time of one head sweep run serially, with joblib and with Ray, on a warm cache.

    python benchmarks/sweeps.py [--data ../shared/data/rps] [--out /tmp/rps-sweeps]
                                [--units 64,128,256,512] [--workers 2] [override ...]

One job runs first to fill the feature cache (decoded images and backbone features, which
every head shares), so the sweeps compare launchers, not who pays for the cache. Each sweep
runs in a fresh process with its own throwaway MLflow store under --out; its wall time
includes that process's start-up (and Ray's). Extra overrides go to every job, e.g.
``backbone.weights=null trainer.epochs=1`` for a quick check on generated images. Prints a
markdown table: launcher, wall time, ratio to serial, and each job's validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launchers(workers: int) -> dict[str, list[str]]:
    return {
        "serial (basic)": [],
        f"joblib, n_jobs={workers}": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"],
        f"ray, {workers} workers": [
            "hydra/launcher=ray",
            f"++hydra.launcher.ray.init.num_cpus={workers}",
            "++hydra.launcher.ray.init.include_dashboard=false",
        ],
    }


def run(out: Path, name: str, *overrides: str) -> float:
    """One run.py process into its own MLflow store; returns its wall time."""
    folder = out / name
    folder.mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *overrides],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    (folder / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}); its log: {folder / 'log.txt'}")
    return wall


def val_accuracies(store: Path) -> list[str]:
    """Each child run's best validation accuracy, in job order."""
    from mlflow.tracking import MlflowClient

    from rps.tracking import mlflow_runs, sweep

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("rps")
    if experiment is None:
        sys.exit(f"the sweep logged no experiment rps in {store}")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{mlflow_runs.PARENT_TAG}` != ''"
    )
    return [
        f"{row.val_accuracy:.4f}" if row.val_accuracy is not None else row.status
        for row in sweep.rows_of(runs)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "rps")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-sweeps"))
    parser.add_argument("--units", default="64,128,256,512", help="the head.units swept")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs")
    parser.add_argument("overrides", nargs="*", help="more overrides for every job")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"no dataset at {args.data}: pass --data /path/with/train/and/test")
    shutil.rmtree(args.out, ignore_errors=True)
    # A frozen image backbone, so the warm cache leaves each job seconds of work and the
    # launchers' own costs show; fine-tuning costs minutes per job whatever the launcher.
    base = [
        "data=folder",
        f"data.root={args.data}",
        f"cache.dir={args.out / 'cache'}",
        "experiment=cnn",
        "finetune=none",
        *args.overrides,
    ]

    warm = run(
        args.out,
        "warm-up",
        *base,
        f"head.units={args.units.split(',')[0]}",
        f"hydra.run.dir={args.out / 'warm-up' / 'run'}",
    )
    rows = []
    for label, launcher in launchers(args.workers).items():
        name = label.split(",")[0].split(" ")[0]
        wall = run(
            args.out,
            name,
            "-m",
            *base,
            f"head.units={args.units}",
            *launcher,
            f"hydra.sweep.dir={args.out / name / 'sweep'}",
        )
        rows.append((label, wall, val_accuracies(args.out / name / "mlflow.db")))
    serial = rows[0][1]
    print(
        f"### A {len(args.units.split(','))}-job sweep, `-m head.units={args.units}`, per "
        f"launcher, warm cache (`experiment=cnn finetune=none`; the warm-up job that filled "
        f"it: {warm:.0f} s)\n"
    )
    print("| launcher | wall s | x serial | val accuracy per job |\n|---|---|---|---|")
    for label, wall, accuracies in rows:
        print(f"| {label} | {wall:.0f} | {wall / serial:.2f} | {' '.join(accuracies)} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

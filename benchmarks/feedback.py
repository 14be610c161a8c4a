"""How long a user waits for rps's answers, as ratios to a bare TensorFlow import.

    python benchmarks/feedback.py [--data ../shared/data/rps] [--out /tmp/rps-feedback]
                                  [--repeats 3] [--make-test]

Each command runs in a fresh process, as a user types it, with a cache folder and MLflow
store of its own under --out. The cold job starts from an empty cache (the hand models
fetched too); the warm ones, the sweep and the Optuna search find it filled. Prints a
markdown table of medians over --repeats runs (one for the cold job, the sweep and the
search, which cost most), each with its ratio to ``python -c "import tensorflow"`` timed in
the same run, so that a busy machine moves both. ``--make-test`` also times ``make test``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], env: dict[str, str], log: Path, ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}; its output: {log}")
    return seconds


def landmark_pass(renders: Path, count: int, repeats: int) -> list[tuple[str, float]]:
    """Milliseconds per render of the landmark pass: one finder whose models run two
    threads each, against one single-threaded finder per core (what a job runs)."""
    import numpy as np

    from rps.data.folder import _read
    from rps.data.images import fit_square
    from rps.hands import detect
    from rps.startup import cores

    paths = sorted(renders.glob("test/*/*.png"))[:count]
    images = [fit_square(np.asarray(_read(p)), 256) for p in paths]
    finder = detect.HandFinder()
    ways = {
        "one finder, two threads per model": lambda: detect.every_hand(finder, images, workers=1),
        f"one finder per core ({cores()}), one thread each": lambda: detect.every_hand(
            finder, images
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved, so both meet the same machine
        for name, search in ways.items():
            started = time.perf_counter()
            search()
            times[name].append(1000 * (time.perf_counter() - started) / len(images))
    return [(name, statistics.median(ms)) for name, ms in times.items()]


# A job's imports, then the two fixed costs that rps's own start-up and exit avoid: a full
# collection (Keras' clear_session runs one per model built) and Python's teardown. "rps"
# imports TensorFlow and ends through them, as an app started as `python <app>` does.
FIXED = """
import gc, sys, time
import matplotlib.pyplot, mlflow
from rps import errors, startup

def collect():
    started = time.perf_counter()
    gc.collect()
    print(time.perf_counter() - started, time.time(), flush=True)

if sys.argv[1] == "rps":
    startup.import_tensorflow()
    errors.exit_status(collect)
else:
    import tensorflow
    collect()
"""


def fixed_costs(repeats: int) -> list[tuple[str, float, float]]:
    """(how the process ends, seconds of a full collection, seconds from the last line to
    the process's end): Python's own way against rps's, interleaved."""
    times: dict[str, list[tuple[float, float]]] = {"python": [], "rps": []}
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "fixed_costs.py"
        script.write_text(FIXED)
        for _ in range(repeats):
            for how, runs in times.items():
                proc = subprocess.run(
                    [sys.executable, str(script), how], capture_output=True, text=True, check=True
                )
                ended = time.time()
                collect, printed = map(float, proc.stdout.split())
                runs.append((collect, ended - printed))
    names = {
        "python": "as Python does",
        "rps": "as rps does (`gc.freeze()` after the imports, `os._exit` at the end)",
    }
    return [
        (names[how], statistics.median(c for c, _ in runs), statistics.median(e for _, e in runs))
        for how, runs in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "rps")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-feedback"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--make-test", action="store_true", help="time `make test` too")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    env = {
        **os.environ,
        "RPS_CACHE_DIR": str(args.out / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{args.out / 'mlflow.db'}",
    }
    python = [sys.executable]
    data = ["data=folder", f"data.root={args.data.resolve()}"]
    count = iter(range(1000))

    def job(*overrides: str, ok: tuple[int, ...] = (0,)) -> float:
        n = next(count)
        swept = "-m" in overrides or any(o.startswith("sweep=") for o in overrides)
        folder = f"hydra.{'sweep' if swept else 'run'}.dir={args.out / str(n)}"
        flags = [o for o in overrides if o.startswith("-")]  # Hydra's come before overrides
        rest = [o for o in overrides if not o.startswith("-")]
        command = [*python, "run.py", *flags, *data, *rest, folder]
        return timed(command, env, args.out / f"{n}.log", ok)

    def median(measure, repeats: int) -> float:
        return statistics.median(measure() for _ in range(repeats))

    imports = median(
        lambda: timed([*python, "-c", "import tensorflow"], env, args.out / "import.log"),
        args.repeats,
    )
    rows = [
        (
            "a config typo (`head.unitz=3`), refused",
            median(lambda: job("head.unitz=3", ok=(2,)), args.repeats),
            args.repeats,
        ),
        ("cold default job (empty cache, hand models fetched)", job(), 1),
        ("warm default job", median(job, args.repeats), args.repeats),
        ("`sweep=head`, 4 jobs, warm", job("sweep=head"), 1),
        ("`-m hparams_search=optuna`, 20 trials, warm", job("-m", "hparams_search=optuna"), 1),
    ]
    if args.make_test:
        rows.append(
            (
                "`make test`",
                timed(["make", "test"], dict(os.environ), args.out / "make-test.log"),
                1,
            )
        )
    print(f'Bare `python -c "import tensorflow"`: {imports:.1f} s (median of {args.repeats}).\n')
    print("| command | seconds | runs | ratio to the import |")
    print("|---|---|---|---|")
    for name, seconds, runs in rows:
        print(f"| {name} | {seconds:.1f} | {runs} | {seconds / imports:.2f} |")
    costs = fixed_costs(args.repeats)
    print(
        "\nA process that imported TensorFlow, MLflow and matplotlib: a full collection and "
        f"the exit, median of {args.repeats}:\n"
    )
    print("| how | gc.collect() s | exit s |")
    print("|---|---|---|")
    for name, collect, exit_seconds in costs:
        print(f"| {name} | {collect:.2f} | {exit_seconds:.2f} |")
    passes = landmark_pass(args.data, 300, args.repeats)
    print(f"\nThe landmark pass over 300 test renders at 256 px, median of {args.repeats}:\n")
    print("| how | ms per image | ratio |")
    print("|---|---|---|")
    for name, ms in passes:
        print(f"| {name} | {ms:.1f} | {ms / passes[0][1]:.2f} |")


if __name__ == "__main__":
    main()

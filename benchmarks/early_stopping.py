"""Early stopping: the patience the renders justify, and what it changes on real photos.

    python benchmarks/early_stopping.py --renders ../shared/data/rps \
        --real ../shared/data/rps-real-frames ../shared/data/rps-real-dev

For a few seeds the default config trains on the renders for a long budget with early
stopping off; the longest wait between two rises of validation accuracy (on the renders'
held-out slice, never on real photos) is what a patience must outlast. Then each seed
trains again with the default `trainer.patience`, and every model, from the long budget
with and without early stopping and from the default budget, is scored on the renders'
test split and with `python evaluate.py` on each folder of real photos.
Prints markdown tables, which benchmarks/results.py puts into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from real_photos import run  # one way to run an app and stop on its failure

REPO = Path(__file__).resolve().parents[1]
SEEDS = (42, 1, 2)
LONG = 100  # epochs: long enough for validation accuracy to peak and fall


def job(folder: Path, renders: Path, *overrides: str) -> dict:
    run(
        "run.py",
        "data=folder",
        f"data.root={renders}",
        *overrides,
        f"tracking.uri=sqlite:///{folder.parent}/mlflow.db",
        f"hydra.run.dir={folder}",
        log=folder.parent / f"{folder.name}.log",
    )
    return json.loads((folder / "metrics.json").read_text())


def scored(folder: Path, real: Path) -> float:
    out = folder.parent / f"{folder.name}-eval-{real.name}"
    run(
        "evaluate.py",
        f"model_path={folder}",
        f"data.root={real}",
        f"hydra.run.dir={out}",
        log=out.with_suffix(".log"),
    )
    return json.loads((out / "evaluation.json").read_text())["accuracy"]


def longest_wait(history: list[dict]) -> tuple[int, int]:
    """The most epochs between two rises of validation accuracy, and the epoch of its peak."""
    best, best_epoch, wait = -1.0, 0, 0
    for record in history:
        if record["val_accuracy"] > best:
            wait = max(wait, record["epoch"] - best_epoch)
            best, best_epoch = record["val_accuracy"], record["epoch"]
    return wait, best_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument("--real", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-early-stopping"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from rps.config import compose

    patience = compose.config(REPO / "conf").trainer.patience
    default_epochs = compose.config(REPO / "conf").trainer.epochs
    waits, rows = [], []
    for seed in SEEDS:
        runs = {
            f"{LONG} epochs, patience null": [f"trainer.epochs={LONG}", "trainer.patience=null"],
            f"{LONG} epochs, patience {patience}": [
                f"trainer.epochs={LONG}",
                f"trainer.patience={patience}",
            ],
            f"{default_epochs} epochs (the default), patience null": ["trainer.patience=null"],
            f"{default_epochs} epochs, patience {patience} (the default)": [],
        }
        for i, (name, overrides) in enumerate(runs.items()):
            folder = args.out / f"seed{seed}" / f"run{i}"
            metrics = job(folder, args.renders, f"trainer.seed={seed}", *overrides)
            history = metrics["history"]
            if i == 0:
                wait, peak = longest_wait(history)
                last = history[-1]["val_accuracy"]
                waits.append((seed, wait, peak, max(h["val_accuracy"] for h in history), last))
            rows.append(
                (
                    seed,
                    name,
                    len(history),
                    metrics["best_val_accuracy"],
                    metrics["test_accuracy"],
                    [scored(folder, real) for real in args.real],
                )
            )
            print(f"seed {seed}, {name}: done", file=sys.stderr)
    print(f"The default config on the renders, {LONG} epochs, early stopping off:\n")
    print(
        "| seed | longest wait between rises of val accuracy | epoch of the peak | "
        "best val accuracy | val accuracy at the end |\n|---|---|---|---|---|"
    )
    for seed, wait, peak, best, last in waits:
        print(f"| {seed} | {wait} | {peak} | {best:.3f} | {last:.3f} |")
    names = " | ".join(real.name for real in args.real)
    print(f"\nWith trainer.patience={patience} (every model restores its best epoch):\n")
    print(
        f"| seed | run | epochs run | best val accuracy | render test | {names} |\n"
        f"|---|---|---|---|---|{'---|' * len(args.real)}"
    )
    for seed, name, epochs, val, test, real in rows:
        print(
            f"| {seed} | {name} | {epochs} | {val:.3f} | {test:.3f} | "
            f"{' | '.join(f'{r:.3f}' for r in real)} |"
        )


if __name__ == "__main__":
    main()

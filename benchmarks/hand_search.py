"""What each stage of the hand search adds, and what it costs per image.

    python benchmarks/hand_search.py (--model outputs/runs/<time> | --renders <renders>) \
        ../shared/data/rps-real-frames ../shared/data/rps-real-dev

One trained landmark model (a run's output folder or its model.keras; or, given the
renders, the default trained on them with run.py) reads every image of
each labelled folder through the one predictor, once per way of searching for the hand:
the whole frame with palms kept at MediaPipe's default score (0.5) or at the 0.3 the
reference pipeline uses, then the tiles, then the retries where nothing is found. For each
it prints the share of images with a hand found, the accuracy (the predictor's surest
reading of the hands found), and the median and 90th percentile milliseconds the search
took per image (the head's time is not counted).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # rps, when it is not installed into the environment

from rps.data import folder  # noqa: E402
from rps.features.hand import HandSource  # noqa: E402
from rps.hands import detect  # noqa: E402
from rps.model import network  # noqa: E402
from rps.serve import scores  # noqa: E402
from rps.serve.predictor import Predictor  # noqa: E402


class Staged(detect.HandFinder):
    """The finder with its later stages switched off, to measure what each adds."""

    def __init__(self, min_palm_score: float, tiled: bool, retries: bool) -> None:
        super().__init__(min_palm_score=min_palm_score, tiled=tiled)
        self.retries = retries

    def hands(self, rgb, tiles=None):
        return super().hands(rgb, tiles) if self.retries else self._search(rgb, tiles)


# name: (min palm score, tiles, retries)
STAGES = {
    "whole frame, palms from 0.5 (MediaPipe's default)": (0.5, False, False),
    "whole frame, palms from 0.3 (the reference's)": (0.3, False, False),
    "+ tiles": (0.3, True, False),
    "+ retries: bordered, brightened (the default)": (0.3, True, True),
}


def train(renders: Path, out: Path, *overrides: str) -> Path:
    """The default (with ``overrides``), trained on the renders in a fresh process, as a
    user runs it; its model file."""
    run = out / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "data=folder",
            f"data.root={renders.resolve()}",
            f"hydra.run.dir={run}",
            f"tracking.uri=sqlite:///{out}/mlflow.db",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"training the default failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return run / network.MODEL_FILE


def milliseconds(finder: detect.HandFinder, images) -> list[float]:
    """What the search takes on each image."""
    ms = []
    for image in images:
        started = time.perf_counter()
        finder.hands(np.asarray(image))
        ms.append(1000 * (time.perf_counter() - started))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained landmark model")
    parser.add_argument("--renders", type=Path, help="else: train the default on these")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-hand-search"))
    parser.add_argument("sets", type=Path, nargs="+", help="labelled folders (class subfolders)")
    args = parser.parse_args()
    if args.model is None and args.renders is None:
        parser.error("give --model, a trained landmark model, or --renders to train one on")
    model, class_names = network.load(
        train(args.renders, args.out) if args.model is None else args.model
    )
    folders = {where.name: folder.labelled(where, class_names)[0] for where in args.sets}
    lines = [
        "| search | "
        + " | ".join(f"{name}: found | accuracy | ms median | ms p90" for name in folders)
        + " |",
        "|---|" + "---|---|---|---|" * len(folders),
    ]
    for name, (min_palm_score, tiled, retries) in STAGES.items():
        finder = Staged(min_palm_score, tiled, retries)
        cells = []
        for photos in folders.values():
            ms = milliseconds(finder, photos.images)
            probs = Predictor(model, class_names, HandSource(), finder).probabilities(photos.images)
            scored = scores.summary(probs, photos.labels, class_names)
            found = 1 - scored["no_hand"] / len(photos)
            cells.append(
                f"{found:.3f} | {scored['accuracy']:.3f} | {np.median(ms):.0f} | "
                f"{np.percentile(ms, 90):.0f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(f"{name}: done", file=sys.stderr)
    print("### The hand search, stage by stage\n")
    print(
        f"`python benchmarks/hand_search.py --model <default run> {' '.join(folders)}`: one "
        "model trained on the renders, the same images, each stage added to the ones above; "
        "ms per image for the search alone, on 2 cores.\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

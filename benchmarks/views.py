"""Whether the landmark head reads a hand from other sides: real hands, turned.

    python benchmarks/views.py --renders ../shared/data/rps [--tilts 30 75] \
        ../shared/data/rps-real-frames ../shared/data/rps-real-dev

The renders show hands from the front only, while players show paper edge-on and scissors
pointing at the camera. This trains the default on the renders once per
``aug.landmark_tilt``, finds the hands in real photos, turns their landmarks out of the
image plane by fixed angles (``rps.hands.landmarks.turned``), and prints each model's accuracy on
the turned hands (images with no hand left out). The landmark model's own readings of a
real edge-on hand are noisier than a turned frontal one, so this bounds what the
augmentation can give; the real sets, unturned, show what it costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hand_search import REPO, train

sys.path.insert(0, str(REPO))  # rps, when it is not installed into the environment

from rps.data import folder  # noqa: E402
from rps.hands import detect, landmarks  # noqa: E402
from rps.model import network  # noqa: E402
from rps.serve import scores  # noqa: E402

# (pitch, yaw) in degrees: the front, then toward fingertips-first and toward edge-on.
VIEWS = ((0, 0), (45, 0), (70, 0), (85, 0), (0, 45), (0, 70), (0, 85))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument("--tilts", type=int, nargs="+", default=[30, 75])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-views"))
    parser.add_argument("sets", type=Path, nargs="+", help="labelled folders (class subfolders)")
    args = parser.parse_args()
    models = {
        tilt: network.load(
            train(args.renders, args.out / f"tilt{tilt}", f"aug.landmark_tilt={tilt}")
        )
        for tilt in args.tilts
    }
    class_names = next(iter(models.values()))[1]
    finder = detect.HandFinder()
    points, labels = [], []
    for where in args.sets:
        photos = folder.labelled(where, class_names)[0]
        found = detect.first_landmarks(finder, photos.images)
        kept = ~np.isnan(found).any(axis=(1, 2))
        points.append(found[kept])
        labels.append(photos.labels[kept])
    real, truth = np.concatenate(points), np.concatenate(labels)
    lines = [
        "| `aug.landmark_tilt` | " + " | ".join(f"pitch {p}, yaw {y}" for p, y in VIEWS) + " |",
        "|---|" + "---|" * len(VIEWS),
    ]
    for tilt, (model, _) in models.items():
        cells = []
        for pitch, yaw in VIEWS:
            logits = model.predict(
                landmarks.features(landmarks.turned(real, pitch, yaw)), verbose=0
            )
            scored = scores.summary(
                scores.softmax(np.asarray(logits, np.float64)), truth, class_names
            )
            cells.append(f"{scored['accuracy']:.3f}")
        lines.append(f"| {tilt} | " + " | ".join(cells) + " |")
    print("### Real hands turned out of the image plane\n")
    print(
        f"The {len(truth)} hands found in {', '.join(f.name for f in args.sets)}, turned "
        "by fixed angles in degrees and read by the default trained on the renders with "
        "each `aug.landmark_tilt` (accuracy).\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

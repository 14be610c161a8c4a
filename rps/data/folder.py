"""Folder datasets: ``<root>/<split>/<class>/<image>``, listed, checked, decoded in parallel
and cached by the files' bytes (their digests kept by size, mtime and ctime)."""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rps.cache import ArrayCache, digest, file_digests
from rps.config.data import BadImagePolicy, FolderDataConfig
from rps.data.images import BadImage, fit_square, read_rgb
from rps.data.splits import SPLITS, Photos, Split, first_of_each
from rps.data.video import IMAGE_SUFFIXES
from rps.errors import DataError
from rps.startup import cores

log = logging.getLogger(__name__)
NOT_AN_IMAGE = "not an image file, by its suffix"
_SHOWN = 10  # bad files listed by name; the rest are counted
_PROGRESS_SECONDS = 5.0
_CACHE_KIND = "images"
_DECODED_VERSION = 2  # bump when decoding, the crop policy or what is stored changes


def root_of(cfg: FolderDataConfig) -> Path:
    return Path(cfg.root).expanduser().absolute()  # sources must outlive a change of cwd


def listed(
    root: Path, limit: int | None
) -> tuple[dict[str, Path], list[str], dict[str, tuple], list[Path]]:
    """The split folders, the class names, each split's image files and labels (the first
    ``limit`` of each class), and the files in class folders that are not images."""
    dirs = _split_dirs(root)
    class_names = _class_names(root, dirs)
    listings, others = {}, []
    for split, folder in dirs.items():
        paths, labels, not_images = _list_files(folder, class_names)
        kept = first_of_each(labels, limit)
        listings[split] = [paths[i] for i in kept], labels[kept]
        others += not_images
    _require_images(
        root,
        {split: labels for split, (_, labels) in listings.items()},
        class_names,
        "no images",
        "add images",
    )
    return dirs, class_names, listings, others


NAMED_FILES = True


def check(cfg: FolderDataConfig) -> None:
    listed(root_of(cfg), cfg.limit)


def origin(cfg: FolderDataConfig) -> tuple[str, str]:
    """Its short name and where it is: the folder's name and absolute path."""
    where = root_of(cfg).resolve()
    return where.name, str(where)


def test_split(cfg: FolderDataConfig) -> str:
    return f"the folder {root_of(cfg).resolve() / 'test'}"


def load(
    cfg: FolderDataConfig, size: int, cache: ArrayCache | None
) -> tuple[list[str], dict[str, Split]]:
    root = root_of(cfg)
    dirs, class_names, listings, others = listed(root, cfg.limit)
    if others:
        shown = ", ".join(str(path.relative_to(root)) for path in others[:_SHOWN])
        log.warning(
            "skipping %d file(s) that are not images, by their suffix: %s%s",
            len(others),
            shown,
            "" if len(others) <= _SHOWN else ", ...",
        )
    if "val" in dirs:
        log.info("validating on %s (data.val_fraction and val_groups are not used)", dirs["val"])

    key = None
    mapped = [f"{split}_images" for split in listings]
    if cache is not None:
        started = time.perf_counter()
        files = [path for paths, _ in listings.values() for path in paths]
        shas = file_digests(files, root, cache)
        names = [str(path.relative_to(root)) for path in files]
        key = digest(_DECODED_VERSION, size, names, shas)
        stored = cache.get(_CACHE_KIND, key, mapped=mapped)
        if stored is not None:
            log.info(
                "decoded images mapped from the cache (files checked in %.1f s)",
                time.perf_counter() - started,
            )
            splits, bad = _from_arrays(stored, list(listings), root, key)
            if bad:
                _handle_bad(root, bad, cfg.on_bad_image)
            return class_names, splits

    splits, bad = {}, []
    # Decoding holds the GIL in part: threads beyond the cores only contend for it.
    with ThreadPoolExecutor(cores()) as pool:
        for split, (paths, labels) in listings.items():
            splits[split], split_bad = _decode(pool, split, paths, labels, size)
            bad += split_bad
    if bad:
        _handle_bad(root, bad, cfg.on_bad_image)
        _require_images(
            root,
            {split: s.labels for split, s in splits.items()},
            class_names,
            "no readable images left after skipping",
            "replace the unreadable files",
        )
    if cache is not None and key is not None:
        cache.put(_CACHE_KIND, key, _to_arrays(splits, bad, root))
        # The next job maps what this one decoded; mapping it now gives this job the keys.
        stored = cache.get(_CACHE_KIND, key, mapped=mapped)
        if stored is not None:
            splits, _ = _from_arrays(stored, list(splits), root, key)
    return class_names, splits


def _to_arrays(splits: dict[str, Split], bad: list[BadImage], root: Path) -> dict[str, np.ndarray]:
    """Paths are stored relative to the data's root: the entry is the files', wherever they
    are (a copy, a symlink, another mount)."""

    def relative(paths: list[str]) -> np.ndarray:
        return np.array([str(Path(p).relative_to(root)) for p in paths], dtype=str)

    arrays = {
        "bad_paths": relative([b.path for b in bad]),
        "bad_reasons": np.array([b.reason for b in bad], dtype=str),
    }
    for name, split in splits.items():
        arrays |= {
            f"{name}_images": split.images,
            f"{name}_labels": split.labels,
            f"{name}_sources": relative(split.sources),
        }
    return arrays


def _from_arrays(
    arrays: dict[str, np.ndarray], names: list[str], root: Path, key: str
) -> tuple[dict[str, Split], list[BadImage]]:
    splits = {
        name: Split(
            arrays[f"{name}_images"],
            arrays[f"{name}_labels"],
            [str(root / p) for p in arrays[f"{name}_sources"]],
            key=digest(key, name),
        )
        for name in names
    }
    bad = [
        BadImage(root / path, reason)
        for path, reason in zip(arrays["bad_paths"], arrays["bad_reasons"], strict=True)
    ]
    return splits, bad


def labelled(folder: Path, class_names: list[str]) -> tuple[Photos, list[BadImage]]:
    """A folder of ``<class>/<image>`` to score a model on, labelled by ``class_names`` (the
    model's). Unreadable files are returned apart, to be listed, not scored."""
    folder = folder.expanduser().absolute()
    if not folder.is_dir():
        raise DataError(
            f"data.root={folder} is not a folder: point it at a folder with one "
            "subfolder of images per class, such as rock/, paper/ and scissors/."
        )
    found = sorted(p.name for p in _visible(folder) if p.is_dir())
    unknown = sorted(set(found) - set(class_names))
    if not found or unknown:
        what = (
            f"has class folders the model does not know ({', '.join(unknown)})"
            if unknown
            else "has no class folders"
        )
        raise DataError(
            f"{folder} {what}: the model predicts {', '.join(class_names)}, so the folder "
            "needs a subfolder of images for some of those classes (a dataset's test/ folder "
            "has that shape)."
        )
    paths, labels, others = _list_files(folder, found)
    if not paths:
        raise DataError(
            f"{folder} has class folders ({', '.join(found)}) but no images in "
            "them: add images, or point data.root at the folder that has them."
        )
    labels = np.array([class_names.index(found[label]) for label in labels], dtype=np.int32)
    with ThreadPoolExecutor(cores()) as pool:
        decoded = list(pool.map(_read, paths))
    ok = [not isinstance(d, BadImage) for d in decoded]
    return (
        Photos(
            [d for d in decoded if not isinstance(d, BadImage)],
            labels[ok],
            [str(p) for p, good in zip(paths, ok, strict=True) if good],
        ),
        [BadImage(path, NOT_AN_IMAGE) for path in others]
        + [d for d in decoded if isinstance(d, BadImage)],
    )


def _split_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise DataError(
            f"data.root={root} is not a folder: set data.root to a folder that holds "
            "train/<class>/ and test/<class>/ image folders (val/<class>/ is optional)."
        )
    dirs = {split: root / split for split in SPLITS if (root / split).is_dir()}
    missing = [f"{split}/" for split in ("train", "test") if split not in dirs]
    if missing:
        raise DataError(
            f"data.root={root} has no {' or '.join(missing)} folder: a folder dataset needs "
            "train/<class>/ and test/<class>/ subfolders of images (val/<class>/ is "
            "optional); create them or point data.root at the folder that has them."
        )
    return dirs


def _visible(folder: Path) -> list[Path]:
    """Dotfiles (.DS_Store, ._x.png, .ipynb_checkpoints) are tool litter, not data."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_names(root: Path, dirs: dict[str, Path]) -> list[str]:
    names = {
        split: sorted(p.name for p in _visible(folder) if p.is_dir())
        for split, folder in dirs.items()
    }
    class_names = names["train"]
    if len(class_names) < 2:
        raise DataError(
            f"{dirs['train']} has {len(class_names)} class folder(s) {class_names}: a "
            "classifier needs at least two, so put each class's images in its own "
            "subfolder, e.g. train/rock/ and train/paper/."
        )
    differences = []
    for split, found in names.items():
        lacks = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        if lacks:
            differences.append(f"{split}/ lacks {', '.join(lacks)}")
        if extra:
            differences.append(f"{split}/ has extra {', '.join(extra)}")
    if differences:
        raise DataError(
            f"class folders differ between splits under {root}: train/ has "
            f"{', '.join(class_names)} but {'; '.join(differences)}. Every split needs the "
            "same class subfolders: add, rename or remove folders so they match."
        )
    return class_names


def _list_files(folder: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray, list[Path]]:
    """Each class folder's image files and their labels; apart, its files that are not
    images by their suffix (notes, labels, metadata), which training and scoring skip."""
    paths, labels, others = [], [], []
    for label, name in enumerate(class_names):
        files = [p for p in _visible(folder / name) if p.is_file()]
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        paths += images
        labels += [label] * len(images)
        others += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    return paths, np.array(labels, dtype=np.int32), others


def _require_images(
    root: Path, labels: dict[str, np.ndarray], class_names: list[str], problem: str, fix: str
) -> None:
    empty = [
        f"{split}/{name}/"
        for split, split_labels in labels.items()
        for label, name in enumerate(class_names)
        if not np.any(split_labels == label)
    ]
    if empty:
        raise DataError(
            f"{problem} in class folder(s) {', '.join(empty)} under {root}: {fix}, or remove "
            "that class folder from every split."
        )


def _read(path: Path, size: int | None = None) -> np.ndarray | BadImage:
    """The decoded image, with the crop policy at ``size`` unless it is None."""
    try:
        image = read_rgb(path)
        return image if size is None else fit_square(image, size)
    except BadImage as bad:
        return bad


def _decode(
    pool: ThreadPoolExecutor, split: str, paths: list[Path], labels: np.ndarray, size: int
) -> tuple[Split, list[BadImage]]:
    """Decode in threads (Pillow and TensorFlow release the GIL), dropping unreadable files."""
    start = last = time.perf_counter()
    log.info("decoding %d %s images", len(paths), split)
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)
    bad = []
    for i, result in enumerate(pool.map(functools.partial(_read, size=size), paths)):
        if isinstance(result, BadImage):
            ok[i] = False
            bad.append(result)
        else:
            images[i] = result
        if time.perf_counter() - last > _PROGRESS_SECONDS:
            last = time.perf_counter()
            log.info("%s %d/%d decoded", split, i + 1, len(paths))
    log.info("decoded %d %s images in %.1f s", len(paths), split, time.perf_counter() - start)
    split_data = Split(images, labels, [str(p) for p in paths])
    return (split_data if ok.all() else split_data.subset(ok)), bad


def _handle_bad(root: Path, bad: list[BadImage], policy: BadImagePolicy) -> None:
    by_reason: dict[str, list[str]] = {}
    for b in bad[:_SHOWN]:
        by_reason.setdefault(b.reason, []).append(str(Path(b.path).relative_to(root)))
    listed = "; ".join(f"{', '.join(paths)} ({reason})" for reason, paths in by_reason.items())
    if len(bad) > _SHOWN:
        listed += f"; and {len(bad) - _SHOWN} more"
    if policy == BadImagePolicy.fail:
        raise DataError(
            f"{len(bad)} file(s) under {root} are not readable images: {listed}. Delete or "
            "replace them, or set data.on_bad_image=skip to train without them."
        )
    log.warning(
        "skipping %d unreadable file(s) under %s (data.on_bad_image=skip): %s",
        len(bad),
        root,
        listed,
    )

"""Load a labelled image dataset into memory, decoded once, with the model's crop policy.

The datasets are small (thousands of images), so decoding everything up front makes each
training epoch cheap and keeps Python out of the training loop. Validation is never the test
split: it is ``val/`` when a folder dataset has one, else a stratified, seeded slice of train.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from rps.cache import ArrayCache, digest, file_digest
from rps.config.data import BadImagePolicy, DataConfig, FolderDataConfig, TfdsDataConfig
from rps.data.images import BadImage, fit, read_rgb, to_rgb
from rps.data.video import IMAGE_SUFFIXES
from rps.errors import ConfigError, DataError

log = logging.getLogger(__name__)
NOT_AN_IMAGE = "not an image file, by its suffix"

SPLITS = ("train", "val", "test")
_SHOWN = 10  # bad files listed by name; the rest are counted
_PROGRESS_SECONDS = 5.0
_CONNECT_SECONDS = 10.0
_CACHE_KIND = "images"
_DECODED_VERSION = 2  # bump when decoding, the crop policy or what is stored changes


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, S, S, 3): decoded RGB, crop policy applied at size S
    labels: np.ndarray  # int32 (N,), indices into class_names
    sources: list[str]  # file path per image (or a tfds id), for error reports and grids

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(
            self.images[index],
            self.labels[index],
            [self.sources[i] for i in np.arange(len(self))[index]],
        )


@dataclass(frozen=True)
class Photos:
    """Labelled images to score a model on, each decoded at its own size: the predictor
    crops them as the model needs, and the hand finder looks at the whole image."""

    images: list[np.ndarray]  # uint8 (H, W, 3) RGB
    labels: np.ndarray  # int32 (N,), indices into the model's class names
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    class_names: list[str]  # sorted
    train: Split
    val: Split
    test: Split


def load(cfg: DataConfig, image_size: int, seed: int, cache: ArrayCache | None = None) -> Data:
    """Decode train, val and test at ``image_size``; ``seed`` picks the validation slice.

    With a ``cache``, decoded folder images are stored under a digest of the files' bytes,
    so the next job skips decoding unless a file changed.
    """
    start = time.perf_counter()
    _check_val_groups(cfg)  # the folder's layout is checked as _load_folder lists it
    if isinstance(cfg, FolderDataConfig):
        class_names, splits = _load_folder(cfg, image_size, cache)
    elif isinstance(cfg, TfdsDataConfig):
        class_names, loaded = _load_tfds(cfg, image_size)
        splits = {
            split: part.subset(_first(part.labels, cfg.limit)) for split, part in loaded.items()
        }
    else:
        raise TypeError(f"no loader for data config {type(cfg).__name__}")
    if "val" not in splits:
        splits["train"], splits["val"] = _hold_out(
            splits["train"], class_names, cfg.val_fraction, seed, cfg.val_groups
        )
    data = Data(class_names, **splits)
    log.info(
        "classes %s; %s at %dx%d, loaded in %.1f s",
        class_names,
        ", ".join(f"{len(getattr(data, s))} {s}" for s in SPLITS),
        image_size,
        image_size,
        time.perf_counter() - start,
    )
    return data


def check(cfg: DataConfig) -> None:
    """Refuse what ``load`` would refuse about the config or a folder's layout, from a
    listing of its files: a job checks this before it writes anything."""
    _check_val_groups(cfg)
    if isinstance(cfg, FolderDataConfig):
        _listed(_root_of(cfg), cfg.limit)


def _check_val_groups(cfg: DataConfig) -> None:
    if cfg.val_groups and not isinstance(cfg, FolderDataConfig):
        raise ConfigError(
            "data.val_groups=true groups training files by name, and a tfds "
            "dataset has no file names: use data=folder, or set "
            "data.val_groups=false."
        )


def _root_of(cfg: FolderDataConfig) -> Path:
    return Path(cfg.root).expanduser().absolute()  # sources must outlive a change of cwd


def _listed(
    root: Path, limit: int | None
) -> tuple[dict[str, Path], list[str], dict[str, tuple], list[Path]]:
    """The split folders, the class names, each split's image files and labels (the first
    ``limit`` of each class), and the files in class folders that are not images."""
    dirs = _split_dirs(root)
    class_names = _class_names(root, dirs)
    listings, others = {}, []
    for split, folder in dirs.items():
        paths, labels, not_images = _list_files(folder, class_names)
        kept = _first(labels, limit)
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


def _first(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The indices of the first ``limit`` items of each label, in order; all without one."""
    if limit is None:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    return np.flatnonzero(rank < limit)


def group_of(source: str) -> str:
    """A file's name without its extension and its last number: ``paper01-004.png`` is in
    group ``paper01``, ``rock_3_12.png`` in ``rock_3``."""
    return re.sub(r"[-_ ]*\d+$", "", Path(source).stem) or Path(source).stem


def _hold_out(
    train: Split, class_names: list[str], fraction: float, seed: int, by_group: bool
) -> tuple[Split, Split]:
    """Stratified so a rare class still gets validated, and seeded so runs compare.

    By group, each class holds out whole groups (at least one, never all), so no group is
    on both sides. When a class has one group only, the names carry no groups: files are
    held out instead, and the log says so.
    """
    keys = np.arange(len(train))  # each file its own unit
    if by_group:
        groups = np.array([group_of(s) for s in train.sources])
        single = [
            name
            for label, name in enumerate(class_names)
            if len(np.unique(groups[train.labels == label])) < 2
        ]
        if single:
            log.warning(
                "data.val_groups is on, but the files of class %s differ only "
                "in their last number, so they form one group: holding out files "
                "instead. Name them <group>-<n>, a group per hand or session.",
                ", ".join(single),
            )
        else:
            keys = groups
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(train), dtype=bool)
    for label in range(len(class_names)):
        members = np.flatnonzero(train.labels == label)
        units = np.unique(keys[members])
        n = len(units)
        count = min(n - 1, max(1, round(fraction * n))) if n >= 2 else 0
        held = rng.permutation(units)[:count]
        is_val[members[np.isin(keys[members], held)]] = True
    return train.subset(~is_val), train.subset(is_val)


# --- folders --------------------------------------------------------------------------------


def _load_folder(
    cfg: FolderDataConfig, size: int, cache: ArrayCache | None
) -> tuple[list[str], dict[str, Split]]:
    root = _root_of(cfg)
    dirs, class_names, listings, others = _listed(root, cfg.limit)
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
    if cache is not None:
        started = time.perf_counter()
        files = [path for paths, _ in listings.values() for path in paths]
        key = digest(_DECODED_VERSION, size, file_digest(files, root))
        stored = cache.get(_CACHE_KIND, key)
        if stored is not None:
            log.info(
                "decoded images read from the cache (files checked in %.1f s)",
                time.perf_counter() - started,
            )
            splits, bad = _from_arrays(stored, list(listings), root)
            if bad:
                _handle_bad(root, bad, cfg.on_bad_image)
            return class_names, splits

    splits, bad = {}, []
    with ThreadPoolExecutor() as pool:
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
    arrays: dict[str, np.ndarray], names: list[str], root: Path
) -> tuple[dict[str, Split], list[BadImage]]:
    splits = {
        name: Split(
            arrays[f"{name}_images"],
            arrays[f"{name}_labels"],
            [str(root / p) for p in arrays[f"{name}_sources"]],
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
    with ThreadPoolExecutor() as pool:
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
        return image if size is None else fit(image, size)
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


# --- TensorFlow Datasets --------------------------------------------------------------------


def _load_tfds(cfg: TfdsDataConfig, size: int) -> tuple[list[str], dict[str, Split]]:
    import tensorflow_datasets as tfds  # slow to import, and only this source needs it

    name = cfg.tfds_name
    try:
        builder = tfds.builder(name, data_dir=cfg.tfds_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"data.tfds_name={name} is not a TensorFlow Datasets name: check the spelling "
            "against the tfds catalog (tensorflow.org/datasets/catalog), or use data=folder."
        ) from None
    keys = builder.info.supervised_keys
    label = builder.info.features[keys[1]] if keys else None
    if not isinstance(label, tfds.features.ClassLabel):
        raise DataError(
            f"tfds dataset {name} has no (image, class label) pairs: set data.tfds_name to an "
            "image classification dataset such as rock_paper_scissors, or use data=folder."
        )
    try:
        if not builder.is_prepared():
            log.info("downloading tfds %s into %s (needs internet)", name, builder.data_dir)
            _check_reachable(builder.url_infos or {})
        builder.download_and_prepare()
    except Exception as err:  # network, disk and archive failures all mean: no data here
        reason = (str(err).splitlines() or [""])[0]
        reason = reason if len(reason) <= 160 else reason[:159] + "…"
        where = cfg.tfds_dir or "~/tensorflow_datasets by default"
        raise DataError(
            f"The tfds download of {name} failed ({type(err).__name__}: {reason}). This "
            f"machine may be offline. Run once with internet access to fill data.tfds_dir "
            f"({where}), or use data=folder data.root=/path/to/images with train/<class>/ "
            "and test/<class>/ folders."
        ) from err

    class_names = sorted(label.names)
    to_sorted = np.array([class_names.index(n) for n in label.names], dtype=np.int32)
    names = {"train": "train", "test": "test"}
    if "validation" in builder.info.splits:
        names["val"] = "validation"
    return class_names, {
        split: _tfds_split(builder, tfds_split, to_sorted, size)
        for split, tfds_split in names.items()
    }


def _check_reachable(urls) -> None:
    """Fail in seconds when offline: tfds itself retries for minutes before giving up."""
    for host in sorted({urlsplit(url).hostname for url in urls} - {None}):
        with socket.create_connection((host, 443), timeout=_CONNECT_SECONDS):
            pass


def _tfds_split(builder, split: str, to_sorted: np.ndarray, size: int) -> Split:
    import tensorflow_datasets as tfds

    images, labels = [], []
    for image, label in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True)):
        # Through Pillow, so grey and RGBA datasets convert exactly as image files do.
        pixels = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
        images.append(fit(to_rgb(pixels), size))
        labels.append(to_sorted[label])
    # The id reloads one example: tfds.load(name, split=f"{split}[i:i+1]").
    sources = [f"{builder.name}/{split}[{i}]" for i in range(len(images))]
    return Split(np.stack(images), np.array(labels, dtype=np.int32), sources)

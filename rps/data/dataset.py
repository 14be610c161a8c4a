"""Load a labelled image dataset into memory, decoded once, with the model's crop policy.

The datasets are small (thousands of images), so decoding everything up front makes each
training epoch cheap and keeps Python out of the training loop. Validation is never the test
split: it is ``val/`` when a folder dataset has one, else a stratified, seeded slice of train.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rps.cache import ArrayCache
from rps.config.data import DataConfig, FolderDataConfig, TfdsDataConfig
from rps.data import folder, tfds_data
from rps.data.splits import SPLITS, Data, Split
from rps.errors import ConfigError

log = logging.getLogger(__name__)


class DataSource(Protocol):
    """Where a data option's images come from: a folder (rps.data.folder) or the tfds
    catalog (rps.data.tfds_data). Each module is one."""

    NAMED_FILES: bool  # whether its images have file names, which val_groups groups by

    def load(
        self, cfg: Any, image_size: int, cache: ArrayCache | None
    ) -> tuple[list[str], dict[str, Split]]: ...

    def check(self, cfg: Any) -> None: ...

    def origin(self, cfg: Any) -> tuple[str, str]: ...

    def test_split(self, cfg: Any) -> str: ...


def source(cfg: DataConfig) -> DataSource:
    """The one place a data option's kind decides where its images come from."""
    if isinstance(cfg, FolderDataConfig):
        return folder
    if isinstance(cfg, TfdsDataConfig):
        return tfds_data
    raise TypeError(f"no source for data config {type(cfg).__name__}")


def load(cfg: DataConfig, image_size: int, seed: int, cache: ArrayCache | None = None) -> Data:
    """Decode train, val and test at ``image_size``; ``seed`` picks the validation slice.

    With a ``cache``, decoded folder images are stored under a digest of the files' bytes,
    so the next job skips decoding unless a file changed.
    """
    start = time.perf_counter()
    _check_val_groups(cfg)  # the folder's layout is checked as it is listed
    class_names, splits = source(cfg).load(cfg, image_size, cache)
    if "val" in splits:
        data = Data(class_names, splits["train"], splits["val"], splits["test"])
    else:
        pool = splits["train"]
        is_val = _held_out(pool, class_names, cfg.val_fraction, seed, cfg.val_groups)
        data = Data(
            class_names, pool.subset(~is_val), pool.subset(is_val), splits["test"], pool, is_val
        )
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
    source(cfg).check(cfg)


def _check_val_groups(cfg: DataConfig) -> None:
    if cfg.val_groups and not source(cfg).NAMED_FILES:
        raise ConfigError(
            "data.val_groups=true groups training files by name, and a tfds "
            "dataset has no file names: use data=folder, or set "
            "data.val_groups=false."
        )


def group_of(source: str) -> str:
    """A file's name without its extension and its last number: ``paper01-004.png`` is in
    group ``paper01``, ``rock_3_12.png`` in ``rock_3``."""
    return re.sub(r"[-_ ]*\d+$", "", Path(source).stem) or Path(source).stem


def _held_out(
    train: Split, class_names: list[str], fraction: float, seed: int, by_group: bool
) -> np.ndarray:
    """Which training images validate instead: stratified so a rare class still gets
    validated, and seeded so runs compare.

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
    return is_val

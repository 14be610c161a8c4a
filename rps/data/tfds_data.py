"""TensorFlow Datasets' catalog (``data=rps``): downloaded once by tfds, refused with one
paragraph when offline."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from rps.cache import ArrayCache
from rps.config.data import TfdsDataConfig
from rps.data.images import fit_square, to_rgb
from rps.data.splits import Split, first_of_each
from rps.errors import DataError

log = logging.getLogger(__name__)
_CONNECT_SECONDS = 10.0


NAMED_FILES = False


def check(cfg: TfdsDataConfig) -> None:
    """Nothing to check before the download, which says what went wrong itself."""


def origin(cfg: TfdsDataConfig) -> tuple[str, str]:
    return f"tfds:{cfg.tfds_name}", f"tfds:{cfg.tfds_name}"


def test_split(cfg: TfdsDataConfig) -> str:
    return f"the tfds dataset {cfg.tfds_name}"


def load(
    cfg: TfdsDataConfig, size: int, cache: ArrayCache | None
) -> tuple[list[str], dict[str, Split]]:
    """The catalog's splits, each cut to ``data.limit`` images per class; tfds keeps its
    own download cache."""
    class_names, loaded = _downloaded(cfg, size)
    return class_names, {
        split: part.subset(first_of_each(part.labels, cfg.limit)) for split, part in loaded.items()
    }


def _downloaded(cfg: TfdsDataConfig, size: int) -> tuple[list[str], dict[str, Split]]:
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
        images.append(fit_square(to_rgb(pixels), size))
        labels.append(to_sorted[label])
    # The id reloads one example: tfds.load(name, split=f"{split}[i:i+1]").
    sources = [f"{builder.name}/{split}[{i}]" for i in range(len(images))]
    return Split(np.stack(images), np.array(labels, dtype=np.int32), sources)

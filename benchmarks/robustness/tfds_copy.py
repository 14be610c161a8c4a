"""An offline copy of TensorFlow Datasets' ``rock_paper_scissors``, so that the default data
source (``data=rps``) can be trained and measured where tfds cannot download.

tfds' own builder makes it: the dataset's files are zipped into the two archives the
builder downloads (``rps.zip``, ``rps-test-set.zip``, with the same member names), and its
download is pointed at them. The builder then decodes, names and shuffles the examples as it
does for the real download, so ``data=rps data.tfds_dir=<copy>`` trains on what users get:
the same pixels, in the same order, hence the same random validation slice.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

from rps.cache import digest, file_digest
from rps.errors import UserError

log = logging.getLogger("rps")

NAME = "rock_paper_scissors"
ARCHIVES = {"train": "rps", "test": "rps-test-set"}  # split folder -> the archive's name
CLASSES = ("rock", "paper", "scissors")
KEY_FILE = "key.txt"


def prepare(data: Path, tfds_dir: Path) -> Path:
    """``tfds_dir`` holding the prepared copy of ``data``'s train/ and test/ PNGs; built once,
    and again when a file changes."""
    import tensorflow_datasets as tfds  # slow to import, and only this command needs it

    files = {split: _pngs(data / split) for split in ARCHIVES}
    key = digest(tfds.__version__, file_digest([p for paths in files.values() for p in paths]))
    key_file = tfds_dir / KEY_FILE
    builder = tfds.builder(NAME, data_dir=tfds_dir)
    if builder.is_prepared() and key_file.is_file() and key_file.read_text() == key:
        log.info("tfds copy: %s is up to date in %s", NAME, tfds_dir)
        return tfds_dir
    shutil.rmtree(tfds_dir, ignore_errors=True)
    tfds_dir.mkdir(parents=True)
    log.info("tfds copy: preparing %s in %s from %s", NAME, tfds_dir, data)
    with tempfile.TemporaryDirectory(dir=tfds_dir) as scratch:
        archives = {name: _zip(files[split], Path(scratch) / f"{name}.zip", name)
                    for split, name in ARCHIVES.items()}

        _prepare_from(builder, archives)
    key_file.write_text(key)
    return tfds_dir


def _prepare_from(builder, archives: dict[str, Path]) -> None:
    """tfds has no public way to prepare a download-only dataset from local archives, so its
    downloader is pointed at them for this one call. The pin tensorflow-datasets>=4.9.10,<4.10
    (pyproject.toml) guards ``DownloadManager.download``'s signature."""
    import tensorflow_datasets as tfds

    def download(_manager, urls: list[str]) -> list[Path]:
        return [archives[Path(urlsplit(url).path).stem] for url in urls]

    with mock.patch.object(tfds.download.DownloadManager, "download", download):
        builder.download_and_prepare()


def _pngs(split: Path) -> list[Path]:
    """The files the builder keeps: ``<class>/<name>.png`` for its three classes."""
    paths = sorted(p for name in CLASSES if (split / name).is_dir()
                   for p in (split / name).glob("*.png"))
    if not paths:
        raise UserError(
            f"{split} has no rock/, paper/ or scissors/ PNG files: --data must be a copy of "
            "the rock_paper_scissors dataset, with train/ and test/ split into those three "
            "class folders.")
    return paths


def _zip(paths: list[Path], archive: Path, top: str) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:  # PNGs do not compress
        for path in paths:
            z.write(path, f"{top}/{path.parent.name}/{path.name}")
    return archive

"""A content-addressed disk cache that concurrent jobs can share.

Entries are named by a digest of everything that determines them, so a stale entry is never
read: change an input and the name changes. Writers write a temporary file in the same
folder and rename it into place, so two jobs building the same entry cannot corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rps.config import CacheConfig

log = logging.getLogger("rps")


def user_cache_dir() -> Path:
    """``$RPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/rps``, else ``~/.cache/rps``."""
    if os.environ.get("RPS_CACHE_DIR"):
        return Path(os.environ["RPS_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "rps"
    return Path.home() / ".cache" / "rps"


def digest(*parts: Any) -> str:
    """A stable digest of JSON-able parts, numpy arrays and bytes."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).data)
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def derived_seed(*parts: Any) -> int:
    """A 32-bit seed that depends on nothing but ``parts``."""
    return int(digest(*parts)[:8], 16)


def file_digest(paths: Iterable[Path]) -> str:
    """Names, sizes and bytes of files: a content fingerprint that needs no decoding."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def write_atomically(dest: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``dest``, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


class ArrayCache:
    """Named groups of numpy arrays, one ``.npz`` file per key, under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, kind: str, key: str) -> Path:
        return self.folder / kind / f"{key}.npz"

    def get(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        # A file cut short by a crash or a full disk fails in any of these ways. Left in
        # place it would fail every later job: removed, it is rebuilt by this one.
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            log.warning("cache: removing unreadable %s (%s); it will be rebuilt", path, err)
            path.unlink(missing_ok=True)
            return None

    def put(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        return write_atomically(self.path(kind, key), write)


def of(cfg: CacheConfig) -> ArrayCache | None:
    """The cache a job's ``cache`` config asks for: none, or a folder of arrays."""
    if not cfg.enabled:
        return None
    return ArrayCache(Path(cfg.dir).expanduser() if cfg.dir else user_cache_dir())

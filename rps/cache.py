"""A content-addressed disk cache that concurrent jobs can share.

Entries are named by a digest of everything that determines them, so a stale entry is never
read: change an input and the name changes. Writers write a temporary file in the same
folder and rename it into place, so two jobs building the same entry cannot corrupt it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from rps.config.job import CacheConfig

log = logging.getLogger(__name__)


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


FILE_DIGESTS_KIND = "file_digests"  # the cache's name for its index of files' digests


def file_digests(paths: Sequence[Path], root: Path, cache: ArrayCache | None) -> list[str]:
    """Each file's sha256. With a cache, a file is read only when its size, mtime, ctime or
    inode differ from when its digest was stored: the test make and rsync use, made stricter
    by the ctime, which every write moves and no tool can set back. So a job on unchanged
    files stats them and reads none."""
    stats = [path.stat() for path in paths]
    seen = [(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for st in stats]
    names = [str(path.relative_to(root)) for path in paths]
    key = digest(str(root.resolve()))
    known: dict[str, tuple[tuple[int, ...], str]] = {}
    stored = cache.get(FILE_DIGESTS_KIND, key) if cache is not None else None
    if stored is not None:
        rows = zip(stored["names"], stored["stats"], stored["digests"], strict=True)
        known = {str(name): (tuple(int(v) for v in stat), str(sha)) for name, stat, sha in rows}
    shas, fresh = [], 0
    for path, name, stat in zip(paths, names, seen, strict=True):
        hit = known.get(name)
        if hit is not None and hit[0] == stat:
            shas.append(hit[1])
            continue
        with open(path, "rb") as f:
            shas.append(hashlib.file_digest(f, "sha256").hexdigest())
        known[name] = (stat, shas[-1])
        fresh += 1
    if cache is not None and fresh:
        cache.put(
            FILE_DIGESTS_KIND,
            key,
            {
                "names": np.array(list(known), dtype=str),
                "stats": np.array([stat for stat, _ in known.values()], dtype=np.int64),
                "digests": np.array([sha for _, sha in known.values()], dtype=str),
            },
        )
    return shas


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

    def get(
        self, kind: str, key: str, mapped: Collection[str] = ()
    ) -> dict[str, np.ndarray] | None:
        """The entry's arrays; those named in ``mapped`` are mapped from the file, read-only,
        so a page of them is read from disk only when it is used."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {
                    name: _mapped(path, stored.zip, name) if name in mapped else stored[name]
                    for name in stored.files
                }
            os.utime(path)  # its last use, which `python -m rps.cache clean --unused` reads
            return arrays
        # A file cut short by a crash or a full disk fails in any of these ways. Left in
        # place it would fail every later job: removed, it is rebuilt by this one.
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            log.warning("removing unreadable %s (%s); it will be rebuilt", path, err)
            path.unlink(missing_ok=True)
            return None

    def put(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **cast(dict[str, Any], arrays))  # names, not flags

        return write_atomically(self.path(kind, key), write)


def _mapped(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """An array of an .npz, mapped where its bytes lie: np.savez stores them uncompressed, after
    the member's local header and the .npy header."""
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name} is compressed, so it cannot be mapped")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{name}: no zip member header where the index points")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{name}: .npy format {version} is not one np.savez writes")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{name} holds objects, which cannot be mapped")
    return np.memmap(  # a member cut short raises ValueError here
        path, dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def of(cfg: CacheConfig) -> ArrayCache | None:
    """The cache a job's ``cache`` config asks for: none, or a folder of arrays."""
    if not cfg.enabled:
        return None
    return ArrayCache(Path(cfg.dir).expanduser() if cfg.dir else user_cache_dir())


@dataclass(frozen=True)
class Usage:
    kind: str  # a subfolder: images, features, landmarks, hand_models
    entries: int
    size: int  # bytes
    last_used: float | None  # the newest file's mtime


def usage(folder: Path) -> list[Usage]:
    found = []
    for kind in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        files = [f for f in kind.iterdir() if f.is_file()]
        stats = [f.stat() for f in files]
        found.append(
            Usage(
                kind.name,
                len(files),
                sum(st.st_size for st in stats),
                max((st.st_mtime for st in stats), default=None),
            )
        )
    return found


def clean(folder: Path, kinds: Sequence[str] = (), unused_days: float | None = None) -> Usage:
    """Removes the entries of ``kinds`` (every kind if none) not used for ``unused_days``
    (any if None); returns what was removed. A job that needs one rebuilds it."""
    removed, size = 0, 0
    cutoff = None if unused_days is None else time.time() - unused_days * 86400
    for kind in usage(folder):
        if kinds and kind.kind not in kinds:
            continue
        for entry in (folder / kind.kind).iterdir():
            stat = entry.stat()
            if entry.is_file() and (cutoff is None or stat.st_mtime < cutoff):
                entry.unlink(missing_ok=True)
                removed, size = removed + 1, size + stat.st_size
    return Usage(",".join(kinds) or "all", removed, size, None)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rps.cache``: what the cache holds; ``... clean``: free it."""
    parser = argparse.ArgumentParser(
        prog="python -m rps.cache",
        description="The size of rps's cache of decoded images, backbone features, hand "
        "landmarks and hand models, and a way to clean it. Every entry is rebuilt when a job "
        "needs it again (the hand models are fetched again through the package registry).",
    )
    parser.add_argument("action", nargs="?", choices=["size", "clean"], default="size")
    parser.add_argument(
        "--dir",
        type=Path,
        help="the cache folder (default: $RPS_CACHE_DIR, "
        "else $XDG_CACHE_HOME/rps, else ~/.cache/rps), as cache.dir sets it",
    )
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        help="clean only this kind (images, features, landmarks, hand_models); repeat for several",
    )
    parser.add_argument(
        "--unused",
        type=float,
        metavar="DAYS",
        help="clean only entries no job has used for this many days",
    )
    args = parser.parse_args(argv)
    folder = (args.dir or user_cache_dir()).expanduser()
    known = {u.kind for u in usage(folder)}
    if unknown := [k for k in args.kind if k not in known]:
        parser.error(
            f"--kind {' '.join(unknown)}: {folder} holds no such kind; it holds "
            f"{', '.join(sorted(known)) or 'nothing yet'}."
        )
    if args.action == "clean":
        done = clean(folder, args.kind, args.unused)
        print(f"removed {done.entries} entries ({_megabytes(done.size)}) from {folder}")
    found = usage(folder)
    print(f"{folder}: {_megabytes(sum(u.size for u in found))}")
    for kind in found:
        used = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(kind.last_used))
            if kind.last_used
            else "-"
        )
        print(
            f"  {kind.kind:<12} {kind.entries:>5} entries {_megabytes(kind.size):>12}"
            f"  last used {used}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

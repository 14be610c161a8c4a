"""The state of an unfinished run, saved after every epoch so that it can be resumed.

One ``checkpoint.npz`` in the run's output folder, replaced atomically: a kill at any
moment leaves the previous epoch's file or the new one, never a torn one. It holds only
what training changes (the trainable weights, the optimizer's variables, the best epoch's
values of the same weights) and small bookkeeping, so in stage 1 on cached features it is
the size of the head; the frozen rest is rebuilt from the config, and ``start`` (a digest
of the freshly built model) proves the rebuild is the same.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rps.cache import write_atomically
from rps.errors import UserError

FILE = "checkpoint.npz"
LOCK = ".checkpoint.lock"
FORMAT_VERSION = 1
_ARRAYS = ("weights", "best_weights")  # index in the classifier's weights -> value
_META = "meta"


@dataclass
class State:
    stage: int  # of the last finished epoch
    epoch: int  # the last finished epoch, counted from 0 across both stages
    stage_done: bool  # that stage trains no more: it ran its last epoch, or stopped early
    start: str  # digest of the model as built, before any training
    weights: dict[int, np.ndarray]  # the trainable weights, by index in classifier.weights
    optimizer: list[np.ndarray]  # the optimizer's variables, the step count included
    best_weights: dict[int, np.ndarray]  # BestWeights' snapshot, keyed the same way
    best: dict  # BestWeights' rank, epoch and val_accuracy
    early_stopping: dict | None  # its counters, when trainer.patience is set
    history: list[dict] = field(default_factory=list)  # one record per epoch so far
    seconds: float = 0.0  # training time so far

    @property
    def next_stage(self) -> int:
        return self.stage + int(self.stage_done)


def path(folder: Path) -> Path:
    return folder / FILE


def save(folder: Path, state: State) -> Path:
    meta = {k: v for k, v in asdict(state).items() if k not in (*_ARRAYS, "optimizer")}
    arrays = {f"{name}_{i}": value for name in _ARRAYS for i, value in getattr(state, name).items()}
    arrays.update({f"optimizer_{k}": value for k, value in enumerate(state.optimizer)})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            named: dict[str, Any] = {
                **arrays,
                _META: np.array(json.dumps({"version": FORMAT_VERSION, **meta})),
            }
            np.savez(f, **named)

    return write_atomically(path(folder), write)


def load(folder: Path) -> State | None:
    """The saved state, or None when the folder holds no checkpoint."""
    file = path(folder)
    if not file.is_file():
        return None
    with np.load(file, allow_pickle=False) as stored:
        meta = json.loads(str(stored[_META]))
        if meta.pop("version") != FORMAT_VERSION:
            raise UserError(
                f"{file} was written by another version of rps and cannot be "
                "resumed by this one: start the run again."
            )
        arrays: dict[str, dict[int, np.ndarray]] = {name: {} for name in (*_ARRAYS, "optimizer")}
        for key in stored.files:
            if key != _META:
                name, index = key.rsplit("_", 1)
                arrays[name][int(index)] = stored[key]
    optimizer = arrays.pop("optimizer")
    fields: dict[str, Any] = {**meta, **arrays}
    return State(**fields, optimizer=[optimizer[k] for k in range(len(optimizer))])


def resumable(folder: Path) -> bool:
    """Whether a job saved any progress into ``folder``. The checkpoint is loaded, so one
    from another version of rps fails now, before the run is touched."""
    return load(folder) is not None


def remove(folder: Path) -> None:
    """A finished run needs no checkpoint: its model holds the result."""
    for name in (FILE, LOCK):
        (folder / name).unlink(missing_ok=True)


@contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Held by the process that trains into ``folder``. A killed process releases it, so a
    RUNNING run whose lock is free was interrupted, and one whose lock is held is alive."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another process is still training into {folder} (it holds {LOCK}): wait "
                "for it to end, or stop it, before resuming its run."
            ) from None
        f.write(str(os.getpid()))
        f.flush()
        yield

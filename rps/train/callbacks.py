"""The callbacks of the training loop: the best weights, early stopping, the history, the
checkpoint and tracking, in the order they run as an epoch ends."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from rps.cache import digest
from rps.errors import UserError
from rps.train import checkpoint

log = logging.getLogger(__name__)


def trainable_weights(classifier: keras.Model) -> dict[int, keras.Variable]:
    """The weights training changes now, keyed by their index in ``classifier.weights``: the
    same key in every build of a config, whatever stage 2 unfreezes."""
    index = {id(weight): i for i, weight in enumerate(classifier.weights)}
    return {index[id(weight)]: weight for weight in classifier.trainable_weights}


def values(weights: dict[int, keras.Variable]) -> dict[int, np.ndarray]:
    return {i: keras.ops.convert_to_numpy(weight) for i, weight in weights.items()}


def assign(classifier: keras.Model, weights: dict[int, np.ndarray]) -> None:
    variables = classifier.weights
    for i, value in weights.items():
        variables[i].assign(value)


class BestWeights(keras.callbacks.Callback):
    """Remembers the classifier's weights at its best validation epoch, across both stages,
    even while stage 1 fits the head alone on cached features.

    Ranks by validation accuracy and breaks ties by lower validation loss, because a small
    validation set often reaches the same accuracy many times. Only weights that training
    changes are copied, so in stage 1 a snapshot (and a checkpoint) is the size of the head.
    """

    def __init__(self, classifier: keras.Model) -> None:
        super().__init__()
        self.classifier = classifier
        self.weights: dict[int, np.ndarray] = {}  # by index in classifier.weights
        self.rank = (-math.inf, -math.inf)
        self.epoch = -1
        self.val_accuracy = float("nan")

    def on_train_begin(self, logs=None):
        # A stage starts from the best weights (fine-tuning restores them first), so the
        # weights it is about to change join the snapshot as they are.
        for i, value in values(trainable_weights(self.classifier)).items():
            self.weights.setdefault(i, value)

    def on_epoch_end(self, epoch, logs=None):
        rank = (logs["val_accuracy"], -logs["val_loss"])
        if rank > self.rank:
            self.rank, self.epoch = rank, epoch
            self.val_accuracy = float(logs["val_accuracy"])
            self.weights.update(values(trainable_weights(self.classifier)))

    def restore(self) -> None:
        assign(self.classifier, self.weights)

    def state(self) -> dict:
        return {
            "rank": [float(r) for r in self.rank],
            "epoch": self.epoch,
            "val_accuracy": self.val_accuracy,
        }

    def resume(self, state: checkpoint.State) -> None:
        self.weights = dict(state.best_weights)
        self.rank = tuple(state.best["rank"])
        self.epoch, self.val_accuracy = state.best["epoch"], state.best["val_accuracy"]


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on validation accuracy, with counters that a checkpoint carries
    over: Keras resets them whenever a fit starts."""

    def __init__(self, patience: int) -> None:
        super().__init__(monitor="val_accuracy", patience=patience, mode="max")
        self.resumed: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in (self.resumed or {}).items():
            setattr(self, key, value)

    def state(self) -> dict:
        return {
            "wait": int(self.wait),
            "best_epoch": int(self.best_epoch),
            "best": None if self.best is None else float(self.best),
        }


class EpochLog(keras.callbacks.Callback):
    """Collects per-epoch metrics of both stages into one history with a continuous step.
    The callbacks after it (checkpoint, then tracking) read each epoch's record from it."""

    def __init__(self, history: list[dict] | None = None) -> None:
        super().__init__()
        self.history: list[dict] = history or []
        self.stage = 1
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        self.history.append(
            {
                "epoch": epoch,
                "stage": self.stage,
                "lr": float(np.asarray(lr)),
                "seconds": time.perf_counter() - self.started,
                **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"},
            }
        )


class Checkpointer(keras.callbacks.Callback):
    """Saves the training state (see rps.train.checkpoint) as each epoch ends.

    It runs before tracking does, so the tracking store never holds an epoch that the
    checkpoint lacks: a resumed run logs only the epochs tracking missed, and no epoch twice.
    """

    def __init__(
        self,
        folder: Path,
        classifier: keras.Model,
        loop: Loop,
        start: str,
        seconds: float,
    ) -> None:
        super().__init__()
        self.folder, self.classifier, self.loop, self.start = folder, classifier, loop, start
        self.started = time.perf_counter() - seconds

    def on_epoch_end(self, epoch, logs=None):
        loop, trained = self.loop, self.model  # the model this stage fits
        checkpoint.save(
            self.folder,
            checkpoint.State(
                stage=loop.history.stage,
                epoch=epoch,
                stage_done=bool(trained.stop_training) or epoch + 1 >= self.params["epochs"],
                start=self.start,
                weights=values(trainable_weights(self.classifier)),
                optimizer=[keras.ops.convert_to_numpy(v) for v in trained.optimizer.variables],
                best_weights=loop.best.weights,
                best=loop.best.state(),
                early_stopping=loop.early.state() if loop.early is not None else None,
                history=loop.history.history,
                seconds=time.perf_counter() - self.started,
            ),
        )


class Tracked(keras.callbacks.Callback):
    """Hands each epoch's record to the run's tracking (``mlflow_runs.Run.log_epoch``)."""

    def __init__(self, history: EpochLog, log_epoch: Callable[[dict], None]) -> None:
        super().__init__()
        self.history, self.log_epoch = history, log_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.log_epoch(self.history.history[-1])


@dataclass
class Loop:
    """The callbacks of one training run, kept across both stages, and the checkpoint it
    resumes from."""

    best: BestWeights
    history: EpochLog
    early: EarlyStopping | None
    then: list[keras.callbacks.Callback]  # after the bookkeeping: checkpoint, tracking, ...
    resumed: checkpoint.State | None = None

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """EarlyStopping goes before EpochLog, so the checkpoint knows when a stage stopped;
        the checkpoint before tracking (see Checkpointer)."""
        return [self.best, *([self.early] if self.early else []), self.history, *self.then]


def training_loop(
    model: keras.Model,
    patience: int | None,
    checkpoints: Path | None = None,
    resume: checkpoint.State | None = None,
    log_epoch: Callable[[dict], None] | None = None,
    others: Sequence[keras.callbacks.Callback] = (),
) -> Loop:
    """The callbacks that keep the best weights, stop early and keep the history, picked up
    where a resumed run left them; then the checkpoint (into ``checkpoints``), tracking
    (``log_epoch``) and ``others`` (TensorBoard, Ctrl-C)."""
    start = _start_digest(model) if checkpoints is not None or resume is not None else ""
    best = BestWeights(model)
    early = EarlyStopping(patience) if patience is not None else None
    history = EpochLog()
    if resume is not None:
        if resume.start != start:
            raise UserError(
                "the model this run's config builds now differs from the one it started "
                "with (a changed backbone.weights file, or another Keras version?), so the "
                "checkpoint does not fit it: start the run again instead of resuming it."
            )
        best.resume(resume)
        history.history = list(resume.history)
        log.info("resuming after epoch %d (stage %d)", resume.epoch + 1, resume.stage)
    made = Loop(best, history, early, [], resume)
    if checkpoints is not None:
        seconds = resume.seconds if resume is not None else 0.0
        made.then.append(Checkpointer(checkpoints, model, made, start, seconds))
    if log_epoch is not None:
        made.then.append(Tracked(history, log_epoch))
    made.then.extend(others)
    return made


def restore_state(classifier: keras.Model, trained: keras.Model, state: checkpoint.State) -> None:
    """The trainable weights and the optimizer's state (its step count, so a learning-rate
    schedule goes on, and its moments) as the checkpoint saved them."""
    assign(classifier, state.weights)
    optimizer = trained.optimizer
    optimizer.build(trained.trainable_variables)
    if len(optimizer.variables) != len(state.optimizer):
        raise UserError(
            f"the checkpoint holds {len(state.optimizer)} optimizer variables but "
            f"this config's optimizer has {len(optimizer.variables)}: the run "
            "cannot be resumed with this version of rps; start it again."
        )
    for variable, value in zip(optimizer.variables, state.optimizer, strict=True):
        variable.assign(value)


def _start_digest(model: keras.Model) -> str:
    return digest(*(keras.ops.convert_to_numpy(w) for w in model.weights))

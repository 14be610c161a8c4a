"""Train a classifier in up to two stages and keep the weights of its best validation epoch."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rps.cache import ArrayCache, digest
from rps.config.schema import Config, Strategy, UnfreezeConfig
from rps.data import dataset as data_lib
from rps.errors import ConfigError, UserError
from rps.features import cached as features
from rps.model import backbones, optim
from rps.model import network as model_lib
from rps.model.network import Classifier
from rps.train import checkpoint

log = logging.getLogger(__name__)

HEAD_STEPS_PER_EXECUTION = 32


def distribution(strategy: Strategy) -> tf.distribute.Strategy:
    """``mirrored``: one replica per GPU, or per logical CPU device when there is no GPU.
    MirroredStrategy's own default would take only the first CPU device, so a CPU split
    into logical devices (as the tests split it) would give one replica."""
    if strategy is Strategy.mirrored:
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def check_split(replicas: int, batch_size: int, sizes: dict[str, int]) -> None:
    """Keras fails, cryptically, when a dataset's first batch does not split evenly over
    the replicas (keras-team/keras#19246): say so before any work is done."""
    uneven = {
        name: min(batch_size, n) for name, n in sizes.items() if min(batch_size, n) % replicas
    }
    if uneven:
        raise ConfigError(
            f"trainer.strategy=mirrored splits every batch over {replicas} replicas, but the "
            f"first batch of {', '.join(f'{k} ({v} images)' for k, v in uneven.items())} "
            f"does not split evenly: make trainer.batch_size a multiple of {replicas}, and "
            "each split at least that large."
        )


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
    """Collects per-epoch metrics of both stages into one history with a continuous step,
    and hands each record to its ``listeners`` (checkpoint, then tracking) as soon as the
    epoch ends."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict] = []
        self.stage = 1
        self.listeners: list[Callable[[dict], None]] = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        record = {
            "epoch": epoch,
            "stage": self.stage,
            "lr": float(np.asarray(lr)),
            "seconds": time.perf_counter() - self.started,
            **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"},
        }
        self.history.append(record)
        for listener in self.listeners:
            listener(record)


class Checkpointer:
    """Saves the training state (see rps.train.checkpoint) as each epoch ends.

    It listens to EpochLog before tracking does, so the tracking store never holds an epoch
    that the checkpoint lacks: a resumed run logs only the epochs tracking missed, and no
    epoch twice.
    """

    def __init__(
        self,
        folder: Path,
        classifier: keras.Model,
        best: BestWeights,
        epochs_log: EpochLog,
        start: str,
        seconds: float,
    ) -> None:
        self.folder, self.classifier, self.best, self.epochs_log = (
            folder,
            classifier,
            best,
            epochs_log,
        )
        self.start = start
        self.started = time.perf_counter() - seconds
        self.stage, self.trained, self.end = 1, classifier, 0
        self.early: EarlyStopping | None = None

    def begin(
        self, stage: int, trained: keras.Model, early: EarlyStopping | None, end: int
    ) -> None:
        """``trained`` is the model this stage fits, ``end`` the epoch count it stops at."""
        self.stage, self.trained, self.early, self.end = stage, trained, early, end

    def __call__(self, record: dict) -> None:
        checkpoint.save(
            self.folder,
            checkpoint.State(
                stage=self.stage,
                epoch=record["epoch"],
                stage_done=bool(self.trained.stop_training) or record["epoch"] + 1 >= self.end,
                start=self.start,
                weights=values(trainable_weights(self.classifier)),
                optimizer=[keras.ops.convert_to_numpy(v) for v in self.trained.optimizer.variables],
                best_weights=self.best.weights,
                best=self.best.state(),
                early_stopping=self.early.state() if self.early is not None else None,
                history=self.epochs_log.history,
                seconds=time.perf_counter() - self.started,
            ),
        )


def _restore(classifier: keras.Model, trained: keras.Model, state: checkpoint.State) -> None:
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


@dataclass
class Fitted:
    """What training leaves: the classifier at its best validation epoch, and how it got
    there."""

    metrics: dict
    history: list[dict] = field(default_factory=list)


def dataset(
    inputs: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """In-memory images (or features) with one-hot labels (label smoothing needs them)."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, tf.one_hot(labels, num_classes)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def view_sampling_dataset(
    views: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int
) -> tf.data.Dataset:
    """Cached training features, a freshly drawn view of each image every epoch."""
    n_views, n = views.shape[:2]
    table = tf.constant(views)
    onehot = tf.one_hot(labels, num_classes)
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(order, draws).map(
        lambda i, r: (table[r % n_views, i], onehot[i]), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _compile(
    model: keras.Model,
    cfg: Config,
    base_lr: float,
    epochs: int,
    n_train: int,
    steps_per_execution: int = 1,
) -> None:
    steps = math.ceil(n_train / cfg.trainer.batch_size) * epochs
    model.compile(
        optimizer=optim.build(cfg.optimizer, base_lr, steps),
        loss=optim.loss(cfg.optimizer),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )


def _stages(cfg: Config) -> list[tuple[int, int, float]]:
    """(stage, epochs, learning rate): the head on a frozen backbone, then fine-tuning."""
    stages = [(1, cfg.trainer.epochs, cfg.optimizer.lr)]
    if isinstance(cfg.finetune, UnfreezeConfig):
        stages.append((2, cfg.finetune.epochs, cfg.optimizer.lr * cfg.finetune.lr_factor))
    return stages


def build(cfg: Config, num_classes: int, strategy: tf.distribute.Strategy) -> Classifier:
    """The config's classifier under ``strategy``, its backbone frozen. Sweep jobs share one
    process: each starts from a clean graph and the same seed."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    with strategy.scope():
        classifier = model_lib.build(cfg, num_classes)
    if classifier.backbone is not None:
        backbones.freeze(classifier.backbone)
    return classifier


def fit(
    cfg: Config,
    classifier: Classifier,
    data: data_lib.Data,
    strategy: tf.distribute.Strategy,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_epoch: Callable[[dict], None] | None = None,
    cache: ArrayCache | None = None,
    checkpoints: Path | None = None,
    resume: checkpoint.State | None = None,
) -> Fitted:
    """Stage 1 trains the head on a frozen backbone; stage 2 (optional) fine-tunes its top.
    The classifier ends with the weights of its best validation epoch.

    With a ``cache``, stage 1 trains the head alone on cached backbone features, which gives
    the same model for a fraction of the compute. ``callbacks`` see both stages;
    ``on_epoch`` gets each epoch's record (tracking). With ``checkpoints`` (a folder) the
    state is saved there after every epoch, and ``resume`` continues from such a state.
    The optimizers are built under ``strategy``, as :func:`build` built the model, so fit
    spreads over its replicas; the backbone's feature pass stays on one device.
    """
    log.info(
        "training on %d replica(s) (trainer.strategy=%s)",
        strategy.num_replicas_in_sync,
        cfg.trainer.strategy.value,
    )
    check_split(
        strategy.num_replicas_in_sync,
        cfg.trainer.batch_size,
        {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
    )
    model = classifier.train
    best, epochs_log, saver = _bookkeeping(model, on_epoch, checkpoints, resume)
    n_train = len(data.train.labels)
    no_hand: dict[str, int] = {}

    started = time.perf_counter() - (resume.seconds if resume is not None else 0.0)
    features_seconds = 0.0
    for stage, epochs, lr in _stages(cfg):
        if resume is not None and stage < resume.next_stage:
            continue
        if stage == 2 and isinstance(cfg.finetune, UnfreezeConfig):
            best.restore()
            unfrozen = backbones.unfreeze_top(classifier.backbone, cfg.finetune.layers)
            log.info(
                "fine-tuning: %d backbone layers with weights unfrozen, lr x %g, %d epochs",
                unfrozen,
                cfg.finetune.lr_factor,
                cfg.finetune.epochs,
            )
        # The landmark backbone trains on its features always, computed if not cached.
        on_features = stage == 1 and (cache is not None or cfg.backbone.finds_hands)
        trained, train_ds, val_ds, cached = _stage_inputs(cfg, classifier, data, cache, on_features)
        if cached is not None:
            features_seconds += cached.seconds
            no_hand, n_train = cached.no_hand or {}, len(cached.train_labels)
        # A step on cached features is so small that Python's per-step overhead dominates
        # it; but MirroredStrategy fails on several steps per call (keras-team/keras#19246).
        many = on_features and cfg.trainer.strategy is Strategy.default
        resumed = resume if resume is not None and resume.stage == stage else None
        with strategy.scope():  # the optimizer's variables are distributed too
            _compile(
                trained,
                cfg,
                lr,
                epochs,
                n_train,
                steps_per_execution=HEAD_STEPS_PER_EXECUTION if many else 1,
            )
            if resumed is not None:
                _restore(model, trained, resumed)
        early = EarlyStopping(cfg.trainer.patience) if cfg.trainer.patience is not None else None
        if resumed is not None and early is not None:
            early.resumed = resumed.early_stopping
        end = sum(r["stage"] < stage for r in epochs_log.history) + epochs
        epochs_log.stage = stage
        if saver is not None:
            saver.begin(stage, trained, early, end)
        # EarlyStopping goes before EpochLog, so the checkpoint knows when a stage stopped.
        trained.fit(
            train_ds,
            validation_data=val_ds,
            shuffle=False,
            initial_epoch=len(epochs_log.history),
            epochs=end,
            verbose=2,
            callbacks=[best, *([early] if early else []), epochs_log, *callbacks],
        )
    train_seconds = time.perf_counter() - started
    best.restore()
    log.info(
        "restored the weights of epoch %d (val_accuracy %.4f)", best.epoch + 1, best.val_accuracy
    )
    return Fitted(
        metrics={
            "best_val_accuracy": best.val_accuracy,
            "best_epoch": best.epoch + 1,
            "epochs_run": len(epochs_log.history),
            "num_train": n_train,
            "num_val": len(data.val.labels),
            "num_test": len(data.test.labels),
            "train_seconds": train_seconds,
            "features_seconds": features_seconds,
            "history": epochs_log.history,
            "replicas": strategy.num_replicas_in_sync,
            **({"no_hand": no_hand} if no_hand else {}),
        },
        history=epochs_log.history,
    )


def _bookkeeping(
    model: keras.Model,
    on_epoch: Callable[[dict], None] | None,
    checkpoints: Path | None,
    resume: checkpoint.State | None,
) -> tuple[BestWeights, EpochLog, Checkpointer | None]:
    """The callbacks that remember the best weights and the history, picked up where a
    resumed run left them, and the listeners that checkpoint and track each epoch."""
    start = _start_digest(model) if checkpoints is not None or resume is not None else ""
    best, epochs_log = BestWeights(model), EpochLog()
    if resume is not None:
        if resume.start != start:
            raise UserError(
                "the model this run's config builds now differs from the one it started "
                "with (a changed backbone.weights file, or another Keras version?), so the "
                "checkpoint does not fit it: start the run again instead of resuming it."
            )
        best.resume(resume)
        epochs_log.history = list(resume.history)
        log.info("resuming after epoch %d (stage %d)", resume.epoch + 1, resume.stage)
    saver = None
    if checkpoints is not None:
        saver = Checkpointer(
            checkpoints,
            model,
            best,
            epochs_log,
            start,
            resume.seconds if resume is not None else 0.0,
        )
        epochs_log.listeners.append(saver)
    if on_epoch is not None:
        epochs_log.listeners.append(on_epoch)  # after the checkpoint: see Checkpointer
    return best, epochs_log, saver


def _stage_inputs(
    cfg: Config,
    classifier: Classifier,
    data: data_lib.Data,
    cache: ArrayCache | None,
    on_features: bool,
) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset, features.Features | None]:
    """What a stage fits and on what: the head on cached features, or the whole model on
    images. Also the features, when it fits on them."""
    num_classes, bs = len(data.class_names), cfg.trainer.batch_size
    images_ds = functools.partial(dataset, num_classes=num_classes, batch_size=bs)
    if not on_features:
        return (
            classifier.train,
            images_ds(data.train.images, data.train.labels, shuffle_seed=cfg.trainer.seed),
            images_ds(data.val.images, data.val.labels),
            None,
        )
    cached = features.build(cfg, classifier, data, cache)
    return (
        classifier.head,
        view_sampling_dataset(cached.train, cached.train_labels, num_classes, bs, cfg.trainer.seed),
        images_ds(cached.val, cached.val_labels),
        cached,
    )

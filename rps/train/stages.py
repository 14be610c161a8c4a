"""Train a classifier in up to two stages and keep the weights of its best validation epoch."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from rps.cache import ArrayCache
from rps.config.job import Config, Strategy
from rps.config.model import UnfreezeConfig
from rps.data.splits import Data
from rps.errors import ConfigError
from rps.features import sources
from rps.features.base import Features
from rps.model import backbone, optimizer
from rps.model.network import Classifier
from rps.train.callbacks import Loop, restore_state

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
    """Cached training features, a freshly drawn view of each image every epoch. A batch's
    indices are drawn first and gathered at once: a map per image cost more than the step."""
    n_views, n = views.shape[:2]
    table = tf.constant(views)
    onehot = tf.one_hot(labels, num_classes)
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)

    # Plain indexing: AutoGraph would parse this source to rewrite nothing, on every job.
    @tf.autograph.experimental.do_not_convert
    def views_of(i: tf.Tensor, r: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather_nd(table, tf.stack([r % n_views, i], axis=1)), tf.gather(onehot, i)

    ds = tf.data.Dataset.zip(order, draws).batch(batch_size).map(views_of)
    return ds.prefetch(tf.data.AUTOTUNE)


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
        optimizer=optimizer.build(cfg.optimizer, base_lr, steps),
        loss=optimizer.loss(cfg.optimizer),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )


def _stages(cfg: Config) -> list[tuple[int, int, float, UnfreezeConfig | None]]:
    """(stage, epochs, learning rate, what it unfreezes): the head on a frozen backbone,
    then, with ``finetune`` unfreezing, fine-tuning."""
    stages: list[tuple[int, int, float, UnfreezeConfig | None]] = [
        (1, cfg.trainer.epochs, cfg.optimizer.lr, None)
    ]
    if isinstance(cfg.finetune, UnfreezeConfig):
        tune = cfg.finetune
        stages.append((2, tune.epochs, cfg.optimizer.lr * tune.lr_factor, tune))
    return stages


def fit(
    cfg: Config,
    classifier: Classifier,
    data: Data,
    strategy: tf.distribute.Strategy,
    loop: Loop,
    cache: ArrayCache | None = None,
) -> Fitted:
    """Stage 1 trains the head on a frozen backbone; stage 2 (optional) fine-tunes its top.
    The classifier ends with the weights of its best validation epoch.

    Stage 1 fits the head alone on its feature source's features when the source has them
    (cached backbone features, landmark features), which gives the same model for a
    fraction of the compute. The optimizers are built under ``strategy``, as the model was,
    so fit spreads over its replicas; the backbone's feature pass stays on one device.
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
    resume, n_train, no_hand, features_seconds = loop.resumed, len(data.train.labels), {}, 0.0
    started = time.perf_counter() - (resume.seconds if resume is not None else 0.0)
    for stage, epochs, lr, tune in _stages(cfg):
        if resume is not None and stage < resume.next_stage:
            continue
        if tune is not None:
            loop.best.restore()
            unfrozen = backbone.unfreeze_top(classifier.backbone, tune.layers)
            log.info(
                "fine-tuning: %d backbone layers with weights unfrozen, lr x %g, %d epochs",
                unfrozen,
                tune.lr_factor,
                tune.epochs,
            )
        found = (
            sources.of(cfg.backbone).features(cfg, classifier, data, cache) if stage == 1 else None
        )
        trained, train_ds, val_ds = _stage_inputs(cfg, classifier, data, found)
        if found is not None:
            features_seconds += found.seconds
            no_hand, n_train = found.no_hand or {}, len(found.train_labels)
        # A step on features is so small that Python's per-step overhead dominates it; but
        # MirroredStrategy fails on several steps per call (keras-team/keras#19246).
        many = found is not None and cfg.trainer.strategy is Strategy.default
        resumed = resume if resume is not None and resume.stage == stage else None
        with strategy.scope():  # the optimizer's variables are distributed too
            _compile(trained, cfg, lr, epochs, n_train, HEAD_STEPS_PER_EXECUTION if many else 1)
            if resumed is not None:
                restore_state(classifier.train, trained, resumed)
        if loop.early is not None:
            loop.early.resumed = resumed.early_stopping if resumed is not None else None
        loop.history.stage = stage
        trained.fit(
            train_ds,
            validation_data=val_ds,
            shuffle=False,
            initial_epoch=len(loop.history.history),
            epochs=sum(r["stage"] < stage for r in loop.history.history) + epochs,
            verbose=2,
            callbacks=loop.callbacks(),
        )
    train_seconds = time.perf_counter() - started
    best = loop.best
    best.restore()
    log.info(
        "restored the weights of epoch %d (val_accuracy %.4f)", best.epoch + 1, best.val_accuracy
    )
    history = loop.history.history
    return Fitted(
        metrics={
            "best_val_accuracy": best.val_accuracy,
            "best_epoch": best.epoch + 1,
            "epochs_run": len(history),
            "num_train": n_train,
            "num_val": len(data.val.labels),
            "num_test": len(data.test.labels),
            "train_seconds": train_seconds,
            "features_seconds": features_seconds,
            "history": history,
            "replicas": strategy.num_replicas_in_sync,
            **({"no_hand": no_hand} if no_hand else {}),
        },
        history=history,
    )


def _stage_inputs(
    cfg: Config, classifier: Classifier, data: Data, found: Features | None
) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset]:
    """What a stage fits and on what: the head on features, or the whole model on images."""
    num_classes, bs = len(data.class_names), cfg.trainer.batch_size
    images_ds = functools.partial(dataset, num_classes=num_classes, batch_size=bs)
    if found is None:
        return (
            classifier.train,
            images_ds(data.train.images, data.train.labels, shuffle_seed=cfg.trainer.seed),
            images_ds(data.val.images, data.val.labels),
        )
    return (
        classifier.head,
        view_sampling_dataset(found.train, found.train_labels, num_classes, bs, cfg.trainer.seed),
        images_ds(found.val, found.val_labels),
    )

"""Train a classifier in up to two stages, keep the best-validation weights, then test them."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from rps import backbones, evaluate, features, optim
from rps import data as data_lib
from rps import model as model_lib
from rps.cache import ArrayCache
from rps.config import Config

log = logging.getLogger("rps")

HEAD_STEPS_PER_EXECUTION = 32


class BestWeights(keras.callbacks.Callback):
    """Remembers the whole classifier's weights at its best validation epoch, across both
    stages, even while stage 1 fits the head alone on cached features.

    Ranks by validation accuracy and breaks ties by lower validation loss, because a small
    validation set often reaches the same accuracy many times.
    """

    def __init__(self, classifier: keras.Model) -> None:
        super().__init__()
        self.classifier = classifier
        self.weights: list[np.ndarray] | None = None
        self.rank = (-math.inf, -math.inf)
        self.epoch = -1
        self.val_accuracy = float("nan")

    def on_epoch_end(self, epoch, logs=None):
        rank = (logs["val_accuracy"], -logs["val_loss"])
        if rank > self.rank:
            self.rank, self.epoch = rank, epoch
            self.val_accuracy = float(logs["val_accuracy"])
            self.weights = self.classifier.get_weights()

    def restore(self) -> None:
        if self.weights is not None:
            self.classifier.set_weights(self.weights)


class EpochLog(keras.callbacks.Callback):
    """Collects per-epoch metrics of both stages into one history with a continuous step,
    and hands each record to ``on_epoch`` (tracking) as soon as the epoch ends."""

    def __init__(self, on_epoch: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.history: list[dict] = []
        self.stage = 1
        self.on_epoch = on_epoch
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch, "stage": self.stage, "lr": float(np.asarray(lr)),
                  "seconds": time.perf_counter() - self.started,
                  **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}}
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)


@dataclass
class Result:
    model: keras.Model
    metrics: dict
    test_logits: np.ndarray
    history: list[dict] = field(default_factory=list)


def dataset(inputs: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, *,
            shuffle_seed: int | None = None) -> tf.data.Dataset:
    """In-memory images (or features) with one-hot labels (label smoothing needs them)."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, tf.one_hot(labels, num_classes)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def view_sampling_dataset(views: np.ndarray, labels: np.ndarray, num_classes: int,
                          batch_size: int, seed: int) -> tf.data.Dataset:
    """Cached training features, a freshly drawn view of each image every epoch."""
    n_views, n = views.shape[:2]
    table = tf.constant(views)
    onehot = tf.one_hot(labels, num_classes)
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(order, draws).map(
        lambda i, r: (table[r % n_views, i], onehot[i]), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _compile(model: keras.Model, cfg: Config, base_lr: float, epochs: int, n_train: int,
             steps_per_execution: int = 1) -> None:
    steps = math.ceil(n_train / cfg.trainer.batch_size) * epochs
    model.compile(optimizer=optim.build(cfg.optimizer, base_lr, steps),
                  loss=optim.loss(cfg.optimizer),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution)


def _stage_callbacks(cfg: Config, shared: Sequence[keras.callbacks.Callback]) -> list:
    callbacks = list(shared)
    if cfg.trainer.patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=cfg.trainer.patience, mode="max"))
    return callbacks


def fit(cfg: Config, data: data_lib.Data,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        on_epoch: Callable[[dict], None] | None = None,
        cache: ArrayCache | None = None) -> Result:
    """Stage 1 trains the head on a frozen backbone; stage 2 (optional) fine-tunes its top.

    With a ``cache``, stage 1 trains the head alone on cached backbone features, which gives
    the same model for a fraction of the compute. ``callbacks`` see both stages;
    ``on_epoch`` gets each epoch's record (tracking).
    """
    # Sweep jobs share one process: start each from a clean graph and the same seed.
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    num_classes = len(data.class_names)
    model = model_lib.build(cfg, num_classes)
    backbone = model_lib.backbone_of(model)
    bs, seed = cfg.trainer.batch_size, cfg.trainer.seed
    best, epochs_log = BestWeights(model), EpochLog(on_epoch)
    shared = [best, epochs_log, *callbacks]
    n_train = len(data.train.labels)
    images_ds = functools.partial(dataset, num_classes=num_classes, batch_size=bs)

    backbones.freeze(backbone)
    started = time.perf_counter()
    features_seconds = 0.0
    if cache is not None:
        cached = features.build(cfg, model, data, cache)
        features_seconds = cached.seconds
        stage1_model = model.get_layer(model_lib.HEAD)
        train_ds = view_sampling_dataset(cached.train, data.train.labels, num_classes, bs, seed)
        val_ds = images_ds(cached.val, data.val.labels)
    else:
        stage1_model = model
        train_ds = images_ds(data.train.images, data.train.labels, shuffle_seed=seed)
        val_ds = images_ds(data.val.images, data.val.labels)
    # A step on cached features is so small that Python's per-step overhead dominates it.
    _compile(stage1_model, cfg, cfg.optimizer.lr, cfg.trainer.epochs, n_train,
             steps_per_execution=HEAD_STEPS_PER_EXECUTION if cache is not None else 1)
    stage1_model.fit(train_ds, validation_data=val_ds, shuffle=False,
                     epochs=cfg.trainer.epochs, verbose=2,
                     callbacks=_stage_callbacks(cfg, shared))
    if cfg.finetune.epochs > 0:
        best.restore()
        unfrozen = backbones.unfreeze_top(backbone, cfg.finetune.layers)
        log.info("fine-tuning: %d backbone layers with weights unfrozen, lr x %g, %d epochs",
                 unfrozen, cfg.finetune.lr_factor, cfg.finetune.epochs)
        _compile(model, cfg, cfg.optimizer.lr * cfg.finetune.lr_factor, cfg.finetune.epochs,
                 n_train)
        epochs_log.stage = 2
        done = len(epochs_log.history)
        model.fit(images_ds(data.train.images, data.train.labels, shuffle_seed=seed),
                  validation_data=images_ds(data.val.images, data.val.labels), shuffle=False,
                  initial_epoch=done, epochs=done + cfg.finetune.epochs, verbose=2,
                  callbacks=_stage_callbacks(cfg, shared))
    train_seconds = time.perf_counter() - started
    best.restore()
    log.info("restored the weights of epoch %d (val_accuracy %.4f)", best.epoch + 1,
             best.val_accuracy)

    logits = model.predict(data.test.images, batch_size=cfg.trainer.batch_size, verbose=0)
    test = evaluate.scores(logits, data.test.labels, data.class_names)
    misclassified = [
        {"index": i, "source": data.test.sources[i],
         "true": data.class_names[data.test.labels[i]], "predicted": data.class_names[p],
         "probability": test["confidence"][i]}
        for i, p in enumerate(test["predicted"]) if p != data.test.labels[i]
    ]
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_val_accuracy": best.val_accuracy,
        "best_epoch": best.epoch + 1,
        "epochs_run": len(epochs_log.history),
        "class_names": data.class_names,
        "per_class": test["per_class"],
        "confusion_matrix": test["confusion_matrix"],
        "misclassified": misclassified,
        "num_train": n_train,
        "num_val": len(data.val.labels),
        "num_test": len(data.test.labels),
        "train_seconds": train_seconds,
        "features_seconds": features_seconds,
        "history": epochs_log.history,
    }
    return Result(model=model_lib.inference(model), metrics=metrics, test_logits=logits,
                  history=epochs_log.history)

"""Train a classifier in up to two stages, keep the best-validation weights, then test them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from rps import backbones, evaluate, optim
from rps import data as data_lib
from rps import model as model_lib
from rps.config import Config

log = logging.getLogger("rps")


class BestWeights(keras.callbacks.Callback):
    """Remembers the weights of the best validation epoch, across both stages.

    Ranks by validation accuracy and breaks ties by lower validation loss, because a small
    validation set often reaches the same accuracy many times.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[np.ndarray] | None = None
        self.rank = (-math.inf, -math.inf)
        self.epoch = -1
        self.val_accuracy = float("nan")

    def on_epoch_end(self, epoch, logs=None):
        rank = (logs["val_accuracy"], -logs["val_loss"])
        if rank > self.rank:
            self.rank, self.epoch = rank, epoch
            self.val_accuracy = float(logs["val_accuracy"])
            self.weights = self.model.get_weights()

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class EpochLog(keras.callbacks.Callback):
    """Collects per-epoch metrics of both stages into one history with a continuous step,
    and hands each record to ``on_epoch`` (tracking) as soon as the epoch ends."""

    def __init__(self, on_epoch: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.history: list[dict] = []
        self.stage = 1
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch, "stage": self.stage, "lr": float(np.asarray(lr)),
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


def dataset(split: data_lib.Split, num_classes: int, batch_size: int, *,
            shuffle_seed: int | None = None) -> tf.data.Dataset:
    """In-memory images with one-hot labels (label smoothing needs them)."""
    labels = tf.one_hot(split.labels, num_classes)
    ds = tf.data.Dataset.from_tensor_slices((split.images, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split.labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _compile(model: keras.Model, cfg: Config, base_lr: float, epochs: int, n_train: int) -> None:
    steps = math.ceil(n_train / cfg.trainer.batch_size) * epochs
    model.compile(optimizer=optim.build(cfg.optimizer, base_lr, steps),
                  loss=optim.loss(cfg.optimizer),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def _stage_callbacks(cfg: Config, shared: Sequence[keras.callbacks.Callback]) -> list:
    callbacks = list(shared)
    if cfg.trainer.patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=cfg.trainer.patience, mode="max"))
    return callbacks


def fit(cfg: Config, data: data_lib.Data,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        on_epoch: Callable[[dict], None] | None = None) -> Result:
    """Stage 1 trains the head on a frozen backbone; stage 2 (optional) fine-tunes its top.

    ``callbacks`` see both stages; ``on_epoch`` gets each epoch's record (tracking).
    """
    # Sweep jobs share one process: start each from a clean graph and the same seed.
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    num_classes = len(data.class_names)
    model = model_lib.build(cfg, num_classes)
    backbone = model_lib.backbone_of(model)
    train_ds = dataset(data.train, num_classes, cfg.trainer.batch_size,
                       shuffle_seed=cfg.trainer.seed)
    val_ds = dataset(data.val, num_classes, cfg.trainer.batch_size)
    best, epochs_log = BestWeights(), EpochLog(on_epoch)
    shared = [best, epochs_log, *callbacks]
    n_train = len(data.train.labels)

    backbones.freeze(backbone)
    _compile(model, cfg, cfg.optimizer.lr, cfg.trainer.epochs, n_train)
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, shuffle=False, epochs=cfg.trainer.epochs,
              verbose=2, callbacks=_stage_callbacks(cfg, shared))
    if cfg.finetune.epochs > 0:
        best.restore()
        unfrozen = backbones.unfreeze_top(backbone, cfg.finetune.layers)
        log.info("fine-tuning: %d backbone layers with weights unfrozen, lr x %g, %d epochs",
                 unfrozen, cfg.finetune.lr_factor, cfg.finetune.epochs)
        _compile(model, cfg, cfg.optimizer.lr * cfg.finetune.lr_factor, cfg.finetune.epochs,
                 n_train)
        epochs_log.stage = 2
        done = len(epochs_log.history)
        model.fit(train_ds, validation_data=val_ds, shuffle=False, initial_epoch=done,
                  epochs=done + cfg.finetune.epochs, verbose=2,
                  callbacks=_stage_callbacks(cfg, shared))
    train_seconds = time.perf_counter() - started
    best.restore()
    log.info("restored the weights of epoch %d (val_accuracy %.4f)", best.epoch + 1,
             best.val_accuracy)

    logits = model.predict(data.test.images, batch_size=cfg.trainer.batch_size, verbose=0)
    test = evaluate.scores(logits, data.test.labels, data.class_names)
    misclassified = [
        {"source": data.test.sources[i], "true": data.class_names[data.test.labels[i]],
         "predicted": data.class_names[p]}
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
        "history": epochs_log.history,
    }
    return Result(model=model, metrics=metrics, test_logits=logits, history=epochs_log.history)

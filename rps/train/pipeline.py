"""The work of one job: its data and model made ready, then, inside its run, training, the
test pass and the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from rps import cache
from rps.cache import ArrayCache
from rps.config.context import JobContext
from rps.config.job import Config
from rps.data import dataset
from rps.features import sources
from rps.model.network import Classifier
from rps.serve import scores
from rps.serve.predictor import Predictor
from rps.tracking import mlflow_runs
from rps.train import callbacks, checkpoint, interrupt, outputs, resume, stages, tensorboard


@dataclass(frozen=True)
class Ready:
    store: ArrayCache | None
    data: dataset.Data
    strategy: Any
    classifier: Classifier


def ready(conf: Config) -> Ready:
    sources.of(conf.backbone).prepare()
    store = cache.of(conf.cache)
    data = dataset.load(conf.data, conf.backbone.input_size, conf.trainer.seed, store)
    strategy = stages.distribution(conf.trainer.strategy)
    return Ready(store, data, strategy, built(conf, len(data.class_names), strategy))


def built(conf: Config, num_classes: int, strategy: Any) -> Classifier:
    """The config's classifier under ``strategy``. Sweep jobs share one process: each builds
    its model from a clean graph and the config's seed, as a lone job would."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(conf.trainer.seed)
    with strategy.scope():
        return sources.classifier(conf, num_classes)


def trained(
    conf: Config,
    ready: Ready,
    ctx: JobContext,
    mlrun: mlflow_runs.Run,
    tb_dir: Path,
    resuming: bool,
    started: float,
) -> dict:
    """Training, the test pass and the outputs: the work inside the run."""
    store, data, strategy, classifier = ready.store, ready.data, ready.strategy, ready.classifier
    state = checkpoint.load(ctx.output_dir) if resuming else None
    if state is not None:
        resume.log_continuation(mlrun, state)
    else:
        _log_data(mlrun, conf, data)
    ctrl_c = interrupt.CtrlC()
    loop = callbacks.training_loop(
        classifier.train,
        conf.trainer.patience,
        checkpoints=ctx.output_dir,
        resume=state,
        log_epoch=mlrun.log_epoch,
        others=[
            tensorboard.callback(tb_dir),
            tensorboard.AugmentedImages(data.train, classifier.augment, tb_dir, conf.trainer.seed),
            ctrl_c,
        ],
    )
    with ctrl_c.installed():
        fitted = stages.fit(conf, classifier, data, strategy, loop, store)

    locate = sources.of(conf.backbone).test_locator(data.test, store)
    tested = Predictor.of(classifier.inference, data.class_names, locate=locate)
    metrics = {
        **scores.test(tested, data, conf.trainer.batch_size),
        **fitted.metrics,
        "seed": conf.trainer.seed,
        # After a resume, the time counts the work kept, not the epochs lost.
        "total_seconds": time.perf_counter()
        - started
        + (state.seconds if state is not None else 0.0),
    }
    outputs.publish(
        ctx.output_dir,
        mlrun,
        classifier.inference,
        metrics,
        data,
        conf.tracking.register,
        fitted.history,
    )
    mlrun.log_artifact(ctx.output_dir / ".hydra", "hydra")
    return metrics


def _log_data(mlrun: mlflow_runs.Run, conf: Config, data: dataset.Data) -> None:
    """The data as the run's inputs: where it is, a digest of each split's content (its
    pixels' key and its labels), and the counts per class."""
    name, where = dataset.source(conf.data).origin(conf.data)
    splits = {}
    for split in dataset.SPLITS:
        part = getattr(data, split)
        counts = np.bincount(part.labels, minlength=len(data.class_names))
        splits[split] = mlflow_runs.DatasetSplit(
            digest=cache.digest(part.key, part.labels),
            images=f"uint8{list(part.image_shape)}",
            classes=data.class_names,
            counts=dict(zip(data.class_names, counts.tolist(), strict=True)),
        )
    mlrun.log_datasets(name, where, splits)

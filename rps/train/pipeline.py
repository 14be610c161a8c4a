"""The work of one job: its data and model made ready, then, inside its run, training, the
test pass and the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rps import cache as cache_lib
from rps.config.context import JobContext
from rps.config.schema import Config, FolderDataConfig, TfdsDataConfig
from rps.data import dataset as data_lib
from rps.features import cached as features
from rps.hands import detect as hands
from rps.model.network import Classifier
from rps.serve import scores
from rps.serve.predictor import Predictor
from rps.tracking import runs as tracking
from rps.train import checkpoint, interrupt, outputs, resume, tensorboard
from rps.train import fit as train


@dataclass(frozen=True)
class Ready:
    store: cache_lib.ArrayCache | None
    data: data_lib.Data
    strategy: Any
    classifier: Classifier


def ready(conf: Config) -> Ready:
    if conf.backbone.finds_hands:
        hands.model_files()  # fetched here, where being offline is refused before the run
    store = cache_lib.of(conf.cache)
    data = data_lib.load(conf.data, conf.backbone.input_size, conf.trainer.seed, store)
    strategy = train.distribution(conf.trainer.strategy)
    return Ready(store, data, strategy, train.build(conf, len(data.class_names), strategy))


def trained(
    conf: Config,
    ready: Ready,
    ctx: JobContext,
    mlrun: tracking.Run,
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
    callbacks = [
        tensorboard.callback(tb_dir),
        tensorboard.AugmentedImages(
            data.train.images, classifier.augment, tb_dir, conf.trainer.seed
        ),
        ctrl_c,
    ]
    with ctrl_c.installed():
        fitted = train.fit(
            conf,
            classifier,
            data,
            strategy,
            callbacks,
            on_epoch=mlrun.log_epoch,
            cache=store,
            checkpoints=ctx.output_dir,
            resume=state,
        )

    tested = Predictor.of(classifier.inference, data.class_names)
    if tested.finder is not None:
        tested.locate = lambda images: features.cached_landmarks(
            images, "test", store, tested.finder
        )[0]
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


def _log_data(mlrun: tracking.Run, conf: Config, data: data_lib.Data) -> None:
    """The data as the run's inputs: where it is, a digest of each split's content (every
    image subsampled 4x each way, and the labels), and the counts per class."""
    if isinstance(conf.data, FolderDataConfig):
        where = Path(conf.data.root).expanduser().resolve()
        name, source = where.name, str(where)
    elif isinstance(conf.data, TfdsDataConfig):
        name = source = f"tfds:{conf.data.tfds_name}"
    else:
        raise TypeError(f"no source for data config {type(conf.data).__name__}")
    splits = {}
    for split in data_lib.SPLITS:
        part = getattr(data, split)
        counts = np.bincount(part.labels, minlength=len(data.class_names))
        splits[split] = tracking.DatasetSplit(
            digest=cache_lib.digest(part.labels, part.images[:, ::4, ::4]),
            images=f"{part.images.dtype}{list(part.images.shape)}",
            classes=data.class_names,
            counts=dict(zip(data.class_names, counts.tolist(), strict=True)),
        )
    mlrun.log_datasets(name, source, splits)

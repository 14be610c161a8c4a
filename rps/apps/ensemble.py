"""``ensemble.py``: one model that averages the logits of finished runs.

One run moves by several points from one seed to the next, and the seed that will lose is
not known in advance. The average of a few runs' logits scores about as well as their mean
or better, and the worst run no longer decides. Each member nests whole inside the
ensemble, so the ensemble takes what its members take (raw RGB, or for landmark heads the
hand's features) and classifies through the same predictor as any rps model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras

from rps import cache
from rps.config import compose
from rps.config.apps import EnsembleConfig
from rps.config.job import Config, TrackingConfig
from rps.data import dataset
from rps.errors import UserError
from rps.features import sources
from rps.serve import logged_model, scores
from rps.serve.predictor import Predictor
from rps.tracking import backend, mlflow_runs
from rps.train import outputs

log = logging.getLogger(__name__)

MEMBERS_TAG = "ensemble_members"  # the members' run ids, as JSON


@dataclass(frozen=True)
class Member:
    run_id: str
    model: keras.Model
    class_names: list[str]
    cfg: Config  # the config it trained with
    test_accuracy: float | None
    experiment_id: str


def member_runs(conf: EnsembleConfig, uri: str) -> list:
    """The members' MLflow runs, each checked to have finished (only then is it tested)."""
    client = backend.client_for(uri)
    if conf.sweep_id:
        parent = mlflow_runs.find_run(uri, conf.sweep_id)
        runs = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{mlflow_runs.PARENT_TAG}` = '{conf.sweep_id}'",
            order_by=["attributes.start_time ASC"],
        )
        finished = [run for run in runs if run.info.status == "FINISHED"]
        if len(finished) < 2:
            raise UserError(
                f"sweep {conf.sweep_id} has {len(finished)} finished job(s) of {len(runs)}, and "
                "an ensemble needs two or more: wait for its jobs to finish, or check that "
                "sweep_id is the sweep's parent run in `mlflow ui` (not one of its jobs)."
            )
        return finished
    runs = [mlflow_runs.find_run(uri, run_id) for run_id in conf.runs]
    if len(runs) < 2:
        raise UserError(
            f"runs={list(conf.runs)} names one run, and an ensemble needs two or "
            "more: list the run ids of several finished runs."
        )
    unfinished = [
        f"{run.info.run_id} ({run.info.status})" for run in runs if run.info.status != "FINISHED"
    ]
    if unfinished:
        raise UserError(
            f"only a finished run has a tested model to join an ensemble, but "
            f"{', '.join(unfinished)} did not finish: resume it (trainer.resume=<run id>) or "
            "leave it out."
        )
    return runs


def load_members(conf: EnsembleConfig, uri: str) -> list[Member]:
    given = [f"data.root={conf.data.root}"] if conf.data.root else []
    members = []
    for run in member_runs(conf, uri):
        run_id = run.info.run_id
        loaded = logged_model.load(run_id, tracking_uri=uri)
        cfg = compose.to_object(
            mlflow_runs.run_config(run, uri, given, "leave this run out of the ensemble")
        )
        members.append(
            Member(
                run_id,
                loaded.model,
                loaded.class_names,
                cfg,
                run.data.metrics.get("test/accuracy"),
                run.info.experiment_id,
            )
        )
    first = members[0]
    for member in members[1:]:
        if member.class_names != first.class_names:
            raise UserError(
                f"run {member.run_id} predicts {member.class_names} but run {first.run_id} "
                f"predicts {first.class_names}: an ensemble averages logits class by class, so "
                "its members must be trained on the same classes, in the same order."
            )
        if _test_split(member.cfg) != _test_split(first.cfg):
            raise UserError(
                f"run {member.run_id} was tested on {_test_split(member.cfg)} but run "
                f"{first.run_id} on {_test_split(first.cfg)}: the ensemble is tested on its "
                "members' test split, so they must share one."
            )
    return members


def _test_split(cfg: Config) -> str:
    return dataset.source(cfg.data).test_split(cfg.data)


def run(conf: EnsembleConfig, output_dir: Path, root: Path) -> dict:
    """Load and check the members, build and test the ensemble, then write and log it."""
    uri = backend.store_uri(TrackingConfig(uri=conf.tracking.uri), root)
    members = load_members(conf, uri)
    model = sources.average([m.model for m in members])
    first = members[0].cfg
    # Images load at the input size the largest image member crops to, or, where any size
    # does (landmark members), the size the members trained on.
    size = sources.of_model(model).input_size(model) or first.backbone.input_size
    data = dataset.load(first.data, size, first.trainer.seed, cache.of(first.cache))
    accuracies = [m.test_accuracy for m in members if m.test_accuracy is not None]
    metrics = {
        **scores.test(Predictor.of(model, members[0].class_names), data, first.trainer.batch_size),
        "members": [m.run_id for m in members],
        "members_test_accuracy": accuracies,
        "num_test": len(data.test.labels),
    }

    experiment = (
        conf.tracking.experiment
        or backend.client_for(uri).get_experiment(members[0].experiment_id).name
    )
    name = f"ensemble of {len(members)} runs"
    tags = {
        MEMBERS_TAG: json.dumps(metrics["members"]),
        "output_dir": str(output_dir),
        **mlflow_runs.git_state(root),
    }
    settings = TrackingConfig(uri=uri, experiment=experiment, register=conf.tracking.register)
    with mlflow_runs.job_run(settings, root, name, tags) as mlrun:
        mlrun.log_params(
            {"members": ",".join(metrics["members"]), "num_members": str(len(members))}
        )
        outputs.publish(output_dir, mlrun, model, metrics, data, settings.register)
    log.info(
        "ensemble of %d runs: test accuracy %.4f (members: %s); run %s, outputs in %s",
        len(members),
        metrics["test_accuracy"],
        ", ".join(f"{a:.4f}" for a in accuracies) or "not logged",
        mlrun.run_id,
        output_dir,
    )
    return metrics

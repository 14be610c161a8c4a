"""``evaluate.py``: score a model on any labelled folder, and file the scores with its run.

This is how a model is judged on real photos: a folder of ``<class>/<image>`` it never
trained on, through the same predictor live.py uses, with the training crop policy. The
scores are printed, written to the output folder with the confusion matrix and a grid of
the misclassified images, and, for a model given by ``run_id``, logged to that run as
``eval/<folder name>/...``, so ``mlflow ui`` compares runs by them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from rps.config.apps import EvaluateConfig, RoiFind
from rps.config.job import TrackingConfig
from rps.data import folder
from rps.serve import logged_model, scores
from rps.tracking import backend, mlflow_runs, plots

log = logging.getLogger(__name__)

RESULT_FILE = "evaluation.json"


def run(conf: EvaluateConfig, output_dir: Path, root: Path) -> dict:
    """Load the model first (a bad id fails before any image is read), then the folder."""
    model = logged_model.chosen(conf, conf.tracking, root)
    if conf.roi.find == RoiFind.hand:
        model = model.finding_hands()
    photos = conf.data.folder
    split, bad = folder.labelled(photos, model.class_names)
    probs = model.probabilities(split.images, conf.batch_size)
    scored = scores.summary(probs, split.labels, model.class_names)
    present = sorted(set(split.labels.tolist()))
    result = {
        "folder": str(photos.absolute()),
        "images": len(split),
        "accuracy": scored["accuracy"],
        "no_hand": scored["no_hand"],
        # Only a model that searches for the hand can miss it.
        "hand_found": 1 - scored["no_hand"] / len(split) if model.finder else None,
        "recall": {
            model.class_names[c]: scored["per_class"][model.class_names[c]]["recall"]
            for c in present
        },
        "class_names": model.class_names,
        "confusion_matrix": scored["confusion_matrix"],
        "misclassified": scores.misclassified(scored, split, model.class_names),
        "unreadable": [{"source": b.path, "reason": b.reason} for b in bad],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    plots.confusion_matrix(
        result["confusion_matrix"], model.class_names, output_dir / "confusion_matrix.png"
    )
    wrong = result["misclassified"]
    plots.misclassified_grid(
        [split.images[m["index"]] for m in wrong],
        [m["true"] for m in wrong],
        [m["predicted"] for m in wrong],
        output_dir / "misclassified.png",
        probabilities=[m["probability"] for m in wrong],
    )
    print(as_text(result))
    if conf.run_id and conf.log:
        _log(conf, root, photos, result, output_dir)
    return result


def as_text(result: dict) -> str:
    """Accuracy, per-class recall and the confusion matrix (rows: true classes)."""
    names = result["class_names"]
    width = max(len(n) for n in names) + 2
    lines = [
        f"{result['folder']}: {result['images']} images, accuracy {result['accuracy']:.3f}",
        "recall: " + ", ".join(f"{k} {v:.3f}" for k, v in result["recall"].items()),
        *(
            [
                f"a hand found in {result['hand_found']:.3f} of the images; "
                f"{result['no_hand']} with none, counted as wrong"
            ]
            if result["hand_found"] is not None
            else []
        ),
        "confusion (rows true, columns predicted):",
        " " * width + "".join(f"{n:>{width}}" for n in names),
    ]
    lines += [
        f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row)
        for name, row in zip(names, result["confusion_matrix"], strict=True)
    ]
    if result["unreadable"]:
        lines.append(
            f"{len(result['unreadable'])} unreadable file(s) not scored: "
            + ", ".join(Path(b["source"]).name for b in result["unreadable"][:10])
        )
    return "\n".join(lines)


def _log(conf: EvaluateConfig, root: Path, folder: Path, result: dict, output_dir: Path) -> None:
    """Adds the scores to the model's own run, whatever its status: it stays as it was."""
    prefix = f"eval/{metric_name(folder)}"
    uri = backend.store_uri(TrackingConfig(uri=conf.tracking.uri), root)
    client = backend.client_for(uri)
    mlrun = mlflow_runs.Run(client=client, run_id=conf.run_id, uri=uri)
    mlrun.log_metrics(
        {
            f"{prefix}/accuracy": result["accuracy"],
            **(
                {}
                if result["hand_found"] is None
                else {f"{prefix}/hand_found": result["hand_found"]}
            ),
            **{f"{prefix}/recall/{k}": v for k, v in result["recall"].items()},
        }
    )
    for name in (RESULT_FILE, "confusion_matrix.png", "misclassified.png"):
        mlrun.log_artifact(output_dir / name, prefix)
    log.info("logged %s/accuracy to run %s", prefix, conf.run_id)


def metric_name(folder: Path) -> str:
    """The folder's name, in the characters MLflow allows in a metric name."""
    return re.sub(r"[^\w.\- ]", "_", folder.expanduser().absolute().name) or "folder"

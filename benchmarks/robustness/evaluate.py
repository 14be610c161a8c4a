"""Accuracy of trained models on the plain test split and on each proxy set.

Images are decoded and cropped by ``rps.images``, exactly as training decodes its test split,
and then go through the whole saved model, so a model's ``test`` score here is the test
accuracy its run reported.
"""

from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.robustness import proxy
from benchmarks.robustness.proxy import list_images, read
from rps import model as model_lib
from rps.errors import UserError
from rps.images import fit

BATCH = 32
TEST = "test"  # the plain test split's column; every other set is a proxy


@dataclass(frozen=True)
class Model:
    name: str  # the table's row label: a run id or a path
    keras: object
    class_names: list[str]


def from_run(run_id: str, tracking_uri: str | None) -> Model:
    from rps.tracking import load_model

    keras_model, class_names = load_model(run_id, tracking_uri=tracking_uri)
    return Model(run_id, keras_model, class_names)


def from_path(path: Path) -> Model:
    keras_model, class_names = model_lib.load(path)
    return Model(str(path), keras_model, class_names)


def sets(data: Path, out: Path, seed: int) -> dict[str, Path]:
    """The plain test split of the dataset at ``data``, then each proxy set built from it."""
    return {TEST: data / "test", **proxy.build(data / "test", out / "proxy", seed)}


@functools.cache
def _decoded(folder: Path, size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Every image of a labelled folder at ``size``, and its class name; once per size."""
    files = list_images(folder)
    with ThreadPoolExecutor() as pool:
        images = list(pool.map(lambda f: fit(read(f[1]), size), files))
    return np.stack(images), tuple(cls for cls, _ in files)


def hits(model: Model, folder: Path) -> np.ndarray:
    """Whether the model gets each image right, in ``list_images`` order."""
    size = model_lib.input_size(model.keras)
    images, classes = _decoded(folder, size)
    unknown = sorted(set(classes) - set(model.class_names))
    if unknown:
        raise UserError(
            f"{folder} has class folders {', '.join(unknown)} that model {model.name} does "
            f"not know (it predicts {', '.join(model.class_names)}): evaluate it on data "
            "with the classes it was trained on."
        )
    labels = np.array([model.class_names.index(c) for c in classes])
    logits = model.keras.predict(images, batch_size=BATCH, verbose=0)
    return logits.argmax(axis=1) == labels


def evaluate(models: list[Model], sets: dict[str, Path]) -> dict[str, dict[str, np.ndarray]]:
    """{model name: {set name: hits}}, sets in the given order."""
    return {m.name: {name: hits(m, folder) for name, folder in sets.items()} for m in models}


def accuracies(hit_sets: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(h.mean()) for name, h in hit_sets.items()}


def by_kind(hit_sets: dict[str, np.ndarray], sets: dict[str, Path]) -> dict[str, dict]:
    """{set name: {kind: accuracy}} for each set that records kinds, kinds sorted: what a
    set's one figure hides, such as a backdrop that fools a model that copes with the rest."""
    result = {}
    for name, folder in sets.items():
        kinds = proxy.kinds(folder)
        if kinds is not None:
            kinds = np.array(kinds)
            result[name] = {kind: float(hit_sets[name][kinds == kind].mean())
                            for kind in sorted(set(kinds))}
    return result


def markdown(rows: list[dict[str, object]]) -> str:
    """A markdown table of dicts sharing keys; floats (accuracies) to three places."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[k]) for k in header) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write(rows: list[dict[str, object]], out: Path, stem: str) -> str:
    """``<stem>.md`` and ``<stem>.json`` in ``out``; returns the table."""
    table = markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    return table

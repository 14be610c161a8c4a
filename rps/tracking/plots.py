"""PNG figures for the experiment tracker.

Every figure is a bare ``Figure`` drawn by the Agg canvas, never a pyplot figure: training
runs headless, and a caller's own pyplot backend and open figures stay exactly as they were.
Each public function writes one PNG and returns its path, so it can be logged as an artifact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # for annotations only: the data module pulls in TensorFlow
    from rps.data.splits import Data

DPI = 110
FINETUNE_LABEL = "fine-tuning starts"
NO_IMAGES_TEXT = "no misclassified images"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _confusion_figure(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str
) -> Figure:
    """Colour is the share of each true class, so a rare class's errors stand out as much
    as a common one's; the cells still show raw counts."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {n} classes")
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.8 * n
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=11,
            color="white" if share[row, col] > 0.5 else "black",
        )
    ax.set_xticks(range(n), class_names, rotation=30 if n > 4 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, label="share of true class")
    return fig


def confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: Path,
    *,
    title: str = "Test confusion matrix",
) -> Path:
    """Rows are the true class, columns the predicted one."""
    return _save(_confusion_figure(matrix, class_names, title), path)


def _learning_figure(history: Sequence[Mapping]) -> Figure:
    """Any metric may be missing from any epoch (no validation data, a resumed run), so each
    curve plots only the epochs that recorded it."""
    epochs = [entry.get("epoch", i) + 1 for i, entry in enumerate(history)]
    finetune = [x for x, e in zip(epochs, history, strict=True) if e.get("stage") == 2]
    fig = _figure(10, 4)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key, label in ((metric, "train"), (f"val_{metric}", "val")):
            points = [
                (x, e[key]) for x, e in zip(epochs, history, strict=True) if e.get(key) is not None
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        if finetune:
            ax.axvline(min(finetune) - 0.5, color="grey", linestyle="--", label=FINETUNE_LABEL)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig


def learning_curves(history: Sequence[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, with the switch to fine-tuning marked: a jump there is
    the unfrozen backbone, not noise."""
    return _save(_learning_figure(history), path)


def _misclassified_figure(
    images: Sequence[np.ndarray],
    true: Sequence[str],
    predicted: Sequence[str],
    probabilities: Sequence[float] | None,
    max_images: int,
) -> Figure:
    lengths = {len(images), len(true), len(predicted)}
    if probabilities is not None:
        lengths.add(len(probabilities))
    if len(lengths) > 1:
        raise ValueError("images, true, predicted and probabilities must have equal lengths")
    shown = min(len(images), max_images)
    if not shown:
        fig = _figure(4, 1)
        fig.text(0.5, 0.5, NO_IMAGES_TEXT, ha="center", va="center", fontsize=12)
        return fig
    cols = math.ceil(math.sqrt(shown))
    rows = math.ceil(shown / cols)
    fig = _figure(2.6 * cols, 2.6 * rows + 0.4)
    for i in range(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i])
        ax.set_axis_off()
        confidence = f" ({probabilities[i]:.2f})" if probabilities is not None else ""
        ax.set_title(f"true: {true[i]} / pred: {predicted[i]}{confidence}", fontsize=8)
    heading = f"{len(images)} misclassified images"
    fig.suptitle(heading + (f", first {shown} shown" if shown < len(images) else ""))
    return fig


def misclassified_grid(
    images: Sequence[np.ndarray],
    true: Sequence[str],
    predicted: Sequence[str],
    path: Path,
    *,
    probabilities: Sequence[float] | None = None,
    max_images: int = 36,
) -> Path:
    """The images the model got wrong. With none, the PNG says so, so every run has
    the same artifacts."""
    return _save(_misclassified_figure(images, true, predicted, probabilities, max_images), path)


def _comparison_figure(
    labels: Sequence[str], series: dict[str, Sequence[float | None]], title: str, ylabel: str
) -> Figure:
    """A failed job has no value; it gets a visible "failed" instead of a silent gap."""
    if any(len(values) != len(labels) for values in series.values()):
        raise ValueError("every series needs one value per label")
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    fig = _figure(max(6.0, 1.5 + len(labels) * (0.4 + 0.4 * len(series))), 4.5)
    ax = fig.add_subplot()
    for j, (name, values) in enumerate(series.items()):
        centres = x + (j - (len(series) - 1) / 2) * width
        done = [(c, v) for c, v in zip(centres, values, strict=True) if v is not None]
        bars = ax.bar([c for c, _ in done], [v for _, v in done], width, label=name, color=f"C{j}")
        ax.bar_label(bars, fmt="{:.3f}", fontsize=7, padding=2)
        for centre, value in zip(centres, values, strict=True):
            if value is None:
                ax.annotate(
                    "failed",
                    (centre, 0),
                    xytext=(0, 3),
                    textcoords="offset points",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="crimson",
                )
    long_labels = len(labels) > 6 or any(len(label) > 12 for label in labels)
    ax.set_xticks(
        x, labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center"
    )
    ax.margins(y=0.12)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def comparison_bars(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    path: Path,
    *,
    title: str = "Sweep comparison",
    ylabel: str = "accuracy",
) -> Path:
    """Sweep jobs side by side, so the best setting is visible at a glance."""
    return _save(_comparison_figure(labels, series, title, ylabel), path)


def test_figures(metrics: dict, data: Data, folder: Path) -> None:
    """The confusion matrix and the misclassified test images of ``metrics``
    (:func:`rps.serve.scores.test_report`'s), into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    confusion_matrix(metrics["confusion_matrix"], data.class_names, folder / "confusion_matrix.png")
    wrong = metrics["misclassified"]
    misclassified_grid(
        [data.test.images[m["index"]] for m in wrong],
        [m["true"] for m in wrong],
        [m["predicted"] for m in wrong],
        folder / "misclassified.png",
        probabilities=[m["probability"] for m in wrong],
    )

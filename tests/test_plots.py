"""The tracker's PNG figures: what each one draws, and that drawing leaves pyplot alone."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from rps.tracking import plots

CLASSES = ["paper", "rock", "scissors"]


def history(epochs: int, finetune_from: int | None = None) -> list[dict]:
    return [
        {
            "epoch": i,
            "stage": 2 if finetune_from is not None and i >= finetune_from else 1,
            "lr": 1e-3,
            "loss": 1 / (i + 1),
            "accuracy": 0.5 + 0.04 * i,
            "val_loss": 1.2 / (i + 1),
            "val_accuracy": 0.45 + 0.04 * i,
        }
        for i in range(epochs)
    ]


def solid(colour: tuple[int, int, int], size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def png(path, min_side: int = 100, max_side: int = 4000) -> Image.Image:
    """The decoded PNG; fails unless it is a real, plausibly sized image."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert min_side <= img.width <= max_side and min_side <= img.height <= max_side
        return img.convert("RGB")


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_confusion_matrix_annotates_every_count(tmp_path):
    matrix = [[40, 2, 0], [3, 50, 1], [0, 7, 37]]
    fig = plots._confusion_figure(matrix, CLASSES, "Test confusion matrix")
    ax = fig.axes[0]
    assert sorted(texts(fig)) == sorted(str(c) for row in matrix for c in row)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    # Colour is the share of the true class: a row of zeros (no test images) must not divide.
    plots._confusion_figure([[0, 0, 0], [1, 1, 0], [0, 0, 2]], CLASSES, "t")

    out = plots.confusion_matrix(matrix, CLASSES, tmp_path / "sub" / "cm.png")
    assert out == tmp_path / "sub" / "cm.png"
    png(out)


def test_confusion_matrix_rejects_a_shape_that_does_not_match_the_classes(tmp_path):
    with pytest.raises(ValueError, match="3 classes"):
        plots.confusion_matrix([[1, 2], [3, 4]], CLASSES, tmp_path / "cm.png")


def finetune_markers(fig) -> list[float]:
    return [
        line.get_xdata()[0]
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_label() == plots.FINETUNE_LABEL
    ]


def test_learning_curves_mark_fine_tuning_only_when_stage_two_ran(tmp_path):
    # Stage 2 starts at 0-based epoch 5, plotted as epoch 6: the marker sits just before it.
    assert finetune_markers(plots._learning_figure(history(8, finetune_from=5))) == [5.5, 5.5]
    assert finetune_markers(plots._learning_figure(history(8))) == []

    fig = plots._learning_figure(history(4))
    loss, accuracy = fig.axes
    assert (loss.get_title(), accuracy.get_title()) == ("loss", "accuracy")
    assert [line.get_label() for line in loss.get_lines()] == ["train", "val"]
    assert list(loss.get_lines()[0].get_xdata()) == [1, 2, 3, 4]  # 1-based epochs

    png(plots.learning_curves(history(8, finetune_from=5), tmp_path / "curves.png"))


@pytest.mark.parametrize(
    "entries",
    [
        [{"epoch": 0, "loss": 1.0, "accuracy": 0.5}, {"epoch": 1, "loss": 0.8}],  # no val, gaps
        [{"epoch": 0, "stage": 2, "val_loss": None}],
        [],
    ],
)
def test_learning_curves_survive_missing_metrics(tmp_path, entries):
    png(plots.learning_curves(entries, tmp_path / "curves.png"))


def test_learning_curves_plot_only_the_epochs_that_recorded_a_metric():
    fig = plots._learning_figure(
        [{"epoch": 0, "loss": 1.0, "accuracy": 0.5}, {"epoch": 1, "loss": 0.8}]
    )
    loss, accuracy = fig.axes
    assert [list(line.get_xdata()) for line in loss.get_lines()] == [[1, 2]]
    assert [list(line.get_xdata()) for line in accuracy.get_lines()] == [[1]]


def test_misclassified_grid_draws_one_titled_panel_per_image(tmp_path):
    fig = plots._misclassified_figure(
        [solid((255, 0, 0))] * 5,
        ["rock"] * 5,
        ["paper"] * 5,
        [0.81, 0.5, 0.9, 0.99, 0.6],
        max_images=36,
    )
    assert len(fig.axes) == 5
    assert fig.axes[0].get_title() == "true: rock / pred: paper (0.81)"
    # Near-square: 5 panels fill 2 rows of 3.
    assert fig.axes[4].get_subplotspec().get_geometry()[:2] == (2, 3)

    out = plots.misclassified_grid(
        [solid((255, 0, 0))] * 5, ["rock"] * 5, ["paper"] * 5, tmp_path / "grid.png"
    )
    pixels = np.asarray(png(out)).reshape(-1, 3)
    assert ((pixels[:, 0] > 240) & (pixels[:, 1] < 15) & (pixels[:, 2] < 15)).mean() > 0.2


def test_misclassified_grid_caps_the_panels_and_says_how_many_exist():
    images = [solid((0, 0, 255), 8)] * 40
    fig = plots._misclassified_figure(images, ["rock"] * 40, ["scissors"] * 40, None, max_images=36)
    assert len(fig.axes) == 36
    assert fig.axes[0].get_title() == "true: rock / pred: scissors"
    assert "40" in fig.get_suptitle() and "36" in fig.get_suptitle()


def test_misclassified_grid_without_images_still_writes_a_png(tmp_path):
    fig = plots._misclassified_figure([], [], [], None, max_images=36)
    assert fig.axes == [] and texts(fig) == ["no misclassified images"]
    png(plots.misclassified_grid([], [], [], tmp_path / "grid.png"), min_side=50)


def test_misclassified_grid_rejects_lists_of_different_lengths(tmp_path):
    with pytest.raises(ValueError, match="equal lengths"):
        plots.misclassified_grid(
            [solid((0, 0, 0))] * 2, ["rock"] * 2, ["paper"], tmp_path / "grid.png"
        )


def test_comparison_bars_mark_a_failed_job_and_label_the_others(tmp_path):
    labels = ["head.units=256", "head.units=512", "head.units=1024"]
    series = {"test_accuracy": [0.95, None, 0.97], "val_accuracy": [0.96, 0.91, 0.98]}
    fig = plots._comparison_figure(labels, series, "Sweep comparison", "accuracy")
    ax = fig.axes[0]
    assert len(ax.patches) == 5  # one bar per value that exists
    assert sorted(texts(fig)) == ["0.910", "0.950", "0.960", "0.970", "0.980", "failed"]
    failed = next(t for t in ax.texts if t.get_text() == "failed")
    assert failed.xy[0] < 1  # drawn at the failed job's own test_accuracy slot
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert ax.get_xticklabels()[0].get_rotation() > 0  # long labels do not overlap
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)

    png(plots.comparison_bars(labels, series, tmp_path / "bars.png"))


def test_comparison_bars_survive_a_sweep_where_every_job_failed(tmp_path):
    fig = plots._comparison_figure(["a", "b"], {"test_accuracy": [None, None]}, "t", "y")
    assert texts(fig) == ["failed", "failed"]
    png(plots.comparison_bars(["a", "b"], {"test_accuracy": [None, None]}, tmp_path / "bars.png"))


def test_comparison_bars_need_one_value_per_label(tmp_path):
    with pytest.raises(ValueError, match="one value per label"):
        plots.comparison_bars(["a", "b"], {"test_accuracy": [0.9]}, tmp_path / "bars.png")


def test_plotting_leaves_the_callers_pyplot_alone(tmp_path):
    backend = matplotlib.get_backend()
    mine = plt.figure()  # a caller's own figure must stay open and current
    try:
        plots.confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "cm.png")
        plots.learning_curves(history(3, finetune_from=2), tmp_path / "curves.png")
        plots.misclassified_grid([solid((0, 255, 0))], ["a"], ["b"], tmp_path / "grid.png")
        plots.misclassified_grid([], [], [], tmp_path / "none.png")
        plots.comparison_bars(["a"], {"acc": [0.5]}, tmp_path / "bars.png")
        assert plt.get_fignums() == [mine.number]
        assert plt.gcf() is mine
    finally:
        plt.close(mine)
    assert plt.get_fignums() == []
    assert matplotlib.get_backend() == backend

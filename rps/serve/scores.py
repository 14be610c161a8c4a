"""Scores of a model on labelled images, computed one way, so every caller reports the same
numbers: the training job's test pass, an ensemble's and evaluate.py's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # for annotations only: the data module pulls in TensorFlow
    from rps.data.splits import Data, Photos, Split


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


NO_HAND = "no hand"


def summary(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, cross-entropy, per-class precision/recall/F1 and the confusion matrix, of
    class probabilities. A row of NaN (no hand found) predicts nothing: it counts as wrong,
    and as ``no_hand`` of its class; the loss is over the other images.

    ``confusion[i][j]`` counts images of class i predicted as class j.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    found = ~np.isnan(probs).any(axis=1)
    predicted = np.where(found, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels[found], predicted[found]), 1)
    per_class = {}
    for index, name in enumerate(class_names):
        tp = confusion[index, index]
        precision = tp / max(confusion[:, index].sum(), 1)
        support = int((labels == index).sum())
        recall = tp / max(support, 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": support,
            "no_hand": int((~found & (labels == index)).sum()),
        }
    true_probs = probs[np.arange(len(labels)), labels][found]
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "loss": float(-np.log(np.clip(true_probs, 1e-12, 1.0)).mean()) if found.any() else 0.0,
        "no_hand": int((~found).sum()),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "predicted": predicted.tolist(),
        "confidence": np.nan_to_num(probs[np.arange(len(labels)), predicted]).tolist(),
    }


def misclassified(scored: dict, split: Split | Photos, class_names: list[str]) -> list[dict]:
    """Each image of ``split`` that :func:`summary` found wrong, with what it was taken for."""
    return [
        {
            "index": i,
            "source": split.sources[i],
            "true": class_names[split.labels[i]],
            "predicted": class_names[p] if p >= 0 else NO_HAND,
            "probability": scored["confidence"][i],
        }
        for i, p in enumerate(scored["predicted"])
        if p != split.labels[i]
    ]


def test_report(probs: np.ndarray, data: Data) -> dict:
    """The test split's scores, and each misclassified image with what it was taken for."""
    test = summary(probs, data.test.labels, data.class_names)
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_no_hand": test["no_hand"],
        "class_names": data.class_names,
        "per_class": test["per_class"],
        "confusion_matrix": test["confusion_matrix"],
        "misclassified": misclassified(test, data.test, data.class_names),
    }


def test(predictor, data: Data, batch_size: int) -> dict:
    """A model's scores on the test split, through the predictor every app uses: the
    training job's and the ensemble's test pass."""
    return test_report(predictor.probabilities(data.test.images, batch_size), data)


def members_scores(accuracies: list[float]) -> dict[str, float]:
    """An ensemble's members' test accuracy, mean and worst: what averaging them bought."""
    if not accuracies:
        return {}
    return {
        "members/test_accuracy_mean": float(np.mean(accuracies)),
        "members/test_accuracy_min": float(np.min(accuracies)),
    }

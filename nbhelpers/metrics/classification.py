"""Classification metrics from scikit-learn, in the form every run's ``metrics.json`` uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from nbhelpers.data.taxonomy import CLASSES


def topk_accuracies(
    probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 2), num_classes: int | None = None
) -> dict[str, float]:
    """``{"top1": ..., "top2": ...}``: the share of samples whose label is among the k highest scores.

    Args:
        probs: (N, C) scores or probabilities.
        labels: (N,) integer labels in ``0..C-1``.
        ks: the k values.
        num_classes: C (default ``probs.shape[1]``); every class counts even if absent from ``labels``.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    classes = np.arange(num_classes or probs.shape[1])
    # k >= C counts every sample (scikit-learn says so with a warning): 1 without asking it.
    return {
        f"top{k}": 1.0
        if k >= len(classes)
        else float(top_k_accuracy_score(labels, probs, k=k, labels=classes))
        for k in ks
    }


def classification_report(
    probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 2, 3), class_names: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """Top-k accuracies, per-class precision / recall / F1 / support, macro F1 and the confusion matrix.

    The confusion matrix is row-normalised (each true class sums to 1; a class absent from ``labels``
    is a row of zeros); ``confusion_counts`` keeps the raw counts; ``classes`` names its rows and columns.

    Args:
        probs: (N, C) scores or probabilities, column ``c`` for ``class_names[c]``.
        labels: (N,) integer labels in ``0..C-1``.
        ks: the top-k accuracies to report (each at most C).
        class_names: the C classes, in column order.

    Raises:
        ValueError: if ``probs`` does not have one column per class.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(
            f"probs: need one column per class ({len(class_names)}: {list(class_names)}), got shape {probs.shape}"
        )
    classes = np.arange(len(class_names))
    preds = probs.argmax(1)
    report: dict[str, Any] = topk_accuracies(probs, labels, ks, len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=classes, zero_division=0
    )
    report["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    present = support > 0
    report["macro_f1"] = float(f1[present].mean()) if present.any() else 0.0
    counts = confusion_matrix(labels, preds, labels=classes)
    report["confusion_counts"] = counts.tolist()
    report["confusion"] = confusion_matrix(labels, preds, labels=classes, normalize="true").tolist()
    report["num_samples"] = int(len(labels))
    report["classes"] = list(class_names)
    return report


def one_vs_rest_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """The macro one-vs-rest AUROC of a C-class prediction: the mean over the classes that have both
    positives and negatives in ``labels`` of the AUROC of ``probs[:, c]`` for ``label == c``.

    With two classes whose probabilities sum to 1 both terms are the binary AUROC of class 1. NaN when no
    class has both positives and negatives (a single class in ``labels``).

    Args:
        probs: (N, C) probabilities.
        labels: (N,) integer labels in ``0..C-1``.
    """
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels).astype(int)
    scores = [
        roc_auc_score(labels == c, probs[:, c])
        for c in range(probs.shape[1])
        if 0 < int(np.sum(labels == c)) < len(labels)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def binary_report(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """AUROC, accuracy at ``threshold`` on probabilities, and the ROC curve of a binary task.

    Args:
        scores: (N,) probabilities of the positive class.
        labels: (N,) 0/1.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    both = len(np.unique(labels)) == 2
    fpr, tpr, _ = roc_curve(labels, scores) if both else (np.array([0.0, 1.0]), np.array([0.0, 1.0]), None)
    return {
        "auroc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "accuracy": float(accuracy_score(labels, scores >= threshold)),
        "positive_rate": float(labels.mean()),
        "num_samples": int(len(labels)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }

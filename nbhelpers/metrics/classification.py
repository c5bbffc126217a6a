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
    return {f"top{k}": float(top_k_accuracy_score(labels, probs, k=k, labels=classes)) for k in ks}


def classification_report(
    probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 2, 3), class_names: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """Top-k accuracies, per-class precision / recall / F1 / support, macro F1 and the confusion matrix.

    The confusion matrix is row-normalised (each true class sums to 1; a class absent from ``labels``
    is a row of zeros); ``confusion_counts`` keeps the raw counts.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
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
    return report


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

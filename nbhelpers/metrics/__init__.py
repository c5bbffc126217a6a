"""Metrics: scores of predictions and of embeddings, functions of arrays and tensors.

A metric knows nothing of models, training or runs; ``nbhelpers.train``'s recipes and
``nbhelpers.evaluation`` both score with these. Submodules: ``classification`` (scikit-learn reports in
the form every run's ``metrics.json`` uses), ``retrieval`` (recall@k, zero-shot accuracy of two towers),
``probes`` (linear and kNN probes of frozen features).
"""

from nbhelpers.metrics.classification import (
    binary_report,
    classification_report,
    one_vs_rest_auroc,
    topk_accuracies,
)
from nbhelpers.metrics.probes import extract_features, knn_probe, linear_probe, probe_scores
from nbhelpers.metrics.retrieval import recall_at_k, zero_shot_accuracy

__all__ = [
    "binary_report",
    "classification_report",
    "extract_features",
    "knn_probe",
    "linear_probe",
    "one_vs_rest_auroc",
    "probe_scores",
    "recall_at_k",
    "topk_accuracies",
    "zero_shot_accuracy",
]

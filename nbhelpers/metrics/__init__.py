"""Metrics: scores of predictions and of embeddings, functions of arrays and tensors.

A metric knows nothing of models, training or runs; ``nbhelpers.train``'s recipes and
``nbhelpers.evaluation`` both score with these. Submodules: ``classification`` (scikit-learn reports in
the form every run's ``metrics.json`` uses), ``retrieval`` (recall@k, zero-shot accuracy of two towers),
``probes`` (linear and kNN probes of frozen features), ``calibration`` (temperature scaling, expected
calibration error, thresholds for a target precision or recall).
"""

from nbhelpers.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    scale_probabilities,
    threshold_for_target,
)
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
    "expected_calibration_error",
    "extract_features",
    "fit_temperature",
    "knn_probe",
    "linear_probe",
    "negative_log_likelihood",
    "one_vs_rest_auroc",
    "probe_scores",
    "recall_at_k",
    "reliability_bins",
    "scale_probabilities",
    "threshold_for_target",
    "topk_accuracies",
    "zero_shot_accuracy",
]

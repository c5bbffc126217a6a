"""Calibration of class probabilities and thresholds for a target precision or recall, on arrays.

* temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): the logits divided by
  one scalar ``T`` fitted by negative log-likelihood; the logits of a run's probabilities are their logs
  (up to a constant per row, which softmax ignores), so a run's stored probabilities are enough;
* expected calibration error (ECE) and reliability-diagram bins, top-label (the confidence is the highest
  class probability, correct means the argmax is the label), over 15 equal-width confidence bins
  ``(b/15, (b+1)/15]`` as in Guo et al.;
* the threshold on one class's probability that reaches a target precision (the lowest that does, so the
  most recall with it) or a target recall (the highest that does, so the most precision), from
  scikit-learn's ``precision_recall_curve``.

Probabilities are ``(N, C)`` rows, or ``(N,)`` positive-class probabilities of a binary task (read as the
two columns ``(1 - p, p)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import precision_recall_curve

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before their log is taken.
EPS = 1e-12
#: Equal-width confidence bins of :func:`expected_calibration_error` and :func:`reliability_bins`.
ECE_BINS = 15
#: The range a fitted temperature is searched in.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def scale_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling applied to probabilities (their logs are logits up to a constant per row).

    Args:
        probabilities: ``(N, C)`` rows summing to 1, or ``(N,)`` positive-class probabilities.
        temperature: the divisor, ``> 0``.

    Returns:
        float64 probabilities of the same shape: ``softmax(log p / T)``, ``sigmoid(logit(p) / T)`` for
        ``(N,)``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        q = np.clip(p, EPS, 1.0 - EPS)
        logit = (np.log(q) - np.log1p(-q)) / temperature
        return 1.0 / (1.0 + np.exp(-logit))
    logits = np.log(np.clip(p, EPS, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def two_columns(probabilities: np.ndarray) -> np.ndarray:
    """``(N, C)`` probabilities as they are; ``(N,)`` positive-class ones as ``(N, 2)``: ``(1 - p, p)``."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=1) if p.ndim == 1 else p


def _checked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C)`` float64 probabilities and ``(N,)`` int labels, or a ValueError naming what is wrong."""
    p = two_columns(probabilities)
    y = np.asarray(labels)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probabilities: need (N, C) or (N,) with N >= 1, got shape {p.shape}")
    if y.shape != (len(p),):
        raise ValueError(f"labels: need shape ({len(p)},) to match the probabilities, got {y.shape}")
    y = y.astype(int)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels: need integers in 0..{p.shape[1] - 1}, got {y.min()}..{y.max()}")
    return p, y


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean ``-log p[label]`` (probabilities clipped at :data:`EPS`).

    Args:
        probabilities: ``(N, C)`` or ``(N,)`` (binary: the label-1 probability).
        labels: ``(N,)`` integer labels.

    Raises:
        ValueError: on mismatched shapes or labels out of range.
    """
    p, y = _checked(probabilities, labels)
    # Clipped at 1 as well (a float32 softmax can round above it), and +0.0 so a perfect fit reads 0, not -0.
    return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)))) + 0.0


def fit_temperature(
    probabilities: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The temperature that minimises the NLL of :func:`scale_probabilities` (one scalar, Guo et al.).

    The search is over ``log T`` (scipy's bounded scalar minimiser: the NLL of a temperature-scaled model
    is smooth in ``log T``). A result whose NLL is not below ``T = 1``'s is replaced by 1, so a fitted
    temperature never raises the NLL of the data it was fitted on.

    Args:
        probabilities: ``(N, C)`` or ``(N,)`` uncalibrated probabilities.
        labels: ``(N,)`` integer labels.
        bounds: the range of ``T`` searched, ``0 < low < 1 < high``.

    Returns:
        ``T > 0``.

    Raises:
        ValueError: on mismatched shapes, labels out of range or bad bounds.
    """
    low, high = bounds
    if not 0 < low < 1 < high:
        raise ValueError(f"bounds: need 0 < low < 1 < high, got {bounds}")
    p, y = _checked(probabilities, labels)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(scale_probabilities(p, math.exp(log_t)), y)

    found = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded")
    best = float(math.exp(found.x))
    return best if nll(math.log(best)) < nll(0.0) else 1.0


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability over equal-width confidence bins (empty bins hold NaN and count 0).

    Attributes:
        edges: ``(B + 1,)`` bin edges from 0 to 1; bin ``b`` holds confidences in ``(edges[b], edges[b+1]]``.
        confidence: ``(B,)`` mean confidence of each bin's samples.
        accuracy: ``(B,)`` share of each bin's samples whose argmax is the label.
        count: ``(B,)`` samples per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """``sum_b count_b / N * |accuracy_b - confidence_b|`` over the non-empty bins."""
        full = self.count > 0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float(np.sum(self.count[full] * gaps) / self.count.sum())


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> ReliabilityBins:
    """Top-label confidence and accuracy per equal-width bin (see :class:`ReliabilityBins`).

    Args:
        probabilities: ``(N, C)`` or ``(N,)`` (binary, read as ``(1 - p, p)``).
        labels: ``(N,)`` integer labels.
        n_bins: the number of bins.

    Raises:
        ValueError: on mismatched shapes, labels out of range or ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: need at least 1, got {n_bins}")
    p, y = _checked(probabilities, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # (b/B, (b+1)/B]: a confidence of exactly b/B belongs to the bin below it.
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), mean_confidence, accuracy, count)


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label expected calibration error over ``n_bins`` equal-width bins (Guo et al., 2017).

    Args:
        probabilities: ``(N, C)`` or ``(N,)`` (binary, read as ``(1 - p, p)``).
        labels: ``(N,)`` integer labels.
        n_bins: the number of bins.

    Raises:
        ValueError: on mismatched shapes, labels out of range or ``n_bins < 1``.
    """
    return reliability_bins(probabilities, labels, n_bins).ece


def precision_recall_at(scores: np.ndarray, positives: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision and recall of ``scores >= threshold`` (precision 1.0 when nothing passes, as a threshold
    above every score is read by scikit-learn's curve).

    Args:
        scores: ``(N,)`` positive-class probabilities.
        positives: ``(N,)`` booleans (or 0/1): which samples are positive.
        threshold: a sample is flagged when its score is ``>= threshold``.
    """
    flagged = np.asarray(scores) >= threshold
    positives = np.asarray(positives).astype(bool)
    tp = int(np.sum(flagged & positives))
    precision = tp / int(flagged.sum()) if flagged.any() else 1.0
    recall = tp / int(positives.sum()) if positives.any() else 0.0
    return precision, recall


@dataclass(frozen=True)
class TargetPoint:
    """A threshold chosen for a target (see :func:`threshold_for_target`)."""

    threshold: float
    precision: float
    recall: float
    reached: bool


def threshold_for_target(
    scores: np.ndarray, positives: np.ndarray, metric: str, target: float
) -> TargetPoint:
    """The threshold on ``scores`` for a target precision or recall, and the precision and recall it gives.

    For ``precision``: the lowest threshold whose precision is ``>= target`` (the most recall at that
    precision); if none reaches it, the threshold of the highest precision (lowest among ties).
    For ``recall``: the highest threshold whose recall is ``>= target`` (the most precision at that
    recall); the lowest score always reaches recall 1. Candidate thresholds are the distinct scores.

    Args:
        scores: ``(N,)`` positive-class probabilities.
        positives: ``(N,)`` booleans (or 0/1).
        metric: ``"precision"`` or ``"recall"``.
        target: in ``(0, 1]``.

    Raises:
        ValueError: for another metric, a target out of range, mismatched shapes, or no positive sample
            (precision and recall are then undefined).
    """
    if metric not in ("precision", "recall"):
        raise ValueError(f"metric: need 'precision' or 'recall', got {metric!r}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target: need a value in (0, 1], got {target}")
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives).astype(bool)
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(f"scores, positives: need two (N,) arrays, got {scores.shape} and {positives.shape}")
    if not positives.any():
        raise ValueError("positives: no positive sample, so precision and recall are undefined")
    precision, recall, thresholds = precision_recall_curve(positives, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if metric == "precision":
        ok = np.flatnonzero(precision >= target)
        index = int(ok[0]) if len(ok) else int(np.argmax(precision))
    else:
        index = int(np.flatnonzero(recall >= target)[-1])
    threshold = float(thresholds[index])
    # Figures recounted at the stored threshold: what anyone recomputing them on the same scores gets.
    p, r = precision_recall_at(scores, positives, threshold)
    return TargetPoint(threshold, p, r, (p if metric == "precision" else r) >= target)

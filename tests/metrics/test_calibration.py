"""Calibration metrics against slow references written here, and their known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbhelpers.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    precision_recall_at,
    reliability_bins,
    scale_probabilities,
    threshold_for_target,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n: int, c: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions right about 60% of the time, made too sure by ``sharpness`` (so T > 1 helps)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += 1.2
    return _softmax(logits * sharpness), labels


def _slow_nll(p, y, t):
    total = 0.0
    for row, label in zip(p, y):
        z = [math.log(max(v, 1e-12)) / t for v in row]
        top = max(z)
        total -= z[label] - top - math.log(sum(math.exp(v - top) for v in z))
    return total / len(y)


def _slow_ece(p, y, bins):
    """Guo et al.'s ECE, bin by bin: bin b holds the confidences in (b/B, (b+1)/B]."""
    conf = [max(row) for row in p]
    right = [int(np.argmax(row) == label) for row, label in zip(p, y)]
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(conf) if lo < c <= hi or (b == 0 and c == 0)]
        if members:
            acc = sum(right[i] for i in members) / len(members)
            mean = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(p) * abs(acc - mean)
    return total


@pytest.mark.parametrize("n,c,seed", [(40, 7, 0), (97, 3, 1), (25, 2, 2)])
def test_nll_and_ece_match_slow_references(n, c, seed):
    p, y = _overconfident(n, c, seed)
    assert negative_log_likelihood(p, y) == pytest.approx(_slow_nll(p, y, 1.0), abs=1e-9)
    assert negative_log_likelihood(scale_probabilities(p, 1.7), y) == pytest.approx(
        _slow_nll(p, y, 1.7), abs=1e-9
    )
    for bins in (15, 4):
        assert expected_calibration_error(p, y, bins) == pytest.approx(_slow_ece(p, y, bins), abs=1e-12)
    found = reliability_bins(p, y, 15)
    assert found.count.sum() == n and len(found.edges) == 16
    assert np.all(np.isnan(found.accuracy[found.count == 0]))


def test_binary_probabilities_read_as_two_columns():
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.99])
    y = np.array([1, 0, 0, 1, 1])
    two = np.stack([1 - p, p], 1)
    assert negative_log_likelihood(p, y) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.4, 0.99])))
    assert expected_calibration_error(p, y) == pytest.approx(_slow_ece(two, y, 15), abs=1e-12)


@pytest.mark.parametrize("n,c,seed", [(200, 7, 0), (150, 2, 3), (120, 3, 4)])
def test_fitted_temperature_is_the_nll_minimum_and_keeps_argmax(n, c, seed):
    p, y = _overconfident(n, c, seed)
    t = fit_temperature(p, y)
    assert t > 1.0  # over-confident predictions are softened
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 2001))
    best = grid[np.argmin([_slow_nll(p, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.01)
    assert _slow_nll(p, y, t) < _slow_nll(p, y, 1.0)
    np.testing.assert_array_equal(scale_probabilities(p, t).argmax(1), p.argmax(1))
    np.testing.assert_allclose(scale_probabilities(p, 1.0), p, atol=1e-12)


def test_under_confident_predictions_get_a_temperature_below_one():
    p, y = _overconfident(200, 5, 5, sharpness=0.4)
    assert fit_temperature(p, y) < 1.0


def test_a_fit_never_raises_the_nll_of_t_equal_one():
    # Labels independent of confident-looking predictions: the minimum is not at 1, and whatever is found
    # must not be worse than 1; for predictions already at their optimum, T stays 1.
    rng = np.random.default_rng(6)
    for _ in range(5):
        p, y = _softmax(rng.normal(size=(30, 4))), rng.integers(0, 4, 30)
        t = fit_temperature(p, y)
        assert negative_log_likelihood(scale_probabilities(p, t), y) <= negative_log_likelihood(
            scale_probabilities(p, 1.0), y
        )
    uniform = np.full((8, 4), 0.25)  # every temperature gives the same (uniform) probabilities
    assert fit_temperature(uniform, np.arange(8) % 4) == 1.0


def test_bad_inputs_are_named():
    p, y = _overconfident(10, 3, 0)
    with pytest.raises(ValueError, match="^labels: need shape"):
        negative_log_likelihood(p, y[:5])
    with pytest.raises(ValueError, match="^labels: need integers in 0..2"):
        expected_calibration_error(p, y + 3)
    with pytest.raises(ValueError, match="^bounds"):
        fit_temperature(p, y, bounds=(2.0, 3.0))
    with pytest.raises(ValueError, match="^n_bins"):
        reliability_bins(p, y, 0)


def _slow_threshold(scores, positives, metric, target):
    """Every distinct score as a threshold, counted one by one."""
    table = []
    for t in sorted(set(scores)):
        flagged = [s >= t for s in scores]
        tp = sum(f and q for f, q in zip(flagged, positives))
        table.append((t, tp / sum(flagged), tp / sum(positives)))
    if metric == "precision":
        ok = [row for row in table if row[1] >= target]
        return ok[0] if ok else max(table, key=lambda row: (row[1], -row[0]))
    return [row for row in table if row[2] >= target][-1]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "metric,target", [("precision", 0.9), ("precision", 0.75), ("recall", 0.9), ("recall", 0.5)]
)
def test_thresholds_match_a_slow_reference_and_reproduce(seed, metric, target):
    rng = np.random.default_rng(seed)
    positives = rng.random(60) < 0.3
    positives[0] = True
    # Rounded scores: ties between samples, which a threshold must treat as one.
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * positives, 0.2), 0, 1), 2)
    found = threshold_for_target(scores, positives, metric, target)
    want = _slow_threshold(scores.tolist(), positives.tolist(), metric, target)
    assert (found.threshold, found.precision, found.recall) == pytest.approx(want, abs=0)
    assert precision_recall_at(scores, positives, found.threshold) == (found.precision, found.recall)
    assert found.reached == ((found.precision if metric == "precision" else found.recall) >= target)


def test_an_unreachable_precision_gives_the_closest_point():
    scores = np.array([0.9, 0.9, 0.8, 0.7, 0.3])
    positives = np.array([True, False, True, False, True])
    found = threshold_for_target(scores, positives, "precision", 0.95)
    assert not found.reached
    assert (found.threshold, found.precision, found.recall) == (0.8, 2 / 3, 2 / 3)
    with pytest.raises(ValueError, match="^positives: no positive sample"):
        threshold_for_target(scores, np.zeros(5, bool), "recall", 0.9)
    with pytest.raises(ValueError, match="^metric"):
        threshold_for_target(scores, positives, "f1", 0.9)

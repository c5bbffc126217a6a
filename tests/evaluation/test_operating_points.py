"""The operating-points record: scaling, thresholds passed, the file round trip."""

import numpy as np
import pytest

from nbhelpers.evaluation.operating_points import (
    OperatingPoints,
    Threshold,
    default_positive_class,
    scale_probabilities,
)


def _points(**kw):
    t = (
        Threshold("precision>=0.90", "precision", 0.9, 0.8, 0.92, 0.4, True),
        Threshold("recall>=0.90", "recall", 0.9, 0.2, 0.5, 0.91, True),
    )
    base = dict(temperature=2.0, classes=("not-hateful", "hateful"), positive_class="hateful", thresholds=t)
    return OperatingPoints(**{**base, **kw})


def test_scaling_matches_softmax_of_scaled_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = np.exp(logits / 1.7) / np.exp(logits / 1.7).sum(1, keepdims=True)
    np.testing.assert_allclose(scale_probabilities(p, 1.7), want, atol=1e-12)
    z = rng.normal(size=6) * 2
    np.testing.assert_allclose(scale_probabilities(1 / (1 + np.exp(-z)), 0.5), 1 / (1 + np.exp(-z / 0.5)))
    np.testing.assert_allclose(scale_probabilities(p, 1.0), p, atol=1e-12)


def test_passed_and_round_trip(tmp_path):
    op = _points()
    assert op.passed(0.85) == ["precision>=0.90", "recall>=0.90"]
    assert op.passed(0.5) == ["recall>=0.90"]
    assert op.passed(0.1) == []
    op.save(tmp_path)
    assert OperatingPoints.load(tmp_path) == op
    assert OperatingPoints.load(tmp_path / "missing") is None


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        _points(temperature=0.0)
    with pytest.raises(ValueError, match="positive_class"):
        _points(positive_class="Hate")
    with pytest.raises(ValueError, match="metric"):
        Threshold("x", "f1", 0.9, 0.5, 0.5, 0.5, True)
    with pytest.raises(ValueError, match="schema"):
        OperatingPoints.from_json({"version": 99, "temperature": 1.0, "classes": ["a", "b"]})


def test_default_positive_class():
    assert default_positive_class(("True/Neutral", "Hate")) == "Hate"
    assert default_positive_class(("not-hateful", "hateful")) == "hateful"
    assert default_positive_class(("a", "b", "c")) is None

"""Classification reports over any number of classes, and the one-vs-rest AUROC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbhelpers.metrics.classification import binary_report, classification_report, one_vs_rest_auroc


def test_a_report_names_its_classes_and_clips_nothing_it_is_not_asked():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.3, 0.1, 0.6]])
    labels = np.array([0, 2, 1, 1])
    report = classification_report(probs, labels, ks=(1, 2, 3), class_names=("cat", "dog", "bird"))
    assert report["classes"] == ["cat", "dog", "bird"] and list(report["per_class"]) == ["cat", "dog", "bird"]
    assert (report["top1"], report["top2"], report["top3"]) == (0.5, 0.75, 1.0)
    assert report["confusion_counts"] == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"probs: need one column per class \(2: \['a', 'b'\]\)"):
        classification_report(probs, labels, ks=(1,), class_names=("a", "b"))


def test_one_vs_rest_auroc_is_the_mean_of_the_classes_that_have_both_kinds():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.3, 0.1, 0.6]])
    labels = np.array([0, 2, 1, 1])
    # cat: 0.7 vs {0.1, 0.5, 0.3} -> 1; dog: {0.4, 0.1} vs {0.2, 0.3} -> (1 + 1 + 0 + 0) / 4; bird: 0.6 vs
    # {0.1, 0.1, 0.6} -> (1 + 1 + 0.5) / 3.
    assert one_vs_rest_auroc(probs, labels) == pytest.approx((1 + 0.5 + 2.5 / 3) / 3, abs=1e-12)
    two = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    assert one_vs_rest_auroc(two, np.array([0, 1, 1, 0])) == binary_report(two[:, 1], [0, 1, 1, 0])["auroc"]
    assert math.isnan(one_vs_rest_auroc(probs, np.array([1, 1, 1, 1])))

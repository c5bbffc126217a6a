"""Probes on frozen features: kNN against a plain per-sample loop, the linear probe's known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nbhelpers.metrics.probes import extract_features, knn_probe, linear_probe, probe_scores


def knn_reference(train_x, train_y, eval_x, k, temperature):
    """DINO's weighted kNN, one query at a time, in plain Python."""
    predictions = []
    num_classes = int(max(train_y.max(), 0)) + 1
    for q in eval_x:
        sims = []
        for x, y in zip(train_x, train_y):
            cos = float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x)))
            sims.append((cos, int(y)))
        sims.sort(key=lambda t: -t[0])
        votes = [0.0] * num_classes
        for cos, y in sims[:k]:
            votes[y] += math.exp(cos / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


@pytest.mark.parametrize(
    ("n", "m", "d", "classes", "k", "temperature"),
    [(30, 10, 4, 3, 5, 0.07), (50, 17, 8, 5, 20, 0.5), (12, 9, 3, 2, 1, 0.07), (8, 5, 6, 4, 50, 1.0)],
)
def test_knn_matches_reference(n, m, d, classes, k, temperature):
    rng = np.random.default_rng(n + m)
    train_x, eval_x = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    train_y, eval_y = rng.integers(0, classes, n), rng.integers(0, classes, m)
    expected = knn_reference(train_x, train_y, eval_x, min(k, n), temperature)
    result = knn_probe(train_x, train_y, eval_x, eval_y, k=k, temperature=temperature, chunk=4)
    np.testing.assert_array_equal(result["predictions"], expected)
    assert result["top1"] == pytest.approx(np.mean(expected == eval_y))


def test_knn_weights_close_neighbours_by_temperature():
    # One neighbour of class 1 at cosine 1.0 against two of class 0 at cosine 0.8: a sharp temperature
    # lets the close one win (e^(1/0.07) > 2 e^(0.8/0.07)), a flat one lets the majority win.
    train_x = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    train_y = np.array([1, 0, 0])
    query = np.array([[1.0, 0.0]])
    assert knn_probe(train_x, train_y, query, np.array([1]), k=3, temperature=0.07)["top1"] == 1.0
    assert knn_probe(train_x, train_y, query, np.array([0]), k=3, temperature=10.0)["top1"] == 1.0


def test_linear_probe_separates_and_is_scale_invariant():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, 400)
    x = centres[y] + rng.normal(size=(400, 16))
    train, test = slice(0, 300), slice(300, None)
    result = linear_probe(x[train], y[train], x[test], y[test])
    assert result["top1"] > 0.95
    # Standardisation makes the probe blind to a per-feature affine map of the features.
    scale, shift = rng.uniform(0.01, 100, 16), rng.normal(size=16) * 50
    scaled = linear_probe(x[train] * scale + shift, y[train], x[test] * scale + shift, y[test])
    assert np.mean(scaled["predictions"] == result["predictions"]) > 0.98


def test_probes_are_at_chance_on_unrelated_labels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1400, 8))
    y = rng.integers(0, 7, 1400)
    scores = probe_scores(x[:1000], y[:1000], x[1000:], y[1000:])
    assert abs(scores["linear_probe"] - 1 / 7) < 0.06
    assert abs(scores["knn"] - 1 / 7) < 0.06


def test_probes_reject_bad_input():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="features"):
        knn_probe(x, y[:3], x, y)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.zeros(4, dtype=int), x, y)
    with pytest.raises(ValueError, match="k >= 1"):
        knn_probe(x, y, x, y, k=0)


def test_extract_features_normalises_batches_and_restores_mode():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder.train()
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    features = extract_features(encoder, images, mean, std, batch_size=3)
    assert encoder.training  # restored
    encoder.eval()
    x = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = encoder(x).numpy()  # eval mode: BatchNorm uses running statistics, not the batch's
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(encoder, images.float(), mean, std)

"""Probes of frozen features: how much of a label an encoder's features carry, read out two ways.

* **Linear probe**: a multinomial logistic regression (scikit-learn, L-BFGS) on standardised features,
  fitted on the train split and scored top-1 on the eval split, the standard read-out of
  self-supervised representations (e.g. Caron et al., 2021, "Emerging Properties in Self-Supervised
  Vision Transformers", Sec. 4.1; Zbontar et al., 2021, "Barlow Twins", Sec. 4.1).
* **Weighted kNN**: DINO's ``eval_knn.py`` (Caron et al., 2021; after Wu et al., 2018, "Unsupervised
  Feature Learning via Non-Parametric Instance Discrimination"): features are L2-normalised, each eval
  sample votes with its ``k`` nearest train samples by cosine similarity, each neighbour weighted by
  ``exp(similarity / temperature)``; no parameter is fitted.

Both are functions of arrays; :func:`extract_features` turns an encoder and a uint8 image tensor into
those arrays;
:func:`probe_encoders` runs both probes for several encoders, splits and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from nbhelpers.data.image_sets import ImageSet


def _check_pair(features: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"{name}: need features (N, D) and labels (N,) with N >= 1, got {features.shape} and {labels.shape}"
        )
    return features, labels


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Features of every image, in order, with the encoder in eval mode (restored afterwards).

    Args:
        encoder: ``(B, 3, H, W) -> (B, D)``.
        images: ``(N, 3, H, W)`` uint8 images.
        mean: per-channel normalisation mean (of pixel values in [0, 1]).
        std: per-channel normalisation std.
        batch_size: images per forward.
        device: where to run; default the encoder's device.

    Returns:
        ``(N, D)`` float32 features.

    Raises:
        ValueError: if ``images`` is not a uint8 ``(N, 3, H, W)`` tensor.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255.0)
            out.append(encoder((x - m) / s).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy()


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Logistic regression on standardised features: fit on train, top-1 on eval.

    The scaler is fitted on the train features only. Labels may be any integers; an eval label never
    seen in training counts as an error.

    Args:
        train_features: ``(N, D)``.
        train_labels: ``(N,)`` integer labels.
        eval_features: ``(M, D)``.
        eval_labels: ``(M,)``.
        c: inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: L-BFGS iterations.
        seed: the solver's random state (L-BFGS itself is deterministic).

    Returns:
        ``{"top1": float, "predictions": (M,) ndarray}``.

    Raises:
        ValueError: for mismatched shapes, or fewer than two classes in ``train_labels``.
    """
    train_features, train_labels = _check_pair(train_features, train_labels, "train")
    eval_features, eval_labels = _check_pair(eval_features, eval_labels, "eval")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("linear_probe needs at least two classes in train_labels")
    scaler = StandardScaler().fit(train_features)
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    model.fit(scaler.transform(train_features), train_labels)
    predictions = model.predict(scaler.transform(eval_features))
    return {"top1": float(np.mean(predictions == eval_labels)), "predictions": predictions}


def knn_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[str, Any]:
    """DINO's weighted cosine kNN: top-1 on eval.

    For each eval sample, the ``k`` train samples of highest cosine similarity ``s_i`` vote for their
    labels with weight ``exp(s_i / temperature)``; the class with the largest total wins (ties: the
    lower class index).

    Args:
        train_features: ``(N, D)``.
        train_labels: ``(N,)`` non-negative integer labels.
        eval_features: ``(M, D)``.
        eval_labels: ``(M,)``.
        k: neighbours (20 in DINO); capped at ``N``.
        temperature: vote temperature (0.07 in DINO).
        chunk: eval samples per similarity block (bounds memory at ``chunk * N`` floats).

    Returns:
        ``{"top1": float, "predictions": (M,) ndarray}``.

    Raises:
        ValueError: for mismatched shapes, negative labels, ``k < 1`` or ``temperature <= 0``.
    """
    train_features, train_labels = _check_pair(train_features, train_labels, "train")
    eval_features, eval_labels = _check_pair(eval_features, eval_labels, "eval")
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    if train_labels.min() < 0:
        raise ValueError("knn_probe labels must be non-negative class indices")
    k = min(k, len(train_labels))
    bank = F.normalize(torch.as_tensor(train_features, dtype=torch.float32), dim=1)  # (N, D)
    bank_labels = torch.as_tensor(train_labels, dtype=torch.long)
    num_classes = int(max(train_labels.max(), eval_labels.max())) + 1
    queries = F.normalize(torch.as_tensor(eval_features, dtype=torch.float32), dim=1)
    predictions = []
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ bank.T  # (m, N)
        top, index = similarity.topk(k, dim=1)  # (m, k)
        weights = (top / temperature).exp()
        votes = torch.zeros(len(top), num_classes).scatter_add_(1, bank_labels[index], weights)
        predictions.append(votes.argmax(1))
    predictions = torch.cat(predictions).numpy()
    return {"top1": float(np.mean(predictions == eval_labels)), "predictions": predictions}


def probe_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> dict[str, float]:
    """Both probes on one feature set: ``{"linear_probe": top1, "knn": top1}``."""
    return {
        "linear_probe": linear_probe(train_features, train_labels, eval_features, eval_labels, seed=seed)[
            "top1"
        ],
        "knn": knn_probe(train_features, train_labels, eval_features, eval_labels, k, temperature)["top1"],
    }


def probe_encoders(
    encoders: dict[str, nn.Module],
    train: ImageSet,
    evals: dict[str, ImageSet],
    labels: Sequence[str],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    k: int = 20,
    temperature: float = 0.07,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Linear probe and kNN of each encoder's frozen features, per eval split and label.

    Args:
        encoders: ``{name: (B, 3, S, S) -> (B, D)}``.
        train: the split the probes are fitted on (kNN: its features are the neighbours).
        evals: ``{split: images}`` the probes are scored on.
        labels: names of ``train.labels`` (and every eval split's) to read out.
        mean, std: the encoders' per-channel normalisation.
        k, temperature: the kNN's neighbours and temperature (:func:`knn_probe`).
        seed: the linear probe's seed.

    Returns:
        ``{split: {label: {encoder: {"linear_probe": top1, "knn": top1}}}}``.
    """
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {s: {lb: {} for lb in labels} for s in evals}
    for name, encoder in encoders.items():
        train_x = extract_features(encoder, train.images, mean, std)
        for split, data in evals.items():
            eval_x = extract_features(encoder, data.images, mean, std)
            for label in labels:
                results[split][label][name] = probe_scores(
                    train_x, train.labels[label].numpy(), eval_x, data.labels[label].numpy(),
                    k=k, temperature=temperature, seed=seed,
                )  # fmt: skip
    return results

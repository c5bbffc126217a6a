"""Retrieval and zero-shot metrics of a two-tower (CLIP-style) model."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def recall_at_k(
    image_emb: torch.Tensor, text_emb: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Image-to-text and text-to-image recall@k over matched pairs (row ``i`` of each is a pair).

    Args:
        image_emb: (N, D) L2-normalised image embeddings.
        text_emb: (N, D) L2-normalised text embeddings of the same pairs.

    Returns:
        ``recall_i2t@k`` (the share of images whose own text ranks in the top k) and ``recall_t2i@k``.
    """
    sims = image_emb @ text_emb.T  # (N images, N texts)
    truth = torch.arange(len(sims))
    out = {}
    for direction, matrix in (("i2t", sims), ("t2i", sims.T)):
        # rank of the true match = number of candidates scoring strictly higher
        true_scores = matrix[truth, truth].unsqueeze(1)
        ranks = (matrix > true_scores).sum(1)
        for k in ks:
            out[f"recall_{direction}@{k}"] = float((ranks < k).float().mean())
    return out


def zero_shot_accuracy(image_emb: torch.Tensor, class_emb: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of images whose most similar class embedding is their target.

    Args:
        image_emb: (N, D) normalised image embeddings.
        class_emb: (C, D) normalised class (prompt) embeddings.
        targets: (N,) class indices.
    """
    return float(((image_emb @ class_emb.T).argmax(1) == targets).float().mean())

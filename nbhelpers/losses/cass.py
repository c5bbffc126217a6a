"""CASS: cross-architectural self-supervision between a CNN and a ViT that see the same image.

Singh, Sizikova and Cirrone, "CASS: Cross Architectural Self-Supervision for Medical Image Analysis",
2022 (arXiv:2206.04170; extended as Singh and Cirrone, arXiv:2301.12025); the reference implementation is
github.com/pranavsinghps1/CASS.

A CNN's inductive bias is local and a ViT's is global, so the same image gives them different views of
it without any augmentation; asking both embeddings to agree is BYOL's regression loss with the two
architectures as the two branches, and with no stop-gradient and no momentum network: both learn.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nbhelpers.losses.distributed import global_mean


def cass_loss(cnn_embeddings: Tensor, vit_embeddings: Tensor, *, global_batch: bool = True) -> Tensor:
    """``mean_batch(2 - 2 * cos(cnn, vit))``, the squared distance of the L2-normalised embeddings.

    ``||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b)``: 0 when the two embeddings point the same way, 2 when they
    are orthogonal, 4 when they are opposite. Gradients flow into both inputs (no stop-gradient, as in
    the paper: the two architectures teach each other).

    Under several processes (``global_batch``) the mean is over the global batch
    (:func:`~nbhelpers.losses.distributed.global_mean`): every process returns the same value. The
    gradient DDP averages is the same either way; the value is what a single process would log.

    Args:
        cnn_embeddings: ``(batch, dim)`` CNN embeddings of the images (need not be normalised).
        vit_embeddings: ``(batch, dim)`` ViT embeddings of the same images, same order.
        global_batch: average over every process's samples; False: this process's alone.

    Returns:
        Scalar tensor, the loss.

    Raises:
        ValueError: if the inputs are not matching ``(batch, dim)`` tensors with ``batch >= 1``.
    """
    if (
        cnn_embeddings.ndim != 2
        or cnn_embeddings.shape != vit_embeddings.shape
        or cnn_embeddings.shape[0] == 0
    ):
        raise ValueError(
            "cnn_embeddings and vit_embeddings must be matching non-empty (batch, dim) tensors, got "
            f"{tuple(cnn_embeddings.shape)} and {tuple(vit_embeddings.shape)}"
        )
    cnn = F.normalize(cnn_embeddings, dim=-1)
    vit = F.normalize(vit_embeddings, dim=-1)
    per_sample = 2.0 - 2.0 * (cnn * vit).sum(dim=-1)  # (batch,)
    return global_mean(per_sample) if global_batch else per_sample.mean()


class CASSLoss(nn.Module):
    """Module form of :func:`cass_loss`; it holds no state.

    Args:
        global_batch: see :func:`cass_loss`.
    """

    def __init__(self, global_batch: bool = True):
        super().__init__()
        self.global_batch = global_batch

    def forward(self, cnn_embeddings: Tensor, vit_embeddings: Tensor) -> Tensor:
        """See :func:`cass_loss`: ``(batch, dim)`` twice to a scalar."""
        return cass_loss(cnn_embeddings, vit_embeddings, global_batch=self.global_batch)

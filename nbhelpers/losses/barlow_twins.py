"""Barlow Twins: redundancy reduction between the embeddings of two views.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021
(arXiv:2103.03230); the reference implementation is facebookresearch/barlowtwins (``main.py``).

Under several processes both the standardisation and the cross-correlation are over the global batch:
the reference standardises with a ``SyncBatchNorm`` and all-reduces ``C``; here the means, variances and
``C`` are summed over the processes with their gradients (:mod:`nbhelpers.losses.distributed`), so every
process computes the loss of the global batch and DDP's averaged gradient is the single-process one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nbhelpers.losses.distributed import all_reduce_sum, global_rows, world_size


def batch_standardise(z: Tensor, eps: float = 1e-5, *, global_batch: bool = True) -> Tensor:
    """``(z - mean) / sqrt(var + eps)`` per dimension over the batch, with the biased variance.

    The same values as ``nn.BatchNorm1d(dim, affine=False)`` in training mode, without its running
    statistics (a loss has no use for them); under several processes (``global_batch``), those of
    ``nn.SyncBatchNorm``: the mean and the variance are over every process's rows (two passes, the
    variance of the deviations from the global mean), with gradients.

    Args:
        z: ``(batch, dim)`` embeddings.
        eps: added to the variance, as BatchNorm does.
        global_batch: standardise over every process's rows; False: this process's alone.

    Returns:
        ``(batch, dim)`` standardised embeddings (this process's rows).
    """
    if not global_batch or world_size() == 1:
        mean = z.mean(dim=0, keepdim=True)
        var = z.var(dim=0, unbiased=False, keepdim=True)
        return (z - mean) / torch.sqrt(var + eps)
    n = global_rows(z.shape[0], z.device)
    mean = all_reduce_sum(z.sum(dim=0, keepdim=True)) / n
    var = all_reduce_sum((z - mean).pow(2).sum(dim=0, keepdim=True)) / n
    return (z - mean) / torch.sqrt(var + eps)


def _off_diagonal(c: Tensor) -> Tensor:
    """The ``dim * (dim - 1)`` off-diagonal entries of a square ``(dim, dim)`` matrix, as a view.

    Dropping the last entry and reading the rest with rows of ``dim + 1`` puts every diagonal entry in
    column 0 (the reference code's trick); summing the squares of all entries and subtracting the
    diagonal's instead would cancel catastrophically when the diagonal is near 1.
    """
    n = c.shape[0]
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins_loss(
    z1: Tensor, z2: Tensor, lambda_offdiag: float = 0.0051, eps: float = 1e-5, *, global_batch: bool = True
) -> Tensor:
    """Barlow Twins loss of two views' embeddings (of the global batch under several processes).

    With ``C = standardise(z1).T @ standardise(z2) / batch`` the ``(dim, dim)`` cross-correlation matrix,
    the loss is ``sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2``: the diagonal term makes
    the embedding invariant to the augmentation, the off-diagonal term decorrelates its dimensions so they
    carry no redundant information. It is 0 (up to ``eps``) for identical embeddings whose dimensions are
    standardised and uncorrelated over the batch, and it is unchanged by a per-dimension affine map
    ``z -> a * z + b`` with ``a > 0`` of either input (again up to ``eps``), because of the standardisation.

    Computed in float32 whatever the input dtype: the sums over ``dim^2`` entries lose too much in half
    precision.

    With several processes (and ``global_batch``), ``batch`` is the global batch: the standardisation
    is :func:`batch_standardise`'s global one and ``C`` is summed over the processes (an all-reduce of
    ``dim^2`` values, as the reference code does), so every process returns the same loss, that of the
    concatenated batch in one process. It is then a collective: call it on every process.

    Args:
        z1: ``(batch, dim)`` embeddings of the first view.
        z2: ``(batch, dim)`` embeddings of the second view; row ``i`` is the same sample as in ``z1``.
        lambda_offdiag: weight of the redundancy-reduction term (0.0051 in the paper).
        eps: added to the batch variance, as ``BatchNorm1d``.
        global_batch: compute over every process's rows; False: this process's alone.

    Returns:
        Scalar float32 tensor, the loss.

    Raises:
        ValueError: if ``z1`` and ``z2`` are not matching ``(batch, dim)`` tensors with ``batch >= 2``
            (one sample has no variance to standardise by; the global batch under several processes).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be matching (batch, dim) tensors, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    gather = global_batch and world_size() > 1
    # Every process learns the same global count, so all of them raise (or none does): none hangs.
    batch = global_rows(z1.shape[0], z1.device) if gather else z1.shape[0]
    if batch < 2:
        raise ValueError(f"Barlow Twins needs a batch of at least 2 samples, got {batch}")
    z1n = batch_standardise(z1.float(), eps, global_batch=gather)
    z2n = batch_standardise(z2.float(), eps, global_batch=gather)
    c = z1n.T @ z2n  # (dim, dim), this process's share of the sum over the batch
    c = (all_reduce_sum(c) if gather else c) / batch
    diagonal = torch.diagonal(c)
    on_diag = (1.0 - diagonal).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss`, holding its hyper-parameters.

    Args:
        lambda_offdiag: weight of the redundancy-reduction term.
        eps: added to the batch variance.
        global_batch: see :func:`barlow_twins_loss`.

    Raises:
        ValueError: if ``lambda_offdiag < 0`` or ``eps < 0``.
    """

    def __init__(self, lambda_offdiag: float = 0.0051, eps: float = 1e-5, global_batch: bool = True):
        super().__init__()
        if lambda_offdiag < 0 or eps < 0:
            raise ValueError(f"lambda_offdiag and eps must be >= 0, got {lambda_offdiag} and {eps}")
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps
        self.global_batch = global_batch

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """See :func:`barlow_twins_loss`: ``(batch, dim)`` twice to a scalar."""
        return barlow_twins_loss(z1, z2, self.lambda_offdiag, self.eps, global_batch=self.global_batch)

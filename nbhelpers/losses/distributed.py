"""Gather and sum across processes, with gradients, so that a loss sees the global batch.

Under ``accelerate launch`` (or ``torchrun``) each process holds its share of every batch. A loss over
pairs (CLIP's logits over every image-caption pair) or over batch statistics (Barlow Twins'
standardisation and cross-correlation, DINO's centre) computed per process would be another loss than
the one computed on the whole batch in one process. These helpers let every process compute the
*same* global-batch loss, as open_clip's ``ClipLoss(gather_with_grad=True, local_loss=False)`` does.

**Why the gradients come out right.** With the collectives of ``torch.distributed.nn.functional``
the backward of a gather or a sum adds up, over the processes, the gradients that reach each
process's copy of a row. Every one of the N processes computes the same loss ``L``, so the rows of a
process receive ``N * dL/drow``. DistributedDataParallel then *averages* the parameter gradients over
the N processes, which divides by N again: the averaged gradient is exactly ``dL/dtheta``, the
gradient of the global-batch loss in one process. A parameter that enters the loss directly, not
through gathered rows (CLIP's ``logit_scale``), gets ``dL/dparam`` on every process, whose average is
again ``dL/dparam``. Nothing needs rescaling. (The same holds for ``SyncBatchNorm``, whose backward sums
over processes in the same way.)

Every helper is the identity (no communication) when ``torch.distributed`` is unavailable, not
initialised, or has one process, so single-process code pays nothing. Under several processes, every
process must call the same helpers in the same order (they are collectives): call a loss that uses
them on every process, never on the main process alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of processes of the default ``torch.distributed`` group; 1 when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@contextmanager
def _autograd_collectives() -> Iterator[None]:
    """Silences the FutureWarning recent torch versions attach to ``torch.distributed.nn.functional``.

    It is the public, differentiable collectives API (open_clip's too); the replacement it names,
    ``torch.distributed._functional_collectives``, is private and its autograd support differs across
    the torch versions this package runs on (Colab's among them).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.distributed\.nn\.functional\.\w+ is deprecated", category=FutureWarning
        )
        yield


def _gather_sizes(rows: int, device: torch.device) -> list[int]:
    local = torch.tensor([rows], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def all_gather_rows(tensor: Tensor) -> Tensor:
    """The rows of every process's ``tensor``, concatenated in process (rank) order, with gradients.

    Processes may hold different numbers of rows (each is padded to the largest for the collective
    and cut back after). A floating-point tensor is gathered with ``torch.distributed.nn.functional
    .all_gather``, whose backward sends each process the sum over processes of its rows' gradients
    (see the module docstring for why that is the right gradient under DDP); any other dtype (e.g. a
    ``bool`` mask) is gathered without gradient.

    Args:
        tensor: ``(rows, ...)``; the trailing dimensions and the dtype must be the same on every process.

    Returns:
        ``(total_rows, ...)``: ``tensor`` itself when there is one process.
    """
    n = world_size()
    if n == 1:
        return tensor
    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    largest = max(sizes)
    padded = tensor.contiguous()
    if tensor.shape[0] < largest:
        fill = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([padded, fill])
    if padded.is_floating_point():
        from torch.distributed.nn.functional import all_gather

        with _autograd_collectives():
            parts = list(all_gather(padded))
    else:
        # Collective backends do not all carry bool; uint8 holds the same values.
        wire = padded.to(torch.uint8) if padded.dtype == torch.bool else padded
        parts = [torch.empty_like(wire) for _ in range(n)]
        dist.all_gather(parts, wire)
        parts = [p.to(tensor.dtype) for p in parts]
    if all(size == largest for size in sizes):
        return torch.cat(parts)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over every process, with gradients.

    The backward sums the incoming gradients over the processes too (``torch.distributed.nn.functional
    .all_reduce``), the right gradient under DDP when every process computes the same loss from the
    sum (see the module docstring). The input is not modified.

    Args:
        tensor: any shape, the same on every process.

    Returns:
        A tensor of the same shape: ``tensor`` itself when there is one process.
    """
    if world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_reduce

    with _autograd_collectives():
        return all_reduce(tensor.contiguous(), op=dist.ReduceOp.SUM)


def global_rows(rows: int, device: torch.device | str = "cpu") -> int:
    """The number of rows of the global batch: ``rows`` summed over every process.

    Args:
        rows: this process's rows.
        device: where the collective runs (a CUDA device under NCCL; the loss's inputs' device).
    """
    if world_size() == 1:
        return rows
    count = torch.tensor([rows], dtype=torch.int64, device=device)
    dist.all_reduce(count)
    return int(count)


def global_mean(values: Tensor) -> Tensor:
    """The mean over the rows (dim 0) of the global batch, with gradients: ``values.mean(0)`` in one process.

    Every process gets the same value, the mean over every process's rows (however many each holds),
    and its rows the gradient described in the module docstring.

    Args:
        values: ``(rows, ...)``, e.g. a per-sample loss ``(rows,)`` or embeddings ``(rows, dim)``.

    Returns:
        ``values.shape[1:]``.
    """
    if world_size() == 1:
        return values.mean(dim=0)
    return all_reduce_sum(values.sum(dim=0)) / global_rows(values.shape[0], values.device)

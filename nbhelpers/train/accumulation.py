"""Gradient accumulation that keeps the whole batch in a batch-level loss (GradCache).

A contrastive loss is a property of the whole batch: each image is contrasted with every caption of it.
Plain accumulation (``grad_accum_steps = k``, one loss and one backward per micro-batch) turns one batch
into ``k`` smaller contrastive problems, each with ``1/k`` of the negatives (and, with a mask, ``1/k`` of
the valid pairs). Gao et al., 2021 ("Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", GradCache), as open_clip's ``--accum-freq``, keep the whole batch:

1. with no gradient, encode every micro-batch and keep its features (rows only: the memory of the
   features, not of the activations);
2. one micro-batch at a time, encode it again with gradients, put its fresh features in place of its
   cached ones, compute the loss over the whole batch and back-propagate it. Only the fresh rows carry a
   gradient, so the sum of the ``k`` backward passes is the gradient of the whole batch's loss.

The sum is exact when the second encode computes what the first did: the RNG state (Python, numpy,
torch CPU and CUDA) is saved before each first-pass encode and restored before its recompute, so
dropout draws the same masks (GradCache's ``RandContext``); the first pass leaves the model's buffers
as it found them, so BatchNorm's running statistics move once per micro-batch, as without this. What it
cannot make exact is BatchNorm in training mode: it normalises over the micro-batch, not the batch.

**The protocol.** A recipe gives ``fit`` a :class:`BatchLoss` instead of a ``step`` function:
``encode(model, micro_batch) -> features`` (a dict of tensors) and ``loss(features) -> (loss, logs)``
over the features of the whole batch. A feature with rows (``(rows, ...)``, any dtype: embeddings,
logits, labels, masks) is concatenated over the micro-batches; a 0-d tensor (a learnable temperature,
``logit_scale``) is one value shared by the batch. Everything the loss reads from the model must come
through ``encode``: a parameter read directly by ``loss`` would be counted ``k`` times. A shared
scalar's gradient is divided by ``k`` in each pass, so its ``k`` passes add up to one gradient (open_clip
counts it ``k`` times). ``BatchLoss.step`` is the plain ``step(model, batch)`` of the same loss, what
``fit`` runs with no accumulation and what a recipe passes to accumulate per micro-batch instead.

Under several processes the loss gathers every process's rows itself (:mod:`nbhelpers.losses.distributed`),
in each pass, so the batch is the global one; DDP syncs once, after the last micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nbhelpers.train.checkpoint import capture_rng_state, restore_rng_state

Features = Mapping[str, Tensor]
#: ``accumulate_loss`` values: ``batch`` keeps the whole batch in the loss; ``micro`` one loss per micro-batch.
ACCUMULATE_LOSS_MODES = ("batch", "micro")


@dataclass(frozen=True)
class BatchLoss:
    """A loss of the whole batch, split into a per-micro-batch encode and a loss over all of them.

    Attributes:
        encode: ``(model, micro_batch) -> {name: tensor}``: ``(rows, ...)`` tensors, concatenated over
            the micro-batches, and 0-d tensors shared by the batch (``logit_scale``). Call the model as
            ``model(...)`` (DDP sees the forward).
        loss: ``features -> (loss, logs)``: a scalar loss of the whole batch and floats to log.
    """

    encode: Callable[[nn.Module, Any], Features]
    loss: Callable[[Features], tuple[Tensor, Mapping[str, float]]]

    def step(self, model: nn.Module, batch: Any) -> tuple[Tensor, Mapping[str, float]]:
        """The plain step: the loss of ``batch`` alone (one micro-batch, or the whole batch)."""
        return self.loss(self.encode(model, batch))


def step_for(batch_loss: BatchLoss, accumulate_loss: str) -> BatchLoss | Callable[..., Any]:
    """What a recipe gives ``fit``: ``batch_loss`` itself (``batch``) or its plain step (``micro``).

    Raises:
        ValueError: for a mode not in :data:`ACCUMULATE_LOSS_MODES`.
    """
    if accumulate_loss not in ACCUMULATE_LOSS_MODES:
        raise ValueError(f"accumulate_loss must be one of {ACCUMULATE_LOSS_MODES}, got {accumulate_loss!r}")
    return batch_loss if accumulate_loss == "batch" else batch_loss.step


class CachedBatch:
    """Phase 1 at construction (no-grad encodes, RNG states saved); :meth:`loss` is phase 2.

    Args:
        batch_loss: the recipe's loss.
        model: the prepared model (both phases call it).
        micro_batches: the ``k`` micro-batches of one optimiser step, on the device.
        autocast: the precision's autocast context factory (both phases run under it).
    """

    def __init__(
        self,
        batch_loss: BatchLoss,
        model: nn.Module,
        micro_batches: Sequence[Any],
        autocast: Callable[[], AbstractContextManager],
    ):
        self.batch_loss, self.model, self.micro_batches, self.autocast = (
            batch_loss,
            model,
            micro_batches,
            autocast,
        )
        self.rng: list[dict[str, Any]] = []
        self.cached: list[dict[str, Tensor]] = []
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        with torch.no_grad():
            for micro in micro_batches:
                self.rng.append(capture_rng_state())
                with autocast():
                    self.cached.append(_checked(batch_loss.encode(model, micro)))
        self.after = capture_rng_state()
        # BatchNorm's running statistics (and any buffer the forward moves) move in phase 2 only.
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])

    def loss(self, j: int) -> tuple[Tensor, Mapping[str, float]]:
        """Phase 2 for micro-batch ``j``: its encode with gradients (the RNG as in phase 1), spliced into
        the cached features, and the whole batch's loss. Back-propagate it (unscaled: the sum of the
        passes' gradients is the whole batch's) before the next pass."""
        restore_rng_state(self.rng[j])
        with self.autocast():
            fresh = _checked(self.batch_loss.encode(self.model, self.micro_batches[j]))
            return self.batch_loss.loss(_splice(self.cached, j, fresh, len(self.micro_batches)))

    def finish(self) -> None:
        """Leaves the RNGs where phase 1 left them (as if each micro-batch had been encoded once)."""
        restore_rng_state(self.after)


def _checked(features: Features) -> dict[str, Tensor]:
    if not isinstance(features, Mapping) or not all(isinstance(v, Tensor) for v in features.values()):
        raise TypeError("BatchLoss.encode must return a dict of tensors")
    return dict(features)


def _splice(cached: Sequence[Features], j: int, fresh: Features, k: int) -> dict[str, Tensor]:
    """The whole batch's features with micro-batch ``j``'s cached rows replaced by its fresh ones."""
    out = {}
    for name, value in fresh.items():
        if value.ndim == 0:
            # Same value as cached; 1/k of the gradient, so the k passes add up to one.
            out[name] = cached[j][name] + (value - value.detach()) / k
        else:
            out[name] = torch.cat(
                [*(c[name] for c in cached[:j]), value, *(c[name] for c in cached[j + 1 :])]
            )
    return out


__all__ = ["ACCUMULATE_LOSS_MODES", "BatchLoss", "CachedBatch", "Features", "step_for"]

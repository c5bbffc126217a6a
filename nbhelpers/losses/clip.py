"""CLIP's symmetric contrastive loss (InfoNCE) restricted to the pairs whose text truly describes the image.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021
(arXiv:2103.00020), as implemented by open_clip's ``ClipLoss`` (Ilharco et al., 2021).

Our data mixes genuine image-caption pairs with pairs whose text deliberately mismatches the picture
(misinformation, satire, false connection). Contrasting those as positives would teach the encoders that
the lie is the description, so only the valid pairs take part: an invalid sample is neither a positive
nor a negative for anyone.

Under several processes (``accelerate launch``, ``torchrun``) the features and the mask of every
process are gathered with their gradients first (:mod:`nbhelpers.losses.distributed`), so every
process computes the loss of the global batch, every valid pair a negative of every other, as
open_clip's ``ClipLoss(gather_with_grad=True, local_loss=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nbhelpers.losses.distributed import all_gather_rows, world_size


def _check_inputs(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, valid: Tensor | None):
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(
            "image_features and text_features must be (batch, dim), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must have the same shape, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must hold one value, got shape {tuple(logit_scale.shape)}")
    if valid is not None:
        if valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
        if valid.shape != (image_features.shape[0],):
            raise ValueError(f"valid must have shape ({image_features.shape[0]},), got {tuple(valid.shape)}")


def masked_clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    valid: Tensor | None = None,
    *,
    global_batch: bool = True,
) -> Tensor:
    """Symmetric InfoNCE over the valid image-text pairs of the (global) batch.

    Follows open_clip's convention: the features are already L2-normalised and ``logit_scale`` is already
    exponentiated (``model.logit_scale.exp()``). The batch is first restricted to the valid samples, so
    the ``(batch, batch)`` logits matrix becomes ``(n_valid, n_valid)``: an invalid sample's row and its
    column both drop out. The loss is then the mean cross-entropy image-to-text plus the mean
    cross-entropy text-to-image, halved. With every pair valid this is exactly
    ``open_clip.loss.ClipLoss()(image_features, text_features, logit_scale)`` on one process.

    With no valid pair the result is a zero computed from the (empty) selection of the inputs: it has a
    ``grad_fn`` connected to ``image_features``, ``text_features`` and ``logit_scale``, so a training step
    whose batch holds no valid pair can still call ``backward()`` (every gradient is then exactly 0)
    instead of branching. The same holds for the rows of invalid samples in every batch: they receive a
    gradient of exactly 0, and non-finite values in them cannot leak into the loss. One valid pair gives
    a 1x1 logits matrix whose cross-entropy is exactly 0: a single pair has no negatives to learn from.

    With ``torch.distributed`` initialised and several processes (and ``global_batch``), the batch is
    the global one: each process's features and mask are gathered, in rank order, with their gradients
    (:func:`~nbhelpers.losses.distributed.all_gather_rows`), and every process returns the same value,
    the loss one process would compute on the concatenated batch. Under DDP's gradient averaging this
    gives exactly that single process's gradient (see :mod:`nbhelpers.losses.distributed`). It is then
    a collective: call it on every process.

    Args:
        image_features: ``(batch, dim)`` L2-normalised image embeddings.
        text_features: ``(batch, dim)`` L2-normalised text embeddings; row ``i`` is paired with image ``i``.
        logit_scale: scalar tensor (``()`` or one element), the exponentiated learnable temperature.
        valid: ``(batch,)`` bool, True where the text truly describes the image. ``None`` means all valid.
        global_batch: gather the batches of every process first; False computes this process's batch
            alone (open_clip's ``local_loss`` without gathering). No effect in one process.

    Returns:
        Scalar tensor, the loss.

    Raises:
        ValueError: if the features are not two matching ``(batch, dim)`` tensors, ``logit_scale`` does
            not hold exactly one value, or ``valid`` is not a ``(batch,)`` bool tensor.
    """
    _check_inputs(image_features, text_features, logit_scale, valid)
    if global_batch and world_size() > 1:
        if valid is None:  # gathered all the same: a process with a mask and one without must agree
            valid = torch.ones(image_features.shape[0], dtype=torch.bool, device=image_features.device)
        image_features = all_gather_rows(image_features)
        text_features = all_gather_rows(text_features)
        valid = all_gather_rows(valid)
    if valid is not None:
        # Boolean indexing keeps the autograd graph; rows that are dropped get a zero gradient.
        image_features = image_features[valid]
        text_features = text_features[valid]
    n_valid = image_features.shape[0]
    # Two products (not one and its transpose) so the result matches open_clip's ClipLoss bit for bit.
    logits_per_image = logit_scale * image_features @ text_features.T  # (n_valid, n_valid)
    logits_per_text = logit_scale * text_features @ image_features.T  # (n_valid, n_valid)
    if n_valid == 0:
        # An empty sum is 0 and still depends on every input, so backward() works and gives zeros.
        return logits_per_image.sum() + logits_per_text.sum()
    labels = torch.arange(n_valid, device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

"""CASS-MM: cross-architectural self-supervision extended to image-text pairs (this project's own loss).

There is no published definition; this one combines CASS (Singh, Sizikova and Cirrone, 2022,
arXiv:2206.04170) with CLIP's contrastive loss (Radford et al., 2021, arXiv:2103.00020):

    L = CASS(cnn, vit) + (CLIP_valid(cnn, text) + CLIP_valid(vit, text)) / 2

Why each term:

* **CNN-ViT agreement (CASS).** A CNN (local, translation-equivariant) and a ViT (global attention) see
  the same picture differently, so asking their embeddings to agree is a view-invariance signal that
  needs no augmentation and no negatives, and it is defined on *every* image, whatever its label. It
  also ties the two image towers into one embedding space, which the text terms rely on.
* **Each image tower contrasted with the text (CLIP).** The agreement term alone is satisfied by any
  shared function of the image, meaningful or not; contrasting with captions anchors that space to what
  the text says. Each tower gets its own text term so that neither can free-ride on the other (with a
  single term on, say, the averaged embedding, one tower could stop learning from text). The two are
  averaged so the text signal weighs as much as the single CASS term and the sum keeps CASS's scale.
* **Masked to valid pairs.** Only label 0 ("True/Neutral") marks a text that truly describes its
  picture; satire, misleading captions and false connections are pairs whose text is *meant* not to
  match. Treating them as positives would teach the towers that the lie is the description, and as
  negatives of the others they would still inject their captions. So invalid samples drop out of the
  contrastive terms entirely (rows and columns) and contribute through the CASS term only. With no
  valid pair in a batch the loss is exactly CASS.

All three embeddings must live in one ``dim``-wide space (each tower ends in a projection to it).

Under several processes every term is over the global batch: the CASS mean over every process's
samples, the contrastive terms over every valid pair of every process (the embeddings and the mask are
gathered once, with gradients, for both; :mod:`nbhelpers.losses.distributed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nbhelpers.losses.cass import cass_loss
from nbhelpers.losses.clip import masked_clip_loss
from nbhelpers.losses.distributed import all_gather_rows, world_size


def cass_mm_loss(
    cnn_embeddings: Tensor,
    vit_embeddings: Tensor,
    text_embeddings: Tensor,
    logit_scale: Tensor,
    valid: Tensor | None = None,
    *,
    global_batch: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CASS between the image towers plus the mean of each tower's masked CLIP loss against the text.

    The embeddings need not be normalised: each is L2-normalised here (CASS normalises anyway, and CLIP
    follows open_clip's convention of normalised inputs).

    With several processes (and ``global_batch``) every process returns the loss of the global batch,
    whose gradient DDP's averaging turns into the single-process one (see
    :func:`~nbhelpers.losses.clip.masked_clip_loss`); it is then a collective: call it on every process.

    Args:
        cnn_embeddings: ``(batch, dim)`` CNN image embeddings.
        vit_embeddings: ``(batch, dim)`` ViT image embeddings of the same images.
        text_embeddings: ``(batch, dim)`` text embeddings; row ``i`` is the caption of image ``i``.
        logit_scale: scalar tensor, the exponentiated CLIP temperature (shared by both text terms).
        valid: ``(batch,)`` bool, True where the text truly describes the image; ``None`` means all valid.
        global_batch: compute over every process's samples; False: this process's alone.

    Returns:
        ``(total, parts)``: ``total`` is the scalar to back-propagate; ``parts`` maps ``"cass"``,
        ``"clip_cnn"`` and ``"clip_vit"`` to the unweighted terms, detached (for logging).

    Raises:
        ValueError: if the three embeddings are not matching ``(batch, dim)`` tensors, or from
            :func:`~nbhelpers.losses.clip.masked_clip_loss` for ``logit_scale`` and ``valid``.
    """
    if not cnn_embeddings.shape == vit_embeddings.shape == text_embeddings.shape:
        raise ValueError(
            "cnn, vit and text embeddings must have the same (batch, dim) shape, got "
            f"{tuple(cnn_embeddings.shape)}, {tuple(vit_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    cass = cass_loss(cnn_embeddings, vit_embeddings, global_batch=global_batch)
    cnn = F.normalize(cnn_embeddings, dim=-1)
    vit = F.normalize(vit_embeddings, dim=-1)
    text = F.normalize(text_embeddings, dim=-1)
    if global_batch and world_size() > 1:
        # Gathered once for both contrastive terms (the text would otherwise be gathered twice).
        if valid is None:
            valid = torch.ones(cnn.shape[0], dtype=torch.bool, device=cnn.device)
        cnn, vit, text, valid = (all_gather_rows(t) for t in (cnn, vit, text, valid))
    clip_cnn = masked_clip_loss(cnn, text, logit_scale, valid, global_batch=False)
    clip_vit = masked_clip_loss(vit, text, logit_scale, valid, global_batch=False)
    total = cass + (clip_cnn + clip_vit) / 2
    return total, {"cass": cass.detach(), "clip_cnn": clip_cnn.detach(), "clip_vit": clip_vit.detach()}

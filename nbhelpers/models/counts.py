"""Parameter budgets of the two fine-tuning set-ups: full fine-tuning versus LoRA plus the head.

Counts come from the real modules (the open_clip model, :func:`nbhelpers.lora.add_lora`, the
:class:`~nbhelpers.models.heads.TransformerClassifierHead`), built on PyTorch's ``meta`` device: shapes
without storage, so even ``ViT-L-14`` is counted in a fraction of a second and nothing is downloaded.
"""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from nbhelpers.data.taxonomy import NUM_CLASSES
from nbhelpers.lora import DEFAULT_RANK, add_lora, lora_parameters
from nbhelpers.models.clip import quiet_random_init, register_model_configs
from nbhelpers.models.heads import TransformerClassifierHead, clip_embed_dim

__all__ = ["parameter_counts"]


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def parameter_counts(
    model_name: str, lora_rank: int = DEFAULT_RANK, num_classes: int = NUM_CLASSES
) -> dict[str, int]:
    """Counts the parameters of a CLIP architecture, its classification head and its LoRA adapters.

    For ``ViT-B-32``, rank 4, 7 classes: vision 87,849,216; text 63,428,097; LoRA 122,880; head
    6,310,407; trainable 157,587,720 (full) versus 6,433,287 (LoRA + head).

    Args:
        model_name: an open_clip architecture or a memelab tiny one.
        lora_rank: LoRA rank on every attention output projection.
        num_classes: classes of the head.

    Returns:
        ``vision`` (the image tower), ``text`` (everything else, ``logit_scale`` included), ``head``,
        ``lora``, ``trainable_baseline`` (vision + text + head: full fine-tuning) and ``trainable_lora``
        (head + lora).

    Raises:
        ValueError: on an unknown architecture.
    """
    register_model_configs()
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown model {model_name!r}; see open_clip.list_models()")
    with torch.device("meta"), quiet_random_init():
        model: nn.Module = open_clip.create_model(model_name, device="meta")
        head = TransformerClassifierHead(clip_embed_dim(model), num_classes)
    vision = _numel(model.visual.parameters())
    text = _numel(model.parameters()) - vision
    with torch.device("meta"):
        add_lora(model, rank=lora_rank)
    lora = _numel(lora_parameters(model))
    head_count = _numel(head.parameters())
    return {
        "vision": vision,
        "text": text,
        "head": head_count,
        "lora": lora,
        "trainable_baseline": vision + text + head_count,
        "trainable_lora": head_count + lora,
    }

"""Where a model looks, in numbers: attention weights and maps, Grad-CAM, per-token attributions.

* **Attention maps** as in DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision
  Transformers", Fig. 1 and ``visualize_attention.py``): a layer's attention of the CLS token to every
  patch, one map per head, upsampled to the picture; and the mask that keeps the most-attended patches
  holding a chosen share (e.g. 60 %) of the attention mass (:func:`mass_threshold_mask`).
  open_clip calls its attention with ``need_weights=False``, so :class:`AttentionRecorder` reads each
  attention module's *inputs* with a forward pre-hook and recomputes the weights from the module's own
  projections: the model's forward runs exactly as without it (bit-identical outputs, tested). It works
  on ``nn.MultiheadAttention`` and on :class:`nbhelpers.lora.ModuleAttention` (LoRA runs), whose query and
  key projections are the same parameters (LoRA only adapts ``out_proj``). The ViTs of the SSL recipe
  (:class:`nbhelpers.models.ssl.VisionTransformer`) return their weights themselves
  (:func:`ssl_vit_attention`).
* **Grad-CAM** (Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization") for CNNs, through the ``grad-cam`` package (``pytorch_grad_cam``): the
  last convolutional stage's activations weighted by the pooled gradient of the predicted class's logit.
* **Token attributions** for the caption: gradient x input (Shrikumar et al., 2016, "Not Just a Black Box";
  Simonyan et al., 2014) of the predicted class's logit with respect to the token embeddings, summed over
  the embedding; and the last text layer's attention of the pooled (end-of-text) token.

Attention weights say what a layer mixes, not why the model decides (Jain & Wallace, 2019, "Attention is
not Explanation"; Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers"): notebook 08 shows
them next to gradient-based maps, and reads both as hints. :mod:`nbhelpers.evaluation.explainers` applies
these functions to the trained runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.lora import ModuleAttention

#: Attention modules whose weights :class:`AttentionRecorder` can recompute from their inputs.
RECORDABLE = (nn.MultiheadAttention, ModuleAttention)


# --------------------------------------------------------------------------------- attention weights


def attention_weights(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head attention weights of ``module`` for these inputs, ``softmax(q k^T / sqrt(d) + mask)``.

    Recomputed from the module's own input projection (``in_proj_weight`` / ``in_proj_bias``), exactly as
    ``nn.MultiheadAttention`` computes them before applying them to the values.

    Args:
        module: an ``nn.MultiheadAttention`` or :class:`~nbhelpers.lora.ModuleAttention` (same parameters).
        query: ``(B, L, E)`` if ``module.batch_first`` else ``(L, B, E)``.
        key: like ``query`` with ``S`` positions; None: self-attention (``key = query``).
        attn_mask: ``(L, S)`` or ``(B * heads, L, S)``; bool True = masked out, float = added.
        key_padding_mask: ``(B, S)``; bool True = ignore that key.

    Returns:
        ``(B, heads, L, S)``; every row sums to 1 over the ``S`` keys.

    Raises:
        TypeError: for a module without a packed input projection (separate q/k/v weights included).
    """
    if not isinstance(module, RECORDABLE) or getattr(module, "in_proj_weight", None) is None:
        raise TypeError(f"cannot recompute the attention of {type(module).__name__} (needs in_proj_weight)")
    key = query if key is None else key
    if not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    batch, tgt_len, embed = query.shape
    src_len = key.shape[1]
    heads = module.num_heads
    head_dim = embed // heads
    w_q, w_k, _ = module.in_proj_weight.chunk(3)
    b_q = b_k = None
    if module.in_proj_bias is not None:
        b_q, b_k, _ = module.in_proj_bias.chunk(3)
    # (B, len, E) -> (B, heads, len, head_dim)
    q = F.linear(query, w_q, b_q).reshape(batch, tgt_len, heads, head_dim).transpose(1, 2)
    k = F.linear(key, w_k, b_k).reshape(batch, src_len, heads, head_dim).transpose(1, 2)
    logits = (q / math.sqrt(head_dim)) @ k.transpose(-2, -1)  # (B, heads, L, S)
    if attn_mask is not None:
        mask = _additive(attn_mask, logits.dtype)
        logits = logits + (mask.reshape(batch, heads, tgt_len, src_len) if mask.dim() == 3 else mask)
    if key_padding_mask is not None:
        logits = logits + _additive(key_padding_mask, logits.dtype).reshape(batch, 1, 1, src_len)
    return logits.softmax(dim=-1)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


class AttentionRecorder:
    """Records the per-head attention weights of attention modules during a forward, without changing it.

    A forward pre-hook reads each module's query, key and masks and recomputes the weights on the side
    (:func:`attention_weights`, no gradient); the module itself runs untouched, fused kernel included,
    so the model's outputs are bit-identical to a run without the recorder.

    Use as a context manager::

        with AttentionRecorder(modules) as recorder:
            out = model(x)
        recorder.weights  # one (B, heads, L, S) tensor per module, in the order given

    Args:
        modules: the attention modules (``nn.MultiheadAttention`` or ``ModuleAttention``), e.g. one per layer.

    Raises:
        TypeError: if a module's weights cannot be recomputed.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        for module in modules:
            if not isinstance(module, RECORDABLE):
                raise TypeError(f"cannot record the attention of {type(module).__name__}")
        self.modules = list(modules)
        self.weights: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list[Any] = []

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs.get("key", query)
            with torch.no_grad():
                self.weights[index] = attention_weights(
                    module,
                    query.detach(),
                    key.detach(),
                    kwargs.get("attn_mask"),
                    kwargs.get("key_padding_mask"),
                )

        return hook

    def __enter__(self) -> AttentionRecorder:
        self._handles = [
            m.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, m in enumerate(self.modules)
        ]
        return self

    def __exit__(self, *exc: Any) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False


def open_clip_blocks(tower: nn.Module) -> list[nn.Module]:
    """The residual attention blocks of an open_clip tower (``model.visual`` or the CLIP model's text side).

    Raises:
        TypeError: if the tower has no ``transformer.resblocks`` (a ModifiedResNet visual tower, say).
    """
    transformer = getattr(tower, "transformer", None)
    if transformer is None or not hasattr(transformer, "resblocks"):
        raise TypeError(f"{type(tower).__name__} is not an open_clip transformer tower")
    return list(transformer.resblocks)


@torch.no_grad()
def open_clip_attention(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs an open_clip ViT image tower and records every layer's attention.

    Args:
        visual: ``clip.visual`` (an open_clip ``VisionTransformer``), with or without LoRA.
        images: ``(B, 3, H, W)`` normalised pictures.

    Returns:
        ``(embeddings (B, D), [weights (B, heads, N, N) per layer])`` with ``N = 1 + (H/p) * (W/p)``,
        the class token first.
    """
    with AttentionRecorder([block.attn for block in open_clip_blocks(visual)]) as recorder:
        out = visual(images)
    return out, list(recorder.weights)


@torch.no_grad()
def recorder_is_transparent(visual: nn.Module, images: torch.Tensor) -> bool:
    """Whether an open_clip image tower gives bit-identical embeddings with and without the recorder."""
    plain = visual(images)
    recorded, _ = open_clip_attention(visual, images)
    return torch.equal(plain, recorded)


@torch.no_grad()
def ssl_vit_attention(vit: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's attention weights of a :class:`nbhelpers.models.ssl.VisionTransformer`.

    The last one is what ``vit.get_last_selfattention(images)`` returns.

    Returns:
        ``[weights (B, heads, N, N) per layer]``, the class token first.
    """
    x = vit.tokens(images)
    weights = []
    for block in vit.blocks:
        x, attn = block(x, return_attention=True)
        weights.append(attn)
    return weights


def cls_attention_maps(
    weights: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """The class token's attention to each patch, as a picture per head.

    Args:
        weights: ``(B, heads, N, N)`` attention weights with ``N = num_prefix_tokens + gh * gw``.
        grid: ``(gh, gw)``, the patch grid.
        num_prefix_tokens: tokens before the patches (the class token, register tokens).

    Returns:
        ``(B, heads, gh, gw)``; each map sums to at most 1 (the rest went to the prefix tokens).

    Raises:
        ValueError: if ``N`` does not match the grid.
    """
    b, h, n, _ = weights.shape
    gh, gw = grid
    if n != num_prefix_tokens + gh * gw:
        raise ValueError(f"{n} tokens do not make {num_prefix_tokens} prefix tokens + a {gh}x{gw} grid")
    return weights[:, :, 0, num_prefix_tokens:].reshape(b, h, gh, gw)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., gh, gw)`` patch maps -> ``(..., H, W)``, each patch a block of pixels (DINO's nearest upsampling)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="nearest").reshape(*lead, *size)


def mass_threshold_mask(maps: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """The smallest set of most-attended patches that holds at least ``mass`` of each map's total.

    DINO's ``visualize_attention.py --threshold``: sort a map's values, normalise them to sum 1, and keep
    the patches whose cumulative (ascending) share exceeds ``1 - mass``.

    Args:
        maps: ``(..., gh, gw)`` non-negative maps (one per head and image).
        mass: the share of the attention mass to keep, in ``(0, 1]``.

    Returns:
        a bool tensor shaped like ``maps``, True on the kept patches.

    Raises:
        ValueError: if ``mass`` is outside ``(0, 1]``.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1]).double()
    values, order = flat.sort(dim=-1)
    shares = values / values.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    keep_sorted = shares.cumsum(dim=-1) > 1 - mass
    keep_sorted[:, -1] = True  # the top patch always stays (guards rounding when mass = 1)
    keep = torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep.reshape(maps.shape)


# ------------------------------------------------------------------------------------------- Grad-CAM


def grad_cam(
    model: nn.Module,
    target_layer: nn.Module,
    images: torch.Tensor,
    target_classes: Sequence[int] | None = None,
) -> np.ndarray:
    """Grad-CAM maps of a classifier, one per image, at the input's size.

    Args:
        model: ``(B, 3, H, W) -> (B, C)`` logits (put in eval mode by ``pytorch_grad_cam``).
        target_layer: the layer whose activations are weighted, usually the last convolutional stage
            (``resnet.layer4[-1]``).
        images: ``(B, 3, H, W)`` normalised pictures.
        target_classes: the class explained per image; None: the predicted class.

    Returns:
        ``(B, H, W)`` float32 maps in ``[0, 1]`` (each min-max scaled, as the package does).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = None if target_classes is None else [ClassifierOutputTarget(int(c)) for c in target_classes]
    with torch.enable_grad(), GradCAM(model=model, target_layers=[target_layer]) as cam:
        maps = cam(input_tensor=images, targets=targets)
    model.zero_grad(set_to_none=True)
    return np.clip(maps.astype(np.float32), 0.0, 1.0)


def resnet_cam_layer(resnet: nn.Module, images: torch.Tensor, min_side: int = 4) -> nn.Module:
    """The deepest ResNet stage whose feature map is at least ``min_side`` patches wide for these images.

    Grad-CAM's map has the target layer's resolution: ResNet's ``layer4`` is 1x1 on a 32-px picture, where
    Grad-CAM can only return a constant map; an earlier stage keeps a spatial grid.

    Args:
        resnet: a torchvision ResNet (``layer1`` .. ``layer4``).
        images: a batch of the inputs it will explain (only the shape matters).
        min_side: the smallest grid side accepted.

    Returns:
        the last block of the chosen stage (``layer1[-1]`` if none is wide enough).
    """
    stages = [getattr(resnet, f"layer{i}") for i in range(1, 5)]
    sides: dict[int, int] = {}
    handles = [
        stage.register_forward_hook(lambda m, a, out, i=i: sides.__setitem__(i, min(out.shape[-2:])))
        for i, stage in enumerate(stages)
    ]
    try:
        with torch.no_grad():
            resnet(torch.zeros(1, *images.shape[1:], device=images.device, dtype=images.dtype))
    finally:
        for handle in handles:
            handle.remove()
    deepest = max((i for i, side in sides.items() if side >= min_side), default=0)
    return stages[deepest][-1]


# ---------------------------------------------------------------------------------- token attributions


def gradient_x_input(score: Callable[[], torch.Tensor], embedding: nn.Module) -> torch.Tensor:
    """Gradient x input of a score with respect to the token embeddings, one value per token.

    A forward hook swaps ``embedding``'s output for the same values as a fresh leaf that requires a
    gradient (so frozen embeddings, e.g. under LoRA, work too); ``score()`` runs the model once, and the
    attribution of token ``t`` is ``sum_d e_{t,d} * d score / d e_{t,d}``.

    Args:
        score: runs the model and returns ``(B,)`` scores (e.g. the predicted class's logit per sample).
        embedding: the token embedding module (``clip.token_embedding``, BERT's ``word_embeddings``).

    Returns:
        ``(B, L)`` attributions, one per token position.

    Raises:
        RuntimeError: if ``score()`` never called ``embedding``.
    """
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = embedding.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            values = score()
            if not captured:
                raise RuntimeError("the score did not run the embedding module")
            (grad,) = torch.autograd.grad(values.sum(), captured[-1])
    finally:
        handle.remove()
    return (captured[-1].detach() * grad).sum(dim=-1)


def pooled_token_index(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The position open_clip pools the text from (``text_pool_type``): the end-of-text token by default."""
    pool = getattr(clip, "text_pool_type", "argmax")
    if pool == "first":
        return torch.zeros(len(tokens), dtype=torch.long)
    if pool == "last":
        return torch.full((len(tokens),), tokens.shape[1] - 1, dtype=torch.long)
    if pool == "eos":
        return (tokens == clip.text_eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)


@torch.no_grad()
def pooled_token_attention(clip: nn.Module, tokens: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """A text layer's attention of the pooled token to every token of the caption, per head.

    Args:
        clip: an open_clip ``CLIP`` model.
        tokens: ``(B, L)`` token ids.
        layer: the text transformer layer (default: the last).

    Returns:
        ``(B, heads, L)``; each head's row sums to 1 (the causal mask leaves later tokens at 0).
    """
    blocks = open_clip_blocks(clip)
    with AttentionRecorder([blocks[layer].attn]) as recorder:
        clip.encode_text(tokens)
    weights = recorder.weights[0]  # (B, heads, L, L)
    rows = pooled_token_index(clip, tokens).to(weights.device)
    return weights[torch.arange(len(tokens)), :, rows]

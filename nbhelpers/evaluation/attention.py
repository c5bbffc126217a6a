"""Where a trained model looks: ViT attention maps, Grad-CAM for CNNs, per-token attributions for text.

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
not Explanation"; Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers"): the notebook shows
them next to gradient-based maps, and reads both as hints.

The second half of the module wraps every trained run of notebooks 02-07 in an :class:`Explainer`
(:func:`load_explainer`): the run's model, its input size and normalisation, and one ``explain`` that
returns the picture, caption, true and predicted class and every map the architecture allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.config import BaseConfig, ConfigError, param
from nbhelpers.data.memory import TensorSplit, load_split, normalize
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.evaluation.runs import RunRecord, discover_runs, inspect_run
from nbhelpers.lora import ModuleAttention
from nbhelpers.models.clip import clip_image_size
from nbhelpers.models.ssl import IMAGENET_MEAN, IMAGENET_STD, VIT_CONFIGS, VisionTransformer

__all__ = [
    "AttentionRecorder",
    "attention_weights",
    "open_clip_attention",
    "ssl_vit_attention",
    "recorder_is_transparent",
    "cls_attention_maps",
    "upsample_maps",
    "mass_threshold_mask",
    "grad_cam",
    "resnet_cam_layer",
    "gradient_x_input",
    "pooled_token_attention",
    "Explanation",
    "Explainer",
    "AttentionConfig",
    "DEFAULT_RUNS",
    "ensure_run",
    "load_explainer",
    "explainable_runs",
]

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


# =========================================================================================== run level


@dataclass
class Explanation:
    """Everything the notebook shows about one sample under one model.

    Attributes:
        image: ``(S, S, 3)`` uint8 picture as the model saw it.
        text: the caption.
        label: the true class index in ``class_names``.
        class_names: the classes ``probs`` ranges over.
        probs: ``(C,)`` predicted probabilities, or None for a model with no classifier.
        attention: ``(layers, heads, gh, gw)`` CLS-to-patch attention of every layer, or None (CNNs).
        grad_cam: ``(S, S)`` Grad-CAM of the predicted class in ``[0, 1]``, or None.
        tokens: the caption's tokens as the text model cut it (start and end tokens included).
        token_scores: ``{method: (len(tokens),) scores}``.
        model: a short description of the run.
    """

    image: np.ndarray
    text: str
    label: int
    class_names: tuple[str, ...]
    probs: np.ndarray | None = None
    attention: np.ndarray | None = None
    grad_cam: np.ndarray | None = None
    tokens: list[str] = field(default_factory=list)
    token_scores: dict[str, np.ndarray] = field(default_factory=dict)
    model: str = ""

    @property
    def predicted(self) -> int | None:
        """The predicted class index, or None without a classifier."""
        return None if self.probs is None else int(np.argmax(self.probs))

    @property
    def num_layers(self) -> int:
        return 0 if self.attention is None else self.attention.shape[0]

    @property
    def num_heads(self) -> int:
        return 0 if self.attention is None else self.attention.shape[1]


class Explainer:
    """A trained run's model with what is needed to explain one sample of a split.

    Subclasses set the class attributes and implement :meth:`_explain` for a normalised batch of one.
    """

    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    class_names: tuple[str, ...] = CLASSES
    #: The open_clip image tower whose attention is recorded, if the model has one.
    image_tower: nn.Module | None = None

    def __init__(self, run_dir: Path, config: Any, image_size: int, tokenizer: Callable | None = None):
        self.run_dir = Path(run_dir)
        self.config = config
        self.image_size = image_size
        self.tokenizer = tokenizer
        self._splits: dict[tuple[str, int | None], TensorSplit] = {}

    @property
    def name(self) -> str:
        return self.run_dir.name

    def split(self, split: str, limit: int | None = 32) -> TensorSplit:
        """The first ``limit`` samples of ``split`` at the model's input size (cached)."""
        key = (split, limit)
        if key not in self._splits:
            from nbhelpers.train.recipes.base import manifests

            self._splits[key] = load_split(
                manifests(self.config), split, self.image_size, self.tokenizer, limit
            )
        return self._splits[key]

    def images(self, data: TensorSplit, indices: Sequence[int]) -> torch.Tensor:
        """The samples at ``indices`` as the model's normalised input ``(B, 3, S, S)``."""
        return normalize(data.images[list(indices)], self.mean, self.std)

    def explain(self, data: TensorSplit, index: int) -> Explanation:
        """The explanation of sample ``index`` of ``data`` (from :meth:`split`).

        Raises:
            IndexError: if ``index`` is outside the split.
        """
        if not 0 <= index < len(data):
            raise IndexError(f"sample {index} is outside the split's {len(data)} samples")
        batch = data.subset(torch.tensor([index]))
        images = normalize(batch["image"], self.mean, self.std)
        explanation = Explanation(
            image=batch["image"][0].permute(1, 2, 0).numpy(),
            text=batch["text"][0],
            label=int(self._label(batch)),
            class_names=self.class_names,
            model=self.describe(),
        )
        self._explain(explanation, images, batch)
        return explanation

    def _label(self, batch: dict[str, Any]) -> int:
        return int(batch["label"][0])

    def describe(self) -> str:
        return self.name

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        raise NotImplementedError


def _open_clip_maps(visual: nn.Module, images: torch.Tensor) -> np.ndarray:
    """``(layers, heads, gh, gw)`` CLS attention of every layer of an open_clip ViT, for one image."""
    _, weights = open_clip_attention(visual, images)
    grid = tuple(visual.grid_size)
    return torch.stack([cls_attention_maps(w, grid)[0] for w in weights]).numpy()


def _open_clip_tokens(tokenizer: Any, clip: nn.Module, tokens: torch.Tensor) -> list[str]:
    """The display strings of one caption's tokens, up to the pooled (end) token."""
    end = int(pooled_token_index(clip, tokens)[0])
    ids = tokens[0, : end + 1].tolist()
    decoder = getattr(tokenizer, "decoder", None)
    if decoder is None:
        return [str(i) for i in ids]
    return [decoder.get(i, str(i)).replace("</w>", "") for i in ids]


def _text_scores(
    clip: nn.Module, tokens: torch.Tensor, score: Callable[[], torch.Tensor]
) -> dict[str, np.ndarray]:
    end = int(pooled_token_index(clip, tokens)[0]) + 1
    grad = gradient_x_input(score, clip.token_embedding)[0, :end]
    attention = pooled_token_attention(clip, tokens)[0].mean(dim=0)[:end]
    return {"gradient x input": grad.numpy(), "end-token attention": attention.numpy()}


class ClipClassifierExplainer(Explainer):
    """Notebook 06: CLIP (+ LoRA) and its transformer head. ViT attention, tokens, the 7-class prediction."""

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.train.recipes import clip_classifier
        from nbhelpers.train.run_dir import read_json

        # The run's own checkpoint holds every weight: rebuild without reading the pretrained file.
        saved = read_json(Path(run_dir) / "config.json")
        config = clip_classifier.ClipClassifierConfig.coerce({**saved, "pretrained": ""})
        self.model, tokenizer, size = clip_classifier.load_trained(run_dir, config)
        self.image_tower = self.model.clip.visual
        super().__init__(run_dir, config, size, tokenizer)

    def describe(self) -> str:
        return f"{self.name}: CLIP {self.config.mode} + transformer head ({self.config.model})"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]
        with torch.no_grad():
            logits = self.model(images, tokens)["logits"]
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        clip = self.model.clip
        explanation.attention = _open_clip_maps(clip.visual, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, clip, tokens)
        explanation.token_scores = _text_scores(
            clip, tokens, lambda: self.model(images, tokens)["logits"][:, target]
        )


class ClipExplainer(Explainer):
    """Notebook 03: a contrastive CLIP, no classifier. ViT attention; tokens scored on the image-text cosine."""

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.train.recipes import clip

        self.model, tokenizer = clip.load_trained(run_dir)
        config = clip.ClipConfig.coerce({**_read_config(run_dir), "pretrained": ""})
        self.image_tower = self.model.visual
        super().__init__(run_dir, config, clip_image_size(self.model), tokenizer)

    def describe(self) -> str:
        return f"{self.name}: contrastive CLIP ({self.config.model}), no classifier"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]

        def cosine() -> torch.Tensor:
            image = F.normalize(self.model.encode_image(images), dim=-1)
            return (image * F.normalize(self.model.encode_text(tokens), dim=-1)).sum(-1)

        explanation.attention = _open_clip_maps(self.model.visual, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.model, tokens)
        explanation.token_scores = _text_scores(self.model, tokens, cosine)


class _CassImageClassifier(nn.Module):
    """CASS-MM's classifier as a function of the picture alone (the caption fixed), for Grad-CAM."""

    def __init__(self, model: nn.Module, head: nn.Module, tokens: torch.Tensor) -> None:
        super().__init__()
        self.model, self.head, self.tokens = model, head, tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens.expand(len(images), -1)
        # CASSMM.features without its no_grad decorator: the same features, with a graph for the gradient.
        image, text = type(self.model).features.__wrapped__(self.model, images, tokens)
        return self.head(image, text)


class CassMMExplainer(Explainer):
    """Notebook 05: CNN + ViT + text towers and the head on their frozen features.

    ViT attention maps, Grad-CAM of the CNN (through the whole classifier, caption fixed), and the caption's
    gradient x input, all for the predicted class.
    """

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.train.recipes import cass_mm

        self.model, self.head, tokenizer, size = cass_mm.load_trained(run_dir)
        config = cass_mm.CassMMConfig.coerce({**_read_config(run_dir), "pretrained": ""})
        self.image_tower = self.model.clip.visual
        super().__init__(run_dir, config, size, tokenizer)

    def describe(self) -> str:
        return f"{self.name}: CASS-MM ({self.config.cnn} + {self.config.model}) + transformer head"

    def _cam_layer(self, images: torch.Tensor) -> nn.Module:
        # The CNN sees the pictures resized to cnn_image_size.
        size = self.model.cnn_image_size
        return resnet_cam_layer(self.model.cnn, images.new_zeros(1, 3, size, size))

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]
        classifier = _CassImageClassifier(self.model, self.head, tokens).eval()
        with torch.no_grad():
            logits = classifier(images)
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        explanation.attention = _open_clip_maps(self.model.clip.visual, images)
        explanation.grad_cam = grad_cam(classifier, self._cam_layer(images), images, [target])[0]
        clip = self.model.clip
        explanation.tokens = _open_clip_tokens(self.tokenizer, clip, tokens)
        explanation.token_scores = _text_scores(clip, tokens, lambda: classifier(images)[:, target])


class _UnimodalExplainer(Explainer):
    """Notebook 02's runs: one classifier on one modality, rebuilt by the unimodal recipe."""

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.train.recipes import unimodal

        self.model = unimodal.load_trained(run_dir)
        config = unimodal.UnimodalConfig.coerce(_read_config(run_dir))
        super().__init__(run_dir, config, config.image_size)


class UnimodalImageExplainer(_UnimodalExplainer):
    """Notebook 02's ResNet-18 picture classifier: Grad-CAM of the predicted class."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def describe(self) -> str:
        return f"{self.name}: ResNet-18 on the picture alone"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        with torch.no_grad():
            logits = self.model(images)
        explanation.probs = logits.softmax(-1)[0].numpy()
        explanation.grad_cam = grad_cam(self.model, resnet_cam_layer(self.model.net, images), images)[0]


class UnimodalTextExplainer(_UnimodalExplainer):
    """Notebook 02's BERT caption classifier: gradient x input over its word pieces."""

    def describe(self) -> str:
        return f"{self.name}: {self.config.text_model} on the caption alone"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        encoded = self.model.tokenize(batch["text"])
        with torch.no_grad():
            logits = self.model(encoded)
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        embedding = self.model.model.get_input_embeddings()
        scores = gradient_x_input(lambda: self.model(encoded)[:, target], embedding)[0]
        explanation.tokens = self.model.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
        explanation.token_scores = {"gradient x input": scores.numpy()}


class SSLViTExplainer(Explainer):
    """Notebook 04's self-supervised ViT (DINO's teacher, or CASS's ViT): attention maps, no labels used."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.train.recipes import ssl

        config = ssl.SSLConfig.coerce(_read_config(run_dir))
        model = ssl.load_trained(run_dir, config)
        vits = {k: m for k, m in model.encoders().items() if isinstance(m, VisionTransformer)}
        if not vits:
            raise TypeError(
                f"{run_dir}: the {config.method} encoder is a {config.backbone}, not a ViT: it has no attention "
                "to map (train a ViT in notebook 04, e.g. method='dino', backbone='vit_tiny_demo')"
            )
        self.encoder_name, self.vit = next(iter(vits.items()))
        super().__init__(run_dir, config, config.image_size)

    def describe(self) -> str:
        return f"{self.name}: {self.config.method} {self.encoder_name} ViT, self-supervised"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        weights = ssl_vit_attention(self.vit, images)
        grid = (images.shape[-2] // self.vit.patch_size, images.shape[-1] // self.vit.patch_size)
        explanation.attention = torch.stack([cls_attention_maps(w, grid)[0] for w in weights]).numpy()


class FusionExplainer(Explainer):
    """Notebook 07: a Hate-CLIPper head on an open_clip backbone. ViT attention, tokens, P(hateful)."""

    class_names = ("not hateful", "hateful")

    def __init__(self, run_dir: Path) -> None:
        from nbhelpers.models.backbones import OpenClipBackbone
        from nbhelpers.train.recipes import fusion

        config = fusion.FusionConfig.coerce(_read_config(run_dir))
        self.model = fusion.load_trained(run_dir, config)
        backbone = self.model.backbone
        if not isinstance(backbone, OpenClipBackbone):
            raise TypeError(f"{run_dir}: maps are implemented for open_clip backbones, not {config.backbone}")
        self.clip = backbone.model
        self.image_tower = self.clip.visual
        cfg = self.clip.visual.preprocess_cfg
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        super().__init__(run_dir, config, backbone.image_size, backbone.tokenizer)

    def describe(self) -> str:
        return f"{self.name}: {self.config.fusion} fusion on {self.config.backbone}"

    def _label(self, batch: dict[str, Any]) -> int:
        return int(batch["hateful"][0])

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]

        def logit() -> torch.Tensor:
            # The backbone's own encode_* run without a graph when frozen; call the towers directly.
            return self.model.head(self.clip.encode_image(images), self.clip.encode_text(tokens))

        with torch.no_grad():
            p = float(torch.sigmoid(logit())[0])
        explanation.probs = np.array([1.0 - p, p], dtype=np.float32)
        sign = 1.0 if p >= 0.5 else -1.0  # explain the predicted side: the logit or its negation
        explanation.attention = _open_clip_maps(self.clip.visual, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.clip, tokens)
        explanation.token_scores = _text_scores(self.clip, tokens, lambda: sign * logit())


def _read_config(run_dir: str | Path) -> dict[str, Any]:
    from nbhelpers.train.run_dir import read_json

    return read_json(Path(run_dir) / "config.json")


#: The recipe that made a run (:data:`nbhelpers.evaluation.runs.RECIPES`; ``unimodal/<modality>`` for
#: notebook 02's two kinds) -> the explainer of that kind of run.
EXPLAINERS: dict[str, type[Explainer]] = {
    "unimodal/image": UnimodalImageExplainer,
    "unimodal/text": UnimodalTextExplainer,
    "clip": ClipExplainer,
    "ssl": SSLViTExplainer,
    "cass_mm": CassMMExplainer,
    "clip_classifier": ClipClassifierExplainer,
    "fusion": FusionExplainer,
}


def _explainer_class(record: RunRecord) -> type[Explainer]:
    """The explainer of a run (from :func:`~nbhelpers.evaluation.runs.inspect_run`).

    Raises:
        TypeError: if its ``metrics.json`` is unreadable or names no recipe, or the recipe's runs have no
            model to map (late fusion).
    """
    if record.metrics is None or record.recipe is None:
        raise TypeError(f"{record.run_dir}: {record.problem}")
    recipe = record.recipe
    key = f"{recipe}/{record.metrics.get('modality')}" if recipe == "unimodal" else recipe
    if key not in EXPLAINERS:
        raise TypeError(
            f"{record.run_dir}: no explainer for runs of {key!r} (late fusion has no model of its own)"
        )
    return EXPLAINERS[key]


def load_explainer(run_dir: str | Path) -> Explainer:
    """The :class:`Explainer` of a finished run of notebooks 02-07, chosen from its ``metrics.json``.

    Raises:
        FileNotFoundError: if the run has no ``metrics.json`` (missing or unfinished).
        TypeError: for a run with nothing to map (an unreadable ``metrics.json``; late fusion; an SSL CNN; a
            non-open_clip fusion backbone).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no metrics.json)")
    return _explainer_class(inspect_run(run_dir))(run_dir)


def explainable_runs(runs_dir: str | Path = "runs") -> list[str]:
    """Names of the finished runs under ``runs_dir`` that :func:`load_explainer` accepts (sorted).

    A run whose ``metrics.json`` is unreadable is left out: :func:`nbhelpers.evaluation.runs.discover_runs`
    lists it with the reason.
    """
    found = []
    for record in discover_runs(runs_dir):
        try:
            cls = _explainer_class(record)
        except TypeError:
            continue
        config = _read_config(record.run_dir) if (record.run_dir / "config.json").is_file() else {}
        if cls is SSLViTExplainer and not _ssl_has_vit(config):
            continue
        found.append(record.name)
    return found


def _ssl_has_vit(config: dict[str, Any]) -> bool:
    return config.get("method") == "cass" or config.get("backbone") in VIT_CONFIGS


# ---------------------------------------------------------------------------------------- default runs


@dataclass(frozen=True)
class DefaultRun:
    """How the demo makes a run: the recipe, its parameters, and the notebook that calls it."""

    recipe: str
    params: dict[str, Any]
    notebook: str


#: The runs notebooks 02-07 make with their default parameters, and how to make each one here if missing.
DEFAULT_RUNS: dict[str, DefaultRun] = {
    "unimodal_image": DefaultRun("unimodal", {"model": "image"}, "02_unimodal_baselines"),
    "unimodal_text": DefaultRun("unimodal", {"model": "text"}, "02_unimodal_baselines"),
    "clip": DefaultRun("clip", {}, "03_train_clip"),
    "ssl_dino_vit_tiny_demo": DefaultRun(
        "ssl", {"method": "dino", "backbone": "vit_tiny_demo"}, "04_train_ssl_vision"
    ),
    "cass_mm": DefaultRun("cass_mm", {}, "05_train_cass_mm"),
    "clip_classifier_lora": DefaultRun("clip_classifier", {"mode": "lora"}, "06_train_clip_lora_classifier"),
    "clip_classifier_baseline": DefaultRun(
        "clip_classifier", {"mode": "baseline"}, "06_train_clip_lora_classifier"
    ),
    "fusion_cross": DefaultRun("fusion", {"fusion": "cross"}, "07_hateful_memes_fusion"),
}


def ensure_run(
    run_name: str,
    *,
    runs_dir: str | Path = "runs",
    data_dir: str = "data/shards",
    preset: str = "demo",
    train_missing: bool = True,
) -> Path:
    """The folder of a finished run, trained first with its recipe if it is a missing default run.

    As ``pretrained="run:clip"`` does for the CLIP of notebook 03: a default run (:data:`DEFAULT_RUNS`)
    that is missing is trained here with the recipe's ``preset``, exactly as its notebook would.

    Raises:
        FileNotFoundError: if the run is missing and ``train_missing`` is False or it is not a default run;
            the message names the notebook that makes it.
    """
    run_dir = Path(runs_dir) / run_name
    if (run_dir / "metrics.json").is_file():
        return run_dir
    default = DEFAULT_RUNS.get(run_name)
    if default is None or not train_missing:
        hint = f"run notebook {default.notebook} first" if default else "train it with notebooks 02-07"
        raise FileNotFoundError(f"no finished run at {run_dir}: {hint}")
    import importlib

    recipe = importlib.import_module(f"nbhelpers.train.recipes.{default.recipe}")
    params = {"preset": preset, **default.params, "runs_dir": str(runs_dir), "data_dir": data_dir}
    params["progress"] = False
    recipe.run(params)
    return run_dir


# ------------------------------------------------------------------------------------------- the config


@dataclass
class AttentionConfig(BaseConfig):
    """Parameters of ``08_inspect_attention``."""

    SECTION: ClassVar[str] = "attention"

    run_name: str = param("clip_classifier_lora", help="the run explained first (any run of 02-07)")
    cnn_run_name: str = param("cass_mm", help="a run with a CNN for Grad-CAM (cass_mm, unimodal_image)")
    ssl_run_name: str = param("ssl_dino_vit_tiny_demo", help="a self-supervised ViT run of 04 ('' to skip)")
    runs_dir: str = param("runs")
    data_dir: str = param("data/shards")
    split: str = param("test", help="the split the samples come from")
    sample: int = param(0, min=0, help="the sample shown first")
    num_samples: int = param(32, min=1, help="samples of the split loaded for the figures and the explorer")
    layer: int = param(-1, help="the attention layer (-1: the last)")
    mass: float = param(0.6, min=0.0, help="share of the attention mass the thresholded mask keeps")
    train_missing: bool = param(True, help="train a missing default run with its recipe (else stop)")
    save_dir: str = param("runs/attention_figures", help="where the figures are saved as PNG ('' : nowhere)")

    def check(self) -> None:
        if not 0 < self.mass <= 1:
            raise ConfigError(f"mass: must be in (0, 1], got {self.mass}")
        if self.sample >= self.num_samples:
            raise ConfigError(f"sample: must be < num_samples ({self.num_samples}), got {self.sample}")
        if not self.run_name:
            raise ConfigError("run_name: name a run of notebooks 02-07, e.g. 'clip_classifier_lora'")

    def ensure(self, run_name: str) -> Path:
        """:func:`ensure_run` with this config's folders, preset and ``train_missing``."""
        return ensure_run(
            run_name, runs_dir=self.runs_dir, data_dir=self.data_dir, preset=self.preset,
            train_missing=self.train_missing,
        )  # fmt: skip

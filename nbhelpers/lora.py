"""LoRA adapters on the attention output projections of both CLIP towers.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) freezes a
weight ``W`` and learns ``W + (alpha / r) * B @ A`` with ``A`` of shape ``(r, in)`` and ``B`` of shape
``(out, r)``; ``B`` starts at zero, so adding adapters leaves the model's outputs unchanged.

The trap this module exists for: open_clip's transformer blocks use ``nn.MultiheadAttention``, whose
forward hands ``out_proj.weight`` to ``F.multi_head_attention_forward`` and never *calls* ``out_proj``. A
peft adapter wrapped around ``out_proj`` is therefore counted but silently bypassed: its gradient is zero
(or autograd fails with "element 0 of tensors does not require grad" when nothing else trains). The same
holds for ModifiedResNet's ``AttentionPool2d`` and its ``c_proj``. We first swap those modules for
equivalents that call their output projection as a module (:class:`ModuleAttention`,
:class:`ModuleAttentionPool2d`), sharing the very same parameters, then inject the adapters.

Why ``peft.inject_adapter_in_model`` and not ``get_peft_model``: injection replaces the target ``nn.Linear``
layers in place and returns the same open_clip ``CLIP`` object, so ``encode_image``, ``encode_text``,
``forward``, ``logit_scale``, ``visual`` and everything open_clip_train expects keep working unchanged. A
``PeftModel`` wrapper would put every attribute behind ``base_model.model`` and a ``forward`` written for
Hugging Face keyword inputs. The price is that ``merge_and_unload`` lives on ``PeftModel``; :func:`merge_lora`
does the same for an injected model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d
from open_clip.transformer import Attention as OpenClipAttention
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

__all__ = [
    "ModuleAttention",
    "ModuleAttentionPool2d",
    "replace_attention",
    "lora_target_modules",
    "add_lora",
    "merge_lora",
    "lora_parameters",
    "DEFAULT_RANK",
]

DEFAULT_RANK = 4


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turns a PyTorch attention mask (bool: True = masked out; float: added) into an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


class ModuleAttention(nn.Module):
    """Multi-head attention that calls ``out_proj`` as a module, as a drop-in for ``nn.MultiheadAttention``.

    Same parameters and state-dict keys as ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj.weight``, ``out_proj.bias``; or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when
    ``kdim``/``vdim`` differ from ``embed_dim``), same call signature and same outputs, so pretrained weights
    load into it unchanged. Because ``self.out_proj(...)`` is a real module call, a LoRA (or any) wrapper
    around ``out_proj`` takes part in the forward and receives gradients.

    Attention (Vaswani et al., 2017, "Attention Is All You Need", arXiv:1706.03762):
    ``softmax(q k^T / sqrt(head_dim) + mask) v`` per head. Without ``need_weights`` the fused
    ``F.scaled_dot_product_attention`` runs; with it the weights are computed explicitly and returned,
    averaged over heads or per head (for attention maps).

    Args:
        embed_dim: model width ``E``.
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: dropout on the attention weights (training only).
        bias: whether the input and output projections have biases.
        batch_first: inputs and outputs are ``(batch, seq, E)`` if True, else ``(seq, batch, E)``.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``embed_dim``).

    Raises:
        ValueError: if ``num_heads`` does not divide ``embed_dim``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        # Registration mirrors nn.MultiheadAttention so that state-dict keys (None entries included) match.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Same initialisation as nn.MultiheadAttention, for modules built from scratch.
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention) -> ModuleAttention:
        """Builds the equivalent module that *shares* ``mha``'s parameters (no copy).

        Raises:
            ValueError: if ``mha`` uses ``add_bias_kv`` or ``add_zero_attn``, which open_clip never does.
        """
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported by ModuleAttention")
        bias = mha.in_proj_bias is not None
        with torch.device("meta"):
            # Built on the meta device so no throw-away weights are allocated before sharing mha's.
            new = cls(mha.embed_dim, mha.num_heads, mha.dropout, bias, mha.batch_first, mha.kdim, mha.vdim)
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"):
            if name in new._parameters:
                new._parameters[name] = getattr(mha, name)
        new.out_proj = mha.out_proj
        new.train(mha.training)
        return new

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        if self._qkv_same_embed_dim and query is key and key is value:
            # Self-attention: one matmul, as the fused kernel of nn.MultiheadAttention does.
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attends ``query`` to ``key``/``value``.

        Args:
            query: ``(batch, L, E)`` if ``batch_first`` else ``(L, batch, E)``.
            key: ``(batch, S, kdim)`` (or ``(S, batch, kdim)``).
            value: ``(batch, S, vdim)`` (or ``(S, batch, vdim)``).
            key_padding_mask: ``(batch, S)``; bool True (or ``-inf``) marks keys to ignore.
            need_weights: also return the attention weights (slower: no fused kernel).
            attn_mask: ``(L, S)`` or ``(batch * num_heads, L, S)``; bool True marks a forbidden
                position, a float mask is added to the logits.
            average_attn_weights: average the returned weights over heads.
            is_causal: apply a causal mask when ``attn_mask`` is None (a hint only when one is given, as in
                ``nn.MultiheadAttention``).

        Returns:
            ``(output, weights)``: output shaped like ``query``; weights ``(batch, L, S)`` if averaged,
            ``(batch, num_heads, L, S)`` per head, or None when ``need_weights`` is False.
        """
        if not self.batch_first:
            if query is key is value:  # keep them one object: _project's single-matmul path
                query = key = value = query.transpose(0, 1)
            else:
                query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, tgt_len, _ = query.shape
        src_len = key.shape[1]
        q, k, v = self._project(query, key, value)
        # (batch, len, E) -> (batch, heads, len, head_dim)
        q = q.reshape(batch, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(batch, src_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(batch, src_len, self.num_heads, self.head_dim).transpose(1, 2)

        mask = _additive_mask(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.reshape(batch, self.num_heads, tgt_len, src_len)
        if key_padding_mask is not None:
            padding = _additive_mask(key_padding_mask, q.dtype).reshape(batch, 1, 1, src_len)
            mask = padding if mask is None else mask + padding
        if mask is None and is_causal:
            mask = torch.full((tgt_len, src_len), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if need_weights:
            logits = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (batch, heads, L, S)
            if mask is not None:
                logits = logits + mask
            weights = logits.softmax(dim=-1)
            out = F.dropout(weights, p=dropout_p) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        # (batch, heads, L, head_dim) -> (batch, L, E)
        out = out.transpose(1, 2).reshape(batch, tgt_len, self.embed_dim)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


class ModuleAttentionPool2d(nn.Module):
    """ModifiedResNet's attention pooling (Radford et al., 2021, CLIP) with ``c_proj`` called as a module.

    open_clip's ``AttentionPool2d`` passes ``c_proj.weight`` to ``F.multi_head_attention_forward``, the same
    bypass as ``nn.MultiheadAttention``. This module shares its parameters and state-dict keys
    (``positional_embedding``, ``q_proj``, ``k_proj``, ``v_proj``, ``c_proj``) and computes the same output.
    """

    def __init__(self, pool: AttentionPool2d) -> None:
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.k_proj = pool.k_proj
        self.q_proj = pool.q_proj
        self.v_proj = pool.v_proj
        self.c_proj = pool.c_proj
        self.num_heads = pool.num_heads
        self.train(pool.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pools a feature map ``(batch, C, H, W)`` into ``(batch, output_dim)``."""
        batch, channels, height, width = x.shape
        x = x.reshape(batch, channels, height * width).transpose(1, 2)  # (batch, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (batch, HW + 1, C): mean token first
        x = x + self.positional_embedding.to(x.dtype)
        head_dim = channels // self.num_heads
        # Only the mean token queries; every token is a key and a value.
        q = self.q_proj(x[:, :1]).reshape(batch, 1, self.num_heads, head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, 1, head_dim)
        return self.c_proj(out.transpose(1, 2).reshape(batch, channels))


def replace_attention(model: nn.Module) -> int:
    """Swaps, in place, every attention that bypasses its output projection for a module-calling twin.

    ``nn.MultiheadAttention`` becomes :class:`ModuleAttention`, ``AttentionPool2d`` becomes
    :class:`ModuleAttentionPool2d`; both share the original parameters, so outputs and state-dict keys are
    unchanged. open_clip's own ``Attention`` (custom blocks) already calls ``out_proj`` and is left alone.
    Idempotent.

    Returns:
        the number of modules replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(parent, name, ModuleAttention.from_multihead_attention(child))
                replaced += 1
            elif isinstance(child, AttentionPool2d):
                setattr(parent, name, ModuleAttentionPool2d(child))
                replaced += 1
    return replaced


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full names of the output projections of every attention layer (both towers).

    Full names rather than the suffix ``"out_proj"`` because ModifiedResNet's pool projection is called
    ``c_proj``, a name its MLPs share (``mlp.c_proj``) and which must not be adapted.

    Raises:
        ValueError: if the model has no attention at all.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, ModuleAttention | nn.MultiheadAttention | OpenClipAttention):
            names.append(f"{name}.out_proj")
        elif isinstance(module, ModuleAttentionPool2d | AttentionPool2d):
            names.append(f"{name}.c_proj")
    if not names:
        raise ValueError(f"{type(model).__name__} has no attention layer to adapt")
    return names


def add_lora(
    model: nn.Module, rank: int = DEFAULT_RANK, alpha: float | None = None, dropout: float = 0.0
) -> nn.Module:
    """Freezes ``model`` and adds LoRA adapters to the output projection of every attention layer.

    Attention modules that bypass ``out_proj`` are replaced first (:func:`replace_attention`), then peft
    injects the adapters in place (see the module docstring for why injection). ``B`` is zero-initialised,
    so outputs are unchanged until the first optimiser step. Trainable parameters:
    ``sum(rank * (in_features + out_features))`` over the adapted projections (122,880 for ViT-B-32 at
    rank 4).

    Args:
        model: an open_clip model (or any module holding such attention layers), modified in place.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / r``. Defaults to ``rank`` (scale 1), so a
            change of rank does not change the effective learning rate at initialisation.
        dropout: dropout on the adapter input.

    Returns:
        the same ``model`` object, with only its LoRA parameters trainable.

    Raises:
        ValueError: if ``rank < 1``, if ``dropout`` is outside ``[0, 1)``, or if the model already has adapters.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if any(isinstance(m, LoraLayer) for m in model.modules()):
        raise ValueError("model already has LoRA adapters; call merge_lora first")
    replace_attention(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=lora_target_modules(model),
        bias="none",
    )
    inject_adapter_in_model(config, model)
    # peft leaves non-adapter parameters as they were; state the contract explicitly.
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Folds every adapter into its base weight and removes the LoRA layers (peft's merge-and-unload).

    The merged model has the state-dict keys of the original open_clip model, so it can be saved and loaded
    back with :func:`nbhelpers.models.clip.create_clip`. Its parameters stay frozen (``requires_grad`` False).

    Returns:
        the same ``model`` object, modified in place.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA ``A`` and ``B`` matrices of ``model``, for an optimiser or a count."""
    return [param for name, param in model.named_parameters() if "lora_" in name]

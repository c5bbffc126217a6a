"""Attention maps, Grad-CAM and token attributions against plain references and their known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nbhelpers.evaluation.saliency import (
    AttentionRecorder,
    attention_weights,
    cls_attention_maps,
    grad_cam,
    gradient_x_input,
    mass_threshold_mask,
    open_clip_attention,
    open_clip_blocks,
    pooled_token_attention,
    resnet_cam_layer,
    ssl_vit_attention,
    upsample_maps,
)
from nbhelpers.lora import ModuleAttention, add_lora, replace_attention
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.models.ssl import VIT_CONFIGS, VisionTransformer
from nbhelpers.models.unimodal import ImageClassifier

GRID = 8  # memelab-tiny-vit: 64-px pictures, 8-px patches
HEADS = 4  # width 96 / head_width 24


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model, _, _, tokenizer = create_clip(TINY_VIT)
    return model.eval(), tokenizer


def _variant(model: nn.Module, kind: str) -> nn.Module:
    """The tiny CLIP as trained in 03 (plain), with ModuleAttention, or with LoRA adapters moved off zero."""
    import copy

    model = copy.deepcopy(model)
    if kind == "module":
        replace_attention(model)
    elif kind == "lora":
        add_lora(model, rank=2)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)  # B starts at 0: make the adapters change the output
    return model.eval()


def _reference_weights(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Per-head softmax(q k^T / sqrt(d)) with an explicit loop over heads: the slow reference."""
    embed = x.shape[-1]
    heads = module.num_heads
    d = embed // heads
    w_q, w_k, _ = module.in_proj_weight.chunk(3)
    b_q, b_k, _ = module.in_proj_bias.chunk(3)
    q, k = x @ w_q.T + b_q, x @ w_k.T + b_k  # (B, N, E)
    out = []
    for h in range(heads):
        qh, kh = q[..., h * d : (h + 1) * d], k[..., h * d : (h + 1) * d]
        out.append(torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1))
    return torch.stack(out, dim=1)  # (B, heads, N, N)


@pytest.mark.parametrize("kind", ["plain", "module", "lora"])
def test_recorder_leaves_outputs_bit_identical_and_rows_sum_to_one(tiny_clip, kind):
    model = _variant(tiny_clip[0], kind)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model.visual(images)
    out, weights = open_clip_attention(model.visual, images)
    with torch.no_grad():
        after = model.visual(images)
    assert torch.equal(out, plain) and torch.equal(after, plain)  # with and after the collector
    assert len(weights) == 2  # one per layer
    for w in weights:
        assert w.shape == (3, HEADS, 1 + GRID * GRID, 1 + GRID * GRID)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(3, HEADS, 1 + GRID * GRID), atol=1e-5, rtol=0)
    # No hook is left behind.
    assert all(not block.attn._forward_pre_hooks for block in open_clip_blocks(model.visual))


@pytest.mark.parametrize("kind", ["plain", "module", "lora"])
def test_recorded_weights_match_the_modules_own_weights_and_a_slow_reference(tiny_clip, kind):
    model = _variant(tiny_clip[0], kind)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    last = open_clip_blocks(model.visual)[-1]
    inputs = {}
    handle = last.attn.register_forward_pre_hook(lambda m, args: inputs.__setitem__("x", args[0]))
    _, weights = open_clip_attention(model.visual, images)
    handle.remove()
    x = inputs["x"]
    with torch.no_grad():
        # The module's own weights: nn.MultiheadAttention / ModuleAttention asked for them per head.
        _, own = last.attn(x, x, x, need_weights=True, average_attn_weights=False)
        slow = _reference_weights(x if last.attn.batch_first else x.transpose(0, 1), last.attn)
    torch.testing.assert_close(weights[-1], own, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights[-1], slow, atol=1e-6, rtol=1e-5)


def test_masks_and_padding_are_applied_like_multihead_attention():
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        _, reference = mha(x, x, x, attn_mask=causal, key_padding_mask=padding, average_attn_weights=False)
    ours = attention_weights(mha, x, x, causal, padding)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    assert torch.equal(ours[1, :, :, 3:], torch.zeros(4, 5, 2))  # padded keys get no weight
    module = ModuleAttention.from_multihead_attention(mha)
    torch.testing.assert_close(
        attention_weights(module, x, x, causal, padding), reference, atol=1e-6, rtol=1e-5
    )


def test_recorder_rejects_attention_it_cannot_recompute():
    with pytest.raises(TypeError, match="cannot record"):
        AttentionRecorder([nn.Linear(4, 4)])


def test_cls_maps_shape_and_mass(tiny_clip):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    _, weights = open_clip_attention(tiny_clip[0].visual, images)
    maps = cls_attention_maps(weights[-1], (GRID, GRID))
    assert maps.shape == (2, HEADS, GRID, GRID)
    # The map is the CLS row without CLS itself: its mass is 1 minus the CLS token's self-attention.
    torch.testing.assert_close(maps.sum((-1, -2)), 1 - weights[-1][:, :, 0, 0], atol=1e-6, rtol=0)
    up = upsample_maps(maps, (64, 64))
    assert up.shape == (2, HEADS, 64, 64)
    assert torch.equal(up[..., :8, :8], maps[..., :1, :1].expand(2, HEADS, 8, 8))  # one patch = 8x8 pixels
    with pytest.raises(ValueError, match="grid"):
        cls_attention_maps(weights[-1], (7, 7))


def test_ssl_vit_attention_matches_get_last_selfattention():
    torch.manual_seed(5)
    vit = VisionTransformer(VIT_CONFIGS["vit_test"], image_size=32, patch_size=8).eval()
    images = torch.randn(2, 3, 32, 32)
    weights = ssl_vit_attention(vit, images)
    assert len(weights) == VIT_CONFIGS["vit_test"].depth
    with torch.no_grad():
        torch.testing.assert_close(weights[-1], vit.get_last_selfattention(images))
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 2, 17), atol=1e-5, rtol=0)
    assert cls_attention_maps(weights[-1], (4, 4)).shape == (2, 2, 4, 4)


def _dino_reference_mask(attentions: torch.Tensor, threshold: float) -> torch.Tensor:
    """DINO's ``visualize_attention.py`` threshold, verbatim in spirit: (heads, patches) -> bool."""
    val, idx = torch.sort(attentions)
    val = val / torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attentions.shape[0]):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


@pytest.mark.parametrize("mass", [0.1, 0.6, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_mass_threshold_mask_keeps_the_share_minimally_and_matches_dino(mass, seed):
    maps = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(seed)) ** 3  # peaked, no ties
    keep = mass_threshold_mask(maps, mass)
    assert keep.shape == maps.shape and keep.dtype == torch.bool
    flat, kept = maps.reshape(3, -1), keep.reshape(3, -1)
    share = (flat * kept).sum(-1) / flat.sum(-1)
    assert (share >= mass - 1e-9).all()
    # Minimal: dropping the weakest kept patch falls below the share.
    weakest = torch.where(kept, flat, torch.inf).min(-1).values
    assert ((share - weakest / flat.sum(-1)) < mass).all()
    # Every kept patch outweighs every dropped one.
    assert (
        torch.where(kept, flat, torch.inf).min(-1).values
        >= torch.where(kept, -torch.inf, flat).max(-1).values
    ).all()
    assert torch.equal(kept, _dino_reference_mask(flat.double(), mass))


def test_mass_threshold_mask_edges():
    maps = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert mass_threshold_mask(maps, 0.6).tolist() == [[[False, False], [False, True]]]
    assert mass_threshold_mask(torch.rand(2, 3, 3), 1.0).sum() >= 2  # mass 1 keeps every non-zero patch
    with pytest.raises(ValueError, match="mass"):
        mass_threshold_mask(maps, 0.0)


@pytest.fixture(scope="module")
def resnet_classifier():
    torch.manual_seed(6)
    return ImageClassifier(num_classes=7).eval()


def test_grad_cam_map_has_the_input_size_and_values_in_unit_range(resnet_classifier):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    layer = resnet_cam_layer(resnet_classifier.net, images)
    maps = grad_cam(resnet_classifier, layer, images)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(2, -1).max(-1), 1.0, atol=1e-5)  # min-max scaled: not degenerate
    # Default target = the predicted class.
    with torch.no_grad():
        predicted = resnet_classifier(images).argmax(-1).tolist()
    np.testing.assert_allclose(grad_cam(resnet_classifier, layer, images, predicted), maps, atol=1e-6)
    assert all(p.grad is None for p in resnet_classifier.parameters())


def test_resnet_cam_layer_avoids_a_one_by_one_grid(resnet_classifier):
    net = resnet_classifier.net
    # 64 px: layer4 is 2x2, layer3 4x4; 32 px: layer4 is 1x1, layer2 4x4.
    assert resnet_cam_layer(net, torch.zeros(1, 3, 64, 64)) is net.layer3[-1]
    assert resnet_cam_layer(net, torch.zeros(1, 3, 32, 32)) is net.layer2[-1]
    assert resnet_cam_layer(net, torch.zeros(1, 3, 224, 224)) is net.layer4[-1]
    # Why: on a 1x1 grid Grad-CAM can only be constant.
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    flat = grad_cam(resnet_classifier, net.layer4[-1], images)
    assert np.ptp(flat) == 0


def test_gradient_x_input_of_a_linear_score_is_exact():
    torch.manual_seed(9)
    embedding = nn.Embedding(20, 8)
    weight = torch.randn(8)
    tokens = torch.tensor([[1, 5, 7, 2], [3, 3, 0, 9]])
    scores = gradient_x_input(lambda: (embedding(tokens) @ weight).sum(-1), embedding)
    expected = embedding.weight[tokens].detach() @ weight  # score = sum_t w . e_t
    assert scores.shape == (2, 4)  # one value per token
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(scores.sum(-1), (embedding(tokens) @ weight).sum(-1).detach())  # completeness
    with pytest.raises(RuntimeError, match="embedding"):
        gradient_x_input(lambda: weight.sum(), embedding)


def test_text_attributions_respect_the_causal_mask(tiny_clip):
    model, tokenizer = _variant(tiny_clip[0], "lora"), tiny_clip[1]  # frozen embeddings under LoRA
    tokens = tokenizer(["a red circle", "the sky is blue today"])
    end = tokens.argmax(-1)
    target = torch.randn(2, model.text_projection.shape[1], generator=torch.Generator().manual_seed(10))
    scores = gradient_x_input(lambda: (model.encode_text(tokens) * target).sum(-1), model.token_embedding)
    assert scores.shape == tokens.shape
    for b in range(2):
        assert torch.all(scores[b, end[b] + 1 :] == 0)  # the pooled end token never sees the padding
        assert torch.all(scores[b, : end[b] + 1] != 0)
    attention = pooled_token_attention(model, tokens)
    assert attention.shape == (2, 4, tokens.shape[1])
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4), atol=1e-5, rtol=0)
    for b in range(2):
        assert torch.all(attention[b, :, end[b] + 1 :] == 0)

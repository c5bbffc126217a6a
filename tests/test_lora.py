"""LoRA on attention output projections: the module-calling attention, injection, training, merging."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from nbhelpers.lora import (
    ModuleAttention,
    add_lora,
    lora_parameters,
    lora_target_modules,
    merge_lora,
    replace_attention,
)
from nbhelpers.models.clip import TINY_RN, TINY_VIT, create_clip, quiet_random_init

# ---------------------------------------------------------------------------------------------------
# ModuleAttention against nn.MultiheadAttention


def _mha_pair(embed_dim=32, num_heads=4, batch_first=True, kdim=None, vdim=None, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=batch_first, kdim=kdim, vdim=vdim).eval()
    # Non-zero biases, so that a bias dropped or applied twice shows.
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha, ModuleAttention.from_multihead_attention(mha).eval()


def _masks(kind: str, batch: int, heads: int, length: int):
    """(attn_mask, key_padding_mask) of each kind open_clip or a caller may pass."""
    causal = torch.full((length, length), float("-inf")).triu_(1)
    if kind == "none":
        return None, None
    if kind == "causal_float":  # open_clip's text tower
        return causal, None
    if kind == "bool":
        return torch.ones(length, length, dtype=torch.bool).triu_(1), None
    if kind == "per_batch_head":  # open_clip's text tower with a pad mask: (batch * heads, L, L)
        pad = torch.zeros(batch, 1, length)
        pad[0, :, -2:] = float("-inf")
        return (causal + pad).repeat_interleave(heads, 0), None
    if kind == "key_padding":
        padding = torch.zeros(batch, length, dtype=torch.bool)
        padding[1, -3:] = True
        return None, padding
    raise AssertionError(kind)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "causal_float", "bool", "per_batch_head", "key_padding"])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)])
def test_module_attention_matches_multihead_attention(batch_first, mask_kind, need_weights, average):
    batch, length, heads = 3, 7, 4
    mha, ours = _mha_pair(num_heads=heads, batch_first=batch_first)
    x = torch.randn(batch, length, 32) if batch_first else torch.randn(length, batch, 32)
    attn_mask, padding = _masks(mask_kind, batch, heads, length)
    kwargs = dict(
        key_padding_mask=padding,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average,
    )
    with torch.no_grad():
        want, want_w = mha(x, x, x, **kwargs)
        got, got_w = ours(x, x, x, **kwargs)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    if need_weights:
        assert got_w.shape == ((batch, length, length) if average else (batch, heads, length, length))
        torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=0)
        # Rows of attention weights are distributions.
        torch.testing.assert_close(got_w.sum(-1), torch.ones(got_w.shape[:-1]))
    else:
        assert got_w is None


def test_module_attention_cross_attention_with_kdim_vdim():
    # open_clip's AttentionalPooler: queries of width 32 attend to a context of width 48.
    mha, ours = _mha_pair(embed_dim=32, kdim=48, vdim=48)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 9, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(q, kv, kv, need_weights=False)[0], mha(q, kv, kv, need_weights=False)[0], atol=1e-6, rtol=0
        )
    assert list(ours.state_dict()) == list(mha.state_dict())


def test_module_attention_loads_a_multihead_attention_state_dict():
    mha, _ = _mha_pair()
    fresh = ModuleAttention(32, 4, batch_first=True).eval()
    assert list(fresh.state_dict()) == list(mha.state_dict())
    fresh.load_state_dict(mha.state_dict(), strict=True)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, x, x)[0], mha(x, x, x)[0], atol=1e-6, rtol=0)


def test_module_attention_shares_parameters_and_calls_out_proj():
    mha, ours = _mha_pair()
    assert ours.in_proj_weight is mha.in_proj_weight and ours.out_proj is mha.out_proj
    calls = []
    ours.out_proj.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 6, 32)
    ours(x, x, x, need_weights=False)
    ours(x, x, x, need_weights=True)
    mha(x, x, x, need_weights=False)  # the trap: nn.MultiheadAttention does not call out_proj
    assert len(calls) == 2


def test_module_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="must divide"):
        ModuleAttention(30, 4)


# ---------------------------------------------------------------------------------------------------
# Tiny CLIP models


def _tiny_clip(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_clip(name)[0].eval()


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, 64, 64, generator=generator)
    tokens = torch.randint(1, 49406, (4, 32), generator=generator)
    tokens[:, 0], tokens[:, 10] = 49406, 49407  # start token, end token (open_clip pools at the argmax)
    tokens[:, 11:] = 0
    return images, tokens


def _features(model: nn.Module, images, tokens) -> torch.Tensor:
    return torch.cat([model.encode_image(images), model.encode_text(tokens)], dim=1)


def _expected_lora_count(model: nn.Module, rank: int) -> int:
    """r * (in + out) per attention output projection, read from the plain open_clip modules."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            total += rank * (module.out_proj.in_features + module.out_proj.out_features)
        elif isinstance(module, AttentionPool2d):
            total += rank * (module.c_proj.in_features + module.c_proj.out_features)
    return total


@pytest.mark.parametrize("name", [TINY_VIT, TINY_RN])
def test_replace_attention_keeps_outputs_keys_and_parameters(name):
    model = _tiny_clip(name)
    images, tokens = _inputs()
    keys = list(model.state_dict())
    params = {n: p for n, p in model.named_parameters()}
    with torch.no_grad():
        before = _features(model, images, tokens)
    n_attention = sum(isinstance(m, nn.MultiheadAttention | AttentionPool2d) for m in model.modules())
    assert replace_attention(model) == n_attention == (4 if name == TINY_VIT else 3)
    assert replace_attention(model) == 0  # idempotent
    assert not any(isinstance(m, nn.MultiheadAttention | AttentionPool2d) for m in model.modules())
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())  # shared, not copied
    with torch.no_grad():
        torch.testing.assert_close(_features(model, images, tokens), before, atol=1e-6, rtol=0)


def test_plain_peft_on_multihead_attention_gets_no_gradient():
    """The trap this module exists for: without the replacement the adapters are dead weight."""
    model = _tiny_clip(TINY_VIT)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["out_proj"]), model)
    assert len([n for n, _ in model.named_parameters() if "lora_B" in n]) == 4  # inserted and counted...
    images, tokens = _inputs()
    with pytest.raises(RuntimeError, match="does not require grad"):
        _features(model, images, tokens).sum().backward()  # ...but never on the autograd path


LORA_CASES = [(TINY_VIT, 1), (TINY_VIT, 4), (TINY_VIT, 8), (TINY_RN, 4)]


@pytest.mark.parametrize("name,rank", LORA_CASES)
def test_add_lora_counts_and_initial_outputs(name, rank):
    model = _tiny_clip(name)
    expected = _expected_lora_count(model, rank)
    images, tokens = _inputs()
    with torch.no_grad():
        plain = _features(model, images, tokens)
        replace_attention(model)  # what add_lora does first; equal to nn.MultiheadAttention to 1e-6
        before = _features(model, images, tokens)
    torch.testing.assert_close(before, plain, atol=1e-6, rtol=0)
    assert add_lora(model, rank=rank) is model
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == expected
    assert all("lora_A" in n or "lora_B" in n for n, _ in trainable)
    assert sum(p.numel() for p in lora_parameters(model)) == expected
    # Both towers are adapted.
    targets = lora_target_modules(model)
    assert any(t.startswith("visual.") for t in targets) and any(
        t.startswith("transformer.") for t in targets
    )
    with torch.no_grad():  # lora_B starts at zero: bit-identical outputs
        assert torch.equal(_features(model, images, tokens), before)


@pytest.mark.parametrize("name,rank", LORA_CASES)
def test_one_step_moves_only_the_adapters(name, rank):
    model = add_lora(_tiny_clip(name), rank=rank)
    images, tokens = _inputs()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        out_before = _features(model, images, tokens)

    model.train()
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * image_features @ text_features.T
    labels = torch.arange(len(images))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    for n, p in model.named_parameters():
        if "lora_B" in n:  # every adapter of both towers is on the autograd path
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        if not p.requires_grad:
            assert p.grad is None, n
    optimizer.step()
    model.eval()

    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen weight {n} changed"
        elif "lora_B" in n:
            assert not torch.equal(p, lora_before[n]), f"{n} did not move"
    with torch.no_grad():
        assert (_features(model, images, tokens) - out_before).abs().max() > 1e-4


@pytest.mark.parametrize("name", [TINY_VIT, TINY_RN])
def test_merge_lora_matches_adapters_and_restores_open_clip_keys(name):
    model = _tiny_clip(name)
    keys = list(model.state_dict())
    add_lora(model, rank=4)
    with torch.no_grad():  # stand-in for training: non-zero adapters
        for p in lora_parameters(model):
            p.normal_(std=0.05)
    images, tokens = _inputs()
    with torch.no_grad():
        adapted = _features(model, images, tokens)
        assert (adapted - _features(_tiny_clip(name), images, tokens)).abs().max() > 1e-3
    assert merge_lora(model) is model
    assert lora_parameters(model) == []
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(_features(model, images, tokens), adapted, atol=1e-5, rtol=0)
    # A plain open_clip model (nn.MultiheadAttention) takes the merged weights as they are.
    plain = _tiny_clip(name, seed=1)
    plain.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(_features(plain, images, tokens), adapted, atol=1e-5, rtol=0)


def test_add_lora_rejects_bad_arguments_and_double_injection():
    model = _tiny_clip(TINY_VIT)
    with pytest.raises(ValueError, match="rank"):
        add_lora(model, rank=0)
    with pytest.raises(ValueError, match="dropout"):
        add_lora(model, dropout=1.0)
    add_lora(model)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model)


def test_alpha_scales_the_update():
    model = add_lora(_tiny_clip(TINY_VIT), rank=4, alpha=8)
    layer = model.visual.transformer.resblocks[0].attn.out_proj
    assert layer.scaling["default"] == pytest.approx(2.0)


def test_vit_b_32_lora_rank_4_count():
    """NOTES.md: peft LoRA r=4 on every out_proj of ViT-B-32 has 122,880 parameters."""
    with quiet_random_init():
        model = open_clip.create_model("ViT-B-32")
    add_lora(model, rank=4)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 122_880
    # 12 vision blocks of width 768 and 12 text blocks of width 512: 4 * (12 * 1536 + 12 * 1024).
    assert len(lora_target_modules(model)) == 24

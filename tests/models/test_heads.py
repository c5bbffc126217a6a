"""The two-token transformer head and the CLIP model that carries it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nbhelpers.lora import add_lora, lora_parameters
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.models.heads import CLIPClassifier, TransformerClassifierHead


def _expected_head_parameters(d: int, classes: int, layers: int, ff: int) -> int:
    attention = 4 * d * d + 4 * d  # in_proj (3 D x D + 3 D) and out_proj (D x D + D)
    feed_forward = d * ff + ff + ff * d + d
    layer_norms = 2 * 2 * d
    return layers * (attention + feed_forward + layer_norms) + 2 * d + 2 * d + d * classes + classes


@pytest.mark.parametrize(
    "d,classes,layers,heads,ff", [(512, 7, 2, 8, None), (64, 7, 2, 8, None), (32, 3, 1, 4, 48)]
)
def test_parameter_count_formula(d, classes, layers, heads, ff):
    head = TransformerClassifierHead(d, classes, num_layers=layers, num_heads=heads, dim_feedforward=ff)
    expected = _expected_head_parameters(d, classes, layers, 4 * d if ff is None else ff)
    assert sum(p.numel() for p in head.parameters()) == expected
    if d == 512:
        assert expected == 6_310_407


def test_shapes_gradients_and_modality_order():
    torch.manual_seed(0)
    head = TransformerClassifierHead(64, dropout=0.0)
    image = torch.randn(5, 64, requires_grad=True)
    text = torch.randn(5, 64, requires_grad=True)
    logits = head(image, text)
    assert logits.shape == (5, 7)
    logits.square().sum().backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0
    # The modality embedding tells the tokens apart: swapping image and text changes the prediction.
    with torch.no_grad():
        assert (head(text, image) - head(image, text)).abs().max() > 1e-3


def test_head_learns_an_interaction_of_the_two_embeddings():
    """class = (image attribute + text attribute) mod 7: no single modality predicts it (chance 1/7)."""
    torch.manual_seed(0)
    d = 32
    image_codes, text_codes = F.normalize(torch.randn(7, d), dim=-1), F.normalize(torch.randn(7, d), dim=-1)
    a, b = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    a, b = a.flatten(), b.flatten()
    labels = (a + b) % 7
    head = TransformerClassifierHead(d, num_heads=4, dropout=0.0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(60):  # converges in about 16 steps (seeds 0-2)
        loss = F.cross_entropy(head(image_codes[a], text_codes[b]), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (head(image_codes[a], text_codes[b]).argmax(-1) == labels).float().mean().item()
    assert accuracy == 1.0


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must divide"):
        TransformerClassifierHead(60, num_heads=8)
    head = TransformerClassifierHead(64)
    with pytest.raises(ValueError, match="expected two"):
        head(torch.randn(2, 64), torch.randn(3, 64))
    with pytest.raises(ValueError, match="expected two"):
        head(torch.randn(2, 32), torch.randn(2, 32))


def test_clip_classifier_outputs_and_gradients():
    torch.manual_seed(0)
    model = CLIPClassifier(create_clip(TINY_VIT)[0])
    images, tokens = torch.randn(3, 3, 64, 64), torch.randint(1, 49406, (3, 32))
    out = model(images, tokens)
    assert set(out) == {"image_features", "text_features", "logit_scale", "logits"}
    assert out["image_features"].shape == out["text_features"].shape == (3, 64)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(3))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert out["logits"].shape == (3, 7)
    # Equal-weight contrastive + cross-entropy reaches both towers and the head.
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    target = torch.arange(3)
    loss = F.cross_entropy(logits, target) + F.cross_entropy(out["logits"], torch.tensor([0, 3, 6]))
    loss.backward()
    for part in (model.clip.visual, model.clip.transformer, model.head):
        assert all(p.grad is not None for p in part.parameters())


def test_clip_classifier_with_lora_trains_only_adapters_and_head():
    clip = add_lora(create_clip(TINY_VIT)[0], rank=4)
    model = CLIPClassifier(clip)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for p in model.head.parameters())
    assert trainable == head + sum(p.numel() for p in lora_parameters(clip))

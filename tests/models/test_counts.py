"""Parameter budgets, against NOTES.md and against counts taken from real (CPU) modules."""

from __future__ import annotations

import pytest

from nbhelpers.lora import add_lora, lora_parameters
from nbhelpers.models.clip import TINY_RN, TINY_VIT, create_clip
from nbhelpers.models.counts import parameter_counts
from nbhelpers.models.heads import TransformerClassifierHead


def test_vit_b_32_budget():
    counts = parameter_counts("ViT-B-32", lora_rank=4, num_classes=7)
    # Exact, measured on a random-init open_clip 3.3.0 model (NOTES.md).
    assert counts["vision"] == 87_849_216
    assert counts["text"] == 63_428_097
    assert counts["lora"] == 122_880
    # Design targets of the recipe: within 10 %.
    assert counts["head"] == pytest.approx(6.6e6, rel=0.1)
    assert counts["trainable_baseline"] == pytest.approx(158e6, rel=0.1)
    assert counts["trainable_lora"] == pytest.approx(6.7e6, rel=0.1)
    assert counts["trainable_baseline"] == counts["vision"] + counts["text"] + counts["head"]
    assert counts["trainable_lora"] == counts["head"] + counts["lora"]


@pytest.mark.parametrize("name,rank,num_classes", [(TINY_VIT, 4, 7), (TINY_RN, 8, 3)])
def test_meta_counts_equal_real_modules(name, rank, num_classes):
    model = create_clip(name)[0]
    vision = sum(p.numel() for p in model.visual.parameters())
    text = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual."))
    head = sum(p.numel() for p in TransformerClassifierHead(64, num_classes).parameters())
    lora = sum(p.numel() for p in lora_parameters(add_lora(model, rank=rank)))
    assert parameter_counts(name, lora_rank=rank, num_classes=num_classes) == {
        "vision": vision,
        "text": text,
        "head": head,
        "lora": lora,
        "trainable_baseline": vision + text + head,
        "trainable_lora": head + lora,
    }


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        parameter_counts("ViT-Q-99")

"""CASS-MM equals the composition of the CASS and masked CLIP references, and reduces to CASS."""

import math

import pytest
import torch
import torch.nn.functional as F

from nbhelpers.losses.cass import cass_loss
from nbhelpers.losses.cass_mm import cass_mm_loss
from tests.losses.test_cass import reference_cass_loss
from tests.losses.test_clip import reference_clip_loss

SIZES = [(1, 3), (4, 8), (16, 16), (25, 6)]
SEEDS = [0, 1]


def random_inputs(batch, dim, seed, valid_fraction=0.6):
    generator = torch.Generator().manual_seed(seed)
    cnn, vit, text = (torch.randn(batch, dim, generator=generator) * 2 for _ in range(3))
    valid = torch.rand(batch, generator=generator) < valid_fraction
    return cnn, vit, text, torch.tensor(1 / 0.07), valid


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_equals_composition_of_references(batch, dim, seed):
    cnn, vit, text, scale, valid = random_inputs(batch, dim, seed)
    total, parts = cass_mm_loss(cnn, vit, text, scale, valid)
    n = [F.normalize(x, dim=-1) for x in (cnn, vit, text)]
    cass = reference_cass_loss(cnn, vit)
    clip_cnn = reference_clip_loss(n[0], n[2], scale, valid)
    clip_vit = reference_clip_loss(n[1], n[2], scale, valid)
    assert total.item() == pytest.approx(cass + (clip_cnn + clip_vit) / 2, rel=1e-5, abs=1e-5)
    assert parts["cass"].item() == pytest.approx(cass, rel=1e-5, abs=1e-6)
    assert parts["clip_cnn"].item() == pytest.approx(clip_cnn, rel=1e-5, abs=1e-5)
    assert parts["clip_vit"].item() == pytest.approx(clip_vit, rel=1e-5, abs=1e-5)
    assert all(not part.requires_grad for part in parts.values())


def test_reduces_to_cass_when_no_pair_is_valid():
    cnn, vit, text, scale, _ = random_inputs(6, 5, seed=3)
    text.requires_grad_(True)
    total, parts = cass_mm_loss(cnn, vit, text, scale, torch.zeros(6, dtype=torch.bool))
    assert total.item() == cass_loss(cnn, vit).item()
    assert parts["clip_cnn"].item() == 0.0 and parts["clip_vit"].item() == 0.0
    total.backward()  # still a connected graph
    assert torch.all(text.grad == 0)


def test_all_valid_equals_mask_none_and_gradients_reach_all_three_towers():
    cnn, vit, text, scale, _ = random_inputs(8, 6, seed=4)
    for tensor in (cnn, vit, text):
        tensor.requires_grad_(True)
    total, _ = cass_mm_loss(cnn, vit, text, scale, torch.ones(8, dtype=torch.bool))
    assert total == cass_mm_loss(cnn, vit, text, scale)[0]
    total.backward()
    for tensor in (cnn, vit, text):
        assert tensor.grad.abs().sum(dim=-1).min() > 0


def test_perfect_agreement_costs_only_the_contrastive_floor():
    # CNN, ViT and text all equal and orthonormal: CASS is 0 and each CLIP term is log(1 + (n-1) e^-s).
    features = torch.eye(5)
    total, parts = cass_mm_loss(features, features.clone(), features.clone(), torch.tensor(4.0))
    assert parts["cass"].item() == pytest.approx(0.0, abs=1e-7)
    assert total.item() == pytest.approx(math.log(1 + 4 * math.exp(-4.0)), rel=1e-6)


def test_global_batch_is_the_local_batch_in_one_process():
    cnn, vit, text, scale, valid = random_inputs(5, 4, seed=5)
    local = cass_mm_loss(cnn, vit, text, scale, valid, global_batch=False)[0]
    assert local == cass_mm_loss(cnn, vit, text, scale, valid)[0]


def test_rejects_mismatched_embeddings():
    with pytest.raises(ValueError, match="same"):
        cass_mm_loss(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 5), torch.tensor(1.0))

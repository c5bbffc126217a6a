"""CASS loss against a per-sample reference and its known values."""

import math

import pytest
import torch

from nbhelpers.losses.cass import CASSLoss, cass_loss

SIZES = [(1, 2), (4, 3), (16, 32), (33, 7)]
SEEDS = [0, 1, 2]


def reference_cass_loss(cnn, vit):
    """mean_b (2 - 2 cos(cnn_b, vit_b)), one sample at a time, in float64 Python."""
    total = 0.0
    for a, b in zip(cnn.detach().double(), vit.detach().double(), strict=True):
        cosine = float(torch.dot(a, b)) / (
            math.sqrt(float(torch.dot(a, a))) * math.sqrt(float(torch.dot(b, b)))
        )
        total += 2.0 - 2.0 * cosine
    return total / cnn.shape[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_matches_reference(batch, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    cnn, vit = torch.randn(batch, dim, generator=generator), torch.randn(batch, dim, generator=generator) * 4
    assert cass_loss(cnn, vit).item() == pytest.approx(reference_cass_loss(cnn, vit), rel=1e-5, abs=1e-6)


def test_known_values():
    x = torch.randn(6, 5)
    assert cass_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert cass_loss(x, 3.0 * x).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert cass_loss(x, -x).item() == pytest.approx(4.0, abs=1e-6)
    basis = torch.eye(4)
    assert cass_loss(basis[:2], basis[2:]).item() == pytest.approx(2.0, abs=1e-7)
    # Half the batch identical, half opposite: the batch mean is 2.
    assert cass_loss(x, torch.cat([x[:3], -x[3:]])).item() == pytest.approx(2.0, abs=1e-6)


def test_stays_in_zero_to_four():
    values = torch.stack([cass_loss(torch.randn(1, 3), torch.randn(1, 3)) for _ in range(200)])
    assert values.min() >= 0.0 and values.max() <= 4.0 + 1e-6


def test_gradients_reach_both_architectures():
    cnn, vit = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    cass_loss(cnn, vit).backward()
    assert cnn.grad.abs().sum(dim=-1).min() > 0 and vit.grad.abs().sum(dim=-1).min() > 0


def test_module_matches_function():
    cnn, vit = torch.randn(5, 4), torch.randn(5, 4)
    assert CASSLoss()(cnn, vit) == cass_loss(cnn, vit)


@pytest.mark.parametrize("shape1,shape2", [((4, 3), (4, 2)), ((4,), (4,)), ((0, 3), (0, 3))])
def test_rejects_bad_inputs(shape1, shape2):
    with pytest.raises(ValueError, match="matching"):
        cass_loss(torch.randn(shape1), torch.randn(shape2))

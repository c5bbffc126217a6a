"""Barlow Twins against an entry-by-entry reference, BatchNorm1d, and its known properties."""

import pytest
import torch
from torch import nn

from nbhelpers.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss, batch_standardise

SIZES = [(2, 1), (2, 5), (7, 3), (16, 16), (32, 8), (10, 40)]
SEEDS = [0, 1, 2]


def reference_barlow_twins_loss(z1, z2, lambda_offdiag=0.0051, eps=1e-5):
    """C_ij = mean_b z1n[b, i] z2n[b, j], one entry at a time, in float64 Python."""
    batch, dim = z1.shape
    z1, z2 = z1.detach().double(), z2.detach().double()

    def standardised_column(z, i):
        column = [float(z[b, i]) for b in range(batch)]
        mean = sum(column) / batch
        var = sum((x - mean) ** 2 for x in column) / batch
        return [(x - mean) / (var + eps) ** 0.5 for x in column]

    cols1 = [standardised_column(z1, i) for i in range(dim)]
    cols2 = [standardised_column(z2, j) for j in range(dim)]
    loss = 0.0
    for i in range(dim):
        for j in range(dim):
            c_ij = sum(a * b for a, b in zip(cols1[i], cols2[j], strict=True)) / batch
            loss += (1.0 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij**2
    return loss


def random_pair(batch, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=generator) * 3 + 1
    z2 = 0.7 * z1 + torch.randn(batch, dim, generator=generator)
    return z1, z2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_matches_reference(batch, dim, seed):
    z1, z2 = random_pair(batch, dim, seed)
    got = barlow_twins_loss(z1, z2)
    assert got.item() == pytest.approx(reference_barlow_twins_loss(z1, z2), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("batch,dim", SIZES)
def test_standardisation_is_batchnorm_without_affine(batch, dim):
    z, _ = random_pair(batch, dim, seed=0)
    batch_norm = nn.BatchNorm1d(dim, affine=False).train()
    torch.testing.assert_close(batch_standardise(z), batch_norm(z))


@pytest.mark.parametrize("batch,dim", [(8, 3), (16, 15), (64, 20)])
def test_identical_decorrelated_standardised_embeddings_cost_nothing(batch, dim):
    # Orthonormal columns orthogonal to the all-ones vector: zero mean, unit (biased) variance once
    # scaled by sqrt(batch), and uncorrelated, so C is the identity up to eps.
    centred = torch.randn(batch, dim, dtype=torch.float64)
    centred -= centred.mean(dim=0)
    q, _ = torch.linalg.qr(centred)
    z = (q * batch**0.5).float()
    assert barlow_twins_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # Adding each dimension to its neighbour gives neighbours a correlation of 1/2 (and keeps the rest
    # uncorrelated): 2 * dim off-diagonal entries of 1/4, weighted by lambda.
    mixed = z + z.roll(1, dims=1)
    assert barlow_twins_loss(mixed, mixed).item() == pytest.approx(0.5 * dim * 0.0051, rel=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_invariant_to_per_dimension_positive_affine_maps(seed):
    z1, z2 = random_pair(12, 6, seed)
    generator = torch.Generator().manual_seed(seed + 10)
    scale1, scale2 = (
        torch.rand(6, generator=generator) * 5 + 0.2,
        torch.rand(6, generator=generator) * 5 + 0.2,
    )
    shift1, shift2 = torch.randn(6, generator=generator) * 10, torch.randn(6, generator=generator) * 10
    torch.testing.assert_close(
        barlow_twins_loss(scale1 * z1 + shift1, scale2 * z2 + shift2),
        barlow_twins_loss(z1, z2),
        rtol=1e-4,
        atol=1e-5,
    )


def test_flipping_the_same_dimension_in_both_views_changes_nothing():
    z1, z2 = random_pair(12, 6, seed=3)
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    torch.testing.assert_close(barlow_twins_loss(sign * z1, sign * z2), barlow_twins_loss(z1, z2))


def test_collapsed_embeddings_cost_one_per_dimension():
    # Constant embeddings standardise to zeros: C = 0, so every diagonal term is (1 - 0)^2.
    z = torch.ones(9, 13) * torch.arange(13.0)
    assert barlow_twins_loss(z, z).item() == 13.0


def test_linear_in_lambda():
    z1, z2 = random_pair(10, 7, seed=4)
    at = [barlow_twins_loss(z1, z2, lambda_offdiag=lam).item() for lam in (0.0, 0.01, 0.02)]
    assert at[2] - at[1] == pytest.approx(at[1] - at[0], rel=1e-4)
    assert at[1] > at[0]


def test_half_precision_is_computed_in_float32():
    z1, z2 = random_pair(16, 8, seed=5)
    got = barlow_twins_loss(z1.bfloat16(), z2.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_barlow_twins_loss(z1.bfloat16(), z2.bfloat16()), rel=1e-5)


def test_gradient_reaches_both_views():
    z1, z2 = random_pair(10, 4, seed=6)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    barlow_twins_loss(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_module_matches_function():
    z1, z2 = random_pair(10, 4, seed=7)
    assert BarlowTwinsLoss(0.02)(z1, z2) == barlow_twins_loss(z1, z2, lambda_offdiag=0.02)
    with pytest.raises(ValueError, match="lambda_offdiag"):
        BarlowTwinsLoss(-1.0)


@pytest.mark.parametrize(
    "shape1,shape2,match", [((1, 4), (1, 4), "at least 2"), ((4, 3), (4, 2), "matching")]
)
def test_rejects_bad_inputs(shape1, shape2, match):
    with pytest.raises(ValueError, match=match):
        barlow_twins_loss(torch.randn(shape1), torch.randn(shape2))

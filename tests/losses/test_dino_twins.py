"""DINO-Twins equals the weighted sum of the DINO and Barlow Twins references."""

import pytest
import torch

from nbhelpers.losses.dino_twins import DINOTwinsLoss
from tests.losses.test_barlow_twins import reference_barlow_twins_loss
from tests.losses.test_dino import reference_dino_loss

# (batch, out_dim, embedding dim, n_local_crops, dino_weight, barlow_weight)
CASES = [(2, 8, 4, 0, 1.0, 1.0), (5, 16, 6, 2, 1.0, 1.0 / 6), (8, 32, 12, 4, 0.5, 2.0)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("batch,out_dim,dim,n_local,dino_weight,barlow_weight", CASES)
def test_weighted_sum_of_references(batch, out_dim, dim, n_local, dino_weight, barlow_weight, seed):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn((2 + n_local) * batch, out_dim, generator=generator, requires_grad=True)
    teacher = torch.randn(2 * batch, out_dim, generator=generator)
    z1 = torch.randn(batch, dim, generator=generator, requires_grad=True)
    z2 = torch.randn(batch, dim, generator=generator, requires_grad=True)
    loss_fn = DINOTwinsLoss(
        out_dim,
        n_local_crops=n_local,
        dino_weight=dino_weight,
        barlow_weight=barlow_weight,
        lambda_offdiag=0.01,
    )
    total, parts = loss_fn(student, teacher, z1, z2, epoch=0)

    dino = reference_dino_loss(student, teacher, torch.zeros(1, out_dim), 2 + n_local, 2, 0.1, 0.04)
    barlow = reference_barlow_twins_loss(z1, z2, lambda_offdiag=0.01)
    assert total.item() == pytest.approx(dino_weight * dino + barlow_weight * barlow, rel=1e-5)
    assert set(parts) == {"dino", "barlow_twins"}
    assert parts["dino"].item() == pytest.approx(dino, rel=1e-5)
    assert parts["barlow_twins"].item() == pytest.approx(barlow, rel=1e-5)
    assert not parts["dino"].requires_grad and not parts["barlow_twins"].requires_grad

    total.backward()
    assert student.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    # The DINO centre still moves, and is checkpointed under the submodule's name.
    torch.testing.assert_close(loss_fn.dino.center, 0.1 * teacher.mean(dim=0, keepdim=True))
    assert list(loss_fn.state_dict()) == ["dino.center"]


def test_zero_weight_switches_a_term_off():
    student, teacher = torch.randn(4 * 3, 8), torch.randn(2 * 3, 8)
    z1, z2 = torch.randn(3, 5), torch.randn(3, 5)
    only_dino, parts = DINOTwinsLoss(8, n_local_crops=2, barlow_weight=0.0)(student, teacher, z1, z2)
    assert only_dino.item() == pytest.approx(parts["dino"].item())
    only_barlow, parts = DINOTwinsLoss(8, n_local_crops=2, dino_weight=0.0)(student, teacher, z1, z2)
    assert only_barlow.item() == pytest.approx(parts["barlow_twins"].item())


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        DINOTwinsLoss(8, n_local_crops=2, barlow_weight=-1.0)
    with pytest.raises(ValueError, match="rows"):
        DINOTwinsLoss(8, n_local_crops=2)(
            torch.randn(12, 8), torch.randn(6, 8), torch.randn(4, 5), torch.randn(4, 5)
        )

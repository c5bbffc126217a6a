"""DINO loss against the reference pair loop, its centre and temperature schedules, and the EMA helpers."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from nbhelpers.losses.dino import DINOLoss, cosine_momentum, ema_update_

# (batch, out_dim, n_global_crops, n_local_crops)
CASES = [(1, 4, 2, 0), (3, 16, 2, 1), (8, 64, 2, 6), (5, 10, 1, 3), (4, 32, 3, 2)]
SEEDS = [0, 1]


def reference_dino_loss(student, teacher, center, n_crops, n_global, student_temp, teacher_temp):
    """The facebookresearch/dino loop: every (teacher crop, other student crop) pair, row by row."""
    batch = teacher.shape[0] // n_global
    student, teacher, center = student.detach().double(), teacher.detach().double(), center.double()
    total, n_terms = 0.0, 0
    for t in range(n_global):
        for s in range(n_crops):
            if s == t:
                continue
            pair = 0.0
            for b in range(batch):
                p_teacher = torch.softmax((teacher[t * batch + b] - center[0]) / teacher_temp, dim=-1)
                log_p_student = torch.log_softmax(student[s * batch + b] / student_temp, dim=-1)
                pair += float(-(p_teacher * log_p_student).sum())
            total += pair / batch
            n_terms += 1
    return total / n_terms


def random_outputs(batch, out_dim, n_global, n_local, seed):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn((n_global + n_local) * batch, out_dim, generator=generator)
    teacher = torch.randn(n_global * batch, out_dim, generator=generator)
    center = 0.3 * torch.randn(1, out_dim, generator=generator)
    return student, teacher, center


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,out_dim,n_global,n_local", CASES)
def test_matches_reference_and_moves_centre_by_its_momentum(batch, out_dim, n_global, n_local, seed):
    student, teacher, center = random_outputs(batch, out_dim, n_global, n_local, seed)
    loss_fn = DINOLoss(out_dim, n_local_crops=n_local, n_global_crops=n_global)
    loss_fn.center.copy_(center)
    got = loss_fn(student, teacher, epoch=0)
    expected = reference_dino_loss(student, teacher, center, n_global + n_local, n_global, 0.1, 0.04)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(loss_fn.center, 0.9 * center + 0.1 * teacher.mean(dim=0, keepdim=True))
    # A second step starts from the updated centre.
    student2, teacher2, _ = random_outputs(batch, out_dim, n_global, n_local, seed + 100)
    center2 = loss_fn.center.clone()
    got2 = loss_fn(student2, teacher2, epoch=0)
    expected2 = reference_dino_loss(student2, teacher2, center2, n_global + n_local, n_global, 0.1, 0.04)
    assert got2.item() == pytest.approx(expected2, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(loss_fn.center, 0.9 * center2 + 0.1 * teacher2.mean(dim=0, keepdim=True))


def test_uses_the_warmed_up_teacher_temperature():
    student, teacher, _ = random_outputs(4, 12, 2, 2, seed=3)
    loss_fn = DINOLoss(
        12, n_local_crops=2, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=5
    )
    got = loss_fn(student, teacher, epoch=2)
    expected = reference_dino_loss(student, teacher, torch.zeros(1, 12), 4, 2, 0.1, 0.055)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_uniform_student_costs_log_k_whatever_the_teacher():
    out_dim = 37
    student = torch.full((4 * 3, out_dim), 2.5)
    teacher = torch.randn(2 * 3, out_dim)
    loss = DINOLoss(out_dim, n_local_crops=2)(student, teacher)
    assert loss.item() == pytest.approx(math.log(out_dim), rel=1e-6)


def test_gradient_reaches_the_student_only():
    student, teacher, _ = random_outputs(3, 8, 2, 2, seed=4)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    DINOLoss(8, n_local_crops=2)(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_eval_mode_leaves_the_centre_alone():
    student, teacher, _ = random_outputs(3, 8, 2, 2, seed=5)
    loss_fn = DINOLoss(8, n_local_crops=2).eval()
    loss_fn(student, teacher)
    assert torch.all(loss_fn.center == 0)


def test_half_precision_outputs_give_a_float32_loss():
    student, teacher, _ = random_outputs(4, 16, 2, 2, seed=6)
    loss_fn = DINOLoss(16, n_local_crops=2)
    got = loss_fn(student.bfloat16(), teacher.bfloat16())
    expected = reference_dino_loss(
        student.bfloat16(), teacher.bfloat16(), torch.zeros(1, 16), 4, 2, 0.1, 0.04
    )
    assert got.dtype == torch.float32 and loss_fn.center.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_centre_is_checkpointed():
    loss_fn = DINOLoss(8, n_local_crops=2)
    student, teacher, _ = random_outputs(3, 8, 2, 2, seed=7)
    loss_fn(student, teacher)
    restored = DINOLoss(8, n_local_crops=2)
    restored.load_state_dict(loss_fn.state_dict())
    assert list(loss_fn.state_dict()) == ["center"]
    torch.testing.assert_close(restored.center, loss_fn.center, rtol=0, atol=0)


def test_centre_is_all_reduced_under_torch_distributed(tmp_path):
    student, teacher, _ = random_outputs(3, 8, 2, 2, seed=8)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loss_fn = DINOLoss(8, n_local_crops=2)
        loss_fn(student, teacher)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(loss_fn.center, 0.1 * teacher.mean(dim=0, keepdim=True))


def test_teacher_temperature_schedule():
    loss_fn = DINOLoss(
        4, n_local_crops=2, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30
    )
    # The reference schedule: np.linspace over the warm-up epochs, then the final temperature.
    expected = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(20, 0.07)])
    got = [loss_fn.teacher_temperature(epoch) for epoch in range(50)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert (
        got[0] == 0.04 and got[29] == pytest.approx(0.07) and got[15] == pytest.approx(0.04 + 0.03 * 15 / 29)
    )
    default = DINOLoss(4, n_local_crops=2)
    assert [default.teacher_temperature(e) for e in (0, 1, 100)] == [0.04, 0.04, 0.04]
    one_epoch = DINOLoss(4, n_local_crops=2, teacher_temp=0.07, warmup_teacher_temp_epochs=1)
    assert [one_epoch.teacher_temperature(e) for e in (0, 1)] == [0.04, 0.07]
    with pytest.raises(ValueError, match="epoch"):
        default.teacher_temperature(-1)


@pytest.mark.parametrize(
    "student_shape,teacher_shape,match",
    [
        ((12, 5), (6, 4), "out_dim"),
        ((12, 4), (5, 4), "multiple"),
        ((10, 4), (6, 4), "n_crops"),
        ((12,), (6, 4), "2-D"),
    ],
)
def test_forward_rejects_bad_shapes(student_shape, teacher_shape, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(4, n_local_crops=2)(torch.randn(student_shape), torch.randn(teacher_shape))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_local_crops": 0, "n_global_crops": 1}, "two crops"),
        ({"n_local_crops": -1}, "n_local_crops"),
        ({"n_local_crops": 2, "student_temp": 0.0}, "temperatures"),
        ({"n_local_crops": 2, "center_momentum": 1.5}, "center_momentum"),
        ({"n_local_crops": 2, "warmup_teacher_temp_epochs": -1}, "warmup"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(4, **kwargs)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100) == pytest.approx(0.996, abs=1e-15)
    assert cosine_momentum(100, 100) == 1.0
    assert cosine_momentum(50, 100) == pytest.approx(0.998, abs=1e-12)
    assert cosine_momentum(25, 100) == pytest.approx(1.0 - 0.004 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-12)
    values = [cosine_momentum(step, 100) for step in range(101)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert cosine_momentum(0, 10, base=0.9, final=0.99) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="step"):
        cosine_momentum(101, 100)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_momentum(0, 0)


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 3))
    net.train()(torch.randn(16, 5))  # moves the BatchNorm running statistics away from their init
    return net


def test_ema_update_momentum_one_keeps_and_zero_copies():
    teacher, student = _net(0), _net(1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update_(teacher, student, 1.0)
    for name, param in teacher.named_parameters():
        assert torch.equal(param, before[name])
    ema_update_(teacher, student, 0.0)
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, student.state_dict()[name])


def test_ema_update_averages_parameters_and_copies_buffers():
    teacher, student = _net(0), _net(1)
    params_before = {k: v.clone() for k, v in teacher.named_parameters()}
    ema_update_(teacher, student, 0.75)
    for name, param in teacher.named_parameters():
        torch.testing.assert_close(
            param, 0.75 * params_before[name] + 0.25 * dict(student.named_parameters())[name]
        )
        assert param.grad is None
    for name, buffer in teacher.named_buffers():
        assert torch.equal(buffer, dict(student.named_buffers())[name])


def test_ema_update_rejects_mismatched_networks():
    with pytest.raises(ValueError, match="names"):
        ema_update_(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3)), 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(nn.Linear(3, 3), nn.Linear(3, 4), 0.5)
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(nn.Linear(3, 3), nn.Linear(3, 3), 1.1)

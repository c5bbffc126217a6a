import math

import pytest
import torch

from nbhelpers.train.schedule import warmup_constant, warmup_cosine, warmup_cosine_schedule


def reference(step, warmup, total):
    """The schedule written out the slow way, one branch per phase."""
    if step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return 0.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_exact_values_warmup_then_cosine():
    values = [warmup_cosine(s, 2, 6) for s in range(8)]
    expected = [0.5, 1.0, 1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0, 0.0]
    assert values == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (0, 10), (3, 10), (10, 10), (1, 2)])
def test_matches_reference(warmup, total):
    for s in range(total + 2):
        assert warmup_cosine(s, warmup, total) == pytest.approx(reference(s, warmup, total), abs=1e-12)


def test_no_warmup_starts_at_full_rate_and_is_monotone():
    values = [warmup_cosine(s, 0, 50) for s in range(51)]
    assert values[0] == 1.0 and values[-1] == 0.0
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(("warmup", "total"), [(0, 0), (-1, 5), (6, 5)])
def test_rejects_bad_lengths(warmup, total):
    with pytest.raises(ValueError):
        warmup_cosine_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), warmup, total)


def test_lambda_lr_sets_the_rate_each_step_uses():
    base = [0.1, 0.02]
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": base[0]}, {"params": [params[1]], "lr": base[1]}])
    sched = warmup_cosine_schedule(opt, warmup_steps=3, total_steps=8)
    for step in range(8):
        for group, b in zip(opt.param_groups, base, strict=True):
            assert group["lr"] == pytest.approx(b * reference(step, 3, 8), abs=1e-15)
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    # The multiplier is a plain closure: the state dict holds no callable state.
    assert sched.state_dict()["lr_lambdas"] == [None, None]


def test_a_constant_schedule_warms_up_then_holds_the_peak_rate():
    assert [warmup_constant(s, 2, 5) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = warmup_cosine_schedule(optimizer, 0, 4, shape="constant")
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1] * 4)
    with pytest.raises(ValueError, match="shape must be one of"):
        warmup_cosine_schedule(optimizer, 0, 4, shape="linear")

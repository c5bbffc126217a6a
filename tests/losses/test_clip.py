"""Masked CLIP loss against a plain per-pair reference, open_clip's ClipLoss, and its known properties."""

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from nbhelpers.losses.clip import masked_clip_loss

SIZES = [(1, 4), (2, 3), (5, 8), (16, 32), (33, 7)]
SEEDS = [0, 1, 2]


def reference_clip_loss(image, text, logit_scale, valid=None):
    """Symmetric InfoNCE over the valid pairs, one log-sum-exp per row, in float64 Python."""
    batch = image.shape[0]
    keep = [i for i in range(batch) if valid is None or bool(valid[i])]
    if not keep:
        return 0.0
    scale = float(logit_scale)
    image, text = image.detach().double(), text.detach().double()

    def mean_cross_entropy(queries, keys):
        total = 0.0
        for i in keep:
            logits = [scale * float(torch.dot(queries[i], keys[j])) for j in keep]
            top = max(logits)
            log_sum_exp = top + math.log(sum(math.exp(x - top) for x in logits))
            total += log_sum_exp - logits[keep.index(i)]
        return total / len(keep)

    return (mean_cross_entropy(image, text) + mean_cross_entropy(text, image)) / 2


def random_inputs(batch, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    valid = torch.rand(batch, generator=generator) < 0.6
    logit_scale = torch.tensor(
        math.exp(torch.empty(()).uniform_(0, math.log(100), generator=generator).item())
    )
    return image, text, logit_scale, valid


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_matches_reference_with_mask(batch, dim, seed):
    image, text, logit_scale, valid = random_inputs(batch, dim, seed)
    got = masked_clip_loss(image, text, logit_scale, valid)
    assert got.item() == pytest.approx(reference_clip_loss(image, text, logit_scale, valid), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_all_valid_equals_open_clip(batch, dim, seed):
    image, text, logit_scale, _ = random_inputs(batch, dim, seed)
    expected = open_clip.loss.ClipLoss()(image, text, logit_scale)
    all_valid = torch.ones(batch, dtype=torch.bool)
    torch.testing.assert_close(
        masked_clip_loss(image, text, logit_scale, all_valid), expected, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(masked_clip_loss(image, text, logit_scale), expected, atol=1e-6, rtol=0)
    assert expected.item() == pytest.approx(reference_clip_loss(image, text, logit_scale), abs=1e-5)


def test_learnable_logit_scale_as_open_clip_uses_it():
    image, text, _, valid = random_inputs(8, 16, seed=3)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    masked_clip_loss(image, text, log_scale.exp(), valid).backward()
    assert log_scale.grad is not None and log_scale.grad.item() != 0.0


def test_aligned_orthonormal_pairs_give_closed_form():
    # Logits are s on the diagonal and 0 elsewhere, so each cross-entropy is log(1 + (n - 1) e^-s).
    n, scale = 6, 5.0
    features = torch.eye(8)[:n]
    got = masked_clip_loss(features, features.clone(), torch.tensor(scale))
    assert got.item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-scale)), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_invariant_to_a_joint_permutation(seed):
    image, text, logit_scale, valid = random_inputs(12, 8, seed)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        masked_clip_loss(image[order], text[order], logit_scale, valid[order]),
        masked_clip_loss(image, text, logit_scale, valid),
    )


def test_invalid_samples_neither_count_nor_receive_gradient():
    image, text, logit_scale, _ = random_inputs(10, 6, seed=4)
    valid = torch.tensor([True, False] * 5)
    expected = masked_clip_loss(image[valid], text[valid], logit_scale)
    # Garbage, even non-finite, in the invalid rows must not leak into the loss.
    image = image.clone().requires_grad_(True)
    text_garbage = text.clone()
    text_garbage[~valid] = float("nan")
    text_garbage.requires_grad_(True)
    got = masked_clip_loss(image, text_garbage, logit_scale, valid)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert torch.all(image.grad[~valid] == 0) and torch.all(text_garbage.grad[~valid] == 0)
    assert torch.all(image.grad[valid].abs().sum(dim=-1) > 0)


def test_one_valid_pair_is_exactly_zero():
    image, text, logit_scale, _ = random_inputs(4, 5, seed=5)
    valid = torch.tensor([False, False, True, False])
    assert masked_clip_loss(image, text, logit_scale, valid).item() == 0.0


def test_no_valid_pair_is_a_connected_zero():
    image, text, _, _ = random_inputs(4, 5, seed=6)
    image.requires_grad_(True)
    text.requires_grad_(True)
    logit_scale = torch.tensor(10.0, requires_grad=True)
    loss = masked_clip_loss(image, text, logit_scale, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.ndim == 0 and loss.grad_fn is not None
    loss.backward()
    for tensor in (image, text, logit_scale):
        assert tensor.grad is not None and torch.all(tensor.grad == 0)


def test_global_batch_is_the_local_batch_in_one_process():
    image, text, logit_scale, valid = random_inputs(7, 9, seed=7)
    assert masked_clip_loss(image, text, logit_scale, valid, global_batch=False) == masked_clip_loss(
        image, text, logit_scale, valid
    )


@pytest.mark.parametrize(
    "image_shape,text_shape,scale,valid,match",
    [
        ((4, 3), (4, 5), 1.0, None, "same shape"),
        ((4,), (4,), 1.0, None, "batch, dim"),
        ((4, 3), (4, 3), [1.0, 2.0], None, "one value"),
        ((4, 3), (4, 3), 1.0, torch.ones(4), "bool"),
        ((4, 3), (4, 3), 1.0, torch.ones(3, dtype=torch.bool), "shape"),
    ],
)
def test_rejects_bad_inputs(image_shape, text_shape, scale, valid, match):
    with pytest.raises(ValueError, match=match):
        masked_clip_loss(torch.randn(image_shape), torch.randn(text_shape), torch.tensor(scale), valid)

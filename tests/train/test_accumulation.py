"""Accumulation that keeps the whole batch (GradCache): the engine's protocol on a toy contrastive model.

The toy model has dropout on, so a recompute is exact only if it draws what the first encode drew: the
reference is the loss of the whole batch whose micro-batches are encoded once each, in order, from the
run's seed, and one backward. Without the RNG replay the step differs (the negative control).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn

from nbhelpers.losses import masked_clip_loss
from nbhelpers.train import accumulation
from nbhelpers.train.accumulation import BatchLoss, step_for
from tests.train.accumulation_helpers import TOLERANCE, max_relative_difference, one_step, split_batch

SEED = 0
ROWS, MICRO = 16, 4


class ToyClip(nn.Module):
    """Two towers with dropout, a buffer the forward moves, and a learnable temperature."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.image = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 5))
        self.text = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 5))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("forwards", torch.zeros(()))

    def forward(self, image, text):
        self.forwards += 1
        return (
            F.normalize(self.image(image), dim=-1),
            F.normalize(self.text(text), dim=-1),
            self.logit_scale.exp(),
        )


def encode(model, batch):
    image, text, scale = model(batch["image"], batch["text"])
    return {"image": image, "text": text, "logit_scale": scale, "valid_pair": batch["valid_pair"]}


def loss(features):
    value = masked_clip_loss(
        features["image"], features["text"], features["logit_scale"], features["valid_pair"]
    )
    return value, {"valid_pairs": float(features["valid_pair"].sum())}


BATCH_LOSS = BatchLoss(encode, loss)


def make_batch():
    g = torch.Generator().manual_seed(1)
    valid = torch.rand(ROWS, generator=g) < 0.6
    return {
        "image": torch.randn(ROWS, 6, generator=g),
        "text": torch.randn(ROWS, 4, generator=g),
        "valid_pair": valid,
    }


def reference(micro_batches):
    """The whole batch's loss and gradients, each micro-batch encoded once, in order, from the seed."""
    model = ToyClip()
    model.train()
    set_seed(SEED)
    parts = [encode(model, micro) for micro in micro_batches]
    features = {k: torch.cat([p[k] for p in parts]) for k in ("image", "text", "valid_pair")}
    features["logit_scale"] = parts[0]["logit_scale"]
    value, logs = loss(features)
    value.backward()
    return (
        float(value.detach()),
        logs,
        {n: p.grad.clone() for n, p in model.named_parameters()},
        model.forwards,
    )


def test_whole_batch_step_replays_dropout_exactly(tmp_path):
    batch = make_batch()
    micro = split_batch(batch, MICRO)
    want_loss, want_logs, want_grads, want_forwards = reference(micro)
    model = ToyClip()
    entry, grads = one_step(model, BATCH_LOSS, micro, tmp_path / "batch", seed=SEED)
    assert entry["loss"] == pytest.approx(want_loss, rel=1e-6)
    assert entry["valid_pairs"] == want_logs["valid_pairs"] == float(batch["valid_pair"].sum())
    assert max_relative_difference(want_grads, grads) <= TOLERANCE
    # The no-grad pass leaves buffers alone: one forward per micro-batch moved them, as without it.
    assert float(model.forwards) == float(want_forwards) == MICRO


def test_without_rng_replay_dropout_breaks_it(tmp_path, monkeypatch):
    micro = split_batch(make_batch(), MICRO)
    _, _, want_grads, _ = reference(micro)
    monkeypatch.setattr(accumulation, "restore_rng_state", lambda state: None)
    _, grads = one_step(ToyClip(), BATCH_LOSS, micro, tmp_path / "no_replay", seed=SEED)
    assert max_relative_difference(want_grads, grads) > 1e-3


def test_without_dropout_equals_one_batch(tmp_path):
    """Dropout off: the accumulated step is the one-batch step; per micro-batch (``micro``) it is not."""
    batch = make_batch()

    def build():
        model = ToyClip()
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        return model

    whole, whole_grads = one_step(build(), BATCH_LOSS, [batch], tmp_path / "one")
    accum, accum_grads = one_step(build(), BATCH_LOSS, split_batch(batch, MICRO), tmp_path / "accum")
    micro, micro_grads = one_step(
        build(), step_for(BATCH_LOSS, "micro"), split_batch(batch, MICRO), tmp_path / "m"
    )
    assert accum["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert accum["valid_pairs"] == whole["valid_pairs"]
    assert accum["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-5)
    assert max_relative_difference(whole_grads, accum_grads) <= TOLERANCE
    assert micro["valid_pairs"] == whole["valid_pairs"] / MICRO
    assert max_relative_difference(whole_grads, micro_grads) > 1e-2


def test_a_batch_loss_without_accumulation_is_its_step(tmp_path):
    batch = make_batch()
    plain, plain_grads = one_step(ToyClip(), BATCH_LOSS.step, [batch], tmp_path / "step", seed=SEED)
    given, given_grads = one_step(ToyClip(), BATCH_LOSS, [batch], tmp_path / "loss", seed=SEED)
    assert given["loss"] == plain["loss"]
    assert all(torch.equal(plain_grads[n], given_grads[n]) for n in plain_grads)


def test_step_for_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="accumulate_loss"):
        step_for(BATCH_LOSS, "whole")


def test_encode_must_return_tensors(tmp_path):
    bad = BatchLoss(lambda model, batch: {"image": [1, 2]}, loss)
    with pytest.raises(TypeError, match="dict of tensors"):
        one_step(ToyClip(), bad, split_batch(make_batch(), 2), tmp_path / "bad")

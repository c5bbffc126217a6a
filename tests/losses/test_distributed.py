"""Two CPU processes (gloo) compute exactly what one process computes on the global batch.

One ``torch.multiprocessing.spawn`` of two processes runs every case; each process holds its share of a
fixed global batch and saves its loss, gradients and state. The tests compare them with one process on
the whole batch: the loss every process returns, and the parameter gradients of a tiny model after
DistributedDataParallel's averaging (an all-reduce sum divided by the number of processes, done here
by hand: wrapping in DDP itself imports ~900 modules per process, seconds this test does not need),
for the masked CLIP loss (with invalid pairs), CASS-MM, Barlow Twins and DINO-Twins (DINO with its
centre, plus Barlow Twins).
"""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nbhelpers.losses import (
    BarlowTwinsLoss,
    DINOTwinsLoss,
    all_gather_rows,
    all_reduce_sum,
    cass_mm_loss,
    global_mean,
    masked_clip_loss,
)
from nbhelpers.losses.distributed import world_size
from tests.helpers import run_ranks

WORLD = 2
#: Largest difference allowed, relative to the larger of 1 and the largest magnitude compared: float32
#: sums taken in another order (two halves, then across processes) differ in their last bits.
TOLERANCE = 1e-6
BATCH = 8
#: Rows of the global batch each process holds: equal shares (as the samplers give), and unequal ones.
EQUAL = [range(0, 4), range(4, 8)]
UNEQUAL = [range(0, 5), range(5, 8)]
#: Invalid pairs (text that does not describe the picture) on both processes' shares.
VALID = torch.tensor([True, False, True, True, False, True, True, False])
SPAWN_TIMEOUT_S = 120


def _inputs(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class TinyClip(nn.Module):
    """Two linear towers and a learnable temperature; its loss is the masked CLIP loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(5, 4), nn.Linear(3, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, image, text, valid):
        image = F.normalize(self.image(image), dim=-1)
        text = F.normalize(self.text(text), dim=-1)
        return masked_clip_loss(image, text, self.logit_scale.exp(), valid), {}


class TinyCassMM(nn.Module):
    """A "CNN", a "ViT" and a text tower (linear) and a temperature; its loss is CASS-MM."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.cnn, self.vit, self.text = nn.Linear(5, 4), nn.Linear(5, 4), nn.Linear(3, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, image, text, valid):
        return cass_mm_loss(self.cnn(image), self.vit(image), self.text(text), self.logit_scale.exp(), valid)


class TinyBarlow(nn.Module):
    """A linear projector of two views; its loss is Barlow Twins."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.projector = nn.Linear(5, 6, bias=False)  # a bias is standardised away: no gradient
        self.loss = BarlowTwinsLoss(lambda_offdiag=0.05)

    def forward(self, view1, view2):
        return self.loss(self.projector(view1), self.projector(view2)), {}


class TinyDINOTwins(nn.Module):
    """A linear backbone and head (student) against fixed teacher outputs; DINO-Twins, centre included."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.backbone, self.head = nn.Linear(5, 6), nn.Linear(6, 10)
        self.loss = DINOTwinsLoss(10, n_local_crops=1, barlow_weight=0.5, lambda_offdiag=0.05)

    def forward(self, crops, teacher):
        # crops (3, b, 5): 2 global + 1 local, crop-major as the recipe lays them out.
        features = self.backbone(crops.flatten(0, 1))
        z1, z2 = features[: len(crops[0])], features[len(crops[0]) : 2 * len(crops[0])]
        return self.loss(self.head(features), teacher.flatten(0, 1), z1, z2)


def _clip_batch():
    return _inputs(10, BATCH, 5), _inputs(11, BATCH, 3), VALID


def _barlow_batch():
    return _inputs(20, BATCH, 5), _inputs(21, BATCH, 5)


def _dino_batch():
    return _inputs(30, 3, BATCH, 5), _inputs(31, 2, BATCH, 10) * 3


#: case -> (model class, the global batch, the dimension of each input that holds the batch).
MODEL_CASES = {
    "clip": (TinyClip, _clip_batch, (0, 0, 0)),
    "cass_mm": (TinyCassMM, _clip_batch, (0, 0, 0)),
    "barlow_twins": (TinyBarlow, _barlow_batch, (0, 0)),
    "dino_twins": (TinyDINOTwins, _dino_batch, (1, 1)),
}


def _share(inputs, dims, rows):
    return [x.index_select(dim, torch.tensor(list(rows))) for x, dim in zip(inputs, dims, strict=True)]


def _run_model(model: nn.Module, inputs) -> dict:
    """One training step's forward and backward, then DDP's gradient averaging when several processes
    run it: the loss, its parts, the gradients and the buffers."""
    model.train()
    loss, parts = model(*inputs)
    loss.backward()
    if world_size() > 1:
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world_size()
    return {
        "loss": loss.detach(),
        "parts": {k: v.detach() for k, v in parts.items()},
        "grads": {name: p.grad.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


def _clip_inputs_case(rank: int) -> dict:
    """The masked CLIP loss on leaf features, unequal shares: loss and gradients w.r.t. the inputs."""
    image = F.normalize(_inputs(40, BATCH, 6), dim=-1)[list(UNEQUAL[rank])].requires_grad_()
    text = F.normalize(_inputs(41, BATCH, 6), dim=-1)[list(UNEQUAL[rank])].requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    loss = masked_clip_loss(image, text, scale, VALID[list(UNEQUAL[rank])])
    loss.backward()
    local = masked_clip_loss(
        image.detach(), text.detach(), scale.detach(), VALID[list(UNEQUAL[rank])], global_batch=False
    )
    return {
        "loss": loss.detach(),
        "local_loss": local,
        "image": image.grad,
        "text": text.grad,
        "scale": scale.grad,
    }


def _helpers_case(rank: int) -> dict:
    """The helpers themselves: gathered rows (float with gradient, bool), sums and means."""
    rows = torch.arange(len(UNEQUAL[rank]) * 2, dtype=torch.float32).view(-1, 2) + 100 * rank
    rows.requires_grad_()
    gathered = all_gather_rows(rows)
    (gathered * torch.arange(1.0, len(gathered) + 1).view(-1, 1)).sum().backward()
    flags = all_gather_rows(VALID[list(UNEQUAL[rank])])
    summed = all_reduce_sum(torch.tensor([1.0, rank + 1.0]))
    mean = global_mean(rows.detach())
    return {"world": world_size(), "gathered": gathered.detach(), "grad": rows.grad, "flags": flags,
            "summed": summed, "mean": mean}  # fmt: skip


def _worker(rank: int, port: int, out_dir: str) -> None:
    start = time.perf_counter()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        results = {"clip_inputs": _clip_inputs_case(rank), "helpers": _helpers_case(rank)}
        for name, (model_class, batch, dims) in MODEL_CASES.items():
            results[name] = _run_model(model_class(), _share(batch(), dims, EQUAL[rank]))
        results["seconds"] = time.perf_counter() - start
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # Both ranks done before either tears the group down: a rank that exits while the other's gloo
        # threads still talk to it can abort that process ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two processes saved (one spawn for every test of this module)."""
    out = tmp_path_factory.mktemp("distributed")
    return run_ranks(_worker, WORLD, out, SPAWN_TIMEOUT_S)


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """``max |got - expected| <= TOLERANCE * max(1, max |expected|)``, shapes equal."""
    assert got.shape == expected.shape
    scale = max(1.0, float(expected.abs().max()))
    return float((got - expected).abs().max()) <= TOLERANCE * scale


def test_helpers_gather_sum_and_average_across_processes(ranks):
    for rank, got in enumerate(r["helpers"] for r in ranks):
        assert got["world"] == WORLD
        expected = torch.cat([torch.arange(10.0).view(5, 2), torch.arange(6.0).view(3, 2) + 100])
        torch.testing.assert_close(got["gathered"], expected, rtol=0, atol=0)  # unequal shares, rank order
        assert torch.equal(got["flags"], VALID) and got["flags"].dtype == torch.bool
        torch.testing.assert_close(got["summed"], torch.tensor([2.0, 3.0]), rtol=0, atol=0)
        torch.testing.assert_close(got["mean"], expected.mean(0), rtol=0, atol=1e-5)
        # Row i of the gathered tensor was weighted by i + 1 on *both* processes: each process's rows
        # receive the sum over processes of their gradients, twice the single-process one.
        weights = torch.arange(1.0, BATCH + 1)[list(UNEQUAL[rank])].view(-1, 1).expand(-1, 2)
        torch.testing.assert_close(got["grad"], WORLD * weights, rtol=0, atol=0)


def test_masked_clip_loss_and_input_gradients_are_the_global_batch_ones(ranks):
    image = F.normalize(_inputs(40, BATCH, 6), dim=-1).requires_grad_()
    text = F.normalize(_inputs(41, BATCH, 6), dim=-1).requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    loss = masked_clip_loss(image, text, scale, VALID)
    loss.backward()
    for rank, got in enumerate(ranks):
        rows = list(UNEQUAL[rank])
        got = got["clip_inputs"]
        assert close(got["loss"], loss.detach())
        # The gathering matters: this process's pairs alone give another loss.
        assert abs(got["local_loss"] - loss).item() > 1e-2
        # Rows: N times the global gradient (DDP divides by N); the temperature: the global gradient.
        assert close(got["image"] / WORLD, image.grad[rows])
        assert close(got["text"] / WORLD, text.grad[rows])
        assert close(got["scale"], scale.grad)
        assert got["image"][~VALID[rows]].abs().max() == 0  # invalid pairs take no part


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_averaged_step_equals_one_process_on_the_global_batch(ranks, case):
    model_class, batch, _ = MODEL_CASES[case]
    single = _run_model(model_class(), batch())
    for got in (r[case] for r in ranks):
        assert close(got["loss"], single["loss"])
        assert got["parts"].keys() == single["parts"].keys()
        for name, value in single["parts"].items():
            assert close(got["parts"][name], value), name
        assert got["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            assert grad.abs().max() > 1e-3, name  # a gradient that would show a difference
            assert close(got["grads"][name], grad), name
        assert got["buffers"].keys() == single["buffers"].keys()
        for name, buffer in single["buffers"].items():  # DINO's centre after its update
            assert buffer.abs().max() > 1e-3, name
            assert close(got["buffers"][name], buffer), name

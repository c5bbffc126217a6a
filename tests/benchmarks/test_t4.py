"""The T4 estimate: the live-bytes counter against tensors of known size, and the estimate's arithmetic."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from benchmarks import t4
from benchmarks.memory import BLOCK, LiveBytes, optimiser_phases
from benchmarks.t4_measure import GiB


def test_live_bytes_counts_what_is_created_and_freed_in_allocator_blocks():
    before = torch.ones(10_000)
    with LiveBytes() as live:
        x = torch.ones(1000)  # 4,000 bytes: one 4,096-byte block
        y = x.view(10, 100)  # a view allocates nothing
        x.mul_(2)  # nor does an in-place op
        z = before + 1  # 40,000 bytes: 40,448 in blocks
        assert live.live == 4096 + 40_448
        del x, y, z
    assert live.live == 0 and live.peak == 4096 + 40_448
    assert BLOCK == 512


def _train(
    model: torch.nn.Module, x: torch.Tensor, checkpointed: bool
) -> tuple[LiveBytes, torch.optim.AdamW]:
    opt = torch.optim.AdamW(model.parameters(), foreach=False)
    with LiveBytes() as live:
        remove = optimiser_phases(live)
        for _ in range(2):
            h = x
            for layer in model:
                h = checkpoint(layer, h, use_reentrant=False) if checkpointed else layer(h)
            h.square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        remove()
    return live, opt  # the optimiser (and its state) still alive


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_training_step_leaves_the_optimiser_state_and_checkpointing_saves_activations(checkpointed):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256, bias=False) for _ in range(6)])
    live, _opt = _train(model, torch.randn(512, 256), checkpointed)
    weights = 6 * 256 * 256 * 4
    # What stays: AdamW's two moments of every weight (its step counts are made by torch.tensor, which
    # allocates outside the dispatcher: 4 bytes a weight, not counted).
    assert live.live == 2 * weights
    activations = live.peaks["step"] - 2 * weights  # during the second forward and backward
    if checkpointed:  # only the blocks' inputs are kept (6 x 512 x 256 floats), plus one block's work
        assert activations < 6 * 512 * 256 * 4 + 2 * weights
    else:
        assert activations >= 6 * 512 * 256 * 4
    assert live.peaks["optimiser"] >= 2 * weights


def _run(micro_batch: int, step_peak: float, optimiser_peak: float = 0.0) -> dict:
    fit = {"weights": GiB, "trainable": 1000, "parameters": 2000, "step_peak": step_peak,
           "optimiser_peak": optimiser_peak, "flops": 6e9 * micro_batch * 2, "samples": 2 * micro_batch}  # fmt: skip
    return {"micro_batch": micro_batch, "fits": [fit], "extractions": []}


def test_the_step_grows_linearly_from_the_two_measurements_and_the_allowance_is_added():
    runs = (_run(2, 0.5 * GiB), _run(4, 0.7 * GiB))  # 0.1 GiB a sample on top of 0.3 GiB
    parts = t4.estimate("ssl", "dino_twins_resnet50_cifar10", runs, 64)
    step = 0.3 * GiB + 64 * 0.1 * GiB
    assert parts["transient"] == pytest.approx(step)
    assert parts["activations"] == pytest.approx(step - 12_000)  # less 4 + 8 bytes a trainable weight
    assert parts["allowance"] == pytest.approx(t4.CONTEXT_GIB * GiB + t4.SLACK * (GiB + step))
    assert parts["peak"] == pytest.approx(GiB + step + parts["allowance"])
    # The largest micro-batch within 14 GiB: (1 + 0.3 + 0.1 B) * 1.1 + 0.5 <= 14.
    assert t4.largest_micro_batch("ssl", "dino_twins_resnet50_cifar10", runs) == 109
    assert t4.flops_per_sample(runs[1]) == (6e9, None)


def test_an_optimiser_step_heavier_than_the_backward_sets_the_peak():
    runs = (_run(2, 0.5 * GiB, 3 * GiB), _run(4, 0.7 * GiB, 3 * GiB))
    assert t4.estimate("ssl", "dino_twins_resnet50_cifar10", runs, 4)["transient"] == 3 * GiB


def test_rows_replace_their_preset_and_keep_the_others_in_preset_order(tmp_path):
    path = tmp_path / "t4.jsonl"
    t4.write_rows([{"recipe": "ssl", "preset": "dino_resnet50_cifar10", "peak_gib": 1.0}], path)
    t4.write_rows([{"recipe": "clip", "preset": "t4", "peak_gib": 2.0}], path)
    t4.write_rows([{"recipe": "ssl", "preset": "dino_resnet50_cifar10", "measured_peak_gib": 0.9}], path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["preset"], r.get("peak_gib"), r.get("measured_peak_gib")) for r in rows] == [
        ("t4", 2.0, None),
        ("dino_resnet50_cifar10", 1.0, 0.9),
    ]


def test_the_results_file_has_every_preset_within_the_budget():
    rows = [json.loads(line) for line in t4.RESULTS.read_text().splitlines() if line.strip()]
    assert [(r["recipe"], r["preset"]) for r in rows] == list(t4.PRESETS)
    for row in rows:
        assert {"recipe", "preset", "micro_batch", "peak_gib", "t4_samples_per_s", "epoch_minutes",
                "loader_samples_per_s", "bound"} <= set(row)  # fmt: skip
        assert 0 < row["peak_gib"] <= t4.BUDGET_GIB, row["preset"]
        assert row["micro_batch"] <= row["max_micro_batch"], row["preset"]
        parts = row["memory_gib"]
        assert parts["weights"] > 0 and row["flops_per_sample"] > 0


def test_a_fusion_preset_extracts_at_its_feature_batch_and_trains_its_head_at_its_batch():
    def run(micro_batch: int) -> dict:
        base = _run(micro_batch, 0.01 * GiB * micro_batch)
        extraction = {"weights": 2 * GiB, "parameters": 1, "peak": 0.05 * GiB * micro_batch,
                      "flops": 1e11 * micro_batch, "samples": micro_batch}  # fmt: skip
        return {**base, "extractions": [extraction]}

    runs = (run(2), run(4))
    parts = t4.estimate("fusion", "hateclipper_vitl14_cross", runs, 64, extract_batch=128)
    assert parts["stage"] == "extraction"
    assert parts["weights"] == 2 * GiB and parts["activations"] == pytest.approx(0.05 * GiB * 128)
    # The extraction alone (2 + 6.4 GiB, x 1.1, + 0.5) fits; the head then limits the micro-batch:
    # (1 + 0.01 B) * 1.1 + 0.5 <= 14.
    assert t4.largest_micro_batch("fusion", "hateclipper_vitl14_cross", runs, extract_batch=128) == 1127
    assert t4.largest_micro_batch("fusion", "hateclipper_vitl14_cross", runs, extract_batch=512) == 0
    assert t4.flops_per_sample(runs[1]) == (6e9, 1e11)


def test_flops_are_counted_by_torchs_formulas():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with LiveBytes() as live:
        a @ b
    assert live.flops == 2 * 8 * 16 * 4

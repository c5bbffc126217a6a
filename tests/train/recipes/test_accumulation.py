"""Every batch-level recipe: one optimiser step with ``grad_accum_steps=4`` is the one-batch step.

Each recipe's tiny model (fp32, dropout off; CASS-MM's ResNet with its BatchNorm taken out, since
BatchNorm normalises each micro-batch by its own statistics) trains one step through ``fit`` on one batch
of 32, and on the same batch as four micro-batches (``accumulate_loss="batch"``): the same loss, logged
``valid_pairs`` and gradients. Then two gloo processes, each with half the batch as four micro-batches,
get that step too (one spawn for every case).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from nbhelpers.train.accumulation import step_for
from nbhelpers.train.recipes import cass_mm, clip, clip_classifier
from tests.helpers import run_ranks
from tests.train.accumulation_helpers import (
    TOLERANCE,
    fresh,
    max_relative_difference,
    no_dropout,
    one_step,
    split_batch,
)

ROWS, MICRO, WORLD = 32, 4, 2
SPAWN_TIMEOUT_S = 600
CAPTIONS = ["a red circle", "a blue square", "my green triangle", "when the yellow star is it"]


def _clip_case():
    config = clip.ClipConfig.from_params("demo")
    model, tokenizer, size = clip.build_model(config)
    return model, tokenizer, size, clip.BATCH_LOSS


def _classifier_case(mode):
    def build():
        config = clip_classifier.ClipClassifierConfig.from_params("demo", mode=mode)
        model, tokenizer, size = clip_classifier.build_model(config, None, num_classes=7)
        return model, tokenizer, size, clip_classifier.batch_loss(config)

    return build


def _cass_mm_case():
    config = cass_mm.CassMMConfig.from_params("demo")
    model, tokenizer, size = cass_mm.build_model(config)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d | nn.BatchNorm1d):
                setattr(parent, name, nn.Identity())
    return model, tokenizer, size, cass_mm.BATCH_LOSS


CASES = {
    "clip": _clip_case,
    "clip_classifier_lora": _classifier_case("lora"),
    "clip_classifier_baseline": _classifier_case("baseline"),
    "cass_mm": _cass_mm_case,
}


def build(case):
    """The case's model (same weights every call, dropout off), the global batch and its BatchLoss."""
    model, tokenizer, size, batch_loss = fresh(CASES[case])
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 7, (ROWS,), generator=g)
    labels[torch.rand(ROWS, generator=g) < 0.4] = 0
    batch = {
        "image": torch.randn(ROWS, 3, size, size, generator=g),
        "tokens": tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(ROWS)]),
        "label": labels,
        "valid_pair": labels == 0,
    }
    return no_dropout(model), batch, batch_loss


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory):
    """Each case's one-batch step (``grad_accum_steps=1``): ``{case: (history entry, gradients)}``."""
    root = tmp_path_factory.mktemp("one_batch")
    out = {}
    for case in CASES:
        model, batch, batch_loss = build(case)
        out[case] = one_step(model, batch_loss, [batch], root / case)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_four_micro_batches_give_the_one_batch_step(case, one_batch, tmp_path):
    model, batch, batch_loss = build(case)
    whole, whole_grads = one_batch[case]
    entry, grads = one_step(model, batch_loss, split_batch(batch, MICRO), tmp_path / "accum")
    assert entry["loss"] == pytest.approx(whole["loss"], rel=TOLERANCE)
    assert entry["valid_pairs"] == whole["valid_pairs"] == float(batch["valid_pair"].sum())
    difference = max_relative_difference(whole_grads, grads)
    print(
        f"{case}: loss {whole['loss']:.6f} vs {entry['loss']:.6f}, max relative gradient difference {difference:.2e}"
    )
    assert difference <= TOLERANCE
    if case.startswith("clip_classifier"):
        for name in ("ce", "contrastive", "train_acc"):
            assert entry[name] == pytest.approx(whole[name], rel=TOLERANCE)


def test_micro_mode_is_one_loss_per_micro_batch(one_batch, tmp_path):
    model, batch, batch_loss = build("clip")
    entry, grads = one_step(
        model, step_for(batch_loss, "micro"), split_batch(batch, MICRO), tmp_path / "micro"
    )
    assert entry["valid_pairs"] == one_batch["clip"][0]["valid_pairs"] / MICRO
    assert max_relative_difference(one_batch["clip"][1], grads) > 1e-2


def test_with_gradient_checkpointing(one_batch, tmp_path):
    model, batch, batch_loss = build("clip")
    entry, grads = one_step(
        model, batch_loss, split_batch(batch, MICRO), tmp_path / "ckpt", gradient_checkpointing=True
    )
    assert entry["loss"] == pytest.approx(one_batch["clip"][0]["loss"], rel=TOLERANCE)
    assert max_relative_difference(one_batch["clip"][1], grads) <= TOLERANCE


def test_under_bf16_autocast(tmp_path):
    """Both passes autocast (bf16 on the CPU): close to the one-batch bf16 step, at bf16's precision."""
    model, batch, batch_loss = build("clip")
    whole, whole_grads = one_step(model, batch_loss, [batch], tmp_path / "one", mixed_precision="bf16")
    model, batch, batch_loss = build("clip")
    entry, grads = one_step(
        model, batch_loss, split_batch(batch, MICRO), tmp_path / "accum", mixed_precision="bf16"
    )
    assert entry["loss"] == pytest.approx(whole["loss"], rel=2e-2)
    # bf16 rounds each tensor's small entries coarsely, so compare the whole gradient: its relative L2 error
    # is about 1e-3 here, where one loss per micro-batch ("micro") is 0.16 away.
    whole_vector, vector = (
        torch.cat([g[k].flatten().float() for k in sorted(g)]) for g in (whole_grads, grads)
    )
    assert float((vector - whole_vector).norm() / whole_vector.norm()) <= 0.02


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    results = {}
    for case in CASES:
        model, batch, batch_loss = build(case)
        share = ROWS // WORLD
        mine = {k: v[rank * share : (rank + 1) * share] for k, v in batch.items()}
        results[case] = one_step(model, batch_loss, split_batch(mine, MICRO), Path(out_dir) / f"{case}{rank}")
        results[case][0]["share_valid_pairs"] = float(mine["valid_pair"].sum())
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    # Both ranks done before either tears down its process group (see tests/losses/test_distributed.py).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("two_processes")
    return run_ranks(_worker, WORLD, out, SPAWN_TIMEOUT_S)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_of_four_micro_batches_give_the_one_batch_step(case, ranks, one_batch):
    whole, whole_grads = one_batch[case]
    # The contrastive (and CASS) terms are the global batch's on every process; the classifier's
    # cross-entropy is each process's mean, which DDP's averaging makes the batch's.
    mean_loss = sum(r[case][0]["loss"] for r in ranks) / WORLD
    assert mean_loss == pytest.approx(whole["loss"], rel=TOLERANCE)
    for got in ranks:
        entry, grads = got[case]
        assert entry["valid_pairs"] == entry["share_valid_pairs"]  # this process's whole batch
        difference = max_relative_difference(whole_grads, grads)
        print(f"{case} (2 processes): max relative gradient difference {difference:.2e}")
        assert difference <= TOLERANCE
    assert sum(r[case][0]["valid_pairs"] for r in ranks) == whole["valid_pairs"]


@pytest.mark.parametrize(
    "config_class", [clip.ClipConfig, clip_classifier.ClipClassifierConfig, cass_mm.CassMMConfig]
)
def test_only_a_whole_batch_accumulated_run_has_accumulate_loss_in_its_identity(config_class):
    """Runs trained before the field (one loss per micro-batch, or no accumulation) keep their fingerprints."""
    plain = config_class.from_params("demo")
    micro = config_class.from_params("demo", grad_accum_steps=4, accumulate_loss="micro")
    whole = config_class.from_params("demo", grad_accum_steps=4)
    assert plain.accumulate_loss == whole.accumulate_loss == "batch"
    assert "accumulate_loss" not in plain.identity().config
    assert "accumulate_loss" not in micro.identity().config
    assert whole.identity().config["accumulate_loss"] == "batch"
    assert whole.identity().fingerprint != micro.identity().fingerprint

"""Several processes: launched runs that notebook 09 reads, and BatchNorm made global.

The launched runs are two CPU processes (gloo), started by torchrun as docs/multi_gpu.md gives it for
CPUs (the same recipe code as ``accelerate launch`` on N GPUs), and checked to be two: a CLIP run, then a CLIP classifier starting from its exported weights; the evaluation code of notebook 09
(:mod:`nbhelpers.evaluation.runs`) then finds, loads and re-scores them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nbhelpers.data.memory import load_split
from nbhelpers.evaluation.runs import (
    discover_runs,
    evaluate_runs,
    load_saved_predictions,
    representation_table,
)
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.base import sync_batchnorm
from nbhelpers.train.recipes.clip import evaluate_split
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.run_dir import read_json

REPO = Path(__file__).resolve().parents[2]
#: Two CPU processes (gloo) on this machine. ``accelerate launch --cpu --num_processes 2`` would start one
#: process only (without MPI its CPU path is the simple launcher), so the processes are started by torchrun,
#: as ``accelerate launch`` does for GPUs, and ``ACCELERATE_USE_CPU=1`` keeps them on the CPU.
LAUNCH = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TINY = ["batch_size=4", "epochs=1", "steps_per_epoch=2", "eval_splits=test", "progress=false"]
#: What a finished run directory holds (a classifier also its predictions, CLIP its exported weights).
RUN_FILES = {"config.json", "history.json", "metrics.json", "run.json", "checkpoints", "logs"}
CHECKPOINT_FILES = {"epoch_0001.pt", "epoch_0001.pt.sha256.json", "latest.json"}


def launch(recipe: str, *keys: str) -> None:
    """``torchrun <LAUNCH> -m nbhelpers.train <recipe> <keys>`` on two CPU processes, which must succeed."""
    command = [sys.executable, *LAUNCH, "-m", "nbhelpers.train"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [*command, recipe, *keys], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{recipe} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def launched(tiny_runs, tmp_path_factory) -> Path:
    """A runs folder holding ``clip`` and ``classifier``, each trained by two processes."""
    runs = tmp_path_factory.mktemp("launched") / "runs"
    data = f"data_dir={tiny_runs / 'shards'}"
    launch("clip", data, f"runs_dir={runs}", "run_name=clip", *TINY)
    launch("clip_classifier", data, f"runs_dir={runs}", "run_name=classifier", "pretrained=run:clip", *TINY)
    return runs


@pytest.mark.slow
def test_two_process_runs_are_complete_and_written_once(launched):
    clip, classifier = launched / "clip", launched / "classifier"
    assert {p.name for p in clip.iterdir()} == RUN_FILES | {"clip_weights.pt"}
    assert {p.name for p in classifier.iterdir()} == RUN_FILES | {"predictions_test.npz"}
    for run in (clip, classifier):
        # No temporary file of a write another process raced with: only the main process wrote.
        assert {p.name for p in (run / "checkpoints").iterdir()} == CHECKPOINT_FILES
        # Two processes trained it: the checkpoint holds one RNG state per process.
        checkpoint = torch.load(run / "checkpoints" / "epoch_0001.pt", map_location="cpu", weights_only=True)
        assert len(checkpoint["rng"]) == 2
        history = read_json(run / "history.json")
        assert [e["global_step"] for e in history["epochs"]] == [2]
        assert np.isfinite(history["epochs"][0]["loss"])
        # TensorBoard's event file: one, the main process's.
        assert len(list((run / "logs").glob("events.out.tfevents.*"))) == 1
    assert read_json(classifier / "config.json")["pretrained"] == "run:clip"


@pytest.mark.slow
def test_notebook_09_finds_loads_and_rescores_the_runs(launched):
    records = {r.name: r for r in discover_runs(launched)}
    assert set(records) == {"clip", "classifier"}
    assert all(r.problem is None for r in records.values())
    assert records["clip"].task == "ssl" and records["classifier"].task == "7class"

    evaluation = evaluate_runs(launched, split="test", progress=None)
    table = representation_table(evaluation)  # 09's table of the self-supervised runs
    recorded = read_json(launched / "clip" / "metrics.json")
    assert table["Run"].tolist() == ["clip"]
    assert table.iloc[0]["Recall@1 image->text"] == recorded["recall_at_1"] == recorded["recall_i2t@1"]
    assert table.iloc[0]["Zero-shot accuracy"] == recorded["zero_shot_accuracy"]
    assert not evaluation.skipped
    (scored,) = evaluation.runs
    # The classifier rebuilt from its checkpoint predicts what the two processes saved and measured.
    assert scored.source == "re-predicted" and len(scored.labels) == 48
    assert scored.max_difference == 0
    saved, labels = load_saved_predictions(launched / "classifier", "test", "7class")
    np.testing.assert_allclose(scored.scores, saved, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(scored.labels, labels)


@pytest.mark.slow
def test_the_launched_clip_run_loads_and_scores_what_it_recorded(launched):
    trained = get_recipe("clip").load_trained(launched / "clip")
    data = load_split(manifests(trained.config), "test", trained.image_size, trained.tokenizer)
    report = evaluate_split(trained.model, trained.tokenizer, data)
    recorded = read_json(launched / "clip" / "metrics.json")
    assert recorded["splits"]["test"] == pytest.approx(report, abs=1e-9)


def batchnorm_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5), nn.BatchNorm1d(5)
    )
    model(torch.randn(6, 3, 5, 5))  # running statistics that are not the initial ones
    return model


def test_sync_batchnorm_converts_every_batchnorm_with_its_state_on_several_gpus():
    model = batchnorm_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = sync_batchnorm(model, 2, "cuda")
    assert converted is model
    assert [type(m) for m in model if "Norm" in type(m).__name__] == [nn.SyncBatchNorm, nn.SyncBatchNorm]
    after = model.state_dict()
    assert after.keys() == before.keys()  # a checkpoint of either form loads into the other
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_sync_batchnorm_leaves_one_process_and_cpu_processes_alone():
    model = batchnorm_model()
    assert sync_batchnorm(model, 1, "cuda") is model
    with pytest.warns(UserWarning, match="2 CPU processes: BatchNorm normalises over each process's share"):
        assert sync_batchnorm(model, 2, "cpu") is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    no_batchnorm = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        assert sync_batchnorm(no_batchnorm, 2, "cpu") is no_batchnorm

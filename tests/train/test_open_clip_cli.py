"""Our shards train unchanged with open_clip_train's own webdataset pipeline."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.train.open_clip_cli import brace_urls, open_clip_command


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("oc_shards")
    sizes = {"synthetic_train": 96, "synthetic_val": 16, "synthetic_test": 8, "synthetic_unseen": 8}
    config = PrepareConfig.from_params(
        "demo", out_dir=str(out), image_size=64, train_shard_size=24, workers=1, **sizes
    )
    return prepare(config, progress=False)


def test_brace_expression_names_every_shard(shards):
    assert brace_urls(shards, "train") == str(Path(shards["_dir"]) / "train-{00000..00003}.tar")
    assert brace_urls(shards, "val") == str(Path(shards["_dir"]) / "val-00000.tar")
    command = open_clip_command([shards], gpus=8)
    assert "--nproc_per_node=8" in command and "--train-num-samples 96" in command
    assert "--pretrained laion2b_s34b_b79k" in command and "--val-num-samples 16" in command


@pytest.mark.slow
def test_open_clip_train_runs_one_epoch_on_our_shards_and_its_checkpoint_loads(shards, tmp_path):
    logs = tmp_path / "logs"
    args = [
        sys.executable, "-m", "nbhelpers.train.open_clip_cli",
        "--dataset-type", "webdataset", "--train-data", brace_urls(shards, "train"), "--train-num-samples", "96",
        "--val-data", brace_urls(shards, "val"), "--val-num-samples", "16",
        "--model", TINY_VIT, "--batch-size", "16", "--epochs", "1", "--workers", "1", "--device", "cpu",
        "--precision", "fp32", "--report-to", "", "--warmup", "2", "--logs", str(logs), "--name", "smoke",
        "--seed", "0", "--save-frequency", "1",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = logs / "smoke" / "checkpoints" / "epoch_1.pt"
    assert checkpoint.is_file()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1
    model, _, _, _ = create_clip(TINY_VIT, pretrained=str(checkpoint))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["state_dict"][name]), name

"""A tiny training run for the checkpoint fault tests, importable by the test and by its killed child.

``python -m tests.faults.checkpoint_fit RUN_DIR STALL MARKER`` trains :func:`tiny_spec`'s run and, while
writing epoch 3's checkpoint, touches ``MARKER`` and stalls, to be killed there: ``mid-write`` after half
of the file's bytes, ``before-rename`` after the whole file and its digest but before it is renamed
into place.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.train.engine import TrainSpec, fit

STALL_EPOCH = 3


class TinyNet(nn.Module):
    """16 -> 64 -> 1 with dropout (so a resume must restore the RNG): 1,153 parameters."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def make_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def step_fn(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y), {}


def batches(epoch: int):
    """Epoch ``epoch``'s endless stream, a function of the epoch only (the engine's contract)."""
    g = torch.Generator().manual_seed(1000 + epoch)
    w = torch.linspace(-1.0, 1.0, 16)
    while True:
        x = torch.randn(8, 16, generator=g)
        yield x, x @ w + 0.1 * torch.randn(8, generator=g)


def tiny_spec(run_dir: Path, **overrides) -> TrainSpec:
    """4 epochs of 3 steps, a checkpoint after every epoch."""
    base = dict(epochs=4, steps_per_epoch=3, lr=1e-2, weight_decay=0.01, progress=False, log_every=3)
    return TrainSpec(run_dir=run_dir, **{**base, **overrides})


def _stall(marker: Path) -> None:
    marker.touch()
    time.sleep(600)  # killed here


def main(run_dir: str, stall: str, marker: str) -> None:
    marker_path = Path(marker)
    if stall == "mid-write":
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            if not (isinstance(obj, dict) and obj.get("epoch") == STALL_EPOCH):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            _stall(marker_path)

        torch.save = half_save
    elif stall == "before-rename":
        real_replace = os.replace

        def stalling_replace(src, dst, *args, **kwargs):
            if Path(dst).name == f"epoch_{STALL_EPOCH:04d}.pt":
                _stall(marker_path)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = stalling_replace
    else:
        raise ValueError(f"stall must be 'mid-write' or 'before-rename', got {stall!r}")
    fit(make_model(), step_fn, batches, tiny_spec(Path(run_dir)))


if __name__ == "__main__":
    main(*sys.argv[1:])

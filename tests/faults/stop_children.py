"""Child processes for the lock and stop tests: a training run and a prepare that pause at a known point.

``python -m tests.faults.stop_children train RUN_DIR MARKER PAUSE_AT ON_BUSY RELEASE OUT`` trains
:func:`~tests.faults.checkpoint_fit.tiny_spec`'s run; after optimiser step ``PAUSE_AT`` (0: never) it
touches ``MARKER`` and waits until a stop signal has come or the file ``RELEASE`` exists; at the end
it saves the final weights to ``OUT`` and prints ``{"steps": <optimiser steps this process took>}``.

``python -m tests.faults.stop_children prepare OUT_DIR MARKER PAUSE_AT WORKERS RELEASE [--field value
...]`` runs :func:`~nbhelpers.data.prepare.main` on :data:`PREPARE_PARAMS`; the ``PAUSE_AT``-th image
encoded (in whichever process encodes it) touches ``MARKER`` and waits likewise, in the middle of a
shard.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from nbhelpers import stop_signals
from nbhelpers.train.engine import fit
from tests.faults.checkpoint_fit import batches, make_model, step_fn, tiny_spec

WAIT_S = 120
#: A small synthetic prepare: 5 training shards of 8 candidates, 2 shards per other split.
PREPARE_PARAMS = {
    "source": "synthetic",
    "image_size": 32,
    "synthetic_train": 40,
    "synthetic_val": 8,
    "synthetic_test": 8,
    "synthetic_unseen": 8,
    "train_shard_size": 8,
    "eval_shard_size": 6,
}
PREPARE_ARGS = [part for name, value in PREPARE_PARAMS.items() for part in (f"--{name}", str(value))]


def pause(marker: Path, release: Path) -> None:
    """Touches ``marker``; returns once a stop was asked for or ``release`` exists."""
    marker.touch()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not release.exists():
        if stop_signals._ACTIVE and stop_signals._ACTIVE[-1]:
            return
        time.sleep(0.02)


def train(run_dir: str, marker: str, pause_at: str, on_busy: str, release: str, out: str) -> None:
    steps = []

    def on_step_end(model, global_step, total):
        steps.append(global_step)
        if global_step == int(pause_at):
            pause(Path(marker), Path(release))

    model = make_model()
    spec = tiny_spec(Path(run_dir), on_busy=on_busy)
    fit(model, step_fn, batches, spec, on_step_end=on_step_end)
    torch.save(model.state_dict(), out)
    print(json.dumps({"steps": len(steps)}), flush=True)


def prepare(out_dir: str, marker: str, pause_at: str, workers: str, release: str, *extra: str) -> None:
    import nbhelpers.data.shards as shards
    from nbhelpers.data.prepare import main

    real_encode, count = shards.encode_jpeg, [0]

    def encode(image):
        count[0] += 1
        if count[0] == int(pause_at):
            pause(Path(marker), Path(release))
        return real_encode(image)

    shards.encode_jpeg = encode  # a forked pool worker inherits it
    main([*PREPARE_ARGS, "--out_dir", out_dir, "--workers", workers, *extra])


if __name__ == "__main__":
    {"train": train, "prepare": prepare}[sys.argv[1]](*sys.argv[2:])

"""A stop inside an epoch: its checkpoint, and where a resumed run takes the epoch up again.

When SIGINT or SIGTERM asks training to stop (:mod:`nbhelpers.stop_signals`), the engine finishes the
optimiser step under way and writes ``checkpoints/stopped.pt``: a checkpoint like the epoch ones
(weights, optimiser, schedule, scaler, RNGs, history) whose ``epoch`` is the last *finished* epoch, plus
``extra["stopped"]``:

    epoch       the epoch that was under way
    micro       micro-batches of it already trained on (a whole number of optimiser steps)
    epoch_rng   every process's RNG states when that epoch began
    totals, log the epoch's sums so far and those since the last step log (:class:`~nbhelpers.train.epoch_log.Sums`)

Resuming from it rebuilds the epoch's stream from the epoch's start RNG (so a DataLoader draws the same
worker seeds), draws and drops the ``micro`` batches already used, then sets the RNGs to their state at
the stop: the batches, dropout and every later step are those of the uninterrupted run, which is why
its final weights equal the uninterrupted run's (on CPU; see the engine's note on GPU determinism).
Dropping the used batches costs reading them again, not training on them.

``stopped.pt`` is taken only when it is newer than the newest good epoch checkpoint, and deleted once
the resumed run writes the next epoch checkpoint. A stop at an epoch's end writes that epoch's
checkpoint instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from nbhelpers.train.checkpoint import BadCheckpointError, load_checkpoint
from nbhelpers.train.run_dir import CHECKPOINT_DIR, digest_path

#: The checkpoint of a stop inside an epoch, in ``checkpoints/``.
STOPPED_CHECKPOINT = "stopped.pt"


def stopped_path(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints/stopped.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / STOPPED_CHECKPOINT


def stop_point(
    run_dir: Path, found: tuple[int, Path, dict[str, Any]] | None, warn: bool, stacklevel: int = 2
) -> tuple[int, Path, dict[str, Any]] | None:
    """``stopped.pt`` as ``(epoch, path, state)`` if it is good and newer than ``found``; else ``found``.

    Args:
        run_dir: the run directory.
        found: the newest good epoch checkpoint (:func:`~nbhelpers.train.resume.resume_point`), or None.
        warn: warn about a bad ``stopped.pt`` (the main process only).
        stacklevel: of the warning, counted from the caller of this function.
    """
    path = stopped_path(run_dir)
    if not path.is_file():
        return found
    try:
        state = load_checkpoint(path)
    except BadCheckpointError as err:
        if warn:
            warnings.warn(
                f"skipped {path} ({err.problem}): resuming from the last epoch checkpoint instead",
                stacklevel=stacklevel + 1,
            )
        return found
    stop = (state.get("extra") or {}).get("stopped")
    if stop is None or (found is not None and found[0] >= stop["epoch"]):
        return found  # an epoch checkpoint at or past the stop was written after it
    return state["epoch"], path, state


def remove_stopped(run_dir: str | Path) -> None:
    """Deletes ``stopped.pt`` and its digest (an epoch checkpoint past it now exists)."""
    path = stopped_path(run_dir)
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


__all__ = ["STOPPED_CHECKPOINT", "remove_stopped", "stop_point", "stopped_path"]

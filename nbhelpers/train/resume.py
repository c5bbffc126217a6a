"""Where a run continues: the newest good checkpoint, checked against the spec it was trained under.

Resuming checks each checkpoint against the digest recorded when it was written
(``nbhelpers.train.checkpoint``), newest first, and continues from the newest good one, with a warning
naming every file skipped and why; a skipped file is overwritten when its epoch finishes again. If none
is good, training restarts from epoch 0 (with a warning saying so) when every skipped file is certainly
bad (empty, truncated, replaced, changed bytes: nothing good is lost), and refuses when one may be good
but cannot be verified (no digest file), so that no trusted hours of training are overwritten.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbhelpers.train.checkpoint import BadCheckpointError, load_checkpoint, verify_checkpoint
from nbhelpers.train.identity import RunMismatchError
from nbhelpers.train.run_dir import CHECKPOINT_DIR, list_checkpoints

# Spec fields that change the optimisation trajectory: a resume under different values would not be
# the run that was checkpointed, so it is refused.
TRAJECTORY_FIELDS = (
    "epochs",
    "steps_per_epoch",
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "warmup_steps",
    "grad_accum_steps",
    "max_grad_norm",
    "mixed_precision",
    "seed",
    "lr_schedule",
    "decay_all",
)
#: What a checkpoint written before a trajectory field existed trained with.
TRAJECTORY_DEFAULTS = {"lr_schedule": "cosine", "decay_all": False}


def check_spec_unchanged(saved: Mapping[str, Any] | None, now: Mapping[str, Any], run_dir: Path) -> None:
    """Refuses to continue a checkpoint under another trajectory (more epochs, another lr, ...).

    Args:
        saved: the spec stored in the checkpoint (JSON form), or None for a checkpoint without one.
        now: this run's spec in the same form.
        run_dir: the run directory, for the message.

    Raises:
        RunMismatchError: listing the fields that differ.
    """
    if not saved:
        return
    was = {k: saved.get(k, TRAJECTORY_DEFAULTS.get(k)) for k in TRAJECTORY_FIELDS}
    changed = [f"{k}: {was[k]!r} -> {now[k]!r}" for k in TRAJECTORY_FIELDS if was[k] != now[k]]
    if changed:
        raise RunMismatchError(run_dir, changed)


def resume_point(run_dir: Path, warn: bool, stacklevel: int = 2) -> tuple[int, Path, dict[str, Any]] | None:
    """The newest good checkpoint of ``run_dir`` as ``(epoch, path, state)``, or None to start at epoch 0.

    Args:
        run_dir: the run directory.
        warn: warn about skipped files (the main process only).
        stacklevel: of the warnings, counted from the caller of this function.

    Raises:
        BadCheckpointError: no checkpoint is good and one that may be good cannot be verified.
    """
    skipped: list[BadCheckpointError] = []
    for epoch, path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_checkpoint(path)
        except BadCheckpointError as err:
            skipped.append(err)
            continue
        if skipped and warn:
            warnings.warn(
                f"resuming from {path.name} (epoch {epoch}), the newest good checkpoint of "
                f"{run_dir / CHECKPOINT_DIR}; skipped {_skipped_list(skipped)}; each is overwritten when its "
                "epoch finishes again",
                stacklevel=stacklevel + 1,
            )
        return epoch, path, state
    if not skipped:
        return None
    unverified = [err for err in skipped if err.unverified]
    if unverified:
        raise BadCheckpointError(
            unverified[0].path,
            f"{unverified[0].problem}. No checkpoint of {run_dir / CHECKPOINT_DIR} is good, and training "
            "does not restart from epoch 0 over one that may be; to restart, delete "
            f"{run_dir / CHECKPOINT_DIR}. Skipped: {_skipped_list(skipped)}",
            unverified=True,
        )
    if warn:
        warnings.warn(
            f"no good checkpoint in {run_dir / CHECKPOINT_DIR}: skipped {_skipped_list(skipped)}; none "
            "holds training that could be lost, so training restarts from epoch 0 and overwrites them as "
            "epochs finish",
            stacklevel=stacklevel + 1,
        )
    return None


def _skipped_list(skipped: Sequence[BadCheckpointError]) -> str:
    """``epoch_0003.pt (is truncated: ...); epoch_0002.pt (...)``."""
    return "; ".join(f"{err.path.name} ({err.problem})" for err in skipped)


def last_verified(run_dir: Path, upto: int | None) -> Path | None:
    """The newest checkpoint of epoch ``<= upto`` that matches its digest now, or None."""
    if upto is None:
        return None
    for epoch, path in reversed(list_checkpoints(run_dir)):
        if epoch > upto:
            continue
        try:
            verify_checkpoint(path)
        except (BadCheckpointError, OSError):
            continue
        return path
    return None

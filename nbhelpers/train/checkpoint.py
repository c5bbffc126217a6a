"""Checkpoints: the full training state in one file that ``torch.load(weights_only=True)`` reads.

A checkpoint is a dict::

    format        CHECKPOINT_FORMAT (an int, bumped on incompatible changes)
    epoch         finished epochs (1-based: ``epoch_0002.pt`` holds epoch 2's end state)
    global_step   optimiser steps taken
    model         the unwrapped model's ``state_dict()`` (every buffer too, e.g. DINO's centre)
    optimizer     ``optimizer.state_dict()``
    scheduler     ``scheduler.state_dict()``
    scaler        the fp16 ``GradScaler.state_dict()``, or None
    rng           one RNG state per process (see :func:`capture_rng_state`)
    history, spec, extra   plain JSON-like values written by the engine

Only tensors, numbers, strings, None and lists/tuples/dicts of them are stored, so loading needs no
pickle of arbitrary classes: numpy's RNG state is stored as lists and ints, not as an ndarray.
Files are written atomically (``nbhelpers.train.run_dir.atomic_open``).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nbhelpers.train.run_dir import atomic_open, latest_checkpoint

CHECKPOINT_FORMAT = 1


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states: Python's ``random``, numpy's legacy global RNG, torch CPU and CUDA.

    Returns:
        ``{"python": [version, state_ints, gauss_next], "numpy": {...}, "torch": uint8 tensor,
        "cuda": [uint8 tensor per device] or None}``, all ``weights_only``-loadable.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "bit_generator": str(name),
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng_state`.

    CUDA states are restored only when the number of visible devices matches; otherwise a warning says
    that GPU randomness (dropout on GPU) will differ from the uninterrupted run.

    Args:
        state: the dict from :func:`capture_rng_state` (possibly after a save/load round trip).
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["bit_generator"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda)} devices, this process sees "
                f"{torch.cuda.device_count()}: CUDA RNG not restored",
                stacklevel=2,
            )


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    epoch: int,
    global_step: int,
    rng: list[dict[str, Any]],
    history: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the full training state to ``path`` atomically.

    Args:
        path: the target file (``.../checkpoints/epoch_0003.pt``).
        model: the unwrapped model (``accelerator.unwrap_model``), so keys carry no ``module.`` prefix.
        optimizer: the optimiser (an accelerate-wrapped one delegates ``state_dict``).
        scheduler: the LR scheduler.
        scaler: the fp16 gradient scaler, or None.
        epoch: finished epochs.
        global_step: optimiser steps taken.
        rng: RNG states, one per process, indexed by process rank.
        history: the run's history so far (JSON-like).
        spec: the training spec as a JSON-like dict, to detect a changed spec on resume.
        extra: anything else JSON-like.

    Returns:
        ``path`` as a ``Path``.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
        "history": history,
        "spec": spec,
        "extra": extra,
    }
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Args:
        path: a checkpoint file.
        map_location: where tensors go (CPU by default; ``load_state_dict`` then copies them to the
            parameters' devices).

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        ValueError: if the file is not a checkpoint of a known format.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})")
    return state


def load_model_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    prefix: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint's model weights into ``model``, for evaluation or fine-tuning downstream.

    Example: a DINO run checkpoints a wrapper holding ``student``, ``teacher`` and the loss; to
    evaluate the teacher backbone, ``load_model_weights(backbone, run_dir, prefix="teacher.backbone.")``.

    Args:
        model: the module to fill.
        path: a checkpoint file, or a run directory (its latest checkpoint is used).
        prefix: keep only keys starting with this prefix, with the prefix removed.
        strict: passed to ``load_state_dict``: every key of ``model`` must be matched, and no other.

    Returns:
        ``{"path", "epoch", "global_step", "missing_keys", "unexpected_keys"}``.

    Raises:
        FileNotFoundError: if ``path`` is a run directory with no checkpoint.
        KeyError: if ``prefix`` matches no key.
        RuntimeError: from ``load_state_dict`` on mismatched keys (when ``strict``) or shapes.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = found
    ckpt = load_checkpoint(path)
    weights = ckpt["model"]
    if prefix is not None:
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if not weights:
            roots = sorted({k.split(".")[0] + "." for k in ckpt["model"]})
            raise KeyError(f"no key of {path} starts with {prefix!r}; top-level prefixes: {roots}")
    result = model.load_state_dict(weights, strict=strict)
    return {
        "path": path,
        "epoch": ckpt["epoch"],
        "global_step": ckpt["global_step"],
        "missing_keys": list(result.missing_keys),
        "unexpected_keys": list(result.unexpected_keys),
    }

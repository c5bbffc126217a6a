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

**Integrity.** Files are written atomically (``nbhelpers.fileio.atomic_open``), and each carries a
digest file, ``epoch_0004.pt.sha256.json`` = ``{"file", "sha256", "bytes", "head"}`` (``head``: the
first 64 bytes, hex, so that a truncated file is told from a replaced one). The digest is taken from
the bytes on disk and written, atomically, *before* the checkpoint is renamed into place, so whatever
instant a kill strikes, a checkpoint file that exists has its digest next to it. Every read
(:func:`load_checkpoint`, :func:`load_model_weights`, the engine's resume) checks the file against it
first: an empty, truncated, replaced or changed file (flipped bits, overwritten bytes), or one with no
digest, raises :class:`BadCheckpointError` naming the file and what is wrong, and is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from nbhelpers.train.run_dir import atomic_open, digest_path, latest_checkpoint, write_json_atomic

CHECKPOINT_FORMAT = 1
_HEAD_BYTES = 64
_BLOCK = 1 << 20


class BadCheckpointError(ValueError):
    """A checkpoint file that must not be loaded: empty, truncated, replaced, changed, or not verifiable.

    Attributes:
        path: the checkpoint file.
        problem: what is wrong, as a phrase following the path (``"is truncated: ..."``).
        unverified: True when the file may be good but cannot be checked (no or an unreadable digest
            file, yet it reads as a checkpoint); False when it is certainly not the checkpoint written.
    """

    def __init__(self, path: str | os.PathLike, problem: str, *, unverified: bool = False) -> None:
        self.path, self.problem, self.unverified = Path(path), problem, unverified
        super().__init__(f"checkpoint {self.path} {problem}")


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
        f.flush()
        # The digest goes in place before the checkpoint is renamed over its target (when this block
        # exits), so no kill can leave a checkpoint without its digest. It replaces the digest of an
        # older file of the same name (a bad one a resume skipped); a kill before the rename leaves
        # that old file, which then fails the new digest: still bad, never taken for good.
        _write_digest(path, *_digest_of_open_file(f))
    return path


def _digest_of_open_file(f: IO[bytes]) -> tuple[str, int, bytes]:
    # atomic_open's temporary file was opened read-write (tempfile.mkstemp), so its bytes on disk can
    # be read back through the descriptor without closing it.
    fd, digest, size, head = f.fileno(), hashlib.sha256(), 0, b""
    end = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        for block in iter(lambda: os.read(fd, _BLOCK), b""):
            head = head or block[:_HEAD_BYTES]
            digest.update(block)
            size += len(block)
    finally:
        os.lseek(fd, end, os.SEEK_SET)
    return digest.hexdigest(), size, head


def _digest_of_file(path: Path) -> tuple[str, int, bytes]:
    # Never cached (unlike nbhelpers.fileio.sha256_file): a file changed in place within the file
    # system's timestamp resolution keeps its size and modification time.
    digest, size, head = hashlib.sha256(), 0, b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            head = head or block[:_HEAD_BYTES]
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size, head


def _write_digest(path: Path, sha256: str, size: int, head: bytes) -> None:
    write_json_atomic(
        digest_path(path), {"file": path.name, "sha256": sha256, "bytes": size, "head": head.hex()}
    )


def _read_content(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of ``path``, checked to be a checkpoint of this format.

    Raises:
        BadCheckpointError: if it cannot be read, or is not a checkpoint of :data:`CHECKPOINT_FORMAT`.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(16)
        raise BadCheckpointError(
            path, f"is not a checkpoint: not the zip archive torch.save writes (it starts {start!r})"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message opens with advice to pass weights_only=False, which would run whatever the
        # file holds; only its line naming what was refused is kept.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        refused = [
            line for line in lines if not line.startswith(("Weights only load failed", "Check the doc"))
        ]
        why = refused[0] if refused else "objects other than tensors and plain values"
        raise BadCheckpointError(
            path, f"is not a checkpoint: it holds objects that are never unpickled here ({why})"
        ) from err
    except Exception as err:  # torch raises many types for a damaged archive
        lines = str(err).strip().splitlines()
        raise BadCheckpointError(
            path, f"cannot be read as a checkpoint ({type(err).__name__}: {lines[0] if lines else ''})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise BadCheckpointError(path, f"is not a checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})")
    return state


def verify_checkpoint(path: str | os.PathLike) -> str:
    """Check a checkpoint file's bytes against the digest recorded when it was written.

    Args:
        path: a checkpoint file.

    Returns:
        Its SHA-256 (hex).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BadCheckpointError: naming the file and what is wrong: empty, truncated (how many of the bytes
            written remain), replaced by another file, bytes appended, bytes changed (same size, another
            SHA-256), or no readable digest file (``unverified``; the message then also says whether the
            file reads as a checkpoint at all).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    sha256, size, head = _digest_of_file(path)
    if size == 0:
        raise BadCheckpointError(path, "is empty (0 bytes): not a checkpoint")
    sidecar = digest_path(path)
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        want, want_size, want_head = (
            recorded["sha256"],
            int(recorded["bytes"]),
            bytes.fromhex(recorded["head"]),
        )
    except FileNotFoundError:
        _read_content(path)  # raises if it is not a checkpoint at all: that is the better message
        raise BadCheckpointError(
            path,
            f"has no digest file {sidecar.name}, so it cannot be verified (copied without it, or written "
            "before checkpoints recorded their SHA-256); if you trust it, record its digest with "
            "nbhelpers.train.checkpoint.record_checkpoint_digest",
            unverified=True,
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadCheckpointError(
            path,
            f"cannot be verified: its digest file {sidecar.name} is unreadable ({type(err).__name__}: {err})",
            unverified=True,
        ) from err
    if sha256 == want and size == want_size:
        return sha256
    if head != want_head[: len(head)]:
        shown = head[:16]
        raise BadCheckpointError(
            path,
            f"is not the checkpoint written here: it was replaced ({size:,} bytes starting {shown!r}; "
            f"{want_size:,} bytes were written)",
        )
    if size < want_size:
        raise BadCheckpointError(path, f"is truncated: {size:,} of the {want_size:,} bytes written remain")
    if size > want_size:
        raise BadCheckpointError(
            path, f"has {size - want_size:,} bytes appended to the {want_size:,} written"
        )
    raise BadCheckpointError(
        path,
        f"has changed since it was written: same size ({size:,} bytes) but SHA-256 {sha256[:16]}..., not "
        f"the {want[:16]}... recorded (flipped bits or overwritten bytes: disk, copy or sync corruption)",
    )


def record_checkpoint_digest(path: str | os.PathLike) -> str:
    """Write the digest file of a checkpoint that has none (one copied without it, or an older one).

    This vouches for the file as it is now: use it only for a checkpoint you trust.

    Args:
        path: a checkpoint file.

    Returns:
        Its SHA-256 (hex).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BadCheckpointError: if it does not read as a checkpoint of this format (no digest is written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    _read_content(path)
    sha256, size, head = _digest_of_file(path)
    _write_digest(path, sha256, size, head)
    return sha256


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, after checking it against its digest.

    Read with ``torch.load(weights_only=True)``.

    Args:
        path: a checkpoint file.
        map_location: where tensors go (CPU by default; ``load_state_dict`` then copies them to the
            parameters' devices).

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BadCheckpointError: (a ``ValueError``) naming the file, if it does not match its digest (see
            :func:`verify_checkpoint`), cannot be read, or is not a checkpoint of a known format.
    """
    verify_checkpoint(path)
    return _read_content(Path(path), map_location)


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
        FileNotFoundError: if ``path`` does not exist, or is a run directory with no checkpoint.
        BadCheckpointError: naming the file, if it (for a run directory: its latest checkpoint) is bad
            (see :func:`verify_checkpoint`); nothing is loaded into ``model``.
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

"""The run directory: its layout, and files written so that a crash never leaves half of one.

A run lives in ``runs/<run_name>/``::

    config.json               the recipe's config (JSON literals; paths as strings)
    history.json              {"epochs": [one entry per finished epoch], "steps": [every log_every steps]}
    metrics.json              final metrics, written by the recipe with :func:`write_json_atomic`
    checkpoints/
        epoch_0001.pt ...     full training state (see ``nbhelpers.train.checkpoint``)
        latest.json           {"file": "epoch_0004.pt", "epoch": 4, "global_step": 400}

Every file is written to a temporary file in the same folder, flushed, fsynced and renamed over the
target with ``os.replace`` (atomic on POSIX and Windows), so a reader sees the old file or the new one,
never a torn one, even if Colab drops the runtime mid-write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nbhelpers.fileio import atomic_open, read_json, to_jsonable, write_json_atomic

__all__ = [
    "atomic_open",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "read_json",
    "RunNotFoundError",
    "to_jsonable",
    "write_json_atomic",
    "write_latest_pointer",
]

CHECKPOINT_DIR = "checkpoints"


class RunNotFoundError(FileNotFoundError):
    """A run (or a file of it) that loading needs is missing; loading never trains it.

    The message names what is missing and the notebook or command that makes it.

    Attributes:
        path: the missing run directory or file.
        how: what makes it (``"notebook 03_train_clip, or: python -m nbhelpers.train clip"``).
    """

    def __init__(self, path: str | os.PathLike, how: str, what: str = "run") -> None:
        self.path, self.how = Path(path), how
        super().__init__(f"{what} {self.path} does not exist; loading never trains it. Make it with {how}")


LATEST_POINTER = "latest.json"
_CHECKPOINT_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``run_dir/checkpoints/epoch_{epoch:04d}.pt``: the state after ``epoch`` finished epochs."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """All complete epoch checkpoints of a run as ``(epoch, path)``, oldest first.

    Checkpoints are written atomically, so every ``epoch_*.pt`` present is complete; temporary files
    (dot-prefixed) are ignored.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CHECKPOINT_NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of the last finished epoch that was saved, or None if there is none.

    The newest ``epoch_*.pt`` wins over ``latest.json``: a crash between writing a checkpoint and its
    pointer leaves the pointer one checkpoint behind, never ahead.
    """
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def write_latest_pointer(run_dir: str | os.PathLike, epoch: int, global_step: int) -> None:
    """Point ``checkpoints/latest.json`` at ``epoch_{epoch:04d}.pt`` (for people and downstream code)."""
    write_json_atomic(
        Path(run_dir) / CHECKPOINT_DIR / LATEST_POINTER,
        {"file": checkpoint_path(run_dir, epoch).name, "epoch": epoch, "global_step": global_step},
    )

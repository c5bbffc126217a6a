"""The run directory: its layout, and files written so that a crash never leaves half of one.

A run lives in ``runs/<run_name>/``::

    config.json               the recipe's config (JSON literals; paths as strings)
    history.json              {"epochs": [one entry per finished epoch], "steps": [every log_every steps]}
    metrics.json              final metrics, written by the recipe with :func:`write_json_atomic`
    checkpoints/
        epoch_0001.pt ...     full training state (see ``nbhelpers.train.checkpoint``)
        epoch_0001.pt.sha256.json ...   its SHA-256 and size, written before the checkpoint appears
        latest.json           {"file": "epoch_0004.pt", "epoch": 4, "global_step": 400}

Every file is written to a temporary file in the same folder, flushed, fsynced and renamed over the
target with ``os.replace`` (atomic on POSIX and Windows), so a reader sees the old file or the new one,
never a torn one, even if Colab drops the runtime mid-write. A process killed mid-write leaves its
temporary file (``.<name>.<8 random characters>.tmp``) behind; :func:`remove_stale_temporaries` removes
those when training resumes.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from nbhelpers.fileio import atomic_open, read_json, to_jsonable, write_json_atomic

__all__ = [
    "atomic_open",
    "checkpoint_path",
    "digest_path",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_json",
    "remove_stale_temporaries",
    "RunNotFoundError",
    "to_jsonable",
    "write_json_atomic",
    "write_latest_pointer",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
DIGEST_SUFFIX = ".sha256.json"


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
# What atomic_open's tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") creates: 8 characters of
# tempfile's alphabet between them.
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``run_dir/checkpoints/epoch_{epoch:04d}.pt``: the state after ``epoch`` finished epochs."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def digest_path(checkpoint: str | os.PathLike) -> Path:
    """``epoch_0003.pt.sha256.json`` next to ``epoch_0003.pt``: the digest recorded when it was written."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + DIGEST_SUFFIX)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """All epoch checkpoint files of a run as ``(epoch, path)``, oldest first.

    Checkpoints are written atomically, so no ``epoch_*.pt`` is half-written; temporary files
    (dot-prefixed) and digest files are ignored. A file damaged after it was written (truncated, bits
    flipped) is still listed: ``nbhelpers.train.checkpoint.load_checkpoint`` checks it against its digest.
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
    pointer leaves the pointer one checkpoint behind, never ahead. The file is not verified here;
    loading it (``load_checkpoint``) is.
    """
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def write_latest_pointer(run_dir: str | os.PathLike, epoch: int, global_step: int) -> None:
    """Point ``checkpoints/latest.json`` at ``epoch_{epoch:04d}.pt`` (for people and downstream code)."""
    write_json_atomic(
        Path(run_dir) / CHECKPOINT_DIR / LATEST_POINTER,
        {"file": checkpoint_path(run_dir, epoch).name, "epoch": epoch, "global_step": global_step},
    )


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, newest_epoch: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints up to ``newest_epoch``, with their digests.

    ``newest_epoch`` is the checkpoint just written, so it is always kept: it is the newest good one.
    Files of later epochs (bad ones a resume skipped; they are overwritten as those epochs finish) are
    neither kept in the count nor deleted.

    Args:
        run_dir: the run directory.
        keep_last: how many checkpoints to keep (at least 1).
        newest_epoch: the epoch of the checkpoint just written.

    Returns:
        The deleted checkpoint files, oldest first.

    Raises:
        ValueError: if ``keep_last`` is below 1.
    """
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
    candidates = [path for epoch, path in list_checkpoints(run_dir) if epoch <= newest_epoch]
    removed = candidates[:-keep_last]
    for path in removed:
        # The checkpoint first: a kill in between leaves a digest without a checkpoint, which nothing
        # reads, never a checkpoint without its digest.
        path.unlink()
        digest_path(path).unlink(missing_ok=True)
    return removed


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes cut off by a kill left in the run folder and ``checkpoints/``.

    Only regular files named as ``atomic_open`` names its temporaries (``.<name>.<8 characters>.tmp``)
    are deleted, each with a log line; nothing else, and nothing in other folders. Call it only when no
    write into the run is in progress (at the start of training).

    Args:
        run_dir: the run directory (missing: nothing to do).

    Returns:
        The deleted files.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                logger.warning(
                    "removed %s (%d bytes): the temporary file of a write that was cut off", path, size
                )
    return removed

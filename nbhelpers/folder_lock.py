"""One writer per folder: an OS lock that a second process waits on or fails on, and a dead one never holds.

A run folder (``runs/<name>/``) or a shard folder (``data/shards/<source>/``) is written by one process
at a time. The writer holds ``fcntl.flock`` on the lock file beside the folder, ``runs/.<name>.lock``
(beside, not inside: the folder's contents stay exactly the run's or the shards', and the lock can be
taken before the folder exists); the kernel releases it when the holder's file descriptor closes, which
includes the holder dying in any way (``SIGKILL``, a Colab runtime reset), so a stale lock never blocks.
The file itself stays behind and holds the last holder's pid, host, command and start time as JSON,
which is what a waiting process shows.

A second process either waits, printing a line when it starts and then every ``message_every`` seconds,
and goes on once the holder is done (``on_busy="wait"``), or stops at once with
:class:`FolderBusyError` naming the folder and the holder (``on_busy="fail"``).

Within one process the lock is re-entrant (a recipe holds its run folder, and the training loop inside
it asks again): a per-process count, released when the outermost holder lets go. ``flock`` locks are
advisory: they keep out other processes that ask, which every writer in this package does.

On a file system without ``flock`` (Windows; some network mounts refuse it) the lock is skipped with a
warning: the folder is then as unguarded as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: What a process does when another one holds the folder.
ON_BUSY = ("wait", "fail")
#: Seconds between two tries of a waiting process.
POLL_SECONDS = 0.5
#: Seconds between two "still waiting" lines.
MESSAGE_EVERY = 60.0

_HELD: dict[str, list[Any]] = {}  # resolved folder -> [file descriptor, count]
_HELD_LOCK = threading.Lock()


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock and ``on_busy="fail"``.

    Attributes:
        folder: the locked folder.
        holder: what the holder wrote into the lock file (pid, host, command, started), or ``{}``.
    """

    def __init__(self, folder: str | os.PathLike, holder: dict[str, Any], what: str = "folder") -> None:
        self.folder, self.holder = Path(folder), holder
        super().__init__(
            f"{what} {self.folder} is in use by {describe_holder(holder)}; wait for it to finish (or stop it), "
            "or set on_busy='wait' to wait here"
        )


def check_on_busy(value: str, name: str = "on_busy") -> str:
    """Returns ``value`` if it is one of :data:`ON_BUSY`.

    Raises:
        ValueError: naming ``name`` and the allowed values.
    """
    if value not in ON_BUSY:
        raise ValueError(f"{name} must be one of {ON_BUSY}, got {value!r}")
    return value


def describe_holder(holder: dict[str, Any]) -> str:
    """``process 4242 on host colab (python -m nbhelpers.train clip ..., since 2026-12-06 05:40:12 UTC)``."""
    if not holder:
        return "another process"
    text = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    details = [str(holder[k]) for k in ("command",) if holder.get(k)]
    if holder.get("started"):
        details.append(f"since {holder['started']}")
    return text + (f" ({', '.join(details)})" if details else "")


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` in its parent."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def read_holder(folder: str | os.PathLike) -> dict[str, Any]:
    """What the last holder of ``folder``'s lock wrote (``{}`` if nothing readable)."""
    try:
        holder = json.loads(lock_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class FolderLock:
    """The lock of one folder, taken without blocking; :func:`hold_folder` is the usual way in.

    Args:
        folder: the folder (its parent is created if missing; the folder itself is not).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._key = str(self.folder.resolve())
        self.held = False

    def try_acquire(self) -> bool:
        """Takes the lock if no other process holds it (re-entrant in this process); True if taken."""
        with _HELD_LOCK:
            entry = _HELD.get(self._key)
            if entry is not None:
                entry[1] += 1
                self.held = True
                return True
            path = lock_path(self.folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return False
                except OSError as err:  # a file system without flock: unguarded, and said so
                    warnings.warn(f"cannot lock {self.folder} ({err}); it is not guarded", stacklevel=3)
            _write_holder(fd)
            _HELD[self._key] = [fd, 1]
            self.held = True
            return True

    def release(self) -> None:
        """Lets go of one hold; the lock frees when the outermost hold in this process is released."""
        if not self.held:
            return
        self.held = False
        with _HELD_LOCK:
            entry = _HELD[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[self._key]
                os.close(entry[0])  # closing the descriptor releases the flock


@contextlib.contextmanager
def hold_folder(
    folder: str | os.PathLike,
    on_busy: str = "wait",
    *,
    what: str = "folder",
    message_every: float = MESSAGE_EVERY,
    poll_seconds: float = POLL_SECONDS,
    say: Callable[[str], None] | None = None,
) -> Iterator[FolderLock]:
    """Holds ``folder``'s lock for the body: waits for another holder, or fails at once.

    Args:
        folder: the folder to hold (its parent is created if missing).
        on_busy: ``"wait"`` for the other holder to finish, or ``"fail"`` at once.
        what: what the folder is, for the messages (``"run"``, ``"shard folder"``).
        message_every: seconds between two "still waiting" lines.
        poll_seconds: seconds between two tries while waiting.
        say: where waiting lines go (default: a plain line on stderr, shown in a notebook cell too).

    Raises:
        FolderBusyError: another process holds it and ``on_busy="fail"``.
        ValueError: ``on_busy`` is not one of :data:`ON_BUSY`.
    """
    check_on_busy(on_busy)
    lock = FolderLock(folder)
    wait_until_acquired(
        lock.try_acquire,
        folder,
        on_busy,
        what=what,
        message_every=message_every,
        poll_seconds=poll_seconds,
        say=say,
    )
    try:
        yield lock
    finally:
        lock.release()


def wait_until_acquired(
    try_acquire: Callable[[], bool],
    folder: str | os.PathLike,
    on_busy: str,
    *,
    what: str = "folder",
    message_every: float = MESSAGE_EVERY,
    poll_seconds: float = POLL_SECONDS,
    say: Callable[[str], None] | None = None,
) -> None:
    """Calls ``try_acquire`` until it returns True, with waiting lines; or raises at once (``"fail"``).

    Raises:
        FolderBusyError: the first try failed and ``on_busy="fail"``.
    """
    say = say or _say
    start = last = time.monotonic()
    first = True
    while not try_acquire():
        holder = read_holder(folder)
        if on_busy == "fail":
            raise FolderBusyError(folder, holder, what)
        now = time.monotonic()
        if first or now - last >= message_every:
            waited = f" ({now - start:.0f} s so far)" if not first else ""
            say(
                f"{what} {folder} is in use by {describe_holder(holder)}; waiting for it to finish{waited} "
                "(on_busy='fail' stops instead)"
            )
            first, last = False, now
        time.sleep(poll_seconds)
    if not first:
        say(f"{what} {folder} is free after {time.monotonic() - start:.0f} s; going on")


def _write_holder(fd: int) -> None:
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": started}
    data = json.dumps(holder).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = [
    "ON_BUSY",
    "FolderBusyError",
    "FolderLock",
    "check_on_busy",
    "describe_holder",
    "hold_folder",
    "lock_path",
    "read_holder",
    "wait_until_acquired",
]

"""Files written so that a crash never leaves half of one, and the JSON they hold.

Every file is written to a temporary file in the same folder, flushed, fsynced and renamed over the
target with ``os.replace`` (atomic on POSIX and Windows), so a reader sees the old file or the new one,
never a torn one, even if Colab drops the runtime mid-write. Shards, manifests, checkpoints and run
files all go through here.

A write that runs out of room (a full disk, a quota, the process's file size limit) raises
:class:`NoSpaceError` naming the file, after removing the temporary file: nothing half-written is left
under the target's name for a re-run to trust.

A file written here gets the permissions of a plain ``open``: ``0o666`` less the process umask (``0o644``
under the usual umask ``022``), not the owner-only ``0o600`` of :func:`tempfile.mkstemp`, so a shared data
folder or a Drive-mounted ``runs/`` stays readable to the collaborators the umask admits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

#: What each errno of a write that found no room means.
_NO_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file is larger than the file system or the process's file size limit (ulimit -f) allows",
    **({errno.EDQUOT: "the disk quota is used up"} if hasattr(errno, "EDQUOT") else {}),
}


class NoSpaceError(OSError):
    """A file that could not be written for lack of room: the disk is full, a quota is used up, or the file
    is over the file size limit. The incomplete temporary file was removed; the target is as it was.

    An ``OSError`` with ``errno`` (``ENOSPC``, ``EDQUOT`` or ``EFBIG``), ``filename`` (the file) and
    ``strerror`` (what happened and what to do); it pickles, so it crosses from a worker process intact.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def no_space_error(cause: BaseException, path: str | os.PathLike) -> NoSpaceError | None:
    """The :class:`NoSpaceError` for writing ``path``, if ``cause`` (or an exception it was raised from or
    while handling) is an ``OSError`` saying there was no room; else ``None``.

    The chain is searched because a library writing through a file object may turn the ``OSError`` into
    its own (``torch.save`` raises a ``RuntimeError`` while handling it).
    """
    seen: set[int] = set()
    err: BaseException | None = cause
    while err is not None and id(err) not in seen:
        if isinstance(err, NoSpaceError):
            return err
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            what = _NO_SPACE[err.errno]
            return NoSpaceError(
                err.errno,
                f"cannot write it: {what}; the incomplete file was removed (free some space, or write "
                "elsewhere, and run again)",
                os.fspath(path),
            )
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit, make it ``path`` atomically.

    The temporary file is in the same directory (``os.replace`` is atomic only within one file system)
    and starts with a dot, so checkpoint scans ignore it. If the body raises, the temporary file is
    removed and ``path`` is untouched.

    Args:
        path: the final file; its parent directory is created if missing.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Yields:
        The open temporary file.

    Raises:
        ValueError: for a mode other than ``"wb"`` or ``"w"``.
        NoSpaceError: naming ``path``, when a write finds no room (full disk, quota, file size limit).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if os.name == "posix":
            # A file system without POSIX modes (some FUSE mounts) refuses; its own modes then apply.
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = no_space_error(err, path)
        if full is not None and full is not err:
            raise full from err
        raise
    _fsync_dir(path.parent)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (e.g. ``0o022``), read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and restoring it, under a
    lock so that two threads of this module never see each other's temporary value.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def to_jsonable(obj: Any, *, _where: str = "config") -> Any:
    """A copy of ``obj`` made of JSON types: paths become strings, tuples lists, dataclasses dicts.

    Numpy and torch scalars become Python numbers (anything with ``.item()`` and no dimensions).

    Args:
        obj: nested dicts, lists, tuples, dataclasses, paths, strings, numbers, booleans and None.

    Returns:
        The converted copy.

    Raises:
        TypeError: naming the offending key path (e.g. ``config['model']['act']``) for anything else,
            or for a non-string dict key.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{_where}: keys must be strings, got {key!r}")
            out[key] = to_jsonable(value, _where=f"{_where}[{key!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, _where=f"{_where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return obj.item()
    raise TypeError(f"{_where}: {type(obj).__name__} is not JSON-serialisable ({obj!r:.80})")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (converted by :func:`to_jsonable`) as indented JSON, atomically.

    Non-finite floats are written as ``NaN``/``Infinity``, as Python's ``json`` reads them back.

    Args:
        path: the file to (over)write.
        obj: the value; see :func:`to_jsonable`.

    Raises:
        TypeError: if ``obj`` holds something that is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


_SHA256_CACHE: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), or of a folder's files (their relative paths and hashes).

    Remembered per process by (resolved path, inode, size, modification time), so a checkpoint hashed when a
    run binds is not read again when its metrics name it.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
        return digest.hexdigest()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]

"""One writer per run folder, for a whole launch: its lock (:mod:`nbhelpers.folder_lock`) across processes.

A recipe's ``run`` (decorated with :func:`locks_its_run`) takes its run folder's lock when it binds the
folder (:meth:`~nbhelpers.train.recipes.config.RecipeConfig.bind`) and holds it until it returns, so
training, the exported weights, the evaluation and ``metrics.json`` all come from one process; ``fit``
takes it too (a no-op inside a recipe: the lock is re-entrant), for code that calls the engine directly.

A second notebook or tab that runs the same config waits (``on_busy="wait"``, the default) and then
finds the run finished: ``run`` resumes at the last epoch, trains nothing and only evaluates. With
``on_busy="fail"`` it stops at once, naming the folder and the holder.

Under a multi-process launch (``accelerate launch``, ``torchrun``) only the main process holds the lock,
one per launch; every process asks together (the main one's answer is broadcast), so all wait or all
fail, and none sits in a collective long enough for it to time out.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from nbhelpers.folder_lock import FolderLock, check_on_busy, hold_folder, wait_until_acquired

F = TypeVar("F", bound=Callable[..., Any])
#: Seconds between two tries while waiting, under several processes (each is a broadcast).
MULTI_PROCESS_POLL_SECONDS = 2.0

_SCOPES: list[contextlib.ExitStack] = []


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike, on_busy: str = "wait") -> Iterator[None]:
    """Holds ``run_dir``'s lock for the body: one lock per launch, held by the main process.

    Raises:
        FolderBusyError: another process holds it and ``on_busy="fail"`` (on every process).
        ValueError: ``on_busy`` is not ``"wait"`` or ``"fail"``.
    """
    check_on_busy(on_busy)
    state = PartialState()
    if state.num_processes == 1:
        with hold_folder(run_dir, on_busy, what="run"):
            yield
        return
    lock = FolderLock(run_dir) if state.is_main_process else None

    def try_all() -> bool:
        got = [lock.try_acquire() if lock is not None else False]
        broadcast_object_list(got, from_process=0)
        return bool(got[0])

    try:
        wait_until_acquired(
            try_all,
            run_dir,
            on_busy,
            what="run",
            poll_seconds=MULTI_PROCESS_POLL_SECONDS,
            say=None if state.is_main_process else (lambda line: None),
        )
        yield
    finally:
        if lock is not None:
            lock.release()


def locks_its_run(run: F) -> F:
    """Decorates a recipe's ``run``: the run folder it binds stays locked until it returns."""

    @functools.wraps(run)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            _SCOPES.append(stack)
            try:
                return run(*args, **kwargs)
            finally:
                _SCOPES.pop()

    return locked  # type: ignore[return-value]


def hold_bound_run(run_dir: str | os.PathLike, on_busy: str = "wait") -> None:
    """Takes ``run_dir``'s lock until the innermost :func:`locks_its_run` call returns (outside one:
    nothing; ``fit`` still holds it while it trains).

    Raises:
        FolderBusyError: another process holds it and ``on_busy="fail"``.
    """
    if _SCOPES:
        _SCOPES[-1].enter_context(hold_run_dir(run_dir, on_busy))


__all__ = ["hold_bound_run", "hold_run_dir", "locks_its_run"]

"""Stops that are not kills: SIGINT and SIGTERM ask a long job to stop at its next consistent point.

Ctrl-C in a terminal, a notebook's interrupt (Colab's stop button) and ``kill`` all reach Python as a
signal. Left alone, SIGINT raises ``KeyboardInterrupt`` wherever the job happens to be and SIGTERM ends
the process with no clean-up at all. Inside :func:`stop_requests` the first such signal only records
the request (with one line saying so); the job checks :attr:`StopRequest.signum` at the points where its
folder is consistent (the training loop: after an optimiser step) and calls :meth:`StopRequest.stop`
there, which raises what the signal would have: ``KeyboardInterrupt`` for SIGINT (a notebook shows the
cell as interrupted), ``SystemExit(128 + 15)`` for SIGTERM (the exit status a shell reports for a
terminated process). A second signal stops at once, as if no handler were there.

Handlers are installed only in the main thread (Python allows no other), and the previous ones are
put back when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

#: The signals that ask for a stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop was asked for, and by which signal.

    Attributes:
        signum: the first stop signal received, or None.
        installed: whether handlers are in place (False outside the main thread: nothing is caught).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.installed = False

    def __bool__(self) -> bool:
        return self.signum is not None

    def stop(self) -> None:
        """Raises what the first signal asked for; does nothing if none came.

        Raises:
            KeyboardInterrupt: for SIGINT.
            SystemExit: ``128 + signum`` for SIGTERM.
        """
        if self.signum is not None:
            raise_for(self.signum)


def raise_for(signum: int) -> None:
    """Raises ``KeyboardInterrupt`` for SIGINT, else ``SystemExit(128 + signum)``."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


_ACTIVE: list[StopRequest] = []


@contextlib.contextmanager
def stop_requests(what: str = "the job", then: str = "", *, at_once: bool = False) -> Iterator[StopRequest]:
    """Catches SIGINT and SIGTERM in the block as stop requests instead of immediate exits.

    Nested blocks share the outer block's request (and handlers).

    Args:
        what: what stops, for the line printed at the first signal (``"training"``).
        then: what happens at the stop, for the same line (``"after the current optimiser step"``).
        at_once: raise at the first signal (SIGTERM as ``SystemExit(143)``, so that ``finally`` blocks and
            atomic writes clean up as for Ctrl-C), for a job whose every write is atomic on its own.

    Yields:
        The :class:`StopRequest` to check.
    """
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handle(signum: int, frame) -> None:
        if request.signum is not None:  # a second signal: stop at once
            raise_for(signum)
        request.signum = signum
        name = signal.Signals(signum).name
        again = "" if at_once else "; send it again to stop at once"
        print(f"{name} received: stopping {what} {then}".rstrip() + again, file=sys.stderr, flush=True)
        if at_once:
            raise_for(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handle)
    request.installed = True
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.pop()
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


__all__ = ["STOP_SIGNALS", "StopRequest", "raise_for", "stop_requests"]

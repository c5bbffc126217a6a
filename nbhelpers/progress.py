"""Progress reports that suit where the code runs: a widget for a person at a notebook, a text bar in a
terminal, plain lines where nobody watches the output live (papermill, nbval, CI logs).

========  ==============================================================================================
mode      what is shown
========  ==============================================================================================
widget    a Jupyter widget bar (``tqdm.notebook``) in the cell, with the report lines printed above it
bar       a text bar redrawn in place on stderr, the report lines printed above it
lines     no redraws: each report line, and a snapshot of the text bar every :data:`LINE_SECONDS`, go to
          the process's own stderr (in a notebook kernel: the terminal that started the kernel, e.g.
          papermill's). In a kernel the cell also gets the report lines and, at the end, the finished
          text bar (``100%|██████████| 240/240 [...]``), which is what an executed notebook keeps.
off       nothing
========  ==============================================================================================

The mode is ``auto`` unless the environment variable :data:`MODE_ENV` (``MEMELAB_PROGRESS``) names one.
``auto`` picks:

- **widget** in a Colab kernel, and in a Jupyter kernel whose running cell came from a front-end that can
  answer ``input()`` (the execute request's ``allow_stdin``): JupyterLab, Notebook, VS Code.
- **lines** in a kernel whose cell came from a front-end that cannot answer (papermill, nbconvert,
  nbclient, nbval send ``allow_stdin: false``): no one watches that cell live, papermill saves a widget
  as its first frame ("0%"), and the kernel's stderr is the terminal of the ``papermill`` command.
- **bar** outside a kernel when stderr is a terminal; **lines** when it is not (CI, a log file).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm as tqdm_auto
from tqdm.std import tqdm as tqdm_std

#: The environment variable that overrides ``auto``.
MODE_ENV = "MEMELAB_PROGRESS"
MODES = ("auto", "widget", "bar", "lines", "off")
#: In ``lines`` mode, seconds between two snapshots of the bar within a report (e.g. within an epoch).
LINE_SECONDS = 30.0


def resolve_mode(enabled: bool = True) -> str:
    """The mode progress is shown in here and now: ``widget``, ``bar``, ``lines`` or ``off``.

    Args:
        enabled: False gives ``off`` whatever the environment says.

    Raises:
        ValueError: naming ``MEMELAB_PROGRESS`` when it holds something other than one of :data:`MODES`.
    """
    if not enabled:
        return "off"
    value = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    if value != "auto":
        return value
    kernel = _kernel()
    if kernel is not None:
        if "google.colab" in sys.modules or _frontend_answers_input(kernel):
            return "widget"
        return "lines"
    return "bar" if _isatty(sys.stderr) else "lines"


class Progress:
    """A progress report over ``total`` units, shown in the mode :func:`resolve_mode` picks.

    Args:
        total: units expected (None: unknown; the bar then counts without a percentage).
        desc: the bar's description (changed with :meth:`set_description`).
        unit: the unit's name (``step``, ``shard``).
        initial: units already done (a resumed run).
        enabled: False shows nothing.
        label: in ``lines`` mode, the prefix of every line on stderr (``[label] ...``), so that the lines
            of several runs sharing one log can be told apart; empty: no prefix.
        max_redraws: at most this many redraws of a widget or text bar over ``total`` units (a widget
            redraw is a few kernel messages, and a client that reads them only when the cell ends loses
            what overflows ZMQ's buffer); None: tqdm's default.
        min_seconds: at least this long between two redraws.
        line_seconds: in ``lines`` mode, seconds between two bar snapshots (default :data:`LINE_SECONDS`).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        label: str = "",
        max_redraws: int | None = None,
        min_seconds: float = 0.1,
        line_seconds: float | None = None,
    ):
        self.mode = resolve_mode(enabled)
        self.label = label
        self.line_seconds = LINE_SECONDS if line_seconds is None else line_seconds
        self._in_kernel = _kernel() is not None
        options: dict[str, Any] = dict(total=total, initial=initial, desc=desc or None, unit=unit)
        if self.mode in ("widget", "bar") and max_redraws is not None and total:
            options["miniters"] = max(1, -(-total // max_redraws))
        if self.mode == "widget":
            self._bar = tqdm_auto(dynamic_ncols=True, mininterval=min_seconds, **options)
        elif self.mode == "bar":
            self._bar = tqdm_std(file=sys.stderr, dynamic_ncols=True, mininterval=min_seconds, **options)
        else:
            # lines (and off): tqdm only keeps count and time; it draws into a sink nobody reads.
            self._bar = tqdm_std(
                file=_Sink(), disable=self.mode == "off", mininterval=float("inf"), **options
            )
        self._last_line = time.monotonic()
        self._closed = False

    def set_description(self, desc: str) -> None:
        """Sets the text before the bar (shown at the next redraw)."""
        self._bar.set_description(desc, refresh=False)

    def set_postfix(self, **values: Any) -> None:
        """Sets the ``key=value`` pairs after the bar (shown at the next redraw)."""
        self._bar.set_postfix(refresh=False, **values)

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more units done; in ``lines`` mode, writes a snapshot if one is due."""
        self._bar.update(n)
        if self.mode == "lines" and time.monotonic() - self._last_line >= self.line_seconds:
            total = self._bar.total
            if total is None or self._bar.n < total:  # the finished bar is written by close()
                self._to_terminal(str(self._bar))

    def write(self, line: str) -> None:
        """Writes one report line (e.g. an epoch's summary) where this mode shows it."""
        if self.mode == "off":
            return
        if self.mode == "widget":
            self._bar.write(line)  # printed in the cell, above the widget
        elif self.mode == "bar":
            tqdm_std.write(line, file=sys.stderr)  # clears the bar, writes, redraws
        else:
            self._to_terminal(line)
            if self._in_kernel:
                print(line, flush=True)

    def close(self) -> None:
        """Ends the bar; in ``lines`` mode writes the finished bar. Closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "lines":
            final = str(self._bar)
            self._to_terminal(final)
            if self._in_kernel:
                print(final, flush=True)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _to_terminal(self, line: str) -> None:
        self._last_line = time.monotonic()
        text = f"[{self.label}] {line}" if self.label else line
        if not self._in_kernel:
            stream = sys.stderr
            if stream is not None:
                stream.write(text + "\n")
                stream.flush()
            return
        fd = _kernel_terminal_fd()
        if fd is None:
            return
        if os.isatty(fd):  # start a clean line: papermill's own bar may be half-drawn on this one
            text = "\r\x1b[2K" + text
        encoding = getattr(sys.__stderr__, "encoding", None) or "utf-8"
        os.write(fd, (text + "\n").encode(encoding, errors="replace"))


class _Sink:
    """A text stream that drops what is written to it (UTF-8, so that tqdm draws its block bar)."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _kernel() -> Any:
    """The running Jupyter kernel (``get_ipython().kernel``), or None outside one."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return getattr(shell, "kernel", None)


def _frontend_answers_input(kernel: Any) -> bool:
    """Whether the request being run allows ``input()``; True when it cannot be told (assume a person)."""
    try:
        parent = kernel.get_parent("shell") or {}
    except Exception:  # an ipykernel without get_parent (< 6), or a kernel of another kind
        return True
    return bool(parent.get("content", {}).get("allow_stdin", True))


def _kernel_terminal_fd() -> int | None:
    """The kernel process's own stderr, bypassing the notebook.

    ipykernel points file descriptor 2 at a pipe whose reader copies everything into the cell (and to the
    terminal); ``sys.stderr.fileno()`` is its copy of the original descriptor, the terminal alone.
    Where it does not redirect the descriptor (e.g. a kernel started under pytest), ``sys.stderr`` has no
    file descriptor and ``sys.__stderr__`` is the terminal.
    """
    for stream in (sys.stderr, sys.__stderr__):
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            continue
    return None


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False

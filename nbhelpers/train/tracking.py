"""Watching a run while it trains: the history's values sent to TensorBoard or Weights & Biases.

``fit`` logs every entry it adds to ``history.json`` through Accelerate's trackers
(:class:`accelerate.tracking.TensorBoardTracker`, :class:`accelerate.tracking.WandBTracker`), on the main
process only, under the history's own names and steps: a step entry's values as ``steps/<name>`` at its
``step``, an epoch entry's (loss, lr, grad norm, throughput, every eval metric) as ``epochs/<name>`` at its
``global_step``, so both share the optimiser-step axis. Only numbers are logged (not the ``step``,
``global_step`` or ``epoch`` counters themselves); TensorBoard keeps them as float32.

TensorBoard event files go to ``<run_dir>/logs/``; ``tensorboard --logdir runs`` (or ``%tensorboard
--logdir runs`` in a notebook) shows every run. A resumed run appends a new event file whose first event
tells TensorBoard to drop what an earlier file logged after the checkpoint it resumed from (the steps a
crash made twice), so each step is shown once.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

from nbhelpers.config import ConfigError
from nbhelpers.fileio import to_jsonable

#: What ``report_to`` may be: where a run's history is also sent while it trains.
REPORT_TO = ("tensorboard", "wandb", "none")
#: The folder of a run's TensorBoard event files (and wandb's local files), under the run directory.
LOGS_DIR = "logs"
#: The wandb project of every run unless ``WANDB_PROJECT`` names another.
WANDB_PROJECT = "memelab"
#: History entry keys that are the axis, not values: each section's step key and the epoch counter.
STEP_KEYS = {"steps": "step", "epochs": "global_step"}
_COUNTERS = frozenset({"step", "global_step", "epoch"})


def check_report_to(report_to: str) -> None:
    """Checks ``report_to`` and that its package is installed.

    Raises:
        ConfigError: for a value not in :data:`REPORT_TO`, or a tracker whose package is missing.
    """
    if report_to not in REPORT_TO:
        raise ConfigError(f"report_to: {report_to!r} is not allowed; allowed: {', '.join(REPORT_TO)}")
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(report_to)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"report_to: {report_to!r} needs the {package} package (pip install {package}); "
            "or report_to='none'"
        )


def scalars(entry: Mapping[str, Any], section: str) -> dict[str, float]:
    """The numbers of one history entry as ``{"<section>/<name>": value}`` (counters and non-numbers left out).

    >>> scalars({"step": 10, "epoch": 1, "loss": 0.5, "lr": 1e-3}, "steps")
    {'steps/loss': 0.5, 'steps/lr': 0.001}
    """
    return {
        f"{section}/{k}": v
        for k, v in entry.items()
        if k not in _COUNTERS and isinstance(v, int | float) and not isinstance(v, bool)
    }


class Tracking:
    """The trackers of one ``fit``: made once the resume point is known, closed with the run.

    A tracker starts at the first entry it is sent, so a ``fit`` with nothing left to train (a finished
    run) leaves no empty event file or wandb run behind. ``Tracking()`` tracks nothing.

    Args:
        report_to: one of :data:`REPORT_TO`.
        run_dir: the run directory; event files go to ``run_dir/logs``.
        start_step: the optimiser step the run resumes after (0 for a new run).
        main: whether this is the main process (the others track nothing).
        config: the run's config (a recipe's config or the spec), sent to wandb as the run's config.

    Raises:
        ConfigError: ``report_to`` is unknown or its package is missing (see :func:`check_report_to`).
    """

    def __init__(
        self,
        report_to: str = "none",
        run_dir: str | os.PathLike = ".",
        start_step: int = 0,
        main: bool = False,
        config: Any = None,
    ):
        check_report_to(report_to)
        self.trackers: list[GeneralTracker] = []
        self.started = True  # nothing to start
        if not main or report_to == "none":
            return
        logs = Path(run_dir) / LOGS_DIR
        if report_to == "tensorboard":
            # purge_step: TensorBoard drops what earlier files logged at this step and after (a resumed
            # run trains them again); the logging directory is logs itself (run name "" adds no level).
            kwargs = {"purge_step": start_step + 1} if start_step else {}
            tracker: GeneralTracker = TensorBoardTracker("", logs, **kwargs)
        else:
            logs.mkdir(parents=True, exist_ok=True)
            project = os.environ.get("WANDB_PROJECT", WANDB_PROJECT)
            tracker = WandBTracker(
                project, name=Path(run_dir).name, dir=str(logs), config=to_jsonable(config)
            )
        self.trackers.append(tracker)
        self.started = False

    def log(self, entry: Mapping[str, Any], section: str) -> None:
        """Sends one history entry of ``section`` (``"steps"`` or ``"epochs"``) at its step."""
        if not self.trackers:
            return
        if not self.started:
            for tracker in self.trackers:
                tracker.start()
            self.started = True
        values, step = scalars(entry, section), int(entry[STEP_KEYS[section]])
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def close(self) -> None:
        """Flushes and closes every tracker (the event files are complete afterwards)."""
        if self.started:
            for tracker in self.trackers:
                tracker.finish()
        self.trackers = []

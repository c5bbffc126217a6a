"""Finding the runs under ``runs/``: what each folder holds, its recipe, task and classes.

A run directory (``runs/<name>/``, see :mod:`nbhelpers.train.run_dir`) holds ``config.json``, its
checkpoints and the ``metrics.json`` its recipe wrote; ``metrics.json`` names the recipe that made it.
The whole evaluation of notebook 09 is described in :mod:`nbhelpers.evaluation.runs`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.models.fusion import HATEFUL_CLASSES
from nbhelpers.train.recipes import RECIPES
from nbhelpers.train.run_dir import latest_checkpoint, read_json

#: Tasks with a classifier to re-score, in the order the comparison table lists them.
CLASSIFIER_TASKS = ("7class", "multiclass", "binary")
#: The two classes of a binary (Hateful Memes) run, negative first.
BINARY_CLASSES = HATEFUL_CLASSES
#: How the comparison table's ``Classes`` column names the seven merged classes.
SEVEN_LABEL = "seven merged classes"


@dataclass
class RunRecord:
    """A folder under ``runs/`` and what it holds.

    Attributes:
        name: the folder's name.
        run_dir: the folder.
        metrics: its ``metrics.json`` (None if missing or unreadable).
        checkpoint: its last checkpoint file, if any.
        recipe: the name of the recipe that made it (``metrics["recipe"]``).
        problem: why it cannot be evaluated (None: it can).
    """

    name: str
    run_dir: Path
    metrics: dict[str, Any] | None = None
    checkpoint: Path | None = None
    recipe: str | None = None
    problem: str | None = None

    @property
    def task(self) -> str | None:
        return (self.metrics or {}).get("task")

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes its predictions range over: ``metrics.json``'s ``classes``, else (a run written
        before label sets) the seven merged classes, or *not hateful* / *hateful* for a binary run."""
        recorded = (self.metrics or {}).get("classes")
        if recorded:
            return tuple(recorded)
        return BINARY_CLASSES if self.task == "binary" else CLASSES

    @property
    def is_fusion_of_runs(self) -> bool:
        """A late-fusion run: no weights of its own, it fuses other runs' probabilities."""
        return bool((self.metrics or {}).get("fused_from"))

    @property
    def model_name(self) -> str:
        return model_name(self.metrics or {}, self.name)


def model_name(metrics: Mapping[str, Any], fallback: str = "?") -> str:
    """A readable model name from a run's ``metrics.json`` (``CLIP lora``, ``Hate-CLIPper cross``, ...):
    its recipe's ``display_name``; ``fallback`` when it names no known recipe."""
    recipe = metrics.get("recipe")
    if recipe not in RECIPES:
        return fallback
    return RECIPES[recipe].display_name(metrics)


def inspect_run(run_dir: str | os.PathLike) -> RunRecord:
    """Reads a run folder's ``metrics.json`` and finds its recipe and checkpoint; never raises.

    ``problem`` is set when the run cannot be evaluated: no or an unreadable ``metrics.json``, one that
    names no registered recipe, or (for a classifier with weights of its own) no ``config.json`` or no
    checkpoint. A checkpoint that exists but cannot be loaded is found only when the model is rebuilt
    (:func:`evaluate_run`).
    """
    run_dir = Path(run_dir)
    record = RunRecord(run_dir.name, run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        record.problem = "no metrics.json (the run did not finish, or is not a run)"
        return record
    try:
        metrics = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        record.problem = f"metrics.json is unreadable ({type(err).__name__}: {err})"
        return record
    missing = [k for k in ("recipe", "task", "split") if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        record.problem = f"metrics.json lacks {', '.join(missing)}"
        return record
    record.metrics = metrics
    if metrics["recipe"] not in RECIPES:
        record.problem = f"metrics.json names recipe {metrics['recipe']!r}; known: {', '.join(RECIPES)}"
        return record
    record.recipe = metrics["recipe"]
    record.checkpoint = latest_checkpoint(run_dir)
    if record.task in CLASSIFIER_TASKS and not record.is_fusion_of_runs:
        if not (run_dir / "config.json").is_file():
            record.problem = "no config.json: the model cannot be rebuilt"
        elif record.checkpoint is None:
            record.problem = "no checkpoint in checkpoints/"
    return record


def discover_runs(runs_dir: str | os.PathLike) -> list[RunRecord]:
    """Every run folder directly under ``runs_dir``, by name (hidden folders such as ``.features`` are
    caches, not runs). An absent ``runs_dir`` has no runs."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [inspect_run(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]

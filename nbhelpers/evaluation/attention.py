"""Notebook 08's driver: its parameters, the runs it can explain, and loading one run's explainer.

The maps themselves are :mod:`nbhelpers.evaluation.saliency`; the per-recipe explainers are
:mod:`nbhelpers.evaluation.explainers`. Loading never trains: a missing run stops with a
:class:`~nbhelpers.train.run_dir.RunNotFoundError` naming the notebook that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nbhelpers.config import BaseConfig, ConfigError, param
from nbhelpers.evaluation.explainers import EXPLAINERS, Explainer
from nbhelpers.evaluation.run_discovery import RunRecord, discover_runs, inspect_run
from nbhelpers.train.identity import check_run_name
from nbhelpers.train.recipes.registry import RECIPE_MODULES, TrainedRun, default_run_dir, get_recipe
from nbhelpers.train.run_dir import RunNotFoundError, read_json

__all__ = ["AttentionConfig", "explainable_runs", "load_explainer"]

#: What makes a missing run whose recipe is not known.
ANY_RECIPE = "the notebook of 02-07 (or python -m nbhelpers.train RECIPE ...) that makes it"


@dataclass
class AttentionConfig(BaseConfig):
    """Parameters of ``08_inspect_attention``."""

    SECTION: ClassVar[str] = "attention"

    run_name: str = param(
        "", help="the run explained first (a folder under runs_dir; empty: the preset's run of recipe)"
    )
    recipe: str = param(
        "clip_classifier", choices=tuple(RECIPE_MODULES), help="the recipe that makes run_name"
    )
    cnn_run_name: str = param(
        "", help="a run with a CNN for Grad-CAM (empty: the preset's run of cnn_recipe)"
    )
    cnn_recipe: str = param(
        "cass_mm", choices=tuple(RECIPE_MODULES), help="the recipe that makes cnn_run_name"
    )
    ssl_run_name: str = param(
        "", help="a self-supervised ViT run of 04 (empty: the DINO ViT this notebook trains if missing)"
    )
    ssl_recipe: str = param("ssl", choices=tuple(RECIPE_MODULES), help="the recipe that makes ssl_run_name")
    runs_dir: str = param("runs", help="folder holding every run")
    data_dir: str = param("data/shards", help="the shards the runs were trained on (finds the preset's runs)")
    sources: str = param("synthetic", help="the sources the runs were trained on (finds the preset's runs)")
    split: str = param("test", help="the split the samples come from")
    sample: int = param(0, min=0, help="the sample shown first")
    num_samples: int = param(32, min=1, help="samples of the split loaded for the figures and the explorer")
    layer: int = param(-1, help="the attention layer (-1: the last)")
    mass: float = param(0.6, min=0.0, help="share of the attention mass the thresholded mask keeps")
    save_dir: str = param("runs/attention_figures", help="where the figures are saved as PNG ('' : nowhere)")

    def check(self) -> None:
        if not 0 < self.mass <= 1:
            raise ConfigError(f"mass: must be in (0, 1], got {self.mass}")
        if self.sample >= self.num_samples:
            raise ConfigError(f"sample: must be < num_samples ({self.num_samples}), got {self.sample}")
        for name in ("run_name", "cnn_run_name", "ssl_run_name"):
            check_run_name(getattr(self, name), name)

    def run_dir(self, run_name: str, recipe: str, **params: Any) -> Path:
        """``runs_dir/run_name``, or with no ``run_name`` the folder of ``recipe``'s run with this preset
        (and ``params``) on ``data_dir`` (:func:`~nbhelpers.train.recipes.registry.default_run_dir`); reads
        only, never trains."""
        if run_name:
            return Path(self.runs_dir) / run_name
        # eval_splits is bookkeeping (not in the fingerprint): the split explained here is one the shards
        # have, where the preset's own list may name splits these sources lack (unseen).
        return default_run_dir(
            recipe,
            self.preset,
            self.runs_dir,
            self.data_dir,
            sources=self.sources,
            eval_splits=self.split,
            **params,
        )


def _explainer_kind(record: RunRecord) -> type[Explainer]:
    """The explainer class of a run (from :func:`~nbhelpers.evaluation.runs.inspect_run`), without loading it.

    Raises:
        TypeError: if its ``metrics.json`` is unreadable or names no known recipe, or the run has nothing
            to map (late fusion; an SSL CNN).
    """
    if record.metrics is None or record.recipe is None:
        raise TypeError(f"{record.run_dir}: {record.problem}")
    if record.recipe not in EXPLAINERS:
        raise TypeError(f"{record.run_dir}: no explainer for runs of recipe {record.recipe!r}")
    kind = EXPLAINERS[record.recipe]
    config_file = record.run_dir / "config.json"
    reason = kind.unexplainable(record.metrics, read_json(config_file) if config_file.is_file() else {})
    if reason:
        raise TypeError(f"{record.run_dir}: {reason}")
    return kind


def load_explainer(run_dir: str | Path, recipe: str = "") -> Explainer:
    """The :class:`Explainer` of a finished run of notebooks 02-07, loaded by the recipe its
    ``metrics.json`` names (``load_trained``); never trains.

    Args:
        run_dir: the run directory.
        recipe: the recipe expected to make the run: when the run is missing, the error names its
            notebook ('' : any of 02-07). A run that exists is loaded by its own metrics.json's recipe.

    Raises:
        RunNotFoundError: if the run, its ``metrics.json`` (it did not finish) or a file loading needs is
            missing; the message names the notebook that makes it.
        TypeError: for a run with nothing to map (an unreadable ``metrics.json``; late fusion; an SSL CNN; a
            non-open_clip fusion backbone).
    """
    run_dir = Path(run_dir)
    how = get_recipe(recipe).how if recipe else ANY_RECIPE
    if not run_dir.is_dir():
        raise RunNotFoundError(run_dir, how)
    if not (run_dir / "metrics.json").is_file():
        raise RunNotFoundError(run_dir / "metrics.json", how, what="file")
    record = inspect_run(run_dir)
    kind = _explainer_kind(record)
    return kind.create(get_recipe(record.recipe).load_trained(run_dir))


def explainer_of(trained: TrainedRun) -> Explainer:
    """The :class:`Explainer` of a run already loaded (``Recipe.load_trained``, e.g. by
    :func:`nbhelpers.predict.load`), by the recipe of its folder's ``metrics.json``.

    Raises:
        TypeError: for a run with nothing to map (as :func:`load_explainer`).
    """
    return _explainer_kind(inspect_run(trained.run_dir)).create(trained)


def explainable_runs(runs_dir: str | Path = "runs") -> list[str]:
    """Names of the finished runs under ``runs_dir`` that :func:`load_explainer` accepts (sorted).

    A run whose ``metrics.json`` is unreadable is left out: :func:`nbhelpers.evaluation.runs.discover_runs`
    lists it with the reason.
    """
    found = []
    for record in discover_runs(runs_dir):
        try:
            _explainer_kind(record)
        except TypeError:
            continue
        found.append(record.name)
    return found

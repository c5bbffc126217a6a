"""Every finished run under ``runs/``, rebuilt from its checkpoint and scored again with one code path.

A run directory (``runs/<name>/``, see :mod:`nbhelpers.train.run_dir`) holds ``config.json``, its
checkpoints and the ``metrics.json`` its recipe wrote; ``metrics.json`` names the recipe that made it
(:data:`nbhelpers.train.recipes.RECIPES`). :func:`evaluate_runs` finds every run, and for each classifier

1. rebuilds its model from ``config.json`` + the last checkpoint and predicts the split again, through
   its recipe's ``predict_run(run_dir, split)`` (a late-fusion run fuses its text and image runs' fresh
   probabilities; with ``repredict=False``, or for a recipe without ``predict_run``, it reads the run's
   saved ``predictions_<split>.npz`` instead, and says so); loading never trains: a run it needs that is
   missing (a fused run, the CLIP run a fusion head was trained on) is a
   :class:`~nbhelpers.train.run_dir.RunNotFoundError` naming the notebook that makes it;
2. scores the predictions with :mod:`nbhelpers.metrics.classification` (scikit-learn): top-1 to top-k
   accuracy (k clipped to the run's number of classes), per-class precision / recall / F1, the
   row-normalised confusion matrix, and for a binary run (Hateful Memes' hateful / not hateful) AUROC and
   its ROC curve, for a run over a label set of the user's own the macro one-vs-rest AUROC;
3. compares the fresh figures with the run's own ``metrics.json``: they agree exactly when the
   checkpoint is the model the recipe evaluated.

Each run's classes are the ``classes`` its ``metrics.json`` records (the seven merged classes for a
``7class`` run that predates them, *not hateful* / *hateful* for a binary one). Runs over different
classes are grouped, never compared as one: the comparison table has a ``Classes`` column and is sorted
by task, then classes, so each label set's runs are adjacent; :func:`by_classes` splits an evaluation
into one per label set, which the notebook uses for each top-k chart and confusion-matrix grid, and
:func:`topk_long` refuses a table that mixes label sets.

Self-supervised runs (``task == "ssl"``: CLIP pre-training, DINO, Barlow Twins, ...) have no
classifier: they are listed with their probe and retrieval figures from ``metrics.json``
(:func:`representation_table`). A run whose ``metrics.json`` is missing or unreadable, or whose
checkpoint is missing or cannot be loaded, is listed with the reason (:func:`skipped_table`) and skipped.

The code lives in three modules, re-exported here (notebook 09 imports from this one):
:mod:`~nbhelpers.evaluation.run_discovery` (finding runs), :mod:`~nbhelpers.evaluation.run_scoring`
(predicting and scoring them) and :mod:`~nbhelpers.evaluation.run_tables` (the comparison tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nbhelpers.config import BaseConfig, ConfigError, param
from nbhelpers.evaluation.calibration import DEFAULT_TARGETS, parse_targets
from nbhelpers.evaluation.run_discovery import (
    BINARY_CLASSES,
    CLASSIFIER_TASKS,
    SEVEN_LABEL,
    RunRecord,
    discover_runs,
    inspect_run,
    model_name,
)
from nbhelpers.evaluation.run_scoring import (
    REPREDICTED,
    SAVED,
    Evaluation,
    RunEvaluation,
    evaluate_run,
    evaluate_runs,
    load_saved_predictions,
    recipe_predictor,
    saved_figures,
    score,
)
from nbhelpers.evaluation.run_tables import (
    BOOKKEEPING_FIELDS,
    COMPARISON_CSV,
    COMPARISON_MD,
    REPRESENTATION_FIGURES,
    agreement_table,
    by_classes,
    classes_label,
    comparison_table,
    display_names,
    markdown_table,
    per_class_table,
    representation_table,
    roc_curves,
    save_comparison,
    skipped_table,
    topk_long,
)


@dataclass
class EvalRunsConfig(BaseConfig):
    """Parameters of ``09_eval_topk``."""

    SECTION: ClassVar[str] = "eval_topk"

    runs_dir: str = param("runs", help="folder holding every run (one sub-folder per run)")
    split: str = param("test", help="the split every run is scored on; empty: each run's own primary split")
    k: int = param(3, min=1, help="top-1 to top-k accuracy (k clipped to each run's number of classes)")
    repredict: bool = param(
        True, help="rebuild each model from its checkpoint and predict again (False: saved predictions)"
    )
    calibration_split: str = param(
        "val", help="the split temperature and thresholds are fitted on (Hateful Memes runs: dev_seen)"
    )
    operating_targets: str = param(
        ",".join(DEFAULT_TARGETS),
        help="thresholds fitted on calibration_split: target precisions and recalls, comma-separated (as the default)",
    )

    def check(self) -> None:
        if not self.calibration_split.strip():
            raise ConfigError("calibration_split: name a split (val, or dev_seen for Hateful Memes runs)")
        try:
            parse_targets(self.operating_targets)
        except ValueError as err:
            raise ConfigError(f"operating_targets: {str(err).removeprefix('targets: ')}") from err


__all__ = [
    "BINARY_CLASSES",
    "BOOKKEEPING_FIELDS",
    "CLASSIFIER_TASKS",
    "COMPARISON_CSV",
    "COMPARISON_MD",
    "EvalRunsConfig",
    "Evaluation",
    "REPREDICTED",
    "REPRESENTATION_FIGURES",
    "RunEvaluation",
    "RunRecord",
    "SAVED",
    "SEVEN_LABEL",
    "agreement_table",
    "by_classes",
    "classes_label",
    "comparison_table",
    "discover_runs",
    "display_names",
    "evaluate_run",
    "evaluate_runs",
    "inspect_run",
    "load_saved_predictions",
    "markdown_table",
    "model_name",
    "per_class_table",
    "recipe_predictor",
    "representation_table",
    "roc_curves",
    "save_comparison",
    "saved_figures",
    "score",
    "skipped_table",
    "topk_long",
]

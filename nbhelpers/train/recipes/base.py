"""What every recipe shares, in one place to import it from; each concern lives in its own module.

A recipe module defines a config class (a :class:`RecipeConfig` subclass whose ``SECTION`` names its
block in ``presets.json``) and ``run(config) -> RunResult``. ``run`` accepts a config object or a plain
dict of parameters (what ``python -m nbhelpers.train RECIPE key=value`` passes), so the notebooks and
``accelerate launch`` run exactly the same code.

* :mod:`~nbhelpers.train.recipes.config`: the config every recipe extends, its run folder, its shards
  (:func:`manifests`) and the engine's spec (:func:`train_spec`);
* :mod:`~nbhelpers.train.recipes.data`: training and evaluation batches (:func:`train_data`);
* :mod:`~nbhelpers.train.recipes.results`: what a run reports (:class:`RunMetrics`, ``metrics.json``);
* here: loading a run's weights and BatchNorm across processes.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from nbhelpers.train.checkpoint import load_model_weights
from nbhelpers.train.recipes.config import RecipeConfig, manifests, train_spec
from nbhelpers.train.recipes.data import (
    TrainData,
    epoch_steps,
    eval_batches,
    memory_batches,
    tensor_batches,
    train_data,
)
from nbhelpers.train.recipes.results import (
    CLASS_METRICS,
    MODALITIES,
    TASKS,
    TOP_KS,
    RunMetrics,
    RunResult,
    Timer,
    checkpoint_record,
    class_task,
    evaluate_classifier,
    headline,
    history_seconds,
    read_metrics,
    run_class_names,
    split_summary,
    topk_ks,
)
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint

__all__ = [
    "BATCH_NORMS", "CLASS_METRICS", "MODALITIES", "TASKS", "TOP_KS", "RecipeConfig", "RunMetrics",
    "RunResult", "Timer", "TrainData", "checkpoint_record", "class_task", "epoch_steps", "eval_batches",
    "evaluate_classifier", "headline", "history_seconds", "load_run_weights", "manifests", "memory_batches",
    "read_metrics", "run_class_names", "split_summary", "sync_batchnorm", "tensor_batches", "topk_ks",
    "train_data", "train_spec",
]  # fmt: skip


def load_run_weights(model: nn.Module, run_dir: str | os.PathLike, how: str) -> nn.Module:
    """Fills ``model`` with the weights of the run's last checkpoint; returns it in eval mode.

    Raises:
        RunNotFoundError: if the run has no checkpoint (``how``: what makes it).
        RuntimeError: from ``load_state_dict`` when the checkpoint does not match ``model``.
    """
    if latest_checkpoint(run_dir) is None:
        raise RunNotFoundError(run_dir, how, what="checkpoint of run")
    load_model_weights(model, run_dir)
    return model.eval()


#: The layers :func:`sync_batchnorm` converts.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def sync_batchnorm(model: nn.Module, num_processes: int, device: torch.device | str) -> nn.Module:
    """The model with its BatchNorm layers normalising over the global batch when several processes train.

    With ``num_processes > 1`` every ``BatchNorm*d`` becomes an ``nn.SyncBatchNorm`` holding the same
    parameters and running statistics (the state dict's keys and values are unchanged, so a checkpoint
    loads into either form), as DINO's and Barlow Twins' reference code do: otherwise each process
    would normalise by the statistics of its own share, and the model trained on N processes would
    not be the one trained on the global batch. ``SyncBatchNorm`` runs on GPUs only; on CPU processes
    (``accelerate launch --cpu``) the layers stay per process, with a warning.

    Args:
        model: the training module, converted in place where possible.
        num_processes: processes training together (``PartialState().num_processes``).
        device: this process's device (``PartialState().device``).

    Returns:
        The model to train (``model`` itself unless it is a bare BatchNorm layer).
    """
    if num_processes == 1 or not any(isinstance(m, BATCH_NORMS) for m in model.modules()):
        return model
    if torch.device(device).type == "cpu":
        warnings.warn(
            f"{num_processes} CPU processes: BatchNorm normalises over each process's share of the batch "
            "(SyncBatchNorm needs GPUs), so this run differs from one process on the global batch",
            stacklevel=2,
        )
        return model

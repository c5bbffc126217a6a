"""What the recipes' models share once built: a run's weights loaded back, and BatchNorm across processes.

The rest of what every recipe shares lives by concern:

* :mod:`~nbhelpers.train.recipes.config`: the config every recipe extends (:class:`RecipeConfig`), its run
  folder, its shards (:func:`~nbhelpers.train.recipes.config.manifests`) and the engine's spec;
* :mod:`~nbhelpers.train.recipes.data`: training and evaluation batches
  (:func:`~nbhelpers.train.recipes.data.train_data`);
* :mod:`~nbhelpers.train.recipes.results`: what a run reports
  (:class:`~nbhelpers.train.recipes.results.RunMetrics`, ``metrics.json``).
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from nbhelpers.train.checkpoint import load_model_weights
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint


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
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)

"""Training: the engine every recipe runs on, its checkpoints, schedule and run directory.

``fit(model, step_fn, batches, TrainSpec(...))`` trains with HF Accelerate underneath (AMP, gradient
accumulation, clipping, multi-process) and writes ``runs/<run_name>/`` (``config.json``,
``history.json``, atomic ``checkpoints/epoch_XXXX.pt``), resuming bit-exactly from the last checkpoint. A
recipe whose loss is a property of the whole batch gives ``fit`` a :class:`BatchLoss` instead of a step
function, and accumulation then keeps the whole batch in the loss (:mod:`nbhelpers.train.accumulation`).
Recipes live in ``nbhelpers.train.recipes`` and run from the command line as
``python -m nbhelpers.train RECIPE key=value ...`` (or ``accelerate launch -m nbhelpers.train ...``).
"""

from nbhelpers.train.accumulation import BatchLoss, step_for
from nbhelpers.train.checkpoint import (
    BadCheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    record_checkpoint_digest,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from nbhelpers.train.engine import (
    NonFiniteLossError,
    TrainSpec,
    enable_gradient_checkpointing,
    fit,
    param_groups,
    resolve_mixed_precision,
)
from nbhelpers.train.run_dir import (
    atomic_open,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    read_json,
    to_jsonable,
    write_json_atomic,
)
from nbhelpers.train.schedule import warmup_cosine, warmup_cosine_schedule

__all__ = [
    "BadCheckpointError",
    "BatchLoss",
    "NonFiniteLossError",
    "TrainSpec",
    "atomic_open",
    "capture_rng_state",
    "checkpoint_path",
    "enable_gradient_checkpointing",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "param_groups",
    "read_json",
    "record_checkpoint_digest",
    "resolve_mixed_precision",
    "restore_rng_state",
    "save_checkpoint",
    "step_for",
    "to_jsonable",
    "verify_checkpoint",
    "warmup_cosine",
    "warmup_cosine_schedule",
    "write_json_atomic",
]

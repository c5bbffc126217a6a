"""The training loop every recipe runs: AdamW, warmup + cosine, accumulation, AMP, checkpoints, resume.

HF Accelerate does the device placement, mixed precision (autocast + fp16 loss scaling), gradient
accumulation, clipping and multi-process gradient sync; this module adds what a notebook run needs on
top: an epoch of a fixed number of optimiser steps on an infinite stream, a run directory with history
and atomic checkpoints, bit-exact resumption, and a loud stop on a non-finite loss.

**The data contract.** ``batches(epoch)`` is called once per epoch, with epochs numbered from 1, and
must return an iterable whose content depends only on ``(seed, epoch)`` (e.g. a webdataset pipeline
whose shuffle and resampling are seeded with ``hash((seed, epoch))``), never on how many batches an
earlier call produced. That is what lets a resumed run rebuild epoch ``k + 1``'s stream without
replaying epochs ``1..k``. The engine takes exactly ``steps_per_epoch * grad_accum_steps``
micro-batches from it (and fails if it runs dry). Under ``accelerate launch`` with several processes,
each process's ``batches`` yields that process's share (split shards by
``accelerate.PartialState().process_index``).

With this contract, a run killed at any point and resumed from its last checkpoint ends with the same
weights as the uninterrupted run on CPU (tested bit-exactly); on GPU, cuDNN/cuBLAS nondeterminism
makes it close, not equal.

**Bad checkpoints.** Resuming checks each checkpoint against the digest recorded when it was written
(``nbhelpers.train.checkpoint``), newest first, and continues from the newest good one, with a warning
naming every file skipped and why; a skipped file is overwritten when its epoch finishes again. If none
is good, training restarts from epoch 0 (with a warning saying so) when every skipped file is certainly
bad (empty, truncated, replaced, changed bytes: nothing good is lost), and refuses when one may be good
but cannot be verified (no digest file), so that no trusted hours of training are overwritten.
Temporary files of writes cut off by a kill are removed first.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, is_initialized
from accelerate.utils import DistributedType, gather_object, send_to_device, set_seed
from torch import nn

from nbhelpers.progress import Progress
from nbhelpers.train.checkpoint import (
    BadCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from nbhelpers.train.identity import RunMismatchError
from nbhelpers.train.run_dir import (
    CHECKPOINT_DIR,
    checkpoint_path,
    list_checkpoints,
    prune_checkpoints,
    remove_stale_temporaries,
    to_jsonable,
    write_json_atomic,
    write_latest_pointer,
)
from nbhelpers.train.schedule import warmup_cosine_schedule

logger = logging.getLogger(__name__)

MIXED_PRECISION_MODES = ("no", "fp16", "bf16", "auto")

# The progress bar redraws at most PROGRESS_REDRAWS times a run and at most once per
# PROGRESS_MIN_SECONDS. In a notebook every redraw is ~3 widget messages on the kernel's IOPub
# socket; a client that reads them only after the cell ends (nbval) loses messages past ZMQ's
# high-water mark of 1,000, the cell's final "idle" among them, and fails the cell. Unbounded,
# 05's training cell sent 2,018 messages.
PROGRESS_REDRAWS = 50
PROGRESS_MIN_SECONDS = 0.5

# Spec fields that change the optimisation trajectory: a resume under different values would not be
# the run that was checkpointed, so it is refused.
_TRAJECTORY_FIELDS = (
    "epochs",
    "steps_per_epoch",
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "warmup_steps",
    "grad_accum_steps",
    "max_grad_norm",
    "mixed_precision",
    "seed",
)

StepFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]


class NonFiniteLossError(RuntimeError):
    """The loss (or, before a checkpoint, a weight or buffer) became NaN or infinite; training stopped.

    The run directory keeps the last good checkpoint untouched; ``fit`` with ``resume=True`` starts
    again from it (after the cause is fixed: a lower ``lr``, ``max_grad_norm``, ``bf16`` not ``fp16``).

    Attributes:
        epoch: the epoch (from 1) in which it happened.
        step: the optimiser step (from 1) in progress.
        last_checkpoint: the newest checkpoint that matches its digest when the error is raised, or
            None if there is none.
        value: the offending loss value (NaN or +-inf), or None for non-finite weights.
    """

    def __init__(
        self,
        epoch: int,
        step: int,
        last_checkpoint: Path | None,
        value: float | None = None,
        what: str | None = None,
    ):
        self.epoch, self.step, self.last_checkpoint, self.value = epoch, step, last_checkpoint, value
        what = what or f"loss is {value}"
        where = (
            f"last good checkpoint: {last_checkpoint} (kept; resume=True restarts from it)"
            if last_checkpoint is not None
            else "no good checkpoint to restart from"
        )
        super().__init__(
            f"non-finite training state at epoch {epoch}, optimiser step {step}: {what}; {where}"
        )


@dataclass
class TrainSpec:
    """How to train: optimiser, schedule, precision, run directory and checkpointing.

    Attributes:
        run_dir: the run directory (``runs/<run_name>``); created if missing.
        epochs: epochs to train; the LR schedule spans all of them.
        steps_per_epoch: optimiser steps per epoch (the data are infinite resampled streams, so an
            epoch is a step count, not a pass over a dataset).
        lr: peak learning rate, reached after warmup.
        weight_decay: AdamW decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
            Regularization", ICLR 2019) on matrices; biases, norms, 1-d parameters and logit scales get
            none.
        warmup_steps: optimiser steps of linear warmup, then cosine to 0.
        grad_accum_steps: micro-batches per optimiser step; the effective batch is this times the
            micro-batch size (times the number of processes).
        max_grad_norm: clip the global gradient 2-norm to this; None for no clipping.
        mixed_precision: ``no``, ``fp16``, ``bf16`` or ``auto`` (bf16 on a GPU with native bf16, fp16
            on a CUDA GPU without it such as a T4, ``no`` on CPU).
        checkpoint_every: save a checkpoint every this many epochs (and always after the last).
        keep_last: keep only this many newest epoch checkpoints (a ViT-B/32 checkpoint with AdamW state
            is about 1.8 GB); None keeps all.
        seed: seeds Python, numpy and torch at the start (``accelerate.utils.set_seed``).
        resume: continue from the run directory's latest checkpoint if there is one.
        gradient_checkpointing: trade compute for memory on modules that support it.
        log_every: optimiser steps between step logs (``history["steps"]``) and progress-bar updates.
        progress: show progress: a bar, or plain lines on stderr when headless (``nbhelpers.progress``;
            ``MEMELAB_PROGRESS`` picks the kind).
        betas: AdamW betas (CLIP uses ``(0.9, 0.98)``).
        eps: AdamW epsilon (CLIP uses ``1e-6``).

    Raises:
        ValueError: naming the field, for a count below 1, a negative rate or decay, a warmup longer
            than the run, or an unknown ``mixed_precision``.
    """

    run_dir: Path
    epochs: int
    steps_per_epoch: int
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int = 0
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "auto"
    checkpoint_every: int = 1
    keep_last: int | None = None
    seed: int = 0
    resume: bool = True
    gradient_checkpointing: bool = False
    log_every: int = 10
    progress: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.betas = tuple(self.betas)
        for name in ("epochs", "steps_per_epoch", "grad_accum_steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainSpec.{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainSpec.lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainSpec.weight_decay must be >= 0, got {self.weight_decay!r}")
        total = self.total_steps
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= total:
            raise ValueError(
                f"TrainSpec.warmup_steps must be an integer in [0, epochs * steps_per_epoch = {total}], "
                f"got {self.warmup_steps!r}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"TrainSpec.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ValueError(
                f"TrainSpec.mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}"
            )
        if self.keep_last is not None and (not isinstance(self.keep_last, int) or self.keep_last < 1):
            raise ValueError(f"TrainSpec.keep_last must be an integer >= 1 or None, got {self.keep_last!r}")

    @property
    def total_steps(self) -> int:
        """All optimiser steps of the run."""
        return self.epochs * self.steps_per_epoch


def resolve_mixed_precision(mode: str) -> str:
    """Turn ``auto`` into ``bf16``, ``fp16`` or ``no`` for this machine; other modes pass through.

    ``bf16`` needs native support (compute capability 8.0+: A100, L4, H100); a T4 only emulates it,
    slowly, so it gets ``fp16`` with loss scaling. CPU and other devices get ``no``.

    Raises:
        ValueError: for a mode not in ``MIXED_PRECISION_MODES``.
    """
    if mode not in MIXED_PRECISION_MODES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Switch on activation checkpointing on every outermost submodule that supports it.

    open_clip and timm models have ``set_grad_checkpointing(True)``; transformers models have
    ``gradient_checkpointing_enable()``. A wrapper (student + teacher + loss) usually has neither, so
    its submodules are searched; below a module that was switched on, the search stops (it switches
    its own children).

    Returns:
        How many modules were switched on; 0 also warns, since nothing then saves memory.
    """
    switched = 0
    stack = [model]
    while stack:
        module = stack.pop()
        if callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)
            switched += 1
        elif callable(getattr(module, "gradient_checkpointing_enable", None)):
            module.gradient_checkpointing_enable()
            switched += 1
        else:
            stack.extend(reversed(list(module.children())))
    if switched == 0:
        warnings.warn(
            f"gradient_checkpointing=True but no submodule of {type(model).__name__} has "
            "set_grad_checkpointing or gradient_checkpointing_enable: memory use is unchanged",
            stacklevel=2,
        )
    return switched


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # open_clip's rule: decay only matrices and convolution kernels; biases, norm gains, 1-d embeddings
    # and the temperature (logit scale/bias) are not regularised toward 0.
    return param.ndim < 2 or name.endswith("bias") or "logit_scale" in name or "logit_bias" in name


def param_groups(model: nn.Module, params: Iterable[Any] | None, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``[{"params": decayed, "weight_decay": wd}, {"params": rest, 0.0}]``.

    Args:
        model: the model, used to name parameters.
        params: None for every parameter with ``requires_grad``; or an iterable of parameters, or of
            ``(name, parameter)`` pairs; or a list of group dicts, returned unchanged.
        weight_decay: the decay of the decayed group.

    Returns:
        The non-empty groups, decayed first. A parameter listed twice is kept once.

    Raises:
        ValueError: if there is no parameter to optimise.
    """
    if params is not None:
        params = list(params)
        if params and all(isinstance(g, Mapping) for g in params):
            return [dict(g) for g in params]
    names = {id(p): n for n, p in model.named_parameters()}
    if params is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    else:
        named = [item if isinstance(item, tuple) else (names.get(id(item), ""), item) for item in params]
    seen: set[int] = set()
    decay, no_decay = [], []
    for name, p in named:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if _no_decay(name, p) else decay).append(p)
    if not seen:
        raise ValueError(f"no parameters to optimise in {type(model).__name__} (none has requires_grad)")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def batch_size(batch: Any) -> int | None:
    """The length of the first tensor in ``batch`` (depth-first through dicts, lists, tuples), or None."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else None
    children: Iterable[Any] = ()
    if isinstance(batch, Mapping):
        children = batch.values()
    elif isinstance(batch, Sequence) and not isinstance(batch, str | bytes):
        children = batch
    for child in children:
        size = batch_size(child)
        if size is not None:
            return size
    return None


def _make_accelerator(mixed_precision: str, grad_accum_steps: int) -> Accelerator:
    # AcceleratorState is a process-wide singleton that refuses a second mixed_precision. In a notebook
    # one kernel trains several models, so in a single process (nothing to keep in sync) the state is
    # reset; under `accelerate launch` the launcher's state is left alone and the error stands.
    # Accelerate has no public API to re-initialise that state with another precision (as of 1.15 its
    # only reset, `AcceleratorState._reset_state`, is documented as internal), hence the private call.
    if (
        is_initialized()
        and AcceleratorState().mixed_precision != mixed_precision
        and PartialState().distributed_type == DistributedType.NO
    ):
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum_steps)


def _all_finite(state: Mapping[str, torch.Tensor]) -> bool:
    floats = [t.detach() for t in state.values() if torch.is_floating_point(t)]
    return all(bool(torch.isfinite(t).all()) for t in floats)


def _spec_dict(spec: TrainSpec) -> dict[str, Any]:
    return to_jsonable(spec)


def _check_spec_unchanged(saved: Mapping[str, Any] | None, spec: TrainSpec, run_dir: Path) -> None:
    """Refuses to continue a checkpoint under another trajectory (more epochs, another lr, ...).

    Raises:
        RunMismatchError: listing the fields that differ.
    """
    if not saved:
        return
    now = _spec_dict(spec)
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in _TRAJECTORY_FIELDS if saved.get(k) != now[k]]
    if changed:
        raise RunMismatchError(run_dir, changed)


def _resume_point(run_dir: Path, warn: bool) -> tuple[int, Path, dict[str, Any]] | None:
    """The newest good checkpoint of ``run_dir`` as ``(epoch, path, state)``, or None to start at epoch 0.

    Args:
        run_dir: the run directory.
        warn: warn about skipped files (the main process only).

    Raises:
        BadCheckpointError: no checkpoint is good and one that may be good cannot be verified.
    """
    skipped: list[BadCheckpointError] = []
    for epoch, path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_checkpoint(path)
        except BadCheckpointError as err:
            skipped.append(err)
            continue
        if skipped and warn:
            warnings.warn(
                f"resuming from {path.name} (epoch {epoch}), the newest good checkpoint of "
                f"{run_dir / CHECKPOINT_DIR}; skipped {_skipped_list(skipped)}; each is overwritten when its "
                "epoch finishes again",
                stacklevel=3,
            )
        return epoch, path, state
    if not skipped:
        return None
    unverified = [err for err in skipped if err.unverified]
    if unverified:
        raise BadCheckpointError(
            unverified[0].path,
            f"{unverified[0].problem}. No checkpoint of {run_dir / CHECKPOINT_DIR} is good, and training "
            "does not restart from epoch 0 over one that may be; to restart, delete "
            f"{run_dir / CHECKPOINT_DIR}. Skipped: {_skipped_list(skipped)}",
            unverified=True,
        )
    if warn:
        warnings.warn(
            f"no good checkpoint in {run_dir / CHECKPOINT_DIR}: skipped {_skipped_list(skipped)}; none "
            "holds training that could be lost, so training restarts from epoch 0 and overwrites them as "
            "epochs finish",
            stacklevel=3,
        )
    return None


def _skipped_list(skipped: Sequence[BadCheckpointError]) -> str:
    """``epoch_0003.pt (is truncated: ...); epoch_0002.pt (...)``."""
    return "; ".join(f"{err.path.name} ({err.problem})" for err in skipped)


def _last_verified(run_dir: Path, upto: int | None) -> Path | None:
    """The newest checkpoint of epoch ``<= upto`` that matches its digest now, or None."""
    if upto is None:
        return None
    for epoch, path in reversed(list_checkpoints(run_dir)):
        if epoch > upto:
            continue
        try:
            verify_checkpoint(path)
        except (BadCheckpointError, OSError):
            continue
        return path
    return None


def fit(
    model: nn.Module,
    step_fn: StepFn,
    batches: Callable[[int], Iterable[Any]],
    spec: TrainSpec,
    *,
    params: Iterable[Any] | None = None,
    on_step_end: Callable[[nn.Module, int, int], None] | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Train ``model`` for ``spec.epochs`` epochs of ``spec.steps_per_epoch`` optimiser steps.

    Per micro-batch: ``loss, logs = step_fn(model, batch)`` under autocast, a stop if the loss is not
    finite, ``accelerator.backward``; per optimiser step (every ``grad_accum_steps`` micro-batches):
    clipping, AdamW, the warmup + cosine LR step, ``on_step_end``. Per epoch: ``evaluate``, the
    history entry, a checkpoint every ``checkpoint_every`` epochs and after the last.

    ``model`` holds everything with state (for DINO: student, teacher and the loss with its centre
    buffer), so its ``state_dict`` is the whole training state besides optimiser, scheduler, scaler and
    RNGs. See the module docstring for the contract ``batches`` must follow for exact resumption.

    Args:
        model: the module to train (moved to the accelerator's device; the same object afterwards).
        step_fn: ``(model, batch) -> (loss, logs)``: a scalar loss tensor (a mean over the batch, so
            accumulation averages it correctly) and floats to average per epoch. ``model`` is the
            accelerate-prepared module: under several processes compute through ``model(...)`` so
            DistributedDataParallel sees the forward and syncs gradients.
        batches: ``epoch -> iterable of batches`` (epoch from 1), already on the device or movable by
            ``accelerate.utils.send_to_device`` (tensors in dicts/lists/tuples; strings pass through).
        spec: the training spec.
        params: what to optimise (see :func:`param_groups`); default every ``requires_grad``
            parameter.
        on_step_end: ``(model, global_step, total_steps)`` after every optimiser step, ``global_step``
            counting from 1, with the unwrapped model (e.g. DINO's EMA teacher update).
        evaluate: ``(model, epoch) -> metrics`` after each epoch, called on every process, with the
            unwrapped model in eval mode (use ``torch.no_grad()`` inside); the metrics join that epoch's
            history entry (as ``eval_<name>`` if the name is taken).
        config: the recipe's config, written to ``run_dir/config.json`` (default: the spec).

    Returns:
        The history, as written to ``history.json``: ``{"epochs": [...], "steps": [...]}``. An epoch
        entry has ``epoch``, ``global_step``, ``loss`` (mean over micro-batches), ``lr`` (of the
        epoch's last step, first group), the means of ``logs`` (and ``grad_norm`` when clipping),
        ``seconds``, ``samples_per_s`` (when the batch has a tensor to count), then eval metrics. A
        step entry has ``step``, ``epoch``, ``loss``, ``lr`` and the ``logs``, averaged since the
        previous step entry.

    Raises:
        NonFiniteLossError: the loss, or the weights about to be checkpointed, are NaN or infinite.
        FileExistsError: ``resume=False`` and the run directory already has checkpoints.
        BadCheckpointError: no checkpoint is good and one that may be good has no digest to verify it
            (see the module docstring; bad checkpoints are otherwise skipped with a warning).
        RunMismatchError: the last checkpoint was trained under another trajectory (epochs, lr, seed,
            ...); a run is never continued under another config (nothing is written).
        RuntimeError: ``batches(epoch)`` ran out before the epoch's micro-batches.
        TypeError: ``config`` is not JSON-serialisable (raised before any training).
    """
    run_dir = spec.run_dir
    mixed_precision = resolve_mixed_precision(spec.mixed_precision)
    accelerator = _make_accelerator(mixed_precision, spec.grad_accum_steps)
    main = accelerator.is_main_process
    config_json = to_jsonable(config if config is not None else spec)  # fail fast on a bad config

    if not spec.resume and list_checkpoints(run_dir):
        raise FileExistsError(
            f"{run_dir} already has checkpoints and resume=False: choose another run directory, "
            "delete this one, or set resume=True"
        )
    found = _resume_point(run_dir, warn=main) if spec.resume else None
    ckpt_epoch, ckpt_file, ckpt = found if found is not None else (None, None, None)
    if ckpt is not None:  # checked before anything is written
        _check_spec_unchanged(ckpt.get("spec"), spec, run_dir)
    if main:
        remove_stale_temporaries(run_dir)
        write_json_atomic(run_dir / "config.json", config_json)

    set_seed(spec.seed)
    if spec.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    groups = param_groups(model, params, spec.weight_decay)
    trained = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    total_steps = spec.total_steps
    # The scheduler is stepped here once per optimiser step rather than prepared: accelerate's
    # AcceleratedScheduler steps it once per process, which would shorten the schedule under DDP.
    scheduler = warmup_cosine_schedule(optimizer, spec.warmup_steps, total_steps)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(prepared)

    history: dict[str, list[dict[str, Any]]] = {"epochs": [], "steps": []}
    start_epoch, global_step = 0, 0
    if ckpt is not None:
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if accelerator.scaler is not None and ckpt["scaler"] is not None:
            accelerator.scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step = ckpt["epoch"], ckpt["global_step"]
        history = ckpt["history"] or history
        rng = ckpt["rng"]
        if len(rng) == accelerator.num_processes:
            restore_rng_state(rng[accelerator.process_index])
        else:
            warnings.warn(
                f"{ckpt_file} holds RNG states of {len(rng)} processes, this run has "
                f"{accelerator.num_processes}: RNG not restored",
                stacklevel=2,
            )
        if main:  # history.json may have run ahead of the checkpoint (epochs without one)
            write_json_atomic(run_dir / "history.json", history)
        logger.info("resumed %s at epoch %d, step %d", ckpt_file, start_epoch, global_step)
        del ckpt
    # The epoch of the newest checkpoint this run verified or wrote; an error names the newest file up to
    # it that still matches its digest (_last_verified), never a file that does not.
    last_good = ckpt_epoch

    micro_per_epoch = spec.steps_per_epoch * spec.grad_accum_steps
    # A widget in an interactive notebook, plain lines on stderr when headless (nbhelpers.progress).
    bar = Progress(
        total_steps,
        initial=min(global_step, total_steps),
        enabled=spec.progress and main,
        unit="step",
        label=run_dir.name,
        max_redraws=PROGRESS_REDRAWS,
        min_seconds=PROGRESS_MIN_SECONDS,
    )
    try:
        for epoch in range(start_epoch + 1, spec.epochs + 1):
            bar.set_description(f"epoch {epoch}/{spec.epochs}")
            prepared.train()
            epoch_sums: dict[str, float] = defaultdict(float)
            log_sums: dict[str, float] = defaultdict(float)
            log_count, samples, lr = 0, 0, float("nan")
            start = log_start = time.perf_counter()
            log_samples = 0
            stream = iter(batches(epoch))
            for micro in range(micro_per_epoch):
                try:
                    batch = next(stream)
                except StopIteration:
                    raise RuntimeError(
                        f"batches({epoch}) yielded {micro} micro-batches; an epoch needs "
                        f"steps_per_epoch * grad_accum_steps = {micro_per_epoch} (use an infinite stream)"
                    ) from None
                size = batch_size(batch) or 0
                batch = send_to_device(batch, accelerator.device)
                with accelerator.accumulate(prepared):
                    with accelerator.autocast():
                        loss, logs = step_fn(prepared, batch)
                    loss_value = float(loss.detach())
                    finite = math.isfinite(loss_value)
                    if accelerator.num_processes > 1:  # every process must stop, or the others hang
                        bad = torch.tensor(float(not finite), device=accelerator.device)
                        finite = float(accelerator.reduce(bad, "sum")) == 0
                    if not finite:
                        raise NonFiniteLossError(
                            epoch, global_step + 1, _last_verified(run_dir, last_good), loss_value
                        )
                    accelerator.backward(loss)
                    values = {"loss": loss_value}
                    values.update((k, float(v)) for k, v in logs.items() if k != "loss")
                    if accelerator.sync_gradients and spec.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(trained, spec.max_grad_norm)
                        values["grad_norm"] = float(grad_norm)
                    optimizer.step()  # a no-op between accumulation boundaries (AcceleratedOptimizer)
                    optimizer.zero_grad(set_to_none=True)
                for k, v in values.items():
                    epoch_sums[k] += v
                    log_sums[k] += v
                epoch_sums["_n"] += 1  # grad_norm has its own count: one per optimiser step
                epoch_sums["_n_steps"] += "grad_norm" in values
                log_count += 1
                samples += size
                log_samples += size
                if not accelerator.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                scheduler.step()
                global_step += 1
                if on_step_end is not None:
                    on_step_end(raw, global_step, total_steps)
                bar.update(1)
                if global_step % spec.log_every == 0:
                    now = time.perf_counter()
                    entry = {"step": global_step, "epoch": epoch, "lr": lr}
                    entry.update(_means(log_sums, log_count, spec.grad_accum_steps))
                    history["steps"].append(entry)
                    rate = log_samples * accelerator.num_processes / max(now - log_start, 1e-9)
                    bar.set_postfix(  # shown at the next redraw
                        loss=f"{entry['loss']:.4f}", samples_s=f"{rate:.0f}" if log_samples else "?"
                    )
                    log_sums, log_count, log_samples, log_start = defaultdict(float), 0, 0, now
            seconds = time.perf_counter() - start

            record: dict[str, Any] = {"epoch": epoch, "global_step": global_step}
            n, n_steps = epoch_sums.pop("_n"), epoch_sums.pop("_n_steps")
            record["loss"] = epoch_sums.pop("loss") / n
            record["lr"] = lr
            for k, v in epoch_sums.items():
                record[k] = v / (n_steps if k == "grad_norm" else n)
            record["seconds"] = seconds
            if samples:
                record["samples_per_s"] = samples * accelerator.num_processes / seconds
            if evaluate is not None:
                raw.eval()
                eval_start = time.perf_counter()
                metrics = evaluate(raw, epoch)
                record["eval_seconds"] = time.perf_counter() - eval_start
                raw.train()
                for k, v in (metrics or {}).items():
                    record[f"eval_{k}" if k in record else k] = v
            history["epochs"].append(record)
            logger.info("epoch %d/%d: %s", epoch, spec.epochs, record)
            # One plain line per epoch: above the bar, or on stderr (and in the cell) when headless.
            bar.write(_epoch_line(record, spec.epochs))

            if epoch % spec.checkpoint_every == 0 or epoch == spec.epochs:
                state = raw.state_dict()
                if not _all_finite(state):
                    raise NonFiniteLossError(
                        epoch,
                        global_step,
                        _last_verified(run_dir, last_good),
                        what="a weight or buffer is NaN or infinite",
                    )
                accelerator.wait_for_everyone()
                # Captured after evaluate, the last thing to draw random numbers before the next epoch.
                rng = gather_object([capture_rng_state()])
                path = checkpoint_path(run_dir, epoch)
                if main:
                    save_checkpoint(
                        path,
                        model=raw,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        scaler=accelerator.scaler,
                        epoch=epoch,
                        global_step=global_step,
                        rng=rng,
                        history=history,
                        spec=_spec_dict(spec),
                    )
                    write_latest_pointer(run_dir, epoch, global_step)
                    if spec.keep_last is not None:
                        prune_checkpoints(run_dir, spec.keep_last, epoch)
                accelerator.wait_for_everyone()
                last_good = epoch
            if main:
                write_json_atomic(run_dir / "history.json", history)
    finally:
        bar.close()
        # Undo accelerate's autocast patch of model.forward and drop its references (GPU memory).
        # unwrap_model(keep_fp32_wrapper=False) is the public undo, but it leaves the original forward
        # behind as a bound method in the instance's __dict__; accelerate (as of 1.15) has no public API
        # that gives the model back its class's forward, so that leftover attribute is deleted here.
        unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
        if getattr(unwrapped.__dict__.get("forward"), "__func__", None) is type(unwrapped).forward:
            del unwrapped.forward
        accelerator.free_memory()
    return history


def _epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """``epoch 3/10 · loss 0.6340 · lr 1.2e-04 · train_acc 0.9890 · 412 samples/s · 12.3 s``."""
    skip = {"epoch", "global_step", "loss", "lr", "seconds", "samples_per_s", "eval_seconds", "grad_norm"}
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.1e}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k not in skip and isinstance(v, float)][:4]
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:.0f} samples/s")
    parts.append(f"{record['seconds']:.1f} s")
    return " · ".join(parts)


def _means(sums: Mapping[str, float], count: int, accum: int) -> dict[str, float]:
    # grad_norm is summed once per optimiser step, everything else once per micro-batch.
    steps = max(count // accum, 1)
    return {k: v / (steps if k == "grad_norm" else count) for k, v in sums.items()}

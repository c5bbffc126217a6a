"""The training loop every recipe runs: AdamW, warmup + cosine, accumulation, AMP, checkpoints, resume.

HF Accelerate does the device placement, gradient accumulation, clipping and multi-process gradient
sync; mixed precision (autocast + fp16 loss scaling) is chosen per fit (:mod:`nbhelpers.train.precision`:
Accelerate's under a multi-process launcher, the engine's own in one process, so that a notebook kernel
can train under several precisions). This module adds what a notebook run needs on top: an epoch of a fixed number of optimiser steps on an infinite stream, a run directory with history
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

**Bad checkpoints.** Resuming continues from the newest checkpoint that matches its digest, skips the
others with a warning, and refuses rather than overwrite one that may be good
(:mod:`nbhelpers.train.resume`). Temporary files of writes cut off by a kill are removed first.

**Stops, locks.** SIGINT/SIGTERM checkpoint inside the epoch (:mod:`~nbhelpers.train.stopped`); one
process trains a run folder at a time (:mod:`~nbhelpers.train.run_lock`). **Phases.** ``fit`` reads top-down: the resume point (:func:`_open_run_dir`) and restore, then per epoch
train (:meth:`_Run.train_epoch`), evaluate and record (:meth:`_Run.record_epoch`) and checkpoint
(:meth:`_Run.checkpoint`). Precision is per fit (:mod:`nbhelpers.train.precision`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device, set_seed
from torch import nn

from nbhelpers.progress import Progress
from nbhelpers.stop_signals import StopRequest, stop_requests
from nbhelpers.train.accumulation import BatchLoss, CachedBatch
from nbhelpers.train.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from nbhelpers.train.epoch_log import SKIPPED_STEPS, Sums, epoch_line
from nbhelpers.train.grad_checkpointing import enable_gradient_checkpointing
from nbhelpers.train.optimizer import param_groups
from nbhelpers.train.precision import (
    MIXED_PRECISION_MODES,
    Precision,
    make_accelerator,
    resolve_mixed_precision,
)
from nbhelpers.train.resume import check_spec_unchanged, last_verified, resume_point
from nbhelpers.train.run_dir import (
    checkpoint_path,
    list_checkpoints,
    prune_checkpoints,
    remove_stale_temporaries,
    to_jsonable,
    write_json_atomic,
    write_latest_pointer,
)
from nbhelpers.train.run_lock import hold_run_dir
from nbhelpers.train.schedule import warmup_cosine_schedule
from nbhelpers.train.spec import TrainSpec
from nbhelpers.train.stopped import remove_stopped, stop_point, stopped_path
from nbhelpers.train.tracking import Tracking

logger = logging.getLogger(__name__)

# The progress bar redraws at most PROGRESS_REDRAWS times a run and at most once per
# PROGRESS_MIN_SECONDS. In a notebook every redraw is ~3 widget messages on the kernel's IOPub
# socket; a client that reads them only after the cell ends (nbval) loses messages past ZMQ's
# high-water mark of 1,000, the cell's final "idle" among them, and fails the cell. Unbounded,
# 05's training cell sent 2,018 messages.
PROGRESS_REDRAWS = 50
PROGRESS_MIN_SECONDS = 0.5

StepFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
#: What ``fit`` trains with: a per-batch step, or a :class:`BatchLoss` that accumulation keeps whole.
Step = StepFn | BatchLoss


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


def fit(
    model: nn.Module,
    step_fn: Step,
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
            DistributedDataParallel sees the forward and syncs gradients. Or a
            :class:`~nbhelpers.train.accumulation.BatchLoss`: under accumulation its loss is the whole
            batch's (GradCache, :mod:`nbhelpers.train.accumulation`; every micro-batch logs its values).
        batches: ``epoch -> iterable of batches`` (epoch from 1), already on the device or movable by
            ``accelerate.utils.send_to_device`` (tensors in dicts/lists/tuples; strings pass through).
        spec: the training spec; each history entry also goes to its ``report_to`` (TensorBoard).
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
        epoch's last step, first group), the means of ``logs`` (and ``grad_norm`` when clipping, over the steps taken;
        ``skipped_steps``, the steps the fp16 loss scaler skipped, when there were some),
        ``seconds``, ``samples_per_s`` (when the batch has a tensor to count), then eval metrics. A
        step entry has ``step``, ``epoch``, ``loss``, ``lr`` and the ``logs``, averaged since the
        previous step entry.

    Raises:
        NonFiniteLossError: the loss, or the weights about to be checkpointed, are NaN or infinite.
        FileExistsError: ``resume=False`` and the run directory already has checkpoints.
        FolderBusyError: another process trains in ``spec.run_dir`` and ``spec.on_busy="fail"``
            (with ``"wait"``, the default, this waits for it and then resumes where it ended).
        KeyboardInterrupt: SIGINT (Ctrl-C, a notebook's stop) came; the optimiser step under way was
            finished and checkpointed (:mod:`nbhelpers.train.stopped`), and a resume continues exactly.
        SystemExit: SIGTERM came (code 143), handled as SIGINT.
        BadCheckpointError: no checkpoint is good and one that may be good has no digest to verify it
            (see the module docstring; bad checkpoints are otherwise skipped with a warning).
        RunMismatchError: the last checkpoint was trained under another trajectory (epochs, lr, seed,
            ...); a run is never continued under another config (nothing is written).
        RuntimeError: ``batches(epoch)`` ran out before the epoch's micro-batches.
        TypeError: ``config`` is not JSON-serialisable (raised before any training).
    """
    mixed_precision = resolve_mixed_precision(spec.mixed_precision)
    accelerator, precision = make_accelerator(mixed_precision, spec.grad_accum_steps)
    with (
        hold_run_dir(spec.run_dir, spec.on_busy),
        stop_requests("training", "after the current optimiser step, with a checkpoint") as stop,
    ):
        resumed = _open_run_dir(spec, config, accelerator.is_main_process)
        run = _Run(model, spec, params, accelerator, precision, stop)
        if resumed is not None:
            run.restore(*resumed)
        del resumed  # the checkpoint's tensors
        run.start_progress(config or spec)
        try:
            for epoch in range(run.start_epoch + 1, spec.epochs + 1):
                totals = run.train_epoch(epoch, step_fn, batches, on_step_end)
                if totals is None:  # stopped inside the epoch, its checkpoint written
                    break
                run.record_epoch(epoch, totals, evaluate)
                stopping = run.stop_requested()
                if epoch % spec.checkpoint_every == 0 or epoch == spec.epochs or stopping:
                    run.checkpoint(epoch)
                run.write_history()
                if stopping:
                    break
        finally:
            run.close()
        stop.stop()  # raises what the signal asked for, if one came (KeyboardInterrupt, SystemExit)
    return run.history


def _open_run_dir(
    spec: TrainSpec, config: Mapping[str, Any] | None, main: bool
) -> tuple[int, Path, dict[str, Any]] | None:
    """Phase 1, the resume point: the checkpoint to continue from, checked before anything is written.

    Writes ``config.json`` and removes temporary files of writes a kill cut off (the main process).

    Returns:
        ``(epoch, path, state)`` of the newest good checkpoint, or None to start at epoch 0.
    """
    run_dir = spec.run_dir
    config_json = to_jsonable(config if config is not None else spec)  # fail fast on a bad config
    if not spec.resume and (list_checkpoints(run_dir) or stopped_path(run_dir).is_file()):
        raise FileExistsError(
            f"{run_dir} already has checkpoints and resume=False: choose another run directory, "
            "delete this one, or set resume=True"
        )
    # stacklevel 3: the warnings about skipped checkpoints name the line that called fit.
    found = resume_point(run_dir, warn=main, stacklevel=3) if spec.resume else None
    found = stop_point(run_dir, found, warn=main, stacklevel=3) if spec.resume else None
    if found is not None:
        check_spec_unchanged(found[2].get("spec"), _spec_dict(spec), run_dir)
    if main:
        remove_stale_temporaries(run_dir)
        write_json_atomic(run_dir / "config.json", config_json)
    return found


class _Run:
    """One ``fit`` between its phases: prepared model, optimiser, schedule, precision, history, progress.

    Building it seeds, switches on gradient checkpointing and prepares model and optimiser; then
    :meth:`restore` (phase 1, when resuming), per epoch :meth:`train_epoch` (phase 2),
    :meth:`record_epoch` (phase 3, evaluate and record) and :meth:`checkpoint` (phase 4), and
    :meth:`close` at the end, whatever happened.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TrainSpec,
        params: Iterable[Any] | None,
        accelerator: Accelerator,
        precision: Precision,
        stop: StopRequest | None = None,
    ):
        self.spec, self.accelerator, self.precision = spec, accelerator, precision
        self.stop = stop if stop is not None else StopRequest()
        self.stopped: dict[str, Any] | None = None  # a stop inside an epoch that this run resumes
        self.main = accelerator.is_main_process
        set_seed(spec.seed)
        if spec.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        groups = param_groups(model, params, spec.weight_decay, spec.decay_all)
        self.trained = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
        # The scheduler is stepped here once per optimiser step rather than prepared: accelerate's
        # AcceleratedScheduler steps it once per process, which would shorten the schedule under DDP.
        self.scheduler = warmup_cosine_schedule(
            optimizer, spec.warmup_steps, spec.total_steps, spec.lr_schedule
        )
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.raw = accelerator.unwrap_model(self.model)
        self.history: dict[str, list[dict[str, Any]]] = {"epochs": [], "steps": []}
        self.start_epoch = self.global_step = 0
        # The epoch of the newest checkpoint this run verified or wrote; an error names the newest file up
        # to it that still matches its digest (last_verified), never a file that does not.
        self.last_good: int | None = None
        self.bar: Progress | None = None
        self._log = Sums(time.perf_counter())

    def restore(self, epoch: int, path: Path, ckpt: Mapping[str, Any]) -> None:
        """Phase 1, restore: weights, optimiser, schedule, scaler, history and RNGs of a checkpoint."""
        self.raw.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.precision.scaler is not None and ckpt["scaler"] is not None:
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.history = ckpt["history"] or self.history
        rng, accelerator = ckpt["rng"], self.accelerator
        if len(rng) == accelerator.num_processes:
            restore_rng_state(rng[accelerator.process_index])
            stopped = (ckpt.get("extra") or {}).get("stopped")
            if stopped is not None:  # the epoch's start RNG is restored when the epoch begins
                self.stopped = {**stopped, "rng": rng[accelerator.process_index]}
                self.stopped["epoch_rng"] = stopped["epoch_rng"][accelerator.process_index]
        else:
            warnings.warn(
                f"{path} holds RNG states of {len(rng)} processes, this run has "
                f"{accelerator.num_processes}: RNG not restored",
                stacklevel=3,
            )
        self.write_history()  # history.json may have run ahead of the checkpoint (epochs without one)
        logger.info("resumed %s at epoch %d, step %d", path, self.start_epoch, self.global_step)
        self.last_good = epoch

    def start_progress(self, config: Any) -> None:
        """A widget in an interactive notebook, plain lines on stderr when headless (nbhelpers.progress)."""
        spec, total = self.spec, self.spec.total_steps
        self.tracking = Tracking(spec.report_to, spec.run_dir, self.global_step, self.main, config)
        self.bar = Progress(
            total,
            initial=min(self.global_step, total),
            enabled=self.spec.progress and self.main,
            unit="step",
            label=self.spec.run_dir.name,
            max_redraws=PROGRESS_REDRAWS,
            min_seconds=PROGRESS_MIN_SECONDS,
        )

    def train_epoch(
        self,
        epoch: int,
        step_fn: Step,
        batches: Callable[[int], Iterable[Any]],
        on_step_end: Callable[[nn.Module, int, int], None] | None,
    ) -> Sums | None:
        """Phase 2: the epoch's ``steps_per_epoch * grad_accum_steps`` micro-batches; returns their sums."""
        self.bar.set_description(f"epoch {epoch}/{self.spec.epochs}")
        self.model.train()
        self._log = Sums(time.perf_counter())
        totals = Sums(self._log.start)
        stopped, self.stopped = self.stopped, None
        epoch_rng = stopped["epoch_rng"] if stopped else capture_rng_state()
        if stopped:
            restore_rng_state(epoch_rng)  # the stream as the stopped run built it (e.g. worker seeds)
        stream = iter(batches(epoch))
        done = 0
        if stopped:  # drop the micro-batches trained on before the stop, then continue as that run did
            done = stopped["micro"]
            for micro in range(done):
                _next_batch(stream, epoch, micro, self.spec)
            restore_rng_state(stopped["rng"])
            totals = Sums.from_state(stopped["totals"], totals.start)
            self._log = Sums.from_state(stopped["log"], totals.start)
        # A BatchLoss under accumulation takes the optimiser step's micro-batches together (GradCache).
        whole = isinstance(step_fn, BatchLoss) and self.spec.grad_accum_steps > 1
        if isinstance(step_fn, BatchLoss) and not whole:
            step_fn = step_fn.step
        group = self.spec.grad_accum_steps if whole else 1
        micro_batches = self.spec.steps_per_epoch * self.spec.grad_accum_steps
        for first in range(done, micro_batches, group):
            chunk = [_next_batch(stream, epoch, first + j, self.spec) for j in range(group)]
            sizes = [batch_size(batch) or 0 for batch in chunk]
            chunk = [send_to_device(batch, self.accelerator.device) for batch in chunk]
            if whole:
                per_micro = self._whole_batch_step(step_fn, chunk, epoch)
            else:
                per_micro = [self._micro_step(step_fn, chunk[0], epoch)]
            for values, size in zip(per_micro, sizes, strict=True):
                totals.add(values, size)
                self._log.add(values, size)
            if self.accelerator.sync_gradients:
                totals.lr = self._optimizer_step_done(epoch, on_step_end)
                if first + group < micro_batches and self.stop_requested():
                    self.checkpoint_stop(epoch, first + group, epoch_rng, totals)
                    return None
        return totals

    def stop_requested(self) -> bool:
        """Whether a stop signal came (to any process: then every process stops at the same step)."""
        requested = bool(self.stop)
        if self.accelerator.num_processes > 1:
            flag = torch.tensor(float(requested), device=self.accelerator.device)
            requested = float(self.accelerator.reduce(flag, "sum")) > 0
        return requested

    def checkpoint_stop(self, epoch: int, micro: int, epoch_rng: dict[str, Any], totals: Sums) -> None:
        """``stopped.pt`` after ``micro`` micro-batches of ``epoch`` (:mod:`nbhelpers.train.stopped`)."""
        self.write_history()
        stopped = {"epoch": epoch, "micro": micro, "epoch_rng": epoch_rng}
        self.checkpoint(epoch - 1, {**stopped, "totals": totals.state(), "log": self._log.state()})
        self.bar.write(
            f"stopped in epoch {epoch} after optimiser step {self.global_step}; resume continues here"
        )

    def _micro_step(self, step_fn: StepFn, batch: Any, epoch: int) -> dict[str, float]:
        """Forward under autocast, the finite check, backward; at an optimiser step clipping and AdamW."""
        with self.accelerator.accumulate(self.model):
            with self.precision.autocast():
                loss, logs = step_fn(self.model, batch)
            return self._backward(loss, logs, epoch)

    def _whole_batch_step(
        self, batch_loss: BatchLoss, chunk: list[Any], epoch: int
    ) -> list[dict[str, float]]:
        """One optimiser step of a :class:`BatchLoss` over the micro-batches ``chunk``, kept whole
        (:mod:`nbhelpers.train.accumulation`); one entry per micro-batch, each the whole batch's values."""
        cached = CachedBatch(batch_loss, self.model, chunk, self.precision.autocast)
        values = []
        for j in range(len(chunk)):
            with self.accelerator.accumulate(self.model):  # DDP syncs after the last micro-batch only
                loss, logs = cached.loss(j)
                # Accelerate divides by grad_accum_steps; each pass's gradient is already a part of the
                # whole batch's, so the sum of the passes must not be divided.
                values.append(self._backward(loss, logs, epoch, scale=len(chunk)))
        cached.finish()
        return values

    def _backward(
        self, loss: torch.Tensor, logs: Mapping[str, float], epoch: int, scale: int = 1
    ) -> dict[str, float]:
        """The finite check and backward; at an optimiser step clipping and AdamW."""
        accelerator, precision, optimizer = self.accelerator, self.precision, self.optimizer
        loss_value = float(loss.detach())
        self._stop_unless_finite(loss_value, epoch)
        precision.backward(loss * scale if scale != 1 else loss)
        values = {"loss": loss_value}
        values.update((k, float(v)) for k, v in logs.items() if k != "loss")
        if accelerator.sync_gradients:
            if self.spec.max_grad_norm is not None:
                values["grad_norm"] = precision.clip(self.trained, optimizer, self.spec.max_grad_norm)
            if not precision.step(optimizer):
                # fp16 overflow, step skipped: an inf/NaN norm would spoil the mean, so count the step.
                values.pop("grad_norm", None)
                values[SKIPPED_STEPS] = 1.0
        optimizer.zero_grad(set_to_none=True)  # a no-op between accumulation boundaries
        return values

    def _stop_unless_finite(self, loss_value: float, epoch: int) -> None:
        accelerator = self.accelerator
        finite = math.isfinite(loss_value)
        if accelerator.num_processes > 1:  # every process must stop, or the others hang
            bad = torch.tensor(float(not finite), device=accelerator.device)
            finite = float(accelerator.reduce(bad, "sum")) == 0
        if not finite:
            last = last_verified(self.spec.run_dir, self.last_good)
            raise NonFiniteLossError(epoch, self.global_step + 1, last, loss_value)

    def _optimizer_step_done(
        self, epoch: int, on_step_end: Callable[[nn.Module, int, int], None] | None
    ) -> float:
        """The LR step, ``on_step_end``, progress and the step log; returns the rate the step used."""
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.global_step += 1
        if on_step_end is not None:
            on_step_end(self.raw, self.global_step, self.spec.total_steps)
        self.bar.update(1)
        if self.global_step % self.spec.log_every == 0:
            now, log = time.perf_counter(), self._log
            entry = {"step": self.global_step, "epoch": epoch, "lr": lr}
            entry.update(log.means())
            self.history["steps"].append(entry)
            self.tracking.log(entry, "steps")
            rate = log.samples * self.accelerator.num_processes / max(now - log.start, 1e-9)
            self.bar.set_postfix(  # shown at the next redraw
                loss=f"{entry['loss']:.4f}", samples_s=f"{rate:.0f}" if log.samples else "?"
            )
            self._log = Sums(now)
        return lr

    def record_epoch(
        self, epoch: int, totals: Sums, evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None
    ) -> dict[str, Any]:
        """Phase 3: the epoch's history entry, with ``evaluate``'s metrics; its progress line."""
        seconds = time.perf_counter() - totals.start
        means = totals.means()
        record: dict[str, Any] = {"epoch": epoch, "global_step": self.global_step, "loss": means.pop("loss")}
        record["lr"] = totals.lr
        record.update(means)
        record["seconds"] = seconds
        if totals.samples:
            record["samples_per_s"] = totals.samples * self.accelerator.num_processes / seconds
        if evaluate is not None:
            self.raw.eval()
            eval_start = time.perf_counter()
            metrics = evaluate(self.raw, epoch)
            record["eval_seconds"] = time.perf_counter() - eval_start
            self.raw.train()
            for k, v in (metrics or {}).items():
                record[f"eval_{k}" if k in record else k] = v
        self.history["epochs"].append(record)
        self.tracking.log(record, "epochs")
        logger.info("epoch %d/%d: %s", epoch, self.spec.epochs, record)
        # One plain line per epoch: above the bar, or on stderr (and in the cell) when headless.
        self.bar.write(epoch_line(record, self.spec.epochs))
        return record

    def checkpoint(self, epoch: int, stopped: dict[str, Any] | None = None) -> None:
        """Phase 4: an atomic checkpoint of the whole training state, never of non-finite weights.

        With ``stopped``, the checkpoint of a stop inside epoch ``epoch + 1`` (``stopped.pt``).
        """
        spec, accelerator = self.spec, self.accelerator
        if not _all_finite(self.raw.state_dict()):
            last = last_verified(spec.run_dir, self.last_good)
            raise NonFiniteLossError(
                epoch, self.global_step, last, what="a weight or buffer is NaN or infinite"
            )
        accelerator.wait_for_everyone()
        # Captured after evaluate, the last thing to draw random numbers before the next epoch.
        rng = gather_object([capture_rng_state()])
        if stopped is not None:
            stopped["epoch_rng"] = gather_object([stopped["epoch_rng"]])
        if self.main:
            save_checkpoint(
                stopped_path(spec.run_dir) if stopped else checkpoint_path(spec.run_dir, epoch),
                model=self.raw,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.precision.scaler,
                epoch=epoch,
                global_step=self.global_step,
                rng=rng,
                history=self.history,
                spec=_spec_dict(spec),
                extra=None if stopped is None else {"stopped": stopped},
            )
            if stopped is None:
                write_latest_pointer(spec.run_dir, epoch, self.global_step)
                remove_stopped(spec.run_dir)  # this epoch's checkpoint is past any stop
                if spec.keep_last is not None:
                    prune_checkpoints(spec.run_dir, spec.keep_last, epoch)
        accelerator.wait_for_everyone()
        if stopped is None:
            self.last_good = epoch

    def write_history(self) -> None:
        if self.main:
            write_json_atomic(self.spec.run_dir / "history.json", self.history)

    def close(self) -> None:
        """Closes the progress bar and gives the model back as it came (GPU memory freed)."""
        if self.bar is not None:
            self.bar.close()
        self.tracking.close()  # the event files complete
        # Undo accelerate's autocast patch of model.forward (when it did AMP) and drop its references.
        # unwrap_model(keep_fp32_wrapper=False) is the public undo, but it leaves the original forward
        # behind as a bound method in the instance's __dict__; accelerate (as of 1.16) has no public API
        # that gives the model back its class's forward, so that leftover attribute is deleted here.
        unwrapped = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        if getattr(unwrapped.__dict__.get("forward"), "__func__", None) is type(unwrapped).forward:
            del unwrapped.forward
        self.accelerator.free_memory()


def _next_batch(stream: Iterator[Any], epoch: int, micro: int, spec: TrainSpec) -> Any:
    try:
        return next(stream)
    except StopIteration:
        needed = spec.steps_per_epoch * spec.grad_accum_steps
        raise RuntimeError(
            f"batches({epoch}) yielded {micro} micro-batches; an epoch needs "
            f"steps_per_epoch * grad_accum_steps = {needed} (use an infinite stream)"
        ) from None


def _all_finite(state: Mapping[str, torch.Tensor]) -> bool:
    floats = [t.detach() for t in state.values() if torch.is_floating_point(t)]
    return all(bool(torch.isfinite(t).all()) for t in floats)


def _spec_dict(spec: TrainSpec) -> dict[str, Any]:
    return to_jsonable(spec)


__all__ = [
    "MIXED_PRECISION_MODES", "NonFiniteLossError", "StepFn", "TrainSpec", "batch_size",
    "enable_gradient_checkpointing", "fit", "param_groups", "resolve_mixed_precision",
]  # fmt: skip

"""How to train: the optimiser, schedule, precision, run directory and checkpointing of a ``fit``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbhelpers.folder_lock import check_on_busy
from nbhelpers.train.precision import MIXED_PRECISION_MODES
from nbhelpers.train.schedule import LR_SCHEDULES
from nbhelpers.train.tracking import check_report_to


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
        lr_schedule: what follows the warmup: ``cosine`` (to 0 at the end) or ``constant`` (the peak rate
            held; :data:`~nbhelpers.train.schedule.LR_SCHEDULES`).
        decay_all: decay every parameter, biases and norms included (a plain ``AdamW(model.parameters())``).
        on_busy: another process trains in ``run_dir``: ``wait`` for it (then resume where it ended) or
            ``fail`` at once (:mod:`nbhelpers.train.run_lock`).
        report_to: where the history is also sent while training: ``tensorboard`` (event files in
            ``run_dir/logs``), ``wandb`` or ``none`` (:mod:`nbhelpers.train.tracking`).

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
    lr_schedule: str = "cosine"
    decay_all: bool = False
    on_busy: str = "wait"
    report_to: str = "tensorboard"

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.betas = tuple(self.betas)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainSpec.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        check_report_to(self.report_to)  # and that its package is installed, before anything is written
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
        check_on_busy(self.on_busy, "TrainSpec.on_busy")
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

"""The trainers compared (ours and open_clip_train's, each in its own process) and the trainer ceiling."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.peers.common import IMAGE_SIZE, MODEL, ROOT, PeakMemory, child_env


def ours_train_command(shards_dir: Path, runs_dir: Path, steps: int, workers: int) -> list[str]:
    """``python -m nbhelpers.train clip`` streamed, all pairs, fp32, ``steps`` steps of 64."""
    return [
        sys.executable, "-m", "nbhelpers.train", "clip", "preset=demo", f"data_dir={shards_dir}",
        f"runs_dir={runs_dir}", "sources=synthetic", f"model={MODEL}", f"image_size={IMAGE_SIZE}",
        "in_memory=false", "valid_only=false", f"num_workers={workers}", "batch_size=64", "epochs=1",
        f"steps_per_epoch={steps}", "mixed_precision=no", "max_grad_norm=1.0", "lr=1e-3", "warmup_steps=2",
        "eval_splits=val", "progress=false", "seed=0",
    ]  # fmt: skip


def open_clip_train_command(manifest: dict[str, Any], logs: Path, steps: int, workers: int) -> list[str]:
    """``open_clip_train.main`` (through our entry point), the same model, batch, precision and steps."""
    from nbhelpers.train.open_clip_cli import brace_urls

    return [
        sys.executable, "-m", "nbhelpers.train.open_clip_cli", "--dataset-type", "webdataset",
        "--train-data", brace_urls(manifest, "train"), "--train-num-samples", str(steps * 64),
        "--dataset-resampled", "--model", MODEL, "--batch-size", "64", "--epochs", "1",
        "--workers", str(workers), "--device", "cpu", "--precision", "fp32", "--grad-clip-norm", "1.0",
        "--lr", "1e-3", "--warmup", "2", "--report-to", "", "--logs", str(logs), "--name", "bench",
        "--seed", "0", "--save-frequency", "1", "--log-every-n-steps", "1000",
    ]  # fmt: skip


def bare_loop_command(steps: int) -> list[str]:
    """The trainer ceiling (:mod:`benchmarks.peers.bare_loop`), ``steps`` steps of 64."""
    return [sys.executable, "-m", "benchmarks.peers.bare_loop", str(steps), "64"]


def step_times(command: Sequence[str], out: Path, stop_after: int | None = None) -> tuple[list[float], float]:
    """Runs ``command`` (``python -m MODULE ARGS...``, from the repository root) under :func:`record_steps`;
    returns the time (``perf_counter``) at the end of each of its optimiser steps, and its peak RSS (MB,
    with its DataLoader workers'). With ``stop_after``, the run is cut short after that many steps
    (what comes after the timed steps, an evaluation or a checkpoint, is not waited for).

    Raises:
        RuntimeError: the command failed (its output's tail in the message).
    """
    stop = ["--stop-after", str(stop_after)] if stop_after else []
    wrapped = [sys.executable, "-m", "benchmarks.peers", "steps", *stop, str(out), *command[2:]]
    done = subprocess.run(wrapped, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{command[2:4]} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    recorded = json.loads(out.read_text())
    return recorded["times"], recorded["rss_mb"]


def steady_rate(times: Sequence[float], warmup: int, batch: int = 64) -> float:
    """Samples per second between the end of step ``warmup`` and the end of the last step."""
    return (len(times) - warmup) * batch / (times[-1] - times[warmup - 1])


class StepsDone(BaseException):
    """Raised by :func:`record_steps`'s hook after the last step wanted: a ``BaseException``, so that no
    trainer's ``except Exception`` takes it for an error of its own; ``finally`` blocks still run."""


def record_steps(argv: Sequence[str]) -> int:
    """``steps [--stop-after N] OUT MODULE ARGS...``: runs ``python -m MODULE ARGS...`` in this process and
    writes to OUT the time at the end of every optimiser step (torch's global step hook, whoever's
    optimiser it is) and the peak RSS of the process and its workers (``{"times": [...], "rss_mb": ...}``).
    With ``--stop-after N`` the run is ended (:class:`StepsDone`) right after its N-th step."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    argv = list(argv)
    stop_after = int(argv[1]) if argv[:1] == ["--stop-after"] else None
    out, module, *args = argv[2:] if stop_after else argv
    times: list[float] = []

    def on_step(*_: Any) -> None:
        times.append(time.perf_counter())
        if stop_after is not None and len(times) >= stop_after:
            raise StepsDone

    hook = register_optimizer_step_post_hook(on_step)
    argv_before = sys.argv
    sys.argv = [module, *args]
    try:
        with PeakMemory(interval=0.25) as memory:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except StepsDone:
        pass
    except SystemExit as err:
        if err.code not in (0, None):
            raise
    finally:
        hook.remove()
        sys.argv = argv_before
    Path(out).write_text(json.dumps({"times": times, "rss_mb": memory.peak_mb}))
    return 0

"""What an epoch logs: the sums of its micro-batches' values, and its one line of progress."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

#: History key: the optimiser steps the fp16 loss scaler skipped (overflow), in entries that had some.
SKIPPED_STEPS = "skipped_steps"


class Sums:
    """Sums of the values of the micro-batches since ``start``; their means are per micro-batch, but
    ``grad_norm``'s per optimiser step that reported one (a skipped fp16 step does not) and ``skipped_steps``
    a count."""

    def __init__(self, start: float):
        self.start = start
        self.sums: dict[str, float] = defaultdict(float)
        self.micro = 0  # micro-batches
        self.steps = 0  # optimiser steps that reported a grad_norm
        self.samples = 0
        self.lr = float("nan")  # the rate of the last optimiser step

    def add(self, values: Mapping[str, float], size: int) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.micro += 1
        self.steps += "grad_norm" in values
        self.samples += size

    def means(self) -> dict[str, float]:
        return {k: v if k == SKIPPED_STEPS else v / (self.steps if k == "grad_norm" else self.micro)
                for k, v in self.sums.items()}  # fmt: skip

    def state(self) -> dict[str, Any]:
        """The sums as JSON-like values (a checkpoint of a stop mid-epoch holds them)."""
        return {
            "sums": dict(self.sums),
            "micro": self.micro,
            "steps": self.steps,
            "samples": self.samples,
            "lr": self.lr,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], start: float) -> Sums:
        """The sums of :meth:`state`, timed from ``start`` (time spent before a stop is not counted)."""
        sums = cls(start)
        sums.sums.update(state["sums"])
        sums.micro, sums.steps, sums.samples = state["micro"], state["steps"], state["samples"]
        sums.lr = state["lr"]
        return sums


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """``epoch 3/10 · loss 0.6340 · lr 1.2e-04 · train_acc 0.9890 · 412 samples/s · 12.3 s``."""
    skip = {"epoch", "global_step", "loss", "lr", "seconds", "samples_per_s", "eval_seconds", "grad_norm"}
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.1e}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k not in skip and isinstance(v, float)][:4]
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:.0f} samples/s")
    parts.append(f"{record['seconds']:.1f} s")
    return " · ".join(parts)

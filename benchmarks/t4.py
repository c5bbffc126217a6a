"""Will each t4 and reproduction preset fit a 15 GB T4, and how long will it take there?

    python -m benchmarks.t4                      # estimate on this machine (CPU), all presets
    python -m benchmarks.t4 --only fusion:hateclipper_vitl14_cross
    python -m benchmarks.t4 --device cuda [--memory-cap-gib 15]   # measure on a GPU as well

Writes ``benchmarks/results/t4.jsonl``: one object per preset of :data:`benchmarks.real_size.PRESETS`
with ``recipe, preset, micro_batch, peak_gib, t4_samples_per_s, epoch_minutes, loader_samples_per_s,
bound`` and the parts of the estimate.

**Memory.** Each preset runs two optimiser steps through its recipe's own ``run()`` at two small
micro-batches (``b1``, ``b2``), with its AMP dtype (bf16 on a CPU; the presets' ``auto`` is fp16 on a T4,
the same bytes), measured by :func:`benchmarks.t4_measure.measure`. What a step creates grows linearly
with the micro-batch (activations) on top of what does not (gradients, the optimiser's state), so the two
measurements give the bytes at the preset's real micro-batch ``B``::

    step(B) = step(b2) + (step(b2) - step(b1)) / (b2 - b1) * (B - b2)
    peak(B) = weights + max(step(B), optimiser step) + allowance

The parts reported: ``weights`` (parameters and buffers as the GPU holds them: float32, BLIP-2 float16
as its backbone loads it on a GPU, counted at full size on the meta device), ``gradients`` (4 bytes per
trainable parameter), ``optimiser`` (AdamW's two float32 moments), ``activations`` (the rest of
``step(B)``: saved tensors, checkpoint recomputation, autocast's weight copies, the step's batches on
the device: all ``grad_accum_steps`` of them under whole-batch accumulation) and
``allowance``: :data:`CONTEXT_GIB` for the CUDA context and cuBLAS workspace plus :data:`SLACK` of the
rest for the caching allocator's rounding and fragmentation. Fusion presets train a head on cached
features, so their peak is the larger of the feature extraction (frozen backbone, ``feature_batch_size``
at a time) and the head's step. ``max_micro_batch`` is the largest ``B`` whose peak fits
:data:`BUDGET_GIB`.

**FLOPs.** ``torch.utils.flop_counter``'s formulas over the same steps: forward, backward and checkpoint recomputation, per
sample of ``b2``; a preset that trains several models (unimodal: BERT and ResNet-152) adds them: one
sample through an epoch of each. Fusion presets report their head's FLOPs and, apart, the backbone's
per extracted sample (``extract_flops_per_sample``, once per split).

**On a GPU** (``--device cuda``) each preset also runs at its real micro-batch in fp16 (what a T4 runs)
under ``torch.cuda.set_per_process_memory_fraction`` (``--memory-cap-gib``): ``measured_peak_gib``
(``torch.cuda.max_memory_allocated`` over the run's steps), ``measured_samples_per_s`` over the steps
after the first two, ``measured_loss_finite`` and ``measured_grad_scale`` (the GradScaler's scale after
the steps), with ``device`` naming the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.real_size import (
    PRESETS,
    blip2_extraction_flop_scale,
    full_parameters,
    hf_config,
    hf_id,
    is_t4,
    preset_micro_batch,
)
from benchmarks.t4_figures import data_bound, epoch_minutes, t4_samples_per_s
from benchmarks.t4_loader import loader_samples_per_s
from benchmarks.t4_measure import GiB, measure

RESULTS = Path(__file__).resolve().parent / "results" / "t4.jsonl"
#: What a preset may use of a T4's 15 GiB.
BUDGET_GIB = 14.0
#: The CUDA context and cuBLAS workspace (outside PyTorch's allocator, or beside it), GiB.
CONTEXT_GIB = 0.5
#: The caching allocator's rounding and fragmentation, as a share of what the tensors need.
SLACK = 0.10
#: The two micro-batches measured on the CPU.
SMALL_BATCHES = (2, 4)
#: Samples in an epoch of each preset's data: Hateful Memes' train split (8,500), CIFAR-10's (50,000), the
#: t4 synthetic benchmark's (prepare's t4 preset, 40,000) and clip_classifier's 16 steps of 8,192.
EPOCH_SAMPLES = {"fusion": 8500, "unimodal": 8500, "ssl": 50000, "clip": 40000, "cass_mm": 40000}


def epoch_samples(recipe: str, preset: str) -> int:
    """Samples of one epoch of ``preset``'s data (see :data:`EPOCH_SAMPLES`)."""
    if recipe == "clip_classifier":
        from nbhelpers.config import preset_values

        values = preset_values(preset, recipe)
        return values["steps_per_epoch"] * values["batch_size"]
    return EPOCH_SAMPLES[recipe]


def _gib(n: float) -> float:
    return round(n / GiB, 3)


def _line(small: dict, large: dict, key: str, at: float) -> float:
    """``key`` at micro-batch ``at``, on the line through the two measurements."""
    b1, b2 = small["micro_batch"], large["micro_batch"]
    slope = max(large[key] - small[key], 0) / (b2 - b1)
    return large[key] + slope * (at - b2)


def _with_batch(entries: list[dict], micro_batch: int) -> list[dict]:
    return [{**e, "micro_batch": micro_batch} for e in entries]


def fit_parts(small: dict, large: dict, micro_batch: int, accum: int = 1) -> dict[str, float]:
    """Bytes of one fit's step at ``micro_batch`` (see the module docstring), from two measurements, with
    the step's batches on the device: one micro-batch, or all ``accum`` of them under GradCache."""
    step = _line(small, large, "step_peak", micro_batch)
    if "batch_bytes" in large:
        per_sample = large["batch_bytes"] / large["micro_batch"]
        step += per_sample * micro_batch * (accum if large["batches_held"] > 1 else 1)
    gradients, optimiser = 4 * large["trainable"], 8 * large["trainable"]
    return {
        "weights": large["weights"],
        "gradients": gradients,
        "optimiser": optimiser,
        "activations": max(step - gradients - optimiser, 0.0),
        "transient": max(step, large["optimiser_peak"]),
    }


def with_allowance(parts: dict[str, float]) -> dict[str, float]:
    """``parts`` (bytes) plus the allowance, and their total as ``peak``."""
    tensors = parts["weights"] + parts["transient"]
    allowance = CONTEXT_GIB * GiB + SLACK * tensors
    return {**parts, "allowance": allowance, "peak": tensors + allowance}


def estimate(
    recipe: str, preset: str, runs: tuple[dict, dict], micro_batch: int, extract_batch: int | None = None
) -> dict[str, Any]:
    """The peak of ``preset``'s step at ``micro_batch`` from its two measurements (bytes), its parts, and
    which stage sets it (``step`` of a fit, or ``extraction`` of features ``extract_batch`` at a time,
    default ``micro_batch``)."""
    small, large = runs
    extract_batch = extract_batch or micro_batch
    accum = preset_micro_batch(recipe, preset)[1]
    candidates = []
    for a, b in zip(
        _with_batch(small["fits"], small["micro_batch"]), _with_batch(large["fits"], large["micro_batch"])
    ):
        candidates.append(("step", with_allowance(fit_parts(a, b, micro_batch, accum))))
    for a, b in zip(
        _with_batch(small["extractions"], small["micro_batch"]),
        _with_batch(large["extractions"], large["micro_batch"]),
    ):
        weights = b["weights"]
        hub = hf_id(recipe, preset)
        if hub and "blip2" in hub:  # loaded in float16 on a GPU, at its full depth
            weights = 2 * full_parameters(hub)
        transient = _line(a, b, "peak", extract_batch)
        parts = {"weights": weights, "gradients": 0, "optimiser": 0, "activations": transient}
        candidates.append(("extraction", with_allowance({**parts, "transient": transient})))
    stage, parts = max(candidates, key=lambda c: c[1]["peak"])
    return {"stage": stage, **parts}


def largest_micro_batch(
    recipe: str,
    preset: str,
    runs: tuple[dict, dict],
    extract_batch: int | None = None,
    budget_gib: float = BUDGET_GIB,
) -> int:
    """The largest micro-batch whose estimated peak is within ``budget_gib`` (0: not even one sample), with
    features extracted ``extract_batch`` at a time (fusion; None: the micro-batch)."""

    def fits(batch: int) -> bool:
        return estimate(recipe, preset, runs, batch, extract_batch)["peak"] <= budget_gib * GiB

    lo, hi = 0, 1
    while hi < 1 << 16 and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def flops_per_sample(run: dict) -> tuple[float, float | None]:
    """FLOPs per training sample (every fit's summed) and per extracted sample (fusion; else None)."""
    train = sum(f["flops"] / f["samples"] for f in run["fits"] if f["samples"])
    extract = [e["flops"] / e["samples"] for e in run["extractions"] if e["samples"]]
    return train, (extract[0] if extract else None)


def t4_speed(flops: float, precision: str) -> float:
    """Estimated T4 samples/s at ``flops`` per sample (:func:`benchmarks.t4_figures.t4_samples_per_s`)."""
    return t4_samples_per_s(flops, precision)


def t4_epoch_minutes(samples: int, samples_per_s: float | None) -> float | None:
    """Minutes of an epoch of ``samples`` on a T4 (:func:`benchmarks.t4_figures.epoch_minutes`)."""
    return None if samples_per_s is None else epoch_minutes(samples, samples_per_s)


def loader_speed(recipe: str, preset: str, seconds: float = 10.0) -> float:
    """The preset's data pipeline, samples/s on 2 cores (:func:`benchmarks.t4_loader.loader_samples_per_s`);
    an ``hf:`` backbone's image size comes from its published config (not readable offline)."""
    hub = hf_id(recipe, preset)
    size = None
    if recipe == "fusion" and hub:
        size = hf_config(hub, reduced=True).vision_config.image_size
    return loader_samples_per_s(recipe, preset, seconds, image_size=size)


def bound(gpu_samples_per_s: float | None, loader_samples_per_s: float | None) -> str | None:
    """``"data"`` when a T4 would wait on the loader, ``"gpu"`` when not (:func:`benchmarks.t4_figures.data_bound`)."""
    if gpu_samples_per_s is None or loader_samples_per_s is None:
        return None
    return data_bound(loader_samples_per_s, gpu_samples_per_s)


def preset_row(
    recipe: str, preset: str, root: Path, batches: tuple[int, int] = SMALL_BATCHES
) -> dict[str, Any]:
    """The estimate of one preset (the object written to ``t4.jsonl``)."""

    start = time.perf_counter()
    runs = tuple(measure(recipe, preset, root, b) for b in batches)
    row = estimate_row(recipe, preset, runs)
    return {**row, "estimate_seconds": round(time.perf_counter() - start, 1)}


def estimate_row(recipe: str, preset: str, runs: tuple[dict, dict]) -> dict[str, Any]:
    """The row of ``preset`` from its two measurements (kept in the row as ``measurements``, so that
    ``--reestimate`` recomputes every row without measuring again)."""
    from nbhelpers.config import preset_values

    micro, accum = preset_micro_batch(recipe, preset)
    extract_batch = preset_values(preset, recipe).get("feature_batch_size") if recipe == "fusion" else None
    parts = estimate(recipe, preset, runs, micro, extract_batch)
    train_flops, extract_flops = flops_per_sample(runs[1])
    hub = hf_id(recipe, preset)
    # BLIP-2 runs here at reduced depth: its extraction FLOPs are scaled to the full depth.
    depth_scale = blip2_extraction_flop_scale() if hub and "blip2" in hub and extract_flops else None
    if depth_scale:
        extract_flops *= depth_scale
    precision = "fp16" if preset_values(preset, recipe).get("mixed_precision", "auto") == "auto" else "fp32"
    speed = t4_speed(train_flops, precision)
    loader = loader_speed(recipe, preset)
    samples = epoch_samples(recipe, preset)
    params = sum(f["parameters"] for f in runs[1]["fits"])
    if runs[1]["extractions"]:
        hub = hf_id(recipe, preset)
        params += full_parameters(hub) if hub and "blip2" in hub else runs[1]["extractions"][0]["parameters"]
    return {
        "recipe": recipe,
        "preset": preset,
        "t4": is_t4(recipe, preset),
        "micro_batch": micro,
        "grad_accum_steps": accum,
        "effective_batch": micro * accum,
        "precision": precision,
        "peak_gib": _gib(parts["peak"]),
        "peak_stage": parts["stage"],
        "memory_gib": {
            k: _gib(parts[k]) for k in ("weights", "gradients", "optimiser", "activations", "allowance")
        },
        "max_micro_batch": largest_micro_batch(recipe, preset, runs, extract_batch),
        "extract_batch": extract_batch,
        "parameters": params,
        "trainable_parameters": sum(f["trainable"] for f in runs[1]["fits"]),
        "flops_per_sample": train_flops,
        "extract_flops_per_sample": extract_flops,
        "extract_flops_depth_scale": depth_scale,
        "t4_samples_per_s": speed,
        "epoch_samples": samples,
        "epoch_minutes": t4_epoch_minutes(samples, speed),
        # Fusion: the frozen backbone's features of the training split, once, before the first epoch.
        "extract_minutes": t4_epoch_minutes(samples, t4_speed(extract_flops, precision))
        if extract_flops
        else None,
        "loader_samples_per_s": loader,
        # Fusion's loader feeds the one-off extraction (its epochs train on features in memory).
        "bound": bound(t4_speed(extract_flops, precision) if extract_flops else speed, loader),
        "measurements": list(runs),
    }


def write_rows(rows: list[dict], path: Path = RESULTS) -> None:
    """Replace ``path``'s rows of the same (recipe, preset) by ``rows``, keeping the others, in PRESETS order."""
    from nbhelpers.fileio import atomic_open

    kept = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                kept[(row["recipe"], row["preset"])] = row
    for row in rows:
        kept[(row["recipe"], row["preset"])] = {**kept.get((row["recipe"], row["preset"]), {}), **row}
    order = {key: i for i, key in enumerate(PRESETS)}
    lines = [json.dumps(kept[k]) for k in sorted(kept, key=lambda k: order.get(k, math.inf))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.t4", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", default=[], help="recipe:preset (repeatable); default all")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="cuda: measure (estimates kept)"
    )
    parser.add_argument("--memory-cap-gib", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--reestimate", action="store_true", help="recompute the rows from their measurements"
    )
    args = parser.parse_args(argv)
    chosen = [tuple(o.split(":", 1)) for o in args.only] or list(PRESETS)
    if args.reestimate:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        write_rows([estimate_row(r["recipe"], r["preset"], tuple(r["measurements"])) for r in rows], args.out)
        return
    for recipe, preset in chosen:
        with tempfile.TemporaryDirectory(prefix="t4-") as tmp:
            if args.device == "cuda":  # beside the estimates already in the file (a CPU's work)
                from benchmarks.t4_gpu import measure_on_gpu

                row = {"recipe": recipe, "preset": preset}
                row.update(measure_on_gpu(recipe, preset, Path(tmp), args.memory_cap_gib))
            else:
                row = preset_row(recipe, preset, Path(tmp))
        write_rows([row], args.out)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

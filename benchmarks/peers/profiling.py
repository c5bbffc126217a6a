"""Where the time goes: a streamed training step of ours by stage (``profile``), and each loader's
hottest functions (``profile-loaders``), to see what makes a loader slow."""

from __future__ import annotations

import argparse
import cProfile
import pstats
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.peers import loaders
from benchmarks.peers.common import FULL, MODEL, ROOT, ensure_folder, ensure_shards, machine

#: What a stack sample is counted as: the innermost frame running one of these (file suffix, function).
STAGES = (
    ("tar parsing", "nbhelpers/data/tar_samples.py", "iter_groups"),
    ("JPEG decode", "nbhelpers/data/image.py", "decode_rgb"),
    ("image transform (crop, flip, to float, normalise)", "torchvision/transforms/v2/_container.py", "forward"),
    ("image transform (crop, flip, to float, normalise)", "nbhelpers/data/transforms.py", "__call__"),
    ("tokenising", "open_clip/tokenizer.py", "__call__"),
    ("model step (forward, backward, AdamW)", "benchmarks/peers/profiling.py", "model_step"),
    ("rest of the data pipeline (shuffle, json, collate, ...)", "benchmarks/peers/profiling.py", "draw"),
)  # fmt: skip


def _stage(frame: Any) -> str:
    """The :data:`STAGES` name of a stack (innermost frame first outwards), or ``other``."""
    while frame is not None:
        code = frame.f_code
        for name, suffix, function in STAGES:
            if code.co_name == function and code.co_filename.endswith(suffix):
                return name
        frame = frame.f_back
    return "other"


def sampled(run: Callable[[], None], interval: float = 0.001) -> Counter[str]:
    """Runs ``run`` while a timer signal samples its stack every ``interval`` seconds (as py-spy
    does); returns the seconds spent in each :func:`_stage` (Unix only).

    Python handles the signal between two bytecodes of this thread, so the time of a C call (a JPEG
    decode, a backward pass) goes to the Python function that made it, the wall time since the previous
    sample being counted for the stack the handler finds.
    """
    seconds: Counter[str] = Counter()
    last = time.perf_counter()

    def sample(signum: int, frame: Any) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[_stage(frame)] += now - last
        last = now

    previous = signal.signal(signal.SIGALRM, sample)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    try:
        run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return seconds


def profile(argv: Sequence[str]) -> int:
    """Where the time of a streamed CLIP training step goes, at batch 64 and 0 workers: the stack of the
    training loop sampled every millisecond (:func:`sampled`), each sample counted by :data:`STAGES`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers profile")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--shards", type=Path, default=None, help="a source folder of shards to read instead")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, the cores)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from nbhelpers.data.shards import read_manifest
    from nbhelpers.models.clip import create_clip
    from nbhelpers.train.recipes import clip

    manifest = read_manifest(args.shards) if args.shards else ensure_shards(args.cache / "full", FULL)
    torch.manual_seed(0)
    model = create_clip(MODEL)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = iter(loaders.ours(manifest, 64, 0))

    def draw() -> dict:
        return next(batches)

    def model_step(batch: dict) -> None:
        loss, _ = clip.step(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def train() -> None:
        for _ in range(args.steps):
            model_step(draw())

    for _ in range(20):  # past the shuffle buffer's filling, as in the steady state of an epoch
        model_step(draw())
    start = time.perf_counter()
    counts = sampled(train)
    per_step = 1000 * (time.perf_counter() - start) / args.steps
    total = sum(counts.values())
    print(f"{machine()}: {per_step:.0f} ms per step of 64 ({64000 / per_step:.0f} samples/s)")
    data = sum(n for name, n in counts.items() if not name.startswith(("model", "other")))
    print(f"| part | ms per step | share |\n|---|---|---|\n| data pipeline | {per_step * data / total:.0f} | "
          f"{100 * data / total:.0f}% |")  # fmt: skip
    for name in dict.fromkeys(n for n, _, _ in STAGES):
        share = counts.get(name, 0) / total
        print(f"| {name} | {per_step * share:.0f} | {100 * share:.0f}% |")
    if counts.get("other"):
        print(f"| other | {per_step * counts['other'] / total:.0f} | {100 * counts['other'] / total:.0f}% |")
    return 0


def profile_loaders(argv: Sequence[str]) -> int:
    """``profile-loaders [--samples N] [--only NAME...]``: each loader at batch 64 and 0 workers under
    cProfile, its rate and the functions where most of its own time went (``tottime``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers profile-loaders")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--only", nargs="+", choices=list(loaders.LOADERS), default=list(loaders.LOADERS))
    args = parser.parse_args(argv)
    manifest = ensure_shards(args.cache / "full", FULL)
    folder = ensure_folder(manifest, args.cache / "full" / "folder")
    for name in args.only:
        make = loaders.LOADERS[name][1]
        profiler = cProfile.Profile()
        rate, _ = loaders.loader_rate(
            lambda make=make: make(manifest, folder, 64, 0), 64, 0, args.samples, profiler
        )
        print(
            f"\n## {name}: {rate:.0f} samples/s under cProfile, the timed samples only ({loaders.LOADERS[name][0]})"
        )
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0

"""``python -m benchmarks.peers``: measures every figure, interleaved, each side in a process of its own."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.peers import loaders, trainers
from benchmarks.peers.common import FULL, QUICK, RESULTS, ROOT, Plan, ensure_folder, ensure_shards, machine
from benchmarks.peers.report import row

CEILING = "ceiling: decode + resize"


def bench_loaders(manifest: dict, folder: Path, plan: Plan, where: str, command: str) -> list[dict]:
    """Every loader of :data:`~benchmarks.peers.loaders.LOADERS` at each batch and worker count, in
    turn, ``plan.repeats`` times; one row per peer and one for the ceiling, each against ours."""
    rows = []
    for workers in plan.workers:
        for batch in plan.batches:
            measured: dict[str, list[tuple[float, float]]] = {name: [] for name in loaders.LOADERS}
            for _ in range(plan.repeats):  # ours, then each peer, then the ceiling, again and again
                for name in loaders.LOADERS:
                    measured[name].append(
                        loaders.measure_in_process(name, manifest, folder, batch, workers, plan.samples)
                    )
            ours = measured.pop("ours")
            for name, theirs in measured.items():
                kind = "ceiling" if name == CEILING else "peer"
                rows.append(
                    row(
                        f"loader vs {name}", [(a[0], b[0]) for a, b in zip(ours, theirs)], "samples/s", where,
                        command, kind=kind, memory=[(a[1], b[1]) for a, b in zip(ours, theirs)],
                        peer_name=name, batch=batch, workers=workers,
                    )
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_training(manifest: dict, plan: Plan, cache: Path, where: str, command: str) -> list[dict]:
    """Ours and open_clip_train at each worker count, then the bare loop, ``plan.repeats`` times in turn;
    a row per worker count against open_clip_train and one against the bare loop."""
    if not plan.train_workers:
        return []
    shards_dir = Path(manifest["_dir"]).parent
    warmup, steps = plan.train_steps
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}

    def timed(key: tuple[str, int], command_of) -> None:
        scratch = Path(tempfile.mkdtemp(dir=cache, prefix="train-"))
        try:
            times, rss = trainers.step_times(command_of(scratch), scratch / "times.json", stop_after=steps)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if len(times) != steps:
            raise RuntimeError(f"expected {steps} optimiser steps, {key[0]} made {len(times)}")
        rates.setdefault(key, []).append((trainers.steady_rate(times, warmup), rss))

    for _ in range(plan.repeats):
        for w in plan.train_workers:
            timed(("ours", w), lambda s, w=w: trainers.ours_train_command(shards_dir, s / "runs", steps, w))
            timed(
                ("open_clip_train", w),
                lambda s, w=w: trainers.open_clip_train_command(manifest, s / "logs", steps, w),
            )
        timed(("bare loop", 0), lambda s: trainers.bare_loop_command(steps))
    rows = []
    pairs = [("open_clip_train", "peer", w, ("open_clip_train", w)) for w in plan.train_workers]
    pairs += [("ceiling: bare PyTorch loop", "ceiling", w, ("bare loop", 0)) for w in plan.train_workers]
    for name, kind, workers, key in pairs:
        ours, theirs = rates[("ours", workers)], rates[key]
        rows.append(
            row(
                f"training vs {name}", [(a[0], b[0]) for a, b in zip(ours, theirs)], "samples/s", where, command,
                kind=kind, memory=[(a[1], b[1]) for a, b in zip(ours, theirs)], peer_name=name, batch=64,
                workers=workers, steps=[warmup, steps],
            )
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run(argv: Sequence[str]) -> int:
    from benchmarks.peers import __doc__ as doc

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=doc.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, one repeat, 3 training steps (smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each figure (default 3)")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="loader batch sizes (default 64)"
    )
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "data" / "bench", help="shards and folder export"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON lines written")
    parser.add_argument("--only", choices=("loaders", "training"), default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, the cores)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    if args.batches:
        plan = Plan(**{**plan.__dict__, "batches": tuple(args.batches)})
    command = "python -m benchmarks.peers" + (f" {' '.join(argv)}" if argv else "")
    where = machine()
    cache = args.cache / ("quick" if args.quick else "full")
    cache.mkdir(parents=True, exist_ok=True)
    manifest = ensure_shards(cache, plan)
    folder = ensure_folder(manifest, cache / "folder")
    rows = []
    if args.only in (None, "loaders"):
        rows += bench_loaders(manifest, folder, plan, where, command)
    if args.only in (None, "training"):
        rows += bench_training(manifest, plan, cache, where, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} figures to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from benchmarks.peers import profiling, report

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "render": report.render,
        "profile": profiling.profile,
        "profile-loaders": profiling.profile_loaders,
        "steps": trainers.record_steps,
        "loader": loaders.measure,
    }
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return run(argv)

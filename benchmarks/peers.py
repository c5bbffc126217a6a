"""Our data loader and trainer against the peers, on the same shards, as ratios measured in one run.

    python -m benchmarks.peers                 # minutes on 2 cores; writes benchmarks/results/peers.jsonl
    python -m benchmarks.peers render          # docs/performance.md's "Against the peers" table from those results
    python -m benchmarks.peers render --check  # exit 1 if that table is not what the results give
    python -m benchmarks.peers profile         # where a streamed training step's time goes (stack samples)
    python -m benchmarks.peers --quick --out /tmp/p.jsonl   # a smoke test of seconds, tiny data

``--threads N`` sets torch's threads for everything measured (the trainers' processes included); on a
machine shared with other busy processes, 1 thread avoids OpenMP threads spinning against them.

What is compared, each on the same synthetic shards (256 px JPEGs; a training split of 2,000 samples in
4 shards, built once under ``--cache``), at 64 px, with the tokeniser of ``memelab-tiny-vit``:

* **loader vs open_clip_train's data pipeline** (``open_clip_train.data.get_wds_dataset``, resampled
  shards, with its own training transform of ``memelab-tiny-vit``) and **loader vs a torchvision folder
  loader** (``torchvision.datasets.ImageFolder`` over the same JPEGs exported once to a folder per class,
  the caption of each image read from a ``.txt`` beside it and tokenised per sample, the usual torchvision
  v2 transform: random resized crop, flip, float conversion, normalisation; a shuffled ``DataLoader``).
  Ours is exactly what the streamed training path builds (``train_data`` of
  :mod:`nbhelpers.train.recipes.data`). All three deliver the same batches: normalised float images
  (B, 3, 64, 64) and tokens (B, 77); at batch 32, 64 and 128, with 0 and 2 DataLoader workers. A figure
  is samples per second over about 1,024 samples after a warm-up of two batches per worker.
* **training**: ``python -m nbhelpers.train clip`` streamed from the shards against
  ``python -m open_clip_train.main`` (through :mod:`nbhelpers.train.open_clip_cli`), with equal work per
  step: the same model (``memelab-tiny-vit``, 64 px), 64 pairs per batch, all of them forward and backward
  (ours with ``valid_only=false``; its loss counts the valid pairs, open_clip's all pairs: the same
  forward and backward), fp32 on the CPU, AdamW, gradient-norm clipping at 1.0, one epoch, shards drawn
  with replacement in both; with 0 and 2 data workers. Each trainer runs 28 steps in its own process,
  which records when each optimiser step ends (torch's global optimiser hook); the rate is the samples
  of steps 5 to 28 over the time from the end of step 4 to the end of step 28: the steady state, data
  loading included, start-up, worker start, evaluation and checkpoints not.

Each figure runs ``--repeats`` times (default 3), interleaved (ours, then each peer, then again), and
the JSON line holds the medians and their ratio (ours / peer; above 1: ours is faster), with every
repeat's pair in ``runs``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a file (`python benchmarks/peers.py`): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.readme_tables import markdown_table, render_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "peers.jsonl"
#: The documentation page whose generated block this benchmark renders.
PAGE = ROOT / "docs" / "performance.md"
BLOCK = "peers"
#: The keys of every JSON line (the schema the docs table and the tests read).
KEYS = ("benchmark", "ours", "peer", "ratio", "unit", "machine", "command")
MODEL = "memelab-tiny-vit"
IMAGE_SIZE = 64
#: Samples per split of the benchmark's shards, and samples per training shard.
FULL_SIZES = {"synthetic_train": 2000, "synthetic_val": 100, "synthetic_test": 100, "synthetic_unseen": 100}
QUICK_SIZES = {"synthetic_train": 64, "synthetic_val": 8, "synthetic_test": 8, "synthetic_unseen": 8}


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full benchmark or ``--quick``."""

    sizes: dict[str, int]
    train_shard_size: int
    batches: tuple[int, ...]
    workers: tuple[int, ...]
    samples: int  # samples timed per loader figure
    repeats: int
    train_steps: tuple[int, int]  # (warm-up, all): each trainer's steps, the first ones not timed
    train_workers: tuple[int, ...]


FULL = Plan(FULL_SIZES, 500, (32, 64, 128), (0, 2), 1024, 3, (4, 28), (0, 2))
QUICK = Plan(QUICK_SIZES, 16, (8,), (0,), 16, 1, (1, 2), ())


def machine() -> str:
    """CPU model, cores, torch version and threads, and the date: where a figure was measured."""
    model = cpu_model()
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]} "
        f"({torch.get_num_threads()} threads), {today}"
    )


# ----------------------------------------------------------------------------------------------- data


def ensure_shards(cache: Path, plan: Plan) -> dict[str, Any]:
    """The benchmark's synthetic shards under ``cache/shards`` (written once; a re-run reuses them)."""
    from nbhelpers.data.prepare import PrepareConfig, prepare

    config = PrepareConfig.from_params(
        "demo", out_dir=str(cache / "shards"), image_size=256, train_shard_size=plan.train_shard_size,
        eval_shard_size=plan.train_shard_size, workers=1, **plan.sizes,
    )  # fmt: skip
    return prepare(config, progress=False)


def ensure_folder(manifest: dict[str, Any], folder: Path) -> Path:
    """The training split's JPEGs (bytes as stored) in ``folder/<class>/<key>.jpg``, the caption beside
    each as ``<key>.txt``: an ImageFolder layout. Written once; ``.complete`` marks a finished export."""
    from nbhelpers.data.tar_samples import iter_groups
    from nbhelpers.data.taxonomy import CLASSES

    done = folder / ".complete"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    count = 0
    for shard in manifest["splits"]["train"]["shards"]:
        for group in iter_groups(Path(manifest["_dir"]) / shard):
            label = json.loads(group.members["json"])["label"]
            target = folder / f"{label}_{CLASSES[label].split('/')[0].replace(' ', '_')}"
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{group.key}.jpg").write_bytes(group.members["jpg"])
            (target / f"{group.key}.txt").write_bytes(group.members["txt"])
            count += 1
    done.write_text(f"{count}\n")
    return folder


# -------------------------------------------------------------------------------------------- loaders


def tokenizer():
    import open_clip

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    return open_clip.get_tokenizer(MODEL)


def ours_loader(manifest: dict[str, Any], batch: int, workers: int) -> Iterable[dict[str, Any]]:
    """The batches the streamed training path feeds the engine (``train_data(...).batches(1)``)."""
    from nbhelpers.train.recipes.config import RecipeConfig
    from nbhelpers.train.recipes.data import train_data

    config = RecipeConfig(
        data_dir=str(Path(manifest["_dir"]).parent), sources="synthetic", batch_size=batch,
        in_memory=False, num_workers=workers, seed=0,
    )  # fmt: skip
    config.validate()
    return train_data(config, [manifest], IMAGE_SIZE, tokenizer()).batches(1)


def open_clip_loader(manifest: dict[str, Any], batch: int, workers: int) -> Iterable[Any]:
    """open_clip_train's own training pipeline (``get_wds_dataset``) with its ``memelab-tiny-vit``
    training transform, on the same shards, resampled."""
    import open_clip
    from open_clip_train.data import get_wds_dataset

    from nbhelpers.train.open_clip_cli import brace_urls, disable_pickle_decoders

    disable_pickle_decoders()  # what our open_clip_train entry point does before it reads a shard
    tok = tokenizer()
    _, preprocess_train, _ = open_clip.create_model_and_transforms(MODEL)
    args = argparse.Namespace(
        train_data=brace_urls(manifest, "train"), val_data=None, train_num_samples=10**7,
        train_data_upsampling_factors=None, dataset_resampled=True, seed=0, batch_size=batch,
        workers=workers, world_size=1,
    )  # fmt: skip
    return get_wds_dataset(args, preprocess_train, is_train=True, epoch=0, tokenizer=tok).dataloader


def folder_loader(folder: Path, batch: int, workers: int) -> Iterable[Any]:
    """``torchvision.datasets.ImageFolder`` with the caption beside each image, tokenised per sample."""
    from torchvision import datasets
    from torchvision.transforms import v2

    from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD

    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(IMAGE_SIZE, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    tok = tokenizer()

    class CaptionedFolder(datasets.ImageFolder):
        def __getitem__(self, index: int):
            image, label = super().__getitem__(index)
            caption = Path(self.samples[index][0]).with_suffix(".txt").read_text(encoding="utf-8")
            return image, tok([caption])[0], label

    return torch.utils.data.DataLoader(
        CaptionedFolder(str(folder), transform=transform), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def batch_len(batch: Any) -> int:
    return len(batch["label"]) if isinstance(batch, dict) else len(batch[0])


def loader_rate(make: Callable[[], Iterable[Any]], batch: int, workers: int, samples: int) -> float:
    """Samples per second of the loader ``make()`` over ``samples`` samples, after two batches per worker
    (worker start-up, first reads); the loader is endless or long enough (the folder one is restarted)."""
    batches = make()

    def endless() -> Iterator[Any]:
        while True:
            yield from batches

    it = endless()
    for _ in range(2 * max(1, workers)):
        next(it)
    n, start = 0, time.perf_counter()
    while n < samples:
        n += batch_len(next(it))
    rate = n / (time.perf_counter() - start)
    del it
    return rate


# ------------------------------------------------------------------------------------------- training


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


def step_times(command: Sequence[str], out: Path) -> list[float]:
    """Runs ``command`` (``python -m MODULE ARGS...``, from the repository root) under :func:`record_steps`;
    returns the time (``perf_counter``) at the end of each of its optimiser steps.

    Raises:
        RuntimeError: the command failed (its output's tail in the message).
    """
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the threads this process runs with
    }  # fmt: skip
    wrapped = [sys.executable, "-m", "benchmarks.peers", "steps", str(out), *command[2:]]
    done = subprocess.run(wrapped, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{command[2:4]} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return json.loads(out.read_text())


def steady_rate(times: Sequence[float], warmup: int, batch: int = 64) -> float:
    """Samples per second between the end of step ``warmup`` and the end of the last step."""
    return (len(times) - warmup) * batch / (times[-1] - times[warmup - 1])


def record_steps(argv: Sequence[str]) -> int:
    """``steps OUT MODULE ARGS...``: runs ``python -m MODULE ARGS...`` in this process and writes to OUT
    the time at the end of every optimiser step (torch's global step hook, whoever's optimiser it is)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    out, module, *args = argv
    times: list[float] = []
    hook = register_optimizer_step_post_hook(lambda *_: times.append(time.perf_counter()))
    argv_before = sys.argv
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as err:
        if err.code not in (0, None):
            raise
    finally:
        hook.remove()
        sys.argv = argv_before
    Path(out).write_text(json.dumps(times))
    return 0


# ----------------------------------------------------------------------------------------------- main


def row(
    benchmark: str, runs: list[tuple[float, float]], unit: str, where: str, command: str, **extra
) -> dict:
    """A JSON line: the medians of ``runs`` (pairs ``(ours, peer)``) and their ratio."""
    ours = round(statistics.median(r[0] for r in runs), 1)
    peer = round(statistics.median(r[1] for r in runs), 1)
    return {
        "benchmark": benchmark,
        "ours": ours,
        "peer": peer,
        "ratio": round(ours / peer, 3),
        "unit": unit,
        "machine": where,
        "command": command,
        **extra,
        "runs": [[round(a, 1), round(b, 1)] for a, b in runs],
    }


def bench_loaders(manifest: dict, folder: Path, plan: Plan, where: str, command: str) -> list[dict]:
    peers = {
        "open_clip_train data": (open_clip_loader, manifest),
        "torchvision ImageFolder": (folder_loader, folder),
    }
    rows = []
    for workers in plan.workers:
        for batch in plan.batches:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in peers}
            for _ in range(plan.repeats):  # ours, then each peer, again and again
                ours_make = functools.partial(ours_loader, manifest, batch, workers)
                ours = loader_rate(ours_make, batch, workers, plan.samples)
                for name, (make, source) in peers.items():
                    peer = loader_rate(
                        functools.partial(make, source, batch, workers), batch, workers, plan.samples
                    )
                    runs[name].append((ours, peer))
            for name, pairs in runs.items():
                rows.append(
                    row(f"loader vs {name}", pairs, "samples/s", where, command, peer_name=name, batch=batch,
                        workers=workers)
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_training(manifest: dict, plan: Plan, cache: Path, where: str, command: str) -> list[dict]:
    shards_dir = Path(manifest["_dir"]).parent
    warmup, steps = plan.train_steps
    rows = []
    for workers in plan.train_workers:
        runs = []
        for _ in range(plan.repeats):
            scratch = Path(tempfile.mkdtemp(dir=cache, prefix="train-"))
            try:
                ours = step_times(
                    ours_train_command(shards_dir, scratch / "runs", steps, workers), scratch / "a"
                )
                peer = step_times(
                    open_clip_train_command(manifest, scratch / "logs", steps, workers), scratch / "b"
                )
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if len(ours) != steps or len(peer) != steps:
                raise RuntimeError(
                    f"expected {steps} optimiser steps, ours made {len(ours)}, the peer {len(peer)}"
                )
            runs.append((steady_rate(ours, warmup), steady_rate(peer, warmup)))
        rows.append(
            row("training vs open_clip_train", runs, "samples/s", where, command, peer_name="open_clip_train",
                batch=64, workers=workers, steps=[warmup, steps])
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, one repeat, loaders only (smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each figure (default 3)")
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


# --------------------------------------------------------------------------------------------- render


def read_results(path: Path = RESULTS) -> list[dict]:
    """The JSON lines of ``path``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: Sequence[dict]) -> str:
    """The docs/performance.md block: which machine and command, then one line per figure."""
    machines = sorted({r["machine"] for r in rows})
    commands = sorted({r["command"] for r in rows})
    note = (
        f"Measured on {'; '.join(machines)} by `{'`, `'.join(commands)}` (median of "
        f"{max(len(r.get('runs', [])) for r in rows)} interleaved repeats; ratio = ours / peer, above 1: "
        "ours is faster)."
    )
    header = ("what", "peer", "batch", "workers", "ours", "peer's", "ours / peer")
    cells = [
        (
            r["benchmark"].split(" vs ")[0],
            r.get("peer_name", r["benchmark"].split(" vs ")[-1]),
            r.get("batch", ""),
            r.get("workers", ""),
            f"{r['ours']:,.0f} {r['unit']}",
            f"{r['peer']:,.0f}",
            f"{r['ratio']:.2f}",
        )
        for r in rows
    ]
    return f"{note}\n\n{markdown_table(header, cells)}"


def render(argv: Sequence[str]) -> int:
    return render_command(
        argv, prog="python -m benchmarks.peers render", block=BLOCK, results=RESULTS, page=PAGE,
        body=lambda path: table(read_results(path)),
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- profile

#: What a stack sample is counted as: the innermost frame running one of these (file suffix, function).
STAGES = (
    ("tar parsing", "nbhelpers/data/tar_samples.py", "iter_groups"),
    ("JPEG decode", "nbhelpers/data/image.py", "decode_rgb"),
    ("image transform (crop, flip, to float, normalise)", "torchvision/transforms/v2/_container.py", "forward"),
    ("image transform (crop, flip, to float, normalise)", "nbhelpers/data/transforms.py", "__call__"),
    ("tokenising", "open_clip/tokenizer.py", "__call__"),
    ("model step (forward, backward, AdamW)", "benchmarks/peers.py", "model_step"),
    ("rest of the data pipeline (shuffle, json, collate, ...)", "benchmarks/peers.py", "draw"),
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
    batches = iter(ours_loader(manifest, 64, 0))

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["render"]:
        return render(argv[1:])
    if argv[:1] == ["profile"]:
        return profile(argv[1:])
    if argv[:1] == ["steps"]:
        return record_steps(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())

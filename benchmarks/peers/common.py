"""What every part of the peers benchmark shares: paths, the plan, the shards, the tokeniser, memory."""

from __future__ import annotations

import csv
import datetime
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.machine import cpu_model

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "peers.jsonl"
#: The documentation page whose generated block this benchmark renders.
PAGE = ROOT / "docs" / "performance.md"
BLOCK = "peers"
#: The keys of every JSON line (the schema the docs table and the tests read).
KEYS = ("benchmark", "kind", "ours", "peer", "ratio", "unit", "machine", "command")
MODEL = "memelab-tiny-vit"
IMAGE_SIZE = 64
#: The captions of the folder export, one index file for all images (``path,caption`` rows).
CAPTIONS = "captions.csv"
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


FULL = Plan(FULL_SIZES, 500, (64,), (0, 2), 1024, 3, (4, 24), (0, 2))
QUICK = Plan(QUICK_SIZES, 16, (8,), (0,), 16, 1, (1, 3), ())


def machine() -> str:
    """CPU model, cores, torch version and threads, and the date: where a figure was measured."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]} "
        f"({torch.get_num_threads()} threads), {today}"
    )


def child_env() -> dict[str, str]:
    """The environment of every measured process: this repository first, offline, this process's threads."""
    return {
        **os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }  # fmt: skip


def ensure_shards(cache: Path, plan: Plan) -> dict[str, Any]:
    """The benchmark's synthetic shards under ``cache/shards`` (written once; a re-run reuses them)."""
    from nbhelpers.data.prepare import PrepareConfig, prepare

    config = PrepareConfig.from_params(
        "demo", out_dir=str(cache / "shards"), image_size=256, train_shard_size=plan.train_shard_size,
        eval_shard_size=plan.train_shard_size, workers=1, **plan.sizes,
    )  # fmt: skip
    return prepare(config, progress=False)


def ensure_folder(manifest: dict[str, Any], folder: Path) -> Path:
    """The training split's JPEGs (bytes as stored) in ``folder/<class>/<key>.jpg`` (an ImageFolder
    layout), and every caption in one index file, ``folder/captions.csv`` (``path,caption``, the path
    relative to ``folder``), as a captioned image set is usually shipped. Written once; ``.complete``
    marks a finished export."""
    from nbhelpers.data.tar_samples import iter_groups
    from nbhelpers.data.taxonomy import CLASSES

    done = folder / ".complete"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = []
    for shard in manifest["splits"]["train"]["shards"]:
        for group in iter_groups(Path(manifest["_dir"]) / shard):
            label = json.loads(group.members["json"])["label"]
            target = folder / f"{label}_{CLASSES[label].split('/')[0].replace(' ', '_')}"
            target.mkdir(exist_ok=True)
            (target / f"{group.key}.jpg").write_bytes(group.members["jpg"])
            rows.append((f"{target.name}/{group.key}.jpg", group.members["txt"].decode("utf-8")))
    with open(folder / CAPTIONS, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("path", "caption"), *rows])
    done.write_text(f"{len(rows)}\n")
    return folder


def tokenizer():
    """open_clip's tokeniser of :data:`MODEL`, as ``open_clip.get_tokenizer`` gives it to a user."""
    import open_clip

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    return open_clip.get_tokenizer(MODEL)


class PeakMemory:
    """The peak resident memory (MB) of this process and its children (DataLoader workers) together,
    sampled every ``interval`` seconds by a thread while the ``with`` block runs. Summed RSS counts the
    pages a forked worker shares with its parent twice, alike for every loader measured."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def sample(self) -> float:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that has just exited
                pass
        self.peak_mb = max(self.peak_mb, total / 2**20)
        return self.peak_mb

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

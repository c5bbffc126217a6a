"""How time and memory grow with the training split: 1k, 10k, 100k synthetic samples at 64 px.

    python -m benchmarks.scale --sizes 1000 10000        # appends to benchmarks/results/scale.jsonl
    python -m benchmarks.scale render                    # docs/performance.md's table from scale.jsonl

For each size N it builds synthetic shards of N training samples at 64 px (``data/scale/n<N>``; the
demo's 256 px would make 100k samples take hours to write here), then measures, each in a fresh
process (``python -m benchmarks.scale --measure WHAT``), so that each peak is that size's alone:

- ``shards``: writing the shards (``nbhelpers.data.prepare``, 2 worker processes: the peak is the
  largest of the main process and its workers);
- ``stream``: one epoch (N samples, batches of 64) of the WebDataset training stream, decoded,
  augmented (random resized crop, flip) and tokenised, as the recipes stream a split that is not held
  in memory;
- ``clip_stream``: one training epoch of the demo's tiny CLIP (``preset=demo``, notebook 03) streamed
  from the shards (``in_memory=false``, as the ``t4`` preset runs);
- ``clip_memory``: the same epoch with the demo preset as it is (``in_memory=true``: the whole split is
  decoded into memory first).

Time is wall-clock seconds of the work itself (the interpreter's start and imports excluded); peak
memory is the process's resident high-water mark (``resource.getrusage(...).ru_maxrss``, which counts
torch's allocations, unlike ``tracemalloc``), next to its resident size right after the imports. A CLIP
epoch trains on the valid pairs only (about 1/7 of the split, the notebook's ``valid_only``) but reads
the whole split; its samples/s count the split's samples. Sizes already in the file are not measured
again (``--force`` does).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (`python benchmarks/scale.py`): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.readme_tables import markdown_table, render_command, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.jsonl"
#: The documentation page whose generated block this benchmark renders.
PAGE = ROOT / "docs" / "performance.md"
BLOCK = "scale"
IMAGE_SIZE = 64
BATCH = 64
#: The held-out splits are tiny: only the training split's size is varied.
EVAL_SAMPLES = 64
#: What is measured, in the order of the table.
KINDS = ("shards", "stream", "clip_stream", "clip_memory")
LABELS = {
    "shards": "writing the shards (64 px, 2 workers)",
    "stream": "training stream, one epoch (decode + augment + tokenise)",
    "clip_stream": "CLIP demo, one epoch streamed (`in_memory=false`)",
    "clip_memory": "CLIP demo, one epoch in memory (`in_memory=true`, the demo preset)",
}


def rss_mb() -> float:
    """This process's resident high-water mark so far, in MB (Linux reports ``ru_maxrss`` in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_stream(data_dir: Path, samples: int) -> dict[str, Any]:
    """One epoch of the training stream over ``data_dir``'s synthetic train split: ``ceil(samples / 64)``
    batches of 64, as a recipe streams them (seed 0, epoch 0)."""
    from nbhelpers.data.loader import make_pipeline
    from nbhelpers.data.transforms import train_transform
    from nbhelpers.models.clip import TINY_VIT, create_clip

    tokenizer = create_clip(TINY_VIT)[3]
    pipeline = make_pipeline(
        [data_dir / "synthetic"], "train", batch_size=BATCH, image_transform=train_transform(IMAGE_SIZE),
        tokenizer=tokenizer, train=True, seed=0, epoch=0,
    )  # fmt: skip
    before = rss_mb()
    start, n = time.perf_counter(), 0
    for i, batch in enumerate(pipeline):
        n += len(batch["label"])
        if i + 1 == math.ceil(samples / BATCH):
            break
    return {"seconds": time.perf_counter() - start, "processed": n, "import_rss_mb": before}


def measure_clip(data_dir: Path, samples: int, in_memory: bool) -> dict[str, Any]:
    """One epoch of the demo CLIP (notebook 03's recipe), from the shards to the trained weights."""
    from nbhelpers.train.recipes import clip

    before = rss_mb()
    with tempfile.TemporaryDirectory() as runs:
        config = dict(
            preset="demo", data_dir=str(data_dir), runs_dir=runs, run_name="clip", epochs=1, in_memory=in_memory,
            eval_splits="test", progress=False,
        )  # fmt: skip
        start = time.perf_counter()
        result = clip.run(config)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds, "train_seconds": result.metrics["train_seconds"],
        "processed": result.metrics["num_samples"], "import_rss_mb": before,
    }  # fmt: skip


def measure_shards(data_dir: Path, samples: int) -> dict[str, Any]:
    """Writes ``samples`` synthetic training samples (and tiny held-out splits) at 64 px with 2 workers."""
    from nbhelpers.data.prepare import PrepareConfig, prepare

    config = PrepareConfig.from_params(
        "demo", out_dir=str(data_dir), image_size=IMAGE_SIZE, synthetic_train=samples, synthetic_val=EVAL_SAMPLES,
        synthetic_test=EVAL_SAMPLES, synthetic_unseen=EVAL_SAMPLES, workers=2,
    )  # fmt: skip
    before = rss_mb()
    start = time.perf_counter()
    prepare(config, progress=False)
    seconds = time.perf_counter() - start
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "processed": samples, "import_rss_mb": before, "worker_peak_rss_mb": workers}


MEASURES: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "shards": measure_shards,
    "stream": measure_stream,
    "clip_stream": lambda data_dir, samples: measure_clip(data_dir, samples, in_memory=False),
    "clip_memory": lambda data_dir, samples: measure_clip(data_dir, samples, in_memory=True),
}


def measure_in_this_process(what: str, data_dir: Path, samples: int) -> dict[str, Any]:
    """Runs measurement ``what`` here; adds the peak resident memory (of this process, or of its worker
    processes where larger).

    Raises:
        ValueError: ``what`` is not one of :data:`KINDS`.
    """
    if what not in MEASURES:
        raise ValueError(f"--measure: unknown measurement {what!r}; allowed: {', '.join(KINDS)}")
    found = MEASURES[what](data_dir, samples)
    return {**found, "peak_rss_mb": max(rss_mb(), found.get("worker_peak_rss_mb", 0.0))}


def measure(what: str, data_dir: Path, samples: int) -> dict[str, Any]:
    """Measurement ``what`` at ``samples`` in a fresh process (``python -m benchmarks.scale --measure``).

    Raises:
        RuntimeError: the process failed (the end of its stderr in the message).
    """
    argv = ["-m", "benchmarks.scale", "--measure", what, "--data-dir", str(data_dir), "--sizes", str(samples)]
    env = dict(os.environ, PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"python {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    """The CPU model, its cores and torch's version and threads, in one line."""
    import torch

    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The measurements in ``path`` (one JSON object a line); none if it does not exist."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_sizes(
    sizes: Sequence[int],
    kinds: Sequence[str],
    *,
    data_root: Path,
    results: Path,
    measure_fn: Callable[[str, Path, int], dict[str, Any]] = measure,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Measures each of ``kinds`` at each size not yet in ``results``, appending a line per measurement.

    The shards of a size are built (and timed, as ``shards``) before its other measurements, unless the
    file already holds that size's ``shards`` line and the shards are there.

    Returns:
        The lines appended.
    """
    done = {(r["what"], r["samples"]) for r in read_results(results)}
    added = []
    for samples in sizes:
        data_dir = data_root / f"n{samples}"
        todo = [k for k in KINDS if k in kinds and (force or (k, samples) not in done)]
        if todo and "shards" not in todo and not (data_dir / "synthetic" / "manifest.json").is_file():
            todo.insert(0, "shards")  # the others read them
        for what in todo:
            if what == "shards" and (data_dir / "synthetic").is_dir():  # timed from scratch, not resumed
                shutil.rmtree(data_dir / "synthetic")
            load = os.getloadavg()[0]
            log(f"{what} at {samples:,} samples ...")
            found = measure_fn(what, data_dir, samples)
            line = {
                "what": what, "samples": samples, "image_size": IMAGE_SIZE, **found,
                "samples_per_s": round(samples / found["seconds"], 1),
                "load_average": round(load, 2), "date": datetime.date.today().isoformat(), "machine": machine(),
            }  # fmt: skip
            for key in ("seconds", "train_seconds", "peak_rss_mb", "import_rss_mb", "worker_peak_rss_mb"):
                if key in line:
                    line[key] = round(line[key], 1)
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as f:
                f.write(json.dumps(line) + "\n")
            added.append(line)
            log(f"  {line['seconds']} s, {line['samples_per_s']} samples/s, peak {line['peak_rss_mb']} MB")
    return added


def render(lines: Sequence[Mapping[str, Any]]) -> str:
    """docs/performance.md's block ``scale``: one row per measurement (the latest of each kind and size)."""
    latest = {(r["what"], r["samples"]): r for r in lines}
    rows = []
    for what in KINDS:
        for samples in sorted(s for w, s in latest if w == what):
            r = latest[(what, samples)]
            after_import = f"{r['import_rss_mb']:,.0f}" if "import_rss_mb" in r else ""
            rows.append(
                [LABELS[what], f"{samples:,}", f"{r['seconds']:,.1f}", f"{r['samples_per_s']:,.0f}",
                 f"{r['peak_rss_mb']:,.0f}", after_import, f"{r['load_average']:.1f}"]
            )  # fmt: skip
    dates = sorted({r["date"] for r in latest.values()})
    machines = sorted({r["machine"] for r in latest.values()})
    note = f"Measured {', '.join(dates)} on {'; '.join(machines)}, by `python -m benchmarks.scale`."
    header = (
        "what",
        "train samples",
        "seconds",
        "samples/s",
        "peak RSS (MB)",
        "RSS after imports (MB)",
        "load",
    )
    return note + "\n\n" + markdown_table(header, rows)


def update_page(text: str, lines: Sequence[Mapping[str, Any]]) -> str:
    """``text`` (docs/performance.md) with its block ``scale`` rendered from ``lines``."""
    return replace_block(text, BLOCK, render(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["render"]:
        return render_command(
            argv[1:], prog="python -m benchmarks.scale render", block=BLOCK, results=RESULTS, page=PAGE,
            body=lambda path: render(read_results(path)),
        )  # fmt: skip
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "scale")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--force", action="store_true", help="measure again sizes already in the results")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # one measurement, in this process
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_in_this_process(args.measure, args.data_dir, args.sizes[0])))
        return 0
    run_sizes(args.sizes, args.kinds, data_root=args.data_root, results=args.results, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())

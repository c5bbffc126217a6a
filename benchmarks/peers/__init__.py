"""Our data loader and trainer against the peers and against the machine's ceilings, on the same shards.

    python -m benchmarks.peers                 # about 10 minutes on 2 cores; writes benchmarks/results/peers.jsonl
    python -m benchmarks.peers render          # docs/performance.md's "Against the peers" block from those results
    python -m benchmarks.peers render --check  # exit 1 if that block is not what the results give
    python -m benchmarks.peers profile         # where a streamed training step's time goes (stack samples)
    python -m benchmarks.peers profile-loaders # each loader's hottest functions (cProfile, 0 workers)
    python -m benchmarks.peers --quick --out /tmp/p.jsonl   # a smoke test of about a minute, tiny data

``--threads N`` sets torch's threads for everything measured (every measured process included); on a
machine shared with other busy processes, 1 thread avoids OpenMP threads spinning against them.

What is compared, each on the same synthetic shards (256 px JPEGs; a training split of 2,000 samples in
4 shards, built once under ``--cache``), at 64 px, with open_clip's tokeniser of ``memelab-tiny-vit``.
Every figure is measured in a fresh Python process of its own (``python -m benchmarks.peers loader ...``,
``... steps ...``), so no side inherits another's imports, threads, caches or memory.

* **loaders** (:mod:`benchmarks.peers.loaders`), each delivering images (B, 3, 64, 64) and tokens (B, 32)
  at batch 64, with 0 and 2 DataLoader workers; a figure is samples per second over 1,024 samples after a
  warm-up of two batches per worker, with the peak RSS of the process and its workers:

  - ours: exactly what the streamed training path builds (``train_data`` of
    :mod:`nbhelpers.train.recipes.data`);
  - ``open_clip_train``'s own pipeline (``open_clip_train.data.get_wds_dataset``, resampled shards), as a
    user of open_clip runs it: the training transform of ``open_clip.create_model_and_transforms`` and the
    tokeniser of ``open_clip.get_tokenizer``; and the same pipeline with our crop, flip and normalisation
    as its transform, so that the pipelines alone are compared;
  - ``torchvision.datasets.ImageFolder`` over the same JPEGs exported once to a folder per class, the
    captions read once from one index file (``captions.csv``) and tokenised per batch in the
    ``collate_fn``, with the usual torchvision v2 transform (random resized crop, flip, float conversion,
    normalisation), a shuffled ``DataLoader``; and the same with our reduced-scale decode and transform;
  - the **ceiling**: the same JPEGs, already in memory, only decoded at the reduced scale our loader uses
    and resized to 64 px (no augmentation, no tokeniser), at the same workers. Ours is reported as a share
    of it.
* **training** (:mod:`benchmarks.peers.trainers`): ``python -m nbhelpers.train clip`` streamed from the
  shards against ``python -m open_clip_train.main`` (through :mod:`nbhelpers.train.open_clip_cli`), with
  equal work per step: the same model (``memelab-tiny-vit``, 64 px), 64 pairs per batch, all of them
  forward and backward (ours with ``valid_only=false``; its loss counts the valid pairs, open_clip's all
  pairs: the same forward and backward), fp32 on the CPU, AdamW, gradient-norm clipping at 1.0, one
  epoch, shards drawn with replacement in both; with 0 and 2 data workers. The **ceiling** is a bare
  PyTorch loop of the same model, batch and optimiser on one batch already in memory (forward, loss,
  backward, step: :mod:`benchmarks.peers.bare_loop`). Each runs 24 steps in its own process, which
  records when each optimiser step ends (torch's global optimiser hook); the rate is the samples of steps
  5 to 24 over the time from the end of step 4 to the end of step 24: the steady state, data loading
  included, start-up, worker start, evaluation and checkpoints not.

Each figure runs ``--repeats`` times (default 3), interleaved (ours, then each peer, then the ceiling,
then again), and the JSON line holds the medians and their ratio (ours / peer, or ours / ceiling: ours as
a share of it), with every repeat's pair in ``runs``.
"""

from benchmarks.peers.cli import bench_loaders, bench_training, main, run
from benchmarks.peers.common import (
    BLOCK,
    KEYS,
    MODEL,
    PAGE,
    RESULTS,
    ROOT,
    Plan,
    ensure_folder,
    ensure_shards,
)
from benchmarks.peers.report import read_results, render, row, summary, table
from benchmarks.peers.trainers import (
    bare_loop_command,
    open_clip_train_command,
    ours_train_command,
    record_steps,
    steady_rate,
    step_times,
)

__all__ = [
    "BLOCK", "KEYS", "MODEL", "PAGE", "RESULTS", "ROOT", "Plan", "bare_loop_command", "bench_loaders",
    "bench_training", "ensure_folder", "ensure_shards", "main", "open_clip_train_command", "ours_train_command",
    "read_results", "record_steps", "render", "row", "run", "steady_rate", "step_times", "summary", "table",
]  # fmt: skip

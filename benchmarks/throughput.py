"""Throughput and memory of the data path and of one training step of each demo model.

    .venv/bin/python benchmarks/throughput.py            # prints a Markdown table, writes benchmarks/results.json

Measures, on whatever machine runs it (the table says which):
- shard writing (synthetic benchmark, 256 px JPEGs), samples/s;
- the WebDataset training stream (decode + augment + tokenise) and the in-memory path, samples/s;
- one optimiser step of each demo model (forward + backward + AdamW) at its demo batch size, samples/s;
- peak resident memory of the process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def bench_shards(out: Path) -> dict:
    from nbhelpers.data.prepare import PrepareConfig, prepare

    sizes = {"synthetic_train": 1000, "synthetic_val": 100, "synthetic_test": 100, "synthetic_unseen": 100}
    config = PrepareConfig.from_params("demo", out_dir=str(out), workers=os.cpu_count() or 1, **sizes)
    start = time.perf_counter()
    manifest = prepare(config, progress=False)
    seconds = time.perf_counter() - start
    return {"manifest": manifest, "shard_write_samples_per_s": _rate(sum(sizes.values()), seconds)}


def bench_loader(manifest: dict) -> dict:
    import open_clip

    from nbhelpers.data.loader import make_pipeline
    from nbhelpers.data.memory import epoch_batches, load_split
    from nbhelpers.data.transforms import train_transform
    from nbhelpers.models.clip import TINY_VIT, register_model_configs

    register_model_configs()
    tokenizer = open_clip.get_tokenizer(TINY_VIT)
    pipeline = make_pipeline(
        [manifest],
        "train",
        batch_size=64,
        image_transform=train_transform(64),
        tokenizer=tokenizer,
        train=True,
    )
    start, n = time.perf_counter(), 0
    for i, batch in enumerate(pipeline):
        n += len(batch["label"])
        if i == 15:
            break
    stream = _rate(n, time.perf_counter() - start)
    start = time.perf_counter()
    data = load_split([manifest], "train", 64, tokenizer)
    load = _rate(len(data), time.perf_counter() - start)
    start, n = time.perf_counter(), 0
    for batch in epoch_batches(data, 64, seed=0, epoch=0):
        n += len(batch["label"])
    memory = _rate(n, time.perf_counter() - start)
    return {
        "stream_samples_per_s": stream,
        "load_split_samples_per_s": load,
        "memory_batches_samples_per_s": memory,
    }


def _step_rate(model: torch.nn.Module, loss_fn, batch_size: int, steps: int = 5) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn().backward()  # warm-up
    optimizer.zero_grad()
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return _rate(steps * batch_size, time.perf_counter() - start)


def bench_models() -> dict:
    """One training step of each demo model, with its recipe's own loss (the recipes' step functions)."""
    from nbhelpers.config import preset_values
    from nbhelpers.lora import add_lora
    from nbhelpers.models.cass_mm import CASSMM
    from nbhelpers.models.clip import TINY_VIT, create_clip
    from nbhelpers.models.heads import CLIPClassifier
    from nbhelpers.train.recipes import cass_mm, clip, clip_classifier

    batch = 64
    images = torch.randn(batch, 3, 64, 64)
    tokenizer = create_clip(TINY_VIT)[3]
    tokens = tokenizer(["a red circle"] * batch)
    labels = torch.randint(0, 7, (batch,))
    data = {"image": images, "tokens": tokens, "label": labels, "valid_pair": labels == 0}
    rates = {}

    contrastive = create_clip(TINY_VIT)[0]
    rates["clip (03)"] = _step_rate(contrastive, lambda: clip.step(contrastive, data)[0], batch)
    config = clip_classifier.ClipClassifierConfig.from_params("demo")
    for mode in ("baseline", "lora"):
        base = create_clip(TINY_VIT)[0]
        if mode == "lora":
            add_lora(base, rank=4)
        model = CLIPClassifier(base)
        rates[f"clip_classifier {mode} (06)"] = _step_rate(
            model, lambda model=model: clip_classifier.step(model, data, config)[0], batch
        )
    cnn_size = preset_values("demo", "cass_mm").get("cnn_image_size", 32)
    cass = CASSMM(create_clip(TINY_VIT)[0], cnn="resnet18", cnn_image_size=cnn_size, cnn_small_image=False)
    rates["cass_mm (05)"] = _step_rate(cass, lambda: cass_mm.pretrain_step(cass, data)[0], batch)
    return {"train_step_samples_per_s": rates, "batch_size": batch}


def main() -> int:
    torch.manual_seed(0)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as tmp:
        shards = bench_shards(Path(tmp))
        loader = bench_loader(shards.pop("manifest"))
    models = bench_models()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {"machine": machine, **shards, **loader, **models, "peak_rss_mb": round(peak_mb)}
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"Measured on: {machine}\n")
    print("| what | samples/s |\n|---|---|")
    for key in (
        "shard_write_samples_per_s",
        "stream_samples_per_s",
        "load_split_samples_per_s",
        "memory_batches_samples_per_s",
    ):
        print(f"| {key.removesuffix('_samples_per_s').replace('_', ' ')} | {results[key]} |")
    for name, rate in models["train_step_samples_per_s"].items():
        print(f"| train step: {name}, batch {models['batch_size']} | {rate} |")
    print(f"\npeak resident memory: {results['peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

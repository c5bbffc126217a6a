"""Running ``open_clip_train`` on our shards, with memelab's tiny configs registered.

``python -m nbhelpers.train.open_clip_cli ARGS...`` is ``python -m open_clip_train.main ARGS...`` after
:func:`nbhelpers.models.clip.register_model_configs`, so ``--model memelab-tiny-vit`` works. With a real
open_clip model name (``ViT-B-32``) the plain ``torchrun -m open_clip_train.main`` works as well, and
:func:`open_clip_command` writes that command for a manifest.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbhelpers.data.shards import read_manifest


def brace_urls(manifest: dict[str, Any] | str | Path, split: str = "train") -> str:
    """The shards of ``split`` as one brace expression (``dir/train-{00000..00003}.tar``) where possible."""
    manifest = manifest if isinstance(manifest, dict) else read_manifest(manifest)
    root = Path(manifest["_dir"])
    shards = manifest["splits"][split]["shards"]
    numbers = [re.fullmatch(rf"{re.escape(split)}-(\d+)\.tar", s) for s in shards]
    indices = [int(m.group(1)) for m in numbers if m]
    if len(indices) == len(shards) and indices == list(range(indices[0], indices[0] + len(indices))):
        if len(indices) == 1:
            return str(root / shards[0])
        width = len(numbers[0].group(1))
        return str(root / f"{split}-{{{indices[0]:0{width}d}..{indices[-1]:0{width}d}}}.tar")
    return "::".join(str(root / s) for s in shards)


def open_clip_command(
    manifests: Sequence[dict[str, Any] | str | Path],
    *,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    gpus: int = 4,
    batch_size: int = 256,
    epochs: int = 10,
    lr: float = 5e-4,
    val_split: str | None = "val",
    extra: Sequence[str] = (),
) -> str:
    """The multi-GPU ``torchrun -m open_clip_train.main`` command that trains CLIP on these shards."""
    read = [m if isinstance(m, dict) else read_manifest(m) for m in manifests]
    train = "::".join(brace_urls(m, "train") for m in read)
    samples = sum(m["splits"]["train"]["num_samples"] for m in read)
    args = [
        "torchrun", f"--nproc_per_node={gpus}", "-m", "open_clip_train.main",
        "--dataset-type", "webdataset", "--train-data", train, "--train-num-samples", str(samples),
        "--model", model, "--batch-size", str(batch_size), "--epochs", str(epochs), "--lr", str(lr),
        "--precision", "amp", "--workers", "4", "--local-loss", "--gather-with-grad",
    ]  # fmt: skip
    if len(read) > 1:
        args += ["--train-data-upsampling-factors", "::".join("1" for _ in read)]
    if pretrained:
        args += ["--pretrained", pretrained]
    if val_split and all(val_split in m["splits"] for m in read):
        val_samples = sum(m["splits"][val_split]["num_samples"] for m in read)
        args += [
            "--val-data",
            "::".join(brace_urls(m, val_split) for m in read),
            "--val-num-samples",
            str(val_samples),
        ]
    args += list(extra)
    return shlex.join(args)


def main(argv: Sequence[str] | None = None) -> None:
    from open_clip_train.main import main as open_clip_main

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    open_clip_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

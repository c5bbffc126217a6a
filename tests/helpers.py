"""Setup shared by several test modules: tiny synthetic shards, tiny BERT vocabularies and models."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import transformers
from PIL import Image, ImageDraw

from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.records import Record
from nbhelpers.data.shards import read_manifest, write_manifest, write_split
from nbhelpers.data.sources.synthetic import COLOUR_NAMES, SEEN_SHAPES
from nbhelpers.data.taxonomy import LabelSet
from nbhelpers.models.unimodal import TextClassifier

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# The words of the synthetic captions (colours and shapes) plus a few fillers.
CAPTION_WORDS = [*COLOUR_NAMES, *SEEN_SHAPES, "a", "the", "is", "my", "when", "this", "and", "it", "be"]


def make_shards(
    out_dir: Path, *, train: int, val: int, test: int, unseen: int, train_shard: int, eval_shard: int
) -> dict:
    """Writes synthetic shards at 64 px with the ``demo`` preset under ``out_dir``.

    Args:
        out_dir: the data folder a recipe's ``data_dir`` then names.
        train, val, test, unseen: samples per split.
        train_shard, eval_shard: samples per shard of the train split and of the other splits.

    Returns:
        the manifest :func:`nbhelpers.data.prepare.prepare` returns.
    """
    config = PrepareConfig.from_params(
        "demo", out_dir=str(out_dir), image_size=64, synthetic_train=train, synthetic_val=val,
        synthetic_test=test, synthetic_unseen=unseen, train_shard_size=train_shard,
        eval_shard_size=eval_shard, workers=1,
    )  # fmt: skip
    return prepare(config, progress=False)


#: The label set of the custom-label fixtures: three classes, the pairs of cat and bird valid.
THREE_CLASSES = LabelSet.from_names(("cat", "dog", "bird"), valid_pair_names=("cat", "bird"))
#: One picture colour per class of :data:`THREE_CLASSES` (RGB).
_THREE_COLOURS = ((220, 30, 30), (30, 170, 50), (30, 60, 220))


def _picture(label: int, i: int, size: int):
    def draw() -> Image.Image:
        image = Image.new("RGB", (size, size), tuple(c // 3 + 10 * (i % 5) for c in _THREE_COLOURS[label]))
        inset = 8 + i % 7
        ImageDraw.Draw(image).rectangle(
            [inset, inset, size - inset, size - inset], fill=_THREE_COLOURS[label]
        )
        return image

    return draw


def make_label_shards(
    out_dir: Path,
    labels: LabelSet = THREE_CLASSES,
    *,
    source: str = "synthetic",
    image_size: int = 64,
    **split_sizes: int,
) -> dict:
    """Writes shards labelled with ``labels`` (a label set of the user's own) under ``out_dir/source``.

    Sample ``i`` of a split has label ``i % len(labels)``, a picture filled with that class's colour (so
    the class can be learnt from the picture) and the caption ``"the <colour> <shape>"`` naming another
    colour. The folder is named after a built-in source (``synthetic`` by default) so that recipes accept
    it as ``sources``; its manifest records ``labels``.

    Args:
        out_dir: the data folder a recipe's ``data_dir`` then names.
        labels: the classes (at most three: one picture colour each).
        source: the source name of the folder and of the manifest.
        image_size: side of the pictures.
        split_sizes: samples per split, e.g. ``train=48, val=24``.

    Returns:
        the manifest written.
    """
    folder = Path(out_dir) / source
    results = {}
    for split, n in split_sizes.items():
        records = [
            Record(source, f"{split}-{i:05d}", split,
                   f"the {COLOUR_NAMES[(i + 3) % len(COLOUR_NAMES)]} {SEEN_SHAPES[i % len(SEEN_SHAPES)]}",
                   i % len(labels), _picture(i % len(labels), i, image_size))
            for i in range(n)
        ]  # fmt: skip
        results[split] = write_split(
            records, folder, split, shard_size=n, image_size=image_size, progress=False, labels=labels
        )
    write_manifest(folder, source, image_size, results, {}, labels=labels)
    return read_manifest(folder)


def write_bert_vocab(folder: Path, words: list[str]) -> transformers.BertTokenizerFast:
    """Writes ``folder/vocab.txt``: BERT's five special tokens (ids 0-4), then ``words`` (ids 5, 6, ...)."""
    (folder / "vocab.txt").write_text("\n".join([*BERT_SPECIAL, *words]) + "\n")
    return transformers.BertTokenizerFast(str(folder / "vocab.txt"))


def save_tiny_bert(root: Path) -> Path:
    """A one-layer BERT classifier (7 labels, seed 0) over :data:`CAPTION_WORDS`, saved to ``root/tinybert``.

    Saved with ``save_pretrained``, so that a recipe loads it through ``from_pretrained`` as it would load
    ``bert-base-uncased``.
    """
    tokenizer = write_bert_vocab(root, CAPTION_WORDS)
    bert = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=7,
    )  # fmt: skip
    torch.manual_seed(0)
    TextClassifier.from_config(bert, tokenizer, max_length=16).save_pretrained(root / "tinybert")
    return root / "tinybert"


def register_open_clip_config(folder: Path, name: str, config: dict) -> str:
    """Writes ``config`` as ``folder/<name>.json`` and adds it to open_clip's registry; returns ``name``."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return name


def run_ranks(worker, world: int, out: Path, timeout_s: float) -> list[dict]:
    """Spawns ``worker(rank, port, out_dir)`` on ``world`` processes (a free port for their rendezvous), waits
    up to ``timeout_s`` and returns what each rank saved as ``out/rank{r}.pt``.

    Raises:
        torch.multiprocessing.ProcessRaisedException: a rank failed (its traceback included).
        pytest.fail: the ranks did not finish in time (they are killed).
    """
    import socket
    import time

    import pytest
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.spawn(worker, args=(port, str(out)), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):  # raises ProcessRaisedException if a process failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world} gloo processes did not finish in {timeout_s} s")
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]

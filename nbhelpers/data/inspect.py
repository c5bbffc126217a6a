"""Looking at shards: manifest tables and raw samples for display (no model transforms)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import webdataset as wds

from nbhelpers.data.image import decode_rgb
from nbhelpers.data.taxonomy import LabelSet


def manifest_table(manifest: dict[str, Any]) -> pd.DataFrame:
    """One row per split: shards, samples, samples per class (of the manifest's label set) and inputs
    skipped."""
    names = LabelSet.from_manifest(manifest).names
    rows = []
    for split, info in manifest["splits"].items():
        row = {"split": split, "shards": len(info["shards"]), "samples": info["num_samples"]}
        row.update({name: info["class_counts"].get(name, 0) for name in names})
        if "unlabelled" in info["class_counts"]:
            row["unlabelled"] = info["class_counts"]["unlabelled"]
        row["skipped"] = sum(info["skipped"].values())
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def skip_table(manifest: dict[str, Any]) -> pd.DataFrame:
    """Inputs skipped, by split and reason, with an example of each (empty when nothing was skipped)."""
    rows = [
        {
            "split": split,
            "reason": reason,
            "count": count,
            "example": (info.get("skip_examples", {}).get(reason) or [""])[0],
        }
        for split, info in manifest["splits"].items()
        for reason, count in info["skipped"].items()
    ]
    return pd.DataFrame(rows, columns=["split", "reason", "count", "example"])


def class_counts_long(manifest: dict[str, Any]) -> pd.DataFrame:
    """Counts per (split, class) in long form, classes in label order, for a seaborn bar plot."""
    names = LabelSet.from_manifest(manifest).names
    rows = [
        {"split": split, "class": name, "count": info["class_counts"].get(name, 0)}
        for split, info in manifest["splits"].items()
        for name in names
    ]
    return pd.DataFrame(rows)


def iter_raw_samples(manifest: dict[str, Any], split: str) -> Iterator[dict[str, Any]]:
    """The samples of a split as written: ``key``, PIL ``image``, ``text`` and the ``json`` dict."""
    root = Path(manifest["_dir"])
    urls = [str(root / s) for s in manifest["splits"][split]["shards"]]
    for raw in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()):
        yield {
            "key": raw["__key__"],
            "image": decode_rgb(raw["jpg"], f"{raw['__key__']}.jpg"),
            "text": raw["txt"].decode("utf-8"),
            "json": json.loads(raw["json"]),
        }


def raw_samples(
    manifest: dict[str, Any], split: str, n: int, label: int | None = None
) -> list[dict[str, Any]]:
    """The first ``n`` samples of ``split`` (of class ``label`` if given)."""
    samples = iter_raw_samples(manifest, split)
    if label is not None:
        samples = (s for s in samples if s["json"]["label"] == label)
    return list(islice(samples, n))

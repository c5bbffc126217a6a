"""Every notebook, 01 to 09, headless on a user's own 3-class dataset (a folder of images and tables)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.fixtures import write_own_dataset

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "bird")


@pytest.mark.slow
def test_a_three_class_own_dataset_goes_through_every_notebook(tmp_path):
    own = write_own_dataset(
        tmp_path / "raw", classes=CLASSES, n_per_split={"train": 96, "val": 24, "test": 48}
    )
    shards, runs = tmp_path / "shards", tmp_path / "runs"
    params = {
        **own["prepare"],
        "out_dir": shards,  # 01
        "workers": 1,
        "data_dir": shards,  # 02-08
        "sources": "own",
        "eval_splits": "test",  # bookkeeping: 08 still finds the preset's runs
        "runs_dir": runs,  # 02-09
        "save_dir": tmp_path / "figures",  # 08
        "split": "test",  # 08, 09
        "num_samples": 8,  # 08
    }
    command = [sys.executable, str(ROOT / "tools" / "run_notebooks.py"), "--out", str(tmp_path / "executed")]
    for name, value in params.items():
        command += ["-p", name, str(value)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    executed = sorted(p.name[:2] for p in (tmp_path / "executed").glob("*.ipynb"))
    assert executed == [f"{i:02d}" for i in range(1, 10)]

    manifest = json.loads((shards / "own" / "manifest.json").read_text())
    assert manifest["classes"] == list(CLASSES)
    assert {s: i["num_samples"] for s, i in manifest["splits"].items()} == {
        "train": 96,
        "val": 24,
        "test": 48,
    }
    classifiers = {}
    for metrics_file in runs.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("classes"):
            classifiers[metrics_file.parent.name] = metrics["classes"]
    made = {name.split("-")[0] for name in classifiers}
    assert {"cass_mm", "clip_classifier_lora", "unimodal_text", "unimodal_image"} <= made, sorted(classifiers)
    assert any(name.startswith("fusion") for name in made), sorted(classifiers)
    assert all(classes == list(CLASSES) for classes in classifiers.values())
    comparison = (runs / "comparison.csv").read_text()
    assert "cass_mm" in comparison or "CASS" in comparison

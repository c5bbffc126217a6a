"""A prepare run that keeps nothing, or a split that loses most of its rows, fails with one paragraph
naming the skip reasons, examples and the parameter that fixes them (``nbhelpers.data.skip_check``)."""

from __future__ import annotations

import csv
import io
import json

import datasets
import huggingface_hub
import pytest

from nbhelpers.config import ConfigError
from nbhelpers.data.prepare import PrepareConfig, main, prepare
from nbhelpers.data.shards import SplitResult
from nbhelpers.data.skip_check import TooManySkippedError, check_kept
from nbhelpers.data.taxonomy import SEVEN_CLASSES

from .fixtures import own_picture

HATEFUL = ["not-hateful", "hateful"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network and a private ``datasets`` cache, whatever the environment says."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    own_picture(index % 2, index, size=(24, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def _class_label_dataset(folder, n=9):
    """``n`` rows saved with ``save_to_disk``: an Image, a text, and ``ClassLabel(names=HATEFUL)``."""
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=HATEFUL),
        }
    )
    columns = {
        "image": [_png(i) for i in range(n)],
        "text": [f"meme number {i}" for i in range(n)],
        "label": [i % 2 for i in range(n)],
    }
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(folder))
    return folder


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m nbhelpers.data.prepare ARGS`` in this process: exit status, stdout, stderr."""
    try:
        main(list(args))
        status = 0
    except SystemExit as err:
        status = err.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_class_label_dataset_that_maps_nothing_fails_naming_names_and_integers(tmp_path, capsys):
    folder = _class_label_dataset(tmp_path / "ds")
    common = ("--source", "hf", "--hf_dataset", str(folder), "--image_size", "32", "--workers", "1")
    status, out, err = _run_cli(capsys, *common, "--out_dir", str(tmp_path / "a"))
    assert status == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("nbhelpers.data.prepare: error: no sample was kept: split 'train' (9 rows)")
    assert "Traceback" not in err
    # the reason and count, both labels as integers and as names, and the parameters that fix them
    assert "9 rows skipped as unmapped_label" in line
    assert "train[0] label '0' (ClassLabel name 'not-hateful')" in line
    assert "train[1] label '1' (ClassLabel name 'hateful')" in line
    assert 'classes="not-hateful,hateful"' in line and "label_map=" in line
    assert str(tmp_path / "a" / "hf" / "manifest.json") in line
    # the manifest still records what happened
    manifest = json.loads((tmp_path / "a" / "hf" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["num_samples"] == 0
    assert manifest["splits"]["train"]["skipped"] == {"unmapped_label": 9}

    status, out, err = _run_cli(
        capsys, *common, "--out_dir", str(tmp_path / "b"), "--classes", ",".join(HATEFUL)
    )
    assert status == 0, err
    assert json.loads(out)["samples"] == {"train": 9}

    # From Python (notebook 01): a ValueError subclass with the same message.
    config = PrepareConfig.from_params(
        "demo", source="hf", hf_dataset=str(folder), out_dir=str(tmp_path / "c"), image_size=32, workers=1
    )
    with pytest.raises(TooManySkippedError, match="unmapped_label") as caught:
        prepare(config, progress=False)
    assert isinstance(caught.value, ValueError) and caught.value.splits == {"train": (0, 9)}


def _own_csv(root, labels: list, bad_images: int = 0):
    """``root/train.csv`` (image, text, label) with one row per label; the last ``bad_images`` rows name
    pictures that are not there."""
    root.mkdir(parents=True)
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text", "label"])
        for i, label in enumerate(labels):
            if i < len(labels) - bad_images:
                own_picture(i % 2, i, size=(24, 20)).save(root / f"{i}.png")
            writer.writerow([f"{i}.png", f"meme number {i}", label])
    return root


def _own_config(raw, out, **params) -> PrepareConfig:
    return PrepareConfig.from_params(
        "demo",
        source="own",
        raw_dir=str(raw),
        own_files="train=train.csv",
        out_dir=str(out),
        image_size=32,
        workers=1,
        **params,
    )


def test_an_own_csv_with_integer_labels_and_no_map_fails_suggesting_label_map(tmp_path):
    raw = _own_csv(tmp_path / "raw", [i % 2 for i in range(9)])
    with pytest.raises(TooManySkippedError) as caught:
        prepare(_own_config(raw, tmp_path / "a"), progress=False)
    message = str(caught.value)
    assert message.startswith("no sample was kept: split 'train' (9 rows) skipped every row.")
    assert "9 rows skipped as unmapped_label, e.g. train.csv:2 label '0' and train.csv:3 label '1'" in message
    # integer labels: label_map is the fix (naming the classes), never classes="0,1"
    assert 'label_map="0:True/Neutral,1:Hate"' in message and 'classes="' not in message
    assert "max_skipped_fraction" not in message  # no fraction accepts a run that keeps nothing
    with pytest.raises(TooManySkippedError):
        prepare(_own_config(raw, tmp_path / "b", max_skipped_fraction=1), progress=False)

    manifest = prepare(_own_config(raw, tmp_path / "c", label_map="0:True/Neutral,1:Hate"), progress=False)
    assert manifest["splits"]["train"]["class_counts"] == {"True/Neutral": 5, "Hate": 4}


def test_an_own_csv_with_class_name_labels_fails_until_classes_names_them(tmp_path, capsys):
    raw = _own_csv(tmp_path / "raw", [HATEFUL[i % 2] for i in range(9)])
    common = (
        "--source",
        "own",
        "--raw_dir",
        str(raw),
        "--own_files",
        "train=train.csv",
        "--image_size",
        "32",
    )
    status, _, err = _run_cli(capsys, *common, "--out_dir", str(tmp_path / "a"), "--workers", "1")
    assert status == 2
    line = err.strip().splitlines()[-1]  # after the progress line: the error, one line, no traceback
    assert line.startswith("nbhelpers.data.prepare: error: no sample was kept") and "Traceback" not in err
    assert "train.csv:2 label 'not-hateful' and train.csv:3 label 'hateful'" in line
    assert 'classes="not-hateful,hateful"' in line
    status, out, err = _run_cli(
        capsys,
        *common,
        "--out_dir",
        str(tmp_path / "b"),
        "--workers",
        "1",
        "--classes",
        "not-hateful,hateful",
    )
    assert status == 0 and json.loads(out)["samples"] == {"train": 9}, err


def test_a_split_that_loses_more_than_the_fraction_fails_and_raising_it_keeps_the_rest(tmp_path):
    # 10 rows: 4 good, 6 naming a missing picture (0.6 of the split lost)
    raw = _own_csv(tmp_path / "raw", [HATEFUL[i % 2] for i in range(10)], bad_images=6)
    config = _own_config(raw, tmp_path / "out", classes=",".join(HATEFUL))
    with pytest.raises(TooManySkippedError) as caught:
        prepare(config, progress=False)
    message = str(caught.value)
    assert message.startswith(
        "split 'train' (kept 4 of 10) skipped more than max_skipped_fraction=0.5 of its rows. "
        "6 rows skipped as missing_image"
    )
    assert "image_column" in message and "raw_dir" in message
    assert message.endswith("or keep what is left with max_skipped_fraction=0.6.")
    assert caught.value.splits == {"train": (4, 10)}

    # accepting the loss: the shards written by the failed run are complete and reused
    accepted = prepare(
        _own_config(raw, tmp_path / "out", classes=",".join(HATEFUL), max_skipped_fraction=0.6),
        progress=False,
    )
    assert accepted["splits"]["train"]["num_samples"] == 4
    assert accepted["splits"]["train"]["skipped"] == {"missing_image": 6}
    # exactly half lost is not "more than half"
    half = _own_csv(tmp_path / "half", [HATEFUL[i % 2] for i in range(10)], bad_images=5)
    kept = prepare(_own_config(half, tmp_path / "out2", classes=",".join(HATEFUL)), progress=False)
    assert kept["splits"]["train"]["num_samples"] == 5


def _result(num_samples: int, skipped: dict[str, int]) -> SplitResult:
    return SplitResult(
        shards=[], num_samples=num_samples, class_counts={}, skipped=skipped, skip_examples={}, shard_sizes={}
    )


def test_rows_left_out_by_design_do_not_count_and_an_empty_source_fails(tmp_path):
    manifest = tmp_path / "manifest.json"
    # Fakeddit's text-only posts and blank lines are not lost rows: 2 kept of 2 rows
    check_kept({"train": _result(2, {"no_image": 30, "blank_line": 4})}, 0.5, SEVEN_CLASSES, manifest)
    with pytest.raises(TooManySkippedError, match=r"split 'train' \(kept 2 of 5\)"):
        check_kept({"train": _result(2, {"no_image": 30, "missing_image": 3})}, 0.5, SEVEN_CLASSES, manifest)
    # several splits: each over the fraction is named, the others are not
    with pytest.raises(TooManySkippedError) as caught:
        splits = {
            "train": _result(9, {"empty_text": 1}),
            "val": _result(1, {"empty_text": 3}),
            "test": _result(0, {}),
        }
        check_kept(splits, 0.5, SEVEN_CLASSES, manifest)
    assert caught.value.splits == {"val": (1, 4)}
    assert "text_column" in str(caught.value)
    # the suggested fraction is rounded up, so it accepts the split it was suggested for
    lossy = {"train": _result(2, {"missing_image": 4})}
    with pytest.raises(TooManySkippedError, match=r"keep what is left with max_skipped_fraction=0\.67\.$"):
        check_kept(lossy, 0.5, SEVEN_CLASSES, manifest)
    check_kept(lossy, 0.67, SEVEN_CLASSES, manifest)
    with pytest.raises(TooManySkippedError, match="the source has no rows"):
        check_kept({"train": _result(0, {}), "val": _result(0, {})}, 1.0, SEVEN_CLASSES, manifest)


def test_max_skipped_fraction_is_a_fraction():
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        PrepareConfig.from_params("demo", max_skipped_fraction=1.5)
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        PrepareConfig.from_params("demo", max_skipped_fraction=-0.1)
    assert PrepareConfig.from_params("demo").max_skipped_fraction == 0.5

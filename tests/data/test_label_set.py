"""Label sets: the seven merged classes by default, or a user's own classes, carried by the manifest."""

from __future__ import annotations

import json
import tarfile

import pytest
from PIL import Image

from nbhelpers.data.loader import make_pipeline, shard_set
from nbhelpers.data.records import Record
from nbhelpers.data.shards import read_manifest, write_manifest, write_split
from nbhelpers.data.taxonomy import CLASSES, SEVEN_CLASSES, LabelSet, label_set_of
from nbhelpers.data.verify import verify

THREE = LabelSet.from_names(("cat", "dog", "bird"), valid_pair_names=("cat", "bird"))


def _records(labels: list[int], split: str = "train", source: str = "own") -> list[Record]:
    def draw(i: int):
        return lambda: Image.new("RGB", (40, 30), (30 * i % 255, 80, 120))

    return [Record(source, f"id{i}", split, f"text {i}", label, draw(i)) for i, label in enumerate(labels)]


def _write(folder, labels: list[int], label_set: LabelSet, source: str = "own") -> dict:
    result = write_split(
        _records(labels, source=source),
        folder,
        "train",
        shard_size=4,
        image_size=32,
        workers=1,
        progress=False,
        labels=label_set,
    )
    write_manifest(folder, source, 32, {"train": result}, {}, labels=label_set)
    return read_manifest(folder)


def test_the_default_is_the_seven_classes_with_only_true_neutral_pairs_valid():
    assert SEVEN_CLASSES.names == CLASSES
    assert [SEVEN_CLASSES.is_valid_pair(c) for c in range(7)] == [True] + [False] * 6
    assert SEVEN_CLASSES.is_default and not THREE.is_default
    assert LabelSet.from_manifest({"source": "old"}) == SEVEN_CLASSES


@pytest.mark.parametrize(
    "names, valid, message",
    [
        (("only",), None, "at least 2"),
        (("a", "a", "b"), None, "repeated: \\['a'\\]"),
        (("a", " "), None, "non-blank"),
        (("a", "unlabelled"), None, "reserved"),
        (("a", "b"), ("c",), "\\['c'\\] are not among"),
    ],
)
def test_bad_label_sets_are_refused_naming_the_problem(names, valid, message):
    with pytest.raises(ValueError, match=message):
        LabelSet.from_names(names, valid)


def test_a_custom_label_set_is_written_read_counted_and_verified(tmp_path):
    # Label 3 is outside the three classes: skipped and counted when written, never silently kept.
    manifest = _write(tmp_path / "own", [0, 1, 2, 2, 3, 1, -1], THREE)
    assert manifest["classes"] == ["cat", "dog", "bird"]
    assert manifest["valid_pair_classes"] == [0, 2]
    split = manifest["splits"]["train"]
    assert split["class_counts"] == {"cat": 1, "dog": 2, "bird": 2, "unlabelled": 1}
    assert split["skipped"] == {"invalid_label": 1}
    assert LabelSet.from_manifest(manifest) == THREE

    with tarfile.open(tmp_path / "own" / "train-00000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert [(m["label_name"], m["valid_pair"]) for m in metas] == [
        ("cat", True),
        ("dog", False),
        ("bird", True),
        ("bird", True),
    ]
    assert verify(tmp_path / "own").ok

    samples = list(make_pipeline([manifest], "train", batch_size=1, image_transform=None, partial=True))
    assert sorted(int(s["label"][0]) for s in samples) == [0, 1, 1, 2, 2]
    assert sorted(bool(s["valid_pair"][0]) for s in samples) == [False, False, True, True, True]
    assert shard_set([manifest], "train").labels == THREE


def test_shards_of_different_label_sets_are_not_read_together(tmp_path):
    own = _write(tmp_path / "own", [0, 1], THREE)
    other = _write(tmp_path / "other", [0, 1], SEVEN_CLASSES, source="other")
    with pytest.raises(ValueError, match="different label sets.*own: \\['cat', 'dog', 'bird'\\]"):
        label_set_of([own, other])
    with pytest.raises(ValueError, match="different label sets"):
        shard_set([own, other], "train")


def test_rewriting_one_split_with_another_label_set_is_refused(tmp_path):
    _write(tmp_path / "own", [0, 1], THREE)
    result = write_split(
        _records([0, 1], split="val"), tmp_path / "own", "val", shard_size=4, image_size=32, progress=False
    )
    with pytest.raises(ValueError, match="written with the classes \\['cat', 'dog', 'bird'\\]"):
        write_manifest(tmp_path / "own", "own", 32, {"val": result}, {})


def test_the_shard_tables_show_the_manifests_own_classes(tmp_path):
    from nbhelpers.data.inspect import class_counts_long, manifest_table

    manifest = _write(tmp_path / "own", [0, 1, 2, 2], THREE)
    table = manifest_table(manifest)
    assert [c for c in table.columns if c in THREE.names or c in CLASSES] == ["cat", "dog", "bird"]
    assert table.loc["train", ["cat", "dog", "bird"]].tolist() == [1, 1, 2]
    assert class_counts_long(manifest)["class"].tolist() == ["cat", "dog", "bird"]

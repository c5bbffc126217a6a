"""End to end: raw files in each dataset's real format -> shards -> manifest, with planted faults counted."""

import io
import json
import tarfile

import pytest
from PIL import Image

from nbhelpers.data.loader import make_pipeline
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.taxonomy import class_name

from .fixtures import write_coco, write_fakeddit, write_hateful_memes, write_mmhs150k

WRITERS = {
    "hateful_memes": write_hateful_memes,
    "mmhs150k": write_mmhs150k,
    "fakeddit": write_fakeddit,
    "coco": write_coco,
}


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_real_format_to_shards_counts_every_planted_fault(source, tmp_path):
    planted = WRITERS[source](tmp_path / "raw")
    config = PrepareConfig.from_params(
        "demo",
        source=source,
        raw_dir=str(planted["raw_dir"]),
        out_dir=str(tmp_path / "shards"),
        image_size=48,
        workers=1,
        max_skipped_fraction=1,  # the fixture plants more faults than good rows
    )
    manifest = prepare(config, progress=False)
    for split, expected in planted["splits"].items():
        info = manifest["splits"][split]
        undecodable = len(expected["undecodable"])
        assert info["num_samples"] == expected["records"] - undecodable, split
        want_skips = dict(expected["skips"])
        if undecodable:
            want_skips["undecodable_image"] = undecodable
        assert info["skipped"] == want_skips, split
        good_labels = [
            label for sid, label in expected["labels"].items() if sid not in expected["undecodable"]
        ]
        want_classes = {}
        for label in good_labels:
            want_classes[class_name(label)] = want_classes.get(class_name(label), 0) + 1
        assert info["class_counts"] == want_classes, split
        # every written image is exactly image_size square, and its json carries the source's label
        for shard in info["shards"]:
            with tarfile.open(config.source_dir / shard) as tar:
                for member in tar.getmembers():
                    data = tar.extractfile(member).read()
                    if member.name.endswith(".jpg"):
                        assert Image.open(io.BytesIO(data)).size == (48, 48)
                    if member.name.endswith(".json"):
                        meta = json.loads(data)
                        assert meta["label"] == expected["labels"][meta["source_id"]]
                        assert meta["source"] == source and meta["split"] == split


def test_hateful_memes_json_carries_binary_label_and_test_is_unlabelled(tmp_path):
    planted = write_hateful_memes(tmp_path / "raw")
    config = PrepareConfig.from_params(
        "demo",
        source="hateful_memes",
        raw_dir=str(planted["raw_dir"]),
        out_dir=str(tmp_path / "s"),
        image_size=32,
        workers=1,
        max_skipped_fraction=1,  # the fixture plants more faults than good rows
    )
    manifest = prepare(config, progress=False)
    assert set(manifest["splits"]["test_seen"]["class_counts"]) == {"unlabelled"}
    batches = list(make_pipeline([manifest], "dev_seen", batch_size=64))
    hateful = batches[0]["hateful"].tolist()
    labels = batches[0]["label"].tolist()
    assert hateful == [int(label == 6) for label in labels]
    # unlabelled test samples never reach training or evaluation
    assert sum(len(b["label"]) for b in make_pipeline([manifest], "test_seen", batch_size=64)) == 0


def test_missing_raw_files_stop_before_any_shard_is_written(tmp_path):
    (tmp_path / "raw").mkdir()
    config = PrepareConfig.from_params(
        "demo", source="mmhs150k", raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "s")
    )
    with pytest.raises(FileNotFoundError, match="MMHS150K_GT.json"):
        prepare(config, progress=False)
    assert not (tmp_path / "s").exists()

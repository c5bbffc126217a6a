import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from nbhelpers.data.image import letterbox
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.shards import _fingerprint, read_manifest, write_split
from nbhelpers.data.taxonomy import CLASSES

from .conftest import SMALL


def _members(tar_path):
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_manifest_lists_shards_counts_and_classes(small_synthetic):
    config, manifest = small_synthetic
    root = Path(manifest["_dir"])
    assert manifest["source"] == "synthetic" and manifest["image_size"] == 64
    train = manifest["splits"]["train"]
    assert train["shards"] == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
    assert train["num_samples"] == 40 and sum(train["class_counts"].values()) == 40
    assert set(train["class_counts"]) <= set(CLASSES)
    assert manifest["splits"]["unseen"]["shards"] == [
        "unseen-00000.tar",
        "unseen-00001.tar",
        "unseen-00002.tar",
    ]
    sizes = json.loads((root / "sizes.json").read_text())
    assert sizes["train-00000.tar"] == 16 and sizes["train-00002.tar"] == 8
    assert sum(v for k, v in sizes.items() if k.startswith("train")) == 40


def test_each_sample_is_a_square_jpeg_text_and_json(small_synthetic):
    _, manifest = small_synthetic
    members = _members(Path(manifest["_dir"]) / "val-00000.tar")
    keys = sorted({name.rsplit(".", 1)[0] for name in members})
    assert len(keys) == 5 and len(members) == 15
    for key in keys:
        image = Image.open(io.BytesIO(members[f"{key}.jpg"]))
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 64)
        meta = json.loads(members[f"{key}.json"])
        assert members[f"{key}.txt"].decode() and "." not in key
        assert {"label", "label_name", "source", "source_id", "split", "valid_pair", "hateful"} <= meta.keys()
        assert meta["label_name"] == CLASSES[meta["label"]]
        assert meta["valid_pair"] == (meta["label"] == 0) and meta["hateful"] == int(meta["label"] == 6)
        assert meta["split"] == "val" and meta["source"] == "synthetic"


def test_letterbox_keeps_the_whole_picture_and_pads():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    square = letterbox(wide, 64)
    assert square.size == (64, 64)
    pixels = square.load()
    assert pixels[32, 32][0] > 200 and pixels[0, 32][0] > 200  # the full width is kept
    assert pixels[32, 2] != pixels[32, 32]  # top band is padding


def _small_config(tmp_path):
    """A small synthetic build in three train shards (16 + 16 + 8) and shards of 5 elsewhere."""
    return PrepareConfig.from_params(
        "demo",
        out_dir=str(tmp_path),
        image_size=32,
        train_shard_size=16,
        eval_shard_size=5,
        workers=1,
        **SMALL,
    )


def test_rerun_resumes_complete_shards_without_rewriting(tmp_path):
    config = _small_config(tmp_path)
    prepare(config, progress=False)
    shard = config.source_dir / "train-00001.tar"
    before = {p.name: p.stat().st_mtime_ns for p in config.source_dir.glob("*.tar")}
    os.utime(shard, ns=(1, 1))
    (config.source_dir / "train-00002.tar").unlink()
    (config.source_dir / ".train-00001.tar.tmp").write_bytes(b"half a shard")  # a crash left this
    again = prepare(config, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in config.source_dir.glob("*.tar")}
    assert after["train-00001.tar"] == 1  # untouched: resumed
    assert after["train-00000.tar"] == before["train-00000.tar"]
    assert after["train-00002.tar"] != 1 and (config.source_dir / "train-00002.tar").is_file()
    assert again["splits"]["train"]["num_samples"] == 40
    assert not (config.source_dir / ".train-00001.tar.tmp").exists()  # leftovers are cleaned up


def test_changed_inputs_rewrite_the_shard_and_stale_shards_are_removed(tmp_path):
    config = _small_config(tmp_path)
    prepare(config, progress=False)
    smaller = PrepareConfig.from_params(**{**config.to_dict(), "synthetic_train": 20})
    manifest = prepare(smaller, progress=False)
    assert manifest["splits"]["train"]["shards"] == ["train-00000.tar", "train-00001.tar"]
    assert not (config.source_dir / "train-00002.tar").exists()
    assert json.loads((config.source_dir / "sizes.json").read_text())["train-00001.tar"] == 4


def _record(i, image):
    return Record(
        source="unit", source_id=f"id.{i}", split="train", text=f"text {i}", label=i % 7, image=image
    )


def test_undecodable_images_are_skipped_and_counted(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (0, 128, 0)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    records = [
        _record(0, good),
        _record(1, truncated),
        _record(2, not_image),
        _record(3, tmp_path / "gone.png"),
    ]
    reader_skips = SkipCounter()
    reader_skips.skip("empty_text", "row 9")
    result = write_split(
        records,
        tmp_path / "out",
        "train",
        shard_size=10,
        image_size=32,
        reader_skips=reader_skips,
        progress=False,
    )
    assert result.num_samples == 1
    assert result.skipped == {"empty_text": 1, "undecodable_image": 3}
    assert any("truncated.png" in e for e in result.skip_examples["undecodable_image"])
    assert sorted(_members(tmp_path / "out" / "train-00000.tar")) == [
        "unit_train_id_2e0.jpg",
        "unit_train_id_2e0.json",
        "unit_train_id_2e0.txt",
    ]


def test_a_crash_mid_shard_leaves_complete_shards_and_no_final_file(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20)).save(good)

    def explode():
        raise RuntimeError("power cut")

    records = [_record(i, good) for i in range(4)] + [_record(4, explode)]
    with pytest.raises(RuntimeError, match="power cut"):
        write_split(records, tmp_path, "train", shard_size=4, image_size=16, progress=False)
    assert (tmp_path / "train-00000.tar").is_file()
    assert not (tmp_path / "train-00001.tar").exists()
    result = write_split(
        [_record(i, good) for i in range(5)], tmp_path, "train", shard_size=4, image_size=16, progress=False
    )
    assert result.resumed_shards == 1 and result.num_samples == 5


def test_read_manifest_names_the_missing_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the shards first"):
        read_manifest(tmp_path)


def test_shard_fingerprint_covers_the_json_member():
    """A reader whose labels changed (same id, text and label) must not resume the old shard."""

    def record(**meta):
        return Record(
            source="s", source_id="1", split="train", text="t", label=0, image=Path("x.jpg"), meta=meta
        )

    assert _fingerprint([record(labels=[0, 0, 0])], 64) == _fingerprint([record(labels=[0, 0, 0])], 64)
    assert _fingerprint([record(labels=[0, 0, 0])], 64) != _fingerprint([record(labels=[0, 0, 1])], 64)
    assert _fingerprint([record()], 64) != _fingerprint([record()], 32)


def _headers(tar_path: Path) -> list[bytes]:
    """Every 512-byte header block of an uncompressed tar, in order (data blocks skipped)."""
    data, blocks, offset = tar_path.read_bytes(), [], 0
    while offset + 512 <= len(data) and data[offset : offset + 512] != bytes(512):
        header = data[offset : offset + 512]
        blocks.append(header)
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    return blocks


def test_members_have_one_plain_ustar_header_each_and_whole_second_times(small_synthetic):
    _, manifest = small_synthetic
    shard = Path(manifest["_dir"]) / "val-00000.tar"
    headers = _headers(shard)
    assert len(headers) == 15  # 5 samples x 3 members, no PAX ("x") or GNU long-name ("L") blocks
    assert {h[156:157] for h in headers} == {b"0"} and {h[257:265] for h in headers} == {b"ustar\x0000"}
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    assert [m.pax_headers for m in members] == [{}] * 15
    assert {m.mtime for m in members} == {0} and {type(m.mtime) for m in members} == {int}
    assert {m.mode for m in members} == {0o644}


def test_equal_inputs_write_byte_identical_shards(tmp_path):
    first = prepare(_small_config(tmp_path / "a"), progress=False)
    second = prepare(_small_config(tmp_path / "b"), progress=False)
    for split, info in first["splits"].items():
        assert info["shards"] == second["splits"][split]["shards"]
        for shard in info["shards"]:
            a, b = Path(first["_dir"]) / shard, Path(second["_dir"]) / shard
            assert a.read_bytes() == b.read_bytes(), shard


def test_a_key_over_100_bytes_still_round_trips_through_webdataset(tmp_path):
    import webdataset as wds

    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(image)
    long_id = "x" * 120
    record = Record(source="unit", source_id=long_id, split="train", text="a caption", label=0, image=image)
    write_split([record], tmp_path / "out", "train", shard_size=4, image_size=16, progress=False)
    (sample,) = list(wds.WebDataset(str(tmp_path / "out" / "train-00000.tar"), shardshuffle=False))
    assert sample["__key__"] == f"unit_train_{long_id}" and sample["txt"] == b"a caption"
    assert json.loads(sample["json"])["source_id"] == long_id

"""Hostile and damaged data: every bad input is refused or repaired, and counted by reason.

Raw inputs are written in each dataset's real on-disk format (the writers of ``tests/data/fixtures.py``
plus the hostile rows added here); shards are the project's own, then damaged the way disks, copies and
hand edits damage them. Each test asserts exact counts by reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbhelpers.data.image import MAX_PIXELS, ImageDecodeError, load_rgb
from nbhelpers.data.loader import make_pipeline
from nbhelpers.data.memory import load_split
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.shards import (
    _fingerprint,
    decode_id,
    encode_id,
    read_manifest,
    write_manifest,
    write_shard,
    write_split,
)
from nbhelpers.data.validity import Rejected, valid_label
from nbhelpers.data.verify import ShardVerificationError, check_shards, main, verify

from ..data.fixtures import (
    FAKEDDIT_COLUMNS,
    write_coco,
    write_fakeddit,
    write_hateful_memes,
    write_image,
    write_mmhs150k,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET_COLOUR = (3, 251, 5)


# ----------------------------------------------------------------------------------------------- helpers


def _prepare(source: str, raw: Path | None, out: Path, **overrides):
    params = {"source": source, "out_dir": str(out), "image_size": 32, "workers": 1, **overrides}
    if raw is not None:
        params["raw_dir"] = str(raw)
    config = PrepareConfig.from_params("demo", **params)
    return config, prepare(config, progress=False)


def _hm_lines(raw: Path, split: str, rows: list[str]) -> None:
    """Appends raw lines to a Hateful Memes split file."""
    with open(raw / f"{split}.jsonl", "a", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")


def _hm_row(meme_id, img: str, text: str = "a meme", label: int = 0) -> str:
    return json.dumps({"id": meme_id, "img": img, "label": label, "text": text})


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _split_members(manifest: dict, split: str) -> dict[str, bytes]:
    members = {}
    for shard in manifest["splits"][split]["shards"]:
        members.update(_tar_members(Path(manifest["_dir"]) / shard))
    return members


def _rewrite_tar(path: Path, change) -> None:
    """Rewrites the tar at ``path`` member by member through ``change(name, data) -> [(name, data)]``."""
    members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            members.extend(change(m.name, tar.extractfile(m).read()))
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _png_claiming(width: int, height: int) -> bytes:
    """An 8x8 grey PNG whose header (IHDR, with a valid CRC) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length, type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _spy_image_open(monkeypatch) -> list[str]:
    """Records every path PIL is asked to open."""
    opened: list[str] = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        if isinstance(fp, str | os.PathLike):
            opened.append(str(Path(fp).resolve()))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return opened


def _pixels_near(members: dict[str, bytes], colour, tolerance: int = 12) -> int:
    """How many pixels of all ``jpg`` members are within ``tolerance`` of ``colour`` in every channel."""
    total = 0
    for name, data in members.items():
        if name.endswith(".jpg"):
            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
            total += int((np.abs(pixels - np.array(colour)).max(axis=-1) <= tolerance).sum())
    return total


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory):
    """Synthetic shards at 32 px: train 40 samples in shards of 16, the other splits 12 in shards of 5."""
    out = tmp_path_factory.mktemp("verify")
    config, _ = _prepare(
        "synthetic",
        None,
        out,
        train_shard_size=16,
        eval_shard_size=5,
        synthetic_train=40,
        synthetic_val=12,
        synthetic_test=12,
        synthetic_unseen=12,
    )
    return config.source_dir


@pytest.fixture
def shards(synthetic_shards, tmp_path):
    """A private copy of the synthetic shards, free to damage."""
    copy = tmp_path / "data" / "synthetic"
    shutil.copytree(synthetic_shards, copy)
    return copy


# ------------------------------------------------------------------------ item 2: paths out of raw_dir


def test_image_paths_leaving_raw_dir_are_counted_and_never_read(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "raw"
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 40), SECRET_COLOUR).save(secret)
    write_hateful_memes(raw, n_per_split=4, faults=False)
    (raw / "img" / "link.png").symlink_to(secret)
    _hm_lines(
        raw,
        "train",
        [
            _hm_row(900, "../../secret.png", "up and out"),
            _hm_row(901, str(secret), "an absolute path"),
            _hm_row(902, "img/link.png", "a symlink out of raw_dir"),
        ],
    )
    opened = _spy_image_open(monkeypatch)
    config, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")

    train = manifest["splits"]["train"]
    assert train["skipped"] == {"path_outside_raw_dir": 3}
    assert train["num_samples"] == 4
    examples = train["skip_examples"]["path_outside_raw_dir"]
    assert "'../../secret.png'" in examples[0] and "train.jsonl:5" in examples[0]
    assert str(secret) in examples[1] and "'img/link.png'" in examples[2]
    assert len(opened) == 20  # every other image of the five splits was opened...
    assert str(secret.resolve()) not in opened  # ...never the one outside raw_dir
    members = _split_members(manifest, "train")
    assert _pixels_near(members, SECRET_COLOUR) == 0
    ids = {json.loads(d)["source_id"] for n, d in members.items() if n.endswith(".json")}
    assert not ids & {"900", "901", "902"}


def _escape_coco(raw: Path, secret: Path) -> None:
    path = raw / "annotations" / "captions_train2017.json"
    data = json.loads(path.read_text())
    data["images"].append({"id": 77, "file_name": os.path.relpath(secret, raw / "train2017")})
    data["annotations"].append({"id": 5, "image_id": 77, "caption": "a caption for a file out of reach"})
    path.write_text(json.dumps(data))


def _escape_fakeddit(raw: Path, secret: Path) -> None:
    post_id = os.path.relpath(secret, raw / "public_image_set").removesuffix(".jpg")
    row = dict.fromkeys(FAKEDDIT_COLUMNS, "")
    row.update({"": 99, "clean_title": "a title", "hasImage": "True", "id": post_id, "subreddit": "pics"})
    row.update({"2_way_label": 1, "3_way_label": 0, "6_way_label": 0})
    with open(raw / "multimodal_train.tsv", "a", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerow([row[c] for c in FAKEDDIT_COLUMNS])


def _escape_mmhs(raw: Path, secret: Path) -> None:
    tweet_id = os.path.relpath(secret, raw / "img_resized").removesuffix(".jpg")
    gt = json.loads((raw / "MMHS150K_GT.json").read_text())
    gt[tweet_id] = {"tweet_text": "a tweet", "labels": [0, 0, 0], "img_url": "", "tweet_url": ""}
    (raw / "MMHS150K_GT.json").write_text(json.dumps(gt))
    with open(raw / "splits" / "train_ids.txt", "a") as f:
        f.write(tweet_id + "\n")


@pytest.mark.parametrize(
    ("source", "writer", "escape"),
    [
        ("coco", write_coco, _escape_coco),
        ("fakeddit", write_fakeddit, _escape_fakeddit),
        ("mmhs150k", write_mmhs150k, _escape_mmhs),
    ],
)
def test_ids_and_file_names_leaving_the_image_folder_are_never_read(
    source, writer, escape, tmp_path, monkeypatch
):
    raw = tmp_path / "data" / "raw"
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (40, 40), SECRET_COLOUR).save(secret)
    planted = writer(raw, 4, faults=False)
    escape(raw, secret)
    opened = _spy_image_open(monkeypatch)
    _, manifest = _prepare(source, raw, tmp_path / "shards")
    train = manifest["splits"]["train"]
    assert train["skipped"] == {"path_outside_raw_dir": 1}
    assert train["num_samples"] == planted["splits"]["train"]["records"] == 4
    assert str(secret.resolve()) not in opened and len(opened) > 0
    assert _pixels_near(_split_members(manifest, "train"), SECRET_COLOUR) == 0


# ------------------------------------------------------------------ item 4: decompression bombs


def test_a_png_claiming_20000_by_20000_is_a_counted_skip(tmp_path):
    raw = tmp_path / "raw"
    planted = write_hateful_memes(raw, n_per_split=4, faults=False)
    bomb_id = next(iter(planted["splits"]["train"]["labels"]))
    (raw / "img" / f"{bomb_id}.png").write_bytes(_png_claiming(20000, 20000))
    _, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")
    train = manifest["splits"]["train"]
    assert train["skipped"] == {"image_too_large": 1}
    assert train["num_samples"] == 3
    (example,) = train["skip_examples"]["image_too_large"]
    assert f"{bomb_id}.png: more than the limit of 89,478,485 pixels" in example
    assert "400000000 pixels" in example  # PIL's own words: the header's 20000 x 20000
    assert all(manifest["splits"][s]["skipped"] == {} for s in ("dev_seen", "test_seen"))


def test_the_pixel_limit_holds_whatever_pil_is_told(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own bomb check switched off
    over, under = tmp_path / "over.png", tmp_path / "under.png"
    side = int(MAX_PIXELS**0.5)
    over.write_bytes(_png_claiming(side + 1, side + 1))
    under.write_bytes(_png_claiming(side, side))
    with pytest.raises(
        ImageDecodeError, match="9460x9460 = 89,491,600 pixels, more than the limit"
    ) as too_large:
        load_rgb(over)
    assert too_large.value.reason == "image_too_large"
    with pytest.raises(ImageDecodeError) as cut:  # under the limit: decoded, and found to be cut off
        load_rgb(under)
    assert cut.value.reason == "undecodable_image" and str(under) in str(cut.value)


# ------------------------------------------------------------------------- item 5: lone surrogates


def test_a_caption_with_a_lone_surrogate_is_repaired_and_counted(tmp_path):
    raw = tmp_path / "raw"
    write_hateful_memes(raw, n_per_split=4, faults=False)
    write_image(raw / "img" / "00950.png", 950, "PNG")
    _hm_lines(raw, "train", [_hm_row(950, "img/00950.png", "\ud83d half an emoji")])
    _, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")
    train = manifest["splits"]["train"]
    assert train["skipped"] == {} and train["num_samples"] == 5
    assert train["repaired"] == {"unencodable_text": 1}
    assert "'950'" in train["repair_examples"]["unencodable_text"][0]
    members = _split_members(manifest, "train")
    assert members["hateful_memes_train_950.txt"] == "\ufffd half an emoji".encode()


# ----------------------------------------------------------------------- item 6: nesting 200,000 deep


def test_a_jsonl_line_nested_200000_deep_is_a_counted_skip(tmp_path):
    raw = tmp_path / "raw"
    write_hateful_memes(raw, n_per_split=4, faults=False)
    deep = '{"id": 960, "img": "img/00960.png", "label": 0, "text": ' + "[" * 200_000 + "]" * 200_000 + "}"
    _hm_lines(raw, "train", [deep])
    _, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")
    train = manifest["splits"]["train"]
    assert train["skipped"] == {"nested_too_deep": 1} and train["num_samples"] == 4
    assert train["skip_examples"]["nested_too_deep"] == ["train.jsonl:5"]


def test_deep_nesting_in_whole_json_files(tmp_path):
    mmhs = tmp_path / "mmhs"
    planted = write_mmhs150k(mmhs, 4, faults=False)
    tweet_id = next(iter(planted["splits"]["train"]["labels"]))
    (mmhs / "img_txt" / f"{tweet_id}.json").write_text('{"img_text": ' + "[" * 200_000 + "]" * 200_000 + "}")
    _, manifest = _prepare("mmhs150k", mmhs, tmp_path / "s1")
    assert manifest["splits"]["train"]["skipped"] == {"malformed_ocr": 1}
    assert manifest["splits"]["train"]["num_samples"] == 4  # kept, without its OCR text

    coco = tmp_path / "coco"
    write_coco(coco, 2, faults=False)
    path = coco / "annotations" / "captions_val2017.json"
    path.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match="captions_val2017.json is not a valid JSON file: nested too deeply"):
        _prepare("coco", coco, tmp_path / "s2")


# --------------------------------------------------------------------------- item 7: injective keys


TRICKY_IDS = ["7.1", "7_1", "7 1", "7/1", "7_2e1", "7-1", "71", "é.jpg", "\ud83d", "..", "_"]


def test_encoded_ids_are_distinct_reversible_and_safe_as_keys():
    encoded = [encode_id(i) for i in TRICKY_IDS]
    assert len(set(encoded)) == len(TRICKY_IDS)
    assert [decode_id(e) for e in encoded] == TRICKY_IDS
    assert all(
        set(e) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") for e in encoded
    )
    assert (
        encode_id("7.1") == "7_2e1"
        and encode_id("7_1") == "7_5f1"
        and encode_id("train-000001") == "train-000001"
    )


def test_ids_differing_only_in_punctuation_stay_distinct_samples(tmp_path):
    raw = tmp_path / "raw"
    write_hateful_memes(raw, n_per_split=1, faults=False)
    ids = ["7.1", "7_1", "7 1", "7/1", "7_2e1"]
    rows = []
    for i, meme_id in enumerate(ids):
        write_image(raw / "img" / f"p{i}.png", i, "PNG")
        rows.append(_hm_row(meme_id, f"img/p{i}.png", f"meme {i}", label=i % 2))
    _hm_lines(raw, "dev_seen", rows)
    _, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")
    dev = manifest["splits"]["dev_seen"]
    assert dev["num_samples"] == 6 and dev["skipped"] == {}
    data = load_split([manifest], "dev_seen", 16)
    assert len(data) == 6 and data.skipped == {}
    prefix = "hateful_memes_dev_seen_"
    assert {decode_id(k.removeprefix(prefix)) for k in data.keys} >= set(ids)
    assert len(set(data.keys)) == 6


def _record(source_id: str, image, label=0, text="some text") -> Record:
    return Record(source="unit", source_id=source_id, split="train", text=text, label=label, image=image)


def test_a_key_collision_that_still_happens_is_counted_and_load_split_agrees(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (0, 90, 200)).save(good)
    out = tmp_path / "unit"
    records = [_record(i, good) for i in ["a", "b", "a", "c", "b"]]
    result = write_split(records, out, "train", shard_size=2, image_size=16, progress=False)
    assert result.num_samples == 3 and result.skipped == {"duplicate_key": 2}
    assert result.shards == ["train-00000.tar", "train-00001.tar"]  # the duplicates took no place
    write_manifest(out, "unit", 16, {"train": result}, {})
    data = load_split([out], "train", 16)
    assert len(data) == read_manifest(out)["splits"]["train"]["num_samples"] == 3

    stats = write_shard(tmp_path / "one.tar", [_record("x", good), _record("x", good)], 16)
    assert stats.num_samples == 1 and stats.skipped == {"duplicate_key": 1}


# ---------------------------------------------------------------- item 8: resume sees replaced inputs


def test_replacing_a_raw_image_rewrites_its_shard_and_only_that_one(tmp_path):
    raw = tmp_path / "raw"
    planted = write_hateful_memes(raw, n_per_split=4, faults=False)
    config, _ = _prepare("hateful_memes", raw, tmp_path / "shards", train_shard_size=2)
    first, second = config.source_dir / "train-00000.tar", config.source_dir / "train-00001.tar"
    last_id = list(planted["splits"]["train"]["labels"])[-1]  # in the second shard
    before = _tar_members(second)[f"hateful_memes_train_{last_id}.jpg"]
    for shard in (first, second):
        os.utime(shard, ns=(1, 1))

    Image.new("RGB", (64, 64), SECRET_COLOUR).save(raw / "img" / f"{last_id}.png")  # the repaired picture
    _prepare("hateful_memes", raw, tmp_path / "shards", train_shard_size=2)
    assert first.stat().st_mtime_ns == 1  # resumed
    assert second.stat().st_mtime_ns != 1  # written again
    after = _tar_members(second)[f"hateful_memes_train_{last_id}.jpg"]
    assert after != before
    assert _pixels_near({"new.jpg": after}, SECRET_COLOUR) == 32 * 32


def test_the_fingerprint_follows_image_size_and_modification_time(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    base = _fingerprint([_record("1", path)], 32)
    os.utime(path, ns=(5, 5))
    touched = _fingerprint([_record("1", path)], 32)
    with open(path, "ab") as f:
        f.write(b"\0")
    os.utime(path, ns=(5, 5))
    grown = _fingerprint([_record("1", path)], 32)
    assert len({base, touched, grown}) == 3
    assert _fingerprint([_record("1", path)], 32) == grown


# ----------------------------------------------------------------------- item 9: a shard cut in half


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory):
    """One synthetic train shard of 256 samples at 16 px, and the tar offsets of its members."""
    out = tmp_path_factory.mktemp("big")
    config, _ = _prepare(
        "synthetic",
        None,
        out,
        image_size=16,
        train_shard_size=256,
        synthetic_train=256,
        synthetic_val=1,
        synthetic_test=1,
        synthetic_unseen=1,
    )
    with tarfile.open(config.source_dir / "train-00000.tar") as tar:
        members = tar.getmembers()
    assert len(members) == 3 * 256
    return config.source_dir, members


@pytest.mark.parametrize("cut", ["inside_a_member", "between_samples"])
def test_a_shard_cut_in_half_is_counted_by_load_split(cut, big_shard, tmp_path):
    source, members = big_shard
    copy = tmp_path / "synthetic"
    shutil.copytree(source, copy)
    jpg = members[3 * 128]  # the first member of sample 128
    at = jpg.offset_data + jpg.size // 2 if cut == "inside_a_member" else jpg.offset
    shard = copy / "train-00000.tar"
    shard.write_bytes(shard.read_bytes()[:at])
    with pytest.warns(UserWarning, match=re.escape(f"{shard}: truncated_shard")):
        data = load_split([copy], "train", 16)
    assert len(data) == 128
    assert data.skipped == {"truncated_shard": 128}
    assert len(data) + sum(data.skipped.values()) == read_manifest(copy)["splits"]["train"]["num_samples"]


def test_a_missing_shard_is_counted(shards):
    (shards / "val-00001.tar").unlink()
    with pytest.warns(UserWarning, match="val-00001.tar: missing_shard"):
        data = load_split([shards], "val", 16)
    assert len(data) == 7 and data.skipped == {"missing_shard": 5}


# ------------------------------------------------------------------- item 10: labels in a shard json


def test_shard_json_labels_are_checked_when_read(shards):
    def relabel(name, data):
        key, ext = name.split(".", 1)
        if ext != "json":
            return [(name, data)]
        index = int(key[-2:])  # val keys end in their index
        bad = {0: 9, 1: -5, 2: "7", 3: 3.7, 4: True, 5: -1}
        meta = json.loads(data)
        if index in bad:
            meta["label"] = bad[index]
        return [(name, json.dumps(meta).encode())]

    for shard in ("val-00000.tar", "val-00001.tar"):
        _rewrite_tar(shards / shard, relabel)
    pipeline = make_pipeline([shards], "val", batch_size=64)
    with pytest.warns(UserWarning, match="invalid_label: label must be an int in 0..6 or -1, got 9"):
        keys = [k for batch in pipeline for k in batch["key"]]
    assert pipeline.skipped == {"invalid_label": 5, "unlabelled": 1}
    assert len(keys) == 12 - 6
    assert [int(k[-2:]) for k in keys] == [6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("label", [9, -5, "7", 3.7, True, None, 7])
def test_valid_label_rejects_everything_but_ints_in_range(label):
    with pytest.raises(Rejected, match="label must be an int in 0..6 or -1") as err:
        valid_label(label)
    assert err.value.reason == "invalid_label"


def test_the_writer_refuses_bad_labels_and_texts_from_any_reader(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (200, 0, 0)).save(good)
    records = [_record("ok", good, label=3)]
    records += [_record(f"l{i}", good, label=bad) for i, bad in enumerate([9, -5, "7", 3.7, True])]
    records += [_record(f"t{i}", good, text=bad) for i, bad in enumerate([None, 5, "   "])]
    result = write_split(records, tmp_path / "out", "train", shard_size=100, image_size=16, progress=False)
    assert result.num_samples == 1 and result.class_counts == {"Imposter Content": 1}
    assert result.skipped == {"invalid_label": 5, "invalid_text": 3}
    assert "id 'l2': label must be an int in 0..6 or -1, got '7'" in result.skip_examples["invalid_label"][2]


# ------------------------------------------------------------------- item 11: modes and bit depths


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 50, 32896], [65535, 65280, 1000]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # truly 16-bit on disk
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb == rgb[..., :1]).all()  # grey
    assert rgb[..., 0].tolist() == [[0, 50, 128], [255, 254, 4]]


def test_a_16_bit_grey_meme_reaches_the_shard_mid_grey(tmp_path):
    raw = tmp_path / "raw"
    planted = write_hateful_memes(raw, n_per_split=4, faults=False)
    meme_id = next(iter(planted["splits"]["train"]["labels"]))
    Image.fromarray(np.full((32, 32), 128 * 257, dtype=np.uint16)).save(raw / "img" / f"{meme_id}.png")
    _, manifest = _prepare("hateful_memes", raw, tmp_path / "shards")
    jpg = _split_members(manifest, "train")[f"hateful_memes_train_{meme_id}.jpg"]
    centre = np.asarray(Image.open(io.BytesIO(jpg)))[8:24, 8:24]
    assert np.abs(centre.astype(int) - 128).max() <= 2  # was 255: clipped to white


def test_transparency_alpha_cmyk_and_float_images_become_the_right_rgb(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # red is the transparent colour
    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255)])
    rgba.save(tmp_path / "rgba.png")
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (40, 255)])
    la.save(tmp_path / "la.png")
    Image.new("CMYK", (2, 1), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    Image.fromarray(np.array([[300.0, 12.4]], dtype=np.float32)).save(tmp_path / "f.tif")
    Image.new("1", (2, 1), 1).save(tmp_path / "bits.png")
    got = {
        name: np.asarray(load_rgb(tmp_path / name)).reshape(-1, 3).tolist() for name in os.listdir(tmp_path)
    }
    assert got == {
        "p.png": [[255, 255, 255], [0, 0, 255]],  # transparent -> white, not red
        "rgba.png": [[255, 255, 255], [0, 0, 255]],
        "la.png": [[255, 255, 255], [40, 40, 40]],
        "cmyk.tif": [[255, 0, 0], [255, 0, 0]],
        "f.tif": [[255, 255, 255], [12, 12, 12]],
        "bits.png": [[255, 255, 255], [255, 255, 255]],
    }


# --------------------------------------------------------------- item 12: non-UTF-8 Fakeddit titles


def test_non_utf8_fakeddit_titles_are_decoded_and_counted(tmp_path):
    raw = tmp_path / "raw"
    write_fakeddit(raw, 6, faults=False)

    def line(post_id: str, title: str) -> str:
        row = dict.fromkeys(FAKEDDIT_COLUMNS, "")
        row.update({"": 50, "clean_title": title, "hasImage": "True", "id": post_id, "subreddit": "pics"})
        row.update({"2_way_label": 1, "3_way_label": 0, "6_way_label": 0})
        buf = io.StringIO()
        csv.writer(buf, delimiter="\t", lineterminator="\n").writerow([row[c] for c in FAKEDDIT_COLUMNS])
        return buf.getvalue()

    for post_id in ("winq", "mixq"):
        write_image(raw / "public_image_set" / f"{post_id}.jpg", 3, "JPEG")
    with open(raw / "multimodal_train.tsv", "ab") as f:
        f.write(line("winq", "café “quoted” – ok").encode("cp1252"))  # a Windows-1252 row
        f.write(
            line("mixq", "naïve CAFE").encode("utf-8").replace(b"CAFE", b"caf\xe9")
        )  # UTF-8, one bad byte
    _, manifest = _prepare("fakeddit", raw, tmp_path / "shards")
    train = manifest["splits"]["train"]
    assert train["skipped"] == {} and train["num_samples"] == 8
    assert train["repaired"] == {"non_utf8_text": 2}
    assert train["repair_examples"]["non_utf8_text"] == ["multimodal_train.tsv:9", "multimodal_train.tsv:10"]
    members = _split_members(manifest, "train")
    assert members["fakeddit_train_winq.txt"].decode() == "café “quoted” – ok"
    assert members["fakeddit_train_mixq.txt"].decode() == "naïve café"
    assert all("\ufffd" not in d.decode() for n, d in members.items() if n.endswith(".txt"))


# ------------------------------------------------------- the loader's own checks on image and text


def test_the_loader_counts_oversized_images_and_bad_texts(shards):
    def spoil(name, data):
        key, ext = name.split(".", 1)
        index = int(key[-2:])
        if ext == "jpg" and index == 0:
            return [(name, _png_claiming(20000, 20000))]
        if ext == "txt" and index == 1:
            return [(name, b"\xff\xfe not UTF-8")]
        if ext == "txt" and index == 2:
            return [(name, b"   ")]
        return [(name, data)]

    _rewrite_tar(shards / "test-00000.tar", spoil)
    pipeline = make_pipeline([shards], "test", batch_size=64)
    with pytest.warns(UserWarning, match="test-00000.tar key synthetic_test_test-000000: image_too_large"):
        n = sum(len(batch["key"]) for batch in pipeline)
    assert pipeline.skipped == {"image_too_large": 1, "undecodable_text": 1, "invalid_text": 1}
    assert n == 12 - 3


# --------------------------------------------------------------------------------------- verify


def test_verify_passes_good_shards_with_status_0(shards, capsys):
    assert main([str(shards)]) == 0
    out = capsys.readouterr().out
    assert "OK: 12 shards, 4 splits, 76 samples match their manifests" in out
    assert f"ok    {shards / 'train-00002.tar'}  8 of 8 samples" in out
    report = check_shards(shards.parent)  # a data folder holding several sources
    assert report.ok and len(report.shards) == 12


def test_verify_fails_a_truncated_shard_and_names_it(shards, capsys):
    shard = shards / "train-00001.tar"
    with tarfile.open(shard) as tar:
        jpg = tar.getmembers()[3 * 8]  # the first member of the shard's ninth sample
    shard.write_bytes(shard.read_bytes()[: jpg.offset_data + jpg.size // 2])  # about half the shard
    assert main([str(shards)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {shard}  8 of 16 samples" in out and "truncated or unreadable after 8 samples" in out
    assert "holds 8 samples, sizes.json says 16" in out
    assert "FAIL  synthetic/train:" in out
    assert out.strip().endswith("FAILED: 1 of 12 shards and 1 of 4 splits do not match their manifests")


def test_verify_fails_a_wrong_label_and_names_shard_and_key(shards):
    def relabel(name, data):
        if name == "synthetic_val_val-000003.json":
            return [(name, json.dumps({**json.loads(data), "label": 9}).encode())]
        return [(name, data)]

    _rewrite_tar(shards / "val-00000.tar", relabel)
    with pytest.raises(ShardVerificationError) as err:
        check_shards(shards)
    message = str(err.value)
    assert f"FAIL  {shards / 'val-00000.tar'}" in message
    assert "synthetic_val_val-000003.json: label must be an int in 0..6 or -1, got 9" in message
    assert [c.path for c in err.value.report.shards if not c.ok] == [str(shards / "val-00000.tar")]


def test_verify_fails_count_mismatches_and_foreign_members(shards, capsys):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["test"]["num_samples"] = 13
    (shards / "manifest.json").write_text(json.dumps(manifest))

    def add_pickle(name, data):
        extra = (
            [("synthetic_unseen_unseen-000000.pyd", b"\x80\x04K\x01.")]
            if name.endswith("000000.json")
            else []
        )
        return [(name, data), *extra]

    _rewrite_tar(shards / "unseen-00000.tar", add_pickle)
    assert main([str(shards), "--failures-only"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  synthetic/test: 12 samples, manifest says 13" in out
    assert "sample count 12 != manifest's 13" in out
    assert f"FAIL  {shards / 'unseen-00000.tar'}" in out
    assert "member synthetic_unseen_unseen-000000.pyd: not one of jpg, txt, json" in out
    assert "ok  " not in out  # --failures-only
    report = verify(shards)
    assert sorted(c.split for c in report.splits if not c.ok) == ["test"]


def test_verify_usage_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'} is not a folder" in err and f"no manifest.json in {tmp_path}" in err
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_verify_runs_as_a_module_with_its_exit_status(shards):
    shard = shards / "val-00002.tar"
    shard.write_bytes(shard.read_bytes()[:700])
    run = subprocess.run(
        [sys.executable, "-m", "nbhelpers.data.verify", str(shards), "--failures-only"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    assert f"FAIL  {shard}  0 of 2 samples" in run.stdout


def test_skip_counter_keeps_repairs_apart_from_skips():
    skips = SkipCounter()
    skips.skip("missing_image", "a")
    skips.repair("non_utf8_text", "f.tsv:3")
    other = SkipCounter()
    other.skip("truncated_shard", "s.tar", count=128)
    other.repair("non_utf8_text", "f.tsv:9")
    skips.merge(other)
    assert dict(skips) == {"missing_image": 1, "truncated_shard": 128}
    assert dict(skips.repaired) == {"non_utf8_text": 2}
    assert skips.repair_examples == {"non_utf8_text": ["f.tsv:3", "f.tsv:9"]}

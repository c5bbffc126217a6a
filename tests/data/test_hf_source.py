"""Hugging Face datasets (``source=hf``), offline: local folders written in the tests through the same
``datasets`` calls a hub dataset is read with (``save_to_disk`` / ``load_from_disk``, parquet, JSON lines
and CSV folders through ``load_dataset``), and a raw-layout mirror fetched by the real
``huggingface_hub.snapshot_download`` in offline mode from a folder that already holds it."""

from __future__ import annotations

import io
import json
import tarfile

import datasets
import huggingface_hub
import pytest

from nbhelpers.config import ConfigError
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.sources import hf
from nbhelpers.data.taxonomy import CLASSES

from .fixtures import own_picture, write_hateful_memes

THREE = ("cat", "dog", "bird")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network and a private ``datasets`` cache, whatever the environment says."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def _png(label: int, index: int) -> bytes:
    buffer = io.BytesIO()
    own_picture(label, index).save(buffer, format="PNG")
    return buffer.getvalue()


def _columns(n: int, start: int = 0) -> dict[str, list]:
    """``n`` rows of class ``i % 3``: PNG bytes, a caption naming the class, the label index."""
    rows = range(start, start + n)
    return {
        "image": [_png(i % 3, i) for i in rows],
        "text": [f"a photo of a {THREE[i % 3]}" for i in rows],
        "label": [i % 3 for i in rows],
    }


IMAGE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(THREE)),
    }
)


def _saved(root, n_train=6, n_val=3):
    """A DatasetDict with an ``Image`` feature and a ``ClassLabel`` label, saved with ``save_to_disk``."""
    splits = {
        "train": datasets.Dataset.from_dict(_columns(n_train), features=IMAGE_FEATURES),
        "validation": datasets.Dataset.from_dict(_columns(n_val, start=100), features=IMAGE_FEATURES),
    }
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def _config(tmp_path, out="shards", **params) -> PrepareConfig:
    return PrepareConfig.from_params(
        "demo", source="hf", out_dir=str(tmp_path / out), image_size=32, workers=1, **params
    )


def _members(manifest: dict, split: str) -> list[tuple[str, bytes]]:
    out = []
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(f"{manifest['_dir']}/{shard}") as tar:
            out += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    return out


def _labels(manifest: dict, split: str) -> dict[str, int]:
    return {
        meta["source_id"]: meta["label"]
        for name, data in _members(manifest, split)
        if name.endswith(".json")
        for meta in [json.loads(data)]
    }


# ------------------------------------------------------------------------------------ save_to_disk


def test_saved_dataset_image_feature_and_class_label_to_a_custom_label_set(tmp_path):
    folder = _saved(tmp_path / "saved")
    config = _config(
        tmp_path, hf_dataset=str(folder), classes="cat,dog,bird", splits="train=train,val=validation"
    )
    manifest = prepare(config, progress=False)
    assert config.source_dir.name == "hf" and manifest["source"] == "hf"
    assert manifest["classes"] == list(THREE) and manifest["valid_pair_classes"] == [0, 1, 2]
    assert list(manifest["splits"]) == ["train", "val"]
    # no label_map: the ClassLabel's names are the class names
    assert manifest["splits"]["train"]["class_counts"] == {"cat": 2, "dog": 2, "bird": 2}
    assert manifest["splits"]["val"]["class_counts"] == {"cat": 1, "dog": 1, "bird": 1}
    assert _labels(manifest, "val") == {"0": 1, "1": 2, "2": 0}  # rows 100, 101, 102: ids are row numbers
    assert all(info["skipped"] == {} for info in manifest["splits"].values())


def test_label_map_to_the_seven_classes_by_index_and_by_class_label_name(tmp_path):
    folder = _saved(tmp_path / "saved")
    config = _config(tmp_path, hf_dataset=str(folder), label_map="0:True/Neutral,dog:Hate")
    manifest = prepare(config, progress=False)
    assert manifest["classes"] == list(CLASSES) and manifest["valid_pair_classes"] == [0]
    assert list(manifest["splits"]) == ["train", "validation"]  # no splits: the dataset's own names
    train = manifest["splits"]["train"]
    assert train["class_counts"] == {"True/Neutral": 2, "Hate": 2}
    assert train["skipped"] == {"unmapped_label": 2}
    # one example per distinct label, with its ClassLabel name
    assert train["skip_examples"]["unmapped_label"] == ["train[2] label '2' (ClassLabel name 'bird')"]


@pytest.mark.parametrize("kind", ["saved", "parquet"])
def test_streaming_and_not_write_the_same_shards(tmp_path, kind):
    if kind == "saved":
        folder = _saved(tmp_path / "data", n_train=7)
    else:
        folder = tmp_path / "data"
        datasets.Dataset.from_dict(_columns(7), features=IMAGE_FEATURES).to_parquet(
            str(folder / "train.parquet")
        )
    params = {
        "hf_dataset": str(folder),
        "classes": "cat,dog,bird",
        "splits": "train=train",
        "train_shard_size": 3,
    }
    plain = prepare(_config(tmp_path, "plain", **params), progress=False)
    streamed = prepare(_config(tmp_path, "streamed", streaming=True, **params), progress=False)
    assert plain["splits"]["train"]["shards"] == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
    assert streamed["splits"] == plain["splits"]
    assert _members(streamed, "train") == _members(plain, "train")
    assert len(_members(plain, "train")) == 3 * 7
    # with a limit, streaming stops reading early and still agrees
    limited = prepare(_config(tmp_path, "limited", streaming=True, limit=4, **params), progress=False)
    assert _members(limited, "train") == _members(plain, "train")[: 3 * 4]


# ------------------------------------------------------------------------ folders of parquet, jsonl, csv


@pytest.mark.parametrize("cell", ["binary", "struct"])
def test_parquet_folder_of_image_bytes_or_image_structs(tmp_path, cell):
    folder = tmp_path / "pq"
    folder.mkdir()
    # a plain binary column (not a datasets Image feature), or the {"bytes", "path"} struct as another
    # library writes it; each split has one empty image
    for split, start in (("train", 0), ("test", 10)):
        columns = _columns(4, start)
        if cell == "struct":
            columns["image"] = [{"bytes": b, "path": None} for b in columns["image"][:3]] + [
                {"bytes": None, "path": None}
            ]
        else:
            columns["image"][3] = b""
        datasets.Dataset.from_dict(columns).to_parquet(str(folder / f"{split}.parquet"))
    config = _config(tmp_path, hf_dataset=str(folder), label_map="0:cat,1:dog,2:bird", classes="cat,dog,bird")
    manifest = prepare(config, progress=False)
    assert list(manifest["splits"]) == ["train", "test"]  # datasets names splits after the files
    assert manifest["splits"]["train"]["class_counts"] == {"cat": 1, "dog": 1, "bird": 1}
    assert manifest["splits"]["test"]["class_counts"] == {"dog": 1, "bird": 1, "cat": 1}
    assert (
        manifest["splits"]["train"]["skipped"]
        == manifest["splits"]["test"]["skipped"]
        == {"missing_image": 1}
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_folder_of_rows_naming_image_files(tmp_path, fmt):
    folder = tmp_path / "rows"
    (folder / "img").mkdir(parents=True)
    for i in range(4):
        own_picture(i % 3, i).save(folder / "img" / f"{i}.png")
    rows = {
        "uid": ["m0", "m1", "m2", "m3", "m4", "m5"],
        "file": ["img/0.png", "img/1.png", "img/2.png", "img/3.png", "img/404.png", "../outside.png"],
        "caption": ["a cat", "a dog", "a bird", " ", "a cat", "a cat"],
        "animal": ["cat", "dog", "bird", "cat", "cat", "cat"],
    }
    table = datasets.Dataset.from_dict(rows)
    (table.to_json if fmt == "jsonl" else table.to_csv)(str(folder / f"train.{fmt}"))
    params = {
        "hf_dataset": str(folder),
        "image_column": "file",
        "text_column": "caption",
        "label_column": "animal",
        "id_column": "uid",
        "classes": "cat,dog,bird",
    }
    for streaming in (False, True):
        manifest = prepare(_config(tmp_path, f"s{streaming}", streaming=streaming, **params), progress=False)
        train = manifest["splits"]["train"]
        assert _labels(manifest, "train") == {"m0": 0, "m1": 1, "m2": 2}
        assert train["skipped"] == {"empty_text": 1, "missing_image": 1, "path_outside_raw_dir": 1}


def test_image_paths_of_a_hub_dataset_are_read_from_raw_dir(tmp_path):
    # raw_dir names the folder paths are relative to (for a hub dataset, there is no other)
    folder, images = tmp_path / "rows", tmp_path / "pictures"
    images.mkdir()
    own_picture(0, 0).save(images / "a.png")
    datasets.Dataset.from_dict({"image": ["a.png"], "text": ["a cat"], "label": ["cat"]}).to_json(
        str(folder / "train.jsonl")
    )
    config = _config(tmp_path, hf_dataset=str(folder), raw_dir=str(images), classes="cat,dog")
    assert prepare(config, progress=False)["splits"]["train"]["num_samples"] == 1


# -------------------------------------------------------------------------------- raw-layout mirror


def test_raw_layout_mirror_from_a_local_folder_is_that_source(tmp_path):
    planted = write_hateful_memes(tmp_path / "mirror")
    mirrored = prepare(
        _config(
            tmp_path, "a", hf_dataset=str(planted["raw_dir"]), hf_layout="hateful_memes",
            max_skipped_fraction=1,  # the fixture plants more faults than good rows
        ),
        False,
    )  # fmt: skip
    direct = PrepareConfig.from_params(
        "demo", source="hateful_memes", raw_dir=str(planted["raw_dir"]), out_dir=str(tmp_path / "b"),
        image_size=32, workers=1, max_skipped_fraction=1,
    )  # fmt: skip
    expected = prepare(direct, progress=False)
    assert mirrored["_dir"] == str(tmp_path / "a" / "hateful_memes")
    assert mirrored["source"] == "hateful_memes" and mirrored["splits"] == expected["splits"]
    assert _members(mirrored, "train") == _members(expected, "train")


def test_raw_layout_mirror_fetched_with_snapshot_download_offline(tmp_path):
    # Offline, snapshot_download(local_dir=raw_dir) returns a raw_dir that already holds the repository
    # (an earlier download); this runs the real call, with the real repo_type and local_dir.
    planted = write_hateful_memes(tmp_path / "download")
    config = _config(
        tmp_path,
        hf_dataset="neuralcatcher/hateful_memes",
        hf_layout="hateful_memes",
        raw_dir=str(planted["raw_dir"]),
        max_skipped_fraction=1,  # the fixture plants more faults than good rows
    )
    manifest = prepare(config, progress=False)
    assert (
        manifest["splits"]["train"]["num_samples"] == planted["splits"]["train"]["records"] - 2
    )  # 2 undecodable
    assert manifest["config"]["hf_dataset"] == "neuralcatcher/hateful_memes"


def test_an_unfetchable_repository_is_named(tmp_path):
    config = _config(
        tmp_path, hf_dataset="owner/absent", hf_layout="hateful_memes", raw_dir=str(tmp_path / "dl")
    )
    with pytest.raises(
        FileNotFoundError, match="hf_dataset: cannot fetch the dataset repository 'owner/absent'"
    ):
        prepare(config, progress=False)


def test_an_unloadable_dataset_is_named(tmp_path):
    config = _config(tmp_path, hf_dataset="owner/absent")
    with pytest.raises(FileNotFoundError, match="hf_dataset: cannot load 'owner/absent'"):
        prepare(config, progress=False)


# -------------------------------------------------------------------------------- refused parameters


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "hf_dataset: required for source 'hf'"),
        ({"hf_dataset": "o/n", "hf_layout": "hateful_memes"}, "raw_dir: required to download 'o/n' into"),
        ({"hf_dataset": "o/n", "hf_layout": "imagenet"}, "hf_layout: 'imagenet' is not allowed"),
        (
            {"hf_dataset": "o/n", "hf_layout": "coco", "raw_dir": "x", "label_map": "0:Hate"},
            "label_map: only for",
        ),
        ({"hf_dataset": "o/n", "splits": "train-a=train"}, "splits: 'train-a' cannot name a split"),
        ({"hf_dataset": "o/n", "splits": "train"}, "splits: 'train' is not key=value"),
        ({"hf_dataset": "o/n", "own_files": "t=t.csv"}, "own_files: only for source 'own'"),
        ({"hf_dataset": "o/n", "raw_dir": "/no/such/folder"}, "raw_dir: '/no/such/folder' is not a folder"),
        ({"hf_dataset": "o/n", "streaming": "yes"}, "streaming: expected bool"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(tmp_path, params, message):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, **params)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"splits": "train=train,test=test"},
            "splits: {} has no split 'test'; its splits: train, validation",
        ),
        (
            {"image_column": "img"},
            "image_column: no column 'img' in {} split 'train'; its columns: image, text, label",
        ),
        ({"id_column": "uid"}, "id_column: no column 'uid' in {} split 'train'"),
    ],
)
def test_splits_and_columns_the_dataset_lacks_stop_before_any_shard(tmp_path, params, message):
    folder = _saved(tmp_path / "saved", n_train=1, n_val=1)
    config = _config(tmp_path, hf_dataset=str(folder), classes="cat,dog,bird", **params)
    with pytest.raises(ValueError) as caught:
        prepare(config, progress=False)
    assert message.format(folder) in str(caught.value)
    assert not (tmp_path / "shards").exists()


def test_hf_module_interface():
    assert hf.NAME == "hf" and hf.SPLITS is None
    assert set(hf.LAYOUTS) == {"hateful_memes", "mmhs150k", "fakeddit", "coco"}
    for example in hf.EXAMPLES.values():
        PrepareConfig.from_params("demo", **{**example, "raw_dir": example.get("raw_dir") and "."})

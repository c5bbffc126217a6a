"""Your own data (``source=own``): a folder of images plus CSV / JSON lines / parquet tables, through
prepare() to shards whose manifest records the label set."""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from pathlib import Path

import nbformat
import pytest
from papermill.translators import PythonTranslator
from PIL import Image

from nbhelpers.config import ConfigError
from nbhelpers.data.loader import make_pipeline
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.records import SkipCounter
from nbhelpers.data.sources import own
from nbhelpers.data.sources._rows import (
    EmbeddedImage,
    Row,
    RowSpec,
    build_label_map,
    label_key,
    parse_mapping,
    parse_names,
    records_from_rows,
)
from nbhelpers.data.taxonomy import CLASSES, SEVEN_CLASSES, LabelSet
from nbhelpers.data.verify import check_shards
from nbhelpers.parameters import assigned_names
from nbhelpers.train.recipes import clip
from nbhelpers.train.recipes.config import manifests

from .fixtures import OWN_COLOURS, own_picture, write_own_dataset

THREE = ("cat", "dog", "bird")


def _config(tmp_path, **params) -> PrepareConfig:
    return PrepareConfig.from_params(
        "demo", out_dir=str(tmp_path / "shards"), image_size=32, workers=1, **params
    )


def _members(manifest: dict, split: str) -> list[tuple[str, bytes]]:
    """Every member of a split's shards, in order: (name, bytes)."""
    out = []
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(f"{manifest['_dir']}/{shard}") as tar:
            out += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    return out


def _jsons(manifest: dict, split: str) -> dict[str, dict]:
    return {
        meta["source_id"]: meta
        for name, data in _members(manifest, split)
        if name.endswith(".json")
        for meta in [json.loads(data)]
    }


# ---------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    """The own-data fixture with faults, 3 classes, converted once at 32 px (workers=2: records pickled)."""
    root = tmp_path_factory.mktemp("own")
    written = write_own_dataset(root / "raw", n_per_split=6, faults=True)
    config = PrepareConfig.from_params(
        "demo",
        out_dir=str(root / "shards"),
        image_size=32,
        workers=2,
        max_skipped_fraction=1,  # the fixture plants more faults than good rows
        **written["prepare"],
    )
    return written, config, prepare(config, progress=False)


def test_three_classes_end_to_end_manifest_records_the_label_set(three_class):
    written, config, manifest = three_class
    assert config.source_dir.name == "own" and manifest["source"] == "own"
    assert manifest["classes"] == ["cat", "dog", "bird"]
    assert manifest["valid_pair_classes"] == [0, 1, 2]  # default: every pair of your own classes is valid
    assert list(manifest["splits"]) == ["train", "val", "test"]
    for split in ("train", "val", "test"):
        info = manifest["splits"][split]
        assert info["num_samples"] == 6
        assert info["class_counts"] == {"cat": 2, "dog": 2, "bird": 2}
    assert manifest["splits"]["train"]["skipped"] == {
        "unmapped_label": 1,
        "missing_label": 1,
        "empty_text": 1,
        "missing_image": 1,
        "path_outside_raw_dir": 2,
        "duplicate_id": 1,
    }
    assert manifest["splits"]["train"]["skipped"] == written["splits"]["train"]["skips"]
    assert manifest["splits"]["val"]["skipped"] == manifest["splits"]["test"]["skipped"] == {}


def test_samples_carry_their_class_caption_and_picture(three_class):
    written, _, manifest = three_class
    for split in ("train", "val", "test"):
        metas = _jsons(manifest, split)
        assert {sid: m["label"] for sid, m in metas.items()} == written["splits"][split]["labels"]
        for meta in metas.values():
            assert meta["label_name"] == THREE[meta["label"]]
            assert meta["valid_pair"] is True and meta["source_label"] == THREE[meta["label"]]
            assert ("image_sha1" in meta) == (split == "test")  # parquet bytes vs image files
        members = dict(_members(manifest, split))
        for name, data in members.items():
            if name.endswith(".txt"):
                key = name.removesuffix(".txt")
                meta = json.loads(members[f"{key}.json"])
                assert data.decode() == written["splits"][split]["texts"][meta["source_id"]]
                assert THREE[meta["label"]] in data.decode()
                # the picture's figure has the class's colour: the most saturated pixel is close to it
                img = Image.open(io.BytesIO(members[f"{key}.jpg"])).convert("RGB")
                pixel = max(img.getdata(), key=lambda p: max(p) - min(p))
                assert sum(abs(a - b) for a, b in zip(pixel, OWN_COLOURS[meta["label"]])) < 60


def test_shards_verify_and_load_with_their_classes(three_class):
    _, config, manifest = three_class
    assert check_shards(config.source_dir).ok
    batch = next(iter(make_pipeline([manifest], "val", batch_size=64)))
    assert batch["label"].tolist() == [0, 1, 2, 0, 1, 2]
    assert batch["valid_pair"].tolist() == [True] * 6


def test_a_rerun_resumes_and_writes_the_same_manifest(three_class):
    _, config, manifest = three_class
    again = prepare(config, progress=False)
    assert again["splits"] == manifest["splits"]


# ------------------------------------------------------------------------------- label maps and sets


def test_label_map_to_the_seven_classes(tmp_path):
    written = write_own_dataset(
        tmp_path / "raw", classes=("calm", "hateful"), n_per_split=4, label_values=(0, 1)
    )
    params = dict(written["prepare"], classes="", label_map="0:True/Neutral,1:Hate")
    manifest = prepare(_config(tmp_path, **params), progress=False)
    assert manifest["classes"] == list(CLASSES) and manifest["valid_pair_classes"] == [0]
    for split in ("train", "val", "test"):
        assert manifest["splits"][split]["class_counts"] == {"True/Neutral": 2, "Hate": 2}
    metas = _jsons(manifest, "test")
    assert sorted((m["label"], m["source_label"], m["valid_pair"]) for m in metas.values()) == [
        (0, "0", True),
        (0, "0", True),
        (6, "1", False),
        (6, "1", False),
    ]


def test_label_map_to_a_custom_set_with_some_valid_pairs_and_unlabelled(tmp_path):
    written = write_own_dataset(tmp_path / "raw", n_per_split=6, label_values=("c", "d", "b"))
    params = dict(
        written["prepare"],
        label_map={"c": "cat", "d": "dog", "b": "unlabelled"},
        valid_pair_classes="cat",
    )
    manifest = prepare(_config(tmp_path, **params), progress=False)
    assert manifest["classes"] == list(THREE) and manifest["valid_pair_classes"] == [0]
    assert manifest["splits"]["val"]["class_counts"] == {"cat": 2, "dog": 2, "unlabelled": 2}


def test_unmapped_labels_are_skipped_and_counted(tmp_path):
    written = write_own_dataset(tmp_path / "raw", n_per_split=6, label_values=(0, 1, 2))
    params = dict(written["prepare"], classes="cat,dog", label_map="0:cat,1:dog")
    manifest = prepare(_config(tmp_path, **params), progress=False)
    for split in ("train", "val", "test"):
        assert manifest["splits"][split]["class_counts"] == {"cat": 2, "dog": 2}
        assert manifest["splits"][split]["skipped"] == {"unmapped_label": 2}
    # one example per distinct label value
    assert manifest["splits"]["val"]["skip_examples"]["unmapped_label"] == ["val.jsonl:3 label '2'"]


# ---------------------------------------------------------------------------- one table, split column


def _write_table(root, rows, name="annotations.csv"):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        own_picture(i % 2, i).save(root / f"{i}.png")
    with open(root / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "text", "y", "part"])
        writer.writeheader()
        writer.writerows(rows)


TABLE = [
    {"file": "0.png", "text": "zero", "y": "a", "part": "tr"},
    {"file": "1.png", "text": "one", "y": "b", "part": "te"},
    {"file": "2.png", "text": "two", "y": "a", "part": "tr"},
    {"file": "3.png", "text": "three", "y": "b", "part": ""},
    {"file": "3.png", "text": "three", "y": "b", "part": "tr"},
]
TABLE_PARAMS = {
    "source": "own",
    "own_files": "annotations.csv",
    "split_column": "part",
    "image_column": "file",
    "label_column": "y",
    "classes": "a,b",
}


def test_one_table_with_a_split_column_splits_by_its_values(tmp_path):
    _write_table(tmp_path / "raw", TABLE)
    manifest = prepare(_config(tmp_path, raw_dir=str(tmp_path / "raw"), **TABLE_PARAMS), progress=False)
    assert list(manifest["splits"]) == ["tr", "te"]  # first appearance
    assert manifest["splits"]["tr"]["class_counts"] == {"a": 2, "b": 1}
    assert manifest["splits"]["tr"]["skipped"] == {"missing_split": 1}  # counted once, in the first split
    assert manifest["splits"]["te"]["skipped"] == {}
    # no id column: the id is the row's line in the file (the header is line 1)
    assert sorted(_jsons(manifest, "tr")) == ["2", "4", "6"]
    assert sorted(_jsons(manifest, "te")) == ["3"]


def test_splits_map_the_split_column_values_to_our_names(tmp_path):
    _write_table(tmp_path / "raw", TABLE)
    config = _config(tmp_path, raw_dir=str(tmp_path / "raw"), splits="train=tr,test=te", **TABLE_PARAMS)
    manifest = prepare(config, progress=False)
    assert list(manifest["splits"]) == ["train", "test"]
    assert [manifest["splits"][s]["num_samples"] for s in ("train", "test")] == [3, 1]
    bad = _config(tmp_path, raw_dir=str(tmp_path / "raw"), splits="train=tr,test=tst", **TABLE_PARAMS)
    with pytest.raises(ValueError, match=r"splits: 'tst' never occur in column 'part' of annotations.csv"):
        prepare(bad, progress=False)


def test_json_tsv_and_malformed_rows(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    own_picture(0, 0).save(raw / "a.png")
    (raw / "rows.json").write_text(
        json.dumps([{"img": "a.png", "text": "ok", "label": "x"}, ["not", "a", "row"], {"img": "a.png"}])
    )
    (raw / "rows.tsv").write_text(
        "img\ttext\tlabel\na.png\tok\tx\na.png\ttoo\tmany\tfields\n\na.png\tok2\tx\n"
    )
    (raw / "rows.jsonl").write_text('{"img": "a.png", "text": "ok", "label": "x"}\n\n{"img": \n')
    config = _config(
        tmp_path,
        source="own",
        raw_dir=str(raw),
        own_files="json=rows.json,tsv=rows.tsv,jsonl=rows.jsonl",
        image_column="img",
        classes="x,y",
        max_skipped_fraction=1,  # one good row in three
    )
    manifest = prepare(config, progress=False)
    splits = manifest["splits"]
    assert splits["json"]["num_samples"] == 1
    assert splits["json"]["skipped"] == {"malformed_row": 1, "missing_label": 1}
    assert splits["tsv"]["num_samples"] == 2 and splits["tsv"]["skipped"] == {"malformed_row": 1}
    assert sorted(_jsons(manifest, "tsv")) == ["2", "5"]  # line numbers; the blank line is no row
    assert splits["jsonl"]["num_samples"] == 1
    assert splits["jsonl"]["skipped"] == {"blank_line": 1, "malformed_row": 1}


# -------------------------------------------------------------------------------- refused parameters


@pytest.fixture
def own_raw(tmp_path):
    return write_own_dataset(tmp_path / "raw", n_per_split=3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"own_files": ""}, "own_files: name the annotation tables"),
        ({"own_files": "train=train.xlsx"}, "own_files: 'train.xlsx' is not a table this reader knows"),
        ({"own_files": "train-set=train.csv"}, "own_files: 'train-set' cannot name a split"),
        ({"own_files": "train.csv"}, "split_column: required when own_files names one table"),
        ({"split_column": "label"}, "split_column: only with one table in own_files"),
        ({"splits": "train=train"}, "splits: own_files already names each split's table"),
        ({"label_map": "0:cat,1:lion"}, "label_map: '1' maps to 'lion', which is not a class"),
        ({"label_map": "0"}, "label_map: '0' is not key:value"),
        ({"label_map": '{"0": "cat"'}, "label_map: not a valid JSON object"),
        ({"label_map": {"0": 3}}, "label_map: the value of '0' must be a string"),
        ({"label_map": "0:cat,0.0:dog"}, "label_map: '0.0' is given twice"),
        ({"label_map": 5}, "label_map: 5 has the wrong type"),
        ({"classes": "cat"}, "classes: a label set needs at least 2 classes"),
        ({"classes": "cat,cat"}, "classes: class names must be unique"),
        ({"valid_pair_classes": "lion"}, "valid_pair_classes: valid-pair classes ['lion'] are not among"),
        ({"image_column": " "}, "image_column: name the column"),
        ({"raw_dir": ""}, "raw_dir: required for source 'own'"),
        ({"hf_dataset": "owner/name"}, "hf_dataset: only for source 'hf'"),
        ({"streaming": True}, "streaming: only for source 'hf'"),
        (
            {"source": "synthetic", "raw_dir": ""},
            "label_map: only for source 'hf' (without hf_layout) or 'own'",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(own_raw, tmp_path, params, message):
    base = dict(own_raw["prepare"], label_map="0:cat,1:dog")
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, **{**base, **params})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"own_files": "train=../train.csv"}, ValueError, "own_files: '../train.csv' is outside raw_dir"),
        ({"own_files": "train=nothere.csv"}, FileNotFoundError, "own: missing nothere.csv"),
        (
            {"text_column": "text"},
            ValueError,
            "text_column: no column 'text' in train.csv; its columns: image, caption, label, id",
        ),
        ({"id_column": "uid"}, ValueError, "id_column: no column 'uid' in train.csv"),
        ({"own_files": "a.csv", "split_column": "part"}, FileNotFoundError, "own: missing a.csv"),
    ],
)
def test_tables_that_do_not_fit_stop_before_any_shard(own_raw, tmp_path, params, error, message):
    config = _config(tmp_path, **{**own_raw["prepare"], **params})
    with pytest.raises(error, match=re.escape(message)):
        prepare(config, progress=False)
    assert not (tmp_path / "shards").exists()


def test_a_split_column_absent_from_the_table_is_named(tmp_path):
    _write_table(tmp_path / "raw", TABLE)
    config = _config(tmp_path, raw_dir=str(tmp_path / "raw"), **{**TABLE_PARAMS, "split_column": "fold"})
    with pytest.raises(ValueError, match="split_column: no column 'fold' in annotations.csv"):
        prepare(config, progress=False)


def test_literal_forms_of_the_parameters_agree():
    assert parse_mapping("0:True/Neutral, 1:Hate", "label_map") == {"0": "True/Neutral", "1": "Hate"}
    assert parse_mapping('{"0": "True/Neutral", "1": "Hate"}', "label_map") == {
        "0": "True/Neutral",
        "1": "Hate",
    }
    assert parse_mapping({0: "True/Neutral", 1: "Hate"}, "label_map") == {"0": "True/Neutral", "1": "Hate"}
    assert parse_mapping("a:b:c", "label_map") == {"a": "b:c"}  # cut at the first separator
    assert parse_mapping("", "label_map") == {}
    assert parse_names("cat, dog ,bird", "classes") == THREE
    assert parse_names('["a,b", "c"]', "classes") == ("a,b", "c")
    assert parse_names(["cat", "dog"], "classes") == ("cat", "dog")
    assert [label_key(v) for v in (1, 1.0, "1", " 1.0 ", True, "Hate ", None, "", float("nan"), 0.5)] == [
        "1",
        "1",
        "1",
        "1",
        "true",
        "Hate",
        None,
        None,
        None,
        "0.5",
    ]
    # from the CLI, a JSON object becomes a dict; from papermill -p, a string: the same config
    a = PrepareConfig.from_params("demo", source="own", raw_dir=".", own_files="t=t.csv", label_map="1:Hate")
    b = PrepareConfig.from_params(
        "demo", source="own", raw_dir=".", own_files="t=t.csv", label_map={"1": "Hate"}
    )
    assert a.row_spec().label_map == b.row_spec().label_map == {"1": 6}


def test_build_label_map_defaults_to_the_class_names():
    assert build_label_map(None, SEVEN_CLASSES) == {name: i for i, name in enumerate(CLASSES)}
    assert build_label_map({}, LabelSet.from_names(THREE)) == {"cat": 0, "dog": 1, "bird": 2}


# ------------------------------------------------------------------------------------ the row reader


def test_image_cells_of_every_kind(tmp_path):
    own_picture(0, 0).save(tmp_path / "a.png")
    buffer = io.BytesIO()
    own_picture(1, 1).save(buffer, format="PNG")
    png = buffer.getvalue()
    spec = RowSpec("own", "image", "text", "label", label_map={"x": 0}, image_root=tmp_path)
    cells = [
        "a.png",
        png,
        {"bytes": png, "path": "ignored.png"},
        {"bytes": None, "path": "a.png"},
        own_picture(2, 2),
        "",
        None,
        b"",
        "b.png",
        "../a.png",
        str(tmp_path / "a.png"),
        42,
    ]
    rows = [Row(i, f"t:{i}", {"image": c, "text": "t", "label": "x"}) for i, c in enumerate(cells)]
    skips = SkipCounter()
    records = list(records_from_rows(rows, "train", spec, skips))
    assert [r.source_id for r in records] == ["0", "1", "2", "3", "4"]
    assert records[0].image == records[3].image == (tmp_path / "a.png").resolve()
    assert all(isinstance(r.image, EmbeddedImage) for r in records[1:3] + records[4:5])
    assert records[1].image().size == own_picture(1, 1).size
    assert records[1].meta["image_sha1"] == records[2].meta["image_sha1"]
    assert dict(skips) == {"missing_image": 4, "path_outside_raw_dir": 2, "malformed_row": 1}


def test_image_paths_without_a_folder_stop_naming_image_column():
    spec = RowSpec("hf", "picture", "text", "label", label_map={"x": 0})
    rows = [Row(0, "train[0]", {"picture": "img/1.png", "text": "t", "label": "x"})]
    with pytest.raises(ValueError, match="image_column: 'picture' holds file paths .* set raw_dir"):
        list(records_from_rows(rows, "train", spec, SkipCounter()))


def test_ids_keep_their_spelling_and_repeats_are_skipped():
    spec = RowSpec("own", "image", "text", "label", id_column="id", label_map={"x": 0})
    cells = ["01235", "1235", 7, 7.0, " ", None, "01235"]
    rows = [
        Row(i, f"t:{i}", {"id": c, "image": b"x", "text": "t", "label": "x"}) for i, c in enumerate(cells)
    ]
    skips = SkipCounter()
    assert [r.source_id for r in records_from_rows(rows, "s", spec, skips)] == ["01235", "1235", "7"]
    assert dict(skips) == {"duplicate_id": 2, "missing_id": 2}


# ------------------------------------------------------------------------- recipes read dynamic splits


def test_recipe_splits_of_own_data_are_checked_against_its_manifest(three_class):
    _, config, _ = three_class
    data_dir = str(config.source_dir.parent)
    # at config time the splits of own data are unknown: nothing to refuse yet
    recipe = clip.ClipConfig.from_params("demo", data_dir=data_dir, sources="own", eval_splits="test,unseen")
    with pytest.raises(
        ConfigError, match="eval_splits: 'unseen' is not a split of 'own'; it has: train, val, test"
    ):
        manifests(recipe)
    recipe = clip.ClipConfig.from_params("demo", data_dir=data_dir, sources="own", eval_splits="val,test")
    assert [m["source"] for m in manifests(recipe)] == ["own"]


def test_papermill_reads_every_parameter_of_notebook_01():
    # papermill skips (with a warning) a parameters line holding a second "=", so no help may hold one
    notebook = nbformat.read(
        Path(__file__).parents[2] / "notebooks" / "01_prepare_webdataset.ipynb", as_version=4
    )
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert [p.name for p in PythonTranslator.inspect(cell)] == assigned_names(cell.source)


def test_own_module_interface():
    assert own.NAME == "own" and own.SPLITS is None
    assert callable(own.check) and callable(own.splits) and callable(own.read)

"""Tests of the four real-format readers on fixtures written in each dataset's on-disk format."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from nbhelpers.data.image import ImageDecodeError, load_rgb
from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources import coco, fakeddit, get_source, hateful_memes, mmhs150k
from nbhelpers.data.taxonomy import class_name
from tests.data.fixtures import (
    FAKEDDIT_COLUMNS,
    SIZES,
    write_coco,
    write_fakeddit,
    write_hateful_memes,
    write_mmhs150k,
)

WRITERS = {
    "hateful_memes": write_hateful_memes,
    "mmhs150k": write_mmhs150k,
    "fakeddit": write_fakeddit,
    "coco": write_coco,
}

# What read() must yield and skip on the default fixtures, written out so that a fixture that
# miscounts its own faults cannot agree with a reader that miscounts them the same way.
EXPECTED = {
    "hateful_memes": {
        "train": (
            6,
            {
                "blank_line": 1,
                "malformed_row": 2,
                "unknown_label": 1,
                "empty_text": 1,
                "missing_image": 1,
                "missing_label": 1,
            },
        ),
        "dev_seen": (4, {"duplicate_id": 1}),
        "dev_unseen": (4, {}),
        "test_seen": (4, {}),
        "test_unseen": (4, {"empty_text": 1}),
    },
    "mmhs150k": {
        "train": (
            8,
            {
                "blank_line": 1,
                "unknown_id": 1,
                "missing_image": 1,
                "empty_text": 1,
                "unknown_label": 2,
                "malformed_row": 1,
                "malformed_ocr": 1,
            },
        ),
        "val": (4, {"duplicate_id": 1}),
        "test": (4, {}),
    },
    "fakeddit": {
        "train": (
            8,
            {
                "blank_line": 1,
                "malformed_row": 1,
                "no_image": 1,
                "empty_text": 1,
                "unknown_label": 1,
                "missing_image": 1,
            },
        ),
        "val": (6, {"malformed_row": 1}),
        "test": (6, {}),
    },
    "coco": {
        "train": (
            7,
            {"malformed_row": 2, "unknown_id": 1, "empty_text": 1, "no_caption": 1, "missing_image": 1},
        ),
        "val": (4, {"duplicate_id": 1}),
    },
}
SOURCE_SPLITS = [(name, split) for name, splits in EXPECTED.items() for split in splits]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, dict]:
    """Every source's default fixture, written once for the read-only tests."""
    return {name: write(tmp_path_factory.mktemp(name)) for name, write in WRITERS.items()}


def read_all(name: str, raw_dir: Path, split: str, **kwargs) -> tuple[list[Record], SkipCounter]:
    skips = SkipCounter()
    records = list(get_source(name).read(raw_dir, split, skips, **kwargs))
    return records, skips


# ----------------------------------------------------------------------------------- every source


@pytest.mark.parametrize("name", list(WRITERS))
def test_module_interface(name):
    source = get_source(name)
    assert source.NAME == name
    assert tuple(source.SPLITS) == tuple(EXPECTED[name])
    assert callable(source.check) and callable(source.read)


@pytest.mark.parametrize(("name", "split"), SOURCE_SPLITS)
def test_read_yields_and_skips_exactly_what_was_planted(written, name, split):
    planted = written[name]["splits"][split]
    records, skips = read_all(name, written[name]["raw_dir"], split)

    n_records, expected_skips = EXPECTED[name][split]
    assert len(records) == n_records == planted["records"]
    assert dict(skips) == expected_skips == planted["skips"]
    assert [r.source_id for r in records] == list(planted["labels"])  # file order
    assert {r.source_id: r.label for r in records} == planted["labels"]
    assert {r.source_id: r.text for r in records} == planted["texts"]
    for r in records:
        assert (r.source, r.split) == (name, split)
        assert r.text == r.text.strip() and r.text
        assert isinstance(r.image, Path) and r.image.is_file()
        json.dumps(r.meta)  # the shard writer stores meta as the sample's json
    # every reason keeps an example, so a report can show what was skipped
    assert set(skips.examples) == set(expected_skips)


@pytest.mark.parametrize(("name", "split"), SOURCE_SPLITS)
def test_read_is_deterministic(written, name, split):
    first, _ = read_all(name, written[name]["raw_dir"], split)
    second, _ = read_all(name, written[name]["raw_dir"], split)
    assert first == second


@pytest.mark.parametrize("name", list(WRITERS))
def test_limit(written, name):
    raw_dir = written[name]["raw_dir"]
    everything, _ = read_all(name, raw_dir, "train")
    for limit in (0, 1, 3, len(everything), len(everything) + 5):
        some, _ = read_all(name, raw_dir, "train", limit=limit)
        assert some == everything[:limit]
    with pytest.raises(ValueError, match="limit"):
        get_source(name).read(raw_dir, "train", SkipCounter(), limit=-1)


@pytest.mark.parametrize("name", list(WRITERS))
def test_limit_stops_counting_skips_where_it_stops(written, name):
    # The first few records come before every planted fault in the train files except COCO's, whose
    # annotation faults are all counted before the first image is yielded.
    _, skips = read_all(name, written[name]["raw_dir"], "train", limit=2)
    expected = {"malformed_row": 2, "unknown_id": 1, "empty_text": 1} if name == "coco" else {}
    assert dict(skips) == expected


@pytest.mark.parametrize("name", list(WRITERS))
def test_unknown_split_raises_value_error_at_call(written, name):
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        get_source(name).read(written[name]["raw_dir"], "nope", SkipCounter())


@pytest.mark.parametrize("name", list(WRITERS))
def test_without_faults_nothing_is_skipped(tmp_path, name):
    planted = WRITERS[name](tmp_path, n_per_split=3, faults=False)
    for split in EXPECTED[name]:
        records, skips = read_all(name, tmp_path, split)
        assert len(records) == planted["splits"][split]["records"] == 3
        assert dict(skips) == {}


@pytest.mark.parametrize("name", list(WRITERS))
def test_check_passes_on_a_complete_layout(written, name):
    get_source(name).check(written[name]["raw_dir"])


@pytest.mark.parametrize(
    ("name", "removed"),
    [
        ("hateful_memes", "dev_unseen.jsonl"),
        ("hateful_memes", "img"),
        ("mmhs150k", "MMHS150K_GT.json"),
        ("mmhs150k", "splits/test_ids.txt"),
        ("mmhs150k", "img_resized"),
        ("fakeddit", "multimodal_test_public.tsv"),
        ("coco", "annotations/captions_val2017.json"),
        ("coco", "train2017"),
    ],
)
def test_check_names_the_missing_file(tmp_path, name, removed):
    WRITERS[name](tmp_path, n_per_split=1, faults=False)
    target = tmp_path / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match="Expected layout") as err:
        get_source(name).check(tmp_path)
    assert removed in str(err.value)


@pytest.mark.parametrize("name", list(WRITERS))
def test_check_on_a_missing_folder(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        get_source(name).check(tmp_path / "absent")


@pytest.mark.parametrize("name", list(WRITERS))
def test_truncated_and_non_image_files_reach_the_decoder_and_fail_there(written, name):
    planted = written[name]["splits"]["train"]
    records, _ = read_all(name, written[name]["raw_dir"], "train")
    undecodable = set(planted["undecodable"])
    assert len(undecodable) == 2
    for record in records:
        if record.source_id in undecodable:
            with pytest.raises(ImageDecodeError, match="cannot decode"):
                load_rgb(record.image)
        else:
            assert load_rgb(record.image).size in SIZES


def test_truncated_file_is_the_head_of_a_real_image(written):
    records, _ = read_all("hateful_memes", written["hateful_memes"]["raw_dir"], "train")
    truncated = next(r for r in records if r.text == "my picture is cut off")
    data = truncated.image.read_bytes()
    assert len(data) == 100 and data.startswith(b"\x89PNG\r\n\x1a\n")


# ------------------------------------------------------------------------------------- Hateful Memes


def test_hateful_memes_labels_and_meta(written):
    raw_dir = written["hateful_memes"]["raw_dir"]
    train, _ = read_all("hateful_memes", raw_dir, "train")
    assert Counter(r.label for r in train) == {0: 3, 6: 3}
    for r in train:
        assert r.meta == {"hateful": int(r.label == 6), "hm_label": int(r.label == 6)}
    for split in ("test_seen", "test_unseen"):
        test, _ = read_all("hateful_memes", raw_dir, split)
        assert {r.label for r in test} == {-1}
        assert all(r.meta == {"hateful": -1, "hm_label": None} for r in test)
    first = train[0]
    assert first.image == raw_dir / f"img/{int(first.source_id):05d}.png"


def test_hateful_memes_legacy_dev_and_test_files(tmp_path):
    write_hateful_memes(tmp_path, n_per_split=2, faults=False)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        hateful_memes.read(tmp_path, "dev", SkipCounter())
    assert hateful_memes.available_splits(tmp_path) == hateful_memes.SPLITS

    shutil.copy(tmp_path / "dev_seen.jsonl", tmp_path / "dev.jsonl")
    shutil.copy(tmp_path / "test_seen.jsonl", tmp_path / "test.jsonl")
    assert hateful_memes.available_splits(tmp_path)[-2:] == ("dev", "test")
    dev, _ = read_all("hateful_memes", tmp_path, "dev")
    test, _ = read_all("hateful_memes", tmp_path, "test")
    assert [r.label for r in dev] == [0, 6] and {r.split for r in dev} == {"dev"}
    assert [r.label for r in test] == [-1, -1]


def test_hateful_memes_uses_a_label_when_a_test_file_has_one(tmp_path):
    write_hateful_memes(tmp_path, n_per_split=1, faults=False)
    row = json.loads((tmp_path / "test_seen.jsonl").read_text())
    row["label"] = 1
    (tmp_path / "test_seen.jsonl").write_text(json.dumps(row) + "\n")
    [record], _ = read_all("hateful_memes", tmp_path, "test_seen")
    assert (record.label, record.meta) == (6, {"hateful": 1, "hm_label": 1})


# ------------------------------------------------------------------------------------------ MMHS150K


def _majority_hate(votes: list[int]) -> int:
    """The plain reference: the majority of hate/not-hate opinions among the three annotators."""
    opinion, _ = Counter("hate" if v in (1, 2, 3, 4, 5) else "not" for v in votes).most_common(1)[0]
    return 6 if opinion == "hate" else 0


@pytest.mark.parametrize(
    ("votes", "label"),
    [([0, 1, 0], 0), ([1, 0, 2], 6), ([0, 0, 0], 0), ([5, 5, 5], 6), ([0, 0, 5], 0), ([2, 3, 0], 6)],
)
def test_mmhs_two_of_three_rule_cases(votes, label):
    assert mmhs150k.hate_label(votes) == label


def test_mmhs_rule_matches_the_majority_reference_on_every_vote_triple():
    triples = [list(t) for t in itertools.product(range(6), repeat=3)]
    assert [mmhs150k.hate_label(t) for t in triples] == [_majority_hate(t) for t in triples]
    assert sum(mmhs150k.hate_label(t) == 6 for t in triples) == 200  # 5*5*5 + 3*(5*5*1)


@pytest.mark.parametrize("votes", [[0, 1], [0, 1, 0, 1], [0, 6, 1], [-1, 0, 0], [True, 1, 1], "110", None])
def test_mmhs_invalid_votes_raise(votes):
    with pytest.raises(ValueError, match="expected 3 votes"):
        mmhs150k.hate_label(votes)


def test_mmhs_strip_links():
    assert mmhs150k.strip_links("so true https://t.co/AbC12 ") == "so true"
    assert mmhs150k.strip_links("a https://t.co/x b http://t.co/y") == "a b"
    assert mmhs150k.strip_links("https://t.co/OnlyALink") == ""
    assert mmhs150k.strip_links("see https://example.com/t.co") == "see https://example.com/t.co"


def test_mmhs_text_meta_and_ocr(written):
    raw_dir = written["mmhs150k"]["raw_dir"]
    train, _ = read_all("mmhs150k", raw_dir, "train")
    by_text = {r.text: r for r in train}
    # k = 0 has OCR text, k = 1 an OCR file of spaces, k = 2 none
    assert "@user0 this is tweet 0\nwords in picture 0" in by_text
    assert "@user1 this is tweet 1" in by_text and "@user2 this is tweet 2" in by_text
    assert "only the picture speaks" in by_text  # the tweet was only a link
    assert not any("t.co" in r.text for r in train)

    first = train[0]
    assert first.meta == {"labels": [0, 0, 0], "labels_str": ["NotHate"] * 3, "hateful": 0}
    third = train[2]
    assert third.label == 6
    assert third.meta == {"labels": [1, 0, 2], "labels_str": ["Racist", "NotHate", "Sexist"], "hateful": 1}
    assert first.image == raw_dir / "img_resized" / f"{first.source_id}.jpg"


def test_mmhs_rereads_a_changed_annotation_file(tmp_path):
    write_mmhs150k(tmp_path, n_per_split=1, faults=False)
    [before], _ = read_all("mmhs150k", tmp_path, "test")
    gt_path = tmp_path / "MMHS150K_GT.json"
    gt = json.loads(gt_path.read_text())
    gt[before.source_id]["tweet_text"] = "an edited tweet"
    gt_path.write_text(json.dumps(gt))
    [after], _ = read_all("mmhs150k", tmp_path, "test")
    assert (before.text, after.text) == ("@user2 this is tweet 2", "an edited tweet")


def test_mmhs_broken_annotation_file_names_the_file(tmp_path):
    write_mmhs150k(tmp_path, n_per_split=1, faults=False)
    (tmp_path / "MMHS150K_GT.json").write_text('{"1": ')
    with pytest.raises(ValueError, match="MMHS150K_GT.json is not a valid JSON file"):
        read_all("mmhs150k", tmp_path, "train")


# ------------------------------------------------------------------------------------------ Fakeddit


def test_fakeddit_six_way_table_is_the_maintainers_definition():
    # entitize/Fakeddit issue 14: 0 true, 1 satire/parody, 2 false connection, 3 imposter content,
    # 4 manipulated content, 5 misleading content.
    names = {k: class_name(v) for k, v in fakeddit.SIX_WAY_TO_CLASS.items()}
    assert names == {
        0: "True/Neutral",
        1: "Satire/Parody",
        2: "False Connection",
        3: "Imposter Content",
        4: "Manipulated Content",
        5: "Misleading Content",
    }


def test_fakeddit_every_six_way_value_maps_by_the_table(written):
    raw_dir = written["fakeddit"]["raw_dir"]
    for split in fakeddit.SPLITS:
        records, _ = read_all("fakeddit", raw_dir, split)
        good = records[:6]  # the fixture's good rows come first, then the planted faults
        assert [r.meta["6_way_label"] for r in good] == [0, 1, 2, 3, 4, 5]  # "4.0" read as 4
        assert [r.label for r in good] == [0, 1, 4, 3, 5, 2]


def test_fakeddit_text_and_meta(written):
    records, _ = read_all("fakeddit", written["fakeddit"]["raw_dir"], "train")
    assert records[1].text == 'my "quoted" train title 1'
    assert records[2].text == "train post title 2"  # its title field holds a quoted newline
    assert records[4].meta == {
        "2_way_label": 0,
        "3_way_label": 2,
        "6_way_label": 4,
        "subreddit": "photoshopbattles",
    }
    assert records[0].image == written["fakeddit"]["raw_dir"] / "public_image_set" / "tr0000q.jpg"


def test_fakeddit_image_folder_choices(tmp_path):
    write_fakeddit(tmp_path / "a", n_per_split=2, faults=False, image_folder="images")
    fakeddit.check(tmp_path / "a")
    records, _ = read_all("fakeddit", tmp_path / "a", "val")
    assert [r.image.parent.name for r in records] == ["images", "images"]

    write_fakeddit(tmp_path / "b", n_per_split=2, faults=False, image_folder="pics")
    with pytest.raises(FileNotFoundError, match="public_image_set/ or images/"):
        fakeddit.check(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="pass image_dir"):
        fakeddit.read(tmp_path / "b", "val", SkipCounter())
    fakeddit.check(tmp_path / "b", image_dir="pics")
    records, _ = read_all("fakeddit", tmp_path / "b", "val", image_dir="pics")
    assert len(records) == 2
    records, _ = read_all("fakeddit", tmp_path / "b", "val", image_dir=tmp_path / "b" / "pics")
    assert len(records) == 2


def test_fakeddit_reads_what_pandas_writes(tmp_path):
    pd = pytest.importorskip("pandas")
    titles = ["plain title", 'with "quotes" inside', "with\ttab", "with\nnewline", "trailing spaces  "]
    rows = []
    for i, title in enumerate(titles):
        post_id = f"pd{i}"
        rows.append(
            {
                "author": "someone",
                "clean_title": title,
                "created_utc": 1.5e9,
                "domain": "i.redd.it",
                "hasImage": True,
                "id": post_id,
                "image_url": "https://i.redd.it/x.jpg",
                "linked_submission_id": None,
                "num_comments": float("nan") if i == 0 else 2.0,
                "score": 1,
                "subreddit": "pics",
                "title": title.upper(),
                "upvote_ratio": 0.5,
                "2_way_label": 1,
                "3_way_label": 0,
                "6_way_label": i,
            }
        )
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{post_id}.jpg").write_bytes(b"x")  # the reader never decodes
    frame = pd.DataFrame(rows)
    assert list(frame.reset_index().columns)[1:] == list(FAKEDDIT_COLUMNS)[1:]
    frame.to_csv(tmp_path / "multimodal_validate.tsv", sep="\t")
    records, skips = read_all("fakeddit", tmp_path, "val")
    assert dict(skips) == {}
    assert [r.text for r in records] == [t.strip() for t in titles]
    assert [r.label for r in records] == [0, 1, 4, 3, 5]


def test_fakeddit_missing_column_is_an_error(tmp_path):
    write_fakeddit(tmp_path, n_per_split=1, faults=False)
    path = tmp_path / "multimodal_test_public.tsv"
    path.write_text(path.read_text().replace("6_way_label", "six_way"))
    with pytest.raises(ValueError, match="missing columns 6_way_label"):
        read_all("fakeddit", tmp_path, "test")


def test_fakeddit_an_oversized_field_is_skipped_and_reading_goes_on(tmp_path):
    write_fakeddit(tmp_path, n_per_split=2, faults=False)
    path = tmp_path / "multimodal_test_public.tsv"
    header, first, second = path.read_text().splitlines()
    path.write_text("\n".join([header, first, "x" * 200_000 + "\ty", second]) + "\n")
    records, skips = read_all("fakeddit", tmp_path, "test")
    assert len(records) == 2 and dict(skips) == {"malformed_row": 1}


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_first_caption_in_file_order_and_all_captions(written):
    raw_dir = written["coco"]["raw_dir"]
    train, _ = read_all("coco", raw_dir, "train")
    first = train[0]
    image_id = int(first.source_id)
    assert first.text == f"caption 0 of image {image_id}"
    assert first.meta == {
        "captions": [f"caption {j} of image {image_id}" for j in range(3)],
        "file_name": f"{image_id:012d}.jpg",
    }
    assert first.image == raw_dir / "train2017" / f"{image_id:012d}.jpg"
    # the fixture gives annotations descending ids: sorting by id would have picked caption 2
    data = json.loads((raw_dir / "annotations" / "captions_train2017.json").read_text())
    lowest = min(
        (a for a in data["annotations"] if a.get("image_id") == image_id and "caption" in a),
        key=lambda a: a["id"],
    )
    assert lowest["caption"] == f"caption 2 of image {image_id}"
    blank_first = next(r for r in train if r.text == "the second caption is the text")
    assert blank_first.meta["captions"] == ["the second caption is the text"]
    assert {r.label for r in train} == {0}


def test_coco_bad_annotation_file_is_an_error(tmp_path):
    write_coco(tmp_path, n_per_split=1, faults=False)
    (tmp_path / "annotations" / "captions_val2017.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="'images' and 'annotations' lists"):
        read_all("coco", tmp_path, "val")


def test_readers_resolve_their_files_from_raw_dir_strings(written):
    # notebooks pass data_dir as a string parameter
    records, _ = read_all("coco", str(written["coco"]["raw_dir"]), "val")
    assert len(records) == 4
    coco.check(str(written["coco"]["raw_dir"]))

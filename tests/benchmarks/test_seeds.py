import json
import statistics
from pathlib import Path

import pytest

from benchmarks import seeds
from tests.helpers import make_shards

REPO = Path(__file__).resolve().parents[2]
TINY = ["tiny", "batch_size=8", "epochs=1", "steps_per_epoch=2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study of one cheap recipe (CLIP, two steps) for seeds 0 and 1 on tiny shards, through main()."""
    root = tmp_path_factory.mktemp("seeds")
    make_shards(root / "shards", train=64, val=16, test=32, unseen=16, train_shard=64, eval_shard=32)
    argv = ["--seeds", "0", "1", "--recipes", "clip", "--variant", *TINY, "--data-dir", str(root / "shards")]
    argv += ["--runs-root", str(root / "runs"), "--results", str(root / "seeds.json"), "--in-process"]
    assert seeds.main(argv) == 0
    return root, argv


def test_the_study_records_mean_and_sample_sd_of_each_seeds_metrics(study):
    root, argv = study
    document = json.loads((root / "seeds.json").read_text())
    variant = document["variants"]["tiny"]
    assert variant["overrides"] == TINY[1:] and variant["seeds"] == [0, 1]
    assert variant["command"] == "python -m benchmarks.seeds " + " ".join(argv)
    assert variant["data"]["samples"] == {"train": 64, "val": 16, "test": 32, "unseen": 16}
    assert variant["data"]["data_seed"] == 0
    row = variant["rows"]["clip"]
    assert list(variant["rows"]) == ["clip"] and row["seeds"] == [0, 1] and row["recipe"] == "clip"
    runs = [
        json.loads((root / "runs" / "tiny" / f"seed{s}" / "clip" / "metrics.json").read_text())
        for s in (0, 1)
    ]
    assert [m["fingerprint"] for m in runs] == row["fingerprints"]
    assert row["fingerprints"][0] != row["fingerprints"][1]  # the seed is part of the config
    assert set(row["scores"]) == {"test", "unseen"}
    for split in ("test", "unseen"):
        assert set(row["scores"][split]) == {
            k for k in runs[0]["splits"][split] if k not in seeds.NOT_SCORES
        } - {"zero_shot_target"}
        for metric, stat in row["scores"][split].items():
            values = [m["splits"][split][metric] for m in runs]
            assert stat["values"] == values and stat["n"] == 2
            assert stat["mean"] == round(statistics.fmean(values), 6)
            assert stat["sd"] == round(abs(values[0] - values[1]) / 2**0.5, 6)


def test_a_second_call_trains_nothing(study, capsys):
    root, argv = study
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("*.pt")}

    def runner(argv, log):
        raise AssertionError(f"ran {argv}")

    document = seeds.run_study(
        seeds.Variant.parse(TINY), [0, 1], seeds.select(["clip"]), runs_root=root / "runs",
        data_dir=root / "shards", results=root / "again.json", runner=runner,
    )  # fmt: skip
    assert document["failures"] == {}
    assert capsys.readouterr().out.count("finished before") == 2
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("*.pt")} == before
    first = json.loads((root / "seeds.json").read_text())["variants"]["tiny"]["rows"]
    assert document["variants"]["tiny"]["rows"] == first


def test_a_failed_run_is_reported_and_its_dependents_skipped(tmp_path, capsys):
    make_shards(tmp_path / "shards", train=16, val=8, test=8, unseen=8, train_shard=16, eval_shard=8)

    def runner(argv, log):
        raise RuntimeError("boom")

    document = seeds.run_study(
        seeds.Variant.parse(["demo"]), [3], seeds.select(["fusion_cross"]), runs_root=tmp_path / "runs",
        data_dir=tmp_path / "shards", results=tmp_path / "seeds.json", runner=runner,
    )  # fmt: skip
    assert document["failures"] == {"clip@3": "RuntimeError: boom", "fusion_cross@3": "needs clip"}
    assert document["variants"]["demo"]["rows"] == {}
    assert "[demo seed 3] clip: FAILED (RuntimeError: boom)" in capsys.readouterr().out


def test_summary_is_the_sample_standard_deviation():
    stat = seeds.summary([0.9, 1.0, 0.76])
    assert stat == {"mean": 0.886667, "sd": 0.120554, "n": 3, "values": [0.9, 1.0, 0.76]}
    assert seeds.summary([0.5])["sd"] is None


def test_scores_flattens_splits_and_probes():
    metrics = {
        "splits": {"test": {"top1": 0.5, "num_samples": 10, "kind": "seen", "flag": True}},
        "probes": {"test": {"colour": {"backbone": {"knn": 0.9}, "random backbone": {"knn": 0.7}}}},
    }
    assert seeds.scores(metrics) == {"test": {"top1": 0.5, "colour.knn": 0.9, "colour.random_knn": 0.7}}
    with pytest.raises(ValueError, match="neither 'splits' nor 'probes'"):
        seeds.scores({"recipe": "x", "top1": 1.0})


def test_variant_overrides_by_scope():
    variant = seeds.Variant.parse(["v", "epochs=2", "cass_mm.head_epochs=3", "data.synthetic_train=8000"])
    assert variant.every == {"epochs": "2"} and variant.data == {"synthetic_train": "8000"}
    assert variant.params(seeds.BY_KEY["cass_mm"]) == {"epochs": "2", "head_epochs": "3"}
    assert variant.params(seeds.BY_KEY["ssl_dino"]) == {
        "method": "dino",
        "backbone": "vit_tiny_demo",
        "epochs": "2",
    }
    argv = seeds.command(seeds.BY_KEY["fusion_align"], {"fusion": "align"}, 2, Path("r"), Path("d"))
    assert argv == [
        "fusion", "preset=demo", "seed=2", "run_name=fusion_align", "runs_dir=r", "data_dir=d", "progress=false",
        "fusion=align",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "a name first"),
        (["../x"], "not a plain name"),
        (["v", "epochs"], "expected key=value"),
        (["v", "epochs=1", "epochs=2"], "given twice"),
        (["v", "nope.epochs=1"], "neither 'data' nor an entry"),
    ],
)
def test_bad_variants_are_refused(tokens, message):
    with pytest.raises(ValueError, match=message):
        seeds.Variant.parse(tokens)


def test_select_adds_what_an_entry_needs():
    assert [e.key for e in seeds.select(["fusion_align", "cass_mm"])] == ["clip", "cass_mm", "fusion_align"]
    with pytest.raises(ValueError, match="unknown entry 'clipp'"):
        seeds.select(["clipp"])


def test_docs_table_is_the_committed_results():
    document = json.loads((REPO / "benchmarks" / "results" / "seeds.json").read_text())
    assert seeds.PAGE == REPO / "docs" / "reproducing.md"
    page = seeds.PAGE.read_text()
    assert seeds.update_page(page, document) == page

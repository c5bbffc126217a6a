"""Re-scoring every run under runs/: real tiny runs of every recipe, then broken copies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from nbhelpers.config import ConfigError
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.evaluation.runs import (
    BINARY_CLASSES,
    REPREDICTED,
    SAVED,
    SEVEN_LABEL,
    EvalRunsConfig,
    Evaluation,
    RunRecord,
    agreement_table,
    by_classes,
    comparison_table,
    discover_runs,
    display_names,
    evaluate_run,
    evaluate_runs,
    markdown_table,
    per_class_table,
    representation_table,
    roc_curves,
    save_comparison,
    score,
    skipped_table,
    topk_long,
)
from nbhelpers.train.recipes.results import RunMetrics
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint
from tests.conftest import LABEL_RUNS

TINY_RUNS = ["cass_mm", "clip_classifier_lora", "fusion_cross", "unimodal_image", "unimodal_late_fusion"]
TINY_RUNS += ["unimodal_text"]


@pytest.fixture(scope="module")
def workspace(tiny_runs):
    """The runs of every recipe (``tiny_runs``): text, image, late fusion, CLIP + LoRA and CASS-MM
    (7-class), a Hate-CLIPper head (binary), and two self-supervised runs (CLIP, DINO)."""
    return tiny_runs


@pytest.fixture(scope="module")
def evaluated(workspace):
    return evaluate_runs(workspace / "runs", split="test", k=3, progress=None)


def saved_metrics(workspace, run: str) -> dict:
    return json.loads((workspace / "runs" / run / "metrics.json").read_text())


def test_every_run_is_found_and_the_folder_without_metrics_is_listed(workspace, evaluated):
    assert sorted(found.record.name for found in evaluated.runs) == TINY_RUNS
    assert [(r.name, r.recipe, r.model_name) for r in evaluated.representations] == [
        ("clip", "clip", "CLIP contrastive (memelab-tiny-vit)"), ("ssl_dino_vit_test", "ssl", "dino (vit_test)")
    ]  # fmt: skip
    # tinyclip holds only weights (no metrics.json): listed with its reason; .features is a cache, not a run.
    assert skipped_table(evaluated).to_dict("records") == [
        {"Run": "tinyclip", "Reason": "no metrics.json (the run did not finish, or is not a run)"}
    ]
    assert ".features" not in [r.name for r in discover_runs(workspace / "runs")]
    assert all(found.source == REPREDICTED for found in evaluated.runs)


def test_table_figures_equal_each_runs_own_metrics_json(workspace, evaluated):
    table = comparison_table(evaluated).set_index("Run")
    for run in TINY_RUNS:
        metrics, row = saved_metrics(workspace, run), table.loc[run]
        assert row["Samples"] == metrics["splits"]["test"]["num_samples"] == 48
        if metrics["task"] == "7class":
            assert [row["Top-1"], row["Top-2"], row["Top-3"]] == [metrics[f"top{j}"] for j in (1, 2, 3)]
            assert row["Macro F1"] == pytest.approx(metrics["macro_f1"], abs=1e-12)
            assert np.isnan(row["AUROC"])
        else:
            assert (row["Top-1"], row["AUROC"]) == (metrics["accuracy"], metrics["auroc"])
            assert np.isnan(row["Top-2"]) and np.isnan(row["Top-3"])
        assert row["Max diff vs metrics.json"] == 0.0
    agreement = agreement_table(evaluated)
    assert set(agreement["Run"]) == set(TINY_RUNS) and (agreement["Difference"] == 0).all()


def test_fresh_predictions_equal_the_saved_ones_and_topk_a_plain_reference(workspace, evaluated):
    for found in evaluated.runs:
        saved = np.load(workspace / "runs" / found.record.name / "predictions_test.npz")
        np.testing.assert_allclose(
            found.scores, saved["scores" if found.record.task == "binary" else "probs"], rtol=0, atol=1e-6
        )
        np.testing.assert_array_equal(found.labels, saved["labels"])
        if found.record.task == "7class":
            ranked = np.argsort(-found.scores, axis=1, kind="stable")  # no ties in float softmax outputs
            for j in (1, 2, 3):
                plain = np.mean([label in ranked[i, :j] for i, label in enumerate(found.labels)])
                assert found.figures[f"top{j}"] == pytest.approx(plain, abs=1e-12)


def test_late_fusion_fuses_the_fresh_text_and_image_probabilities(evaluated):
    by_name = {found.record.name: found for found in evaluated.runs}
    text, image = by_name["unimodal_text"].scores, by_name["unimodal_image"].scores
    np.testing.assert_allclose(by_name["unimodal_late_fusion"].scores, (text + image) / 2, atol=1e-7)


def test_the_table_is_sorted_and_written_as_csv_and_markdown(workspace, evaluated, tmp_path):
    table = comparison_table(evaluated)
    assert list(table.columns[:6]) == ["Model", "Modality", "Task", "Top-1", "Top-2", "Top-3"]
    assert list(table["Task"]) == ["7class"] * 5 + ["binary"]
    seven = table[table["Task"] == "7class"]
    assert list(seven["Top-1"]) == sorted(seven["Top-1"], reverse=True)
    assert set(table["Model"]) == {
        "BERT text (tinybert)", "ResNet-18 image", "Late fusion (text + image)", "CLIP lora", "CASS-MM + head",
        "Hate-CLIPper cross",
    }  # fmt: skip
    csv, md = save_comparison(table, tmp_path / "out")
    pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_dtype=False)
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| Model | Modality | Task | Top-1 | Top-2 | Top-3 | Macro F1 | AUROC |")
    assert len(lines) == 2 + len(table)
    first = table.iloc[0]
    assert lines[2].startswith(f"| {first['Model']} | {first['Modality']} | 7class | {first['Top-1']:.3f} |")
    long = topk_long(table, 3)
    assert len(long) == 5 * 3 and set(long["metric"]) == {"Top-1", "Top-2", "Top-3"}


def test_per_class_figures_and_the_binary_run(evaluated):
    per_class = per_class_table(evaluated)
    assert len(per_class) == 5 * 7 + 2
    binary = next(found for found in evaluated.runs if found.record.task == "binary")
    assert list(per_class.loc["Hate-CLIPper cross"].index) == ["not hateful", "hateful"]
    assert per_class.loc["Hate-CLIPper cross"]["Support"].sum() == len(binary.labels)
    fpr, tpr, auroc = binary.roc
    assert fpr[0] == 0 and tpr[-1] == 1 and auroc == binary.figures["auroc"]
    assert binary.confusion.shape == (2, 2)
    np.testing.assert_allclose(binary.confusion.sum(1)[np.bincount(binary.labels, minlength=2) > 0], 1.0)


def test_other_splits_and_saved_predictions(workspace):
    found = evaluate_runs(workspace / "runs", split="val", k=2, repredict=False, progress=None)
    table = comparison_table(found).set_index("Run")
    assert set(table["Predictions"]) == {SAVED}
    assert "Top-3" not in table.columns
    for run in TINY_RUNS:
        split = saved_metrics(workspace, run)["splits"]["val"]
        assert table.loc[run, "Top-1"] == split.get("top1", split.get("accuracy"))
        assert table.loc[run, "Max diff vs metrics.json"] == 0.0
    # An empty split scores each run on its own primary split (test for all four).
    primary = evaluate_runs(workspace / "runs", split="", repredict=False, progress=None)
    assert {found.split for found in primary.runs} == {"test"}


def test_broken_runs_are_listed_with_reasons_and_the_others_still_evaluated(workspace, tmp_path):
    runs = tmp_path / "runs"
    for name, copy in [("unimodal_image", "corrupt_checkpoint"), ("unimodal_image", "healthy"),
                       ("unimodal_text", "no_metrics"), ("unimodal_text", "corrupt_metrics"),
                       ("unimodal_text", "no_checkpoint")]:  # fmt: skip
        shutil.copytree(workspace / "runs" / name, runs / copy)
    latest_checkpoint(runs / "corrupt_checkpoint").write_bytes(b"\x80\x02 not a checkpoint")
    (runs / "no_metrics" / "metrics.json").unlink()
    (runs / "corrupt_metrics" / "metrics.json").write_text('{"notebook": "02_unimodal')
    shutil.rmtree(runs / "no_checkpoint" / "checkpoints")
    found = evaluate_runs(runs, progress=None)
    assert [f.record.name for f in found.runs] == ["healthy"]
    assert comparison_table(found).loc[0, "Max diff vs metrics.json"] == 0.0
    reasons = dict(skipped_table(found).itertuples(index=False))
    assert sorted(reasons) == ["corrupt_checkpoint", "corrupt_metrics", "no_checkpoint", "no_metrics"]
    corrupt = latest_checkpoint(runs / "corrupt_checkpoint")
    assert reasons["corrupt_checkpoint"].startswith(f"BadCheckpointError: checkpoint {corrupt} is not")
    assert reasons["corrupt_metrics"].startswith("metrics.json is unreadable (JSONDecodeError")
    assert reasons["no_checkpoint"] == "no checkpoint in checkpoints/"
    assert reasons["no_metrics"].startswith("no metrics.json")


def test_self_supervised_runs_go_to_their_own_table(tmp_path):
    (tmp_path / "ssl_dino").mkdir()
    RunMetrics(
        recipe="ssl", notebook="04_train_ssl_vision", method="dino", modality="image", task="ssl",
        split="test", metrics={"top1": 0.9, "linear_probe": 0.9, "knn": 0.8, "random_linear_probe": 0.3},
        num_samples=10, epochs=1, train_seconds=1.0, extra={"backbone": "vit_tiny_demo", "probe_label": "colour"},
    ).write(tmp_path / "ssl_dino")  # fmt: skip
    found = evaluate_runs(tmp_path, progress=None)
    assert found.runs == [] and found.skipped == []
    table = representation_table(found)
    assert table.to_dict("records") == [
        {"Model": "dino (vit_tiny_demo)", "Modality": "image", "Split": "test", "Probe label": "colour",
         "Linear probe": 0.9, "kNN": 0.8, "Linear probe (random init)": 0.3, "Run": "ssl_dino"}
    ]  # fmt: skip


def test_an_empty_or_absent_runs_dir_gives_empty_tables(tmp_path):
    found = evaluate_runs(tmp_path / "absent", progress=None)
    table = comparison_table(found)
    assert table.empty and list(table.columns[:4]) == ["Model", "Modality", "Task", "Top-1"]
    assert markdown_table(table).splitlines()[1].startswith("|---|")


def test_config_k_is_at_least_one_and_clipped_per_run_not_capped():
    assert EvalRunsConfig.from_params("demo").k == 3
    assert EvalRunsConfig.from_params("demo", k=8).k == 8  # each run scores top-1 .. top-min(8, C)
    with pytest.raises(ConfigError, match="^k: must be >= 1"):
        EvalRunsConfig.from_params("demo", k=0)


def test_runs_over_other_classes_are_scored_with_them_and_never_mixed(tiny_runs, tiny_label_runs, tmp_path):
    """Seven-class, binary and three-class runs under one runs folder: each scored over its own classes,
    grouped apart in the table, charted and gridded per label set."""
    runs = tmp_path / "runs"
    for name in ("unimodal_image", "clip_classifier_lora", "fusion_cross"):
        shutil.copytree(tiny_runs / "runs" / name, runs / name)
    for name in LABEL_RUNS:
        shutil.copytree(tiny_label_runs / "runs" / name, runs / f"three_{name}")
    found = evaluate_runs(runs, split="test", k=4, progress=None)
    three = ("cat", "dog", "bird")
    assert {f.record.name: f.class_names for f in found.runs} == {
        "unimodal_image": CLASSES, "clip_classifier_lora": CLASSES, "fusion_cross": BINARY_CLASSES,
        **{f"three_{name}": three for name in LABEL_RUNS},
    }  # fmt: skip
    table = comparison_table(found)
    assert list(table["Task"]) == ["7class"] * 2 + ["multiclass"] * 6 + ["binary"]
    assert list(table["Classes"]) == [SEVEN_LABEL] * 2 + ["cat, dog, bird"] * 6 + ["not hateful, hateful"]
    assert (table["Max diff vs metrics.json"] == 0.0).all()  # fresh figures equal each run's metrics.json
    mine = table[table["Classes"] == "cat, dog, bird"]
    assert mine["Top-4"].isna().all() and (mine["Top-3"] == 1.0).all()  # k clipped to three classes
    assert table[table["Task"] == "7class"]["Top-4"].notna().all()
    assert mine["AUROC"].between(0.0, 1.0).all() and table[table["Task"] == "7class"]["AUROC"].isna().all()
    fusion = next(f for f in found.runs if f.record.name == "three_fusion_cross")
    assert fusion.figures["auroc"] == saved_metrics(tiny_label_runs, "fusion_cross")["auroc"]
    assert fusion.confusion.shape == (3, 3) and fusion.report["classes"] == list(three)
    assert list(
        per_class_table(found).loc[table.set_index("Run").loc["three_cass_mm", "Model"]].index
    ) == list(three)
    with pytest.raises(ValueError, match="runs over different classes"):
        topk_long(table, 4)
    groups = by_classes(found)
    assert list(groups) == [CLASSES, three, BINARY_CLASSES]
    assert [f.record.name for f in groups[CLASSES].runs] == list(table["Run"][:2])
    long = topk_long(comparison_table(groups[three]), 4)
    assert len(long) == 6 * 3 and set(long["metric"]) == {"Top-1", "Top-2", "Top-3"}


def test_binary_runs_rank_by_auroc_not_accuracy(tmp_path):
    labels = np.array([0, 0, 0, 0, 1, 1])
    # "ranks": every positive above every negative (AUROC 1) but all above 0.5 (accuracy 2/6).
    # "thresholds": a positive below a negative (AUROC 7/8) but 4 of 6 on the right side of 0.5.
    runs = {
        "ranks": np.array([0.6, 0.6, 0.7, 0.7, 0.8, 0.9]),
        "thresholds": np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.9]),
    }
    metrics = {
        "recipe": "fusion",
        "task": "binary",
        "split": "test",
        "modality": "multimodal",
    }
    found = [
        score(
            RunRecord(name, tmp_path / name, {**metrics, "method": f"hateclipper_{name}"}),
            "test",
            s,
            labels,
            SAVED,
        )
        for name, s in runs.items()
    ]
    table = comparison_table(Evaluation(found[::-1], [], [], k=2, split="test"))
    assert list(table["Run"]) == ["ranks", "thresholds"]
    assert table["AUROC"].tolist() == [1.0, 7 / 8]
    assert table["Top-1"].tolist() == [2 / 6, 4 / 6]
    assert table["Max diff vs metrics.json"].isna().all()  # no figures for this split to compare with


def test_runs_sharing_a_model_name_keep_distinct_rows(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    metrics = {"recipe": "clip_classifier", "task": "7class", "split": "test"}
    metrics |= {"modality": "multimodal", "method": "clip_lora"}
    found = [
        score(
            RunRecord(name, tmp_path / name, metrics), "test", np.eye(7)[(labels + shift) % 7], labels, SAVED
        )
        for name, shift in [("lora_seed0", 0), ("lora_seed1", 1)]
    ]
    binary = {"recipe": "fusion", "task": "binary", "split": "test"}
    binary |= {"modality": "multimodal", "method": "hateclipper_cross"}
    found.append(
        score(
            RunRecord("fusion_cross", tmp_path / "fusion", binary),
            "test",
            np.array([0.2, 0.9]),
            [0, 1],
            SAVED,
        )
    )
    evaluation = Evaluation(found, [], [], k=2, split="test")
    names = display_names([found.record for found in evaluation.runs])
    assert names == {
        "lora_seed0": "CLIP lora [lora_seed0]", "lora_seed1": "CLIP lora [lora_seed1]",
        "fusion_cross": "Hate-CLIPper cross",
    }  # fmt: skip
    table = comparison_table(evaluation)
    assert dict(zip(table["Run"], table["Model"])) == names
    per_class = per_class_table(evaluation)
    assert len(per_class) == 2 * 7 + 2 and per_class.index.is_unique
    assert per_class.loc["CLIP lora [lora_seed0]"]["Recall"].tolist() == [1.0] * 7
    assert per_class.loc["CLIP lora [lora_seed1]"]["Recall"].tolist() == [0.0] * 7
    assert list(roc_curves(evaluation)) == ["Hate-CLIPper cross"]
    fpr, tpr, auroc = roc_curves(evaluation)["Hate-CLIPper cross"]
    assert auroc == 1.0 and fpr[0] == 0 and tpr[-1] == 1


def _record(tmp_path, name: str, config: dict | None, recipe: str = "cass_mm", method: str = "cass_mm"):
    run_dir = tmp_path / name
    run_dir.mkdir()
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(config))
    metrics = {
        "recipe": recipe,
        "method": method,
        "task": "7class",
        "split": "test",
        "modality": "multimodal",
    }
    return RunRecord(name, run_dir, metrics)


def test_runs_sharing_a_model_name_are_told_apart_by_the_config_fields_that_differ(tmp_path):
    base = {"epochs": 2, "lr": 0.001, "seed": 0, "sources": "synthetic", "head_epochs": 20}
    records = [
        _record(tmp_path, "a", {**base, "run_name": "a", "runs_dir": "runs", "progress": True}),
        _record(
            tmp_path, "b", {**base, "epochs": 3, "run_name": "b", "runs_dir": "elsewhere", "resume": False}
        ),
        _record(tmp_path, "c", {**base, "epochs": 3, "seed": 1, "run_name": "c", "keep_last": 5}),
        _record(tmp_path, "lora", {**base, "mode": "lora"}, "clip_classifier", "clip_lora"),
    ]
    assert display_names(records) == {
        "a": "CASS-MM + head (epochs=2, seed=0)", "b": "CASS-MM + head (epochs=3, seed=0)",
        "c": "CASS-MM + head (epochs=3, seed=1)", "lora": "CLIP lora",
    }  # fmt: skip
    # Two epochs values only: the seed is the same, so only epochs is named.
    assert display_names(records[:2]) == {"a": "CASS-MM + head (epochs=2)", "b": "CASS-MM + head (epochs=3)"}


def test_runs_with_the_same_config_or_without_one_are_told_apart_by_folder(tmp_path):
    same = {"epochs": 2, "run_name": "x"}
    records = [
        _record(tmp_path, "one", same),
        _record(tmp_path, "two", {**same, "run_name": "two"}),  # differs in bookkeeping only
        _record(tmp_path, "three", {**same, "epochs": 5}),
    ]
    assert display_names(records) == {
        "one": "CASS-MM + head (epochs=2) [one]", "two": "CASS-MM + head (epochs=2) [two]",
        "three": "CASS-MM + head (epochs=5)",
    }  # fmt: skip
    unconfigured = [_record(tmp_path, "p", None), _record(tmp_path, "q", {"epochs": 1})]
    assert display_names(unconfigured) == {"p": "CASS-MM + head [p]", "q": "CASS-MM + head [q]"}


def _files(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_a_missing_run_a_run_needs_is_named_and_never_trained(workspace, tmp_path):
    runs = tmp_path / "runs"
    for name in ("fusion_cross", "unimodal_late_fusion"):
        shutil.copytree(workspace / "runs" / name, runs / name)
    # The fusion head's backbone is the CLIP weights file its run.json records: here one that is gone.
    record = json.loads((runs / "fusion_cross" / "run.json").read_text())
    record["inputs"]["pretrained"]["path"] = str(runs / "tinyclip" / "clip_weights.pt")
    (runs / "fusion_cross" / "run.json").write_text(json.dumps(record))
    # The late fusion's text and image runs: here, next to it, where there are none.
    metrics = json.loads((runs / "unimodal_late_fusion" / "metrics.json").read_text())
    fused_from = {kind: str(runs / f"unimodal_{kind}") for kind in ("text", "image")}
    (runs / "unimodal_late_fusion" / "metrics.json").write_text(
        json.dumps({**metrics, "fused_from": fused_from})
    )
    before = _files(tmp_path)
    found = evaluate_runs(runs, progress=None)
    assert found.runs == []
    reasons = dict(skipped_table(found).itertuples(index=False))
    assert reasons["fusion_cross"] == (
        f"RunNotFoundError: backbone weights {runs / 'tinyclip' / 'clip_weights.pt'} does not exist; loading "
        "never trains it. Make it with notebook 03_train_clip, or: python -m nbhelpers.train clip ..."
    )
    assert reasons["unimodal_late_fusion"].startswith("RunNotFoundError: run ")
    assert reasons["unimodal_late_fusion"].endswith(
        "Make it with notebook 02_unimodal_baselines, or: python -m nbhelpers.train unimodal ..."
    )
    late = next(record for record, _ in found.skipped if record.name == "unimodal_late_fusion")
    with pytest.raises(RunNotFoundError) as missing:
        evaluate_run(late)
    assert missing.value.path == runs / "unimodal_text"
    assert _files(tmp_path) == before  # nothing trained, nothing written


def test_a_long_reason_keeps_its_end_where_it_says_what_is_wrong():
    from nbhelpers.evaluation.run_scoring import _first_line

    path = "/" + "/".join(["a-long-folder-name"] * 40) + "/epoch_0002.pt"
    reason = _first_line(ValueError(f"checkpoint {path} is not a checkpoint\nsecond line"))
    assert len(reason) <= 400
    assert reason.startswith("ValueError: checkpoint /a-long-folder-name/")
    assert reason.endswith("/epoch_0002.pt is not a checkpoint")
    assert " ... " in reason and "second line" not in reason

"""Re-scoring every run under runs/: real tiny runs of the unimodal and fusion recipes, then broken copies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from nbhelpers.config import ConfigError
from nbhelpers.evaluation.runs import (
    REPREDICTED,
    SAVED,
    EvalRunsConfig,
    Evaluation,
    RunRecord,
    agreement_table,
    comparison_table,
    discover_runs,
    display_names,
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
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.train.recipes import cass_mm, clip_classifier, fusion, unimodal
from nbhelpers.train.recipes.base import write_metrics
from nbhelpers.train.run_dir import latest_checkpoint
from tests.helpers import make_shards, save_tiny_bert

TINY_RUNS = ["cass_mm", "clip_classifier_lora", "fusion_cross", "unimodal_image", "unimodal_late_fusion"]
TINY_RUNS += ["unimodal_text"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Four real runs made by the recipes' ``run()`` on tiny shards: text, image, late fusion (7-class)
    and a Hate-CLIPper head (binary) on a tiny CLIP's exported weights."""
    root = tmp_path_factory.mktemp("eval_runs")
    make_shards(root / "shards", train=64, val=32, test=48, unseen=16, train_shard=64, eval_shard=48)
    save_tiny_bert(root)
    runs, shards = str(root / "runs"), str(root / "shards")
    unimodal.run(
        dict(runs_dir=runs, data_dir=shards, text_model=str(root / "tinybert"), text_max_length=16,
             image_size=32, epochs=2, batch_size=16, eval_splits="test,val", progress=False)
    )  # fmt: skip
    torch.manual_seed(0)
    clip, _, _, _ = create_clip(TINY_VIT)
    (root / "runs" / "tinyclip").mkdir(parents=True)
    torch.save(clip.state_dict(), root / "runs" / "tinyclip" / "clip_weights.pt")
    tiny = dict(runs_dir=runs, data_dir=shards, batch_size=16, progress=False, eval_splits="test,val")
    fusion.run(dict(tiny, pretrained="run:tinyclip", epochs=3, eval_splits=""))
    clip_classifier.run(dict(tiny, pretrained="run:tinyclip", epochs=1))
    cass_mm.run(dict(tiny, epochs=1, head_epochs=2))
    return root


@pytest.fixture(scope="module")
def evaluated(workspace):
    return evaluate_runs(workspace / "runs", split="test", k=3, progress=None)


def saved_metrics(workspace, run: str) -> dict:
    return json.loads((workspace / "runs" / run / "metrics.json").read_text())


def test_every_run_is_found_and_the_folder_without_metrics_is_listed(workspace, evaluated):
    assert sorted(found.record.name for found in evaluated.runs) == TINY_RUNS
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
    write_metrics(
        tmp_path / "ssl_dino", notebook="04_train_ssl_vision", method="dino", modality="image", task="ssl",
        split="test", metrics={"top1": 0.9, "linear_probe": 0.9, "knn": 0.8, "random_linear_probe": 0.3},
        num_samples=10, epochs=1, train_seconds=1.0, backbone="vit_tiny_demo", probe_label="colour",
    )  # fmt: skip
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


def test_config_rejects_k_above_the_number_of_classes():
    assert EvalRunsConfig.from_params("demo").k == 3
    with pytest.raises(ConfigError, match="^k: must be <= 7"):
        EvalRunsConfig.from_params("demo", k=8)
    with pytest.raises(ConfigError, match="^k: must be >= 1"):
        EvalRunsConfig.from_params("demo", k=0)


def test_binary_runs_rank_by_auroc_not_accuracy(tmp_path):
    labels = np.array([0, 0, 0, 0, 1, 1])
    # "ranks": every positive above every negative (AUROC 1) but all above 0.5 (accuracy 2/6).
    # "thresholds": a positive below a negative (AUROC 7/8) but 4 of 6 on the right side of 0.5.
    runs = {
        "ranks": np.array([0.6, 0.6, 0.7, 0.7, 0.8, 0.9]),
        "thresholds": np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.9]),
    }
    metrics = {
        "notebook": "07_hateful_memes_fusion",
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
    metrics = {"notebook": "06_train_clip_lora_classifier", "task": "7class", "split": "test"}
    metrics |= {"modality": "multimodal", "method": "clip_lora"}
    found = [
        score(
            RunRecord(name, tmp_path / name, metrics), "test", np.eye(7)[(labels + shift) % 7], labels, SAVED
        )
        for name, shift in [("lora_seed0", 0), ("lora_seed1", 1)]
    ]
    binary = {"notebook": "07_hateful_memes_fusion", "task": "binary", "split": "test"}
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
    names = display_names(evaluation)
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

"""A run's metrics.json: one record type, checked when made, written in one fixed key order."""

from __future__ import annotations

import pytest

from nbhelpers.train.recipes.results import RunMetrics


def record(**overrides) -> RunMetrics:
    fields = dict(
        recipe="cass_mm", notebook="05_train_cass_mm", method="cass_mm", modality="multimodal", task="7class",
        split="test", metrics={"top1": 0.5, "num_samples": 3}, num_samples=10, epochs=2, train_seconds=1.234,
        classes=("a", "b"), extra={"head_epochs": 4, "splits": {"test": {"top1": 0.5}}},
    )  # fmt: skip
    return RunMetrics(**{**fields, **overrides})


def test_the_record_keeps_the_suites_key_order(tmp_path):
    written = record(stages={"head": tmp_path / "classifier"}).write(tmp_path)
    assert list(written) == [
        "recipe", "notebook", "method", "modality", "task", "classes", "split", "top1", "num_samples",
        "epochs", "train_seconds", "fingerprint", "checkpoint", "head_checkpoint", "head_epochs", "splits",
    ]  # fmt: skip
    assert (
        written["num_samples"] == 10 and written["train_seconds"] == 1.23 and written["classes"] == ["a", "b"]
    )
    assert written["checkpoint"] is None and written["fingerprint"] is None  # no run.json, no checkpoint yet
    assert "classes" not in record(classes=None).record(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipe": "nope"}, "recipe must be one of"),
        ({"modality": "audio"}, "modality must be one of"),
        ({"task": "regression"}, "task must be one of"),
        ({"classes": ()}, "classes"),
        ({"extra": {"fingerprint": "x"}}, "extra: \\['fingerprint'\\]"),
        ({"extra": {"num_samples": 3}}, "extra: \\['num_samples'\\]"),
        ({"metrics": {"split": "val"}}, "metrics: \\['split'\\]"),
        ({"stages": {"head": "h"}, "extra": {"head_checkpoint": 1}}, "head_checkpoint"),
    ],
)
def test_a_bad_record_is_refused_when_made(overrides, message):
    with pytest.raises(ValueError, match=message):
        record(**overrides)

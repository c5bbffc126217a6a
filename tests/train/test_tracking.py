"""The history sent to TensorBoard (and wandb) while training equals ``history.json``."""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from nbhelpers.config import ConfigError
from nbhelpers.train.engine import TrainSpec, fit
from nbhelpers.train.run_dir import read_json
from nbhelpers.train.tracking import LOGS_DIR, STEP_KEYS, Tracking, check_report_to, scalars


def step_fn(model, batch):
    x, y = batch
    pred = model(x).squeeze(-1)
    return F.mse_loss(pred, y), {"mae": (pred - y).abs().mean().item()}


def batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    while True:
        x = torch.randn(8, 3, generator=g)
        yield x, x.sum(-1)


def evaluate(model, epoch):
    return {"val_mse": float(epoch) / 7, "val_note": "text is not logged"}


def spec(run_dir, **kw):
    base = dict(epochs=3, steps_per_epoch=4, lr=1e-2, log_every=2, max_grad_norm=1.0, progress=False)
    return TrainSpec(run_dir=run_dir, **{**base, **kw})


def model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def event_scalars(logs):
    """``{tag: [(step, value), ...]}`` of every scalar in the event files of ``logs`` (purges applied)."""
    acc = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def history_scalars(history):
    """The same shape from ``history.json``, each value rounded to float32 as TensorBoard stores it."""
    expected = {}
    for section, entries in history.items():
        for entry in entries:
            for tag, value in scalars(entry, section).items():
                expected.setdefault(tag, []).append((entry[STEP_KEYS[section]], float(np.float32(value))))
    return expected


def test_default_run_writes_event_files_equal_to_history(tmp_path):
    run = spec(tmp_path / "run")
    assert run.report_to == "tensorboard"
    fit(model(), step_fn, batches, run, evaluate=evaluate)
    history = read_json(run.run_dir / "history.json")
    logged = event_scalars(run.run_dir / LOGS_DIR)
    assert logged == history_scalars(history)
    # What the tags hold: every number of both sections, on the optimiser-step axis.
    assert {"steps/loss", "steps/lr", "steps/mae", "steps/grad_norm"} <= set(logged)
    assert {"epochs/loss", "epochs/lr", "epochs/grad_norm", "epochs/val_mse", "epochs/seconds"} <= set(logged)
    assert [s for s, _ in logged["steps/loss"]] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in logged["epochs/val_mse"]] == [4, 8, 12]
    assert "epochs/val_note" not in logged and "epochs/epoch" not in logged


class Crash(Exception):
    pass


def test_resumed_run_shows_each_step_once(tmp_path):
    """A crash after the checkpoint of epoch 2 logged steps of epoch 3; the resumed run logs them again,
    and TensorBoard keeps only the second copy (the new event file purges the first)."""

    def crash_in_epoch_3(model, epoch):
        if epoch == 3:
            raise Crash
        return evaluate(model, epoch)

    run = spec(tmp_path / "run", epochs=4)
    with pytest.raises(Crash):
        fit(model(), step_fn, batches, run, evaluate=crash_in_epoch_3)
    assert [s for s, _ in event_scalars(run.run_dir / LOGS_DIR)["steps/loss"]][-1] == 12
    fit(model(), step_fn, batches, run, evaluate=evaluate)
    assert len(list((run.run_dir / LOGS_DIR).glob("events.out.tfevents.*"))) == 2
    history = read_json(run.run_dir / "history.json")
    logged = event_scalars(run.run_dir / LOGS_DIR)
    assert logged == history_scalars(history)
    assert [s for s, _ in logged["steps/loss"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    fit(model(), step_fn, batches, run, evaluate=evaluate)  # finished: nothing trained, nothing logged
    assert len(list((run.run_dir / LOGS_DIR).glob("events.out.tfevents.*"))) == 2


def test_report_to_none_writes_no_event_files(tmp_path):
    run = spec(tmp_path / "run", report_to="none", epochs=1)
    fit(model(), step_fn, batches, run)
    assert not (run.run_dir / LOGS_DIR).exists()


def test_report_to_is_checked_before_training(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^report_to: 'mlflow' is not allowed; allowed: tensorboard"):
        spec(tmp_path, report_to="mlflow")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "wandb" else object())
    with pytest.raises(
        ConfigError, match=r"report_to: 'wandb' needs the wandb package \(pip install wandb\)"
    ):
        check_report_to("wandb")


def test_wandb_gets_the_same_values_on_the_main_process_only(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, values, step=None, **kwargs):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("nbhelpers.train.tracking.check_report_to", lambda report_to: None)
    Tracking("wandb", tmp_path / "other-rank", 0, main=False).log({"step": 1, "loss": 1.0}, "steps")
    assert calls == []
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    tracking = Tracking("wandb", tmp_path / "run", 5, main=True, config={"lr": 0.1})
    tracking.log({"step": 6, "epoch": 2, "loss": 0.5, "lr": 0.01}, "steps")
    tracking.log({"epoch": 2, "global_step": 8, "loss": 0.4, "acc": 0.9, "name": "x"}, "epochs")
    tracking.close()
    init = dict(project="mine", name="run", dir=str(tmp_path / "run" / LOGS_DIR), config={"lr": 0.1})
    assert calls == [
        ("init", init),
        ("log", {"steps/loss": 0.5, "steps/lr": 0.01}, 6),
        ("log", {"epochs/loss": 0.4, "epochs/acc": 0.9}, 8),
        ("finish",),
    ]

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from nbhelpers.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from nbhelpers.train.schedule import warmup_cosine_schedule


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))


def test_rng_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    first = draws()
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = draws()
    assert first[:4] == second[:4]
    assert torch.equal(first[4], second[4])


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.student = nn.Linear(3, 2)
        self.teacher = nn.Linear(3, 2)
        self.register_buffer("center", torch.zeros(2))


def make_checkpoint(path):
    torch.manual_seed(1)
    model = Wrapper()
    model.center.fill_(0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = warmup_cosine_schedule(opt, 1, 4)
    model.student(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=None,
        epoch=3,
        global_step=7,
        rng=[capture_rng_state()],
        history={"epochs": [{"epoch": 1, "loss": 0.5}]},
        spec={"lr": 0.1},
    )
    return model, opt


def test_checkpoint_is_weights_only_loadable_and_complete(tmp_path):
    path = tmp_path / "checkpoints" / "epoch_0003.pt"
    model, opt = make_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # raises on anything but tensors and plain containers
    assert raw["epoch"] == 3 and raw["global_step"] == 7 and raw["scaler"] is None
    assert raw["history"]["epochs"][0]["loss"] == 0.5
    assert torch.equal(raw["model"]["center"], torch.full((2,), 0.5))
    assert torch.equal(raw["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert raw["scheduler"]["last_epoch"] == 1
    # no temporary file left; the digest of the file's bytes next to it
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_0003.pt", "epoch_0003.pt.sha256.json"]
    digest = json.loads((path.parent / "epoch_0003.pt.sha256.json").read_text())
    assert digest == {
        "file": "epoch_0003.pt",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "head": path.read_bytes()[:64].hex(),
    }


def test_load_model_weights_with_prefix_and_run_dir(tmp_path):
    model, _ = make_checkpoint(tmp_path / "checkpoints" / "epoch_0003.pt")
    fresh = Wrapper()
    info = load_model_weights(fresh, tmp_path)  # a run directory: its latest checkpoint
    assert info["epoch"] == 3 and info["missing_keys"] == []
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    student = nn.Linear(3, 2)
    load_model_weights(student, tmp_path / "checkpoints" / "epoch_0003.pt", prefix="student.")
    assert torch.equal(student.weight, model.student.weight)
    with pytest.raises(KeyError, match="student"):
        load_model_weights(student, tmp_path, prefix="backbone.")
    with pytest.raises(FileNotFoundError):
        load_model_weights(student, tmp_path / "checkpoints")


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "x.pt")


def test_grad_scaler_state_round_trips(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    scaler.step(opt)
    scaler.update()
    path = tmp_path / "epoch_0001.pt"
    save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        scheduler=warmup_cosine_schedule(opt, 0, 2),
        scaler=scaler,
        epoch=1,
        global_step=1,
        rng=[capture_rng_state()],
    )
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(load_checkpoint(path)["scaler"])
    assert restored.state_dict() == scaler.state_dict()
    assert restored.get_scale() == 1024.0 and restored.state_dict()["_growth_tracker"] == 1

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers.train.run_dir import (
    atomic_open,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    read_json,
    to_jsonable,
    write_json_atomic,
    write_latest_pointer,
)


def test_write_json_atomic_round_trip_leaves_only_the_file(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    write_json_atomic(target, {"auroc": 0.75, "path": Path("/a/b"), "sizes": (1, 2), "n": np.int64(3)})
    assert read_json(target) == {"auroc": 0.75, "path": "/a/b", "sizes": [1, 2], "n": 3}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_the_old_file_and_no_tmp(tmp_path):
    target = tmp_path / "history.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError, match=r"config\['bad'\]\[1\]"):
        write_json_atomic(target, {"bad": [1, object()]})
    with pytest.raises(KeyboardInterrupt), atomic_open(target, "w") as f:
        f.write('{"v": 2, "trunc')
        raise KeyboardInterrupt
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_atomic_open_binary(tmp_path):
    with atomic_open(tmp_path / "t.pt", "wb") as f:
        torch.save({"x": torch.arange(3)}, f)
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "t.txt", "a"):
            pass


def test_to_jsonable_dataclass_and_errors():
    @dataclass
    class Spec:
        run_dir: Path
        betas: tuple

    assert to_jsonable(Spec(Path("runs/x"), (0.9, 0.98))) == {"run_dir": "runs/x", "betas": [0.9, 0.98]}
    assert to_jsonable(torch.tensor(2.5)) == 2.5
    with pytest.raises(TypeError, match="keys must be strings"):
        to_jsonable({1: 2})
    with pytest.raises(TypeError, match="Tensor"):
        to_jsonable({"t": torch.zeros(2)})


def test_checkpoint_listing_ignores_tmp_and_orders_by_epoch(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for epoch in (2, 10, 1):
        checkpoint_path(tmp_path, epoch).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(tmp_path, epoch).write_bytes(b"x")
    (tmp_path / "checkpoints" / ".epoch_0011.pt.abc.tmp").write_bytes(b"half")
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 10]
    assert latest_checkpoint(tmp_path).name == "epoch_0010.pt"
    write_latest_pointer(tmp_path, 10, 123)
    pointer = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert pointer == {"file": "epoch_0010.pt", "epoch": 10, "global_step": 123}

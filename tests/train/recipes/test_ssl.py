"""The SSL recipe on tiny synthetic shards and a tiny in-memory Hugging Face dataset (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.config import ConfigError
from nbhelpers.data.image_sets import hf_columns
from nbhelpers.evaluation.tables import probe_table
from nbhelpers.train.checkpoint import load_checkpoint
from nbhelpers.train.recipes.ssl import (
    SSLConfig,
    build_backbones,
    build_model,
    example_views,
    load_trained,
    run,
)
from nbhelpers.train.run_dir import latest_checkpoint
from nbhelpers.train.ssl_methods.dino import DINOModel
from tests.helpers import make_shards

TINY = dict(
    backbone="vit_test", vit_backbone="vit_test", image_size=16, small_image=True, batch_size=16, epochs=1,
    lr=1e-3, progress=False, resume=False,
)  # fmt: skip
#: Every method at test size, as a preset gives them (``preset_method_kwargs``).
TINY_DINO = dict(n_local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)
TINY_METHODS = dict(
    dino=TINY_DINO, dino_twins=TINY_DINO, barlow_twins=dict(projector_sizes=[32, 32]), cass=dict(proj_dim=16)
)
TINY["preset_method_kwargs"] = TINY_METHODS


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    make_shards(root / "shards", train=64, val=8, test=32, unseen=8, train_shard=64, eval_shard=32)
    return root


def params(root, **overrides):
    return {"runs_dir": str(root / "runs"), "data_dir": str(root / "shards"), **TINY, **overrides}


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("dino", {}),
        ("barlow_twins", {}),
        ("dino_twins", {}),
        ("cass", {"backbone": "resnet18", "small_image": False}),
    ],
)
def test_run_writes_metrics_and_checkpoint(shards, method, extra):
    result = run(params(shards, method=method, run_name=method, steps_per_epoch=2, **extra))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["recipe"] == "ssl" and metrics["task"] == "ssl" and metrics["method"] == method
    assert metrics["modality"] == "image"
    assert metrics["probe_label"] == "colour" and metrics["split"] == "test" and metrics["num_samples"] == 64
    for key in ("linear_probe", "knn", "random_linear_probe", "random_knn"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["top1"] == metrics["linear_probe"]
    # The 7-class probe is reported next to the colour one, for the trained and the initial encoder.
    encoders = metrics["probes"]["test"]["7class"]
    assert len(encoders) == (4 if method == "cass" else 2)
    table = probe_table(result.metrics)
    assert list(table.columns) == ["method", "label", "encoder", "linear probe", "kNN"]
    # The checkpoint holds the whole training state and loads back into a fresh model.
    state = load_checkpoint(latest_checkpoint(result.run_dir))["model"]
    if method in ("dino", "dino_twins"):
        assert any(k.startswith("teacher.") for k in state)
        center = "loss.center" if method == "dino" else "loss.dino.center"
        assert state[center].abs().sum() > 0  # the centre moved from its zero start
    reloaded = load_trained(result.run_dir).model
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, result.extra["model"].state_dict()[name])


def test_barlow_twins_loss_falls_and_probes_beat_chance(shards):
    result = run(params(shards, method="barlow_twins", run_name="bt_long", epochs=4, lr=3e-3))
    losses = [e["loss"] for e in result.history["epochs"]]
    assert losses[-1] < 0.8 * losses[0], losses
    # Colour is plain to see: even 64 training images put the linear probe far above chance (1/7).
    assert result.metrics["linear_probe"] > 0.5


def test_dino_teacher_is_the_ema_of_the_student():
    config = SSLConfig.from_params("demo", **TINY, method="dino", method_kwargs={"momentum_teacher": 0.9})
    model = build_model(config)
    assert isinstance(model, DINOModel)
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p))
    assert model.after_step(0, 10)["momentum"] == pytest.approx(0.9)
    student = model.student.state_dict()
    for name, p in model.teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[name] + 0.1 * student[name])
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_random_baseline_is_the_trained_encoders_initialisation():
    config = SSLConfig.from_params("demo", **{**TINY, "method": "cass", "backbone": "resnet18"})
    model = build_model(config)
    cnn, vit = build_backbones(config)
    for built, initial in ((model.cnn, cnn), (model.vit, vit)):
        for (name, a), b in zip(built.state_dict().items(), initial.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)


def test_example_views_are_the_training_views():
    config = SSLConfig.from_params("demo", **TINY, method="dino")
    views, names = example_views(config, torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
    assert names == ["global 1", "global 2", "local 1", "local 2"]
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 2


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="backbone: cass"):
        SSLConfig.from_params("demo", method="cass", backbone="vit_test")
    with pytest.raises(ConfigError, match="image_size/local_size"):
        SSLConfig.from_params("demo", backbone="vit_test", image_size=20)
    with pytest.raises(ConfigError, match="probe_label"):
        SSLConfig.from_params("demo", probe_label="size")
    with pytest.raises(ConfigError, match="^method_kwargs.local_scale"):
        SSLConfig.from_params("demo", method="dino", method_kwargs={"local_scale": [0.5, 0.1]})


def test_method_kwargs_over_the_presets_entry_make_the_config_and_its_identity():
    config = SSLConfig.from_params("demo", method="dino", method_kwargs={"out_dim": 256})
    # The preset's DINO sizes, the user's out_dim over them, DINO's defaults for the rest.
    assert (config.params.out_dim, config.params.head_hidden_dim, config.params.teacher_temp) == (
        256,
        512,
        0.04,
    )
    stored = config.to_dict()
    assert "preset_method_kwargs" not in stored and stored["method_kwargs"]["out_dim"] == 256
    assert SSLConfig.coerce(stored).params == config.params  # config.json rebuilds the same method
    # Another method's preset entry is not part of the run's identity.
    other = SSLConfig.from_params(
        "demo", method="dino", method_kwargs={"out_dim": 256},
        preset_method_kwargs={**config.preset_method_kwargs, "cass": {"proj_dim": 7}},
    )  # fmt: skip
    assert other.identity().fingerprint == config.identity().fingerprint
    assert (
        SSLConfig.from_params("demo", method="dino").identity().fingerprint != config.identity().fingerprint
    )


def test_method_kwargs_come_from_the_command_line_as_json():
    from nbhelpers.train.__main__ import parse_args

    _, params = parse_args(["ssl", "method=dino", 'method_kwargs={"out_dim": 1024}'])
    assert SSLConfig.coerce(params).params.out_dim == 1024


def tiny_hf_dataset(n=48):
    import datasets

    colours = [(220, 30, 30), (30, 60, 220), (30, 170, 50)]
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        label = i % 3
        pixels = np.full((20, 24, 3), 128, dtype=np.uint8)
        y, x = rng.integers(0, 10), rng.integers(0, 12)
        pixels[y : y + 10, x : x + 12] = colours[label]
        images.append(Image.fromarray(pixels))
        labels.append(label)
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "b", "g"])}
    )
    return datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)


def test_hugging_face_dataset_is_one_parameter_away(shards, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return tiny_hf_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = run(params(shards, method="barlow_twins", dataset="cifar10", run_name="hf", steps_per_epoch=2))
    assert calls == [("cifar10", "train"), ("cifar10", "test")]
    assert result.metrics["probe_label"] == "label" and result.metrics["num_samples"] == 48
    assert set(result.metrics["probes"]["test"]) == {"label"}
    assert result.metrics["random_linear_probe"] > 0.9  # three flat colours: trivially separable


def test_hf_columns_are_detected_or_checked():
    dataset = tiny_hf_dataset(3)
    assert hf_columns(dataset) == ("img", "label")
    with pytest.raises(ValueError, match="image_column: 'image'"):
        hf_columns(dataset, image_column="image")

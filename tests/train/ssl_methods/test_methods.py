"""The method registry: every method builds, steps and has an encoder; its parameters are checked strictly."""

from __future__ import annotations

import pytest
import torch

from nbhelpers.config import ConfigError
from nbhelpers.train.recipes.ssl import SSLConfig, build_model, make_views, step
from nbhelpers.train.ssl_methods import METHODS
from nbhelpers.train.ssl_methods.base import SSLModel
from nbhelpers.train.ssl_methods.dino import DINOParams

TINY = dict(backbone="vit_test", vit_backbone="vit_test", image_size=16, small_image=True, batch_size=4)
#: The smallest sizes of every method (a CASS CNN must be a ResNet).
TINY_KWARGS = {
    "dino": dict(n_local_crops=2, out_dim=32, head_hidden_dim=16, head_bottleneck_dim=8),
    "dino_twins": dict(n_local_crops=1, out_dim=32, head_hidden_dim=16, head_bottleneck_dim=8),
    "barlow_twins": dict(projector_sizes=[16, 16]),
    "cass": dict(proj_dim=8),
}
EXTRA = {"cass": dict(backbone="resnet18")}


def tiny_config(method: str, **overrides) -> SSLConfig:
    params = {**TINY, **EXTRA.get(method, {}), "method": method, "method_kwargs": TINY_KWARGS.get(method, {})}
    return SSLConfig.from_params("demo", **{**params, **overrides})


def test_every_method_has_tiny_sizes_here():
    assert set(TINY_KWARGS) == set(METHODS)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_builds_steps_and_has_an_encoder(method):
    config = tiny_config(method)
    model = build_model(config)
    assert isinstance(model, SSLModel) and isinstance(model, METHODS[method])
    views = make_views(config)
    assert len(views.specs) == len(METHODS[method].view_names(config, config.params))
    batch = {"image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), "epoch": 1, "aug_seed": 3}
    loss, parts = step(model, batch, views)
    assert loss.ndim == 0 and torch.isfinite(loss) and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert isinstance(model.after_step(0, 10), dict)
    encoders = model.encoders()
    assert encoders and all(e(torch.rand(2, 3, 16, 16)).shape[0] == 2 for e in encoders.values())


def test_an_unknown_method_kwarg_names_the_closest_allowed_ones():
    with pytest.raises(
        ConfigError, match=r"^method_kwargs: 'outdim' is not a parameter of DINOParams; did you mean out_dim"
    ):
        tiny_config("dino", method_kwargs={"outdim": 64})
    # Strict against the chosen method: a DINO name is not a Barlow Twins parameter.
    with pytest.raises(ConfigError, match="'out_dim' is not a parameter of BarlowTwinsParams"):
        tiny_config("barlow_twins", method_kwargs={"out_dim": 64})


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("dino", {"out_dim": 0}, "method_kwargs.out_dim: must be >= 1"),
        ("dino", {"out_dim": "big"}, "method_kwargs.out_dim: expected int"),
        ("dino", {"momentum_teacher": 1.5}, "method_kwargs.momentum_teacher: must be <= 1"),
        ("dino", {"center_momentum": 2.0}, "method_kwargs.center_momentum: must be <= 1"),
        ("dino", {"local_scale": [0.5, 0.1]}, "method_kwargs.local_scale: need"),
        ("dino_twins", {"barlow_weight": -1.0}, "method_kwargs.barlow_weight: must be >= 0"),
        ("barlow_twins", {"projector_sizes": []}, "method_kwargs.projector_sizes: need positive"),
        ("barlow_twins", {"lambda_offdiag": -0.1}, "method_kwargs.lambda_offdiag: must be >= 0"),
        ("cass", {"proj_dim": 0}, "method_kwargs.proj_dim: must be >= 1"),
    ],
)
def test_a_bad_method_kwarg_value_names_the_parameter(method, kwargs, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        tiny_config(method, method_kwargs=kwargs)


def test_a_presets_entry_is_checked_for_every_method():
    with pytest.raises(ConfigError, match="^preset_method_kwargs.cass: 'proj_dm'.*did you mean proj_dim"):
        tiny_config("dino", preset_method_kwargs={"cass": {"proj_dm": 8}})
    with pytest.raises(ConfigError, match="^preset_method_kwargs: 'dyno' is not a method"):
        tiny_config("dino", preset_method_kwargs={"dyno": {}})


def test_method_checks_across_the_shared_fields():
    with pytest.raises(ConfigError, match="^backbone: cass trains a CNN"):
        tiny_config("cass", backbone="vit_test")
    for method in ("barlow_twins", "cass", "dino_twins"):  # they standardise over the batch
        with pytest.raises(ConfigError, match="^batch_size: .* need >= 2 per step"):
            tiny_config(method, batch_size=2, grad_accum_steps=2)
    tiny_config("dino", batch_size=2, grad_accum_steps=2)  # DINO's centre needs no batch statistics
    with pytest.raises(ConfigError, match="^batch_size: must be >= 2"):
        tiny_config("dino", batch_size=1, method_kwargs={"n_local_crops": 0})
    # The ViT's patches must divide every crop, the local ones too (DINO only).
    with pytest.raises(ConfigError, match=r"^image_size/local_size: .*8-px patches.*\[12, 16\]"):
        tiny_config("dino", method_kwargs={**TINY_KWARGS["dino"], "local_size": 12})


def test_dino_params_defaults_are_the_papers():
    params = DINOParams()
    assert (params.out_dim, params.teacher_temp, params.student_temp, params.momentum_teacher) == (
        65536,
        0.04,
        0.1,
        0.996,
    )
    assert params.local_crop_size(224) == 96

"""What every self-supervised method shares: its parameters' checks, and a training module with hooks.

A method (after solo-learn's ``solo/methods``) is one module holding one :class:`SSLModel` subclass:

* ``Params``: its hyperparameters, a :class:`MethodParams` dataclass of :func:`~nbhelpers.config.param`
  fields (defaults, bounds, help) with :meth:`MethodParams.check` for rules across them; the recipe's
  ``method_kwargs`` are read into it strictly (:meth:`MethodParams.from_kwargs`);
* :meth:`SSLModel.views`: which crops it trains on (:class:`~nbhelpers.data.augment.ViewSpec`), and
  :meth:`SSLModel.view_names` to title them;
* ``__init__``: every network and the loss (a loss's running state, e.g. DINO's centre, is a buffer), so one
  checkpoint holds the whole training state;
* ``forward(crops, epoch)``: the training step, ``(loss, parts to log)``;
* :meth:`SSLModel.after_step`: what follows an optimiser step (DINO's EMA teacher); nothing by default;
* :meth:`SSLModel.encoders`: the networks the probes read out.

The recipe (:mod:`nbhelpers.train.recipes.ssl`) knows methods only through these names and
:data:`nbhelpers.train.ssl_methods.METHODS`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from nbhelpers.config import ConfigError, check_fields
from nbhelpers.data.augment import ViewSpec
from nbhelpers.models.ssl import VIT_CONFIGS

if TYPE_CHECKING:
    from nbhelpers.train.recipes.ssl import SSLConfig

#: The CNN encoders (for CASS: its CNN; for DINO: a BatchNorm head, as the paper's ResNets).
CNN_BACKBONES = ("resnet18", "resnet50")
#: Every encoder a method can train.
BACKBONES = (*CNN_BACKBONES, *VIT_CONFIGS)

P = TypeVar("P", bound="MethodParams")


@dataclass
class MethodParams:
    """A method's hyperparameters (``SSLConfig.method_kwargs``); a method subclasses it with its fields."""

    @classmethod
    def from_kwargs(cls: type[P], kwargs: Mapping[str, Any], where: str = "method_kwargs") -> P:
        """The parameters ``kwargs`` set, the others at their defaults, checked.

        Args:
            kwargs: ``{name: value}``; every name must be a field of this class.
            where: how messages name the mapping (``method_kwargs``).

        Raises:
            ConfigError: an unknown name (with the closest allowed names), or a value that is not allowed
                (naming it as ``<where>.<name>``).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                raise ConfigError(
                    f"{where}: {key!r} is not a parameter of {cls.__name__}; {hint}allowed: {', '.join(names)}"
                )
        params = cls(**kwargs)
        check_fields(params, prefix=f"{where}.")
        params.check(where)
        return params

    def check(self, where: str = "method_kwargs") -> None:
        """Rules across fields; methods override. ``where`` prefixes the names in messages."""

    def check_at_most_one(self, where: str, *names: str) -> None:
        """Raises ConfigError naming the first of ``names`` (a probability, a momentum) above 1."""
        for name in names:
            if getattr(self, name) > 1:
                raise ConfigError(f"{where}.{name}: must be <= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SSLModel(nn.Module):
    """A self-supervised method: its networks and loss, its views, its step and hooks.

    Args:
        backbones: the encoders of :meth:`backbone_names`, at their initial weights, in that order.
        params: the method's parameters.
        config: the recipe's config (its shared fields: backbone names, image size, views).
    """

    #: The method's parameters class (``method_kwargs`` are read into it).
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, backbones: Sequence[nn.Module], params: MethodParams, config: SSLConfig) -> None:
        super().__init__()

    # -------------------------------------------------------------------- what the method is made of

    @classmethod
    def backbone_names(cls, config: SSLConfig) -> list[str]:
        """The encoders the method trains, by name (``config.backbone`` unless overridden)."""
        return [config.backbone]

    @classmethod
    def check(cls, config: SSLConfig, params: MethodParams) -> None:
        """Rules between the method's parameters and the shared fields; nothing by default.

        Raises:
            ConfigError: naming the parameter.
        """

    @classmethod
    def views(cls, config: SSLConfig, params: MethodParams) -> list[ViewSpec]:
        """The crops of each image a step trains on, in the order ``forward`` takes them."""
        raise NotImplementedError

    @classmethod
    def view_names(cls, config: SSLConfig, params: MethodParams) -> list[str]:
        """A title per view of :meth:`views`, for a picture of them."""
        return [f"view {i + 1}" for i in range(len(cls.views(config, params)))]

    # -------------------------------------------------------------------------------------- training

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """The training step: the loss of one batch of views ``(B, 3, s, s)`` each (0-based ``epoch``),
        and its parts to log."""
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after each optimiser step (0-based ``step`` of ``total_steps``); returns values to log."""
        return {}

    def encoders(self) -> dict[str, nn.Module]:
        """The encoders to probe, by name; the first is the run's headline encoder."""
        raise NotImplementedError


def global_view(config: SSLConfig, blur_p: float, solarize_p: float) -> ViewSpec:
    """A crop of ``[global_scale_min, 1]`` of the image at ``image_size``, with these probabilities."""
    return ViewSpec(config.image_size, (config.global_scale_min, 1.0), blur_p=blur_p, solarize_p=solarize_p)


def check_batch_statistics(config: SSLConfig, method: str) -> None:
    """Raises ConfigError unless each step sees 2 samples or more: ``method`` standardises over the batch.

    Raises:
        ConfigError: naming ``batch_size``.
    """
    if config.batch_size // config.grad_accum_steps < 2:
        raise ConfigError(f"batch_size: {method} standardises over the batch; need >= 2 per step")

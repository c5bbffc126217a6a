"""The recipes by name: what each one trains, loads and predicts, behind one interface.

Every recipe module defines ``RECIPE = Recipe(...)`` at its end. :data:`RECIPES` maps each recipe's name
to its module path and imports a module the first time its recipe is asked for, so that importing this
package (or listing the names) loads none of the recipes' models. A run's ``metrics.json`` names the
recipe that made it (``"recipe"``), which is how evaluation finds the recipe again.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbhelpers.train.recipes.names import RECIPE_MODULES

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from nbhelpers.data.memory import TensorSplit


@dataclass
class TrainedRun:
    """A finished run rebuilt from its directory: what every recipe's ``load_trained`` returns.

    Attributes:
        recipe: the recipe's name.
        run_dir: the run directory.
        config: the recipe's config from the run's ``config.json``, as rebuilt for loading
            (:meth:`~nbhelpers.train.recipes.config.RecipeConfig.load`: fields that only name initial weights
            the checkpoints hold are at their defaults).
        model: the module that predicts or embeds, in eval mode, on the CPU.
        tokenizer: turns captions into the model's token ids (None: the model takes raw text, or no text).
        image_size: the side of the square pictures the model takes (None: no pictures).
        mean, std: the per-channel normalisation of the model's pictures (None: no pictures).
        parts: named sub-modules an explainer needs, documented by each recipe's ``load_trained``
            (e.g. ``"image_tower"``, ``"head"``, ``"cnn"``).
        class_names: the classes the model's outputs range over, in order (None: no classifier).
    """

    recipe: str
    run_dir: Path
    config: Any
    model: nn.Module
    tokenizer: Callable | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    parts: dict[str, nn.Module] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None

    def _separate_parts(self) -> dict[str, nn.Module]:
        """The parts that hold weights outside ``model`` (e.g. a classifier head trained on its features)."""
        inside = {id(p) for p in self.model.parameters()} | {id(b) for b in self.model.buffers()}
        return {
            name: part
            for name, part in self.parts.items()
            if any(id(t) not in inside for t in (*part.parameters(), *part.buffers()))
        }

    def weights(self) -> dict[str, torch.Tensor]:
        """Every weight the run predicts with, as one flat ``{name: tensor}`` on the CPU: the model's
        state under ``model.``, then each part holding weights outside the model under ``<part>.``.

        The tensors are contiguous copies sharing no memory (what ``safetensors`` stores); the names are
        what :meth:`load_weights` reads back.
        """
        modules = {"model": self.model, **self._separate_parts()}
        return {
            f"{prefix}.{key}": value.detach().cpu().clone().contiguous()
            for prefix, module in modules.items()
            for key, value in module.state_dict().items()
        }

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Fills the model (and its separate parts) with :meth:`weights` of the same architecture, strictly,
        and puts them in eval mode.

        Raises:
            RuntimeError: from ``load_state_dict`` when a name or shape does not match.
        """
        modules = {"model": self.model, **self._separate_parts()}
        for prefix, module in modules.items():
            mine = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")}
            module.load_state_dict(mine, strict=True)
            module.eval()
        unknown = sorted(k for k in weights if k.split(".", 1)[0] not in modules)
        if unknown:
            raise RuntimeError(f"weights hold names of no part of the model: {unknown[:5]}")


@dataclass(frozen=True)
class Recipe:
    """One training recipe: its config, the notebook that runs it, and how to load and score its runs.

    Attributes:
        name: the recipe's name (``python -m nbhelpers.train NAME``; ``metrics.json``'s ``"recipe"``).
        config_class: its :class:`~nbhelpers.train.recipes.config.RecipeConfig` subclass.
        notebook: the notebook that runs it (``"05_train_cass_mm"``).
        run: ``run(config or dict of parameters) -> RunResult``: trains, evaluates, writes the run.
        load_trained: ``load_trained(run_dir, weights=None) -> TrainedRun``; never trains. With ``weights``
            (:meth:`TrainedRun.weights` of a run of the same config, e.g. read from an exported
            ``model.safetensors``) the model is filled with them instead of the run's checkpoints, and
            nothing else is read but ``config.json`` and ``metrics.json``.
        predict_run: ``predict_run(run_dir, split) -> (scores, labels)`` from the run's checkpoint; None
            where the recipe has no classifier.
        display_name: ``display_name(metrics) -> str``: the readable model name of a run's ``metrics.json``.
        predict_split: ``predict_split(trained, data) -> scores``: the scores of a loaded run on samples held
            in memory (a :class:`~nbhelpers.data.memory.TensorSplit` at ``trained.image_size``): ``(N, C)``
            class probabilities, or ``(N,)`` hateful probabilities of a binary head. ``predict_run`` is
            ``load_trained`` + the split + this. None where the recipe has no classifier.
    """

    name: str
    config_class: type
    notebook: str
    run: Callable[[Any], Any]
    load_trained: Callable[..., TrainedRun]
    predict_run: Callable[[str | os.PathLike, str], tuple[np.ndarray, np.ndarray]] | None
    display_name: Callable[[Mapping[str, Any]], str]
    predict_split: Callable[[TrainedRun, TensorSplit], np.ndarray] | None = None

    @property
    def how(self) -> str:
        """What makes a run of this recipe, for :class:`~nbhelpers.train.run_dir.RunNotFoundError`."""
        return f"notebook {self.notebook}, or: python -m nbhelpers.train {self.name} ..."


class RecipeRegistry(Mapping[str, Recipe]):
    """A read-only ``{name: Recipe}`` that imports a recipe's module on first access.

    Args:
        modules: recipe name -> the module whose ``RECIPE`` it is, in the order to list them.
    """

    def __init__(self, modules: Mapping[str, str]) -> None:
        self._modules = dict(modules)

    def __getitem__(self, name: str) -> Recipe:
        """The recipe ``name``.

        Raises:
            KeyError: for a name that is not registered.
            ValueError: if its module defines no ``RECIPE`` of that name.
            ModuleNotFoundError: if its module imports something missing (not masked).
        """
        module = importlib.import_module(self._modules[name])
        recipe = getattr(module, "RECIPE", None)
        if not isinstance(recipe, Recipe) or recipe.name != name:
            raise ValueError(
                f"recipe module {module.__name__} defines no RECIPE = Recipe(name={name!r}, ...)"
            )
        return recipe

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, name: object) -> bool:
        return name in self._modules

    def summary(self, name: str) -> str:
        """The first line of the docstring of ``name``'s module, read without importing it (``list`` stays fast).

        Raises:
            KeyError: for a name that is not registered.
        """
        spec = importlib.util.find_spec(self._modules[name])
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return ""
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
        return doc.split("\n", 1)[0]


#: Every recipe by name, in the notebooks' order (each imported when first asked for).
RECIPES = RecipeRegistry(RECIPE_MODULES)


def get_recipe(name: str, registry: Mapping[str, Recipe] = RECIPES) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if not isinstance(name, str) or name not in registry:
        known = ", ".join(registry) or "none"
        raise ValueError(f"unknown recipe {name!r}; available recipes: {known}")
    return registry[name]


def default_run_dir(
    recipe: str, preset: str, runs_dir: str | os.PathLike, data_dir: str | os.PathLike, **params: Any
) -> Path:
    """The folder of ``recipe``'s run with ``preset``'s config (and ``params``) on ``data_dir``'s shards.

    Only computes the name (``runs_dir/<recipe>-<fingerprint>``,
    :meth:`~nbhelpers.train.recipes.config.RecipeConfig.planned_run_dir`): nothing is read beyond the shard
    manifests and any input weights' hashes, nothing is trained or written. This is how a notebook that
    reads another notebook's run (08 explains 06's classifier) finds the run of the same preset.

    Raises:
        ValueError: for an unknown recipe.
        RunNotFoundError: an input run of that config (``pretrained="run:clip"``) is missing.
        FileNotFoundError: the shards are missing.
    """
    config = get_recipe(recipe).config_class.from_params(
        preset, runs_dir=str(runs_dir), data_dir=str(data_dir), **params
    )
    return config.planned_run_dir()

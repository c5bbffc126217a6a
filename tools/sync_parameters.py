"""Writes each notebook's parameters cell and config cell from its config class.

python tools/sync_parameters.py            # rewrite the cells that are out of sync
python tools/sync_parameters.py --check    # exit 1 (naming them) if any notebook is out of sync

The parameters cell assigns every field of the notebook's config class (``None``: the preset's value,
unless :data:`NOTEBOOKS` gives the notebook a literal default), each with its ``help`` (or its choices) as
a comment, then the notebook-only parameters; the next cell builds the config with
:func:`nbhelpers.parameters.notebook_config`. Run it after adding, removing or documenting a config field.
Only cell sources change (and papermill's injected cells are removed); outputs are left as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notebook_cells import (
    INJECTED_TAG,
    cell_source,
    parameters_index,
    read_notebook,
    set_cell_source,
    strip_injected,
    write_notebook,
)

from nbhelpers.parameters import PARAMETERS_MARKER, field_names

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
IMPORT_LINE = "from nbhelpers.parameters import notebook_config"


@dataclass(frozen=True)
class NotebookParameters:
    """How one notebook's parameters map to its config.

    Attributes:
        config: the config class as ``"module:Class"``.
        expression: how the notebook's code names that class (as its imports cell imports it).
        defaults: ``{field: (literal, comment)}`` for the fields whose cell value is not ``None``
            (comment ``None``: the field's help).
        extras: ``{name: (literal, comment)}``: the notebook-only parameters, not config fields.
        config_lines: lines of the config cell after ``print(config.describe())``.
    """

    config: str
    expression: str
    defaults: dict[str, tuple[Any, str | None]] = field(default_factory=dict)
    extras: dict[str, tuple[Any, str]] = field(default_factory=dict)
    config_lines: tuple[str, ...] = ()

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


RECIPES = "nbhelpers.train.recipes"
#: Every notebook with parameters, by file name without ``.ipynb``.
NOTEBOOKS: dict[str, NotebookParameters] = {
    "01_prepare_webdataset": NotebookParameters(
        "nbhelpers.data.prepare:PrepareConfig",
        "PrepareConfig",
        defaults={"preset": ("demo", '"demo": CPU, about a minute; "t4": the full-size synthetic benchmark')},
    ),
    "02_unimodal_baselines": NotebookParameters(
        f"{RECIPES}.unimodal:UnimodalConfig",
        "UnimodalConfig",
        defaults={
            "preset": (
                "demo",
                '"demo": CPU, about 2 minutes; "t4": bert-base-uncased + ImageNet ResNet-18 on a Colab T4',
            )
        },
    ),
    "03_train_clip": NotebookParameters(
        f"{RECIPES}.clip:ClipConfig",
        "clip.ClipConfig",
        defaults={
            "preset": (
                "demo",
                '"demo": tiny CLIP from scratch on CPU; "t4": fine-tune ViT-B-32 (laion2b_s34b_b79k)',
            ),
            "eval_splits": ("test,unseen", None),
        },
    ),
    "04_train_ssl_vision": NotebookParameters(
        f"{RECIPES}.ssl:SSLConfig",
        "SSLConfig",
        defaults={
            "preset": (
                "demo",
                '"demo": CPU, about 2 minutes on the synthetic benchmark; "t4": Barlow Twins ResNet-18 on CIFAR-10',
            )
        },
    ),
    "05_train_cass_mm": NotebookParameters(
        f"{RECIPES}.cass_mm:CassMMConfig",
        "cass_mm.CassMMConfig",
        defaults={
            "preset": ("demo", '"demo": tiny towers on CPU; "t4": ResNet-50 + ViT-B-32 (laion2b) on a T4')
        },
    ),
    "06_train_clip_lora_classifier": NotebookParameters(
        f"{RECIPES}.clip_classifier:ClipClassifierConfig",
        "clip_classifier.ClipClassifierConfig",
        defaults={
            "preset": (
                "demo",
                '"demo": tiny CLIP from notebook 03 on CPU; "t4": ViT-B-32 laion2b_s34b_b79k on a T4',
            ),
            "eval_splits": ("test,unseen", None),
        },
        extras={"compare_modes": (True, "also train the other mode, for the comparison table")},
    ),
    "07_hateful_memes_fusion": NotebookParameters(
        f"{RECIPES}.fusion:FusionConfig",
        "FusionConfig",
        defaults={
            "preset": (
                "demo",
                '"demo": CPU, about 2 minutes, synthetic benchmark; "t4": CLIP ViT-L/14 on Hateful Memes',
            )
        },
        extras={"compare_fusions": (True, "also train the other two fusions on the same cached features")},
        config_lines=(
            'print("evaluated on:", config.eval_plan.kinds, "| primary:", config.eval_plan.primary)',
        ),
    ),
    "08_inspect_attention": NotebookParameters(
        "nbhelpers.evaluation.attention:AttentionConfig",
        "AttentionConfig",
        defaults={"preset": ("demo", "the preset a missing default run is trained with")},
    ),
    "09_eval_topk": NotebookParameters(
        "nbhelpers.evaluation.runs:EvalRunsConfig",
        "EvalRunsConfig",
        defaults={
            "preset": (
                "demo",
                "the evaluation is the same for every preset; the runs it finds are what differ",
            )
        },
    ),
}


def literal(value: Any) -> str:
    """``value`` as Python source (strings in double quotes, as the notebooks write them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _line(name: str, value: Any, comment: str | None) -> str:
    text = f"{name} = {literal(value)}"
    comment = " ".join((comment or "").split())
    return f"{text}  # {comment}" if comment else text


def _field_groups(config_class: type) -> list[tuple[type, list[str]]]:
    """The fields of ``config_class`` grouped by the class that declares them, the config class first.

    ``preset`` is left out (the cell assigns it first); a field a subclass declares again counts as the
    subclass's.
    """
    names = set(field_names(config_class)) - {"preset"}
    owner: dict[str, type] = {}
    for cls in reversed(config_class.__mro__):
        for name in vars(cls).get("__annotations__", {}):
            if name in names:
                owner[name] = cls
    groups = []
    for cls in config_class.__mro__:
        declared = [n for n in vars(cls).get("__annotations__", {}) if owner.get(n) is cls]
        # The config class's own fields in its order; inherited ones in the dataclass's field order.
        order = declared if cls is config_class else [n for n in field_names(config_class) if n in declared]
        if order:
            groups.append((cls, order))
    return groups


def parameters_cell(spec: NotebookParameters) -> str:
    """The source of the notebook's parameters cell."""
    config_class = spec.config_class()
    fields = {f.name: f for f in dataclasses.fields(config_class)}

    def field_line(name: str) -> str:
        value, comment = spec.defaults.get(name, (None, None))
        if comment is None:  # the field's help, else its choices
            metadata = fields[name].metadata
            comment = metadata.get("help") or " | ".join(map(str, metadata.get("choices") or ()))
        return _line(name, value, comment)

    lines = [
        f"{PARAMETERS_MARKER} every field of {config_class.__name__} (None: the preset's value); "
        "any other name stops the next cell",
        field_line("preset"),
    ]
    for cls, names in _field_groups(config_class):
        if cls is not config_class:
            doc = (cls.__doc__ or "").strip().split("\n")[0]
            lines.append(f"# From {cls.__name__}: {doc}" if doc else f"# From {cls.__name__}")
        lines.extend(field_line(name) for name in names)
    if spec.extras:
        lines.append("# This notebook only (not config fields)")
        lines.extend(_line(name, value, comment) for name, (value, comment) in spec.extras.items())
    return "\n".join(lines)


def config_cell(spec: NotebookParameters) -> str:
    """The source of the cell after the parameters cell: it builds and prints the config."""
    extra = f", extra={tuple(spec.extras)!r}".replace("'", '"') if spec.extras else ""
    lines = [
        "# NBVAL_CHECK_OUTPUT",
        f"config = notebook_config({spec.expression}, globals(){extra})",
        "print(config.describe())",
        *spec.config_lines,
    ]
    return "\n".join(lines)


def sync_notebook(path: Path, spec: NotebookParameters, *, write: bool) -> list[str]:
    """Brings ``path``'s parameters and config cells in line with ``spec``.

    Args:
        path: the notebook.
        spec: its entry of :data:`NOTEBOOKS`.
        write: rewrite the notebook (else only report).

    Returns:
        What was (or, without ``write``, is) out of sync, one line each; empty when in sync.

    Raises:
        ValueError: if the notebook has not exactly one parameters cell, no code cell after it, or its
            imports do not include :data:`IMPORT_LINE` (add it to the imports cell by hand).
    """
    notebook = read_notebook(path)
    problems = []
    if strip_injected(notebook):
        problems.append(f"{path.name}: has a papermill {INJECTED_TAG!r} cell")
    index = parameters_index(notebook, path.name)
    cells = notebook["cells"]
    after = [i for i in range(index + 1, len(cells)) if cells[i]["cell_type"] == "code"]
    if not after:
        raise ValueError(f"{path.name}: no code cell after the parameters cell")
    if not any(IMPORT_LINE in cell_source(cell) for cell in cells[:index] if cell["cell_type"] == "code"):
        raise ValueError(f"{path.name}: the cells before the parameters cell must hold {IMPORT_LINE!r}")
    for i, text, what in (
        (index, parameters_cell(spec), "parameters"),
        (after[0], config_cell(spec), "config"),
    ):
        if cell_source(cells[i]) != text:
            problems.append(f"{path.name}: the {what} cell is out of sync")
            set_cell_source(cells[i], text)
    if write and problems:
        write_notebook(path, notebook)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only report; exit 1 if a notebook is out of sync"
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR, help="folder of the notebooks")
    args = parser.parse_args(argv)
    paths = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    missing = sorted({p.stem for p in paths} - set(NOTEBOOKS))
    if missing:
        print(f"no entry in NOTEBOOKS for {', '.join(missing)}", file=sys.stderr)
        return 1
    problems = []
    for path in paths:
        problems += sync_notebook(path, NOTEBOOKS[path.stem], write=not args.check)
    for problem in problems:
        print(problem)
    if args.check and problems:
        print("run: python tools/sync_parameters.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writes each notebook's parameters cell and config cell from its config class and :data:`NOTEBOOKS`.

python tools/sync_parameters.py            # rewrite the cells that are out of sync
python tools/sync_parameters.py --check    # exit 1 (naming them) if any notebook is out of sync

The parameters cell assigns the notebook's knobs, the fields of its config class people turn (at most
:data:`MAX_KNOBS`, ``preset`` first; ``None``: the preset's value unless :data:`NOTEBOOKS` gives a
literal), each with its ``help`` (or the table's comment, or its choices) as a comment; then
``overrides = {}`` (a dict of any other field -> value); then the notebook-only parameters. The next
cell builds the config with :func:`nbhelpers.parameters.notebook_config` and prints every field. Run it
after changing a notebook's knobs or documenting one. Only cell sources change (and papermill's injected
cells are removed); outputs are left as they are.
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

from nbhelpers.parameters import OVERRIDES, PARAMETERS_MARKER, field_names

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
IMPORT_LINE = "from nbhelpers.parameters import notebook_config"


#: The most knobs (``preset`` included) a parameters cell lists; every other field goes in overrides.
MAX_KNOBS = 12


@dataclass(frozen=True)
class NotebookParameters:
    """How one notebook's parameters map to its config.

    Attributes:
        config: the config class as ``"module:Class"``.
        expression: how the notebook's code names that class (as its imports cell imports it).
        knobs: ``{field: (literal, comment)}``, in cell order, ``preset`` first: the fields the cell lists
            (literal ``None``: the preset's value; comment ``None``: the field's ``help``, as
            ``--help`` on the command line shows it, else its choices). Every other field goes in ``overrides``.
        extras: ``{name: (literal, comment)}``: the notebook-only parameters, not config fields.
        config_lines: lines of the config cell after ``print(config.describe())``.
    """

    config: str
    expression: str
    knobs: dict[str, tuple[Any, str | None]] = field(default_factory=dict)
    extras: dict[str, tuple[Any, str]] = field(default_factory=dict)
    config_lines: tuple[str, ...] = ()

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


def knobs(preset: str, *names: str, **literals: Any) -> dict[str, tuple[Any, str | None]]:
    """A :attr:`NotebookParameters.knobs` table: ``preset`` (its literal ``"demo"``, comment ``preset``),
    then ``names`` (``None``, the field's help), then ``literals`` (``name=literal`` or
    ``name=(literal, comment)``)."""
    table: dict[str, tuple[Any, str | None]] = {"preset": ("demo", preset)}
    table.update((name, (None, None)) for name in names)
    for name, value in literals.items():
        table[name] = value if isinstance(value, tuple) else (value, None)
    return table


RECIPES = "nbhelpers.train.recipes"
#: Every notebook with parameters, by file name without ``.ipynb``.
NOTEBOOKS: dict[str, NotebookParameters] = {
    "01_prepare_webdataset": NotebookParameters(
        "nbhelpers.data.prepare:PrepareConfig",
        "PrepareConfig",
        knobs(
            '"demo": CPU, about a minute; "t4": the full-size synthetic benchmark',
            *("source", "raw_dir", "out_dir", "image_size", "limit", "seed", "workers"),
            *("hf_dataset", "hf_layout", "own_files", "label_map"),
        ),
    ),
    "02_unimodal_baselines": NotebookParameters(
        f"{RECIPES}.unimodal:UnimodalConfig",
        "UnimodalConfig",
        knobs(
            '"demo": CPU, about 2 minutes; "t4" is "hm_bert_resnet152_late_fusion": BERT + ResNet-152 on Hateful Memes',
            *("model", "data_dir", "sources", "epochs", "batch_size", "lr", "text_model", "text_lr"),
            *("image_size", "mixed_precision", "seed"),
        ),
    ),
    "03_train_clip": NotebookParameters(
        f"{RECIPES}.clip:ClipConfig",
        "clip.ClipConfig",
        knobs(
            '"demo": tiny CLIP from scratch on CPU; "t4": fine-tune ViT-B-32 (laion2b_s34b_b79k)',
            *("model", "pretrained", "data_dir", "sources", "epochs", "batch_size", "lr", "image_size"),
            *("mixed_precision", "seed"),
            eval_splits="test,unseen",
        ),
    ),
    # A method's own parameters (DINO's out_dim, n_local_crops, ...; Barlow Twins' projector_sizes) are one
    # knob, method_kwargs, checked against the chosen method.
    "04_train_ssl_vision": NotebookParameters(
        f"{RECIPES}.ssl:SSLConfig",
        "SSLConfig",
        knobs(
            '"demo": CPU, about 2 minutes; "t4" is "dino_twins_resnet50_cifar10"; other rows in docs/reproducing.md',
            *("method", "backbone", "dataset", "image_size", "epochs", "batch_size", "lr"),
            *("mixed_precision", "seed"),
            colour_jitter=(None, "jitter strength s (1: DINO's); 0 turns it off"),
            method_kwargs=(
                None,
                "the method's own parameters, e.g. {\"out_dim\": 1024} (None: the preset's)",
            ),
        ),
    ),
    "05_train_cass_mm": NotebookParameters(
        f"{RECIPES}.cass_mm:CassMMConfig",
        "cass_mm.CassMMConfig",
        knobs(
            '"demo": tiny towers on CPU; "t4": ResNet-50 + ViT-B-32 (laion2b) on a T4',
            *("model", "pretrained", "cnn", "cnn_image_size", "data_dir", "sources", "epochs"),
            *("batch_size", "lr", "head_epochs", "seed"),
        ),
    ),
    "06_train_clip_lora_classifier": NotebookParameters(
        f"{RECIPES}.clip_classifier:ClipClassifierConfig",
        "clip_classifier.ClipClassifierConfig",
        knobs(
            '"demo": tiny CLIP from notebook 03 on CPU; "t4" is "clip_lora_7class" (also "clip_baseline_7class")',
            *("mode", "model", "pretrained", "data_dir", "sources", "epochs", "batch_size", "lr"),
            *("lora_rank", "seed"),
            eval_splits="test,unseen",
        ),
        extras={"compare_modes": (True, "also train the other mode, for the comparison table")},
    ),
    "07_hateful_memes_fusion": NotebookParameters(
        f"{RECIPES}.fusion:FusionConfig",
        "FusionConfig",
        knobs(
            '"demo": CPU, about 2 minutes; "t4" is "hateclipper_vitl14_cross"; other rows in docs/reproducing.md',
            *("backbone", "pretrained", "fusion", "map_dim", "trainable_backbone", "data_dir", "sources"),
            *("epochs", "batch_size", "lr", "seed"),
        ),
        extras={"compare_fusions": (True, "also train the other two fusions on the same cached features")},
        config_lines=(
            'print("evaluated on:", config.eval_plan.kinds, "| primary:", config.eval_plan.primary)',
        ),
    ),
    "08_inspect_attention": NotebookParameters(
        "nbhelpers.evaluation.attention:AttentionConfig",
        "AttentionConfig",
        knobs(
            "the preset a missing default run is trained with",
            *("run_name", "recipe", "cnn_run_name", "ssl_run_name", "runs_dir", "data_dir", "split"),
            *("sample", "num_samples", "layer", "mass"),
        ),
    ),
    "09_eval_topk": NotebookParameters(
        "nbhelpers.evaluation.runs:EvalRunsConfig",
        "EvalRunsConfig",
        knobs(
            "the evaluation is the same for every preset; the runs it finds are what differ",
            "runs_dir",
            "split",
            "k",
            "repredict",
            "calibration_split",
            "operating_targets",
        ),
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


def check_knobs(spec: NotebookParameters, name: str = "notebook") -> None:
    """Stops on a table entry the cell could not be written from.

    Raises:
        ValueError: if a knob is not a field of the config class, ``preset`` is not the first knob, there
            are more than :data:`MAX_KNOBS`, a knob has no comment (no help or
            choices) or one holding ``=`` (papermill skips such a line), or an extra is a field or
            ``overrides``.
    """
    config_class = spec.config_class()
    fields = field_names(config_class)
    where = f"{name}: {config_class.__name__}"
    unknown = [knob for knob in spec.knobs if knob not in fields]
    if unknown:
        raise ValueError(
            f"{where} has no field {', '.join(map(repr, unknown))} (a knob in tools/sync_parameters.py's "
            f"NOTEBOOKS); its fields: {', '.join(fields)}"
        )
    if next(iter(spec.knobs), None) != "preset":
        raise ValueError(f"{where}: the first knob must be 'preset'")
    if len(spec.knobs) > MAX_KNOBS:
        raise ValueError(f"{where}: {len(spec.knobs)} knobs, at most {MAX_KNOBS}; move some to overrides")
    silent = [knob for knob in spec.knobs if not _comment(config_class, knob, spec.knobs[knob][1])]
    if silent:
        raise ValueError(
            f"{where}: no help for {', '.join(silent)}; give the field a help= or the table a comment"
        )
    equals = [knob for knob in spec.knobs if "=" in _comment(config_class, knob, spec.knobs[knob][1])]
    if equals:  # papermill skips (with a warning) a parameters line holding a second "="
        raise ValueError(
            f"{where}: the comment of {', '.join(equals)} holds '='; give one without in the table"
        )
    bad = [extra for extra in spec.extras if extra in fields or extra == OVERRIDES]
    if bad:
        raise ValueError(
            f"{where}: the extra {bad[0]!r} is a field or {OVERRIDES!r}, not a notebook-only name"
        )


def _comment(config_class: type, name: str, comment: str | None) -> str:
    if comment is None:  # the field's help, else the table's, else its choices
        metadata = next(f for f in dataclasses.fields(config_class) if f.name == name).metadata
        comment = metadata.get("help") or " | ".join(map(str, metadata.get("choices") or ()))
    return comment


def parameters_cell(spec: NotebookParameters, name: str = "notebook") -> str:
    """The source of the notebook's parameters cell.

    Raises:
        ValueError: see :func:`check_knobs`.
    """
    check_knobs(spec, name)
    config_class = spec.config_class()
    cls = config_class.__name__
    rest = [f for f in field_names(config_class) if f not in spec.knobs]
    lines = [
        f"{PARAMETERS_MARKER} the knobs of {cls} people turn (None: the preset's value); "
        "any other name stops the next cell",
        *(
            _line(knob, value, _comment(config_class, knob, comment))
            for knob, (value, comment) in spec.knobs.items()
        ),
    ]
    if rest:
        lines.append(
            f"# Any other field of {cls} goes in overrides (or papermill -p name value); "
            "the next cell prints them all"
        )
    else:
        lines.append(f"# Every field of {cls} is above: overrides stays empty")
    lines.append(
        _line(
            OVERRIDES, {}, '{"field": value, ...} for the fields not listed above (None: the preset\'s value)'
        )
    )
    if spec.extras:
        lines.append("# This notebook only (not config fields)")
        lines.extend(_line(extra, value, comment) for extra, (value, comment) in spec.extras.items())
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
        (index, parameters_cell(spec, path.name), "parameters"),
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
    try:
        for path in paths:
            problems += sync_notebook(path, NOTEBOOKS[path.stem], write=not args.check)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if args.check and problems:
        print("run: python tools/sync_parameters.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

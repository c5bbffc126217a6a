"""tools/sync_parameters.py and tools/notebook_cells.py, the committed notebooks' parameters cells, and
papermill runs that stop (or not) at the config cell."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import nbformat
import papermill as pm
import pytest

from nbhelpers.config import BaseConfig, param
from nbhelpers.parameters import PARAMETERS_MARKER, assigned_names, field_names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the tools are scripts, not a package
notebook_cells = importlib.import_module("notebook_cells")
sync_parameters = importlib.import_module("sync_parameters")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@dataclass
class _ToyBase(BaseConfig):
    """Fields every toy has."""

    data_dir: str = param("data", help="where the data is")
    epochs: int = param(1, min=1, help="passes over the data")


@dataclass
class ToyConfig(_ToyBase):
    """A toy."""

    SECTION: ClassVar[str] = "toy"

    width: int = param(8, help="how wide\n   it is")
    mode: str = param("a", choices=("a", "b"))
    data_dir: str = param("toy", help="the toy's data")


TOY = sync_parameters.NotebookParameters(
    f"{__name__}:ToyConfig",
    "ToyConfig",
    sync_parameters.knobs('"demo": quick', "mode", "width", epochs=(3, "how many")),
    extras={"compare": (True, "also compare")},
    config_lines=("print(config.width)",),
)


def test_the_cells_are_written_from_the_config_class():
    assert sync_parameters.parameters_cell(TOY) == (
        "# Parameters: the knobs of ToyConfig people turn (None: the preset's value); any other name stops "
        "the next cell\n"
        'preset = "demo"  # "demo": quick\n'
        "mode = None  # a | b\n"
        "width = None  # how wide it is\n"
        "epochs = 3  # how many\n"
        "# Any other field of ToyConfig goes in overrides (or papermill -p name value); the next cell prints "
        "them all\n"
        'overrides = {}  # {"field": value, ...} for the fields not listed above (None: the preset\'s value)\n'
        "# This notebook only (not config fields)\n"
        "compare = True  # also compare"
    )
    assert sync_parameters.config_cell(TOY) == (
        "# NBVAL_CHECK_OUTPUT\n"
        'config = notebook_config(ToyConfig, globals(), extra=("compare",))\n'
        "print(config.describe())\n"
        "print(config.width)"
    )


def test_a_cell_listing_every_field_says_overrides_stays_empty():
    spec = dataclasses.replace(TOY, knobs=sync_parameters.knobs("q", "data_dir", "epochs", "width", "mode"))
    assert "# Every field of ToyConfig is above: overrides stays empty\noverrides = {}" in (
        sync_parameters.parameters_cell(spec)
    )


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (
            sync_parameters.knobs("q", "width", "n_local_crops"),
            r"^nb: ToyConfig has no field 'n_local_crops' \(a knob",
        ),
        ({"width": (None, None), "preset": ("demo", "q")}, "^nb: ToyConfig: the first knob must be 'preset'"),
        ({"preset": ("demo", "q"), **{f"k{i}": (None, None) for i in range(12)}}, "has no field 'k0'"),
        (sync_parameters.knobs("q", data_dir=(None, "")), r"^nb: ToyConfig: no help for data_dir"),
        (sync_parameters.knobs("q", data_dir=(None, "1 = one")), "the comment of data_dir holds '='"),
    ],
)
def test_a_table_the_cell_cannot_be_written_from_stops_with_a_clear_message(knobs, message):
    with pytest.raises(ValueError, match=message):
        sync_parameters.parameters_cell(dataclasses.replace(TOY, knobs=knobs), "nb")


def test_more_than_twelve_knobs_stop(monkeypatch):
    monkeypatch.setattr(sync_parameters, "MAX_KNOBS", 3)
    with pytest.raises(ValueError, match="^nb: ToyConfig: 4 knobs, at most 3; move some to overrides"):
        sync_parameters.parameters_cell(
            dataclasses.replace(TOY, knobs=sync_parameters.knobs("q", "width", "mode", "epochs")), "nb"
        )


def test_sync_reports_a_knob_that_is_no_field_and_fails(tmp_path, monkeypatch, capsys):
    committed = ROOT / "notebooks" / "09_eval_topk.ipynb"
    (tmp_path / committed.name).write_bytes(committed.read_bytes())
    spec = dataclasses.replace(
        sync_parameters.NOTEBOOKS["09_eval_topk"], knobs=sync_parameters.knobs("q", "splt")
    )
    monkeypatch.setitem(sync_parameters.NOTEBOOKS, "09_eval_topk", spec)
    assert sync_parameters.main(["--check", "--notebooks", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(
        "error: 09_eval_topk.ipynb: EvalRunsConfig has no field 'splt' (a knob in tools/sync_parameters.py's "
        "NOTEBOOKS); its fields: preset, runs_dir, split, k, repredict"
    )


def test_no_committed_notebook_has_an_injected_parameters_cell():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])] == [], path.name


def test_every_parameters_cell_assigns_its_knobs_overrides_and_extras_only():
    assert {p.stem for p in NOTEBOOKS} == set(sync_parameters.NOTEBOOKS)
    for path in NOTEBOOKS:
        spec = sync_parameters.NOTEBOOKS[path.stem]
        notebook = notebook_cells.read_notebook(path)
        source = notebook_cells.cell_source(notebook["cells"][notebook_cells.parameters_index(notebook)])
        assert source.startswith(PARAMETERS_MARKER), path.name
        names = assigned_names(source)
        fields = field_names(spec.config_class())
        knobs = [n for n in names if n in fields]
        assert names == [*knobs, "overrides", *spec.extras], path.name
        assert knobs[0] == "preset" and len(knobs) <= 12, path.name  # the knobs people turn, at most 12
        assert "overrides = {}  #" in source and "goes in overrides" in source or len(knobs) == len(fields)


def test_papermill_reads_every_line_of_each_parameters_cell():
    # papermill skips (with a warning) a parameters line holding a second "=", so no comment may hold one
    from papermill.translators import PythonTranslator

    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        cell = notebook.cells[notebook_cells.parameters_index(notebook)]
        assert [p.name for p in PythonTranslator.inspect(cell)] == assigned_names(cell.source), path.name


def test_sync_check_passes_on_the_committed_notebooks(capsys):
    assert sync_parameters.main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_sync_rewrites_a_stale_notebook_and_only_its_cells(tmp_path, capsys):
    committed = ROOT / "notebooks" / "09_eval_topk.ipynb"
    notebook = notebook_cells.read_notebook(committed)
    index = notebook_cells.parameters_index(notebook)
    cells = notebook["cells"]
    notebook_cells.set_cell_source(cells[index], 'preset = "demo"\nk = 3\n')  # a field missing, no marker
    injected = copy.deepcopy(cells[index])
    injected["metadata"]["tags"] = ["injected-parameters"]
    notebook_cells.set_cell_source(injected, '# Parameters\npreset = "demo"\n')
    cells.insert(index + 1, injected)
    stale = tmp_path / committed.name
    notebook_cells.write_notebook(stale, notebook)

    assert sync_parameters.main(["--check", "--notebooks", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "09_eval_topk.ipynb: has a papermill 'injected-parameters' cell",
        "09_eval_topk.ipynb: the parameters cell is out of sync",
    ]
    assert sync_parameters.main(["--notebooks", str(tmp_path)]) == 0
    assert stale.read_bytes() == committed.read_bytes()  # outputs, metadata and format as committed
    assert sync_parameters.main(["--check", "--notebooks", str(tmp_path)]) == 0


def test_sync_stops_when_the_imports_lack_notebook_config(tmp_path):
    notebook = notebook_cells.read_notebook(ROOT / "notebooks" / "09_eval_topk.ipynb")
    for cell in notebook["cells"]:
        text = notebook_cells.cell_source(cell).replace(sync_parameters.IMPORT_LINE + "\n", "")
        notebook_cells.set_cell_source(cell, text)
    path = tmp_path / "09_eval_topk.ipynb"
    notebook_cells.write_notebook(path, notebook)
    with pytest.raises(
        ValueError, match="09_eval_topk.ipynb: the cells before the parameters cell must hold"
    ):
        sync_parameters.sync_notebook(path, sync_parameters.NOTEBOOKS["09_eval_topk"], write=False)


@pytest.mark.parametrize("newline", ["", "\n"])
def test_strip_injected_removes_only_that_cell_and_keeps_the_format(tmp_path, newline):
    cells = [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["a = 1"], "outputs": []},
        {
            "cell_type": "code",
            "metadata": {"tags": ["injected-parameters"]},
            "source": ["a = 2"],
            "outputs": [],
        },
        {"cell_type": "markdown", "metadata": {}, "source": ["é ✓"]},
    ]
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": cells, "nbformat": 4}, indent=1, ensure_ascii=False) + newline)
    assert notebook_cells.strip_injected_file(path) == 1
    expected = {"cells": [cells[0], cells[2]], "nbformat": 4}
    assert path.read_text() == json.dumps(expected, indent=1, ensure_ascii=False) + newline
    assert notebook_cells.strip_injected_file(path) == 0


def _run_to_config_cell(name: str, tmp_path: Path, parameters: dict) -> dict:
    """Executes the notebook ``name`` up to its config cell with papermill; returns the executed notebook."""
    notebook = notebook_cells.read_notebook(ROOT / "notebooks" / name)
    index = notebook_cells.parameters_index(notebook)
    after = next(
        i for i in range(index + 1, len(notebook["cells"])) if notebook["cells"][i]["cell_type"] == "code"
    )
    notebook["cells"] = notebook["cells"][: after + 1]
    source, out = tmp_path / name, tmp_path / f"out_{name}"
    source.write_text(json.dumps(notebook, indent=1, ensure_ascii=False))
    pm.execute_notebook(
        str(source), str(out), parameters=parameters, kernel_name="python3", cwd=str(ROOT), progress_bar=False
    )
    return notebook_cells.read_notebook(out)


@pytest.mark.slow
def test_papermill_stops_at_the_config_cell_on_a_misspelt_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        _run_to_config_cell("05_train_cass_mm.ipynb", tmp_path, {"epoch": 20})
    assert err.value.ename == "ConfigError"
    assert err.value.evalue.startswith(
        "epoch (closest: epochs, head_epochs): unknown parameter for CassMMConfig"
    )


def _printed(executed: dict) -> list[str]:
    return "".join(
        "".join(output.get("text", ""))
        for output in executed["cells"][-1]["outputs"]
        if output["output_type"] == "stream"
    ).splitlines()


@pytest.mark.slow
def test_papermill_sets_a_field_that_is_no_knob_and_overrides(tmp_path):
    # -p head_lr 0.01 (no knob of 05) and -y 'overrides: {head_layers: 3}' (a dict), in one run
    parameters = {"head_lr": 0.01, "overrides": {"head_layers": 3}}
    printed = _printed(_run_to_config_cell("05_train_cass_mm.ipynb", tmp_path, parameters))
    assert "head_lr = 0.01" in printed and "head_layers = 3" in printed
    assert "epochs = 5" in printed  # the demo preset's, untouched


@pytest.mark.slow
def test_papermill_stops_at_the_config_cell_on_a_misspelt_override(tmp_path):
    # -p overrides '{"head_lrr": 0.01}': papermill passes the text, the config cell parses it
    with pytest.raises(pm.PapermillExecutionError) as err:
        _run_to_config_cell("05_train_cass_mm.ipynb", tmp_path, {"overrides": '{"head_lrr": 0.01}'})
    assert err.value.ename == "ConfigError"
    assert err.value.evalue.startswith("head_lrr (closest: head_lr")
    assert "unknown key in overrides for CassMMConfig" in err.value.evalue

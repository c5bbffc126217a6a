"""tools/sync_parameters.py and tools/notebook_cells.py, the committed notebooks' parameters cells, and
papermill runs that stop (or not) at the config cell."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

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
    epochs: int = param(1, min=1)


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
    defaults={"preset": ("demo", '"demo": quick'), "epochs": (3, None), "data_dir": ("d", None)},
    extras={"compare": (True, "also compare")},
    config_lines=("print(config.width)",),
)


def test_the_cells_are_written_from_the_config_class():
    assert sync_parameters.parameters_cell(TOY) == (
        "# Parameters: every field of ToyConfig (None: the preset's value); any other name stops the next cell\n"
        'preset = "demo"  # "demo": quick\n'
        "width = None  # how wide it is\n"
        "mode = None  # a | b\n"
        'data_dir = "d"  # the toy\'s data\n'
        "# From _ToyBase: Fields every toy has.\n"
        "epochs = 3\n"
        "# This notebook only (not config fields)\n"
        "compare = True  # also compare"
    )
    assert sync_parameters.config_cell(TOY) == (
        "# NBVAL_CHECK_OUTPUT\n"
        'config = notebook_config(ToyConfig, globals(), extra=("compare",))\n'
        "print(config.describe())\n"
        "print(config.width)"
    )


def test_no_committed_notebook_has_an_injected_parameters_cell():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])] == [], path.name


def test_every_parameters_cell_assigns_exactly_its_config_fields_and_extras():
    assert {p.stem for p in NOTEBOOKS} == set(sync_parameters.NOTEBOOKS)
    for path in NOTEBOOKS:
        spec = sync_parameters.NOTEBOOKS[path.stem]
        notebook = notebook_cells.read_notebook(path)
        source = notebook_cells.cell_source(notebook["cells"][notebook_cells.parameters_index(notebook)])
        assert source.startswith(PARAMETERS_MARKER), path.name
        expected = [*field_names(spec.config_class()), *spec.extras]
        assert sorted(assigned_names(source)) == sorted(expected), path.name


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


@pytest.mark.slow
def test_papermill_sets_a_field_the_old_parameters_cell_lacked(tmp_path):
    executed = _run_to_config_cell("05_train_cass_mm.ipynb", tmp_path, {"cnn_image_size": 64})
    printed = "".join(
        "".join(output.get("text", ""))
        for output in executed["cells"][-1]["outputs"]
        if output["output_type"] == "stream"
    ).splitlines()
    assert "cnn_image_size = 64" in printed
    assert "epochs = 5" in printed  # the demo preset's, untouched

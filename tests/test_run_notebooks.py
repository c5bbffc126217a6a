"""The notebook runner hands each notebook the parameters its parameters cell has, and stops on a typo."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the tools are scripts, not a package
run_notebooks = importlib.import_module("run_notebooks")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_each_notebook_gets_only_the_parameters_it_has():
    routed = run_notebooks.route_parameters({"preset": "demo", "source": "own", "sources": "own"}, NOTEBOOKS)
    by_name = {nb.name[:2]: params for nb, params in routed.items()}
    assert by_name["01"] == {"preset": "demo", "source": "own"}
    assert all(
        by_name[n]["sources"] == "own" and "source" not in by_name[n] for n in ("02", "03", "05", "07")
    )
    assert all(params["preset"] == "demo" for params in routed.values())


def test_a_parameter_no_notebook_has_stops_before_anything_runs():
    with pytest.raises(SystemExit, match="no notebook has the parameter\\(s\\) epoch, sourcse"):
        run_notebooks.route_parameters({"preset": "demo", "epoch": 3, "sourcse": "own"}, NOTEBOOKS)


def test_a_field_no_parameters_cell_lists_goes_to_the_notebooks_whose_config_has_it():
    routed = run_notebooks.route_parameters(
        {"preset": "demo", "head_lr": 0.01, "synthetic_train": 9}, NOTEBOOKS
    )
    by_name = {nb.name[:2]: params for nb, params in routed.items()}
    assert by_name["05"] == {"preset": "demo", "head_lr": 0.01}
    assert by_name["01"] == {"preset": "demo", "synthetic_train": 9}
    assert all("overrides" in run_notebooks.parameter_names(nb) for nb in NOTEBOOKS)

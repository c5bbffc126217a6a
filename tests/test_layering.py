"""The package's layering is a contract: import-linter keeps it, and breaks it on any import that goes up.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``). Each test runs ``lint-imports`` in a
subprocess on a small import graph (well under a second).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

#: Top to bottom; names on one line are independent of each other.
LAYERS = [
    "widgets | parameters",
    "plots",
    "export",
    "predict",
    "evaluation",
    "train",
    "models | metrics",
    "data | lora | losses",
    "cli",
    "config | fileio | progress | folder_lock | stop_signals",
]


def _contracts() -> list[dict]:
    return read_configuration(str(PYPROJECT))["contracts_options"]


def _layer_names() -> list[str]:
    return [name.strip() for line in LAYERS for name in line.split("|")]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with ``cwd``'s ``pyproject.toml``, on the ``nbhelpers`` package found in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
        + ["--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # no wrapped report lines
    )


def _fake_package(tmp_path: Path, imports: dict[str, str]) -> Path:
    """One empty module per layer of the repository's contracts under ``tmp_path/nbhelpers``, the
    repository's ``pyproject.toml`` beside it, and ``imports``: ``{importer: imported}``, each a lazy
    import inside a function (the kind a layering check most easily misses)."""
    package = tmp_path / "nbhelpers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in _layer_names():
        (package / f"{name}.py").write_text("")
    for importer, imported in imports.items():
        (package / f"{importer}.py").write_text(f"def load():\n    import nbhelpers.{imported}\n")
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_are_the_documented_layering():
    layers, independence = _contracts()
    assert layers["type"] == "layers" and layers["containers"] == ["nbhelpers"]
    assert layers["layers"] == LAYERS
    assert layers["exhaustive"].lower() == "true"
    assert independence["type"] == "independence"
    assert independence["modules"] == ["nbhelpers.models", "nbhelpers.losses", "nbhelpers.metrics"]


def test_the_package_keeps_every_contract():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout


def test_imports_down_the_layers_are_allowed(tmp_path):
    # One import from every layer to the next one down (and to each sibling's lower layer).
    chain = {
        "widgets": "plots",
        "plots": "evaluation",
        "evaluation": "train",
        "train": "models",
        "metrics": "data",
        "models": "lora",
        "data": "config",
        "losses": "fileio",
    }
    result = _lint_imports(_fake_package(tmp_path, chain))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("data", "models"),  # data knows no model
        ("config", "data"),  # config is at the bottom
        ("fileio", "config"),  # the bottom's two halves are independent
        ("train", "evaluation"),  # training knows nothing of evaluating finished runs
        ("evaluation", "plots"),
        ("plots", "widgets"),
        ("metrics", "models"),  # one layer's siblings are independent
        ("losses", "data"),
    ],
)
def test_an_upward_or_sideways_import_breaks_the_layers(tmp_path, importer, imported):
    result = _lint_imports(_fake_package(tmp_path, {importer: imported}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Layers: each package imports only those below it BROKEN" in result.stdout
    assert f"nbhelpers.{importer} is not allowed to import nbhelpers.{imported}:" in result.stdout
    assert f"- nbhelpers.{importer} -> nbhelpers.{imported} (l.2)" in result.stdout


@pytest.mark.parametrize(("importer", "imported"), [("models", "losses"), ("metrics", "losses")])
def test_models_losses_and_metrics_stay_independent(tmp_path, importer, imported):
    # Allowed by the layers (downwards), broken by the independence contract.
    result = _lint_imports(_fake_package(tmp_path, {importer: imported}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Models, losses and metrics know nothing of one another BROKEN" in result.stdout
    assert "Layers: each package imports only those below it KEPT" in result.stdout


def test_a_new_top_level_module_needs_a_layer(tmp_path):
    root = _fake_package(tmp_path, {})
    (root / "nbhelpers" / "helpers.py").write_text("")
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The following modules are not listed as layers:" in result.stdout
    assert "- nbhelpers.helpers" in result.stdout

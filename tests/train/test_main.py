import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers.train.__main__ import available_recipes, load_recipe, main, parse_args, parse_value

REPO = Path(__file__).resolve().parents[2]


def test_values_are_json_literals_else_strings():
    recipe, config = parse_args(
        [
            "dino",
            "epochs=3",
            "lr=1e-4",
            "amp=true",
            "x=null",
            "sizes=[1, 2]",
            "preset=demo",
            "data_dir=/content/shards",
            'name="007"',
            "expr=a=b",
            "empty=",
        ]
    )
    assert recipe == "dino"
    assert config == {
        "epochs": 3,
        "lr": 1e-4,
        "amp": True,
        "x": None,
        "sizes": [1, 2],
        "preset": "demo",
        "data_dir": "/content/shards",
        "name": "007",
        "expr": "a=b",
        "empty": "",
    }
    assert (
        type(config["epochs"]) is int
        and parse_value("1.0") == 1.0
        and parse_value("NaN") != parse_value("NaN")
    )


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "recipe name first"),
        (["epochs=3"], "recipe name first"),
        (["dino", "epochs"], "key=value"),
        (["dino", "=3"], "key=value"),
        (["dino", "a=1", "a=2"], "given twice"),
    ],
)
def test_bad_command_lines(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_args(argv)


@pytest.fixture
def fake_recipes(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_recipes_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy.py").write_text("def run(config):\n    return {'ran': config}\n")
    (pkg / "no_run.py").write_text("X = 1\n")
    (pkg / "_private.py").write_text("def run(config):\n    pass\n")
    (pkg / "broken.py").write_text("import a_module_that_is_not_installed\n\ndef run(config):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_recipes_pkg"


def test_dispatches_to_the_recipe_run(fake_recipes):
    assert available_recipes(fake_recipes) == ["broken", "no_run", "toy"]
    assert main(["toy", "epochs=2", "preset=demo"], package=fake_recipes) == {
        "ran": {"epochs": 2, "preset": "demo"}
    }


def test_unknown_recipe_lists_the_available_ones(fake_recipes, capsys):
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; available recipes: broken, no_run, toy"):
        load_recipe("nope", fake_recipes)
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("_private", fake_recipes)
    with pytest.raises(ValueError, match="no run"):
        load_recipe("no_run", fake_recipes)
    with pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        load_recipe("broken", fake_recipes)  # a recipe's own missing import is not "unknown recipe"
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"], package=fake_recipes)
    assert exit_info.value.code == 2
    assert "available recipes: broken, no_run, toy" in capsys.readouterr().err


def test_python_dash_m_reports_unknown_recipe():
    proc = subprocess.run(
        [sys.executable, "-m", "nbhelpers.train", "no_such_recipe", "epochs=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    listed = ", ".join(available_recipes()) or "none (no modules in nbhelpers.train.recipes)"
    assert f"unknown recipe 'no_such_recipe'; available recipes: {listed}" in proc.stderr


def test_the_real_recipes_are_listed_and_the_shared_base_is_not():
    from nbhelpers.train.__main__ import available_recipes

    assert available_recipes() == ["cass_mm", "clip", "clip_classifier", "fusion", "ssl", "unimodal"]

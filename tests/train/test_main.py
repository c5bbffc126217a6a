import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers.train.__main__ import main, parse_args, parse_value
from nbhelpers.train.recipes.registry import RecipeRegistry, get_recipe

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


TOY = """
from nbhelpers.train.recipes.registry import Recipe

def run(config):
    return {"ran": config}

RECIPE = Recipe(
    name="toy", config_class=dict, notebook="00_toy", run=run, load_trained=None, predict_run=None,
    display_name=lambda metrics: "Toy",
)
"""


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_recipes_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy.py").write_text(TOY)
    (pkg / "no_recipe.py").write_text("def run(config):\n    pass\n")
    (pkg / "broken.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return RecipeRegistry({name: f"fake_recipes_pkg.{name}" for name in ("toy", "no_recipe", "broken")})


def test_dispatches_to_the_recipe_run(fake_registry):
    assert list(fake_registry) == ["toy", "no_recipe", "broken"]
    assert main(["toy", "epochs=2", "preset=demo"], registry=fake_registry) == {
        "ran": {"epochs": 2, "preset": "demo"}
    }


def test_unknown_recipe_lists_the_available_ones(fake_registry, capsys):
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; available recipes: toy, no_recipe, broken"):
        get_recipe("nope", fake_registry)
    with pytest.raises(ValueError, match="defines no RECIPE"):
        get_recipe("no_recipe", fake_registry)
    with pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        get_recipe("broken", fake_registry)  # a recipe's own missing import is not "unknown recipe"
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"], registry=fake_registry)
    assert exit_info.value.code == 2
    assert "available recipes: toy, no_recipe, broken" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["epochs=3"], registry=fake_registry)
    err = capsys.readouterr().err
    assert "recipe name first" in err and "available recipes: toy, no_recipe, broken" in err


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
    listed = "unimodal, clip, ssl, cass_mm, clip_classifier, fusion"
    assert f"unknown recipe 'no_such_recipe'; available recipes: {listed}" in proc.stderr

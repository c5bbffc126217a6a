"""Every ``python -m nbhelpers.*`` command: ``--help``, ``list``, and one-line errors with status 2."""

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from nbhelpers.cli import (
    UsageError,
    check_known,
    config_help,
    explicit_nulls,
    field_help,
    parse_pairs,
    type_name,
    user_errors,
)
from nbhelpers.config import NULL, BaseConfig, ConfigError, param
from nbhelpers.data import prepare, verify
from nbhelpers.train import open_clip_cli
from nbhelpers.train.__main__ import main as train_main
from nbhelpers.train.recipes import RECIPES, clip

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ToyConfig(BaseConfig):
    SECTION: ClassVar[str] = "toy"

    epochs: int = param(3, min=1, help="passes over the data")
    lr: float | None = param(None, above=0.0)
    mode: str = param("a", choices=("a", "b"))
    sizes: list = param([1, 2], help="sizes")


def test_field_help_has_every_field_with_type_default_and_help():
    rows = {row.name: row for row in field_help(ToyConfig)}
    assert list(rows) == [f.name for f in dataclasses.fields(ToyConfig)]
    assert (rows["epochs"].type, rows["epochs"].default, rows["epochs"].help) == (
        "int",
        3,
        "passes over the data; >= 1",
    )
    assert (rows["lr"].type, rows["lr"].default, rows["lr"].help) == ("float | None", None, "> 0")
    assert rows["mode"].help == "one of a, b"
    assert rows["sizes"].default == [1, 2] and rows["preset"].default == "demo"
    text = config_help(ToyConfig)
    assert "  epochs: int = 3\n      passes over the data; >= 1\n" in text
    assert "  lr: float | None = null\n      > 0\n" in text


def test_recipe_help_shows_the_presets_values():
    demo = {row.name: row.default for row in field_help(clip.ClipConfig, "demo")}
    t4 = {row.name: row.default for row in field_help(clip.ClipConfig, "t4")}
    assert demo["model"] == "memelab-tiny-vit" and t4["model"] == "ViT-B-32"
    assert demo["preset"] == "demo" and t4["preset"] == "t4"
    assert t4["report_to"] == "tensorboard"
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        field_help(clip.ClipConfig, "nope")


def test_type_names_are_readable():
    assert [type_name(t) for t in (int, str, bool, float | None, int | None)] == [
        "int",
        "str",
        "bool",
        "float | None",
        "int | None",
    ]


def test_pairs_and_their_errors():
    assert parse_pairs(["a=1", "b=x", "c=null", "d="]) == {"a": 1, "b": "x", "c": None, "d": ""}
    assert explicit_nulls({"c": None, "a": 1}) == {"c": NULL, "a": 1}
    with pytest.raises(UsageError, match=r"^expected key=value, got '--epochs' \(write epochs=VALUE\)$"):
        parse_pairs(["--epochs", "3"])
    with pytest.raises(UsageError, match="'a' is given twice"):
        parse_pairs(["a=1", "a=2"])
    with pytest.raises(UsageError, match=r"^--sourse: unknown parameter; did you mean --source\?$"):
        check_known(["--sourse", "x"], ["source", "seed"])


def test_user_errors_are_one_line_and_status_2_while_bugs_propagate(capsys):
    with pytest.raises(SystemExit) as exit_info:
        with user_errors("prog"):
            raise ConfigError("epochs: must be >= 1, got 0")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "prog: error: epochs: must be >= 1, got 0\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        with user_errors("prog"):
            raise KeyError("x")


def run_main(main, argv, capsys):
    """``(status, stdout, stderr)`` of ``main(argv)``; status 0 when it returns."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_train_help_and_list_name_every_recipe_and_its_presets(capsys):
    for argv in (["--help"], ["list"], ["-h"]):
        code, out, err = run_main(train_main, argv, capsys)
        assert code == 0 and not err
        for name in RECIPES:
            assert f"\n  {name} " in out
        assert "presets: demo, t4, clip_baseline_7class, clip_lora_7class" in out


def test_train_recipe_help_lists_every_parameter(capsys):
    code, out, _ = run_main(train_main, ["clip", "preset=t4", "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: python -m nbhelpers.train clip [key=value ...]\n")
    for f in dataclasses.fields(clip.ClipConfig):
        assert f"\n  {f.name}: " in out, f.name
    assert '  model: str = "ViT-B-32"\n      open_clip architecture' in out
    assert '  report_to: str = "tensorboard"\n' in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clip", "epoch=3"], "epoch: unknown parameter for ClipConfig; did you mean epochs?"),
        (["clip", "epochs=0"], "epochs: must be >= 1, got 0"),
        (["clip", "lr=fast"], "lr: expected float, got 'fast' (str)"),
        (["clip", "--epochs", "3"], "expected key=value, got '--epochs' (write epochs=VALUE)"),
        (
            ["clip", "report_to=mlflow"],
            "report_to: 'mlflow' is not allowed; allowed: tensorboard, wandb, none",
        ),
        (["clip", "preset=huge", "--help"], "preset: unknown preset 'huge'; allowed: demo, t4"),
        (["nope"], "unknown recipe 'nope'; available recipes: unimodal, clip, ssl"),
    ],
)
def test_train_mistakes_print_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(train_main, argv, capsys)
    assert code == 2 and not out
    assert err.startswith(f"nbhelpers.train: error: {message}") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing was written


def test_train_missing_shards_is_one_line(capsys, tmp_path):
    argv = ["clip", f"data_dir={tmp_path / 'nowhere'}", f"runs_dir={tmp_path / 'runs'}"]
    code, _, err = run_main(train_main, argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"nbhelpers.train: error: no shards of 'synthetic' in {tmp_path / 'nowhere'}")


def test_prepare_help_list_and_mistakes(capsys, tmp_path):
    code, out, _ = run_main(prepare.main, ["--help"], capsys)
    assert code == 0
    for f in dataclasses.fields(prepare.PrepareConfig):
        assert f"--{f.name} " in out, f.name
    assert "--image_size IMAGE_SIZE\n                        int, default 256: side of the square" in out
    code, out, _ = run_main(prepare.main, ["list"], capsys)
    assert (
        code == 0
        and "  hateful_memes  Reader for the Hateful Memes" in out
        and "presets (--preset NAME)" in out
    )
    cases = [
        (["--classes", "a,b"], "classes: only for source 'hf' (without hf_layout) or 'own', not 'synthetic'"),
        (["--sourse", "coco"], "--sourse: unknown parameter; did you mean --source?"),
        (["--image_size", "3"], "image_size: must be >= 16, got 3"),
        (
            ["--source", "coco", "--raw_dir", str(tmp_path / "raw")],
            f"raw_dir: '{tmp_path / 'raw'}' is not a folder",
        ),
    ]
    for argv, message in cases:
        code, _, err = run_main(prepare.main, [*argv, "--out_dir", str(tmp_path / "out")], capsys)
        assert (code, err) == (2, f"nbhelpers.data.prepare: error: {message}\n")


def test_verify_help_and_missing_folder(capsys, tmp_path):
    code, out, _ = run_main(verify.main, ["--help"], capsys)
    assert code == 0 and out.startswith("usage: python -m nbhelpers.data.verify [-h] [--failures-only] DIR")
    assert verify.main([str(tmp_path / "nowhere")]) == 2
    assert (
        capsys.readouterr().err == f"nbhelpers.data.verify: error: {tmp_path / 'nowhere'} is not a folder\n"
    )


def test_open_clip_cli_list_help_and_missing_shards(capsys, tmp_path):
    code, out, _ = run_main(open_clip_cli.main, ["list"], capsys)
    assert code == 0 and "memelab-tiny-vit" in out
    code, out, _ = run_main(open_clip_cli.main, ["--help"], capsys)
    assert code == 0 and out.startswith("Running ``open_clip_train`` on our shards")
    assert "--train-data" in out  # open_clip_train's own options follow
    missing = str(tmp_path / "train-00000.tar")
    code, _, err = run_main(open_clip_cli.main, ["--train-data", missing], capsys)
    assert (code, err) == (
        2,
        f"nbhelpers.train.open_clip_cli: error: --train-data: 1 of 1 shards not found: {missing}\n",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "status", "first"),
    [
        (["nbhelpers.train", "clip", "--help"], 0, "usage: python -m nbhelpers.train clip"),
        (["nbhelpers.train", "clip", "epoch=3"], 2, "nbhelpers.train: error: epoch: unknown parameter"),
        (["nbhelpers.data.prepare", "--classes", "x"], 2, "nbhelpers.data.prepare: error: classes: only for"),
    ],
)
def test_as_real_commands(argv, status, first, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == status, done.stderr[-2000:]
    text = done.stdout if status == 0 else done.stderr
    assert text.startswith(first)
    if status:
        assert text.count("\n") == 1  # one line, no traceback

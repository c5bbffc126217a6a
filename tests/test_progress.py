"""Progress reports: the mode picked for where the code runs, and what each mode writes where."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nbhelpers import progress
from nbhelpers.progress import Progress, resolve_mode
from nbhelpers.train.engine import TrainSpec, fit

ROOT = Path(__file__).resolve().parents[1]
FULL_BAR = "100%|██████████|"
EPOCH_LINE = r"epoch {}/3 · loss \d+\.\d{{4}} · lr \d\.\de[-+]\d\d · \d+ samples/s · \d+\.\d s"


class FakeKernel:
    """What progress reads of an ipykernel: the request being run."""

    def __init__(self, allow_stdin):
        self.allow_stdin = allow_stdin

    def get_parent(self, channel=None):
        return {"content": {"code": "fit(...)", "allow_stdin": self.allow_stdin}}


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def no_mode_in_env(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)


def in_kernel(monkeypatch, allow_stdin):
    shell = types.SimpleNamespace(kernel=FakeKernel(allow_stdin))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def outside_kernel(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))


@pytest.mark.parametrize("value", ["widget", "bar", "lines", "off", " LINES "])
def test_the_environment_names_the_mode(monkeypatch, value):
    monkeypatch.setenv("MEMELAB_PROGRESS", value)
    assert resolve_mode() == value.strip().lower()
    assert resolve_mode(enabled=False) == "off"


def test_an_unknown_mode_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MEMELAB_PROGRESS", "fancy")
    with pytest.raises(
        ValueError, match=r"MEMELAB_PROGRESS='fancy': expected one of auto, widget, bar, lines"
    ):
        resolve_mode()


def test_auto_outside_a_kernel_draws_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    outside_kernel(monkeypatch)
    monkeypatch.setattr(sys, "stderr", TTY())
    assert resolve_mode() == "bar"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert resolve_mode() == "lines"


def test_auto_in_a_kernel_follows_whether_the_front_end_answers_input(monkeypatch):
    in_kernel(monkeypatch, allow_stdin=True)  # JupyterLab, Notebook, VS Code
    assert resolve_mode() == "widget"
    in_kernel(monkeypatch, allow_stdin=False)  # papermill, nbconvert, nbval
    assert resolve_mode() == "lines"
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert resolve_mode() == "widget"


def test_lines_snapshot_the_bar_when_due_and_end_with_the_finished_bar(monkeypatch, capfd):
    outside_kernel(monkeypatch)
    monkeypatch.setenv("MEMELAB_PROGRESS", "lines")
    with Progress(4, unit="step", label="run-1", line_seconds=0) as bar:
        for _ in range(4):
            bar.update()
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line[: line.index("[", 1)] for line in lines] == [
        "[run-1]  25%|██▌       | 1/4 ",
        "[run-1]  50%|█████     | 2/4 ",
        "[run-1]  75%|███████▌  | 3/4 ",
        f"[run-1] {FULL_BAR} 4/4 ",
    ]


def test_nothing_is_shown_when_disabled(monkeypatch, capfd):
    in_kernel(monkeypatch, allow_stdin=False)
    bar = Progress(3, enabled=False, label="x")
    bar.update(3)
    bar.write("epoch 1/1")
    bar.close()
    assert capfd.readouterr() == ("", "")


def toy_fit(tmp_path, **kw):
    def batches(epoch):
        g = torch.Generator().manual_seed(epoch)
        while True:
            x = torch.randn(8, 4, generator=g)
            yield x, x.sum(1)

    def step_fn(model, batch):
        x, y = batch
        return F.mse_loss(model(x).squeeze(-1), y), {}

    torch.manual_seed(0)
    spec = TrainSpec(run_dir=tmp_path / "toy", epochs=3, steps_per_epoch=10, lr=1e-2, progress=True, **kw)
    return fit(torch.nn.Linear(4, 1), step_fn, batches, spec)


def test_headless_training_writes_a_line_per_epoch_to_stderr(tmp_path, monkeypatch, capfd):
    outside_kernel(monkeypatch)
    monkeypatch.setattr(progress, "LINE_SECONDS", 1e9)  # no snapshot within an epoch
    # capfd's stderr is a file, not a terminal: auto picks lines, as in CI or a log
    toy_fit(tmp_path)
    out, err = capfd.readouterr()
    assert out == ""  # stdout stays for results (the CLI prints JSON there)
    lines = err.splitlines()
    assert len(lines) == 4
    for epoch, line in enumerate(lines[:3], 1):
        assert re.fullmatch(r"\[toy\] " + EPOCH_LINE.format(epoch), line), line
    assert lines[3].startswith(f"[toy] epoch 3/3: {FULL_BAR} 30/30 [")


def test_in_a_headless_kernel_the_cell_keeps_the_lines_and_the_finished_bar(tmp_path, monkeypatch, capfd):
    in_kernel(monkeypatch, allow_stdin=False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 1e9)
    toy_fit(tmp_path)
    out, err = capfd.readouterr()
    cell, terminal = out.splitlines(), err.splitlines()
    assert len(cell) == len(terminal) == 4
    for epoch in (1, 2, 3):
        assert re.fullmatch(EPOCH_LINE.format(epoch), cell[epoch - 1])
        assert terminal[epoch - 1] == f"[toy] {cell[epoch - 1]}"
    assert cell[3].startswith(f"epoch 3/3: {FULL_BAR} 30/30 [")
    assert terminal[3] == f"[toy] {cell[3]}"


TOY_NOTEBOOK_CELL = """\
import torch
import torch.nn.functional as F
from nbhelpers.train.engine import TrainSpec, fit

def batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    while True:
        x = torch.randn(8, 4, generator=g)
        yield x, x.sum(1)

def step_fn(model, batch):
    x, y = batch
    return F.mse_loss(model(x).squeeze(-1), y), {}

torch.manual_seed(0)
spec = TrainSpec(run_dir="runs/toy", epochs=2, steps_per_epoch=5, lr=0.01, log_every=1)
history = fit(torch.nn.Linear(4, 1), step_fn, batches, spec)
"""


@pytest.mark.slow
def test_a_papermill_run_shows_epochs_on_its_terminal_and_saves_a_finished_bar(tmp_path):
    """The real thing: papermill's kernel inherits papermill's stderr; nothing here sets the mode."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(TOY_NOTEBOOK_CELL)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "toy.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", progress.MODE_ENV)}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "toy.ipynb", "out.ipynb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    terminal = [line for line in result.stderr.splitlines() if line.startswith("[toy] ")]
    assert len(terminal) == 3
    assert terminal[0].startswith("[toy] epoch 1/2 · loss ")
    assert terminal[1].startswith("[toy] epoch 2/2 · loss ")
    assert terminal[2].startswith(f"[toy] epoch 2/2: {FULL_BAR} 10/10 [")
    outputs = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"]
    assert {o["output_type"] for o in outputs} == {"stream"}  # no widget
    assert {o["name"] for o in outputs} == {"stdout"}  # the terminal's lines are not copied into the cell
    cell = "".join(o["text"] if isinstance(o["text"], str) else "".join(o["text"]) for o in outputs)
    assert [f"[toy] {line}" for line in cell.splitlines()] == terminal

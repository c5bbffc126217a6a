#!/usr/bin/env python3
"""Sets memelab up on Colab. Every step checks whether it is done already, so running it again finishes an
interrupted set-up, and on a finished one it changes nothing.

The first cell of every notebook runs it on Colab (and only there), inside the notebook's own process:
Colab's widget manager and Google Drive can be set up from there only. From a terminal on Colab:
``python colab_setup.py`` (or ``bash colab_setup.sh``); elsewhere it refuses unless given
``--outside-colab`` (with ``--home DIR``).

One report line per step, ``done``, ``skipped`` or ``FAILED``:

- **clone**: ``--home`` (``/content/memelab``) is a git clone of ``MEMELAB_REPO`` with every tracked file
  in place: cloned if missing (into ``<home>.partial``, renamed once complete), missing files restored.
- **pull**: only with ``MEMELAB_PULL=1``: ``git pull --ff-only``.
- **requirements**: ``pip install -r requirements.txt`` without torch and torchvision (Colab's CUDA
  build stays). A stamp in the clone's ``.git/memelab-setup.json``, written only after pip succeeds,
  records what was installed; the step runs again when requirements.txt (or the Python) changes.
- **nbhelpers**: ``pip install --no-deps -e <home>`` unless Python already imports nbhelpers from the
  clone, installed at the clone's version.
- **drive**: only with ``MEMELAB_DRIVE=<folder>`` (e.g. ``/content/drive/MyDrive/memelab``): mounts Google
  Drive if needed and makes ``<home>/data`` and ``<home>/runs`` links to ``<folder>/data`` and
  ``<folder>/runs``. A link already there is kept, a link elsewhere is replaced, a real folder's
  entries are moved into Drive first (refused, nothing moved, if Drive holds an entry of the same name).
- **widgets**: in a Colab notebook, turns on Colab's custom widget manager (ipywidgets 8 widgets show).

Environment: ``MEMELAB_REPO`` (where to clone from), ``MEMELAB_PULL``, ``MEMELAB_DRIVE``, ``MEMELAB_PIP``
(the pip command; default ``<this python> -m pip``). Standard library only: it runs before anything is
installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_REPO = "https://github.com/memelab/memelab"
DEFAULT_HOME = Path("/content/memelab")
DRIVE_MOUNT = Path("/content/drive")
STATE_FILE = "memelab-setup.json"  # in the clone's git directory: never shown as a change, gone with it
LINKED = ("data", "runs")
# Colab's torch and torchvision are CUDA builds matched to its drivers: pip must not replace them.
KEEP = re.compile(r"^\s*(torch|torchvision)\s*([<>=!~;\[]|$)", re.IGNORECASE)
CHECK_IMPORT = (
    "import importlib.metadata as m, json, nbhelpers; "
    "print(json.dumps([nbhelpers.__file__, nbhelpers.__version__, m.version('nbhelpers')]))"
)


class SetupError(RuntimeError):
    """A step that could not be done; the message says what to do."""


def main(argv: list[str] | None = None) -> int:
    """Runs every step, printing one line each.

    Returns:
        0 once every step is done or skipped; 2 when run outside Colab without ``--outside-colab``.

    Raises:
        SetupError: after printing the step's ``FAILED`` line.
    """
    parser = argparse.ArgumentParser(description="Sets memelab up on Colab (re-run to finish a set-up).")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the clone (default %(default)s)")
    parser.add_argument("--outside-colab", action="store_true", help="run even where Colab is not")
    parser.add_argument("--cloned", action="store_true", help=argparse.SUPPRESS)  # by the notebook cell
    args = parser.parse_args(argv)
    if not (args.outside_colab or on_colab()):
        print("colab_setup.py: not on Colab, nothing done (--outside-colab --home DIR to set up DIR anyway)")
        return 2
    home = args.home.absolute()
    in_notebook = "google.colab" in sys.modules  # a Colab kernel imports it at start-up
    print(f"memelab set-up in {home}")
    steps = [
        ("clone", lambda: clone(home, os.environ.get("MEMELAB_REPO") or DEFAULT_REPO, args.cloned)),
        ("pull", lambda: pull(home, _truthy(os.environ.get("MEMELAB_PULL", "")))),
        ("requirements", lambda: requirements(home, pip_command())),
        ("nbhelpers", lambda: install_package(home, pip_command())),
        ("drive", lambda: keep_on_drive(home, os.environ.get("MEMELAB_DRIVE", ""), in_notebook)),
        ("widgets", lambda: widget_manager(in_notebook)),
    ]
    for name, step in steps:
        try:
            status, detail = step()
        except SetupError as err:
            report(name, "FAILED", f"{err}; re-run to finish the set-up")
            raise
        report(name, status, detail)
    importlib.invalidate_caches()  # packages pip just installed become importable in this process
    return 0


def report(step: str, status: str, detail: str) -> None:
    print(f"  {step:<14}{status}: {detail}", flush=True)


def on_colab() -> bool:
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ImportError:  # no ``google`` package at all
        return False


def pip_command() -> list[str]:
    custom = os.environ.get("MEMELAB_PIP", "").strip()
    return shlex.split(custom) if custom else [sys.executable, "-m", "pip"]


def clone(home: Path, repo: str, cloned_by_cell: bool = False) -> tuple[str, str]:
    """Makes ``home`` a complete clone of ``repo``.

    Raises:
        SetupError: ``home`` exists but is no clone with a commit checked out, or not memelab's; or git
            failed.
    """
    if not home.exists() and not home.is_symlink():
        partial = home.with_name(home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # what a clone cut short left
        _git("clone", "-q", repo, str(partial))
        partial.rename(home)
        return "done", f"cloned {repo} at {_head(home)}"
    head = _head(home)
    if head is None:
        raise SetupError(
            f"{home} exists but is not a git clone with a commit checked out: delete it or move it"
        )
    for required in ("pyproject.toml", "requirements.txt", "nbhelpers/__init__.py"):
        if not (home / required).is_file() and required not in _deleted(home):
            raise SetupError(f"{home} is a git clone but not of memelab (no {required})")
    missing = _deleted(home)
    if missing:
        _git("-C", str(home), "checkout", "--", *missing)
        return "done", f"restored {len(missing)} missing tracked file(s) at {head}"
    if cloned_by_cell:
        return "done", f"cloned {_origin(home)} at {head}"
    return "skipped", f"a complete clone of {_origin(home)} at {head}"


def pull(home: Path, wanted: bool) -> tuple[str, str]:
    """``git pull --ff-only`` when ``wanted``.

    Raises:
        SetupError: git cannot fast-forward (local commits or changes in the way).
    """
    if not wanted:
        return "skipped", "MEMELAB_PULL is not 1"
    before = _head(home)
    _git("-C", str(home), "pull", "--ff-only", "-q")
    after = _head(home)
    return "done", f"{before} -> {after}" if after != before else f"already up to date at {after}"


def requirements(home: Path, pip: list[str]) -> tuple[str, str]:
    """Installs requirements.txt less torch and torchvision, unless the stamp says it is installed.

    Raises:
        SetupError: pip failed (its own output above says why).
    """
    lines = (home / "requirements.txt").read_text(encoding="utf-8").splitlines()
    wanted = [line for line in lines if not KEEP.match(line)]
    text = "\n".join(wanted) + "\n"
    key = hashlib.sha256(f"{sys.executable}\n{text}".encode()).hexdigest()
    state = _read_state(home)
    count = sum(1 for line in wanted if line.strip() and not line.lstrip().startswith("#"))
    counted = f"{count} requirement{'' if count == 1 else 's'}"
    if state.get("requirements") == key:
        return "skipped", f"{counted} installed already (stamp in the clone's .git/{STATE_FILE})"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requirements.txt"
        path.write_text(text, encoding="utf-8")
        _pip(pip, "install", "-q", "-r", str(path), what="pip install -r requirements.txt")
    state["requirements"] = key
    _write_state(home, state)
    return "done", f"pip installed {counted} (torch and torchvision left as they are)"


def install_package(home: Path, pip: list[str]) -> tuple[str, str]:
    """``pip install --no-deps -e home`` unless Python imports nbhelpers from ``home`` at its version.

    Raises:
        SetupError: pip failed, or Python still does not import nbhelpers from ``home`` after it.
    """
    commit = _head(home)
    found = _imported_package()
    if _is_from(found, home):
        return "skipped", f"nbhelpers {found[1]} imports from {home} (commit {commit})"
    _pip(pip, "install", "-q", "--no-deps", "-e", str(home), what="pip install -e")
    found = _imported_package()
    if not _is_from(found, home):
        where = "nothing" if found is None else f"{found[0]} (version {found[1]}, installed as {found[2]})"
        raise SetupError(f"after pip install -e {home}, Python imports nbhelpers from {where}")
    return "done", f"installed nbhelpers {found[1]} from {home} in editable mode (commit {commit})"


def keep_on_drive(home: Path, folder: str, in_notebook: bool) -> tuple[str, str]:
    """Links ``home/data`` and ``home/runs`` into ``folder`` (mounting Google Drive first if it lies there).

    Raises:
        SetupError: Drive is not mounted and cannot be from here; a path is a file; or a folder to move
            into Drive clashes with what Drive holds (nothing is moved then).
    """
    if not folder:
        return "skipped", "MEMELAB_DRIVE is not set: data/ and runs/ stay on this machine's disk"
    target = Path(folder).expanduser().absolute()
    notes = []
    if target.is_relative_to(DRIVE_MOUNT) and not (DRIVE_MOUNT / "MyDrive").is_dir():
        if not in_notebook:
            raise SetupError(
                f"{target} is on Google Drive, which is not mounted: run the notebook's first cell"
            )
        from google.colab import drive  # only in a Colab notebook

        drive.mount(str(DRIVE_MOUNT))
        notes.append(f"mounted Google Drive at {DRIVE_MOUNT}")
    changes = [_link(home / name, target / name) for name in LINKED]
    notes += [change for change in changes if change]
    if not notes:
        return "skipped", f"{' and '.join(n + '/' for n in LINKED)} link into {target} already"
    return "done", "; ".join(notes)


def widget_manager(in_notebook: bool) -> tuple[str, str]:
    if not in_notebook:
        return "skipped", "not in a Colab notebook (its first cell turns the widget manager on)"
    from google.colab import output  # only in a Colab notebook

    output.enable_custom_widget_manager()
    return "done", "Colab's custom widget manager is on (ipywidgets 8 widgets display)"


def _link(local: Path, target: Path) -> str:
    """Makes ``local`` a link to ``target``; returns what it changed ('' for nothing)."""
    target.mkdir(parents=True, exist_ok=True)
    if local.is_symlink():
        current = Path(os.readlink(local))
        if local.resolve() == target.resolve():
            return ""
        local.unlink()
        local.symlink_to(target, target_is_directory=True)
        return f"{local.name}/ now links to {target} (it linked to {current})"
    if not local.exists():
        local.symlink_to(target, target_is_directory=True)
        return f"{local.name}/ links to {target}"
    if not local.is_dir():
        raise SetupError(f"{local} is a file, not a folder: move it away")
    entries = sorted(local.iterdir())
    clashes = [
        entry.name
        for entry in entries
        if (target / entry.name).exists() or (target / entry.name).is_symlink()
    ]
    if clashes:
        raise SetupError(
            f"{local} and {target} both hold {', '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}: "
            "nothing moved; keep one copy of each, then re-run"
        )
    for entry in entries:
        shutil.move(str(entry), str(target / entry.name))
    local.rmdir()
    local.symlink_to(target, target_is_directory=True)
    return f"moved {len(entries)} entries of {local.name}/ into {target}, which {local.name}/ now links to"


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"git {' '.join(args)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _head(home: Path) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(home), "rev-parse", "--verify", "-q", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
    )
    # a folder inside another repository is not a clone of its own
    top = subprocess.run(
        ["git", "-C", str(home), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    if result.returncode != 0 or Path(top.stdout.strip()).resolve() != home.resolve():
        return None
    return result.stdout.strip()


def _origin(home: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(home), "remote", "get-url", "origin"], capture_output=True, text=True
    )
    return result.stdout.strip() or "(no origin)"


def _deleted(home: Path) -> list[str]:
    return [p for p in _git("-C", str(home), "ls-files", "--deleted", "-z").split("\0") if p]


def _state_path(home: Path) -> Path:
    git_dir = Path(_git("-C", str(home), "rev-parse", "--git-dir").strip())
    return (git_dir if git_dir.is_absolute() else home / git_dir) / STATE_FILE


def _read_state(home: Path) -> dict:
    try:
        return json.loads(_state_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_state(home: Path, state: dict) -> None:
    path = _state_path(home)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a stamp is there whole or not at all


def _pip(pip: list[str], *args: str, what: str) -> None:
    code = subprocess.run([*pip, *args]).returncode  # pip's output shows as it comes
    if code != 0:
        raise SetupError(f"{what} exited {code} (pip's message is above)")


def _imported_package() -> tuple[str, str, str] | None:
    """``(file, __version__, installed version)`` of the nbhelpers a fresh Python imports, or None."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORT], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if result.returncode != 0:
        return None
    file, version, installed = json.loads(result.stdout.strip().splitlines()[-1])
    return file, version, installed


def _is_from(found: tuple[str, str, str] | None, home: Path) -> bool:
    return (
        found is not None
        and Path(found[0]).resolve() == (home / "nbhelpers" / "__init__.py").resolve()
        and found[1] == found[2]
    )


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError:
        sys.exit(1)

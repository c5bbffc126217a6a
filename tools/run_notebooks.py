"""Executes the notebooks in order with papermill.

python tools/run_notebooks.py --preset demo --in-place      # refresh the committed notebooks
python tools/run_notebooks.py --preset demo --out runs/executed
python tools/run_notebooks.py --only 05 -p epochs 20        # one notebook, extra parameters
python tools/run_notebooks.py -p sources own -p source own -p raw_dir /data/mine ...

A ``-p`` parameter goes to each notebook that takes it: a field of its config class, whether or not its
parameters cell lists it (``source`` to 01, ``sources`` to the training notebooks), ``overrides``, or a name
its parameters cell assigns; so one command can set every notebook. A name no notebook takes stops the run
before any notebook starts.

Notebooks written in place lose papermill's ``injected-parameters`` cell: a committed notebook keeps its
own parameters cell only, so a value set there in Jupyter or Colab is the value the notebook runs with.

Progress is shown as plain lines (``MEMELAB_PROGRESS=lines`` unless set): each training epoch is a line on
this terminal, and each executed notebook keeps the epoch lines and the finished text bar, not a widget
saved at "0%". A plain ``papermill`` command gets the same by itself (see ``nbhelpers.progress``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import papermill as pm
from notebook_cells import PARAMETERS_TAG, cell_source, read_notebook, strip_injected_file, tags
from sync_parameters import NOTEBOOKS

from nbhelpers.parameters import OVERRIDES, assigned_names, field_names

ROOT = Path(__file__).resolve().parents[1]


def parameter_names(path: Path) -> set[str]:
    """The names the notebook at ``path`` takes: those its ``parameters`` cell assigns, and every field of
    its config class (any field may be set with ``-p``, listed in the cell or not)."""
    spec = NOTEBOOKS.get(path.stem)
    fields = {*field_names(spec.config_class()), OVERRIDES} if spec else set()
    for cell in read_notebook(path)["cells"]:
        if PARAMETERS_TAG in tags(cell):
            return set(assigned_names(cell_source(cell))) | fields
    raise ValueError(f"{path.name} has no cell tagged {PARAMETERS_TAG!r}")


def route_parameters(params: dict[str, object], notebooks: list[Path]) -> dict[Path, dict[str, object]]:
    """Each notebook's share of ``params``: the ones it takes (:func:`parameter_names`).

    Raises:
        SystemExit: naming any parameter that none of ``notebooks`` has.
    """
    names = {nb: parameter_names(nb) for nb in notebooks}
    unused = sorted(set(params) - set().union(*names.values()))
    if unused:
        raise SystemExit(f"no notebook has the parameter(s) {', '.join(unused)}; nothing was run")
    return {nb: {k: v for k, v in params.items() if k in names[nb]} for nb in notebooks}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument(
        "--in-place", action="store_true", help="write the executed notebooks over the sources"
    )
    parser.add_argument(
        "--out", default="runs/executed", help="folder for executed copies (without --in-place)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run (e.g. 01 05)")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    os.environ.setdefault("MEMELAB_PROGRESS", "lines")  # inherited by every notebook's kernel
    params = {"preset": args.preset}
    for name, value in args.p:
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(p) for p in args.only)]
    routed = route_parameters(params, notebooks)
    out_dir = ROOT / args.out
    if not args.in_place:
        out_dir.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        target = nb if args.in_place else out_dir / nb.name
        start = time.time()
        print(f"== {nb.name}", flush=True)
        try:
            pm.execute_notebook(
                str(nb),
                str(target),
                parameters=routed[nb],
                cwd=str(ROOT / "notebooks"),
                kernel_name="python3",
                execution_timeout=1800,  # a cell that hangs fails the run instead of blocking it for ever
            )
        finally:
            if args.in_place and target.exists():  # a failed run is written too
                strip_injected_file(target)
        shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target  # --out may be elsewhere
        print(f"   done in {time.time() - start:.0f} s -> {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m nbhelpers.export RUN_DIR OUT_DIR [--overwrite] [--push_to_hub REPO]``.

Writes a trained classifier run as a self-contained folder (safetensors weights, config, classes, operating
points and a Hugging Face model card; :mod:`nbhelpers.predict.export`), and optionally uploads it to the
Hub. A bad command line or a missing run prints ``nbhelpers.export: error: ...`` (one line), status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nbhelpers.predict.export import export, push_to_hub

PROG = "nbhelpers.export"


def fail(message: str) -> None:
    """Prints ``nbhelpers.export: error: <message>`` (its first line) and exits with status 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"{PROG}: error: {first}", file=sys.stderr)
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        fail(f"{message} (see python -m {PROG} --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m {PROG}", description="Export a classifier run as a self-contained folder.")
    p.add_argument("run_dir", help="the classifier run folder (runs/<name>)")
    p.add_argument("out_dir", help="the folder to write (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace what out_dir holds")
    p.add_argument("--license", help="the model card's licence for a model of synthetic data (a Hub id)")
    p.add_argument("--push_to_hub", metavar="REPO", help="then upload the folder to this Hub repository")
    p.add_argument(
        "--public", action="store_true", help="create the Hub repository public (default: private)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        out = export(args.run_dir, args.out_dir, args.overwrite, args.license)
        print(f"exported {args.run_dir} to {out}")
        if args.push_to_hub:
            print(f"uploaded: {push_to_hub(out, args.push_to_hub, private=not args.public)}")
    except (OSError, ValueError, RuntimeError) as err:
        fail(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())

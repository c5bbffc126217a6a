"""Command line: score new memes with a trained run or an exported model.

One image and caption, printed as one JSON object::

    python -m nbhelpers.predict RUN_DIR --image meme.png --text "caption"

A table of one's own (CSV, TSV, JSON lines, JSON or parquet; the own-data source's column parameters),
written as CSV, JSON lines or parquet, with a progress bar and the skipped rows counted by reason::

    python -m nbhelpers.predict RUN_DIR --table memes.csv --raw_dir DIR --out scores.csv

The classifier runs under a folder, one line each::

    python -m nbhelpers.predict list --runs_dir runs

A bad command line, a missing run or file, or an unreadable image prints ``nbhelpers.predict: error: ...``
(one line) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from nbhelpers.evaluation.run_discovery import CLASSIFIER_TASKS, discover_runs
from nbhelpers.predict.predictor import BATCH_SIZE, load
from nbhelpers.predict.table import OUT_FORMATS, score_table, write_scores

PROG = "nbhelpers.predict"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, as every other failure here
        fail(f"{message} (see python -m {PROG} --help)")


def fail(message: str) -> None:
    """Prints ``nbhelpers.predict: error: <message>`` (its first line) and exits with status 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"{PROG}: error: {first}", file=sys.stderr)
    raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"python -m {PROG}",
        description="Score images + captions with a trained classifier run or an exported model.",
        epilog="python -m nbhelpers.predict list [--runs_dir runs]: the classifier runs under a folder.",
    )
    p.add_argument("run_dir", help="a classifier run folder (runs/<name>) or an exported model folder")
    one = p.add_argument_group("one meme")
    one.add_argument("--image", help="the picture (a file path)")
    one.add_argument("--text", help="the caption")
    many = p.add_argument_group("a table")
    many.add_argument("--table", help="CSV, TSV, JSON lines, JSON or parquet, one row per meme")
    many.add_argument("--raw_dir", help="the folder the image paths are relative to (default: the table's)")
    many.add_argument("--out", help=f"where to write the scores ({', '.join(OUT_FORMATS)})")
    many.add_argument("--image_column", default="image", help="column of the image (default: image)")
    many.add_argument("--text_column", default="text", help="column of the caption (default: text)")
    many.add_argument("--id_column", default="", help="column of a unique id (default: the row number)")
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE, help="samples per forward pass")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def list_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m {PROG} list", description="List the classifier runs under a folder.")
    p.add_argument("--runs_dir", default="runs", help="the folder of runs (default: runs)")
    return p


def list_runs(runs_dir: str) -> list[str]:
    """One line per run under ``runs_dir`` with a classifier: name, task, classes; or why it cannot predict."""
    lines = []
    for record in discover_runs(runs_dir):
        if record.task not in CLASSIFIER_TASKS:
            continue
        state = f"cannot predict: {record.problem}" if record.problem else ", ".join(record.classes)
        lines.append(f"{record.name}\t{record.model_name}\t{record.task}\t{state}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line (see the module docstring); returns 0, or exits with status 2 on an error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "list":
        args = list_parser().parse_args(argv[1:])
        lines = list_runs(args.runs_dir)
        print("\n".join(lines) if lines else f"no classifier runs under {args.runs_dir}")
        return 0
    args = parser().parse_args(argv)
    if args.table and (args.image or args.text):
        fail("give either --table or --image/--text, not both")
    if not args.table and args.image is None and args.text is None:
        fail("give --image and --text (one meme) or --table and --out (a table)")
    if args.table and not args.out:
        fail("--out: where to write the table's scores (.csv, .jsonl or .parquet)")
    if args.batch_size < 1:
        fail(f"--batch_size: must be >= 1, got {args.batch_size}")
    try:
        predictor = load(args.run_dir, device=args.device)
        if not args.table:
            print(json.dumps(predictor.predict(args.image, args.text).record(0), ensure_ascii=False))
            return 0
        found = score_table(
            predictor, args.table, args.raw_dir, args.image_column, args.text_column, args.id_column,
            args.batch_size, progress=not args.no_progress,
        )  # fmt: skip
        write_scores(found.table, args.out)
    except (OSError, ValueError, TypeError, RuntimeError) as err:  # ImageDecodeError is a ValueError
        fail(str(err))
    print(f"{found.summary()}; written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

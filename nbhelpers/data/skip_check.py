"""Whether a prepared source kept enough of its rows, and the error that says why it did not.

Readers skip and count every row they cannot use (:mod:`nbhelpers.data.records`), which is right for a
few bad rows. But a parameter that does not fit the data (labels that are not the classes, the wrong
text column, images under another folder) skips most rows or all of them, and a run that succeeded with
an empty or tiny split would only fail later, far from the cause. So :func:`check_kept`, which
``prepare`` runs once the shards and the manifest are written, fails

- a run that kept no sample at all, always;
- a split that skipped more than ``max_skipped_fraction`` of its rows (``prepare``'s default 0.5: most
  of them; 1 accepts any loss).

A split's rows are its samples plus its skips, less the skips in :data:`BY_DESIGN` (rows a source leaves
out on purpose, of which a good run of a real dataset may have many). The error is one paragraph: the
largest skip reasons with their counts, examples and the parameter that usually fixes each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from nbhelpers.data.shards import SplitResult
from nbhelpers.data.taxonomy import LabelSet

#: Skips that are not lost rows: a blank line is no row, and a Fakeddit post without an image is left
#: out on purpose (every sample pairs an image with a text).
BY_DESIGN = frozenset({"blank_line", "no_image"})
#: The skip reasons an error names (the largest first), and the examples it quotes for each.
TOP_REASONS = 3
EXAMPLES = 2
#: Characters of an example quoted (examples may hold long paths and decoder messages).
EXAMPLE_CHARS = 160

_ID = "check id_column: it names a unique id per row (empty: the row number)"
_TEXT = "check text_column: it names the column of the text"
_IMAGE = "check image_column (image paths relative to raw_dir, bytes or a datasets Image)"
_LAYOUT = "check that raw_dir holds the dataset's files as its authors released them"
#: What usually fixes the rows skipped for a reason, naming the parameter (``unmapped_label``: see
#: :func:`_unmapped_hint`); a reason not here is explained by its examples and the manifest.
HINTS = {
    "missing_label": "check label_column: it names the column of the label, and its cells are filled",
    "empty_text": _TEXT,
    "invalid_text": _TEXT,
    "missing_image": f"{_IMAGE} and that the images are under raw_dir",
    "path_outside_raw_dir": "image paths must be relative to raw_dir and stay inside it",
    "undecodable_image": f"{_IMAGE}: these do not decode as images",
    "image_too_large": "these images have more pixels than the decoder accepts",
    "malformed_row": "the table cannot be parsed there (a CSV needs one header row, JSON lines one object a line)",
    "missing_id": _ID,
    "duplicate_id": _ID,
    "duplicate_key": _ID,
    "missing_split": "check split_column: it names each row's split, and every row has one",
    "unknown_label": _LAYOUT,
    "unknown_id": _LAYOUT,
}


class TooManySkippedError(ValueError):
    """A prepare run that kept no sample, or a split that skipped more than ``max_skipped_fraction`` of its
    rows. The message names the largest skip reasons, examples and the parameter to change.

    Attributes:
        splits: the failing splits, name -> ``(kept, rows)``.
    """

    def __init__(self, message: str, splits: Mapping[str, tuple[int, int]]) -> None:
        super().__init__(message)
        self.splits = dict(splits)


def lost_rows(result: SplitResult) -> int:
    """The rows of a split that were skipped, less those skipped by design (:data:`BY_DESIGN`)."""
    return sum(n for reason, n in result.skipped.items() if reason not in BY_DESIGN)


def check_kept(
    splits: Mapping[str, SplitResult], max_skipped_fraction: float, labels: LabelSet, manifest: Path
) -> None:
    """Raises unless the run kept a sample and no split lost more than ``max_skipped_fraction`` of its rows.

    Args:
        splits: the splits written, by name.
        max_skipped_fraction: the largest fraction of a split's rows that may be skipped, in ``0..1``.
        labels: the classes the shards were written with (named in the hint for unmapped labels).
        manifest: the manifest written, where the error says every count and example is.

    Raises:
        TooManySkippedError: for a run that kept no sample, or each split over the fraction.
    """
    kept = sum(result.num_samples for result in splits.values())
    rows = {name: (r.num_samples, r.num_samples + lost_rows(r)) for name, r in splits.items()}
    if kept == 0:
        failing = {name: counts for name, counts in rows.items() if counts[1]} or rows
        if not any(total for _, total in rows.values()):
            raise TooManySkippedError(
                f"no sample was kept: the source has no rows (splits {', '.join(map(repr, rows))}); check "
                "raw_dir and its files",
                failing,
            )
        listed = " and ".join(
            f"{name!r} ({total} row{'s' if total != 1 else ''})" for name, (_, total) in failing.items()
        )
        head = f"no sample was kept: split{'s' if len(failing) > 1 else ''} {listed} skipped every row"
    else:
        failing = {
            name: (n, total)
            for name, (n, total) in rows.items()
            if total and (total - n) / total > max_skipped_fraction
        }
        if not failing:
            return
        listed = " and ".join(f"{name!r} (kept {n} of {total})" for name, (n, total) in failing.items())
        head = (
            f"split{'s' if len(failing) > 1 else ''} {listed} skipped more than "
            f"max_skipped_fraction={max_skipped_fraction:g} of {'their' if len(failing) > 1 else 'its'} rows"
        )
    tail = (
        f"Every count and example: {manifest}. Fix the parameters and run again (complete shards are reused)"
    )
    if kept:
        accept = max(_hundredths_up(total - n, total) for n, total in failing.values())
        tail += f", or keep what is left with max_skipped_fraction={accept:g}."
    else:
        tail += "; a run that keeps no sample always fails."
    reasons = _reasons([splits[name] for name in failing], labels)
    raise TooManySkippedError(f"{head}. {reasons} {tail}", failing)


def _hundredths_up(lost: int, total: int) -> float:
    """``lost / total`` rounded up to hundredths (4 of 6 -> 0.67), in integers so it is never below it."""
    return -(-100 * lost // total) / 100


def _reasons(results: Sequence[SplitResult], labels: LabelSet) -> str:
    """The largest skip reasons of ``results``: count, examples and hint of each, one sentence apiece."""
    counts: Counter[str] = Counter()
    for result in results:
        counts.update({r: n for r, n in result.skipped.items() if r not in BY_DESIGN})
    sentences = []
    for reason, count in counts.most_common(TOP_REASONS):
        examples = [e for result in results for e in result.skip_examples.get(reason, [])][:EXAMPLES]
        sentence = f"{count} row{'s' if count != 1 else ''} skipped as {reason}"
        if examples:
            sentence += f", e.g. {' and '.join(_short(e) for e in examples)}"
        if reason == "unmapped_label":
            values = [v for result in results for v in result.skip_values.get(reason, [])]
            sentence += f": {_unmapped_hint(list(dict.fromkeys(values)), labels)}"
        elif reason in HINTS:
            sentence += f": {HINTS[reason]}"
        sentences.append(sentence + ".")
    others = counts.most_common()[TOP_REASONS:]
    if others:
        sentences.append("Also skipped: " + ", ".join(f"{reason} {count}" for reason, count in others) + ".")
    return " ".join(sentences)


def _short(example: str) -> str:
    return example if len(example) <= EXAMPLE_CHARS else example[: EXAMPLE_CHARS - 3] + "..."


def _unmapped_hint(values: list[str], labels: LabelSet) -> str:
    """What to set when labels are none of the classes: ``classes`` (for names) or ``label_map``."""
    names = labels.names
    hint = f"the labels are none of the classes ({', '.join(names)}) and label_map does not map them; "
    plain = bool(values) and not any(set(v) & set(",:=\"'") for v in values)
    if plain and not any(v.lstrip("-").isdigit() for v in values):
        hint += f'set classes to your own class names (classes="{",".join(values)}") '
    else:
        hint += "set classes to your own class names "
    if plain:
        pairs = [f"{values[0]}:{names[0]}"] + ([f"{values[1]}:{names[-1]}"] if len(values) > 1 else [])
        return hint + f'or map each label to a class with label_map (label_map="{",".join(pairs)}")'
    return hint + "or map each label to a class with label_map"

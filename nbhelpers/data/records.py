"""What a source reader yields, and how skipped inputs are counted.

Readers are cheap: they parse annotations and yield :class:`Record` objects that point at an image (a
path, or a callable that draws one). Decoding happens in the shard writer, which counts images that
fail to decode. Every input that does not become a sample is counted by reason in a
:class:`SkipCounter`, never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

ImageRef = Path | Callable[[], Image.Image]


@dataclass
class Record:
    """One candidate sample, before its image is decoded.

    Attributes:
        source: the source name (``synthetic``, ``hateful_memes``, ...).
        source_id: the sample's id in its source.
        split: the split name written to the shards (``train``, ``val``, ``dev_seen``, ...).
        text: the text paired with the image (never empty).
        label: the merged class in ``0..6``, or -1 when the source gives none.
        image: a path to the image file, or a callable returning a PIL image.
        meta: the source's own labels and extra fields, copied into the sample's ``json``.
    """

    source: str
    source_id: str
    split: str
    text: str
    label: int
    image: ImageRef
    meta: dict[str, Any] = field(default_factory=dict)


class SkipCounter(Counter):
    """Counts skipped inputs by reason and keeps a few examples of each.

    Inputs that were kept but had to be repaired (a text that was not valid UTF-8, say) are counted
    apart, in :attr:`repaired`, since they did become samples.

    >>> skips = SkipCounter()
    >>> skips.skip("missing_image", "img/42.png")
    >>> dict(skips)
    {'missing_image': 1}
    """

    max_examples = 5
    #: Distinct offending values kept per reason (:attr:`values`).
    max_values = 20

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.examples: dict[str, list[str]] = {}
        self.repaired: Counter[str] = Counter()
        self.repair_examples: dict[str, list[str]] = {}
        #: reason -> the first distinct values skipped under it (label values a map lacks, say), kept in
        #: memory for error messages; the manifest keeps the examples only.
        self.values: dict[str, list[str]] = {}

    def skip(self, reason: str, example: str | None = None, count: int = 1, value: str | None = None) -> None:
        """Counts ``count`` skipped inputs under ``reason`` (a short snake_case key).

        With ``value`` (the offending value, e.g. a label), examples are kept for distinct values only,
        so five examples show five different values rather than the first five rows, and the value is
        listed in :attr:`values`.
        """
        self[reason] += count
        if value is not None:
            seen = self.values.setdefault(reason, [])
            if value in seen or len(seen) >= self.max_values:
                return
            seen.append(value)
        _keep(self.examples, reason, example, self.max_examples)

    def repair(self, reason: str, example: str | None = None) -> None:
        """Counts one input kept after a repair, under ``reason``."""
        self.repaired[reason] += 1
        _keep(self.repair_examples, reason, example, self.max_examples)

    @classmethod
    def from_parts(
        cls,
        counts: dict[str, int],
        examples: dict[str, list[str]],
        repaired: dict[str, int] | None = None,
        repair_examples: dict[str, list[str]] | None = None,
    ) -> SkipCounter:
        """A counter from saved ``counts`` and ``examples`` (as in a shard's stats file)."""
        counter = cls(counts)
        counter.examples = {reason: list(kept) for reason, kept in examples.items()}
        counter.repaired.update(repaired or {})
        counter.repair_examples = {reason: list(kept) for reason, kept in (repair_examples or {}).items()}
        return counter

    def merge(self, other: SkipCounter) -> None:
        """Adds ``other``'s counts and examples to this counter."""
        self.update(other)
        self.repaired.update(other.repaired)
        for reason, values in other.values.items():
            seen = self.values.setdefault(reason, [])
            seen.extend(v for v in values if v not in seen)
            del seen[self.max_values :]
        for mine, theirs in ((self.examples, other.examples), (self.repair_examples, other.repair_examples)):
            for reason, examples in theirs.items():
                kept = mine.setdefault(reason, [])
                kept.extend(examples[: max(0, self.max_examples - len(kept))])


def _keep(examples: dict[str, list[str]], reason: str, example: str | None, limit: int) -> None:
    if example is not None:
        kept = examples.setdefault(reason, [])
        if len(kept) < limit:
            kept.append(str(example))

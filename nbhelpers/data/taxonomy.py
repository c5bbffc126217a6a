"""The seven classes every source is merged into.

The order is fixed: label ``i`` of every shard means ``CLASSES[i]``. Only class 0 marks an image and a
text that truly belong together, so it is the only class whose pairs the contrastive losses trust
(``valid_pair``).
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "True/Neutral",
    "Satire/Parody",
    "Misleading Content",
    "Imposter Content",
    "False Connection",
    "Manipulated Content",
    "Hate",
)
NUM_CLASSES = len(CLASSES)
TRUE_NEUTRAL = 0
SATIRE = 1
MISLEADING = 2
IMPOSTER = 3
FALSE_CONNECTION = 4
MANIPULATED = 5
HATE = 6
#: Label written for samples whose source gives no label (e.g. Hateful Memes' test files).
UNLABELLED = -1


def class_name(label: int) -> str:
    """Returns the class name of ``label``, or ``"unlabelled"`` for -1.

    Raises:
        ValueError: if ``label`` is neither -1 nor in ``0..6``.
    """
    if label == UNLABELLED:
        return "unlabelled"
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be -1 or in 0..{NUM_CLASSES - 1}, got {label}")
    return CLASSES[label]


def is_valid_pair(label: int) -> bool:
    """True exactly for class 0: the text truly describes the picture."""
    return label == TRUE_NEUTRAL

"""The seven classes every source is merged into.

The order is fixed: label ``i`` of every shard means ``CLASSES[i]``. Only class 0 marks an image and a
text that truly belong together, so it is the only class whose pairs the contrastive losses trust
(``valid_pair``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class LabelSet:
    """The classes a set of shards is labelled with: the seven above by default, or a user's own.

    Label ``i`` of a shard means ``names[i]``. ``valid_pair`` holds the classes whose image and text truly
    belong together: the contrastive losses take only their pairs as positives.

    Attributes:
        names: the class names, in label order (at least 2, unique, non-blank).
        valid_pair: labels of the classes whose pairs are valid.
    """

    names: tuple[str, ...]
    valid_pair: frozenset[int]

    def __post_init__(self):
        names = tuple(self.names)
        if len(names) < 2:
            raise ValueError(f"a label set needs at least 2 classes, got {list(names)}")
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"class names must be non-blank strings, got {list(names)}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"class names must be unique; repeated: {repeated}")
        if "unlabelled" in names:
            raise ValueError("'unlabelled' is reserved for samples without a label")
        valid = frozenset(self.valid_pair)
        outside = sorted(v for v in valid if not (isinstance(v, int) and 0 <= v < len(names)))
        if outside:
            raise ValueError(f"valid_pair: labels {outside} are not in 0..{len(names) - 1}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "valid_pair", valid)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_default(self) -> bool:
        """True for the seven merged classes every built-in source uses."""
        return self == SEVEN_CLASSES

    def name(self, label: int) -> str:
        """The class name of ``label``, or ``"unlabelled"`` for -1.

        Raises:
            ValueError: if ``label`` is neither -1 nor in ``0..len(self) - 1``.
        """
        if label == UNLABELLED:
            return "unlabelled"
        if not (isinstance(label, int) and 0 <= label < len(self.names)):
            raise ValueError(f"label must be -1 or in 0..{len(self.names) - 1}, got {label!r}")
        return self.names[label]

    def is_valid_pair(self, label: int) -> bool:
        """True when a sample of class ``label`` pairs an image with a text that truly belongs to it."""
        return label in self.valid_pair

    def to_manifest(self) -> dict[str, Any]:
        """The manifest fields that record this label set."""
        return {"classes": list(self.names), "valid_pair_classes": sorted(self.valid_pair)}

    @classmethod
    def from_names(cls, names: Sequence[str], valid_pair_names: Iterable[str] | None = None) -> LabelSet:
        """A label set from class names; every class's pairs are valid unless ``valid_pair_names`` says.

        Raises:
            ValueError: for fewer than 2, repeated or blank names, or a valid-pair name not among them.
        """
        names = tuple(names)
        if valid_pair_names is None:
            return cls(names, frozenset(range(len(names))))
        unknown = sorted(set(valid_pair_names) - set(names))
        if unknown:
            raise ValueError(f"valid-pair classes {unknown} are not among the classes {list(names)}")
        return cls(names, frozenset(names.index(n) for n in valid_pair_names))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LabelSet:
        """The label set a manifest records (manifests written before label sets existed: the seven)."""
        if "classes" not in manifest:
            return SEVEN_CLASSES
        return cls(tuple(manifest["classes"]), frozenset(manifest.get("valid_pair_classes", ())))


#: The seven merged classes; only True/Neutral pairs are valid.
SEVEN_CLASSES = LabelSet(CLASSES, frozenset({TRUE_NEUTRAL}))


def label_set_of(manifests: Sequence[Mapping[str, Any]]) -> LabelSet:
    """The one label set shared by ``manifests`` (the shards a run reads together).

    Raises:
        ValueError: if the manifests are labelled with different label sets (naming the sources).
    """
    if not manifests:
        return SEVEN_CLASSES
    sets = [LabelSet.from_manifest(m) for m in manifests]
    if any(s != sets[0] for s in sets[1:]):
        described = "; ".join(f"{m.get('source', '?')}: {list(s.names)}" for m, s in zip(manifests, sets))
        raise ValueError(f"these shards use different label sets and cannot be read together: {described}")
    return sets[0]

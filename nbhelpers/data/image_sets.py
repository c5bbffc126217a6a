"""Splits of pictures in memory: the shards' or a Hugging Face image dataset's, as uint8 tensors.

What self-supervised pre-training and its probes read: every picture of a split squared to one size
(``Resize`` + ``CenterCrop``) and held as one ``(N, 3, S, S)`` uint8 tensor, with named integer labels.
The shards give their class label and, for the synthetic benchmark, each picture's ground-truth colour and
shape (``attributes.image`` in each sample's json); a Hugging Face dataset gives its label column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.transforms import v2

from nbhelpers.data.loader import make_loader, make_pipeline
from nbhelpers.data.sources.synthetic import COLOUR_NAMES, SEEN_SHAPES, UNSEEN_SHAPES
from nbhelpers.data.taxonomy import CLASSES, label_set_of

#: The synthetic pictures' ground-truth attributes (json ``attributes.image``) and their values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOUR_NAMES, "shape": (*SEEN_SHAPES, *UNSEEN_SHAPES)}
#: The shards' class label: ``7class`` for the seven merged classes, ``classes`` for a label set of the
#: user's own.
CLASS_LABELS = ("7class", "classes")


@dataclass
class ImageSet:
    """A split in memory: uint8 ``images`` (N, 3, S, S) and named integer labels ``(N,)``."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def to_uint8(size: int) -> v2.Compose:
    """PIL image or array -> uint8 ``(3, size, size)``: RGB, shorter side resized to ``size``, centre crop."""
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def load_shard_images(
    found: list[dict[str, Any]], split: str, size: int, limit: int | None = None
) -> ImageSet:
    """A split of the shards at ``size`` px, with their class label (``7class`` for the seven merged
    classes, ``classes`` for a label set of the user's own) and, for the synthetic benchmark, the
    picture's ground-truth colour and shape (from each sample's json ``attributes.image``).

    Raises:
        ValueError: if the split has no labelled sample.
    """
    classes = label_set_of(found).names
    class_label = "7class" if classes == CLASSES else "classes"
    pipeline = make_pipeline(found, split, batch_size=256, image_transform=to_uint8(size), limit=limit)
    images, labels, colours, shapes = [], [], [], []
    for batch in make_loader(pipeline):
        images.append(batch["image"])
        labels.append(batch["label"])
        for meta in batch["meta"]:
            picture = meta.get("attributes", {}).get("image", {})
            colours.append(ATTRIBUTES["colour"].index(picture["colour"]) if "colour" in picture else -1)
            shapes.append(ATTRIBUTES["shape"].index(picture["shape"]) if "shape" in picture else -1)
    if not labels:
        raise ValueError(f"split {split!r} has no labelled samples")
    named = {class_label: torch.cat(labels)}
    names = {class_label: classes}
    for key, values in (("colour", colours), ("shape", shapes)):
        if min(values) >= 0:  # only sources that record the attribute (the synthetic benchmark)
            named[key] = torch.tensor(values)
            names[key] = ATTRIBUTES[key]
    return ImageSet(torch.cat(images), named, names)


def hf_columns(dataset, image_column: str = "", label_column: str = "") -> tuple[str, str]:
    """The image and label columns of a ``datasets.Dataset``: as given, or the first ``Image`` and
    ``ClassLabel`` features (CIFAR-10: ``img``, ``label``).

    Raises:
        ValueError: if a column is missing or cannot be detected.
    """
    import datasets

    features = dataset.features
    if not image_column:
        image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), "")
    if not label_column:
        label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), "")
    for what, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in features:
            raise ValueError(f"{what}: {column!r} is not a column of the dataset; it has {list(features)}")
    return image_column, label_column


def hf_images(
    dataset, size: int, image_column: str = "", label_column: str = "", limit: int | None = None
) -> ImageSet:
    """A ``datasets.Dataset`` of PIL images and integer labels as an :class:`ImageSet` (label ``"label"``)."""
    image_column, label_column = hf_columns(dataset, image_column, label_column)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    transform = to_uint8(size)
    images, labels = [], []
    for row in dataset:
        images.append(transform(row[image_column]))
        labels.append(int(row[label_column]))
    feature = dataset.features[label_column]
    names = tuple(feature.names) if hasattr(feature, "names") else tuple(map(str, sorted(set(labels))))
    return ImageSet(torch.stack(images), {"label": torch.tensor(labels)}, {"label": names})

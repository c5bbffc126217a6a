"""Every trained run of notebooks 02-07 as an :class:`Explainer`: its model, and one ``explain`` per sample.

An explainer is built from the :class:`~nbhelpers.train.recipes.TrainedRun` that the run's recipe's
``load_trained`` returns (the model, its input size, normalisation, tokenizer and named parts), and
returns the picture, caption, true and predicted class and every map the architecture allows
(:mod:`nbhelpers.evaluation.saliency`). The classes are the run's own (``TrainedRun.class_names``: the
seven merged classes, a label set of the user's own, or *not hateful* / *hateful* for a binary fusion
head). :data:`EXPLAINERS` gives the explainer of each recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.data.memory import TensorSplit, load_split, normalize
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.evaluation.saliency import (
    cls_attention_maps,
    grad_cam,
    gradient_x_input,
    open_clip_attention,
    pooled_token_attention,
    pooled_token_index,
    resnet_cam_layer,
    ssl_vit_attention,
)
from nbhelpers.models.ssl import VIT_CONFIGS, VisionTransformer
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.recipes.registry import TrainedRun


@dataclass
class Explanation:
    """Everything the notebook shows about one sample under one model.

    Attributes:
        image: ``(S, S, 3)`` uint8 picture as the model saw it.
        text: the caption.
        label: the true class index in ``class_names``.
        class_names: the classes ``probs`` ranges over.
        probs: ``(C,)`` predicted probabilities, or None for a model with no classifier.
        attention: ``(layers, heads, gh, gw)`` CLS-to-patch attention of every layer, or None (CNNs).
        grad_cam: ``(S, S)`` Grad-CAM of the predicted class in ``[0, 1]``, or None.
        tokens: the caption's tokens as the text model cut it (start and end tokens included).
        token_scores: ``{method: (len(tokens),) scores}``.
        model: a short description of the run.
    """

    image: np.ndarray
    text: str
    label: int
    class_names: tuple[str, ...]
    probs: np.ndarray | None = None
    attention: np.ndarray | None = None
    grad_cam: np.ndarray | None = None
    tokens: list[str] = field(default_factory=list)
    token_scores: dict[str, np.ndarray] = field(default_factory=dict)
    model: str = ""

    @property
    def predicted(self) -> int | None:
        """The predicted class index, or None without a classifier."""
        return None if self.probs is None else int(np.argmax(self.probs))

    @property
    def num_layers(self) -> int:
        return 0 if self.attention is None else self.attention.shape[0]

    @property
    def num_heads(self) -> int:
        return 0 if self.attention is None else self.attention.shape[1]


class Explainer:
    """A trained run's model with what is needed to explain one sample of a split.

    Built from the run's :class:`TrainedRun` (:meth:`create`); subclasses pick the parts they map and
    implement :meth:`_explain` for a normalised batch of one.

    Args:
        trained: what the run's recipe's ``load_trained`` returned.
    """

    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    #: The open_clip image tower whose attention is recorded, if the model has one.
    image_tower: nn.Module | None = None

    def __init__(self, trained: TrainedRun) -> None:
        self.trained = trained
        self.run_dir = trained.run_dir
        self.config = trained.config
        self.model = trained.model
        self.image_size = trained.image_size
        self.tokenizer = trained.tokenizer
        if trained.mean is not None and trained.std is not None:
            self.mean, self.std = trained.mean, trained.std
        self._class_names = None if trained.class_names is None else tuple(trained.class_names)
        self._splits: dict[tuple[str, int | None], TensorSplit] = {}

    @classmethod
    def create(cls, trained: TrainedRun) -> Explainer:
        """The explainer of ``trained`` (a recipe with several kinds of run picks the kind's subclass).

        Raises:
            TypeError: if the run's model has nothing this explainer can map.
        """
        return cls(trained)

    @classmethod
    def unexplainable(cls, metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
        """Why a run of this recipe has nothing to map, from its ``metrics.json`` and ``config.json``
        (without loading it); None when it can be explained."""
        return None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes the true (and predicted) labels index: the run's, or for a model with no classifier
        the classes of the shards it reads."""
        if self._class_names is None:
            self._class_names = self.config.label_set().names
        return self._class_names

    def split(self, split: str, limit: int | None = 32) -> TensorSplit:
        """The first ``limit`` samples of ``split`` at the model's input size (cached)."""
        key = (split, limit)
        if key not in self._splits:
            self._splits[key] = load_split(
                manifests(self.config), split, self.image_size, self.tokenizer, limit
            )
        return self._splits[key]

    def images(self, data: TensorSplit, indices: Sequence[int]) -> torch.Tensor:
        """The samples at ``indices`` as the model's normalised input ``(B, 3, S, S)``."""
        return normalize(data.images[list(indices)], self.mean, self.std)

    def explain(self, data: TensorSplit, index: int) -> Explanation:
        """The explanation of sample ``index`` of ``data`` (from :meth:`split`).

        Raises:
            IndexError: if ``index`` is outside the split.
        """
        if not 0 <= index < len(data):
            raise IndexError(f"sample {index} is outside the split's {len(data)} samples")
        batch = data.subset(torch.tensor([index]))
        images = normalize(batch["image"], self.mean, self.std)
        explanation = Explanation(
            image=batch["image"][0].permute(1, 2, 0).numpy(),
            text=batch["text"][0],
            label=int(self._label(batch)),
            class_names=self.class_names,
            model=self.describe(),
        )
        self._explain(explanation, images, batch)
        return explanation

    def _label(self, batch: dict[str, Any]) -> int:
        return int(batch["label"][0])

    def describe(self) -> str:
        return self.name

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        raise NotImplementedError


def _open_clip_maps(visual: nn.Module, images: torch.Tensor) -> np.ndarray:
    """``(layers, heads, gh, gw)`` CLS attention of every layer of an open_clip ViT, for one image."""
    _, weights = open_clip_attention(visual, images)
    grid = tuple(visual.grid_size)
    return torch.stack([cls_attention_maps(w, grid)[0] for w in weights]).numpy()


def _open_clip_tokens(tokenizer: Any, clip: nn.Module, tokens: torch.Tensor) -> list[str]:
    """The display strings of one caption's tokens, up to the pooled (end) token."""
    end = int(pooled_token_index(clip, tokens)[0])
    ids = tokens[0, : end + 1].tolist()
    decoder = getattr(tokenizer, "decoder", None)
    if decoder is None:
        return [str(i) for i in ids]
    return [decoder.get(i, str(i)).replace("</w>", "") for i in ids]


def _text_scores(
    clip: nn.Module, tokens: torch.Tensor, score: Callable[[], torch.Tensor]
) -> dict[str, np.ndarray]:
    end = int(pooled_token_index(clip, tokens)[0]) + 1
    grad = gradient_x_input(score, clip.token_embedding)[0, :end]
    attention = pooled_token_attention(clip, tokens)[0].mean(dim=0)[:end]
    return {"gradient x input": grad.numpy(), "end-token attention": attention.numpy()}


class ClipClassifierExplainer(Explainer):
    """Notebook 06: CLIP (+ LoRA) and its transformer head. ViT attention, tokens, the class prediction."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        self.clip = trained.parts["clip"]
        self.image_tower = trained.parts["image_tower"]

    def describe(self) -> str:
        return f"{self.name}: CLIP {self.config.mode} + transformer head ({self.config.model})"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]
        with torch.no_grad():
            logits = self.model(images, tokens)["logits"]
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        explanation.attention = _open_clip_maps(self.image_tower, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.clip, tokens)
        explanation.token_scores = _text_scores(
            self.clip, tokens, lambda: self.model(images, tokens)["logits"][:, target]
        )


class ClipExplainer(Explainer):
    """Notebook 03: a contrastive CLIP, no classifier. ViT attention; tokens scored on the image-text cosine."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        self.clip = trained.parts["clip"]
        self.image_tower = trained.parts["image_tower"]

    def describe(self) -> str:
        return f"{self.name}: contrastive CLIP ({self.config.model}), no classifier"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]

        def cosine() -> torch.Tensor:
            image = F.normalize(self.clip.encode_image(images), dim=-1)
            return (image * F.normalize(self.clip.encode_text(tokens), dim=-1)).sum(-1)

        explanation.attention = _open_clip_maps(self.image_tower, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.clip, tokens)
        explanation.token_scores = _text_scores(self.clip, tokens, cosine)


class _CassImageClassifier(nn.Module):
    """CASS-MM's classifier as a function of the picture alone (the caption fixed), for Grad-CAM."""

    def __init__(self, towers: nn.Module, head: nn.Module, tokens: torch.Tensor) -> None:
        super().__init__()
        self.towers, self.head, self.tokens = towers, head, tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens.expand(len(images), -1)
        # CASSMM.features without its no_grad decorator: the same features, with a graph for the gradient.
        image, text = type(self.towers).features.__wrapped__(self.towers, images, tokens)
        return self.head(image, text)


class CassMMExplainer(Explainer):
    """Notebook 05: CNN + ViT + text towers and the head on their frozen features.

    ViT attention maps, Grad-CAM of the CNN (through the whole classifier, caption fixed), and the caption's
    gradient x input, all for the predicted class.
    """

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        self.towers, self.head = trained.parts["towers"], trained.parts["head"]
        self.clip, self.cnn = trained.parts["clip"], trained.parts["cnn"]
        self.image_tower = trained.parts["image_tower"]

    def describe(self) -> str:
        return f"{self.name}: CASS-MM ({self.config.cnn} + {self.config.model}) + transformer head"

    def _cam_layer(self, images: torch.Tensor) -> nn.Module:
        # The CNN sees the pictures resized to cnn_image_size.
        size = self.towers.cnn_image_size
        return resnet_cam_layer(self.cnn, images.new_zeros(1, 3, size, size))

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]
        classifier = _CassImageClassifier(self.towers, self.head, tokens).eval()
        with torch.no_grad():
            logits = classifier(images)
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        explanation.attention = _open_clip_maps(self.image_tower, images)
        explanation.grad_cam = grad_cam(classifier, self._cam_layer(images), images, [target])[0]
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.clip, tokens)
        explanation.token_scores = _text_scores(self.clip, tokens, lambda: classifier(images)[:, target])


class UnimodalExplainer(Explainer):
    """Notebook 02's runs: one classifier on one modality (:meth:`create` picks the modality's explainer)."""

    @classmethod
    def create(cls, trained: TrainedRun) -> Explainer:
        kind = UnimodalImageExplainer if trained.config.model == "image" else UnimodalTextExplainer
        return kind(trained)

    @classmethod
    def unexplainable(cls, metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
        if metrics.get("modality") not in ("image", "text"):
            return "a late-fusion run has no model of its own to map"
        return None


class UnimodalImageExplainer(UnimodalExplainer):
    """Notebook 02's ResNet-18 picture classifier: Grad-CAM of the predicted class."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        self.cnn = trained.parts["cnn"]

    def describe(self) -> str:
        return f"{self.name}: ResNet-18 on the picture alone"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        with torch.no_grad():
            logits = self.model(images)
        explanation.probs = logits.softmax(-1)[0].numpy()
        explanation.grad_cam = grad_cam(self.model, resnet_cam_layer(self.cnn, images), images)[0]


class UnimodalTextExplainer(UnimodalExplainer):
    """Notebook 02's BERT caption classifier: gradient x input over its word pieces."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        # The model reads the raw caption; the picture is shown as the run's data loader loaded it.
        self.image_size = self.config.image_size
        self.encoder = trained.parts["encoder"]

    def describe(self) -> str:
        return f"{self.name}: {self.config.text_model} on the caption alone"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        encoded = self.model.tokenize(batch["text"])
        with torch.no_grad():
            logits = self.model(encoded)
        explanation.probs = logits.softmax(-1)[0].numpy()
        target = int(logits.argmax(-1))
        embedding = self.encoder.get_input_embeddings()
        scores = gradient_x_input(lambda: self.model(encoded)[:, target], embedding)[0]
        explanation.tokens = self.model.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
        explanation.token_scores = {"gradient x input": scores.numpy()}


class SSLViTExplainer(Explainer):
    """Notebook 04's self-supervised ViT (DINO's teacher, or CASS's ViT): attention maps, no labels used."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        vits = {k: m for k, m in trained.parts.items() if isinstance(m, VisionTransformer)}
        if not vits:
            raise TypeError(f"{self.run_dir}: {_no_vit(self.config.method, self.config.backbone)}")
        self.encoder_name, self.vit = next(iter(vits.items()))

    @classmethod
    def unexplainable(cls, metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
        if config.get("method") == "cass" or config.get("backbone") in VIT_CONFIGS:
            return None
        return _no_vit(config.get("method"), config.get("backbone"))

    def describe(self) -> str:
        return f"{self.name}: {self.config.method} {self.encoder_name} ViT, self-supervised"

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        weights = ssl_vit_attention(self.vit, images)
        grid = (images.shape[-2] // self.vit.patch_size, images.shape[-1] // self.vit.patch_size)
        explanation.attention = torch.stack([cls_attention_maps(w, grid)[0] for w in weights]).numpy()


def _no_vit(method: Any, backbone: Any) -> str:
    return (
        f"the {method} encoder is a {backbone}, not a ViT: it has no attention to map (train a ViT in "
        "notebook 04, e.g. method='dino', backbone='vit_tiny_demo')"
    )


class FusionExplainer(Explainer):
    """Notebook 07: a Hate-CLIPper head on an open_clip backbone. ViT attention, tokens, and P(hateful)
    for a binary head (true class: the sample's ``hateful``), else the probabilities of the run's classes."""

    def __init__(self, trained: TrainedRun) -> None:
        super().__init__(trained)
        if "clip" not in trained.parts:
            raise TypeError(
                f"{self.run_dir}: maps are implemented for open_clip backbones, not {self.config.backbone}"
            )
        self.clip, self.head = trained.parts["clip"], trained.parts["head"]
        self.image_tower = trained.parts["image_tower"]
        # The classifier reads raw captions; the maps need the open_clip token ids.
        self.tokenizer = trained.parts["backbone"].tokenizer

    def describe(self) -> str:
        return f"{self.name}: {self.config.fusion} fusion on {self.config.backbone}"

    @property
    def binary(self) -> bool:
        """One logit (hateful or not) rather than one per class."""
        return self.head.num_outputs == 1

    def _label(self, batch: dict[str, Any]) -> int:
        return int(batch["hateful" if self.binary else "label"][0])

    def _explain(self, explanation: Explanation, images: torch.Tensor, batch: dict[str, Any]) -> None:
        tokens = batch["tokens"]

        def logits() -> torch.Tensor:
            # The backbone's own encode_* run without a graph when frozen; call the towers directly.
            return self.head(self.clip.encode_image(images), self.clip.encode_text(tokens))

        with torch.no_grad():
            out = logits()
        if self.binary:
            p = float(torch.sigmoid(out)[0])
            explanation.probs = np.array([1.0 - p, p], dtype=np.float32)
            sign = 1.0 if p >= 0.5 else -1.0  # explain the predicted side: the logit or its negation

            def score() -> torch.Tensor:
                return sign * logits()
        else:
            explanation.probs = out.softmax(-1)[0].numpy()
            target = int(out.argmax(-1))

            def score() -> torch.Tensor:
                return logits()[:, target]

        explanation.attention = _open_clip_maps(self.image_tower, images)
        explanation.tokens = _open_clip_tokens(self.tokenizer, self.clip, tokens)
        explanation.token_scores = _text_scores(self.clip, tokens, score)


#: The recipe that made a run (its metrics.json's ``"recipe"``) -> the explainer of its runs.
EXPLAINERS: dict[str, type[Explainer]] = {
    "unimodal": UnimodalExplainer,
    "clip": ClipExplainer,
    "ssl": SSLViTExplainer,
    "cass_mm": CassMMExplainer,
    "clip_classifier": ClipClassifierExplainer,
    "fusion": FusionExplainer,
}

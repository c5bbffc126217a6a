"""Pretrained image+text feature extractors behind one interface.

Hate-CLIPper (Kumar & Nandakumar, 2022, "Hate-CLIPper: Multimodal Hateful Meme Classification based on
Cross-modal Interaction of CLIP Features") trains a small fusion head on the *frozen* image and text
features of a contrastive model. This module gives every such model the same face, so the head and the
notebooks never ask which family they hold:

* open_clip (Cherti et al., 2023; Radford et al., 2021): ``open_clip:<model>`` with a ``pretrained`` tag
  (``"openai"``, ``"laion2b_s34b_b79k"``, ...) or a local checkpoint path;
* Hugging Face CLIP (Radford et al., 2021): ``hf:openai/clip-vit-base-patch32``;
* BLIP (Li et al., 2022): ``hf:Salesforce/blip-itm-large-coco``, the ITC vectors of
  ``BlipForImageTextRetrieval``;
* BLIP-2 (Li et al., 2023): ``hf:Salesforce/blip2-itm-vit-g``, the ITC projections of
  ``Blip2ForImageTextRetrieval`` (Q-Former queries for the image, the Q-Former's text CLS for the text);
  ``hf:Salesforce/blip2-flan-t5-xl`` (``Blip2Model``): Q-Former queries and a Flan-T5 encoder layer.

``features``: ``"projected"`` (the contrastive embeddings) or ``"pooled"`` (what enters those projections, e.g.
CLIP's ``pooler_output``: 1024 image, 768 text values for ViT-L/14; what Hate-CLIPper's code feeds its head).

Text goes in either as ``list[str]`` or as a token batch ``{"input_ids": (B, L), "attention_mask": (B, L)}``
made by ``tokenize``; every family returns a dict of that shape so a data loader can collate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import transformers
from torch import nn
from torchvision.transforms import v2

from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.models.clip import create_clip

#: What ``features`` may be: the contrastive embeddings, or the pooled outputs the projections read.
FEATURES = ("projected", "pooled")

#: A tokenised text batch: ``input_ids`` (B, L) int64 and, for Hugging Face models, ``attention_mask`` (B, L).
TokenBatch = dict[str, torch.Tensor]


_INTERPOLATION = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


def make_image_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> v2.Compose:
    """Builds the eval transform from a PIL image or a uint8 ``(3, H, W)`` tensor to a model input.

    The shortest side is resized to ``size`` and the centre cropped, as CLIP's own preprocessing; the
    shards are already letterboxed to a square (``nbhelpers.data.image``), so nothing is cut from them.

    Args:
        size: side of the square the model expects.
        mean: per-channel mean the model was trained with.
        std: per-channel standard deviation the model was trained with.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.

    Returns:
        A callable giving a float32 ``(3, size, size)`` tensor.

    Raises:
        ValueError: if ``interpolation`` is unknown.
    """
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),  # grey or RGBA inputs would otherwise reach the model with 1 or 4 channels
            v2.Resize(size, interpolation=_INTERPOLATION[interpolation], antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def check_features(features: str) -> None:
    """Raises ``ValueError`` unless ``features`` is one of :data:`FEATURES`."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")


@contextmanager
def _unprojected(module: nn.Module, name: str):
    """``module.<name>`` set to None inside the block: open_clip's towers then skip that projection."""
    projection = getattr(module, name)
    setattr(module, name, None)
    try:
        yield
    finally:
        setattr(module, name, projection)


class FeatureBackbone(nn.Module):
    """An image tower and a text tower giving one pooled feature vector each.

    Frozen (``trainable=False``, the Hate-CLIPper setting) means: every parameter has
    ``requires_grad=False``, the module stays in eval mode even inside a model put in ``train()``, and the
    features are computed without an autograd graph. Whether features get a graph is decided from the
    parameters at call time, so adapters added later (LoRA) make the towers trainable again.

    Attributes:
        model: the wrapped model.
        features: ``"projected"`` or ``"pooled"`` (see the module docstring).
        image_dim: size of ``encode_image``'s output.
        text_dim: size of ``encode_text``'s output.
        context_length: token length ``tokenize`` pads and truncates to.
        image_transform: PIL image or uint8 tensor -> normalised ``(3, S, S)`` float tensor.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        image_dim: int,
        text_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        context_length: int,
        trainable: bool,
        interpolation: str = "bicubic",
        features: str = "projected",
    ) -> None:
        super().__init__()
        check_features(features)
        self.features = features
        self.model = model
        self.image_dim = int(image_dim)
        self.text_dim = int(text_dim)
        self.image_size = int(image_size)
        self.context_length = int(context_length)
        self.image_transform = make_image_transform(image_size, mean, std, interpolation)
        self.set_trainable(trainable)

    def set_trainable(self, trainable: bool) -> None:
        """Unfreezes (``True``) or freezes (``False``) every parameter of the wrapped model."""
        self.model.requires_grad_(trainable)
        self.train(self.training)

    @property
    def is_trainable(self) -> bool:
        """True when any parameter (the towers' own or an adapter's) requires a gradient."""
        return any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> FeatureBackbone:
        # A frozen backbone keeps dropout off and normalisation statistics fixed whatever its parent does.
        return super().train(mode and self.is_trainable)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _float_dtype(self) -> torch.dtype:
        # Half-precision towers (``model.half()`` on a T4) need half-precision pixels.
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenises ``texts`` to ``{"input_ids": (B, context_length), ...}`` (padded and truncated)."""
        raise NotImplementedError

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled image features, not L2-normalised.

        Args:
            pixel_values: ``(B, 3, H, W)`` images made by ``image_transform``.

        Returns:
            ``(B, image_dim)`` features.

        Raises:
            ValueError: if ``pixel_values`` is not ``(B, 3, H, W)``.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.is_trainable):
            return self._image_features(pixel_values.to(self._device(), self._float_dtype()))

    def encode_text(self, texts: Sequence[str] | Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Pooled text features, not L2-normalised.

        Args:
            texts: raw strings, a ``TokenBatch`` from ``tokenize``, or a ``(B, L)`` tensor of token ids.

        Returns:
            ``(B, text_dim)`` features.
        """
        if isinstance(texts, torch.Tensor):
            tokens: TokenBatch = {"input_ids": texts}
        elif isinstance(texts, Mapping):
            tokens = dict(texts)
        else:
            tokens = self.tokenize(list(texts))
        device = self._device()
        tokens = {k: v.to(device) for k, v in tokens.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.is_trainable):
            return self._text_features(tokens)


def _skip_projections(model: nn.Module, features: str) -> ExitStack:
    """A context in which an open_clip model's towers skip their projections (``features="pooled"``)."""
    stack = ExitStack()
    if features == "pooled":
        stack.enter_context(_unprojected(model.visual, "proj"))
        # CLIP keeps its text projection on the model, CustomTextCLIP on its text tower.
        text = model if hasattr(model, "text_projection") else model.text
        stack.enter_context(_unprojected(text, "text_projection"))
    return stack


class OpenClipBackbone(FeatureBackbone):
    """An open_clip model (``open_clip.create_model``) as a ``FeatureBackbone``.

    Args:
        model_name: an open_clip architecture (``"ViT-B-32"``, a name registered with
            ``open_clip.add_model_config``, or ``"hf-hub:<repo>"``).
        pretrained: an open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``), a local checkpoint
            path, or None for random weights.
        trainable: see ``FeatureBackbone``.
        features: ``"projected"`` (``encode_image``/``encode_text``) or ``"pooled"`` (the same with the
            towers' final projections skipped).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        trainable: bool = False,
        features: str = "projected",
    ) -> None:
        # create_clip: memelab's tiny architectures, and a local file through the checks of notebook 03's
        # loader (LoRA keys, DDP prefixes, logit_scale shape).
        model, _, _, tokenizer = create_clip(model_name, pretrained)
        cfg = model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        # open_clip's towers project to the config's embed_dim, but hf-hub models and custom text towers
        # do not expose it uniformly: one tiny forward reads both dims off the real outputs.
        model.eval()
        with torch.no_grad(), _skip_projections(model, features):
            image_dim = model.encode_image(torch.zeros(1, 3, size, size)).shape[-1]
            text_dim = model.encode_text(tokenizer([""])).shape[-1]
        super().__init__(
            model,
            image_dim=image_dim,
            text_dim=text_dim,
            image_size=size,
            mean=cfg["mean"],
            std=cfg["std"],
            context_length=tokenizer.context_length,
            trainable=trainable,
            interpolation=cfg.get("interpolation", "bicubic"),
            features=features,
        )
        self.tokenizer = tokenizer

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return {"input_ids": self.tokenizer(list(texts))}

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with _skip_projections(self.model, self.features):
            return self.model.encode_image(pixel_values)

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        with _skip_projections(self.model, self.features):
            return self.model.encode_text(tokens["input_ids"])


class HuggingFaceBackbone(FeatureBackbone):
    """Shared loading of a Hugging Face checkpoint: model, tokenizer and image normalisation.

    Subclasses name the model class and compute the features from its sub-modules directly (rather than
    ``get_image_features``, whose return type changed between transformers 4 and 5).

    Args:
        name_or_path: a Hub id or a folder written by ``save_pretrained``; the folder must hold the
            tokenizer files, and may hold ``preprocessor_config.json`` for the normalisation. Or a model
            already built (:meth:`from_config`), with ``tokenizer``.
        trainable: see ``FeatureBackbone``.
        features: ``"projected"`` or ``"pooled"`` (see the module docstring).
        tokenizer: the tokenizer of a model passed as ``name_or_path`` (read from the folder otherwise).

    Raises:
        ValueError: if ``features`` is unknown or the family cannot give it, or a built model comes
            without its tokenizer.
    """

    model_class: type[transformers.PreTrainedModel]
    #: Default ``context_length`` when the text model allows more positions than the family was trained on.
    max_context_length: int = 77
    #: The ``features`` this family can give.
    supported_features: tuple[str, ...] = FEATURES

    def __init__(
        self,
        name_or_path: str | transformers.PreTrainedModel,
        trainable: bool = False,
        features: str = "projected",
        tokenizer: transformers.PreTrainedTokenizerBase | None = None,
    ) -> None:
        check_features(features)
        if features not in self.supported_features:
            raise ValueError(
                f"features={features!r}: {type(self).__name__} gives only {self.supported_features}"
            )
        mean, std = CLIP_MEAN, CLIP_STD  # OpenAI CLIP's; BLIP and BLIP-2 reuse them
        if isinstance(name_or_path, transformers.PreTrainedModel):
            if tokenizer is None:
                raise ValueError("a model built from a config needs its tokenizer")
            model = name_or_path
        else:
            model = self.model_class.from_pretrained(name_or_path, **self._load_kwargs())
            tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
            try:
                processor = transformers.AutoImageProcessor.from_pretrained(name_or_path)
                mean, std = processor.image_mean, processor.image_std
            except OSError:
                pass  # a bare save_pretrained folder carries no processor: OpenAI's values
        config = model.config
        image_dim, text_dim = self._feature_dims(config, features)
        super().__init__(
            model,
            image_dim=image_dim,
            text_dim=text_dim,
            image_size=config.vision_config.image_size,
            mean=mean,
            std=std,
            context_length=min(self.max_context_length, self._text_positions(config)),
            trainable=trainable,
            features=features,
        )
        self.tokenizer = tokenizer

    @classmethod
    def from_config(
        cls,
        config: transformers.PretrainedConfig,
        tokenizer: transformers.PreTrainedTokenizerBase,
        trainable: bool = False,
        features: str = "projected",
    ) -> HuggingFaceBackbone:
        """A randomly initialised model of ``config`` (the real sizes, without downloading weights)."""
        return cls(cls.model_class(config), trainable, features, tokenizer)

    @staticmethod
    def _feature_dims(config: transformers.PretrainedConfig, features: str) -> tuple[int, int]:
        raise NotImplementedError  # (image_dim, text_dim) of ``features``

    @staticmethod
    def _load_kwargs() -> dict:
        return {}

    @staticmethod
    def _text_positions(config: transformers.PretrainedConfig) -> int:
        return getattr(config.text_config, "max_position_embeddings", None) or 512  # T5: relative positions

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        enc = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class HFClipBackbone(HuggingFaceBackbone):
    """Hugging Face ``CLIPModel``: the vision and text transformers' ``pooler_output`` (``"pooled"``: the
    final-norm CLS token and end-of-text token), or their ``visual_projection``/``text_projection``."""

    model_class = transformers.CLIPModel

    @staticmethod
    def _feature_dims(config: transformers.PretrainedConfig, features: str) -> tuple[int, int]:
        if features == "pooled":
            return config.vision_config.hidden_size, config.text_config.hidden_size
        return config.projection_dim, config.projection_dim

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixel_values).pooler_output
        return pooled if self.features == "pooled" else self.model.visual_projection(pooled)

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        ).pooler_output
        return pooled if self.features == "pooled" else self.model.text_projection(pooled)


class HFBlipBackbone(HuggingFaceBackbone):
    """BLIP's image-text contrastive (ITC) features from ``BlipForImageTextRetrieval``.

    Image: the ViT's CLS token; text: the unimodal text encoder's CLS token (no cross-attention to the
    image). ``"projected"`` passes them through ``vision_proj``/``text_proj``, exactly the vectors BLIP's ITC
    scores compare; ``"pooled"`` keeps them as they enter those projections (1024 and 768 for BLIP-large).
    """

    model_class = transformers.BlipForImageTextRetrieval
    max_context_length = 35  # BLIP's retrieval recipes truncate captions to 35 tokens

    @staticmethod
    def _feature_dims(config: transformers.PretrainedConfig, features: str) -> tuple[int, int]:
        if features == "pooled":
            return config.vision_config.hidden_size, config.text_config.hidden_size
        return config.image_text_hidden_size, config.image_text_hidden_size

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, 1 + P, D)
        cls = hidden[:, 0, :]
        return cls if self.features == "pooled" else self.model.vision_proj(cls)

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        hidden = self.model.text_encoder(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        ).last_hidden_state  # (B, L, D)
        cls = hidden[:, 0, :]
        return cls if self.features == "pooled" else self.model.text_proj(cls)


def _qformer_queries(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """BLIP-2's Q-Former query outputs ``(B, Q, Dq)`` for images (the ViT's patches, cross-attended)."""
    patches = model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, 1 + P, Dv)
    queries = model.query_tokens.expand(patches.shape[0], -1, -1)  # (B, Q, Dq)
    patch_mask = torch.ones(patches.shape[:-1], dtype=torch.long, device=patches.device)
    return model.qformer(
        query_embeds=queries, encoder_hidden_states=patches, encoder_attention_mask=patch_mask
    ).last_hidden_state


class HFBlip2Backbone(HuggingFaceBackbone):
    """BLIP-2's ITC features from ``Blip2ForImageTextRetrieval``.

    The Q-Former turns the frozen ViT's patches into ``num_query_tokens`` (32) query embeddings, and ITC
    scores an image by its best-matching query. A single image vector is needed here, so the L2-normalised
    query projections are averaged: ``(B, 32, 256) -> (B, 256)``. The text feature is ``text_projection`` of
    the Q-Former's text CLS token, as in ITC. ``"pooled"``: the query outputs averaged before the projection
    and the text CLS token as it enters it (both the Q-Former's width, 768).
    """

    model_class = transformers.Blip2ForImageTextRetrieval
    max_context_length = 35  # LAVIS's max_txt_len for BLIP-2 retrieval

    @staticmethod
    def _feature_dims(config: transformers.PretrainedConfig, features: str) -> tuple[int, int]:
        if features == "pooled":
            return config.qformer_config.hidden_size, config.qformer_config.hidden_size
        return config.image_text_hidden_size, config.image_text_hidden_size

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        query_out = _qformer_queries(self.model, pixel_values)  # (B, Q, Dq)
        if self.features == "pooled":
            return query_out.mean(dim=1)
        per_query = nn.functional.normalize(self.model.vision_projection(query_out), dim=-1)  # (B, Q, D)
        return per_query.mean(dim=1)

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        embeds = self.model.embeddings(input_ids=tokens["input_ids"])
        hidden = self.model.qformer(
            query_embeds=embeds, query_length=0, attention_mask=tokens.get("attention_mask")
        ).last_hidden_state  # (B, L, Dq)
        cls = hidden[:, 0, :]
        return cls if self.features == "pooled" else self.model.text_projection(cls)


class HFBlip2ModelBackbone(HuggingFaceBackbone):
    """BLIP-2's generative checkpoints (``Blip2Model``: ``Salesforce/blip2-flan-t5-xl``); no ITC heads, so
    ``features="pooled"`` only. Image: the Q-Former's query outputs averaged, ``(B, 32, 768) -> (B, 768)``, what
    ``language_projection`` hands the language model. Text: its only text encoder, the language model's: the
    hidden state after block ``text_layer`` (5, the layer Hate-CLIPper's BLIP-2 row names) of Flan-T5's encoder
    (of OPT's decoder), averaged over the caption's tokens, ``(B, L, 2048) -> (B, 2048)``.
    """

    model_class = transformers.Blip2Model
    supported_features = ("pooled",)
    #: The language model's hidden layer the text feature is read at (0: the token embeddings).
    text_layer: int = 5

    @staticmethod
    def _feature_dims(config: transformers.PretrainedConfig, features: str) -> tuple[int, int]:
        return config.qformer_config.hidden_size, config.text_config.hidden_size  # T5: d_model

    @staticmethod
    def _load_kwargs() -> dict:
        # flan-t5-xl's 3.9B parameters take 15.6 GB in float32, more than a T4 has: half on a GPU.
        return {"dtype": torch.float16} if torch.cuda.is_available() else {}

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _qformer_queries(self.model, pixel_values).mean(dim=1)

    def _text_features(self, tokens: TokenBatch) -> torch.Tensor:
        lm = self.model.language_model
        mask = tokens.get("attention_mask")
        mask = torch.ones_like(tokens["input_ids"]) if mask is None else mask
        encoder = lm.get_encoder() if self.model.config.use_decoder_only_language_model is False else lm
        hidden = encoder(
            input_ids=tokens["input_ids"], attention_mask=mask, output_hidden_states=True
        ).hidden_states[self.text_layer]  # (B, L, D)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1): the caption's tokens, not the padding
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


#: Hugging Face ``config.model_type`` -> the backbone class that reads it.
HF_FAMILIES: dict[str, type[HuggingFaceBackbone]] = {
    "clip": HFClipBackbone,
    "blip": HFBlipBackbone,
    "blip-2": HFBlip2Backbone,
}
#: BLIP-2 checkpoints share one ``model_type``; the generative ones (no ITC heads) are read by ``Blip2Model``.
_BLIP2_ITC_ARCHITECTURES = ("Blip2ForImageTextRetrieval", "Blip2TextModelWithProjection")


@dataclass(frozen=True)
class BackbonePreset:
    """A known-good backbone: the ``build_backbone`` name and its pretrained tag (open_clip only)."""

    name: str
    pretrained: str | None = None


#: Short names for the backbones the notebooks use.
BACKBONE_PRESETS: dict[str, BackbonePreset] = {
    "openclip-vit-b32-openai": BackbonePreset("open_clip:ViT-B-32", "openai"),
    "openclip-vit-b32-laion2b": BackbonePreset("open_clip:ViT-B-32", "laion2b_s34b_b79k"),
    "openclip-vit-l14-openai": BackbonePreset("open_clip:ViT-L-14", "openai"),
    "hf-clip-vit-b32": BackbonePreset("hf:openai/clip-vit-base-patch32"),
    "hf-clip-vit-l14": BackbonePreset("hf:openai/clip-vit-large-patch14"),
    "blip-itm-base-coco": BackbonePreset("hf:Salesforce/blip-itm-base-coco"),
    "blip-itm-large-coco": BackbonePreset("hf:Salesforce/blip-itm-large-coco"),
    "blip2-itm-vit-g": BackbonePreset("hf:Salesforce/blip2-itm-vit-g"),
    "blip2-flan-t5-xl": BackbonePreset("hf:Salesforce/blip2-flan-t5-xl"),
}


def hf_family(config: transformers.PretrainedConfig) -> type[HuggingFaceBackbone]:
    """The backbone class that reads a Hugging Face checkpoint of ``config``.

    Raises:
        ValueError: if its ``model_type`` is not CLIP, BLIP or BLIP-2.
    """
    if config.model_type not in HF_FAMILIES:
        raise ValueError(f"hf model_type must be one of {sorted(HF_FAMILIES)}, got {config.model_type!r}")
    if config.model_type == "blip-2" and not set(config.architectures or ()) & set(_BLIP2_ITC_ARCHITECTURES):
        return HFBlip2ModelBackbone
    return HF_FAMILIES[config.model_type]


def build_backbone(
    name: str, pretrained: str | None = None, trainable: bool = False, features: str = "projected"
) -> FeatureBackbone:
    """Builds a ``FeatureBackbone`` from a preset or a prefixed name.

    Args:
        name: a key of ``BACKBONE_PRESETS``, ``"open_clip:<model>"``, or ``"hf:<hub id or local folder>"``
            (CLIP, BLIP or BLIP-2, told apart by ``config.model_type``).
        pretrained: for open_clip, a pretrained tag or checkpoint path (None: random init, or the preset's
            tag); Hugging Face weights come with the id, so it must be None for ``hf:``.
        trainable: False freezes the towers (see ``FeatureBackbone``).
        features: ``"projected"`` or ``"pooled"`` (see the module docstring).

    Returns:
        The backbone.

    Raises:
        ValueError: if the prefix or the Hugging Face model type is unknown, ``pretrained`` is given
            for an ``hf:`` name, or the family cannot give ``features``.
    """
    if name in BACKBONE_PRESETS:
        preset = BACKBONE_PRESETS[name]
        name, pretrained = preset.name, pretrained if pretrained is not None else preset.pretrained
    prefix, sep, rest = name.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"backbone name must be a preset {sorted(BACKBONE_PRESETS)} or 'open_clip:<model>' or "
            f"'hf:<id>', got {name!r}"
        )
    if prefix == "open_clip":
        return OpenClipBackbone(rest, pretrained=pretrained, trainable=trainable, features=features)
    if prefix == "hf":
        if pretrained is not None:
            raise ValueError(f"pretrained={pretrained!r} is for open_clip; an hf: id carries its own weights")
        family = hf_family(transformers.AutoConfig.from_pretrained(rest))
        return family(rest, trainable=trainable, features=features)
    raise ValueError(f"backbone prefix must be 'open_clip' or 'hf', got {prefix!r} in {name!r}")

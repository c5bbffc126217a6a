"""A classification head over a CLIP image embedding and text embedding (one output per class: the seven
merged classes by default, or the classes of the shards a recipe reads), and the CLIP model that carries it.

The head reads the two embeddings as a sequence of two tokens, ``[image, text]``, and lets a small
transformer encoder (Vaswani et al., 2017, arXiv:1706.03762; pre-LN as in Xiong et al., 2020, "On Layer
Normalization in the Transformer Architecture", arXiv:2002.04745) mix them before classifying. A learned
modality embedding tells the two tokens apart, as BERT's token-type embeddings do (Devlin et al., 2019,
arXiv:1810.04805). The point over an MLP on ``concat(image, text)``: attention between the two tokens can
model their interaction (a caption that contradicts its picture), which a harmful-meme label often hinges
on (Kiela et al., 2020, "The Hateful Memes Challenge", arXiv:2005.04790).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.data.taxonomy import NUM_CLASSES

__all__ = ["TransformerClassifierHead", "CLIPClassifier", "clip_embed_dim"]

_NUM_MODALITIES = 2  # image token, text token


class TransformerClassifierHead(nn.Module):
    """Two-token transformer encoder over ``[image, text]``, mean-pooled, then a linear classifier.

    Parameters: per encoder layer ``4 D^2 + 4 D`` (attention) ``+ 2 D F + F + D`` (feed-forward)
    ``+ 4 D`` (two LayerNorms); plus ``2 D`` (final LayerNorm), ``2 D`` (modality embedding) and
    ``D C + C`` (classifier). About 6.3M for ``D = 512``, ``F = 2048``, 2 layers, 7 classes.

    Args:
        embed_dim: CLIP embedding size ``D`` (both inputs).
        num_classes: number of classes ``C``.
        num_layers: encoder layers.
        num_heads: attention heads; must divide ``embed_dim``.
        dim_feedforward: feed-forward width ``F``; defaults to ``4 * embed_dim``.
        dropout: dropout inside the encoder layers.

    Raises:
        ValueError: if ``num_heads`` does not divide ``embed_dim`` or a size is not positive.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = NUM_CLASSES,
        num_layers: int = 2,
        num_heads: int = 8,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if min(embed_dim, num_classes, num_layers, num_heads) < 1:
            raise ValueError("embed_dim, num_classes, num_layers and num_heads must be positive")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.modality_embedding = nn.Parameter(torch.empty(_NUM_MODALITIES, embed_dim))
        nn.init.trunc_normal_(self.modality_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            dim_feedforward=4 * embed_dim if dim_feedforward is None else dim_feedforward,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-LN layers leave the residual stream unnormalised: the final LayerNorm is part of the design.
        # Nested tensors only help with padding masks, which two always-present tokens never need.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Classifies image-text pairs.

        Args:
            image_emb: ``(batch, D)`` image embeddings.
            text_emb: ``(batch, D)`` text embeddings.

        Returns:
            ``(batch, num_classes)`` logits.

        Raises:
            ValueError: if the embeddings are not both ``(batch, D)``.
        """
        if image_emb.shape != text_emb.shape or image_emb.dim() != 2 or image_emb.shape[1] != self.embed_dim:
            raise ValueError(
                f"expected two (batch, {self.embed_dim}) embeddings, got {tuple(image_emb.shape)} "
                f"and {tuple(text_emb.shape)}"
            )
        tokens = torch.stack([image_emb, text_emb], dim=1)  # (batch, 2, D)
        tokens = tokens + self.modality_embedding.to(tokens.dtype)
        tokens = self.encoder(tokens)  # (batch, 2, D)
        return self.classifier(tokens.mean(dim=1))  # (batch, C)


def clip_embed_dim(clip_model: nn.Module) -> int:
    """The joint embedding size ``D`` of an open_clip model (``visual.output_dim``).

    Raises:
        ValueError: if the model's image tower does not expose ``output_dim``.
    """
    output_dim = getattr(getattr(clip_model, "visual", None), "output_dim", None)
    if output_dim is None:
        raise ValueError(f"cannot read the embedding size of {type(clip_model).__name__}; pass embed_dim")
    return int(output_dim)


class CLIPClassifier(nn.Module):
    """An open_clip model plus a :class:`TransformerClassifierHead` on its normalised embeddings.

    One forward gives what a recipe needs for a contrastive loss (Radford et al., 2021, CLIP; masked to
    the pairs that truly match) and a cross-entropy on the class logits: the head reads the same
    L2-normalised features the contrastive loss compares, so both losses shape one embedding space.

    Args:
        clip_model: an open_clip ``CLIP`` (possibly with LoRA adapters, see ``nbhelpers.lora``).
        num_classes: number of classes.
        embed_dim: embedding size; read from ``clip_model.visual.output_dim`` when None.
        **head_kwargs: passed to :class:`TransformerClassifierHead` (``num_layers``, ``num_heads``, ...).

    Raises:
        ValueError: if ``embed_dim`` is None and cannot be read from the model.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        num_classes: int = NUM_CLASSES,
        embed_dim: int | None = None,
        **head_kwargs,
    ) -> None:
        super().__init__()
        self.clip = clip_model
        embed_dim = clip_embed_dim(clip_model) if embed_dim is None else embed_dim
        self.head = TransformerClassifierHead(embed_dim, num_classes, **head_kwargs)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encodes and classifies a batch of pairs.

        Args:
            images: ``(batch, 3, H, W)`` preprocessed images.
            tokens: ``(batch, context_length)`` token ids.

        Returns:
            ``image_features`` and ``text_features`` ``(batch, D)``, L2-normalised; ``logit_scale``, the
            scalar ``exp(model.logit_scale)``; ``logits`` ``(batch, num_classes)``.
        """
        image_features = F.normalize(self.clip.encode_image(images), dim=-1)
        text_features = F.normalize(self.clip.encode_text(tokens), dim=-1)
        return {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.clip.logit_scale.exp(),
            "logits": self.head(image_features, text_features),
        }

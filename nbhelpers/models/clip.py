"""CLIP models from open_clip: architecture configs as data, and one way to build and load them.

CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision",
arXiv:2103.00020) as implemented by open_clip (Ilharco et al., 2021; Cherti et al., 2023, "Reproducible
scaling laws for contrastive language-image learning", arXiv:2212.07143).

memelab's tiny architectures live in ``model_configs/*.json`` in open_clip's own format and are registered
with open_clip's registry, so every open_clip entry point (``create_model``, ``get_tokenizer``,
``python -m open_clip_train.main --model memelab-tiny-vit``) accepts their names.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import open_clip
import torch
from torch import nn

__all__ = [
    "MODEL_CONFIG_DIR",
    "TINY_VIT",
    "TINY_RN",
    "PRECISIONS",
    "register_model_configs",
    "list_pretrained_tags",
    "load_clip_state_dict",
    "create_clip",
    "clip_image_size",
    "quiet_random_init",
]

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
#: A ViT CLIP small enough for a CPU forward in milliseconds (64 px, 8 px patches, 2 + 2 layers).
TINY_VIT = "memelab-tiny-vit"
#: A ModifiedResNet CLIP of the same scale (64 px, one bottleneck per stage, attention pooling).
TINY_RN = "memelab-tiny-rn"
#: Precisions open_clip's ``create_model`` understands.
PRECISIONS = ("fp32", "fp16", "bf16", "amp", "amp_bf16", "amp_bfloat16", "pure_fp16", "pure_bf16")

_DDP_PREFIX = "module."


def register_model_configs() -> None:
    """Adds ``MODEL_CONFIG_DIR`` to open_clip's model registry. Idempotent (a second call does nothing)."""
    if not all(name in open_clip.list_models() for name in _memelab_model_names()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def _memelab_model_names() -> list[str]:
    return sorted(path.stem for path in MODEL_CONFIG_DIR.glob("*.json"))


def list_pretrained_tags(model_name: str) -> list[str]:
    """open_clip's pretrained tags for ``model_name`` (e.g. ``laion2b_s34b_b79k`` for ``ViT-B-32``)."""
    return open_clip.list_pretrained_tags_by_model(model_name)


def load_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a CLIP state dict from a local file, whatever wrote it.

    Accepts a bare ``state_dict`` (``torch.save(model.state_dict())``), a ``.safetensors`` file, or an
    ``open_clip_train`` checkpoint: a dict with ``state_dict``, ``epoch``, ``name``, ``optimizer`` whose
    keys start with ``module.`` when it was saved from DistributedDataParallel; the prefix is stripped.
    ``torch.load`` runs with ``weights_only=True``: a checkpoint is data, never code.

    Args:
        path: the file.

    Returns:
        parameter name -> tensor, without any ``module.`` prefix.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        checkpoint = load_file(str(path), device="cpu")
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or a dict with 'state_dict')")
    # Strip the DDP prefix key by key: open_clip strips 7 characters if only the first key starts with it.
    return {k.removeprefix(_DDP_PREFIX): v for k, v in checkpoint.items()}


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def quiet_random_init() -> Iterator[None]:
    """Drops open_clip's "No pretrained weights loaded" warning inside the block.

    open_clip logs it on the root logger for every random initialisation; it is false when a local file is
    loaded right after, and noise when a model is only built to be counted.
    """
    log_filter = _DropRandomInitWarning()
    logging.getLogger().addFilter(log_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(log_filter)


def _load_local_weights(model: nn.Module, model_name: str, path: str | os.PathLike) -> None:
    state_dict = load_clip_state_dict(path)
    if any("lora_" in key or ".base_layer." in key for key in state_dict):
        raise ValueError(
            f"{path} holds LoRA adapter weights; save the model after nbhelpers.lora.merge_lora(model) "
            "so that its keys are those of a plain open_clip model"
        )
    # Scalar-vs-(1,) logit_scale differs between open_clip versions; reshape as open_clip does.
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in state_dict and isinstance(own, torch.Tensor):
            state_dict[key] = state_dict[key].reshape(own.shape)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match the architecture {model_name!r}: {error}") from error


def create_clip(
    model_name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """Builds an open_clip model with its image transforms and tokenizer.

    Args:
        model_name: an open_clip architecture (``ViT-B-32``, ``RN50``, ...), a memelab tiny one
            (``memelab-tiny-vit``, ``memelab-tiny-rn``), or an open_clip schema name (``hf-hub:org/repo``).
        pretrained: None for random initialisation; an open_clip tag (``laion2b_s34b_b79k``; downloaded
            into ``cache_dir``); or a local file: a state dict, a ``.safetensors`` file, or an
            ``open_clip_train`` checkpoint (``module.`` prefixes from DDP are stripped).
        device: where the model lives.
        precision: one of :data:`PRECISIONS`, as open_clip understands it.
        cache_dir: download cache for pretrained tags.

    Returns:
        ``(model, preprocess_train, preprocess_val, tokenizer)``: the tokenizer maps a list of ``B`` strings
        to ``(B, context_length)`` token ids; the transforms map a PIL image to ``(3, size, size)``.

    Raises:
        ValueError: on an unknown architecture or precision, on a ``pretrained`` that is neither a file nor
            a tag of ``model_name`` (the message lists the allowed tags), or on a file whose weights do not
            fit the architecture.
    """
    register_model_configs()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    if not has_schema and model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown model {model_name!r}: use one of memelab's {_memelab_model_names()} "
            "or an architecture from open_clip.list_models()"
        )

    tag = None
    local_file = None
    if pretrained is not None and not has_schema:
        if os.path.isfile(pretrained):
            local_file = pretrained
        elif open_clip.get_pretrained_cfg(model_name, str(pretrained)):
            tag = str(pretrained)
        else:
            raise ValueError(
                f"pretrained={str(pretrained)!r} is neither an existing file nor a pretrained tag of "
                f"{model_name!r}; allowed tags: {list_pretrained_tags(model_name) or 'none'}"
            )

    # open_clip warns "no pretrained weights loaded" whenever no tag is given: wrong when the random
    # init is asked for, or when the weights come from a local file next.
    quiet = quiet_random_init() if tag is None else contextlib.nullcontext()
    with quiet:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=tag, device=device, precision=precision, cache_dir=cache_dir
        )
    if local_file is not None:
        _load_local_weights(model, model_name, local_file)
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    return model, preprocess_train, preprocess_val, tokenizer


def clip_image_size(model: nn.Module) -> int:
    """The side in pixels of the images an open_clip model's image tower takes.

    Args:
        model: an open_clip CLIP (anything with a ``visual`` tower); a tower without ``image_size``
            counts as 224, open_clip's default.
    """
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def vision_patch_size(model_name: str) -> int | None:
    """The ViT patch size of an open_clip architecture, from its config (no model is built).

    Returns:
        The patch size, or None for a ResNet image tower or an architecture open_clip does not list
        (a hub model, checked when it loads).
    """
    register_model_configs()
    config = open_clip.get_model_config(model_name) or {}
    patch = config.get("vision_cfg", {}).get("patch_size")
    return int(patch) if patch else None

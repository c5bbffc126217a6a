"""CLIP contrastive training or fine-tuning of both towers, masked to the valid pairs.

CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision")
pulls each image towards its own caption and away from the other captions of the batch. Only pairs
whose text truly describes the picture (``valid_pair``: class 0 of the seven merged classes, or the
valid-pair classes a label set of the user's own names) are positives here: a satirical or hateful
caption is not a description of its picture. Since the masked loss ignores every other sample,
``valid_only=True`` (the default) trains on the valid-pair classes alone, which gives exactly the same
gradient per valid pair as masking inside a larger batch, at a fraction of the cost.

Evaluation: image-to-text and text-to-image recall@1/5/10 over the valid pairs of each eval split, and
zero-shot classification from prompts: the seven classes' prompts (:data:`CLASS_PROMPTS`) on real data,
or for a label set of the user's own one generic prompt per class (:data:`GENERIC_PROMPT`, "a meme about
{name}"); on the synthetic benchmark, colour prompts ("a red shape") scored against the picture's true
colour, which is what a CLIP trained on it should have learned to see.

The trained weights are exported as a plain open_clip state dict, ``runs/<run_name>/clip_weights.pt``,
which :func:`nbhelpers.models.clip.create_clip` (and every other recipe's ``pretrained``) loads.

**Accumulation** (``grad_accum_steps > 1``): with ``accumulate_loss="batch"`` (the default) the loss of an
optimiser step is the loss of its whole batch, every valid pair a negative of every other, and its
gradient (``logit_scale``'s too) the one-batch gradient (:mod:`nbhelpers.train.accumulation`); exact
for open_clip's ViTs, which have no BatchNorm (dropout, when a config has it, is replayed). ``micro``
contrasts each micro-batch alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.sources.synthetic import COLOUR_NAMES
from nbhelpers.data.taxonomy import SEVEN_CLASSES, LabelSet, label_set_of
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.losses import masked_clip_loss
from nbhelpers.metrics.retrieval import recall_at_k, zero_shot_accuracy
from nbhelpers.models.clip import clip_image_size, create_clip, vision_patch_size
from nbhelpers.train.accumulation import BatchLoss, step_for
from nbhelpers.train.engine import fit
from nbhelpers.train.identity import check_run_name, local_inputs
from nbhelpers.train.recipes.config import RecipeConfig, accumulate_loss_param, manifests, train_spec
from nbhelpers.train.recipes.data import eval_batches, train_data
from nbhelpers.train.recipes.registry import Recipe, TrainedRun
from nbhelpers.train.recipes.results import RunMetrics, RunResult, history_seconds
from nbhelpers.train.run_dir import RunNotFoundError, atomic_open
from nbhelpers.train.run_lock import locks_its_run

RECIPE_NAME = "clip"
WEIGHTS_FILE = "clip_weights.pt"
RUN_PREFIX = "run:"

#: Zero-shot prompts for the seven classes on real data (one list of templates per class).
CLASS_PROMPTS: dict[str, list[str]] = {
    "True/Neutral": ["a photo with an accurate caption", "a news photo"],
    "Satire/Parody": ["a satirical meme", "a parody picture"],
    "Misleading Content": ["a misleading picture", "a photo taken out of context"],
    "Imposter Content": ["a fake account impersonating someone", "an imposter post"],
    "False Connection": ["a headline that does not match the picture", "clickbait"],
    "Manipulated Content": ["a photoshopped image", "a manipulated photo"],
    "Hate": ["a hateful meme", "a meme attacking a group of people"],
}
#: The zero-shot prompt of each class of a label set of the user's own (no hand-written prompts for it).
GENERIC_PROMPT = "a meme about {name}"


def class_prompts(labels: LabelSet) -> list[list[str]]:
    """The zero-shot prompts of each class of ``labels``, in label order: :data:`CLASS_PROMPTS` for the
    seven merged classes, else :data:`GENERIC_PROMPT` filled with each class name."""
    if all(name in CLASS_PROMPTS for name in labels.names):
        return [CLASS_PROMPTS[name] for name in labels.names]
    return [[GENERIC_PROMPT.format(name=name)] for name in labels.names]


class StartsFromClip:
    """A config whose ``pretrained`` may name a CLIP run (``run:<name>``, notebook 03's exported weights)."""

    def pretrained_weights(self) -> str | None:
        """``pretrained`` resolved (``run:<name>`` -> that CLIP run's weights file); never trains."""
        return resolve_pretrained(
            self.pretrained,
            runs_dir=self.runs_dir,
            data_dir=self.data_dir,
            preset=self.preset,
            sources=self.sources,
        )

    def weight_inputs(self) -> dict[str, Any]:
        """The resolved weights file, by content (a tag is in the config already)."""
        return local_inputs(pretrained=self.pretrained_weights())


@dataclass
class ClipConfig(StartsFromClip, RecipeConfig):
    """Parameters of ``03_train_clip``."""

    SECTION: ClassVar[str] = "clip"
    RECIPE: ClassVar[str] = RECIPE_NAME
    WEIGHT_SOURCES: ClassVar[tuple[str, ...]] = ("pretrained",)

    model: str = param("memelab-tiny-vit", help="open_clip architecture (ViT-B-32 on a T4)")
    pretrained: str = param("", help="open_clip tag or local weights to fine-tune from; empty: from scratch")
    valid_only: bool = param(True, help="train on the valid pairs only (the masked loss ignores the rest)")
    image_size: int | None = param(None, min=16, help="None: the model's own input size")
    accumulate_loss: str = accumulate_loss_param("batch")

    def check(self) -> None:
        super().check()
        check_patch_divides(self.model, self.image_size)


def check_patch_divides(model: str, image_size: int | None) -> None:
    """Checks that ``model``'s ViT patches tile an ``image_size`` image (before any data is read).

    Raises:
        ConfigError: naming ``image_size``, the patch size and the nearest sizes that work.
    """
    patch = vision_patch_size(model)
    if image_size and patch and image_size % patch:
        low, high = image_size // patch * patch, (image_size // patch + 1) * patch
        raise ConfigError(
            f"image_size: {image_size} is not a multiple of the ViT's patch size {patch} ({model}); "
            f"e.g. {low or high} or {high}"
        )


def build_model(config: ClipConfig, weights: str | None = None) -> tuple[nn.Module, Any, int]:
    """The open_clip model (with ``weights``: a tag or file, as :func:`resolve_pretrained` gives them),
    its tokenizer and its input image size."""
    model, _, _, tokenizer = create_clip(config.model, pretrained=weights)
    return model, tokenizer, config.image_size or clip_image_size(model)


def encode(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Both towers' features ``(B, D)``, the temperature and the mask of a (micro-)batch (through
    ``model(...)`` so DDP syncs gradients)."""
    image_features, text_features, logit_scale = model(batch["image"], batch["tokens"])[:3]
    return {
        "image": image_features,
        "text": text_features,
        "logit_scale": logit_scale.reshape(()),
        "valid_pair": batch["valid_pair"],
    }


def contrastive_loss(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked contrastive loss of the batch's features (of :func:`encode`)."""
    loss = masked_clip_loss(
        features["image"], features["text"], features["logit_scale"], features["valid_pair"]
    )
    return loss, {
        "logit_scale": float(features["logit_scale"].item()),
        "valid_pairs": float(features["valid_pair"].sum().item()),
    }


#: Under accumulation (``accumulate_loss="batch"``) the loss of the whole batch.
BATCH_LOSS = BatchLoss(encode, contrastive_loss)


def step(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked contrastive loss of one batch."""
    return BATCH_LOSS.step(model, batch)


@torch.no_grad()
def embed(model: nn.Module, data: TensorSplit, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text embeddings ``(N, D)`` of a split in memory."""
    model.eval()
    device = next(model.parameters()).device
    images, texts = [], []
    for batch in eval_batches(data, batch_size, CLIP_MEAN, CLIP_STD):
        images.append(F.normalize(model.encode_image(batch["image"].to(device)).float(), dim=-1).cpu())
        texts.append(F.normalize(model.encode_text(batch["tokens"].to(device)).float(), dim=-1).cpu())
    return torch.cat(images), torch.cat(texts)


def evaluate_split(
    model: nn.Module, tokenizer, data: TensorSplit, labels: LabelSet = SEVEN_CLASSES
) -> dict[str, Any]:
    """Retrieval over the split's valid pairs and zero-shot accuracy (see the module docstring).

    Args:
        labels: the classes of the split's shards (the zero-shot targets off the synthetic benchmark).
    """
    image_emb, text_emb = embed(model, data)
    valid = data.valid_pair
    report: dict[str, Any] = {"num_pairs": int(valid.sum())}
    if valid.sum() > 1:
        report.update(recall_at_k(image_emb[valid], text_emb[valid], ks=(1, 5, 10)))
    device = next(model.parameters()).device
    colours = [m.get("attributes", {}).get("image", {}).get("colour") for m in (data.meta or [])]
    if colours and all(colours):
        prompts = [[f"a {c} shape", f"something {c}"] for c in COLOUR_NAMES]
        targets = torch.tensor([COLOUR_NAMES.index(c) for c in colours])
        report["zero_shot_target"] = "picture colour (7 colours)"
    else:
        prompts = class_prompts(labels)
        targets = data.labels
        report["zero_shot_target"] = f"{len(labels)} classes"
    with torch.no_grad():
        prompt_emb = torch.stack(
            [
                F.normalize(
                    F.normalize(model.encode_text(tokenizer(p).to(device)).float(), dim=-1).mean(0), dim=-1
                )
                for p in prompts
            ]
        ).cpu()
    report["zero_shot_accuracy"] = zero_shot_accuracy(image_emb, prompt_emb, targets)
    return report


def export_weights(model: nn.Module, path: Path) -> Path:
    """Saves the open_clip state dict atomically to ``path`` (loadable as ``pretrained=path``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


@locks_its_run
def run(config: ClipConfig | dict[str, Any]) -> RunResult:
    """Trains CLIP contrastively, evaluates retrieval and zero-shot, exports the weights."""
    config = ClipConfig.coerce(config)
    found = manifests(config)
    weights = config.pretrained_weights()
    labels = label_set_of(found)
    if config.valid_only and not labels.valid_pair:
        raise ConfigError(
            f"valid_only: the shards' classes {list(labels.names)} mark no class as a valid pair (an image "
            "with the text that truly belongs to it): nothing to train on; set valid_only=False"
        )
    config.bind(found)
    set_seed(config.seed)  # the initial weights are a function of the seed, whatever ran before
    model, tokenizer, size = build_model(config, weights)
    data = train_data(
        config, found, size, tokenizer, labels=sorted(labels.valid_pair) if config.valid_only else None
    )
    spec = train_spec(config, data.steps_per_epoch, betas=(0.9, 0.98), eps=1e-6)
    history = fit(
        model, step_for(BATCH_LOSS, config.accumulate_loss), data.batches, spec, config=config.to_dict()
    )
    if PartialState().is_main_process:  # every process holds the same weights; one writes them
        export_weights(model, config.run_dir / WEIGHTS_FILE)
    splits = {
        split: evaluate_split(
            model, tokenizer, load_split(found, split, size, tokenizer, limit=config.limit), labels
        )
        for split in config.eval_split_list
    }
    primary = config.eval_split_list[0]
    keys = [
        k
        for k in (
            "recall_i2t@1",
            "recall_i2t@5",
            "recall_i2t@10",
            "recall_t2i@1",
            "recall_t2i@5",
            "recall_t2i@10",
            "zero_shot_accuracy",
        )
        if k in splits[primary]
    ]
    metrics = RunMetrics(
        recipe="clip",
        notebook="03_train_clip",
        method="clip",
        modality="multimodal",
        task="ssl",
        split=primary,
        metrics={"recall_at_1": splits[primary].get("recall_i2t@1"), **{k: splits[primary][k] for k in keys}},
        num_samples=data.num_samples,
        epochs=config.epochs,
        train_seconds=history_seconds(history),
        extra={
            "model": config.model,
            "weights": str(config.run_dir / WEIGHTS_FILE),
            "splits": splits,
        },
    ).write(config.run_dir)
    extra = {"model": model, "tokenizer": tokenizer, "image_size": size, "config": config.to_dict()}
    return RunResult(config.run_dir, metrics, history, extra=extra)


def resolve_pretrained(
    pretrained: str | None,
    *,
    runs_dir: str | os.PathLike = "runs",
    data_dir: str | os.PathLike = "data/shards",
    preset: str = "demo",
    sources: str = "synthetic",
) -> str | None:
    """Maps ``"run:<name>"`` to that CLIP run's exported weights; never trains.

    Anything else (an open_clip tag, a file path) passes through unchanged; ``""`` becomes None. This is
    how the demo presets of 06 and 07 start from the small CLIP that 03 trains on the synthetic benchmark:
    ``run:clip`` names 03's run of the same preset and data (see :func:`run_weights_path`).

    Args:
        pretrained: ``run:<name>``, an open_clip tag, a weights file, or empty.
        runs_dir: the folder holding the runs.
        data_dir: the shards ``run:clip`` was trained on.
        preset: the preset ``run:clip`` was trained with.
        sources: the sources ``run:clip`` was trained on.

    Raises:
        RunNotFoundError: the run (or its exported weights) is missing, naming what makes it.
    """
    weights = run_weights_path(pretrained, runs_dir, data_dir=data_dir, preset=preset, sources=sources)
    if weights is None:
        return pretrained or None
    if not weights.is_file():
        name = str(pretrained)[len(RUN_PREFIX) :]
        named = "" if name == RECIPE_NAME and not (Path(runs_dir) / name).is_dir() else f" run_name={name}"
        raise RunNotFoundError(
            weights,
            f"notebook 03_train_clip (preset {preset!r}), or: python -m nbhelpers.train clip preset={preset} "
            f"data_dir={data_dir} sources={sources} runs_dir={runs_dir}{named}",
            what=f"the CLIP weights that pretrained={pretrained!r} names,",
        )
    return str(weights)


def run_weights_path(
    pretrained: str | None,
    runs_dir: str | os.PathLike = "runs",
    *,
    data_dir: str | os.PathLike = "data/shards",
    preset: str = "demo",
    sources: str = "synthetic",
) -> Path | None:
    """Where the CLIP run that ``pretrained = "run:<name>"`` names exports its weights, whether or not
    they exist yet; None for anything else (a tag, a path, empty).

    ``run:<name>`` is the run folder ``runs_dir/<name>``. ``run:clip``, when no folder has that name, is
    notebook 03's run of ``preset`` on ``sources`` under ``data_dir``: the folder its fingerprint names
    (``runs_dir/clip-<fingerprint>``), so it follows the preset and the data, never a stale run.
    """
    if not pretrained or not str(pretrained).startswith(RUN_PREFIX):
        return None
    name = check_run_name(str(pretrained)[len(RUN_PREFIX) :], "pretrained")
    folder = Path(runs_dir) / name
    if name == RECIPE_NAME and not folder.is_dir():
        default = ClipConfig.from_params(
            preset, runs_dir=str(runs_dir), data_dir=str(data_dir), sources=sources
        )
        folder = default.planned_run_dir(manifests(default))
    return folder / WEIGHTS_FILE


def load_trained(run_dir: str | os.PathLike) -> TrainedRun:
    """The trained CLIP of a run, from its exported weights (``clip_weights.pt``); never trains.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the open_clip CLIP, with parts ``"clip"`` (the same
        model) and ``"image_tower"`` (``clip.visual``).

    Raises:
        RunNotFoundError: if the run, its config.json or its exported weights are missing.
    """
    config = ClipConfig.load(run_dir, RECIPE.how)
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise RunNotFoundError(weights, RECIPE.how, what="weights file")
    model, _, _, tokenizer = create_clip(config.model, pretrained=str(weights))
    model.eval()
    return TrainedRun(
        recipe=RECIPE.name, run_dir=Path(run_dir), config=config, model=model, tokenizer=tokenizer,
        image_size=config.image_size or clip_image_size(model), mean=CLIP_MEAN, std=CLIP_STD,
        parts={"clip": model, "image_tower": model.visual},
    )  # fmt: skip


def display_name(metrics: dict[str, Any]) -> str:
    """``CLIP contrastive (<model>)``: a local weights folder reads as its name."""
    model = Path(str(metrics.get("model", ""))).name
    return f"CLIP contrastive ({model})" if model else "CLIP contrastive"


def similarity_examples(result: RunResult, split: str = "test", n: int = 8) -> dict[str, Any]:
    """The first ``n`` valid pairs of ``split``: images (uint8), captions and their similarity matrix."""
    config = ClipConfig.coerce(result.extra["config"])
    model, tokenizer = result.extra["model"], result.extra["tokenizer"]
    size = result.extra["image_size"]
    data = load_split(manifests(config), split, size, tokenizer, limit=config.limit)
    pairs = data.select(data.valid_pair)
    pairs = pairs.select(torch.arange(len(pairs)) < n)
    image_emb, text_emb = embed(model, pairs)
    return {"images": pairs.images, "texts": pairs.texts, "similarity": (image_emb @ text_emb.T).numpy()}


RECIPE = Recipe(
    name="clip",
    config_class=ClipConfig,
    notebook="03_train_clip",
    run=run,
    load_trained=load_trained,
    predict_run=None,
    display_name=display_name,
)

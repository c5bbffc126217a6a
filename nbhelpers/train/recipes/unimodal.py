"""Unimodal baselines: a BERT text classifier, a ResNet image classifier, and their late fusion.

Kiela et al. (2020, "The Hateful Memes Challenge") built their benchmark so that unimodal models fail:
a meme's meaning lies in how its picture and its text combine. This recipe trains the two unimodal
baselines of that paper on the same classification task (the seven merged classes, or the shards' own
label set):

* ``text``: a BERT-family sequence classifier (Devlin et al., 2019) on the caption, tokenised inside the
  training step by the model's own Hugging Face tokenizer (``bert-base-uncased`` on a T4; in the demo a
  2-layer BERT trained from scratch on the ``bert-base-uncased`` vocabulary, ``tiny-bert``);
* ``image``: a torchvision ResNet (He et al., 2016) on the picture: ``image_model`` ResNet-18 (demo) or
  ResNet-152, the image baseline of Kiela et al. (2020);
* ``late_fusion``: ``argmax(p_text + p_image)`` of the two trained models' test probabilities. It has no
  training of its own: its ``metrics.json`` is computed from the two runs' saved predictions.

Each model is one run: ``runs/<run_name>_text/``, ``runs/<run_name>_image/`` and
``runs/<run_name>_late_fusion/`` (``run_name`` defaults to ``unimodal``), each with ``metrics.json`` and
``predictions_<split>.npz``; the two trained ones also hold checkpoints and ``history.json`` from the
engine, so a killed run resumes and a finished one is only re-evaluated.

On the synthetic benchmark the label is ``(picture colour - caption colour) mod 7``, independent of each
modality alone, so all three stay at chance (1/7) on held-out data by construction: the premise every
multimodal notebook after this one starts from. On shards of another label set, chance is 1/C for its C
classes (``chance_top1`` in ``metrics.json``).

``python -m nbhelpers.train unimodal model=text epochs=3`` runs it from the command line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from accelerate import PartialState
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.taxonomy import CLASSES, label_set_of
from nbhelpers.metrics.classification import classification_report
from nbhelpers.models.ssl import IMAGENET_MEAN, IMAGENET_STD, RESNETS
from nbhelpers.models.unimodal import (
    MINILM_ID,
    ImageClassifier,
    TextClassifier,
    label_maps,
    late_fusion,
    local_minilm_path,
)
from nbhelpers.train.engine import fit
from nbhelpers.train.identity import bind_run, file_input, local_inputs
from nbhelpers.train.recipes.base import load_run_weights
from nbhelpers.train.recipes.config import RecipeConfig, manifests, train_spec
from nbhelpers.train.recipes.data import TrainData, eval_batches, train_data
from nbhelpers.train.recipes.registry import Recipe, TrainedRun
from nbhelpers.train.recipes.results import (
    RunMetrics,
    RunResult,
    class_task,
    headline,
    history_seconds,
    read_metrics,
    run_class_names,
    split_summary,
    topk_ks,
)
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint
from nbhelpers.train.run_lock import locks_its_run

#: What ``model`` may ask for: ``both`` trains text and image, then fuses them.
MODELS = ("both", "text", "image")
#: The three runs, in the order they are made.
KINDS = ("text", "image", "late_fusion")
#: ``text_model`` value for a small BERT trained from scratch (CPU demo, tests).
TINY_BERT = "tiny-bert"
#: The architecture of ``tiny-bert``: BERT's layout at a size that trains on a CPU in seconds.
TINY_BERT_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
}
NOTEBOOK = "02_unimodal_baselines"


@dataclass
class UnimodalConfig(RecipeConfig):
    """Parameters of ``02_unimodal_baselines``. ``lr`` is the image model's rate, ``text_lr`` the text model's."""

    SECTION: ClassVar[str] = "unimodal"
    RECIPE: ClassVar[str] = "unimodal"
    # The text model's own weights are skipped by build_model(pretrained=False): text_model also names
    # its architecture and tokenizer.
    WEIGHT_SOURCES: ClassVar[tuple[str, ...]] = ("image_weights",)

    model: str = param("both", choices=MODELS, help="text, image, or both (trains both, then late fusion)")
    text_model: str = param(
        TINY_BERT,
        help="Hub id or local folder for from_pretrained (bert-base-uncased; the MiniLM id loads the packaged "
        "weights offline); tiny-bert: a 2-layer BERT from scratch",
    )
    text_lr: float = param(
        1e-3, min=0.0, help="learning rate of the text model (BERT fine-tuning: 2e-5 to 5e-5)"
    )
    text_max_length: int = param(32, min=4, help="tokens kept per caption")
    text_epochs: int | None = param(None, min=1, help="epochs of the text model (None: epochs)")
    image_size: int = param(32, min=16, help="side of the pictures fed to the ResNet")
    small_image_stem: bool = param(
        False, help="3x3 stride-1 stem without max-pool (CIFAR style, for 32-64 px): about 10x the compute"
    )
    image_model: str = param(
        "resnet18", choices=tuple(RESNETS), help="the torchvision ResNet of the image model"
    )
    image_weights: str = param(
        "", help="torchvision weights of the ResNet (IMAGENET1K_V1, IMAGENET1K_V2); empty: random init"
    )
    monitor_split: str = param("val", help="split scored after every epoch for the curves (empty: none)")

    def identity_exclude(self) -> tuple[str, ...]:
        # A text run never reads image_model; ResNet-18, its value before the field existed, keeps the
        # fingerprints of the runs made then.
        # text_epochs is folded into a text run's epochs (kind_config).
        image = ("image_model",) if self.model == "text" or self.image_model == "resnet18" else ()
        return ("text_epochs", *image)

    def kind_config(self, kind: str) -> UnimodalConfig:
        """The config of one model's run: ``model=kind``, and a text run's own ``epochs`` (``text_epochs``)."""
        epochs = self.text_epochs if kind == "text" and self.text_epochs is not None else self.epochs
        return dataclasses.replace(self, model=kind, epochs=epochs, text_epochs=None)

    def check(self) -> None:
        super().check()
        if not self.text_model.strip():
            raise ConfigError(f"text_model: name a Hub id, a local folder or {TINY_BERT!r}")
        for name in ("lr", "text_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)!r}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The models this config trains (``text``, ``image``)."""
        return ("text", "image") if self.model == "both" else (self.model,)

    def model_run_dir(self, kind: str) -> Path:
        """The run of one model (``text``, ``image``, ``late_fusion``): ``runs/<run_name>_<kind>``, or with
        no ``run_name`` once bound (:meth:`bind_kind`), ``runs/unimodal_<kind>-<fingerprint>``.

        Raises:
            ValueError: for an unknown kind.
            RuntimeError: no ``run_name`` and ``kind`` is not bound yet.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        bound = self.__dict__.get("_kind_dirs", {}).get(kind)
        if bound is not None:
            return bound
        if self.run_name:
            return Path(self.runs_dir) / f"{self.run_name}_{kind}"
        raise RuntimeError(
            f"the {kind} run's folder is derived from its fingerprint: bind it first (bind_kind)"
        )

    def bind_kind(
        self,
        kind: str,
        found: Sequence[Mapping[str, Any]],
        inputs: Mapping[str, Any] | None = None,
        *,
        write: bool = True,
    ) -> Path:
        """Binds the run of one model to its own config (``model=kind``), data and inputs.

        Each model is a run of its own, so ``model=text`` and ``model=both`` share the same text run.
        With ``write=False`` an existing folder is checked and a missing one is only named.

        Raises:
            RunMismatchError: its folder holds another config's run.
        """
        single = self.kind_config(kind)
        text_model = resolve_text_model(self.text_model) if kind == "text" else None
        identity = single.identity(found, {**local_inputs(text_model=text_model), **(inputs or {})})
        folder = Path(self.runs_dir) / (
            f"{self.run_name}_{kind}" if self.run_name else identity.folder_name(f"{self.RECIPE}_{kind}")
        )
        bind_run(folder, identity, write=write)
        self.__dict__.setdefault("_kind_dirs", {})[kind] = folder
        return folder


def resolve_text_model(name: str) -> str:
    """Where ``from_pretrained`` should read ``name``: the packaged MiniLM folder for its Hub id, else ``name``."""
    if name == MINILM_ID and local_minilm_path() is not None:
        return str(local_minilm_path())
    return name


def build_text_model(
    config: UnimodalConfig, pretrained: bool = True, class_names: Sequence[str] = CLASSES
) -> TextClassifier:
    """The text classifier of ``config.text_model`` with a new head over ``class_names``.

    Args:
        config: the recipe config.
        pretrained: load the encoder's weights; False builds the architecture only (to load a run's
            checkpoint without fetching weights that would be overwritten).
        class_names: the classes of the head.
    """
    num = len(class_names)
    if config.text_model == TINY_BERT:
        # bert-base-uncased's WordPiece vocabulary, from the packaged MiniLM when installed (same vocab).
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(local_minilm_path() or "bert-base-uncased")
        )
        bert = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=config.text_max_length,
            num_labels=num,
            **TINY_BERT_CONFIG,
            **label_maps(num, class_names),
        )
        return TextClassifier.from_config(bert, tokenizer, config.text_max_length)
    source = resolve_text_model(config.text_model)
    if pretrained:
        return TextClassifier.from_pretrained(source, num, config.text_max_length, class_names)
    hf_config = transformers.AutoConfig.from_pretrained(
        source, num_labels=num, **label_maps(num, class_names)
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    return TextClassifier.from_config(hf_config, tokenizer, config.text_max_length)


def build_image_model(
    config: UnimodalConfig, pretrained: bool = True, num_classes: int = len(CLASSES)
) -> ImageClassifier:
    """The ``image_model`` ResNet with a new ``num_classes`` head (ImageNet weights when ``image_weights``
    names them and ``pretrained``)."""
    weights = (config.image_weights or None) if pretrained else None
    return ImageClassifier(
        num_classes, small_image=config.small_image_stem, weights=weights, arch=config.image_model
    )


def build_model(
    config: UnimodalConfig, kind: str, pretrained: bool = True, class_names: Sequence[str] = CLASSES
) -> nn.Module:
    """The ``text`` or ``image`` model over ``class_names``, initialised from ``config.seed``.

    Raises:
        ValueError: for a kind other than ``text`` or ``image``.
    """
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'text' or 'image' (late fusion has no model), got {kind!r}")
    torch.manual_seed(config.seed)
    if kind == "text":
        return build_text_model(config, pretrained, class_names)
    return build_image_model(config, pretrained, len(class_names))


def model_inputs(batch: Mapping[str, Any], kind: str) -> Any:
    """What the ``kind`` model reads from a batch: the caption strings or the ``(B, 3, S, S)`` pictures."""
    return batch["text"] if kind == "text" else batch["image"]


def step(model: nn.Module, batch: Mapping[str, Any], kind: str) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of one batch; the text model tokenises ``batch["text"]`` itself."""
    logits = model(model_inputs(batch, kind))
    loss = F.cross_entropy(logits, batch["label"])
    accuracy = (logits.argmax(1) == batch["label"]).float().mean()
    return loss, {"train_acc": accuracy.item()}


@torch.no_grad()
def predict(
    model: nn.Module, data: TensorSplit, kind: str, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, C)`` and labels ``(N,)`` of a split held in memory, in its order."""
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for batch in eval_batches(data, batch_size, IMAGENET_MEAN, IMAGENET_STD):
        inputs = model_inputs(batch, kind)
        logits = model(inputs if kind == "text" else inputs.to(device))
        probs.append(logits.float().softmax(-1).cpu())
        labels.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def _monitor(data: TensorSplit, split: str, kind: str):
    def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
        probs, labels = predict(model, data, kind)
        picked = probs[np.arange(len(labels)), labels]
        return {
            f"{split}_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
            f"{split}_acc": float((probs.argmax(1) == labels).mean()),
        }

    return evaluate


def _save_predictions(
    run_dir: Path, split: str, labels: np.ndarray, keys: list[str], **arrays: np.ndarray
) -> None:
    if PartialState().is_main_process:  # every process predicts the same; one writes
        np.savez_compressed(
            run_dir / f"predictions_{split}.npz", labels=labels, keys=np.asarray(keys), **arrays
        )


def train_one(
    config: UnimodalConfig,
    kind: str,
    data: TrainData,
    evals: Mapping[str, TensorSplit],
    monitor: TensorSplit | None = None,
    class_names: Sequence[str] = CLASSES,
) -> RunResult:
    """Trains the ``kind`` model with the engine, scores it on ``evals`` and writes its run directory.

    ``train_seconds`` is the sum of the engine's per-epoch times in ``history.json``, so a resumed or
    re-evaluated run reports the training it actually cost, not the seconds of the last call.

    Args:
        class_names: the classes of the shards (the model's outputs, in order).
    """
    run_dir = config.model_run_dir(kind)  # bound by run()
    model = build_model(config, kind, class_names=class_names)
    single = config.kind_config(kind)  # this model's epochs
    spec = train_spec(
        single, data.steps_per_epoch, run_dir=run_dir, lr=config.text_lr if kind == "text" else config.lr
    )
    evaluate = _monitor(monitor, config.monitor_split, kind) if monitor is not None else None
    # config.json names the one model of this run, so load_trained can rebuild it.
    saved = single.to_dict()
    history = fit(model, lambda m, b: step(m, b, kind), data.batches, spec, evaluate=evaluate, config=saved)
    reports = {}
    for split, split_data in evals.items():
        probs, labels = predict(model, split_data, kind)
        reports[split] = classification_report(probs, labels, topk_ks(len(class_names)), class_names)
        _save_predictions(run_dir, split, labels, split_data.keys, probs=probs)
    primary = config.eval_split_list[0]
    metrics = RunMetrics(
        recipe="unimodal",
        notebook=NOTEBOOK,
        method="bert_classifier" if kind == "text" else f"{config.image_model}_classifier",
        modality=kind,
        task=class_task(class_names),
        classes=class_names,
        split=primary,
        metrics=headline(reports[primary]),
        num_samples=data.num_samples,
        epochs=single.epochs,
        train_seconds=history_seconds(history),
        extra={
            "model": config.text_model if kind == "text" else config.image_model,
            "chance_top1": 1 / len(class_names),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "splits": split_summary(reports),
        },
    ).write(run_dir)
    return RunResult(run_dir, metrics, history, extra={"reports": reports, "model": model})


def fuse_runs(config: UnimodalConfig, found: Sequence[Mapping[str, Any]] | None = None) -> RunResult:
    """Late fusion of the finished ``text`` and ``image`` runs of ``config``: ``argmax(p_text + p_image)``.

    Reads both runs' ``predictions_<split>.npz`` for every eval split and writes the late-fusion run:
    ``predictions_<split>.npz`` with ``scores`` (the sum, ``(N, C)``), ``probs`` (the sum halved, a
    probability vector with the same argmax) and ``labels``; ``metrics.json`` with ``epochs`` 0 and
    ``train_seconds`` the two trainings' sum.

    Raises:
        FileNotFoundError: if a run or one of its prediction files is missing.
        ValueError: if the two runs scored different samples, or in a different order, or over different
            classes.
    """
    found = manifests(config) if found is None else found
    for kind in ("text", "image"):
        if kind not in config.__dict__.get("_kind_dirs", {}):
            config.bind_kind(kind, found, write=False)  # fusing reads the two runs, never makes them
    dirs = {kind: config.model_run_dir(kind) for kind in ("text", "image")}
    # Bound to the two runs' weights: other text or image weights make another late-fusion run.
    inputs = {}
    for kind, folder in dirs.items():
        checkpoint = latest_checkpoint(folder)
        if checkpoint is None:
            raise RunNotFoundError(
                folder, f"notebook {NOTEBOOK}, or: python -m nbhelpers.train unimodal model={kind}"
            )
        inputs[kind] = file_input(checkpoint)
    out = config.bind_kind("late_fusion", found, inputs)
    predictions = {}
    for split in config.eval_split_list:
        loaded = {}
        for kind, run_dir in dirs.items():
            with np.load(run_dir / f"predictions_{split}.npz") as f:
                loaded[kind] = {k: f[k] for k in f.files}
        text, image = loaded["text"], loaded["image"]
        if not (
            np.array_equal(text["labels"], image["labels"]) and np.array_equal(text["keys"], image["keys"])
        ):
            raise ValueError(f"{split}: the text and image runs scored different samples; re-run both")
        predictions[split] = text, image
    parts = {kind: read_metrics(run_dir) for kind, run_dir in dirs.items()}
    classes = {kind: tuple(part.get("classes", CLASSES)) for kind, part in parts.items()}
    if classes["text"] != classes["image"]:
        raise ValueError(
            f"the text run predicts {list(classes['text'])}, the image run {list(classes['image'])}: re-run both"
        )
    class_names = classes["text"]
    reports = {}
    for split, (text, image) in predictions.items():
        preds, scores = late_fusion(torch.from_numpy(text["probs"]), torch.from_numpy(image["probs"]))
        probs = (scores / 2).numpy()
        reports[split] = classification_report(probs, text["labels"], topk_ks(len(class_names)), class_names)
        assert np.array_equal(probs.argmax(1), preds.numpy())  # the report scores the fusion's own argmax
        _save_predictions(out, split, text["labels"], list(text["keys"]), probs=probs, scores=scores.numpy())
    primary = config.eval_split_list[0]
    metrics = RunMetrics(
        recipe="unimodal",
        notebook=NOTEBOOK,
        method="late_fusion",
        modality="late_fusion",
        task=class_task(class_names),
        classes=class_names,
        split=primary,
        metrics=headline(reports[primary]),
        num_samples=parts["text"]["num_samples"],
        epochs=0,
        train_seconds=sum(p["train_seconds"] for p in parts.values()),
        extra={
            "model": f"{parts['text']['model']} + {parts['image']['model']}",
            "chance_top1": 1 / len(class_names),
            "fusion": "argmax(p_text + p_image) of the two runs' saved test probabilities; no training of its own",
            "fused_from": {kind: str(run_dir) for kind, run_dir in dirs.items()},
            "splits": split_summary(reports),
        },
    ).write(out)
    return RunResult(out, metrics, extra={"reports": reports})


@locks_its_run
def run(config: UnimodalConfig | dict[str, Any]) -> RunResult:
    """Trains the baselines ``config.model`` asks for and, for ``both``, fuses them.

    Returns:
        A :class:`RunResult` for the last run made (the late fusion for ``both``), whose
        ``extra["runs"]`` maps each of ``text`` / ``image`` / ``late_fusion`` made to its own result.
    """
    config = UnimodalConfig.coerce(config)
    found = manifests(config)
    class_names = label_set_of(found).names
    for kind in config.kinds:
        config.bind_kind(kind, found)
    data = train_data(config, found, config.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def split_data(split: str) -> TensorSplit:
        return load_split(found, split, config.image_size, limit=config.limit)

    evals = {split: split_data(split) for split in config.eval_split_list}
    monitor = None
    if config.monitor_split:
        monitor = (
            evals[config.monitor_split] if config.monitor_split in evals else split_data(config.monitor_split)
        )
    runs = {kind: train_one(config, kind, data, evals, monitor, class_names) for kind in config.kinds}
    if config.model == "both":
        runs["late_fusion"] = fuse_runs(config, found)
    last = runs[list(runs)[-1]]
    return RunResult(last.run_dir, last.metrics, last.history, extra={"runs": runs})


def _fused_from(run_dir: Path) -> dict[str, str] | None:
    """The ``fused_from`` of a late-fusion run's metrics.json (it has no config.json), else None."""
    if (run_dir / "config.json").is_file() or not (run_dir / "metrics.json").is_file():
        return None
    return read_metrics(run_dir).get("fused_from") or None


def load_trained(run_dir: str | os.PathLike, weights: Mapping[str, torch.Tensor] | None = None) -> TrainedRun:
    """Rebuilds a trained text or image model from its run directory (config.json + last checkpoint, or
    ``weights``: :meth:`TrainedRun.weights` of such a run); never trains.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the :class:`ImageClassifier` (parts: ``"cnn"``, its
        ResNet; pictures at ``image_size``, ImageNet normalisation) or the :class:`TextClassifier`
        (parts: ``"encoder"``, its Hugging Face model; it tokenises raw captions itself, so
        ``tokenizer`` and ``image_size`` are None), over the run's classes (``class_names``).

    Raises:
        RunNotFoundError: if the run, its config.json or every checkpoint is missing.
        ValueError: for a late-fusion run (it has no weights: load its text and image runs).
    """
    run_dir = Path(run_dir)
    if _fused_from(run_dir):
        raise ValueError(f"{run_dir} is a late-fusion run: it has no weights (load its text and image runs)")
    config = UnimodalConfig.load(run_dir, RECIPE.how)
    if config.model not in ("text", "image"):
        raise ValueError(f"{run_dir} is not a text or image run of this recipe (model={config.model!r})")
    names = run_class_names(run_dir, config)
    model = build_model(config, config.model, pretrained=False, class_names=names)
    if config.model == "image":
        trained = TrainedRun(
            recipe=RECIPE.name, run_dir=run_dir, config=config, model=model, image_size=config.image_size,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, parts={"cnn": model.net}, class_names=names,
        )  # fmt: skip
    else:
        trained = TrainedRun(
            recipe=RECIPE.name, run_dir=run_dir, config=config, model=model, parts={"encoder": model.model},
            class_names=names,
        )  # fmt: skip
    if weights is None:
        load_run_weights(model, run_dir, RECIPE.how)
    else:
        trained.load_weights(weights)
    return trained


def confusions(result: RunResult, split: str | None = None) -> dict[str, np.ndarray]:
    """``{kind: row-normalised (C, C) confusion matrix}`` of every run of ``result`` on ``split`` (its
    classes: ``result.metrics["classes"]``)."""
    out = {}
    for kind, found in result.extra["runs"].items():
        report = found.extra["reports"][split or found.metrics["split"]]
        out[kind] = np.asarray(report["confusion"])
    return out


def predict_run(run_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores a finished run on ``split`` from its checkpoint: probabilities ``(N, C)`` and labels ``(N,)``.

    A text or image run is rebuilt by :func:`load_trained` and predicts the split again (loaded as its
    config.json says: image size, ``limit``). A late-fusion run has no weights: its text and image runs
    (``fused_from`` in its metrics.json, looked for next to it if moved) are re-scored and their
    probabilities fused as :func:`fuse_runs` does (the sum halved: a probability vector, same argmax).

    Raises:
        RunNotFoundError: if the run, its config.json, a checkpoint, or a fused run is missing.
        ValueError: if the two fused runs scored different labels.
    """
    run_dir = Path(run_dir)
    fused_from = _fused_from(run_dir)
    if fused_from:
        parts = {}
        for kind in ("text", "image"):
            part = Path(fused_from[kind])
            part = part if part.is_dir() else run_dir.parent / part.name
            parts[kind] = predict_run(part, split)
        if not np.array_equal(parts["text"][1], parts["image"][1]):
            raise ValueError(f"{run_dir}: its text and image runs scored different samples on {split!r}")
        _, scores = late_fusion(torch.from_numpy(parts["text"][0]), torch.from_numpy(parts["image"][0]))
        return (scores / 2).numpy(), parts["text"][1]
    trained = load_trained(run_dir)
    config = trained.config
    data = load_split(manifests(config), split, config.image_size, limit=config.limit)
    return predict_split(trained, data), data.labels.numpy()


def predict_split(trained: TrainedRun, data: TensorSplit) -> np.ndarray:
    """``(N, C)`` class probabilities of a loaded text or image run on samples in memory."""
    return predict(trained.model, data, trained.config.model)[0]


def display_name(metrics: dict[str, Any]) -> str:
    """``BERT text (<text model>)``, ``ResNet-18 image`` (its depth) or ``Late fusion (text + image)``."""
    modality = metrics.get("modality")
    if modality == "text":
        model = Path(str(metrics.get("model", ""))).name  # a local weights folder reads as its name
        return f"BERT text ({model})" if model else "BERT text"
    if modality == "image":
        depth = str(metrics.get("model", "resnet18")).removeprefix("resnet")
        return f"ResNet-{depth} image"
    return "Late fusion (text + image)"


RECIPE = Recipe(
    name="unimodal",
    config_class=UnimodalConfig,
    notebook=NOTEBOOK,
    run=run,
    load_trained=load_trained,
    predict_run=predict_run,
    display_name=display_name,
    predict_split=predict_split,
)

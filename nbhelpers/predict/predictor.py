"""A trained classifier run (or a model exported from one) as a predictor of new memes: image + caption in,
class probabilities out.

:func:`load` takes a run folder of any recipe with a classifier (notebooks 02, 05, 06 and 07, over the seven
merged classes, the binary hateful label or a label set of the user's own) or a folder written by
:mod:`nbhelpers.predict.export`, and rebuilds the model through the recipe registry
(``Recipe.load_trained``). :meth:`Predictor.predict` scores images and captions exactly as the run's own
evaluation scores its shard samples:

* an image (a PIL image, a path or encoded bytes) is decoded by the data layer's rule
  (:mod:`nbhelpers.data.image`: EXIF orientation, transparency over white, 16-bit scaled), letterboxed to
  the side of the run's shard images as the shards were (:func:`~nbhelpers.data.image.letterbox`: an image
  already that square is left as it is, so a shard's own image is not touched), then resized to the model's
  input (:func:`~nbhelpers.data.memory.uint8_transform`) and normalised by the recipe;
* a caption is stripped and checked as a shard's text is (:func:`~nbhelpers.data.validity.valid_text`);
* the recipe's ``predict_split`` scores them, the same function its ``predict_run`` uses.

A run's ``operating_points.json`` (:class:`~nbhelpers.evaluation.operating_points.OperatingPoints`: a
temperature and thresholds on the harmful class) is applied: ``probabilities`` are calibrated,
``uncalibrated_probabilities`` are the model's own (the two are equal without operating points), and each
sample lists the thresholds its calibrated positive probability passes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nbhelpers.data.image import decode_rgb, letterbox, load_rgb, to_rgb
from nbhelpers.data.memory import TensorSplit, uint8_transform
from nbhelpers.data.validity import valid_text
from nbhelpers.evaluation.operating_points import OperatingPoints
from nbhelpers.evaluation.run_discovery import BINARY_CLASSES, CLASSIFIER_TASKS, inspect_run, model_name
from nbhelpers.fileio import read_json
from nbhelpers.models.unimodal import late_fusion
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.recipes.registry import TrainedRun
from nbhelpers.train.run_dir import RunNotFoundError

#: What an image may be given as: a decoded picture, a file path, or the encoded bytes of one.
ImageInput = Image.Image | str | os.PathLike | bytes
#: The file that marks a folder written by :mod:`nbhelpers.predict.export`.
EXPORT_FILE = "memelab_model.json"
#: The weights file of an exported folder.
WEIGHTS_FILE = "model.safetensors"
#: Samples per forward pass unless the caller says otherwise.
BATCH_SIZE = 32


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def read_image(image: ImageInput, name: str = "image") -> Image.Image:
    """``image`` decoded into 8-bit RGB by the data layer's rule (:mod:`nbhelpers.data.image`).

    Raises:
        ImageDecodeError: a missing, truncated, too large or undecodable image (``reason`` says which).
        TypeError: for anything but a PIL image, a path or bytes.
    """
    if isinstance(image, Image.Image):
        image.load()
        return to_rgb(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_rgb(bytes(image), name)
    if isinstance(image, str | os.PathLike):
        return load_rgb(Path(image))
    raise TypeError(f"{name}: expected a PIL image, a path or bytes, got {type(image).__name__}")


@dataclass
class Predictions:
    """What :meth:`Predictor.predict` gives for ``N`` samples.

    Attributes:
        run: the run's (or exported model's) name.
        classes: the classes the probabilities range over (``not hateful``, ``hateful`` for a binary head).
        probabilities: ``(N, C)`` calibrated class probabilities (the uncalibrated ones without operating
            points).
        uncalibrated_probabilities: ``(N, C)`` the model's own probabilities.
        scores: ``(N,)`` hateful probabilities of a binary head, else ``(N, C)``: what the run's re-scoring
            (``predict_run``) gives, uncalibrated.
        temperature: the operating points' temperature (1.0 without).
        positive_class: the class the thresholds are on (None: none).
        thresholds_passed: per sample, the names of the thresholds its calibrated positive probability
            passes (empty lists without operating points).
        operating_points: the run's record, or None.
    """

    run: str
    classes: tuple[str, ...]
    probabilities: np.ndarray
    uncalibrated_probabilities: np.ndarray
    scores: np.ndarray
    temperature: float = 1.0
    positive_class: str | None = None
    thresholds_passed: list[list[str]] = field(default_factory=list)
    operating_points: OperatingPoints | None = None

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def binary(self) -> bool:
        return self.scores.ndim == 1

    @property
    def predicted(self) -> list[str]:
        """The most probable class of each sample (calibration never changes it)."""
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    @property
    def hateful_probability(self) -> np.ndarray | None:
        """``(N,)`` calibrated hateful probability of a binary head, else None."""
        return self.probabilities[:, 1] if self.binary else None

    def record(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as one JSON object: ``run``, ``classes``, ``probabilities`` and
        ``uncalibrated_probabilities`` (``{class: p}``), ``predicted``, ``temperature``,
        ``thresholds_passed``, ``positive_class`` and ``positive_probability`` (when thresholds exist), and
        ``hateful_probability`` for a binary head."""
        out: dict[str, Any] = {
            "run": self.run,
            "classes": list(self.classes),
            "probabilities": dict(zip(self.classes, map(float, self.probabilities[i]))),
            "uncalibrated_probabilities": dict(
                zip(self.classes, map(float, self.uncalibrated_probabilities[i]))
            ),
            "predicted": self.predicted[i],
            "temperature": float(self.temperature),
            "thresholds_passed": list(self.thresholds_passed[i]) if self.thresholds_passed else [],
        }
        if self.binary:
            out["hateful_probability"] = float(self.probabilities[i, 1])
        if self.positive_class is not None:
            out["positive_class"] = self.positive_class
            out["positive_probability"] = float(
                self.probabilities[i, self.classes.index(self.positive_class)]
            )
        return out

    def records(self) -> list[dict[str, Any]]:
        """Every sample's :meth:`record`."""
        return [self.record(i) for i in range(len(self))]


def _pair_up(images: Any, texts: Any) -> tuple[list, list]:
    """``images`` and ``texts`` as two lists of one length: a single value (or None) on one side goes with
    every sample of a list on the other.

    Raises:
        ValueError: two lists of different lengths.
    """
    many_images = isinstance(images, list | tuple)
    many_texts = isinstance(texts, list | tuple)
    if not many_images and not many_texts:
        return [images], [texts]
    if not many_images:
        return [images] * len(texts), list(texts)
    if not many_texts:
        return list(images), [texts] * len(images)
    if len(images) != len(texts):
        raise ValueError(f"images and texts: {len(images)} images but {len(texts)} texts")
    return list(images), list(texts)


def _two_columns(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` hateful probabilities as ``(N, 2)`` (not hateful, hateful); ``(N, C)`` unchanged."""
    return np.stack([1.0 - scores, scores], axis=1) if scores.ndim == 1 else scores


class Predictor:
    """A loaded classifier (see the module docstring); build it with :func:`load`.

    Args:
        name: the run's (or exported model's) name.
        models: the loaded run, or for a late-fusion run its text and image runs (their probabilities are
            averaged, as its re-scoring does).
        metrics: the run's ``metrics.json``.
        shard_image_size: the side of the square images of the shards the run read (None: unknown; a
            picture is then letterboxed straight to the model's input side).
        operating_points: the run's calibration and thresholds, or None.
        device: where the models run (default: :func:`default_device`).
    """

    def __init__(
        self,
        name: str,
        models: Sequence[TrainedRun],
        metrics: dict[str, Any],
        shard_image_size: int | None = None,
        operating_points: OperatingPoints | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.name = name
        self.models = list(models)
        self.metrics = metrics
        self.shard_image_size = shard_image_size
        self.operating_points = operating_points
        self.device = torch.device(device or default_device())
        for trained in self.models:
            trained.model.to(self.device)
        names = tuple(metrics.get("classes") or ())
        self.classes: tuple[str, ...] = names or tuple(self.models[0].class_names or BINARY_CLASSES)
        if operating_points is not None and tuple(operating_points.classes) != self.classes:
            raise ValueError(
                f"{name}: operating points are for classes {list(operating_points.classes)}, the run's are "
                f"{list(self.classes)}"
            )

    @property
    def task(self) -> str:
        return str(self.metrics.get("task"))

    @property
    def model_name(self) -> str:
        """The readable model name (``CLIP lora``, ``Hate-CLIPper cross``, ...)."""
        return model_name(self.metrics, self.name)

    @property
    def binary(self) -> bool:
        return self.task == "binary"

    @property
    def modality(self) -> str:
        """``text``, ``image`` or ``multimodal``: what the model reads."""
        return str(self.metrics.get("modality") or "multimodal")

    @property
    def reads_text(self) -> bool:
        return self.modality != "image"

    @property
    def reads_image(self) -> bool:
        return self.modality != "text"

    @property
    def trained(self) -> TrainedRun:
        """The loaded run (for a late-fusion run, its image run when it has one: what an explainer maps)."""
        return self.models[-1]

    def prepare_image(self, image: ImageInput | None, name: str = "image") -> Image.Image:
        """The picture as a shard holds it: decoded (:func:`read_image`) and letterboxed to the shards' side.

        Raises:
            ValueError: no image for a model that reads images.
            ImageDecodeError: from :func:`read_image`.
        """
        if image is None:
            if self.reads_image:
                raise ValueError(f"{name}: {self.name} reads pictures; give an image")
            return Image.new("RGB", (1, 1))
        side = self.shard_image_size or max(t.image_size or 1 for t in self.models)
        return letterbox(read_image(image, name), side)

    def prepare_text(self, text: str | None, name: str = "text") -> str:
        """The caption as a shard holds it (stripped; lone surrogates replaced).

        Raises:
            ValueError: a missing or blank caption for a model that reads text.
        """
        if not self.reads_text and not (isinstance(text, str) and text.strip()):
            return ""
        try:
            return valid_text(text)[0]
        except ValueError as err:  # Rejected is a ValueError
            raise ValueError(f"{name}: {err}") from None

    def tensor_split(
        self, images: Sequence[Image.Image], texts: Sequence[str], trained: TrainedRun | None = None
    ) -> TensorSplit:
        """Prepared pictures (:meth:`prepare_image`) and captions as the split in memory a recipe scores:
        ``(N, 3, S, S)`` uint8 images at the model's input side, tokens when the model has a tokenizer, and
        placeholder labels (0) that nothing reads."""
        trained = trained or self.trained
        size = trained.image_size or 1
        to_uint8 = uint8_transform(size)
        n = len(texts)
        return TensorSplit(
            images=torch.stack([to_uint8(image) for image in images]),
            labels=torch.zeros(n, dtype=torch.long),
            valid_pair=torch.zeros(n, dtype=torch.bool),
            hateful=torch.zeros(n, dtype=torch.long),
            texts=list(texts),
            keys=[str(i) for i in range(n)],
            tokens=trained.tokenizer(list(texts)) if trained.tokenizer is not None else None,
        )

    def _scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """The uncalibrated scores of prepared samples (``(N,)`` binary, else ``(N, C)``)."""
        found = []
        for trained in self.models:
            predict_split = get_recipe(trained.recipe).predict_split
            found.append(np.asarray(predict_split(trained, self.tensor_split(images, texts, trained))))
        if len(found) == 1:
            return found[0]
        # A late-fusion run: the two runs' probabilities summed and halved, as its re-scoring does.
        _, summed = late_fusion(torch.from_numpy(found[0]), torch.from_numpy(found[1]))
        return (summed / 2).numpy()

    def predict(
        self,
        images: Sequence[ImageInput | None] | ImageInput | None,
        texts: Sequence[str | None] | str | None,
        batch_size: int = BATCH_SIZE,
    ) -> Predictions:
        """Scores samples of an image and a caption (one of each, or two sequences of the same length).

        Args:
            images: PIL images, paths or encoded bytes (None where a text-only model needs none).
            texts: captions (None where a picture-only model needs none).
            batch_size: samples per forward pass.

        Returns:
            :class:`Predictions` over the run's classes, in the order given.

        Raises:
            ValueError: different numbers of images and texts, a missing image or caption the model needs,
                a blank caption.
            ImageDecodeError: an image that cannot be read (``reason`` says why).
        """
        images, texts = _pair_up(images, texts)
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        chunks = []
        for start in range(0, len(texts), batch_size):
            stop = min(start + batch_size, len(texts))
            prepared_images = [self.prepare_image(images[i], f"image {i}") for i in range(start, stop)]
            prepared_texts = [self.prepare_text(texts[i], f"text {i}") for i in range(start, stop)]
            chunks.append(self._scores(prepared_images, prepared_texts))
        width = 0 if self.binary else len(self.classes)
        scores = np.concatenate(chunks) if chunks else np.zeros((0, width) if width else (0,))
        return self.finish(scores)

    def finish(self, scores: np.ndarray) -> Predictions:
        """:class:`Predictions` of uncalibrated ``scores`` (what the recipe's ``predict_split`` gives):
        calibrated by the run's operating points, with the thresholds each sample passes."""
        scores = np.asarray(scores)
        uncalibrated = _two_columns(scores)
        points = self.operating_points
        if points is None:
            return Predictions(self.name, self.classes, uncalibrated, uncalibrated, scores)
        calibrated = _two_columns(points.calibrate(scores))
        passed: list[list[str]] = [[] for _ in range(len(scores))]
        if points.positive_class is not None:
            positive = points.positive_probability(calibrated)
            passed = [points.passed(float(p)) for p in positive]
        return Predictions(
            self.name, self.classes, calibrated, uncalibrated, scores, points.temperature,
            points.positive_class, passed, points,
        )  # fmt: skip

    def describe(self) -> str:
        """One line: name, recipe, task, classes, device, calibration."""
        recipes = "+".join(dict.fromkeys(t.recipe for t in self.models))
        calibration = (
            f"temperature {self.operating_points.temperature:.3g}, "
            f"{len(self.operating_points.thresholds)} thresholds"
            if self.operating_points is not None
            else "uncalibrated"
        )
        return (
            f"{self.name}: {recipes}, {self.task} over {len(self.classes)} classes, on {self.device}, "
            f"{calibration}"
        )


def _shard_image_size(config: Any) -> int | None:
    """The side of the square images of the shards a run's config reads, or None when they are gone."""
    try:
        found = manifests(config)
    except (FileNotFoundError, OSError, ValueError):
        return None
    sizes = {m.get("image_size") for m in found if isinstance(m, dict)}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def _late_fusion_parts(folder: Path, fused_from: dict[str, str]) -> list[Path]:
    """The text and image runs of a late-fusion run: as recorded, inside ``folder`` (an export), or next
    to it (a runs folder that moved)."""
    parts = []
    for kind in ("text", "image"):
        recorded = Path(fused_from[kind])
        for candidate in (folder / recorded, recorded, folder.parent / recorded.name):
            if candidate.is_dir():
                parts.append(candidate)
                break
        else:
            raise RunNotFoundError(
                recorded, "notebook 02_unimodal_baselines", what=f"{kind} run of late fusion"
            )
    return parts


def _load_run(folder: Path, device: str | torch.device | None) -> Predictor:
    record = inspect_run(folder)
    if record.problem:
        raise ValueError(f"{folder}: {record.problem}")
    if record.task not in CLASSIFIER_TASKS:
        raise ValueError(f"{folder}: a {record.task!r} run has no classifier to predict with")
    fused_from = record.metrics.get("fused_from")
    if fused_from:
        parts = [_load_run(part, "cpu") for part in _late_fusion_parts(folder, fused_from)]
        models = [p.models[0] for p in parts]
        shard = parts[-1].shard_image_size
    else:
        models = [get_recipe(record.recipe).load_trained(folder)]
        shard = _shard_image_size(models[0].config)
    return Predictor(record.name, models, record.metrics, shard, OperatingPoints.load(folder), device=device)


def _load_export(folder: Path, device: str | torch.device | None) -> Predictor:
    from safetensors.torch import load_file  # the weights of an exported folder; no pickle

    info = read_json(folder / EXPORT_FILE)
    metrics = read_json(folder / "metrics.json")
    parts = info.get("parts")
    if parts:
        models = [_load_export(folder / parts[kind], "cpu").models[0] for kind in ("text", "image")]
    else:
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: the exported model's weights are missing")
        models = [get_recipe(info["recipe"]).load_trained(folder, weights=load_file(weights))]
    return Predictor(
        info.get("name", folder.name), models, metrics, info.get("shard_image_size"),
        OperatingPoints.load(folder), device=device,
    )  # fmt: skip


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> Predictor:
    """The predictor of a classifier run folder or of a folder written by :mod:`nbhelpers.predict.export`.

    Args:
        path: the folder.
        device: where to run the model (default: ``cuda`` when there is a GPU, else ``cpu``).

    Raises:
        RunNotFoundError: the folder, or a file rebuilding the model needs, is missing (the message names
            what makes it).
        ValueError: the folder is not a finished classifier run (its reason), or its operating points do not
            match its classes.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RunNotFoundError(folder, "a notebook 02-07, or: python -m nbhelpers.train RECIPE ...")
    if (folder / EXPORT_FILE).is_file():
        return _load_export(folder, device)
    return _load_run(folder, device)

"""What the interactive prediction panel of notebook 09 computes, without any widget: pick a run, give a
picture (an upload, or a test sample of the run's shards) and a caption, get the probabilities, the thresholds
passed and the explanation notebook 08 would draw (:mod:`nbhelpers.evaluation.explainers`).

The widget (:func:`nbhelpers.widgets.predict_panel`) only collects the inputs and shows :class:`MemeScore`;
everything it shows comes from :meth:`PredictSession.score`, which is what the tests call headless.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers.data.loader import shard_set
from nbhelpers.data.tar_samples import iter_groups
from nbhelpers.data.taxonomy import UNLABELLED
from nbhelpers.evaluation.attention import explainer_of
from nbhelpers.evaluation.explainers import Explanation
from nbhelpers.evaluation.run_discovery import CLASSIFIER_TASKS, discover_runs
from nbhelpers.predict.predictor import ImageInput, Predictions, Predictor, load
from nbhelpers.train.recipes.config import manifests


@dataclass
class MemeScore:
    """One meme scored by one run, as the panel shows it.

    Attributes:
        run: the run's name.
        text: the caption scored.
        predictions: the run's :class:`~nbhelpers.predict.predictor.Predictions` of the one sample.
        explanation: the explanation 08 draws (None when the run has nothing to map: ``explain_error``).
        explain_error: why there is no explanation (None when there is one).
        label: the true class of a test sample (None for a picture of one's own).
    """

    run: str
    text: str
    predictions: Predictions
    explanation: Explanation | None = None
    explain_error: str | None = None
    label: str | None = None

    @property
    def record(self) -> dict[str, Any]:
        """The JSON object the command line prints for this meme."""
        return self.predictions.record(0)


class PredictSession:
    """The runs under ``runs_dir`` that predict, loaded once each (on the CPU, where the explainers run).

    Args:
        runs_dir: the folder of runs.
        split: the split test samples are picked from.
    """

    def __init__(self, runs_dir: str | os.PathLike = "runs", split: str = "test") -> None:
        self.runs_dir = Path(runs_dir)
        self.split = split
        self._predictors: dict[str, Predictor] = {}
        self._samples: dict[str, list[tuple[bytes, str, int]]] = {}

    def runs(self) -> list[str]:
        """Names of the finished classifier runs under ``runs_dir``."""
        return [r.name for r in discover_runs(self.runs_dir) if r.task in CLASSIFIER_TASKS and not r.problem]

    def predictor(self, run: str) -> Predictor:
        """The run's predictor (loaded on first use)."""
        if run not in self._predictors:
            self._predictors[run] = load(self.runs_dir / run, device="cpu")
        return self._predictors[run]

    def test_sample(self, run: str, index: int, limit: int = 64) -> tuple[bytes, str, int]:
        """Sample ``index`` of the split as its shard holds it: ``(JPEG bytes, caption, label)``, in the order
        the run's re-scoring reads the split (labelled samples only).

        Raises:
            IndexError: ``index`` beyond the first ``limit`` labelled samples.
        """
        if run not in self._samples:
            config = self.predictor(run).trained.config
            found: list[tuple[bytes, str, int]] = []
            for url in shard_set(manifests(config), self.split).urls:
                for group in iter_groups(url):
                    meta = group.members.get("json", b"{}")
                    label = int(json.loads(meta.decode("utf-8")).get("label", UNLABELLED))
                    if label != UNLABELLED:
                        found.append((group.members["jpg"], group.members["txt"].decode("utf-8"), label))
                    if len(found) == limit:
                        break
                if len(found) == limit:
                    break
            self._samples[run] = found
        samples = self._samples[run]
        if not 0 <= index < len(samples):
            raise IndexError(f"sample: {index} is outside the {len(samples)} test samples offered")
        return samples[index]

    def score(
        self,
        run: str,
        image: ImageInput | None = None,
        text: str = "",
        sample: int | None = None,
        explain: bool = True,
    ) -> MemeScore:
        """Scores one meme with ``run``: ``image`` and ``text``, or test sample ``sample`` (its caption unless
        ``text`` replaces it).

        Raises:
            ValueError: neither an image nor a sample, or a blank caption for a model that reads one.
            ImageDecodeError: an image that cannot be read.
        """
        predictor = self.predictor(run)
        label = None
        if image is None and sample is not None:
            image, sample_text, label_index = self.test_sample(run, sample)
            text = text.strip() or sample_text
            label = self._class_of(predictor, label_index)
        if image is None and predictor.reads_image:
            raise ValueError("image: upload a picture or pick a test sample")
        predictions = predictor.predict(image, text)
        out = MemeScore(run, predictor.prepare_text(text), predictions, label=label)
        if explain:
            try:
                out.explanation = self._explain(predictor, image, text, label)
            except TypeError as err:  # a run with nothing to map (late fusion)
                out.explain_error = str(err)
        return out

    @staticmethod
    def _class_of(predictor: Predictor, label: int) -> str | None:
        """The class of a shard label in the run's classes (a binary run's classes are not the shards')."""
        return (
            predictor.classes[label] if not predictor.binary and 0 <= label < len(predictor.classes) else None
        )

    def _explain(
        self, predictor: Predictor, image: ImageInput | None, text: str, label: str | None
    ) -> Explanation:
        """The explanation 08 draws, of the picture and caption as the model reads them."""
        if len(predictor.models) > 1:  # as notebook 08: its text and image runs are explained on their own
            raise TypeError(f"{predictor.name}: a late-fusion run has no model of its own to map")
        trained = predictor.trained
        explainer = explainer_of(trained)
        prepared = predictor.prepare_image(image)
        caption = predictor.prepare_text(text)
        data = predictor.tensor_split([prepared], [caption], trained)
        if (
            data.tokens is None and explainer.tokenizer is not None
        ):  # 07's maps need token ids its head does not
            data.tokens = explainer.tokenizer([caption])
        explanation = explainer.explain(data, 0)
        # A picture of one's own (or a binary run's sample, whose hateful label the shard may not hold) has
        # no true class to show.
        explanation.label = -1 if label is None else predictor.classes.index(label)
        return explanation

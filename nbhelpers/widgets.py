"""Interactive ipywidgets views for the notebooks (they degrade to nothing when run headless)."""

from __future__ import annotations

import base64
import contextlib
import io
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from nbhelpers.data.inspect import raw_samples
from nbhelpers.data.taxonomy import LabelSet
from nbhelpers.plots import FIG_DPI


class _Canvas:
    """What one drawing of a view shows: its printed text and figures, in order (see :func:`_drawing`)."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.text = io.StringIO()

    def flush_text(self) -> None:
        if self.text.getvalue():
            self.outputs.append({"output_type": "stream", "name": "stdout", "text": self.text.getvalue()})
            self.text = io.StringIO()

    def show(self) -> None:
        """Adds every open matplotlib figure (as a PNG) after the text printed so far, and closes them."""
        self.flush_text()
        for number in plt.get_fignums():
            fig = plt.figure(number)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
            plt.close(fig)
            png = base64.b64encode(buffer.getvalue()).decode("ascii")
            self.outputs.append(
                {
                    "output_type": "display_data",
                    "data": {"image/png": png, "text/plain": "<Figure>"},
                    "metadata": {},
                }
            )


@contextlib.contextmanager
def _drawing(out: widgets.Output) -> Iterator[_Canvas]:
    """Draws a view into ``out``: what the block prints and the figures it passes to ``canvas.show()``
    replace what ``out`` showed, all at once at the end (an exception shows its traceback there instead).

    The outputs are set on the widget directly rather than captured with ``with out:``, which switches the
    widget's ``msg_id`` back and forth: headless runners (papermill's and nbval's nbclient) were seen to wait
    for ever on a cell whose view was drawn that way.
    """
    canvas = _Canvas()
    try:
        with contextlib.redirect_stdout(canvas.text):
            yield canvas
    except Exception:  # shown where the view is, as ``with out:`` would, not lost in a callback's log
        canvas.text.write(traceback.format_exc())
    canvas.flush_text()
    out.outputs = tuple(canvas.outputs)


def shard_browser(manifest: dict[str, Any], per_class: int = 24) -> widgets.Widget:
    """Browse a source's shards by split, class and sample: the picture, its text and its json."""
    names = LabelSet.from_manifest(manifest).names
    split = widgets.Dropdown(options=list(manifest["splits"]), description="split")
    label = widgets.Dropdown(options=[(name, i) for i, name in enumerate(names)], description="class")
    index = widgets.IntSlider(min=0, max=per_class - 1, description="sample")
    out = widgets.Output()
    cache: dict[tuple[str, int], list[dict]] = {}

    def show(*_):
        key = (split.value, label.value)
        if key not in cache:
            cache[key] = raw_samples(manifest, split.value, per_class, label=label.value)
        samples = cache[key]
        with _drawing(out) as canvas:
            if not samples:
                print(f"no samples of class {names[label.value]!r} in {split.value}")
                return
            sample = samples[min(index.value, len(samples) - 1)]
            fig, ax = plt.subplots(figsize=(3.5, 3.5), dpi=FIG_DPI)
            ax.imshow(sample["image"])
            ax.axis("off")
            canvas.show()
            print(sample["text"])
            print({k: v for k, v in sample["json"].items() if k != "attributes"})

    for w in (split, label, index):
        w.observe(show, names="value")
    show()
    box = widgets.VBox([widgets.HBox([split, label, index]), out])
    display(box)
    return box


def attention_explorer(
    runs: Sequence[str],
    runs_dir: str = "runs",
    splits: Sequence[str] = ("test", "unseen"),
    num_samples: int = 32,
    mass: float = 0.6,
    save_dir: str = "",
) -> widgets.Widget:
    """Explore where trained models look: run, split, sample, layer and head.

    Shows the picture with its caption, the true and predicted class with probabilities, the maps the run's
    architecture allows side by side (ViT attention per head and its mass mask, Grad-CAM for CNNs), and
    the caption's token attributions (:func:`nbhelpers.plots.explanation_figure`). "save PNG" writes the
    figure shown to ``save_dir``.

    Args:
        runs: run names under ``runs_dir`` (e.g. :func:`nbhelpers.evaluation.attention.explainable_runs`).
        runs_dir: the folder of the runs.
        splits: the splits offered.
        num_samples: samples loaded per split (the first ones).
        mass: the initial share of attention mass kept by the mask.
        save_dir: folder of the saved PNGs ('' hides the button).
    """
    from pathlib import Path

    from nbhelpers.evaluation.attention import load_explainer
    from nbhelpers.plots import explanation_figure, save_figure

    run = widgets.Dropdown(options=list(runs), description="run")
    split = widgets.Dropdown(options=list(splits), description="split")
    index = widgets.IntSlider(min=0, max=num_samples - 1, description="sample")
    layer = widgets.IntSlider(min=0, max=0, description="layer")
    head = widgets.Dropdown(options=[("all", -1)], description="head")
    share = widgets.FloatSlider(value=mass, min=0.05, max=1.0, step=0.05, description="mass")
    save = widgets.Button(description="save PNG", layout=widgets.Layout(display="" if save_dir else "none"))
    out = widgets.Output()
    explainers: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def show(*_):
        if state.get("busy"):  # updating the layer and head ranges below fires the observers again
            return
        state["busy"] = True
        try:
            draw()
        finally:
            state["busy"] = False

    def draw():
        with _drawing(out) as canvas:
            if run.value not in explainers:
                explainers[run.value] = load_explainer(Path(runs_dir) / run.value)
            explainer = explainers[run.value]
            data = explainer.split(split.value, num_samples)
            explanation = explainer.explain(data, min(index.value, len(data) - 1))
            if explanation.num_layers:
                layer.max = explanation.num_layers - 1
                options = [("all", -1)] + [(str(h), h) for h in range(explanation.num_heads)]
                if [v for _, v in head.options] != [v for _, v in options]:
                    head.options = options
            fig = explanation_figure(
                explanation, layer=min(layer.value, max(0, explanation.num_layers - 1)),
                head=None if head.value < 0 else head.value, mass=share.value,
            )  # fmt: skip
            state.update(
                fig=fig, name=f"{run.value}_{split.value}_{index.value}_l{layer.value}_h{head.value}"
            )
            canvas.show()

    def on_save(_):
        if "fig" in state:
            path = save_figure(state["fig"], Path(save_dir) / f"{state['name']}.png")
            out.append_stdout(f"saved {path}\n")

    for w in (run, split, index, layer, head, share):
        w.observe(show, names="value")
    save.on_click(on_save)
    if runs:
        show()
    box = widgets.VBox([widgets.HBox([run, split, index]), widgets.HBox([layer, head, share, save]), out])
    display(box)
    return box


def _uploaded_bytes(upload: widgets.FileUpload) -> bytes | None:
    """The content of the file an upload widget holds (ipywidgets 8: a tuple of dicts; 7: a dict)."""
    value = upload.value
    files = list(value.values()) if isinstance(value, dict) else list(value)
    return bytes(files[-1]["content"]) if files else None


def predict_panel(runs_dir: str = "runs", split: str = "test") -> widgets.Widget:
    """Score a meme of one's own, or a test sample, with any classifier run: the probabilities (calibrated
    when the run has operating points), the thresholds it passes and the explanation notebook 08 draws.

    Everything shown comes from :meth:`nbhelpers.predict.panel.PredictSession.score`; the returned box's
    ``state`` holds the last :class:`~nbhelpers.predict.panel.MemeScore` (``state["score"]``) or error.

    Args:
        runs_dir: the folder of runs.
        split: the split test samples are picked from.
    """
    from nbhelpers.plots import explanation_figure
    from nbhelpers.predict.panel import PredictSession

    session = PredictSession(runs_dir, split)
    run = widgets.Dropdown(options=session.runs(), description="run")
    source = widgets.ToggleButtons(options=["test sample", "upload"], description="picture")
    sample = widgets.BoundedIntText(value=0, min=0, max=63, description=f"{split} sample")
    upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload")
    caption = widgets.Text(placeholder="caption (empty: the test sample's own)", description="caption")
    go = widgets.Button(description="predict", button_style="primary")
    out = widgets.Output()
    state: dict[str, Any] = {}

    def on_predict(_=None) -> None:
        state.clear()
        with _drawing(out) as canvas:
            try:
                if source.value == "upload":
                    score = session.score(run.value, _uploaded_bytes(upload), caption.value)
                else:
                    score = session.score(run.value, None, caption.value, sample=sample.value)
            except (ValueError, IndexError, OSError) as err:  # a missing picture or caption, a bad file
                state["error"] = str(err)
                print(f"cannot predict: {err}")
                return
            state["score"] = score
            record = score.record
            print(
                f"{record['run']}: {record['predicted']}" + (f" (true: {score.label})" if score.label else "")
            )
            for name, p in sorted(record["probabilities"].items(), key=lambda kv: -kv[1]):
                raw = record["uncalibrated_probabilities"][name]
                print(
                    f"  {name:<22} {p:.3f}"
                    + (f"  (uncalibrated {raw:.3f})" if record["temperature"] != 1 else "")
                )
            print(f"thresholds passed: {', '.join(record['thresholds_passed']) or 'none'}")
            if score.explanation is not None:
                explanation_figure(score.explanation)
                canvas.show()
            else:
                print(f"no explanation: {score.explain_error}")

    go.on_click(on_predict)
    box = widgets.VBox([widgets.HBox([run, source]), widgets.HBox([sample, upload]), caption, go, out])
    box.state = state
    box.predict = on_predict
    display(box)
    return box

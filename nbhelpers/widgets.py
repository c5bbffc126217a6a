"""Interactive ipywidgets views for the notebooks (they degrade to nothing when run headless)."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from nbhelpers.data.inspect import raw_samples
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.plots import FIG_DPI


def shard_browser(manifest: dict[str, Any], per_class: int = 24) -> widgets.Widget:
    """Browse a source's shards by split, class and sample: the picture, its text and its json."""
    split = widgets.Dropdown(options=list(manifest["splits"]), description="split")
    label = widgets.Dropdown(options=[(name, i) for i, name in enumerate(CLASSES)], description="class")
    index = widgets.IntSlider(min=0, max=per_class - 1, description="sample")
    out = widgets.Output()
    cache: dict[tuple[str, int], list[dict]] = {}

    def show(*_):
        key = (split.value, label.value)
        if key not in cache:
            cache[key] = raw_samples(manifest, split.value, per_class, label=label.value)
        samples = cache[key]
        out.clear_output(wait=True)
        with out:
            if not samples:
                print(f"no samples of class {CLASSES[label.value]!r} in {split.value}")
                return
            sample = samples[min(index.value, len(samples) - 1)]
            fig, ax = plt.subplots(figsize=(3.5, 3.5), dpi=FIG_DPI)
            ax.imshow(sample["image"])
            ax.axis("off")
            plt.show()
            print(sample["text"])
            print({k: v for k, v in sample["json"].items() if k != "attributes"})

    for w in (split, label, index):
        w.observe(show, names="value")
    show()
    box = widgets.VBox([widgets.HBox([split, label, index]), out])
    display(box)
    return box

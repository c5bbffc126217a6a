"""The shard browser draws into its output widget directly: a picture, its caption and json, per choice."""

import ipywidgets as widgets

from nbhelpers.widgets import _drawing, shard_browser


def _kinds(out):
    return [o["output_type"] for o in out.outputs]


def test_browser_shows_a_picture_then_its_text_and_follows_the_choices(small_synthetic):
    _, manifest = small_synthetic
    box = shard_browser(manifest, per_class=4)
    split, label, index = box.children[0].children
    out = box.children[1]
    assert _kinds(out) == ["display_data", "stream"]
    assert out.outputs[0]["data"]["image/png"]  # a PNG, not a live figure left open
    first = out.outputs[1]["text"]
    split.value = "test"
    assert _kinds(out) in (["display_data", "stream"], ["stream"])  # a class may have no test sample
    assert out.outputs[-1]["text"] != first


def test_a_failing_view_shows_its_traceback_in_place():
    out = widgets.Output()
    with _drawing(out):
        print("before")
        raise ValueError("no such sample")
    (stream,) = out.outputs
    assert stream["text"].startswith("before\n")
    assert "ValueError: no such sample" in stream["text"]

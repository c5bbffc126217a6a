"""The synthetic meme benchmark: a task that neither modality can solve alone.

Each meme is a picture (a filled figure on a textured grey background, with a meme phrase drawn along
its top edge) and a caption that names a colour. Its class is set jointly by the two::

    label = (picture_colour - caption_colour) mod 7

The figure's colour is one of seven well-separated colours, drawn uniformly and independently of the
caption's colour word, so each modality alone carries no information about the class: its class
distribution given either modality is uniform, and a model of one modality is at chance (1/7, about
14%). Both together fix the class exactly. Class 0 is the case where the caption names the colour
actually shown, so its captions truly describe their picture and are the only pairs the contrastive
losses trust (``valid_pair``), as for the real sources.

Why colour, and not the figure's shape: at demo scale an interaction label gives the image encoder
almost no gradient until the head has found the table, and a small CNN never learned shape that way
(chance after 18 epochs) while it learned colour fully (see ``shared/NOTES.md``). Shape, position,
size, background and the drawn phrase are nuisances, independent of the class.

The ``unseen`` split is built from shapes, caption templates and meme phrases that never occur in
``train``/``val``/``test``, as Hateful Memes' ``dev_unseen`` holds memes unlike the training ones: a model
that learned the colour relation carries over, one that memorised surface forms does not.

Everything is deterministic in ``seed``: sample ``i`` of split ``s`` is drawn from its own generator
seeded by ``(seed, s, i)``, so a split can be rendered in any order, resumed, or in parallel.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import check_limit, check_split
from nbhelpers.data.taxonomy import HATE, NUM_CLASSES, class_name

NAME = "synthetic"
SPLITS: tuple[str, ...] = ("train", "val", "test", "unseen")
#: Default number of samples per split (the ``demo`` preset); the ``t4`` preset asks for more.
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 500, "test": 1000, "unseen": 1000}

#: The seven colours, far apart in RGB so that a small CNN separates them after resizing and JPEG.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 230, 40),
    "green": (30, 170, 50),
    "cyan": (30, 220, 230),
    "blue": (30, 60, 220),
    "purple": (150, 40, 200),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
assert len(COLOUR_NAMES) == NUM_CLASSES

SEEN_SHAPES = ("circle", "square", "triangle", "diamond", "star")
UNSEEN_SHAPES = ("hexagon", "cross")
SEEN_TEMPLATES = (
    "a {colour} {shape}",
    "behold, the {colour} {shape}",
    "nobody: ... me: {colour} {shape}",
    "this {shape} is {colour} and you know it",
    "when the {shape} is {colour}",
    "my {colour} {shape} collection keeps growing",
    "they said it could never be {colour}",
    "{colour}. that is all.",
)
UNSEEN_TEMPLATES = (
    "breaking news: {shape} turns {colour}",
    "rate my {colour} {shape} from 1 to 10",
    "pov: everything is {colour}",
)
SEEN_PHRASES = (
    "WHEN YOU SEE IT",
    "ME EVERY MONDAY",
    "TRUST ME",
    "IT BE LIKE THAT",
    "NO CAPTION NEEDED",
    "MOOD",
)
UNSEEN_PHRASES = ("PLOT TWIST", "SAY LESS", "EXPECTATION VS REALITY")

# Meme-style text: white with a dark outline, large enough to read at 256 px.
_TEXT_FILL = (255, 255, 255)
_TEXT_STROKE = (0, 0, 0)


@dataclass(frozen=True)
class MemeSpec:
    """Everything needed to draw one synthetic meme, and its ground-truth attributes."""

    image_colour: int
    text_colour: int
    shape: str
    template: str
    phrase: str
    centre: tuple[float, float]
    radius: float
    background: int
    noise_seed: int
    size: int

    @property
    def label(self) -> int:
        return (self.image_colour - self.text_colour) % NUM_CLASSES

    @property
    def caption(self) -> str:
        return self.template.format(colour=COLOUR_NAMES[self.text_colour], shape=self.shape)


def check(raw_dir: Path | str | None = None) -> None:
    """The synthetic source needs no raw files; kept for the common source interface."""


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def sample_spec(seed: int, split: str, index: int, size: int = 256) -> MemeSpec:
    """Draws the attributes of sample ``index`` of ``split``, deterministically in ``seed``."""
    rng = _rng(seed, split, index)
    unseen = split == "unseen"
    shapes = UNSEEN_SHAPES if unseen else SEEN_SHAPES
    templates = UNSEEN_TEMPLATES if unseen else SEEN_TEMPLATES
    phrases = UNSEEN_PHRASES if unseen else SEEN_PHRASES
    radius = float(rng.uniform(0.16, 0.26))
    # Keep the figure clear of the top band where the phrase is drawn.
    centre = (
        float(rng.uniform(radius + 0.02, 0.98 - radius)),
        float(rng.uniform(0.3 + radius * 0.6, 0.98 - radius)),
    )
    return MemeSpec(
        image_colour=int(rng.integers(NUM_CLASSES)),
        text_colour=int(rng.integers(NUM_CLASSES)),
        shape=str(shapes[rng.integers(len(shapes))]),
        template=str(templates[rng.integers(len(templates))]),
        phrase=str(phrases[rng.integers(len(phrases))]),
        centre=centre,
        radius=radius,
        background=int(rng.integers(40, 216)),
        noise_seed=int(rng.integers(2**31)),
        size=size,
    )


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        w = r / 3
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
            (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    corners = {"triangle": 3, "hexagon": 6, "star": 10}[shape]
    points = []
    for i in range(corners):
        angle = -np.pi / 2 + 2 * np.pi * i / corners
        radius = r * (0.45 if shape == "star" and i % 2 else 1.0)
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


@functools.lru_cache(maxsize=4)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def render(spec: MemeSpec) -> Image.Image:
    """Draws the meme of ``spec`` as an RGB image of ``spec.size`` pixels square."""
    size = spec.size
    rng = np.random.default_rng(spec.noise_seed)
    # A grey, slightly noisy, vertically shaded background: no hue, so it never mimics a class colour.
    shade = np.linspace(-20, 20, size)[:, None] * rng.choice([-1, 1])
    grey = np.clip(spec.background + shade + rng.normal(0, 8, (size, size)), 0, 255)
    img = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    colour = tuple(
        int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[COLOUR_NAMES[spec.image_colour]]
    )
    cx, cy, r = spec.centre[0] * size, spec.centre[1] * size, spec.radius * size
    if spec.shape == "circle":
        draw.ellipse(
            [cx - r, cy - r, cx + r, cy + r], fill=colour, outline=(0, 0, 0), width=max(1, size // 128)
        )
    else:
        draw.polygon(
            _polygon(spec.shape, cx, cy, r), fill=colour, outline=(0, 0, 0), width=max(1, size // 128)
        )
    font = _font(max(10, size // 12))
    text_width = draw.textlength(spec.phrase, font=font)
    draw.text(
        ((size - text_width) / 2, size * 0.04),
        spec.phrase,
        font=font,
        fill=_TEXT_FILL,
        stroke_width=max(1, size // 128),
        stroke_fill=_TEXT_STROKE,
    )
    return img.filter(ImageFilter.SMOOTH) if size >= 128 else img


def attributes(spec: MemeSpec) -> dict:
    """The ground-truth attributes of a meme, split by modality (written to each sample's ``json``)."""
    return {
        "image": {"colour": COLOUR_NAMES[spec.image_colour], "shape": spec.shape, "phrase": spec.phrase},
        "text": {"colour": COLOUR_NAMES[spec.text_colour], "template": spec.template},
    }


def read(
    raw_dir: Path | str | None,
    split: str,
    skips: SkipCounter,
    limit: int | None = None,
    *,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    image_size: int = 256,
) -> Iterator[Record]:
    """Yields the records of ``split``; images are drawn lazily when the shard writer asks.

    Args:
        raw_dir: unused (the benchmark is generated).
        split: one of :data:`SPLITS`.
        skips: unused: generated samples are never skipped.
        limit: at most this many records.
        seed: the benchmark's seed.
        sizes: samples per split (default :data:`DEFAULT_SIZES`).
        image_size: the side of the drawn images in pixels.

    Raises:
        ValueError: for an unknown split or a negative ``limit``.
    """
    check_split(NAME, split, SPLITS)
    check_limit(limit)
    n = (sizes or DEFAULT_SIZES)[split]
    if limit is not None:
        n = min(n, limit)
    for index in range(n):
        spec = sample_spec(seed, split, index, image_size)
        label = spec.label
        yield Record(
            source=NAME,
            source_id=f"{split}-{index:06d}",
            split=split,
            text=spec.caption,
            label=label,
            image=functools.partial(render, spec),
            meta={
                "hateful": int(label == HATE),
                "attributes": attributes(spec),
                "class_name": class_name(label),
            },
        )

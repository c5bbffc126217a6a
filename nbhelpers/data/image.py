"""Decoding and squaring images for the shards.

Memes carry their text along the top and bottom edges, and tweets and news pictures put the subject
anywhere, so a centre crop would cut exactly what matters. Images are therefore *letterboxed*: scaled so
the longer side fits ``size`` and padded to a square with a neutral grey, keeping the whole picture.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from nbhelpers.data.records import ImageRef

PAD_COLOUR = (124, 116, 104)  # ImageNet mean in 0..255, a neutral grey for the padding
JPEG_QUALITY = 92


class ImageDecodeError(ValueError):
    """An image file that is missing, truncated or cannot be decoded."""


def load_rgb(ref: ImageRef) -> Image.Image:
    """Loads ``ref`` (a path, or a callable drawing an image) fully into an RGB image.

    Raises:
        ImageDecodeError: if the file is missing, truncated or not an image.
    """
    if callable(ref) and not isinstance(ref, Path):
        return ref().convert("RGB")
    path = Path(ref)
    if not path.is_file():
        raise ImageDecodeError(f"missing image file {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # forces a full decode: truncated files fail here, not later
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"cannot decode {path}: {err}") from err


def letterbox(img: Image.Image, size: int, fill: tuple[int, int, int] = PAD_COLOUR) -> Image.Image:
    """Scales ``img`` so its longer side is ``size`` and pads it to ``size`` x ``size``."""
    if img.size == (size, size):
        return img
    return ImageOps.pad(img, (size, size), method=Image.Resampling.BICUBIC, color=fill, centering=(0.5, 0.5))


def encode_jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encodes an RGB image as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

"""What a readable image is, and decoding and squaring images for the shards.

One rule, applied to raw files when shards are written and to shard members when they are read:

- at most :data:`MAX_PIXELS` pixels (read from the header, before anything is decoded); a larger image,
  or one PIL itself calls a decompression bomb, is rejected as ``image_too_large``;
- it decodes completely (a truncated or corrupt file is ``undecodable_image``);
- every mode becomes 8-bit RGB without clipping: 16-bit grey (``I;16*``, and ``I``, which is how 16-bit
  PNGs decode) is scaled from 0..65535 to 0..255; ``F`` is taken as 0..255, PIL's convention; palette,
  grey or RGB images with transparency and ``LA``/``PA``/``RGBA`` are composited over white (the page
  a transparent meme is drawn on), not stripped of their alpha, which would show whatever colour the
  transparent pixels happen to hold; ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``1``, ``L`` and ``P``
  through PIL's conversions. EXIF orientation is applied.

Memes carry their text along the top and bottom edges, and tweets and news pictures put the subject
anywhere, so a centre crop would cut exactly what matters. Images are therefore *letterboxed*: scaled so
the longer side fits ``size`` and padded to a square with a neutral grey, keeping the whole picture.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from nbhelpers.data.records import ImageRef
from nbhelpers.data.validity import Rejected

PAD_COLOUR = (124, 116, 104)  # ImageNet mean in 0..255, a neutral grey for the padding
JPEG_QUALITY = 92
#: PIL's own default warning threshold (about 0.25 GiB as 8-bit RGB); applied here whatever
#: ``Image.MAX_IMAGE_PIXELS`` is set to, so a 20000x20000 header is refused before it is decoded.
MAX_PIXELS = 89_478_485
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa"})


class ImageDecodeError(Rejected):
    """An image that is missing, truncated, too large or cannot be decoded; ``reason`` says which."""

    def __init__(self, message: str, reason: str = "undecodable_image"):
        super().__init__(reason, message)


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts a decoded image of any mode to 8-bit RGB, by the rules in the module docstring."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _SIXTEEN_BIT:
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # 65535 -> 255, rounded
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "F":
        grey = np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode in _ALPHA or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _decode(fp, name: str, min_side: int | None = None) -> Image.Image:
    """Opens, checks the size of, fully decodes and converts the image in ``fp`` (a path or file object).

    With ``min_side``, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (PIL's draft mode: the scaling
    is done inside the DCT, so the pixels dropped are never computed), the smallest scale whose shorter
    side is still at least ``min_side``. Other formats decode at full size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                pixels = img.width * img.height
                if pixels > MAX_PIXELS:
                    raise ImageDecodeError(
                        f"{name}: {img.width}x{img.height} = {pixels:,} pixels, more than the limit of "
                        f"{MAX_PIXELS:,} pixels",
                        "image_too_large",
                    )
                if min_side is not None:
                    img.draft("RGB", (min_side, min_side))  # a no-op for formats other than JPEG
                img.load()  # forces a full decode: truncated files fail here, not later
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(
            f"{name}: more than the limit of {MAX_PIXELS:,} pixels ({err})", "image_too_large"
        ) from err
    except Exception as err:  # PIL raises many types on hostile files; each is one undecodable image
        raise ImageDecodeError(f"cannot decode {name}: {type(err).__name__}: {err}") from err


def load_rgb(ref: ImageRef) -> Image.Image:
    """Loads ``ref`` (a path, or a callable drawing an image) fully into an RGB image.

    Raises:
        ImageDecodeError: if the file is missing, too large, truncated or not an image (``reason`` says
            which).
    """
    if callable(ref) and not isinstance(ref, Path):
        return to_rgb(ref())
    path = Path(ref)
    if not path.is_file():
        raise ImageDecodeError(f"missing image file {path}")
    return _decode(path, str(path))


def decode_rgb(data: bytes, name: str, min_side: int | None = None) -> Image.Image:
    """Decodes image bytes (a shard's ``jpg`` member) into an RGB image, by the same rule as raw files.

    Args:
        data: the encoded image.
        name: what to call it in an error (e.g. the shard and key).
        min_side: decode a JPEG at a reduced scale whose shorter side is still at least this many pixels
            (e.g. 96 turns a 256 px JPEG into 128 px); None: full size. The size check applies to the
            full size, as stored.

    Raises:
        ImageDecodeError: if it is too large or cannot be decoded.
    """
    return _decode(io.BytesIO(data), name, min_side)


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

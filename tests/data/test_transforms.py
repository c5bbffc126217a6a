"""The streamed training transform: reduced JPEG decoding, one-resample crops, per-batch normalisation."""

import io
import math

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from nbhelpers.data.image import decode_rgb, encode_jpeg
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD, RandomResizedCropFlip, batch_normalize


def _jpeg(width: int, height: int) -> bytes:
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return encode_jpeg(gradient)


@pytest.mark.parametrize(
    ("min_side", "size"),
    [(None, (256, 256)), (96, (128, 128)), (64, (64, 64)), (63, (64, 64)), (32, (32, 32)), (1, (32, 32)),
     (129, (256, 256)), (300, (256, 256))],
)  # fmt: skip
def test_jpeg_decodes_at_the_smallest_scale_keeping_min_side(min_side, size):
    image = decode_rgb(_jpeg(256, 256), "x.jpg", min_side)
    assert image.size == size and image.mode == "RGB"


def test_min_side_is_the_shorter_side_and_other_formats_decode_in_full():
    assert decode_rgb(_jpeg(256, 128), "wide.jpg", 64).size == (128, 64)
    png = io.BytesIO()
    Image.new("RGB", (256, 256), (1, 2, 3)).save(png, format="PNG")
    assert decode_rgb(png.getvalue(), "x.png", 64).size == (256, 256)


def test_a_reduced_decode_is_close_to_a_full_decode_resized():
    data = _jpeg(256, 256)
    reduced = v2.functional.pil_to_tensor(decode_rgb(data, "x.jpg", 128)).float()
    full = v2.functional.pil_to_tensor(decode_rgb(data, "x.jpg").resize((128, 128), Image.BILINEAR)).float()
    assert (reduced - full).abs().mean() < 2.0  # grey levels out of 255


@pytest.mark.parametrize(("size", "min_scale", "side"), [(64, 0.6, 96), (224, 0.6, 334), (64, 1.0, 74)])
def test_min_side_makes_the_smallest_crop_a_downscale(size, min_scale, side):
    crop = RandomResizedCropFlip(size, min_scale)
    assert crop.min_side == side
    narrowest = math.sqrt(min_scale * 3 / 4) * side  # the shorter side of the smallest, narrowest crop
    assert size <= narrowest < size + 1


def test_crop_flip_gives_uint8_of_the_size_and_follows_torch_seed():
    image = decode_rgb(_jpeg(200, 150), "x.jpg")
    crop = RandomResizedCropFlip(48)
    torch.manual_seed(5)
    first = [crop(image) for _ in range(4)]
    torch.manual_seed(5)
    again = [crop(image) for _ in range(4)]
    assert all(t.shape == (3, 48, 48) and t.dtype == torch.uint8 for t in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(first[0], t) for t in first[1:])  # random crops


def test_a_full_crop_of_a_square_is_a_resize_and_a_flip_mirrors():
    image = Image.linear_gradient("L").convert("RGB")  # 256 x 256, dark at the top
    crop = RandomResizedCropFlip(32, min_scale=1.0, ratio=(1.0, 1.0))
    torch.manual_seed(0)
    expected = v2.functional.pil_to_tensor(image.resize((32, 32), Image.BILINEAR))
    seen = {torch.equal(crop(image), expected) for _ in range(20)}
    assert seen == {True}  # a vertical gradient: the flip leaves it as it is
    side = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).convert("RGB")
    outs = {crop(side)[0, 0, 0].item() for _ in range(20)}
    assert len(outs) == 2  # flipped or not: the first column is one end of the gradient or the other


def test_batch_normalize_equals_per_sample_to_float_and_normalize():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    per_sample = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)])
    expected = torch.stack([per_sample(v2.functional.to_image(i)) for i in images])
    torch.testing.assert_close(batch_normalize()(images), expected, rtol=0, atol=1e-6)


def test_min_scale_out_of_range_is_refused():
    with pytest.raises(ValueError, match="min_scale must be in"):
        RandomResizedCropFlip(32, min_scale=0.0)

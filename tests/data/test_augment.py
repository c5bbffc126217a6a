"""Batch augmentation: per-sample random views of uint8 batches, a function of the generator's seed."""

from __future__ import annotations

import torch

from nbhelpers.data.augment import BatchViews, ViewSpec, colour_jitter, gaussian_blur, resized_crop

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def solid(colour, n=4, size=16):
    return torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, size, size).contiguous()


def denorm(x):
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_views_keep_colour_without_jitter_and_change_it_with():
    images = solid((220, 30, 30))
    specs = [ViewSpec(16, (0.4, 1.0), 1.0, 0.0), ViewSpec(8, (0.05, 0.4), 0.5, 0.0)]
    plain = BatchViews(specs, colour_jitter=0.0, grayscale_p=0.0, mean=MEAN, std=STD)(
        images, torch.Generator().manual_seed(0)
    )
    assert [tuple(v.shape) for v in plain] == [(4, 3, 16, 16), (4, 3, 8, 8)]
    for view in plain:  # crops, flips and blurs of a flat colour are that colour
        torch.testing.assert_close(
            denorm(view), images[:, :, :1, :1].float().expand_as(view) / 255, atol=1e-5, rtol=0
        )
    jittered = BatchViews(
        specs[:1], colour_jitter=1.0, colour_jitter_p=1.0, grayscale_p=0.0, mean=MEAN, std=STD
    )(images, torch.Generator().manual_seed(0))[0]
    assert (denorm(jittered) - denorm(plain[0])).abs().amax(dim=(1, 2, 3)).min() > 0.01
    gray = BatchViews(specs[:1], colour_jitter=0.0, grayscale_p=1.0, mean=MEAN, std=STD)(
        images, torch.Generator().manual_seed(0)
    )[0]
    rgb = denorm(gray)
    torch.testing.assert_close(rgb[:, 0], rgb[:, 1], atol=1e-5, rtol=0)


def test_views_are_a_function_of_the_seed_and_differ_per_sample():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    views = BatchViews([ViewSpec(16, (0.2, 1.0), 0.5, 0.2)], colour_jitter=1.0, mean=MEAN, std=STD)
    a = views(images, torch.Generator().manual_seed(3))[0]
    b = views(images, torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    same = views(images[:1].expand(6, -1, -1, -1), torch.Generator().manual_seed(3))[0]
    assert (same[0] - same[1:]).abs().amax() > 0.1  # one image, six different views


def test_resized_crop_of_the_whole_image_is_the_image():
    x = torch.rand(3, 3, 12, 12)
    middle = lambda low=0.0, high=1.0: torch.full((3,), (low + high) / 2)  # noqa: E731
    torch.testing.assert_close(resized_crop(x, 12, (1.0, 1.0), middle), x, atol=1e-5, rtol=0)


def test_gaussian_blur_matches_torchvision_per_sample():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(3, 3, 10, 10)
    sigma = torch.tensor([0.3, 0.8, 1.5])
    out = gaussian_blur(x, sigma, max_sigma=1.5)
    for i in range(3):
        expected = TF.gaussian_blur(x[i], kernel_size=[11, 11], sigma=[float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_colour_jitter_of_strength_zero_is_identity():
    x = torch.rand(4, 3, 5, 5)
    draw = lambda low=0.0, high=1.0: torch.rand(4) * (high - low) + low  # noqa: E731
    torch.testing.assert_close(colour_jitter(x, 0.0, draw), x, atol=1e-5, rtol=0)

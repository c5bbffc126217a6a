import math

import pytest

from benchmarks import t4_figures
from benchmarks.t4_figures import data_bound, epoch_minutes, peak_flops, t4_samples_per_s


def test_the_datasheet_peaks():
    assert peak_flops("fp16") == 65e12
    assert peak_flops("fp32") == peak_flops("no") == 8.1e12
    # no bf16 Tensor Cores on a T4: emulated, estimated at the fp32 peak
    assert peak_flops("bf16") == 8.1e12
    assert t4_figures.MEMORY_BANDWIDTH == 320e9


def test_samples_per_s_is_the_assumed_share_of_the_peak_over_a_samples_flops():
    # ViT-B/32 at 224 px: about 4.4 GFLOPs forward, x3 for forward + backward.
    flops = 3 * 4.4e9
    fp16 = t4_samples_per_s(flops, "fp16")
    assert fp16 == pytest.approx(0.30 * 65e12 / flops)  # about 1,477 samples/s
    assert t4_samples_per_s(flops, "fp32") == pytest.approx(fp16 * 8.1 / 65)
    assert t4_samples_per_s(flops, "bf16") == t4_samples_per_s(flops, "fp32")
    assert t4_samples_per_s(flops, "fp16", share=0.6) == pytest.approx(2 * fp16)
    assert t4_samples_per_s(2 * flops, "fp16") == pytest.approx(fp16 / 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(flops_per_sample=1e9, precision="int8"),
            "precision: 'int8' is not one of fp16, fp32, bf16, no",
        ),
        (dict(flops_per_sample=0.0, precision="fp16"), "flops_per_sample: must be positive and finite"),
        (dict(flops_per_sample=math.nan, precision="fp16"), "flops_per_sample: must be positive and finite"),
        (dict(flops_per_sample=1e9, precision="fp16", share=1.5), r"share: must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        t4_samples_per_s(**kwargs)


def test_epoch_minutes():
    assert epoch_minutes(60_000, 100.0) == 10.0
    assert epoch_minutes(0, 5.0) == 0.0
    with pytest.raises(ValueError, match="samples_per_s: must be positive and finite"):
        epoch_minutes(10, 0.0)
    with pytest.raises(ValueError, match="samples_per_epoch: must be >= 0"):
        epoch_minutes(-1, 10.0)


def test_data_bound_names_the_slower_side():
    assert data_bound(200.0, 1000.0) == "data"
    assert data_bound(1000.0, 200.0) == "gpu"
    assert data_bound(500.0, 500.0) == "gpu"  # the loader keeps up
    assert data_bound(math.inf, 200.0) == "gpu"  # data already on the device
    with pytest.raises(ValueError, match="loader_samples_per_s: must be positive"):
        data_bound(math.nan, 1.0)
    with pytest.raises(ValueError, match="gpu_samples_per_s: must be positive"):
        data_bound(1.0, 0.0)

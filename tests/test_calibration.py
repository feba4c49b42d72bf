"""Calibration methods for the input ranges."""

import pytest
import torch

from xbar import HardwareConfig, calibrate, prepare
from xbar.passes.numerics.calibration import CalibrationMethod, RangeObserver

from conftest import make_input, make_model


def observe(method, batches, **options):
    observer = RangeObserver(method, **options)
    for batch in batches:
        observer.observe(batch)
    return observer.result()


BATCHES = [torch.tensor([1.0, -4.0, 2.0, 0.0]), torch.tensor([0.5, 3.0, -1.0, 6.0])]


def test_each_method_against_a_direct_computation():
    assert observe(CalibrationMethod.MAX, BATCHES) == 6.0
    stds = [float(b.std()) for b in BATCHES]
    assert observe(CalibrationMethod.MOVING_STD, BATCHES, std_alpha=2.0) == pytest.approx(sum(stds))
    # nearest-rank 75% quantile of |x|: 3rd of 4 sorted values per batch, then averaged
    assert observe(CalibrationMethod.MOVING_QUANTILE, BATCHES, quantile=0.75) == pytest.approx((2.0 + 3.0) / 2)
    assert observe(CalibrationMethod.CACHE_QUANTILE, BATCHES, quantile=0.75) == pytest.approx(3.0)


def test_cache_quantile_is_deterministic_and_bounded():
    batches = [torch.randn(5000, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    first = observe(CalibrationMethod.CACHE_QUANTILE, batches, quantile=0.99, max_samples=1000)
    assert first == observe(CalibrationMethod.CACHE_QUANTILE, batches, quantile=0.99, max_samples=1000)
    assert 2.0 < first < 3.2  # the 99% quantile of |N(0, 1)| is about 2.58


@pytest.mark.parametrize("method", [m.value for m in CalibrationMethod])
def test_calibrate_sets_ranges_and_records_the_method(method):
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),), HardwareConfig())
    batches = [make_input("mlp", 64, seed=s) for s in range(3)]
    assert calibrate(prepared, batches, method) == 3
    module = prepared.fc1_input_range
    assert module.params.calibration_info.startswith(method)
    value = module.value.item()
    assert value != 3.0 and value > 0
    if method != "InitFromData":  # a post-training calibration is final: training does not re-initialise it
        prepared.train()(batches[0] * 10)
        assert module.value.item() == value
    if method == "Max":
        assert value == pytest.approx(max(float(b.abs().max()) for b in batches))
    again = prepare(make_model("mlp"), (make_input("mlp", 2),), HardwareConfig())
    calibrate(again, batches, method)
    assert again.fc1_input_range.value.item() == value

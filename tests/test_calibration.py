"""Calibration methods for the input ranges."""

import pytest
import torch

from xbar import HardwareConfig, calibrate, convert, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.numerics.calibration import OBSERVERS, CalibrationMethod, ObserverOptions, observer_for

from conftest import make_input, make_model


def observe(method, batches, **options):
    observer = observer_for(method, ObserverOptions(**options))
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
    assert record_of(prepared, "test", Stage.PREPARED).calibration["fc1_input_range"].startswith(method)
    assert module.params.calibration_info is None  # what calibration found is not hardware config
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


def test_every_post_training_method_has_one_observer_class():
    assert set(OBSERVERS) == set(CalibrationMethod) - {CalibrationMethod.INIT_FROM_DATA}
    assert len(set(OBSERVERS.values())) == len(OBSERVERS)
    for method, cls in OBSERVERS.items():
        assert cls.method is method and observer_for(method).describe().startswith(method.value)


def test_the_calibration_record_survives_convert_and_a_second_calibration_keeps_the_latest():
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),), HardwareConfig())
    batches = [make_input("mlp", 64, seed=s) for s in range(2)]
    calibrate(prepared, batches, "Max")
    calibrate(prepared, batches, "MovingStd")
    found = record_of(prepared, "test", Stage.PREPARED).calibration
    assert set(found) == {"fc1_input_range", "fc2_input_range", "fc3_input_range"}
    assert found["fc1_input_range"].startswith("MovingStd")
    assert record_of(convert(prepared), "test", Stage.CONVERTED).calibration == found

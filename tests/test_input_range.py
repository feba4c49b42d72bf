"""The learned input range against a straightforward reference of aihwkit's rule."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbar.passes.numerics.input_range import InputRange, learned_clip, update_range_from_data
from xbar.passes.parameters import InputRangeParameter


def reference_range_gradient(x, d, r, p: InputRangeParameter) -> float:
    """The README's input-range rule, written out with numpy loops' worth of clarity."""
    x, d = np.asarray(x, dtype=np.float64), np.asarray(d, dtype=np.float64)
    upper, lower = x >= r, x <= -r
    g = np.minimum(d[upper], 0).sum() - np.maximum(d[lower], 0).sum()
    if p.gradient_relative:
        g *= r * p.gradient_scale
    # the unclipped fraction and its threshold in float32, as the module compares them: a fraction equal
    # to the threshold (1/3 against 1/3) must fall on the same side in both
    unclipped = np.float32(1.0) - np.float32((upper | lower).sum()) / np.float32(x.size)
    if p.decay > 0 and unclipped > np.float32(p.input_min_percentage):
        g += p.decay * r
    return g


def run_clip(x, d, r, params):
    x = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    r = torch.tensor(r, dtype=torch.float32, requires_grad=True)
    out = learned_clip(x, r, params)
    out.backward(torch.tensor(d, dtype=torch.float32))
    return out, x.grad, r.grad


values = st.floats(-4, 4, allow_nan=False, width=32)
inputs = st.one_of(values, st.sampled_from(["+r", "-r"]))  # edge cases exactly at the range


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(inputs, values), min_size=1, max_size=40),
    r=st.floats(0.0625, 3.0, width=32),
    relative=st.booleans(),
    scale=st.floats(0.0, 2.0),
    decay=st.sampled_from([0.0, 0.001, 0.5]),
    min_pct=st.floats(0.0, 1.0),
)
def test_gradient_matches_reference(data, r, relative, scale, decay, min_pct):
    x = [{"+r": r, "-r": -r}.get(v, v) for v, _ in data]
    d = [g for _, g in data]
    params = InputRangeParameter(enable=True, gradient_relative=relative, gradient_scale=scale,
                                 decay=decay, input_min_percentage=min_pct)
    out, grad_x, grad_r = run_clip(x, d, r, params)
    r32 = float(np.float32(r))
    x32 = np.asarray(x, dtype=np.float32)
    assert np.allclose(out.detach().numpy(), np.clip(x32, -r32, r32))
    inside = (x32 > -r32) & (x32 < r32)
    assert np.array_equal(grad_x.numpy(), np.where(inside, np.float32(d), 0.0).astype(np.float32))
    assert grad_r.item() == pytest.approx(reference_range_gradient(x32, np.float32(d), r32, params), rel=1e-4, abs=1e-5)


def test_inputs_exactly_at_the_range_are_clipped():
    params = InputRangeParameter(enable=True, decay=0.0, gradient_relative=False)
    _, grad_x, grad_r = run_clip([2.0, -2.0, 1.0], [-1.0, 3.0, 5.0], 2.0, params)
    assert grad_x.tolist() == [0.0, 0.0, 5.0]
    assert grad_r.item() == pytest.approx(-1.0 - 3.0)


def test_all_clipped_gets_no_decay_and_none_clipped_gets_only_decay():
    params = InputRangeParameter(enable=True, decay=0.1, input_min_percentage=0.5)
    _, grad_x, grad_r = run_clip([5.0, -5.0], [-1.0, 1.0], 1.0, params)
    assert grad_x.tolist() == [0.0, 0.0]
    assert grad_r.item() == pytest.approx(-2.0)  # relative: (-1 - 1) * r; no decay: nothing unclipped
    _, grad_x, grad_r = run_clip([0.1, -0.2], [1.0, 1.0], 1.0, params)
    assert grad_x.tolist() == [1.0, 1.0]
    assert grad_r.item() == pytest.approx(0.1 * 1.0)


def test_init_from_data_averages_std_and_skips_constant_batches():
    params = InputRangeParameter(enable=True, init_from_data=3, init_std_alpha=2.0)
    r, seen = torch.tensor(3.0), torch.zeros((), dtype=torch.long)
    batches = [torch.tensor([1.0, 3.0]), torch.full((4,), 7.0), torch.tensor([0.0, 4.0, 8.0]),
               torch.tensor([-1.0, 1.0]), torch.tensor([0.0, 100.0])]
    stds = []
    for batch in batches:
        update_range_from_data(r, seen, batch, params)
        if batch.std() > 0 and len(stds) < 3:
            stds.append(float(batch.std()))
    assert int(seen) == 3  # the constant batch did not count; the fifth came too late
    assert float(r) == pytest.approx(2.0 * np.mean(stds), rel=1e-6)


def test_module_updates_only_in_training_or_calibration():
    module = InputRange(InputRangeParameter(enable=True, init_from_data=5))
    x = torch.randn(64) * 2
    module.eval()
    module(x)
    assert module.value.item() == 3.0
    module.calibrating = True
    module(x)
    assert module.value.item() == pytest.approx(3.0 * float(x.std()), rel=1e-5)
    assert int(module.init_batches) == 1


def test_fixed_range_is_a_buffer_not_a_parameter():
    module = InputRange(InputRangeParameter(enable=True, learn_input_range=False))
    assert list(module.parameters()) == []
    assert "value" in dict(module.named_buffers())
    learned = InputRange(InputRangeParameter(enable=True))
    assert [name for name, _ in learned.named_parameters()] == ["value"]

"""DAC and ADC numerics and gradients against a direct numpy reading of the README's hardware model."""

import numpy as np
import pytest
import torch

from xbar.passes.numerics import periphery


def test_adc_quantises_clips_and_passes_gradient_only_inside_the_bound():
    weight = torch.tensor([[0.5, -2.0], [1.0, 0.25]])  # max |W| = 2
    bound, steps = 1.0, 8.0  # 8 steps over [-1, 1]: one step is 0.25 in units of I / max|W|
    # in units of I / max|W|: inside, exactly at the bound (counts as clipped), beyond it, rounding half to even
    units = np.array([[0.3, -1.0], [1.7, 0.125]], dtype=np.float32)
    current = torch.tensor(units * 2.0, requires_grad=True)

    out = periphery.adc(current * 1.0, weight, None, bound=bound, steps=steps, channel_dim=-1)
    out.backward(torch.full_like(out, 3.0))

    expected = np.clip(np.round(units * 4) / 4, -bound, bound) * 2.0
    assert np.array_equal(out.detach().numpy(), expected.astype(np.float32))
    inside = np.abs(units) < bound
    assert np.array_equal(current.grad.numpy(), np.where(inside, 3.0, 0.0).astype(np.float32))


def test_adc_without_resolution_only_clips():
    weight = torch.tensor([[4.0]])
    current = torch.tensor([[-9.0, 1.3, 8.0]], requires_grad=True)
    out = periphery.adc(current * 1.0, weight, None, bound=2.0, steps=0.0, channel_dim=-1)
    out.sum().backward()
    assert out.tolist() == [[-8.0, pytest.approx(1.3), 8.0]]
    assert current.grad.tolist() == [[0.0, 1.0, 0.0]]


def test_dac_rounds_to_its_steps_and_passes_gradient_straight_through():
    x = torch.tensor([-1.0, -0.25, 0.06, 0.95], requires_grad=True)
    out = periphery.dac(x.clone(), 10.0)  # 10 steps over [-1, 1]: multiples of 0.2
    out.backward(torch.ones_like(out))
    assert torch.allclose(out, torch.tensor([-1.0, -0.2, 0.0, 1.0]))
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


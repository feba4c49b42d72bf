"""The cost model: hermes reproduces its published peak in both modes; a two-layer case computed by hand."""

import dataclasses

import pytest

from xbar.compiler.chip.cost import layer_cost, model_cost, mvm_ns, peak
from xbar.compiler.chip.shipped import HERMES, HERMES_PEAK
from xbar.compiler.chip.work import LayerWork, TileWork


@pytest.mark.parametrize("phases", sorted(HERMES_PEAK))
def test_hermes_reproduces_its_published_peak_within_5_percent(phases):
    tops, tops_per_watt = peak(HERMES.with_mode(phases))
    published_tops, published_efficiency = HERMES_PEAK[phases]
    assert tops == pytest.approx(published_tops, rel=0.05)
    assert tops_per_watt == pytest.approx(published_efficiency, rel=0.05)


TOY = dataclasses.replace(
    HERMES, name="toy", cores=2, arrays_per_core=2, rows=4, columns=4, pair_layout="columns", columns_per_adc=2,
    input_mode="pwm", phases=2, pass_ns=10.0, mvm_fixed_ns=1.0, pass_pj=3.0, dac_pj=0.5, adc_pj=0.25,
    output_pj=0.125, digital_ops_per_ns=2.0, digital_pj_per_op=0.1, noc_bytes_per_ns=4.0, noc_pj_per_byte=0.2,
    input_bits=8)
"""4x4 arrays of two-column pairs (2 weight columns), 2 columns per ADC, two-phase inputs."""


def test_two_layer_case_by_hand():
    # fc1: 6 inputs -> 2 outputs on two row tiles (4 + 2 rows), 3 MVMs; fc2: 2 -> 2 on one tile, 3 MVMs
    fc1 = LayerWork("fc1", (TileWork("fc1_t0", (0, 4), (0, 2)), TileWork("fc1_t1", (4, 6), (0, 2))), mvms=3)
    fc2 = LayerWork("fc2", (TileWork("fc2", (0, 2), (0, 2)),), mvms=3)
    t_mvm = 2 * 2 * 10.0 + 1.0  # P m t_pass + t_fixed = 41 ns
    assert mvm_ns(TOY) == t_mvm
    # E_t = a P (m E_pass + h E_dac + d w E_adc) + w E_out
    e_t0 = 1 * 2 * (2 * 3.0 + 4 * 0.5 + 2 * 2 * 0.25) + 2 * 0.125   # 18.25
    e_t1 = 1 * 2 * (2 * 3.0 + 2 * 0.5 + 2 * 2 * 0.25) + 2 * 0.125   # 16.25
    d1 = 2 * 6 + 2 * 2 + 2           # clip+scale 6 inputs, rescale+bias 2 outputs, 2 partial-sum adds = 18
    b1 = 6 + 2                       # one byte per activation in and out
    cost = layer_cost(TOY, fc1, replicas=1)
    assert cost.latency_ns == pytest.approx(3 * (t_mvm + d1 / 2.0 + b1 / 4.0))  # 3 * (41 + 9 + 2) = 156
    assert cost.energy_array_pj == pytest.approx(3 * (e_t0 + e_t1))
    assert cost.energy_digital_pj == pytest.approx(3 * d1 * 0.1)
    assert cost.energy_movement_pj == pytest.approx(3 * b1 * 0.2)
    assert cost.operations == 2 * 3 * 12

    replicated = layer_cost(TOY, fc1, replicas=3)  # the MVMs are shared out; the energy is not
    assert replicated.latency_ns == pytest.approx(3 * (t_mvm / 3 + d1 / 2.0 + b1 / 4.0))
    assert replicated.energy_pj == pytest.approx(cost.energy_pj)

    total = model_cost(TOY, [fc1, fc2], {"fc1": 1})
    fc2_latency = 3 * (t_mvm + (2 * 2 + 2 * 2) / 2.0 + 4 / 4.0)  # 3 * 46 = 138
    assert total.latency_ns == pytest.approx(156 + fc2_latency)
    assert total.interval_ns == pytest.approx(156)  # the slower stage
    assert total.tops == pytest.approx(total.operations / 156 / 1e3)
    assert total.tops_per_watt == pytest.approx(total.operations / total.energy_pj)
    assert model_cost(TOY, [fc1, fc2], {}, array_busy_ns=500.0).interval_ns == 500.0

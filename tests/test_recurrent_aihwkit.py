"""xbar's unrolled LSTM against aihwkit's AnalogRNN of AnalogLSTMCell on TorchInferenceRPUConfig tiles."""

import pytest
import torch
from aihwkit.nn import AnalogLSTMCell, AnalogRNN
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from test_recurrent import BATCH, FEATURES, HIDDEN, Recurrent
from torch import nn

from xbar import HardwareConfig, calibrate, prepare
from xbar.compiler.pipeline.stages import input_ranges


def aihwkit_config(inp_res: int, out_res: int, out_bound: float, init_value: float,
                   init_from_data: int) -> TorchInferenceRPUConfig:
    """aihwkit's torch inference tile with xbar's 8-bit periphery: no noise, no noise or bound management,
    weights scaled to max |W| = 1 (as the conductance converter does), a digital bias."""
    rpu = TorchInferenceRPUConfig()
    rpu.forward.inp_res, rpu.forward.out_res, rpu.forward.out_bound = inp_res, out_res, out_bound
    rpu.forward.out_noise = rpu.forward.w_noise = 0.0
    rpu.forward.noise_management = NoiseManagementType.NONE
    rpu.forward.bound_management = BoundManagementType.NONE
    rpu.pre_post.input_range.enable = True
    rpu.pre_post.input_range.init_value = init_value
    rpu.pre_post.input_range.init_from_data = init_from_data
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = False
    rpu.mapping.digital_bias = True
    return rpu


def analog_lstm(reference: nn.LSTM, rpu: TorchInferenceRPUConfig) -> AnalogRNN:
    """aihwkit's AnalogLSTM (AnalogRNN of AnalogLSTMCell) holding ``reference``'s weights and biases."""
    analog = AnalogRNN(AnalogLSTMCell, reference.input_size, reference.hidden_size,
                       num_layers=reference.num_layers, bidir=reference.bidirectional, rpu_config=rpu)
    for layer in range(reference.num_layers):
        for direction in range(2 if reference.bidirectional else 1):
            cell = analog.rnn.layers[layer].directions[direction].cell if reference.bidirectional else \
                analog.rnn.layers[layer].cell
            suffix = f"_l{layer}{'_reverse' if direction else ''}"
            for matmul in ("ih", "hh"):
                getattr(cell, f"weight_{matmul}").set_weights(getattr(reference, f"weight_{matmul}{suffix}"),
                                                             getattr(reference, f"bias_{matmul}{suffix}"))
    return analog


def xbar_config(**input_range) -> HardwareConfig:
    return HardwareConfig().with_overrides({
        "forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10,
        "pre_post.input_range.enable": True, **{f"pre_post.input_range.{k}": v for k, v in input_range.items()}})


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_the_forward_output_is_aihwkits_analog_lstm(method):
    torch.manual_seed(0)
    reference = nn.LSTM(FEATURES, HIDDEN, num_layers=2, bidirectional=True).eval()
    analog = analog_lstm(reference, aihwkit_config(254, 254, 10, init_value=1.5, init_from_data=0)).eval()
    x = torch.randn(5, BATCH, FEATURES)  # time-major, as AnalogRNN takes it
    prepared = prepare(Recurrent(reference), (x.transpose(0, 1),), xbar_config(init_value=1.5, init_from_data=0),
                       capture_method=method).eval()
    with torch.no_grad():
        expected, got, float_output = analog(x)[0], prepared(x.transpose(0, 1))[0], reference(x)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got - float_output).abs().max() > 1e-3  # the 8-bit periphery is really there


def test_calibrated_ranges_are_those_aihwkit_learns_from_data():
    torch.manual_seed(0)
    reference = nn.LSTM(FEATURES, HIDDEN, num_layers=2, bidirectional=True).eval()
    analog = analog_lstm(reference, aihwkit_config(254, 254, 10, init_value=3.0, init_from_data=10)).train()
    batches = [torch.randn(5, BATCH, FEATURES, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for batch in batches:
        analog(batch)
    prepared = prepare(Recurrent(reference), (batches[0].transpose(0, 1),), xbar_config(init_from_data=10),
                       capture_method="symbolic_trace")
    calibrate(prepared, [batch.transpose(0, 1) for batch in batches])
    ranges = {name: module.value.item() for name, module in input_ranges(prepared).items()}
    for layer in range(2):
        for direction in range(2):
            cell = analog.rnn.layers[layer].directions[direction].cell
            for matmul in ("ih", "hh"):
                name = f"rnn_weight_{matmul}_l{layer}{'_reverse' if direction else ''}_input_range"
                tile = getattr(cell, f"weight_{matmul}").analog_module
                assert ranges[name] == pytest.approx(float(tile.input_range), rel=1e-6), name

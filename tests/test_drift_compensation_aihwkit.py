"""Global drift compensation with an exact reference against aihwkit 1.1.0's (README "Device realism").

aihwkit's compensation objects read an aihwkit tile that holds exactly the weights xbar's array represents
(``(G+ - G-) / (g_max - g_min)``, the unit xbar's ADC sees): its gain must be xbar's ``drift_gain``.
"""

import json

import pytest
import torch
from aihwkit.inference.compensation.drift import GlobalDriftCompensation, GlobalDriftCompensationWithExactReference
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType
from torch import nn

import xbar
from xbar import HardwareConfig, PCMLikeNoiseModel
from xbar.compiler.cli import arguments
from xbar.compiler.cli.commands.evaluate import COMPENSATION_TEXT, COMPENSATIONS
from xbar.compiler.cli.main import main
from xbar.compiler.devices.programming import programming_of
from xbar.passes.numerics.crossbar import crossbar_modules

PERIPHERIES = {"ideal": {}, "8-bit": {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10}}
DAY = 86400.0


def converted_layer(periphery: dict):
    layer = nn.Linear(96, 48, bias=False)
    layer.weight.data = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    config = HardwareConfig().with_overrides(periphery)
    prepared = xbar.prepare(layer.eval(), (torch.randn(2, 96),), config)
    xbar.calibrate(prepared, [torch.randn(64, 96, generator=torch.Generator().manual_seed(1))])
    return xbar.convert(prepared)


def the_crossbar(graph_module):
    (crossbar,) = crossbar_modules(graph_module).values()
    return crossbar


def normalised(g_plus, g_minus, settings):
    """The weights the array represents, in the unit its ADC sees."""
    return (g_plus - g_minus) / (settings.g_max - settings.g_min)


def their_tile(periphery: dict, compensation):
    """An aihwkit pure-torch inference tile with the same DAC / ADC and no noise or bound management tricks."""
    config = TorchInferenceRPUConfig()
    config.drift_compensation = compensation
    config.forward.out_noise = 0.0
    config.forward.bound_management = BoundManagementType.NONE
    config.forward.inp_res = periphery.get("forward.inp_res", -1)
    config.forward.out_res = periphery.get("forward.out_res", -1)
    config.forward.out_bound = periphery.get("forward.out_bound", -1)
    return next(AnalogLinear(96, 48, bias=False, rpu_config=config).analog_tiles())


def their_gain(periphery, compensation, reference: torch.Tensor, baseline_weights, drifted_weights) -> float:
    """aihwkit's alpha: the baseline read at programming (exact: from ``reference``), then the drifted tile."""
    tile = their_tile(periphery, compensation)
    tile.reference_combined_weights = reference
    tile.tile.set_weights(baseline_weights)
    baseline = compensation.init_baseline(tile)
    tile.tile.set_weights(drifted_weights)
    return compensation.apply(tile._forward_drift_readout_tensor(), baseline).item()


@pytest.mark.parametrize("periphery", PERIPHERIES.values(), ids=PERIPHERIES.keys())
def test_the_gain_is_aihwkits(periphery):
    converted = converted_layer(periphery)
    programmed = xbar.program(converted, PCMLikeNoiseModel(), seed=0)
    target, ours = the_crossbar(converted), the_crossbar(programmed)
    s = target.settings
    weights = {"target": normalised(target.g_plus, target.g_minus, s),
               "programmed": normalised(ours.g_plus_programmed, ours.g_minus_programmed, s)}
    gains = {}
    for mode in ("global", "global_exact_reference"):
        drifted = the_crossbar(xbar.drift(programmed, DAY, seed=1, compensation=mode))
        weights["drifted"] = normalised(drifted.g_plus, drifted.g_minus, s)
        gains[mode] = drifted.settings.drift_gain
        compensation = GlobalDriftCompensation() if mode == "global" else GlobalDriftCompensationWithExactReference()
        expected = their_gain(periphery, compensation, weights["target"], weights["programmed"], weights["drifted"])
        assert gains[mode] == pytest.approx(expected, rel=1e-5), mode
    assert gains["global"] != pytest.approx(gains["global_exact_reference"], rel=1e-4)


def test_the_exact_reference_also_undoes_the_mean_change_of_programming():
    """Programming noise alone, read at once: the global gain is 1, the exact one mean|target| / mean|programmed|
    (PCM's idle devices programmed above 0 shrink |G+ - G-| on average)."""
    converted = converted_layer(PERIPHERIES["ideal"])
    programmed = xbar.program(converted, PCMLikeNoiseModel(read_noise_scale=0.0, drift_scale=0.0), seed=0)
    target = the_crossbar(converted)
    ratio = ((target.g_plus - target.g_minus).abs().mean() /
             (the_crossbar(programmed).g_plus - the_crossbar(programmed).g_minus).abs().mean()).item()
    assert the_crossbar(xbar.drift(programmed, 0.0, seed=1)).settings.drift_gain == pytest.approx(1.0, abs=1e-6)
    exact = the_crossbar(xbar.drift(programmed, 0.0, seed=1, compensation="global_exact_reference"))
    assert exact.settings.drift_gain == pytest.approx(ratio, rel=1e-5) and abs(ratio - 1) > 1e-3
    record = programming_of(xbar.drift(programmed, 60.0, seed=1, compensation="global_exact_reference"))
    assert record.compensation == "global_exact_reference"


def test_the_command_line_selects_it(capsys):
    status = main(["evaluate", "mlp", "--seeds", "1", "--times", "1d", "--compensation", "global-exact-reference",
                   "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    assert report["compensation"] == "global_exact_reference"
    assert set(COMPENSATION_TEXT) == set(COMPENSATIONS) == set(arguments.COMPENSATIONS)

"""aihwkit 1.1.0's torch inference tiles beside xbar's prepared layers, with matched noise-free settings."""

import torch
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
from torch import nn

from xbar import HardwareConfig

RANGE = 2.0
BOUND = 3.0


def aihwkit_config(omega: float, columnwise: bool, steps: float = 254) -> TorchInferenceRPUConfig:
    """A noise-free torch tile: DAC/ADC of ``steps`` steps, ADC bound BOUND, a fixed input range RANGE."""
    config = TorchInferenceRPUConfig()
    forward = config.forward
    forward.inp_res, forward.out_res, forward.out_bound = steps, steps, BOUND
    forward.out_noise, forward.w_noise, forward.ir_drop = 0.0, 0.0, 0.0
    forward.noise_management, forward.bound_management = NoiseManagementType.NONE, BoundManagementType.NONE
    config.mapping.weight_scaling_omega, config.mapping.weight_scaling_columnwise = omega, columnwise
    config.mapping.max_input_size = config.mapping.max_output_size = 0
    ranges = config.pre_post.input_range
    ranges.enable, ranges.init_value, ranges.init_from_data = True, RANGE, 0
    return config


def xbar_config(omega: float, columnwise: bool, dynamic: bool = False, steps: float = 254) -> HardwareConfig:
    return HardwareConfig().with_overrides({
        "forward.inp_res": steps, "forward.out_res": steps, "forward.out_bound": BOUND,
        "pre_post.input_range.init_value": RANGE, "pre_post.input_range.init_from_data": 0,
        "mapping.weight_scaling_omega": omega, "mapping.weight_scaling_columnwise": columnwise,
        "mapping.weight_scaling_dynamic": dynamic})


def layer_and_input(kind: str):
    generator = torch.Generator().manual_seed(3)
    if kind == "linear":
        layer = nn.Linear(24, 6)
        x = 1.5 * torch.randn(64, 24, generator=generator)
    else:
        layer = nn.Conv2d(2, 4, 3, padding=1)
        x = 1.5 * torch.randn(8, 2, 6, 6, generator=generator)
    with torch.no_grad():  # rows of different size, and outputs past the bound in weight units
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        layer.weight[0] *= 0.1
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    return layer.eval(), x


def aihwkit_forward(layer: nn.Module, x: torch.Tensor, config: TorchInferenceRPUConfig) -> torch.Tensor:
    analog = (AnalogLinear if isinstance(layer, nn.Linear) else AnalogConv2d).from_digital(layer, config).eval()
    with torch.no_grad():
        return analog(x)

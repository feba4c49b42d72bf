"""A convolution's learned input range over patch elements, against aihwkit 1.1.0's pure-torch tiles.

aihwkit's array sees the unfolded input; xbar computes the same statistics from
the pixels. Each case runs one training batch through aihwkit and through a
prepared xbar model (ideal periphery, the range initialised from that batch) and
compares the range after init from data, its gradient after one backward
(clipped-element term and decay), and the decay's unclipped fraction.
AnalogConv1d / AnalogConv3d need aihwkit's indexed C++ tiles, so 1d runs as a 2d
convolution of height 1 and 3d as aihwkit's tile on the unfolded patches (what its
convolutions do); aihwkit has no grouped or transposed convolution, so they run as
the dense block-diagonal convolution and as the equivalent convolution on the
stride-dilated input, which present the array with the same patches.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from torch import nn

from xbar import ConfigError, ConvRangeElements, HardwareConfig, LayerRule, convert, prepare
from xbar.compiler.cli.arguments import build_parser
from xbar.compiler.cli.steps import hardware_config
from xbar.compiler.pipeline.stages import input_ranges
from xbar.passes.numerics.calibration import OBSERVERS, CalibrationMethod, ObserverOptions, observer_for
from xbar.passes.numerics.patch_range import PatchRangeGradient
from xbar.passes.numerics.patches import PatchView


def aihwkit_config(decay: float = 0.0, min_percentage: float = 0.95, max_input_size: int = 0):
    config = TorchInferenceRPUConfig()
    config.forward.is_perfect = True
    config.mapping.max_input_size = max_input_size
    ir = config.pre_post.input_range
    ir.enable, ir.init_from_data, ir.decay, ir.input_min_percentage = True, 10, decay, min_percentage
    return config


def xbar_config(decay: float = 0.0, min_percentage: float = 0.95, max_input_size: int = 0,
                elements: str = "PATCHES") -> HardwareConfig:
    return HardwareConfig.from_dict({
        "mapping": {"max_input_size": max_input_size},
        "pre_post": {"input_range": {"enable": True, "init_from_data": 10, "decay": decay,
                                     "input_min_percentage": min_percentage, "conv_elements": elements}}})


def aihwkit_ranges(module: nn.Module, x, g) -> list[tuple[float, float]]:
    """(range, its gradient) of each of ``module``'s tiles after one training batch."""
    module.train()
    module(x).backward(g)
    return [(t.input_range.item(), t.input_range.grad.item()) for t in module.analog_tiles()]


def xbar_ranges(layer: nn.Module, x, g, config: HardwareConfig) -> list[tuple[float, float]]:
    """(range, its gradient) of each of the prepared layer's ranges (rows in order) after one training batch."""
    prepared = prepare(nn.Sequential(copy.deepcopy(layer)), (x[:2],), config).train()
    prepared(x).backward(g)
    return [(m.value.item(), m.value.grad.item()) for _, m in sorted(input_ranges(prepared).items())]


def heavy_tailed(*shape, seed: int = 0):
    """Inputs of which a few clip at three standard deviations."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) ** 3


def gradient_for(y, seed: int = 1):
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))


def assert_ranges_equal(ours, reference):
    assert len(ours) == len(reference)
    for (r, grad), (r_ref, grad_ref) in zip(ours, reference):
        assert r == pytest.approx(r_ref, rel=1e-5)
        assert grad == pytest.approx(grad_ref, rel=1e-4, abs=1e-5)


def unclipped_fractions(x, unfolded, r: float) -> tuple[float, float]:
    """The unclipped fraction of the pixels and of the patch elements."""
    return float((x.abs() < r).float().mean()), float((unfolded.abs() < r).float().mean())


CONV2D = {
    "padding": dict(kernel_size=3, padding=1),
    "stride": dict(kernel_size=3, stride=2, padding=2),
    "dilation": dict(kernel_size=3, dilation=2, padding=1),
    "uneven": dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
}


@pytest.mark.parametrize("geometry", CONV2D, ids=str)
def test_conv2d_range_and_gradient_match_aihwkit(geometry):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, bias=False, **CONV2D[geometry])
    x = heavy_tailed(8, 2, 9, 9)
    g = gradient_for(conv(x))
    reference = aihwkit_ranges(AnalogConv2d.from_digital(conv, aihwkit_config()), x, g)
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config()), reference)


def test_decay_counts_patch_elements_as_aihwkit():
    """The threshold lies between the pixels' and the patches' unclipped fractions: only the patch
    rule decides as aihwkit does."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = heavy_tailed(8, 2, 9, 9)
    g = gradient_for(conv(x))
    (r, _), = aihwkit_ranges(AnalogConv2d.from_digital(conv, aihwkit_config()), x, g)
    pixels, patches = unclipped_fractions(x, F.unfold(x.clamp(-r, r), 3, padding=1), r)
    assert pixels != patches
    threshold = (pixels + patches) / 2
    reference = aihwkit_ranges(AnalogConv2d.from_digital(conv, aihwkit_config(0.5, threshold)), x, g)
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config(0.5, threshold)), reference)
    without_decay = xbar_ranges(conv, x, g, xbar_config())
    assert reference[0][1] != pytest.approx(without_decay[0][1])  # the decay did apply


def test_grouped_conv2d_matches_aihwkits_block_diagonal_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
    dense = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        dense.weight.zero_()
        dense.weight[:3, :2], dense.weight[3:, 2:] = conv.weight[:3], conv.weight[3:]
    x = heavy_tailed(8, 4, 7, 7)
    g = gradient_for(conv(x))
    reference = aihwkit_ranges(AnalogConv2d.from_digital(dense, aihwkit_config()), x, g)
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config()), reference)


def test_conv1d_matches_aihwkits_conv_of_height_one():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2, bias=False)
    as_2d = nn.Conv2d(3, 4, (1, 3), stride=(1, 2), padding=(0, 2), dilation=(1, 2), bias=False)
    with torch.no_grad():
        as_2d.weight.copy_(conv.weight.unsqueeze(2))
    x = heavy_tailed(8, 3, 20)
    g = gradient_for(conv(x))
    reference = aihwkit_ranges(AnalogConv2d.from_digital(as_2d, aihwkit_config()), x.unsqueeze(2), g.unsqueeze(2))
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config()), reference)


def test_conv3d_matches_aihwkits_tile_on_the_unfolded_patches():
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, (3, 2, 3), stride=(2, 1, 1), padding=(1, 1, 0), bias=False)
    x = heavy_tailed(4, 2, 5, 4, 6)
    g = gradient_for(conv(x))
    patches = F.pad(x, (0, 0, 1, 1, 1, 1)).unfold(2, 3, 2).unfold(3, 2, 1).unfold(4, 3, 1)
    patches = patches.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(4, -1, 2 * 18)  # [batch, positions, C x taps]
    tile = AnalogLinear(2 * 18, 3, bias=False, rpu_config=aihwkit_config())
    tile.set_weights(conv.weight.detach().reshape(3, -1))
    reference = aihwkit_ranges(tile, patches, g.flatten(2).transpose(1, 2))
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config()), reference)


def test_each_row_tile_matches_aihwkits_tile_array():
    """Rows of 18 = two input channels of a 3x3 kernel: aihwkit's tiles and xbar's rows hold the same slices."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False)
    x = heavy_tailed(8, 4, 6, 6)
    x[:, 2:] *= 3  # the rows see different statistics
    g = gradient_for(conv(x))
    reference = aihwkit_ranges(AnalogConv2d.from_digital(conv, aihwkit_config(max_input_size=18)), x, g)
    ours = xbar_ranges(conv, x, g, xbar_config(max_input_size=18))
    assert len(ours) == 2 and ours[0][0] != pytest.approx(ours[1][0])
    assert_ranges_equal(ours, reference)


@pytest.mark.parametrize("stride, padding, output_padding, dilation", [(2, 1, 1, 1), (3, 2, 1, 2)])
def test_conv_transpose_matches_aihwkit_on_its_equivalent_conv(stride, padding, output_padding, dilation):
    torch.manual_seed(0)
    k = 3
    conv = nn.ConvTranspose2d(2, 3, k, stride=stride, padding=padding, output_padding=output_padding,
                              dilation=dilation, bias=False)
    x = heavy_tailed(8, 2, 5, 5)
    g = gradient_for(conv(x))
    stuffed = torch.zeros(8, 2, 4 * stride + 1, 4 * stride + 1)
    stuffed[:, :, ::stride, ::stride] = x
    before = dilation * (k - 1) - padding
    stuffed = F.pad(stuffed, (before, before + output_padding) * 2)
    equivalent = nn.Conv2d(2, 3, k, dilation=dilation, bias=False)
    with torch.no_grad():
        equivalent.weight.copy_(conv.weight.transpose(0, 1).flip(2, 3))
    assert torch.allclose(equivalent(stuffed), conv(x), atol=1e-4)
    reference = aihwkit_ranges(AnalogConv2d.from_digital(equivalent, aihwkit_config()), stuffed, g)
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config()), reference)


def test_pixels_option_keeps_the_per_pixel_rule():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = heavy_tailed(8, 2, 9, 9)
    g = gradient_for(conv(x))
    r = 3 * x.std()
    clipped = x.clamp(-r, r).requires_grad_()
    conv(clipped).backward(g)
    signs = (x >= r).float() - (x <= -r).float()
    expected = float((signs * clipped.grad).clamp(max=0).sum() * r)
    assert_ranges_equal(xbar_ranges(conv, x, g, xbar_config(elements="PIXELS")), [(float(r), expected)])
    prepared = prepare(nn.Sequential(conv), (x[:2],), xbar_config(elements="PIXELS"))
    assert not any(isinstance(m, PatchRangeGradient) for m in prepared.modules())
    assert all(m.patches is None for m in input_ranges(prepared).values())


def test_patch_rule_differs_from_the_pixel_rule_and_linear_layers_have_no_patches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 3))
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    patches = prepare(model, (x[:2],), xbar_config()).train()
    pixels = prepare(model, (x[:2],), xbar_config(elements="PIXELS")).train()
    patches(x), pixels(x)
    (conv_p, linear_p), (conv_x, linear_x) = (sorted(input_ranges(m).items()) for m in (patches, pixels))
    assert conv_p[1].value.item() == pytest.approx(3 * F.unfold(x, 3, padding=1).std().item(), rel=1e-5)
    assert conv_x[1].value.item() == pytest.approx(3 * x.std().item(), rel=1e-5)
    assert linear_p[1].patches is None and linear_x[1].patches is None




@pytest.mark.parametrize("transposed", [False, True])
def test_clipped_gradient_sum_traces_whole_and_matches_eager(transposed):
    generator = torch.Generator().manual_seed(0)
    kind = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = kind(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, bias=False)
    x = torch.randn(3, 4, 7, 6, generator=generator)
    signs = torch.where(torch.rand(x.shape, generator=generator) < 0.3, x.sign(), 0.0)
    dy = torch.randn(conv(x).shape, generator=generator)
    view = PatchView((3, 3), (2, 2), (1, 1), (2, 2), groups=2, transposed=transposed, output_padding=(0, 0))
    weight = conv.weight.detach()
    eager = view.clipped_gradient_sum(dy, signs, weight)
    compiled = torch.compile(view.clipped_gradient_sum, fullgraph=True, backend="eager")(dy, signs, weight)
    assert eager.item() == pytest.approx(compiled.item(), rel=1e-5) and eager.item() < 0


@pytest.mark.parametrize("method", list(OBSERVERS))
def test_each_calibration_observer_over_patches_equals_it_over_the_unfolded_input(method):
    """Stride 2 past a kernel of 1 leaves pixels no patch reads: MAX must not see them."""
    batches = [heavy_tailed(4, 2, 7, 7, seed=seed) for seed in range(2)]
    for kernel, stride, padding in ((3, 2, 1), (1, 2, 0)):
        view = PatchView((kernel, kernel), (stride, stride), (padding, padding), (1, 1))
        options = ObserverOptions(quantile=0.97, max_samples=10 ** 6)
        ours, reference = observer_for(method, options), observer_for(method, options)
        for x in batches:
            ours.observe(x, view)
            reference.observe(F.unfold(x, kernel, padding=padding, stride=stride))
        assert ours.result() == pytest.approx(reference.result(), rel=1e-5), (kernel, stride)


def test_cache_quantile_over_patches_keeps_the_zeros_share_when_subsampled():
    x = torch.rand(16, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    view = PatchView((3, 3), (1, 1), (2, 2), (1, 1))
    ours = observer_for(CalibrationMethod.CACHE_QUANTILE, ObserverOptions(quantile=0.5, max_samples=2000))
    ours.observe(x, view)
    unfolded = F.unfold(x, 3, padding=2).abs().flatten()
    zeros = float((unfolded == 0).sum())
    assert zeros > 0.2 * len(unfolded)  # the median sits well above the padding's zeros
    assert ours.result() == pytest.approx(float(unfolded.kthvalue(len(unfolded) // 2).values), rel=0.1)
    assert ours.zeros == pytest.approx(zeros * 2000 / x.numel())


def test_every_convolution_array_gets_one_range_gradient_and_conversion_drops_them():
    """Two row tiles by two column tiles: four arrays, two ranges (one per row), each array its term."""
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 25, 3))
    x = torch.rand(4, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    config = xbar_config(max_input_size=18).with_overrides({"mapping.max_output_size": 3})
    prepared = prepare(model, (x[:2],), config)
    gradients = [name for name, m in prepared.named_modules() if isinstance(m, PatchRangeGradient)]
    assert len(gradients) == 4 and all(name.startswith("_0_tile") for name in gradients)
    conv_ranges = [m for name, m in input_ranges(prepared).items() if name.startswith("_0_")]
    assert len(conv_ranges) == 2 and all(m.patches.kernel == (3, 3) for m in conv_ranges)
    prepared.train()(x).sum().backward()
    assert all(m.value.grad is not None for m in conv_ranges)
    converted = convert(prepared.eval())
    assert not any(isinstance(m, PatchRangeGradient) for m in converted.modules())
    with torch.no_grad():
        assert torch.allclose(converted(x), prepared(x), atol=1e-4)


def test_the_option_is_a_config_field_everywhere_config_fields_are():
    key = "pre_post.input_range.conv_elements"
    assert HardwareConfig().pre_post.input_range.conv_elements is ConvRangeElements.PATCHES
    from_set = hardware_config(build_parser().parse_args(["compile", "--set", f"{key}=pixels"]))
    assert from_set.pre_post.input_range.conv_elements is ConvRangeElements.PIXELS
    assert from_set.to_dict()["pre_post"]["input_range"]["conv_elements"] == "PIXELS"
    assert HardwareConfig.from_dict(from_set.to_dict()).to_dict() == from_set.to_dict()
    with pytest.raises(ConfigError, match="conv_elements must be one of"):
        HardwareConfig().with_overrides({key: "unfolded"})
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3))
    ruled = HardwareConfig(layers=[LayerRule(name="1", overrides={key: "PIXELS"})])
    ranges = input_ranges(prepare(model, (torch.rand(2, 1, 8, 8),), ruled))
    assert [m.patches is None for _, m in sorted(ranges.items())] == [False, True]

"""Noise and bound management (forward.noise_management, forward.bound_management) against aihwkit 1.1.0.

aihwkit's pure-torch inference tile (TorchInferenceRPUConfig, no output noise, weight_scaling_omega 1 so its
ADC sees ``W x / max|W|`` as xbar's does) is the oracle of the converted model, op by op and mode by mode; the
exported ONNX file must compute the same at run time in ONNX Runtime.
"""

import json
import warnings

import onnx
import pytest
import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters.enums import BoundManagementType as TheirBM
from aihwkit.simulator.parameters.enums import NoiseManagementType as TheirNM
from torch import nn

import xbar
from xbar import HardwareConfig, LayerRule
from xbar.compiler.onnx import ops as onnx_ops
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.passes.numerics.crossbar import crossbar_modules

IN, OUT = 40, 12
MODES = {  # name -> forward settings (aihwkit's names)
    "abs_max": dict(noise_management="ABS_MAX"),
    "abs_max_thres": dict(noise_management="ABS_MAX", nm_thres=1.5),
    "max": dict(noise_management="MAX"),
    "max_thres": dict(noise_management="MAX", nm_thres=0.5),
    "constant": dict(noise_management="CONSTANT", nm_thres=3.0),
    "constant_one": dict(noise_management="CONSTANT", inp_res=-1),
    "iterative": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", out_bound=1.5),
    "worst_case": dict(noise_management="CONSTANT", nm_thres=2.0, bound_management="ITERATIVE_WORST_CASE",
                       out_bound=1.0),
    "bm_alone": dict(bound_management="ITERATIVE", inp_res=-1, out_res=-1, out_bound=1.0),
    "bm_ideal_converters": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", inp_res=-1,
                                out_res=-1, out_bound=0.5),
    "bm_factor_limit": dict(noise_management="ABS_MAX", bound_management="ITERATIVE", out_bound=0.2,
                            max_bm_factor=3),
}
PERIPHERY = dict(inp_res=254, out_res=254, out_bound=10.0)


def layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN, OUT).eval()


def inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, IN, generator=torch.Generator().manual_seed(1)) * 2


def settings(mode: str) -> dict:
    return PERIPHERY | MODES[mode]


def theirs(forward: dict, x: torch.Tensor, input_range: float = 0.0) -> torch.Tensor:
    config = TorchInferenceRPUConfig()
    config.forward.out_noise = 0.0
    config.mapping.weight_scaling_omega = 1.0
    for name, value in ({"noise_management": "NONE", "bound_management": "NONE"} | forward).items():  # xbar's
        enum = {"noise_management": TheirNM, "bound_management": TheirBM}.get(name)
        setattr(config.forward, name, getattr(enum, value) if enum else value)
    if input_range:
        config.pre_post.input_range.enable = True
        config.pre_post.input_range.learn_input_range = False
        config.pre_post.input_range.init_value = input_range
        config.pre_post.input_range.init_from_data = 0
    reference = layer()
    analog = AnalogLinear(IN, OUT, bias=True, rpu_config=config)
    analog.set_weights(reference.weight.data, reference.bias.data)
    with torch.no_grad():
        return analog.eval()(x)


def converted(forward: dict, input_range: float = 0.0):
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {
        "pre_post.input_range.enable": bool(input_range), "pre_post.input_range.init_value": input_range or 3.0,
        "pre_post.input_range.init_from_data": 0}
    return xbar.convert(xbar.prepare(layer(), (inputs(2),), HardwareConfig().with_overrides(overrides)))


def ours(forward: dict, x: torch.Tensor, input_range: float = 0.0) -> torch.Tensor:
    with torch.no_grad():
        return converted(forward, input_range)(x)


def assert_same_outputs(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to float tolerance but for rare values one rounding step apart (two runtimes' float orders)."""
    scale = b.abs().max().item()
    off = (a - b).abs() > 1e-5 * scale
    assert off.float().mean().item() <= 0.01, f"{off.sum().item()} of {off.numel()} outputs differ"


@pytest.mark.parametrize("mode", MODES)
def test_the_converted_layer_computes_what_aihwkits_tile_computes(mode):
    x = inputs()
    assert_same_outputs(ours(settings(mode), x), theirs(settings(mode), x))


@pytest.mark.parametrize("mode", ["iterative", "worst_case", "bm_alone", "bm_ideal_converters", "bm_factor_limit"])
def test_bound_management_iterates_where_the_output_saturates(mode):
    """The bound is low enough that the first read clips: without bound management the answer differs."""
    x = inputs()
    plain = {k: v for k, v in settings(mode).items() if k not in ("bound_management", "max_bm_factor")}
    managed = ours(settings(mode), x)
    assert (managed - ours(plain, x)).abs().max() > 1e-3
    assert (managed - theirs(plain, x)).abs().max() > 1e-3
    assert_same_outputs(managed, theirs(settings(mode), x))


def test_max_with_every_scale_zero_outputs_the_bias_alone_as_aihwkit_does():
    x = -inputs().abs()
    x[:, 0] = 0.0  # every vector's max is 0
    forward = PERIPHERY | dict(noise_management="MAX")
    assert torch.equal(ours(forward, x), layer().bias.detach().expand(len(x), -1))
    assert_same_outputs(ours(forward, x), theirs(forward, x))
    x[0, 1] = 0.5  # one vector with a positive max: the others' scale counts as 1
    assert_same_outputs(ours(forward, x), theirs(forward, x))


def test_with_an_input_range_aihwkit_still_manages_the_normalised_input():
    """aihwkit does not switch noise management off under an input range: it scales x / r again."""
    x = inputs()
    forward = PERIPHERY | dict(noise_management="ABS_MAX")
    managed = ours(forward, x, input_range=8.0)
    assert_same_outputs(managed, theirs(forward, x, input_range=8.0))
    assert (managed - ours(PERIPHERY, x, input_range=8.0)).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["abs_max_thres", "max", "constant", "iterative", "bm_alone"])
def test_onnx_runtime_computes_the_scaling_from_the_input(mode, tmp_path):
    model = converted(settings(mode))
    path = xbar.export_onnx(model, (inputs(2),), tmp_path / "managed.onnx")
    loaded = onnx.load(str(path))
    assert {o.domain: o.version for o in loaded.opset_import}[onnx_ops.DOMAIN] == onnx_ops.VERSION >= 5
    (node,) = [n for n in loaded.graph.node if n.domain == onnx_ops.DOMAIN]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["noise_management"].decode() == MODES[mode].get("noise_management", "NONE")
    assert attributes["bm_rounds"] == crossbar_modules(model)["weight_crossbar"].settings.constants["bm_rounds"]
    exported = json.loads({p.key: p.value for p in loaded.metadata_props}["xbar.hardware_config"])["forward"]
    assert {k: exported[k] for k in MODES[mode]} == {k: v for k, v in MODES[mode].items()}
    for x in (inputs(64), inputs(3) * 5):  # another batch, another scale: computed at run time
        with torch.no_grad():
            assert_same_outputs(onnx_runner(path)(x), model(x))


def test_the_settings_reach_each_array_through_config_rules_and_the_exported_config():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(IN, 16), nn.Linear(16, OUT)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    config = HardwareConfig(layers=[LayerRule(name="fc2", overrides={"forward.noise_management": "max",
                                                                     "forward.bound_management": "iterative",
                                                                     "forward.nm_thres": 0.5})])
    config = config.with_overrides({"forward.noise_management": "abs_max", "forward.max_bm_res": 0.5,
                                    "pre_post.input_range.enable": False})
    assert HardwareConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert {"nm_thres": 0.0, "max_bm_factor": 1000, "max_bm_res": 0.5}.items() <= config.to_dict()["forward"].items()
    model = xbar.convert(xbar.prepare(Two().eval(), (inputs(2),), config))
    arrays = {name: c.settings for name, c in crossbar_modules(model).items()}
    assert (arrays["fc1_crossbar"].noise_management, arrays["fc1_crossbar"].bound_management) == ("ABS_MAX", "NONE")
    fc2 = arrays["fc2_crossbar"]
    assert (fc2.noise_management, fc2.nm_thres, fc2.bound_management, fc2.max_bm_res) == ("MAX", 0.5, "ITERATIVE",
                                                                                           0.5)
    assert fc2.constants["nm_mode"] == 2 and fc2.constants["bm_rounds"] == 11  # no DAC: 1, 2, ..., 1024 > 1000


def test_a_perfect_forward_is_an_ideal_matmul_as_in_aihwkit():
    perfect = converted({"is_perfect": True, "noise_management": "ABS_MAX", "bound_management": "ITERATIVE"})
    assert crossbar_modules(perfect)["weight_crossbar"].settings.constants["nm_mode"] == 0


def test_a_compiled_graph_runs_every_read_without_a_data_dependent_branch(monkeypatch):
    from xbar.compiler.pipeline import compiled

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    model, x = converted(settings("iterative")), inputs()
    with torch.no_grad():
        assert torch.equal(compiled.compiled(model)(x), model(x))
    for layer_name in ("conv2d_grouped", "transposed2d_grouped"):  # patches unfolded in the graph too
        make, shape = CONV_LAYERS[layer_name]
        x = conv_inputs(*shape)
        model = converted_conv(seeded(make()), settings("iterative"), x)
        with torch.no_grad():
            assert torch.equal(compiled.compiled(model)(x), model(x))


@pytest.mark.parametrize("forward", [dict(noise_management="CONSTANT", nm_thres=0.5),
                                     dict(noise_management="CONSTANT", nm_thres=4.0, inp_res=-1)], ids=["0.5", "4"])
def test_constant_noise_management_on_a_convolution_is_aihwkits(forward, tmp_path):
    """One scale per array: folded into the constants, so every kind takes it (the ONNX body unchanged)."""
    from aihwkit.nn import AnalogConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1).eval()
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(2)) * 2
    forward = PERIPHERY | forward
    config = TorchInferenceRPUConfig()
    config.forward.out_noise = 0.0
    config.mapping.weight_scaling_omega = 1.0
    config.forward.bound_management = TheirBM.NONE
    config.forward.noise_management = TheirNM.CONSTANT
    for name in ("nm_thres", "inp_res", "out_res", "out_bound"):
        setattr(config.forward, name, forward[name])
    analog = AnalogConv2d(2, 4, 3, padding=1, rpu_config=config)
    analog.set_weights(conv.weight.data, conv.bias.data)
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {"pre_post.input_range.enable": False}
    model = xbar.convert(xbar.prepare(conv, (x[:1],), HardwareConfig().with_overrides(overrides)))
    with torch.no_grad():
        assert_same_outputs(model(x), analog.eval()(x))
    path = xbar.export_onnx(model, (x[:1],), tmp_path / "conv.onnx")
    with torch.no_grad():
        assert_same_outputs(onnx_runner(path)(x), model(x))


def test_the_hwa_preset_is_aihwkits_constant_management_and_computes_as_before():
    hwa = xbar.preset_config("hwa")
    assert (hwa.forward.noise_management.name, hwa.forward.nm_thres) == ("CONSTANT", 1.0)
    x = inputs()
    prepared = xbar.prepare(layer(), (inputs(2),), hwa)
    xbar.calibrate(prepared, [x])
    plain = xbar.prepare(layer(), (inputs(2),), hwa.with_overrides({"forward.noise_management": "NONE"}))
    xbar.calibrate(plain, [x])
    with torch.no_grad():
        assert torch.equal(xbar.convert(prepared)(x), xbar.convert(plain)(x))
    assert not [m for m in prepared.modules() if type(m).__name__ == "ManagedReads"]  # CONSTANT 1: nothing to manage
    xbar.fine_tune(prepared, inputs(8), torch.zeros(8, dtype=torch.long), xbar.FineTuning(epochs=1))


# Convolutions: aihwkit's AnalogConv2d unfolds its input and its tile manages each patch as one input vector.

CONV_MODES = ["abs_max", "abs_max_thres", "max", "max_thres", "iterative", "worst_case", "bm_alone"]
CONV_GEOMETRIES = {"padded": dict(padding=1), "strided_dilated": dict(padding=2, stride=2, dilation=2),
                   "wide_padding": dict(padding=3, stride=(2, 1))}


def conv_inputs(channels: int, *spatial: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, channels, *spatial, generator=torch.Generator().manual_seed(1)) * 2


def converted_conv(conv: nn.Module, forward: dict, x: torch.Tensor, max_input_size: int = 0):
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {
        "pre_post.input_range.enable": False, "mapping.max_input_size": max_input_size}
    return xbar.convert(xbar.prepare(conv.eval(), (x[:1],), HardwareConfig().with_overrides(overrides)))


def their_config(forward: dict, max_input_size: int = 0) -> TorchInferenceRPUConfig:
    config = TorchInferenceRPUConfig()
    config.forward.out_noise = 0.0
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.max_input_size, config.mapping.max_output_size = max_input_size, 0
    for name, value in ({"noise_management": "NONE", "bound_management": "NONE"} | forward).items():
        enum = {"noise_management": TheirNM, "bound_management": TheirBM}.get(name)
        setattr(config.forward, name, getattr(enum, value) if enum else value)
    return config


def their_conv2d(conv: nn.Conv2d, forward: dict, x: torch.Tensor, max_input_size: int = 0) -> torch.Tensor:
    from aihwkit.nn import AnalogConv2d

    analog = AnalogConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation,
                          rpu_config=their_config(forward, max_input_size))
    analog.set_weights(conv.weight.data, conv.bias.data)
    with torch.no_grad():
        return analog.eval()(x)


def seeded(conv: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
    return conv.eval()


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("mode", CONV_MODES)
def test_a_converted_convolution_manages_each_patch_as_aihwkits_conv2d(mode, geometry):
    conv = seeded(nn.Conv2d(3, 5, 3, **CONV_GEOMETRIES[geometry]))
    x = conv_inputs(3, 7, 8)
    forward = settings(mode)
    ours_ = converted_conv(conv, forward, x)
    with torch.no_grad():
        managed = ours_(x)
    assert_same_outputs(managed, their_conv2d(conv, forward, x))
    assert (managed - their_conv2d(conv, PERIPHERY, x)).abs().max() > 1e-3  # the management changes the outputs


@pytest.mark.parametrize("rows", [18, 27])
@pytest.mark.parametrize("mode", ["abs_max", "iterative"])
def test_each_row_of_arrays_manages_its_own_slice_of_the_patch_as_aihwkits_tiles(mode, rows):
    """4 channels x 9 taps on arrays of 18 rows, or of 27 (split evenly, 18 + 18, not 27 + 9): xbar's two
    arrays and aihwkit's two tiles split alike."""
    conv = seeded(nn.Conv2d(4, 5, 3, padding=1))
    x = conv_inputs(4, 6, 6)
    model = converted_conv(conv, settings(mode), x, max_input_size=rows)
    assert [array.shape[1] for array in crossbar_modules(model).values()] == [2, 2]
    with torch.no_grad():
        tiled = model(x)
    assert_same_outputs(tiled, their_conv2d(conv, settings(mode), x, max_input_size=rows))
    with torch.no_grad():
        assert (tiled - converted_conv(conv, settings(mode), x)(x)).abs().max() > 1e-3  # not one array's scales


def unfolded(x: torch.Tensor, kernel, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The patches [batch, positions, channels x taps] of a convolution, in float64 (a one-hot kernel per tap,
    exact), as aihwkit's convolutions hand them to their tile."""
    taps = torch.eye(int(torch.tensor(kernel).prod()), dtype=torch.float64).reshape(-1, 1, *kernel)
    op = (F.conv1d, F.conv2d, F.conv3d)[len(kernel) - 1]
    n, c = x.shape[:2]
    u = op(x.double().reshape(n * c, 1, *x.shape[2:]), taps, stride=stride, padding=padding, dilation=dilation)
    return u.reshape(n, c * taps.shape[0], -1).transpose(1, 2).float()


def equivalent_convolution(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches and the [out, in / groups, *kernel] weight of the convolution ``conv`` computes: itself, or
    for a transposed one the textbook equivalent (stride - 1 zeros between pixels, dilation * (kernel - 1) -
    padding zeros around, output_padding more at the end; stride 1; each group's kernel transposed and
    flipped)."""
    if not isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return unfolded(x, conv.kernel_size, conv.stride, conv.padding, conv.dilation), conv.weight.detach()
    spatial = range(2, x.dim())
    spread = x.new_zeros(*x.shape[:2], *[(x.shape[i] - 1) * conv.stride[i - 2] + 1 for i in spatial])
    spread[(..., *(slice(None, None, s) for s in conv.stride))] = x
    pads = []
    for k, p, d, extra in reversed(list(zip(conv.kernel_size, conv.padding, conv.dilation, conv.output_padding))):
        pads += [d * (k - 1) - p, d * (k - 1) - p + extra]
    weight = conv.weight.detach().unflatten(0, (conv.groups, -1)).transpose(1, 2).flatten(0, 1)
    return (unfolded(F.pad(spread, pads), conv.kernel_size, dilation=conv.dilation),
            weight.flip(list(range(2, weight.dim()))))


def their_tile_on_patches(conv: nn.Module, forward: dict, x: torch.Tensor) -> torch.Tensor:
    """aihwkit's tile on the unfolded input, with the weight's rows flattened (block diagonal: the groups one
    array of xbar packs), which is what its AnalogConv2d computes; for any rank, for groups, and for a
    transposed convolution through its equivalent convolution."""
    patches, weight = equivalent_convolution(conv, x)
    out = weight.shape[0]
    weight = torch.block_diag(*weight.reshape(out, -1).chunk(conv.groups))
    analog = AnalogLinear(weight.shape[1], out, bias=True, rpu_config=their_config(forward))
    analog.set_weights(weight, conv.bias.data)
    with torch.no_grad():
        y = analog.eval()(patches)
    return y.transpose(1, 2).reshape(len(x), out, *conv(x).shape[2:])


CONV_LAYERS = {
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=2, dilation=2), (3, 11)),
    "conv2d_grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2), (4, 7, 7)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 2, padding=1, stride=(1, 2, 1)), (2, 4, 5, 3)),
    "transposed2d_grouped": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                                        dilation=(1, 2), groups=2), (4, 5, 4)),
    "transposed1d_cropped": (lambda: nn.ConvTranspose1d(3, 2, 3, stride=3, padding=3), (3, 6)),
}


@pytest.mark.parametrize("mode", ["abs_max", "max_thres", "iterative"])
@pytest.mark.parametrize("layer_name", CONV_LAYERS)
def test_every_rank_and_grouped_arrays_manage_their_patches_as_aihwkits_tile(layer_name, mode):
    make, shape = CONV_LAYERS[layer_name]
    conv, x = seeded(make()), conv_inputs(*shape)
    with torch.no_grad():
        managed = converted_conv(conv, settings(mode), x)(x)
    assert_same_outputs(managed, their_tile_on_patches(conv, settings(mode), x))
    assert (managed - their_tile_on_patches(conv, PERIPHERY, x)).abs().max() > 1e-3


def test_a_patch_max_is_a_max_pool_of_the_zero_padded_pixels():
    from xbar.passes.numerics.patches import PatchView

    view = PatchView((3, 2), stride=(2, 1), padding=(3, 1), dilation=(1, 2))  # padding past half the kernel
    x = -conv_inputs(2, 5, 6).abs() - 0.1  # all negative: MAX of a patch with padding is 0
    patches = view.unfold(x)
    reference = F.unfold(x, (3, 2), dilation=(1, 2), padding=(3, 1), stride=(2, 1))
    assert torch.equal(patches.flatten(2), reference)
    assert torch.equal(view.patch_max(x, absolute=True), patches.abs().amax(1, keepdim=True))
    maxima = view.patch_max(x, absolute=False)
    assert torch.equal(maxima, patches.amax(1, keepdim=True))
    assert (maxima == 0).any() and (maxima < 0).any()


@pytest.mark.parametrize("padding", [1, 3], ids=["padded", "cropped"])
def test_a_transposed_patch_max_is_a_max_pool_of_the_stride_dilated_pixels(padding):
    from xbar.passes.numerics.patches import PatchView

    view = PatchView((3,), stride=(3,), padding=(padding,), dilation=(1,), transposed=True, output_padding=(1,))
    x = -conv_inputs(2, 5).abs() - 0.1  # all negative
    patches = view.unfold(x)
    conv = nn.ConvTranspose1d(2, 1, 3, stride=3, padding=padding, output_padding=1, bias=False)
    assert patches.shape[2:] == conv(x).shape[2:]
    reference, _ = equivalent_convolution(conv, x)  # the same elements, each channel's taps in flipped order
    assert torch.equal(patches.unflatten(1, (2, 3)).flip(2).flatten(1, 2).transpose(1, 2), reference)
    for absolute in (True, False):
        expected = (patches.abs() if absolute else patches).amax(1, keepdim=True)
        assert torch.equal(view.patch_max(x, absolute=absolute), expected)
    assert (view.patch_max(x, absolute=False) == 0).all()  # stride 3, kernel 3: each patch holds inserted zeros
    assert (view.patch_max(x, absolute=True) > 0).all()


@pytest.mark.parametrize("mode", ["abs_max", "max_thres", "iterative", "bm_alone"])
@pytest.mark.parametrize("layer_name", CONV_LAYERS)
def test_onnx_runtime_manages_each_patch_as_the_converted_convolution(layer_name, mode, tmp_path):
    make, shape = CONV_LAYERS[layer_name]
    conv, x = seeded(make()), conv_inputs(*shape)
    model = converted_conv(conv, settings(mode), x)
    path = xbar.export_onnx(model, (x[:1],), tmp_path / "conv.onnx")
    run = onnx_runner(path)
    plain = their_tile_on_patches(conv, PERIPHERY, x)  # unmanaged (xbar refuses a DAC without a range or scale)
    with torch.no_grad():
        for batch in (x, conv_inputs(*shape, n=2) * 3):  # the scales are computed at run time
            assert_same_outputs(run(batch), model(batch))
        assert (run(x) - plain).abs().max() > 1e-3


def test_max_on_a_convolution_with_every_patch_scale_zero_outputs_the_bias_alone():
    conv = seeded(nn.Conv2d(2, 3, 3, padding=1))
    x = -conv_inputs(2, 5, 5).abs()  # no positive value; the border patches hold padding zeros
    x[:, :, 1:4, 1:4] = 0.0  # and every other patch a zero at its centre: every scale is 0
    forward = PERIPHERY | dict(noise_management="MAX")
    with torch.no_grad():
        y = converted_conv(conv, forward, x)(x)
    assert torch.equal(y, conv.bias.detach().view(1, -1, 1, 1).expand_as(y))
    assert_same_outputs(y, their_conv2d(conv, forward, x))


@pytest.mark.parametrize("layer_name", ["conv2d_grouped", "transposed2d_grouped"])
def test_onnx_reference_runs_the_managed_convolution_bodies_too(layer_name, tmp_path):
    from onnx.reference import ReferenceEvaluator

    make, shape = CONV_LAYERS[layer_name]
    conv, x = seeded(make()), conv_inputs(*shape, n=2)
    model = converted_conv(conv, settings("iterative"), x)
    path = xbar.export_onnx(model, (x[:1],), tmp_path / "conv.onnx")
    reference = ReferenceEvaluator(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the bodies' 1 / 0 for "no bound"
        got = reference.run(None, {reference.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        assert_same_outputs(torch.from_numpy(got), model(x))

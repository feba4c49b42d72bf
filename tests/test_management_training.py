"""Noise and bound management in the prepared (trainable) graph against aihwkit 1.1.0's torch tiles in training.

aihwkit's TorchInferenceRPUConfig tiles train through their management with plain autograd: the scales are
not detached, the converters round straight through and clip after rounding, and only the bound-management
read kept is differentiated. A prepared xbar layer in training mode must give the same outputs and the same
gradients (input, weight, bias, and the learned input range where aihwkit's divide by the range and multiply
back cancel, as they do under ABS_MAX and MAX) with matching noise-free settings; the settings, the layer and
the inputs are test_management_aihwkit's.
"""

import warnings

import pytest
import torch
from aihwkit.nn import AnalogConv2d, AnalogLinear
from test_management_aihwkit import (
    CONV_GEOMETRIES,
    CONV_LAYERS,
    CONV_MODES,
    MODES,
    OUT,
    PERIPHERY,
    assert_same_outputs,
    conv_inputs,
    equivalent_convolution,
    inputs,
    layer,
    seeded,
    settings,
    their_config,
)
from torch import nn

import xbar
from xbar import HardwareConfig
from xbar.passes.numerics.managed_training import ManagedReads

RANGE = 2.5


def their_layer(module: nn.Module, forward: dict, input_range: float = 0.0, max_input_size: int = 0) -> nn.Module:
    """aihwkit's analog layer of ``module`` (a linear or a 2d convolution) in training mode."""
    config = their_config(forward, max_input_size)
    if input_range:
        ranges = config.pre_post.input_range
        ranges.enable, ranges.learn_input_range, ranges.init_value, ranges.init_from_data = True, True, input_range, 0
    if isinstance(module, nn.Linear):
        analog = AnalogLinear(module.in_features, module.out_features, bias=True, rpu_config=config)
    else:
        analog = AnalogConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                              padding=module.padding, dilation=module.dilation, rpu_config=config)
    analog.set_weights(module.weight.data, module.bias.data)
    return analog.train()


def our_layer(module: nn.Module, forward: dict, x: torch.Tensor, input_range: float = 0.0,
              max_input_size: int = 0) -> torch.fx.GraphModule:
    overrides = {f"forward.{k}": v for k, v in forward.items()} | {
        "pre_post.input_range.enable": bool(input_range), "pre_post.input_range.init_value": input_range or 3.0,
        "pre_post.input_range.init_from_data": 0, "mapping.max_input_size": max_input_size}
    return xbar.prepare(module, (x[:1],), HardwareConfig().with_overrides(overrides)).train()


def their_gradients(analog: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict:
    """Output and gradients of aihwkit's layer: the logical weight's is the analog weight's times the mapping
    scale (its tile trains ``W / alpha`` with the gradient divided by ``alpha**2``)."""
    x = x.clone().requires_grad_()
    y = analog(x)
    (y * upstream).sum().backward()
    result = {"output": y.detach(), "input": x.grad}
    tiles = list(analog.analog_tiles())
    weights = [t.tile.weight.grad * t.get_mapping_scales().view(-1, 1) for t in tiles]
    result["weight"] = torch.cat(weights, dim=1)  # row tiles split the inputs
    (bias,) = [p for name, p in analog.named_parameters() if name.endswith("bias")]
    result["bias"] = bias.grad
    if tiles[0].input_range is not None:
        result["range"] = torch.stack([t.input_range.grad.reshape(()) for t in tiles])
    return result


def our_gradients(prepared: torch.fx.GraphModule, x: torch.Tensor, upstream: torch.Tensor) -> dict:
    x = x.clone().requires_grad_()
    y = prepared(x)
    (y * upstream).sum().backward()
    result = {"output": y.detach(), "input": x.grad, "weight": prepared.get_parameter("weight").grad.flatten(1),
              "bias": prepared.get_parameter("bias").grad}
    ranges = [m.value for n, m in sorted(prepared.named_modules()) if n.endswith("input_range")]
    if ranges:
        result["range"] = torch.stack([r.grad.reshape(()) for r in ranges])
    return result


def assert_same_gradients(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert ours[name].shape == theirs[name].shape, name
        assert_same_outputs(ours[name], theirs[name])


def upstream_for(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("mode", MODES)
def test_a_prepared_linear_layer_trains_through_the_management_as_aihwkits_torch_tile(mode):
    x = inputs()
    upstream = upstream_for((len(x), OUT))
    prepared = our_layer(layer(), settings(mode), x)
    assert [type(m) for m in prepared.modules() if isinstance(m, ManagedReads)] == [ManagedReads]
    ours = our_gradients(prepared, x, upstream)
    theirs = their_gradients(their_layer(layer(), settings(mode)), x, upstream)
    assert_same_gradients(ours, theirs)
    unmanaged = their_gradients(their_layer(layer(), PERIPHERY), x, upstream)  # the management matters
    assert (ours["weight"] - unmanaged["weight"]).abs().max() > 1e-3
    assert (ours["input"] - unmanaged["input"]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["abs_max", "max", "iterative"])
def test_the_input_range_gets_aihwkits_gradient_through_the_managed_reads(mode):
    """Under ABS_MAX and MAX the scale is ``max|clip(x)| / r``: aihwkit's divide by r and multiply back cancel,
    so its range gradient is its clip rule on the input's gradient, which includes the scale's part (the
    clipped values tie at the max; the first of them takes it)."""
    x = inputs()
    upstream = upstream_for((len(x), OUT))
    ours = our_gradients(our_layer(layer(), settings(mode), x, input_range=RANGE), x, upstream)
    theirs = their_gradients(their_layer(layer(), settings(mode), input_range=RANGE), x, upstream)
    assert_same_gradients(ours, theirs)
    assert torch.allclose(ours["range"], theirs["range"], rtol=1e-5)
    assert (x.abs() > RANGE).float().mean() > 0.2  # many inputs clip: their gradient is the range's


def test_bound_management_differentiates_the_read_it_keeps():
    """With a bound every first read clips, the gradient is that of a later read, not of the first one."""
    x = inputs()
    upstream = upstream_for((len(x), OUT))
    managed = our_gradients(our_layer(layer(), settings("iterative"), x), x, upstream)
    first_read = our_gradients(our_layer(layer(), settings("abs_max") | {"out_bound": 1.5}, x), x, upstream)
    assert (managed["output"] - first_read["output"]).abs().max() > 1e-2
    assert (managed["input"] - first_read["input"]).abs().max() > 1e-3
    assert_same_gradients(managed, their_gradients(their_layer(layer(), settings("iterative")), x, upstream))


def test_training_output_noise_is_drawn_at_every_bound_management_read_as_aihwkit_draws_it():
    """One draw of the output's shape per read, from torch's generator, in the tile's order: with the same seed
    aihwkit's linear tile and xbar's managed reads add the same noise (the first read clips, so there are
    several), and another seed changes the result."""
    x = inputs()
    upstream = upstream_for((len(x), OUT))
    forward = settings("iterative") | {"out_noise": 0.05}
    prepared, again = our_layer(layer(), forward, x), our_layer(layer(), forward, x)
    analog = their_layer(layer(), forward)
    torch.manual_seed(5)
    ours = our_gradients(prepared, x, upstream)
    torch.manual_seed(5)
    assert_same_gradients(ours, their_gradients(analog, x, upstream))
    torch.manual_seed(6)
    assert (our_gradients(again, x, upstream)["output"] - ours["output"]).abs().max() > 0.1
    with torch.no_grad():
        assert_same_outputs(our_layer(layer(), settings("iterative"), x).eval()(x),
                            our_layer(layer(), forward, x).eval()(x))  # training noise only


@pytest.mark.parametrize("geometry", ["padded", "strided_dilated"])
@pytest.mark.parametrize("mode", CONV_MODES)
def test_a_prepared_convolution_trains_through_each_patchs_management_as_aihwkits_conv2d(mode, geometry):
    conv = seeded(nn.Conv2d(3, 5, 3, **CONV_GEOMETRIES[geometry]))
    x = conv_inputs(3, 7, 8)
    upstream = upstream_for(conv(x).shape)
    ours = our_gradients(our_layer(conv, settings(mode), x), x, upstream)
    theirs = their_gradients(their_layer(conv, settings(mode)), x, upstream)
    assert_same_gradients(ours, theirs)
    unmanaged = their_gradients(their_layer(conv, PERIPHERY), x, upstream)
    assert (ours["weight"] - unmanaged["weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["abs_max", "iterative"])
def test_each_array_of_a_tiled_convolution_trains_through_its_own_management(mode):
    """4 channels x 9 taps on arrays of 18 rows: each array's slice of the patch has its own scale."""
    conv = seeded(nn.Conv2d(4, 5, 3, padding=1))
    x = conv_inputs(4, 6, 6)
    upstream = upstream_for(conv(x).shape)
    prepared = our_layer(conv, settings(mode), x, max_input_size=18)
    assert len([m for m in prepared.modules() if isinstance(m, ManagedReads)]) == 2
    ours = our_gradients(prepared, x, upstream)
    assert_same_gradients(ours, their_gradients(their_layer(conv, settings(mode), max_input_size=18), x, upstream))
    whole = our_gradients(our_layer(conv, settings(mode), x), x, upstream)
    assert (ours["input"] - whole["input"]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["abs_max", "max", "iterative"])
@pytest.mark.parametrize("max_input_size", [0, 18], ids=["one_array", "two_rows"])
def test_a_convolutions_range_over_patch_elements_gets_aihwkits_gradient_through_the_managed_reads(
        mode, max_input_size):
    """Each clipped patch element's own gradient, the scale's part included (a clipped element ties at its
    patch's max); each row of arrays its own range, as each of aihwkit's tiles."""
    conv = seeded(nn.Conv2d(4, 5, 3, padding=1))
    x = conv_inputs(4, 6, 6)
    upstream = upstream_for(conv(x).shape)
    prepared = our_layer(conv, settings(mode), x, input_range=RANGE, max_input_size=max_input_size)
    ours = our_gradients(prepared, x, upstream)
    theirs = their_gradients(their_layer(conv, settings(mode), RANGE, max_input_size), x, upstream)
    assert_same_gradients(ours, theirs)
    assert torch.allclose(ours["range"], theirs["range"], rtol=1e-5)
    assert len(ours["range"]) == (2 if max_input_size else 1)
    overrides = {f"forward.{k}": v for k, v in settings(mode).items()} | {
        "pre_post.input_range.init_value": RANGE, "pre_post.input_range.init_from_data": 0,
        "mapping.max_input_size": max_input_size, "pre_post.input_range.conv_elements": "PIXELS"}
    pixels = xbar.prepare(conv, (x[:1],), HardwareConfig().with_overrides(overrides)).train()
    per_pixel = our_gradients(pixels, x, upstream)  # the per-pixel rule: another range gradient, same others
    assert_same_outputs(per_pixel["input"], theirs["input"])
    assert (per_pixel["range"] - theirs["range"]).abs().max() > 1e-2 * theirs["range"].abs().max()


@pytest.mark.parametrize("mode", ["abs_max", "max_thres", "iterative"])
@pytest.mark.parametrize("layer_name", CONV_LAYERS)
def test_every_rank_and_grouped_or_transposed_convolution_trains_as_aihwkits_tile_on_its_patches(layer_name, mode):
    """aihwkit's tile trained on the unfolded input (of the equivalent convolution, for a transposed one), its
    gradient folded back onto the pixels; the weight, block diagonal or flipped there, is compared through the
    input's gradient."""
    make, shape = CONV_LAYERS[layer_name]
    conv, x = seeded(make()), conv_inputs(*shape)
    upstream = upstream_for(conv(x).shape)
    ours = our_gradients(our_layer(conv, settings(mode), x), x, upstream)
    x_theirs = x.clone().requires_grad_()
    patches, weight = equivalent_convolution(conv, x_theirs)
    out = weight.shape[0]
    weight = torch.block_diag(*weight.reshape(out, -1).chunk(conv.groups))
    analog = AnalogLinear(weight.shape[1], out, bias=True, rpu_config=their_config(settings(mode))).train()
    analog.set_weights(weight, conv.bias.data)
    y = analog(patches).transpose(1, 2).reshape(upstream.shape)
    (y * upstream).sum().backward()
    assert_same_outputs(ours["output"], y.detach())
    assert_same_outputs(ours["input"], x_theirs.grad)
    (bias,) = [p for name, p in analog.named_parameters() if name.endswith("bias")]
    assert_same_outputs(ours["bias"], bias.grad)


def test_fine_tuning_with_abs_max_trains_the_managed_reads_without_a_warning():
    x = inputs(64)
    targets = torch.arange(len(x)) % OUT
    prepared = our_layer(layer(), settings("abs_max"), x, input_range=RANGE)
    before = prepared.get_parameter("weight").detach().clone()
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xbar.fine_tune(prepared, x, targets, xbar.FineTuning(epochs=3, batch_size=16), on_step=losses.append)
    assert not [w for w in caught if "management" in str(w.message)]
    assert not torch.equal(prepared.get_parameter("weight").detach(), before)
    assert sum(losses[-4:]) < sum(losses[:4])
    with torch.no_grad():  # the trained graph computes what its converted arrays compute
        assert_same_outputs(prepared(x), xbar.convert(prepared)(x))


def test_a_compiled_prepared_graph_trains_through_every_read_as_the_eager_one():
    """Compiled, bound management makes every read and keeps one with ``where``: no data-dependent branch."""
    for module, x in ((layer(), inputs()), (seeded(nn.Conv2d(4, 5, 3, padding=1)), conv_inputs(4, 6, 6))):
        upstream = upstream_for(module(x).shape)
        eager = our_gradients(our_layer(module, settings("iterative"), x, input_range=RANGE), x, upstream)
        prepared = our_layer(module, settings("iterative"), x, input_range=RANGE)
        compiled = our_gradients(torch.compile(prepared, backend="aot_eager"), x, upstream)
        assert compiled.keys() == eager.keys()
        for name in eager:
            assert torch.allclose(compiled[name], eager[name], rtol=1e-6, atol=1e-6), name

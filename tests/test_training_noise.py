"""Training noise: the statistics of each kind, when it acts, where gradients go, and the models it trains."""

import json
import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from xbar import (
    HWA_FINE_TUNING,
    FineTuning,
    HardwareConfig,
    LayerRule,
    calibrate,
    convert,
    export_onnx,
    fine_tune,
    prepare,
)
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained
from xbar.passes.errors import ConfigError
from xbar.passes.numerics.training_noise import OutputNoise, TrainingNoise, WeightNoise

from conftest import NET, run

SAMPLES = 4000
NO_RANGE = {"pre_post.input_range.enable": False}
"""No input range: the layer's output is W x itself, in the units the formulas use (times amax)."""


def within_5_se(measured: torch.Tensor, expected: torch.Tensor, samples: int) -> bool:
    """A sample std of Gaussian draws within 5 standard errors (sigma / sqrt(2 n)) of ``expected``."""
    return bool(((measured - expected).abs() <= 5 * expected / math.sqrt(2 * samples)).all())


class Wrapped(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.fc = layer

    def forward(self, x):
        return self.fc(x)


def prepared_linear(overrides: dict, inputs=8, outputs=6, method="symbolic_trace"):
    torch.manual_seed(0)
    layer = Wrapped(nn.Linear(inputs, outputs))
    return layer, prepare(layer, (torch.randn(2, inputs),), HardwareConfig().with_overrides(overrides),
                          capture_method=method)


def weight_draws(prepared, x: torch.Tensor, count: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per weight-noise module: the clean block one training forward gives it, and ``count`` draws of it."""
    seen = {}
    hooks = [m.register_forward_hook(lambda m, args, out, n=name: seen.setdefault(n, args[0].detach()))
             for name, m in prepared.named_children() if isinstance(m, WeightNoise)]
    prepared.train()
    prepared(x)
    for hook in hooks:
        hook.remove()
    return {name: (clean, torch.stack([prepared.get_submodule(name)(clean) for _ in range(count)]))
            for name, clean in seen.items()}


def test_add_normal_has_std_dev_times_the_arrays_amax_per_array():
    _, prepared = prepared_linear(NO_RANGE | {"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.1,
                                              "mapping.max_input_size": 4})
    with torch.no_grad():
        prepared.get_parameter("fc.weight")[:, 4:] *= 10  # the second array's amax is ten times larger
    draws = weight_draws(prepared, torch.randn(3, 8), SAMPLES)
    assert sorted(draws) == ["fc_tile0_0_weight_noise", "fc_tile1_0_weight_noise"]
    amaxes = []
    for clean, noisy in draws.values():
        amax = clean.abs().max()
        amaxes.append(float(amax))
        std = (noisy - clean).std(dim=0)
        assert within_5_se(std, torch.full_like(std, 0.1 * float(amax)), SAMPLES)
    assert amaxes[1] > 5 * amaxes[0]


def test_add_normal_per_channel_is_relative_to_each_output_rows_amax():
    _, prepared = prepared_linear(NO_RANGE | {"modifier.type": "ADD_NORMAL_PER_CHANNEL",
                                                  "modifier.std_dev": 0.05})
    with torch.no_grad():
        prepared.get_parameter("fc.weight").mul_(torch.arange(1, 7.0).unsqueeze(1))
    ((clean, noisy),) = weight_draws(prepared, torch.randn(3, 8), SAMPLES).values()
    expected = 0.05 * clean.abs().amax(dim=1, keepdim=True).expand_as(clean)
    assert within_5_se((noisy - clean).std(dim=0), expected, SAMPLES)


def test_prog_noise_follows_the_polynomial_and_keeps_each_weights_sign():
    coeffs = (0.26348, 1.9650, -1.1731)
    _, prepared = prepared_linear(NO_RANGE | {"modifier.type": "PROG_NOISE", "modifier.std_dev": 1.0,
                                              "modifier.coeffs": list(coeffs)})
    ((clean, noisy),) = weight_draws(prepared, torch.randn(3, 8), SAMPLES).values()
    assert ((noisy * clean.sign()) >= 0).all()
    amax = clean.abs().max()
    a = clean.abs() / amax
    sigma = amax * (coeffs[0] + coeffs[1] * a + coeffs[2] * a * a) / 25.0
    far = clean.abs() > 5 * sigma  # away from zero the mirror changes nothing: a plain Gaussian
    assert far.sum() > 10
    assert within_5_se((noisy - clean).std(dim=0)[far], sigma[far], SAMPLES)


def test_the_modifier_is_off_in_eval_on_in_training_fresh_every_forward_and_leaves_the_weights_clean():
    layer, prepared = prepared_linear({"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.1})
    x = torch.randn(5, 8)
    clean = prepared.get_parameter("fc.weight").detach().clone()
    expected = layer.eval()(x)
    prepared.eval()
    assert torch.allclose(prepared(x), expected, atol=1e-6)
    prepared.train()
    first, second = prepared(x), prepared(x)
    assert not torch.allclose(first, expected, atol=1e-3) and not torch.allclose(first, second, atol=1e-3)
    assert torch.equal(prepared.get_parameter("fc.weight"), clean)
    prepared.eval()
    assert torch.allclose(prepared(x), expected, atol=1e-6)


def test_enable_during_test_keeps_the_noise_on_in_eval_but_not_in_calibration():
    overrides = {"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.1, "forward.out_noise": 0.1}
    _, quiet = prepared_linear(overrides)
    _, noisy = prepared_linear(overrides | {"modifier.enable_during_test": True})
    x = torch.randn(64, 8) * 3
    noisy.eval()
    assert not torch.allclose(noisy(x), noisy(x))
    calibrate(quiet, x.split(8))
    calibrate(noisy, x.split(8))
    assert quiet.get_parameter("fc_input_range.value") == noisy.get_parameter("fc_input_range.value")


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_gradients_reach_the_clean_weights_and_the_input_ranges_straight_through(method):
    overrides = {"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.1, "forward.out_noise": 0.05,
                 "forward.w_noise": 0.02, "forward.w_noise_type": "PCM_READ", "forward.inp_res": 254,
                 "forward.out_res": 254, "forward.out_bound": 10, "pre_post.input_range.init_value": 0.5,
                 "pre_post.input_range.init_from_data": 0}
    _, prepared = prepared_linear(overrides, method=method)
    prepared.train()
    x = torch.randn(16, 8)
    torch.manual_seed(3)
    prepared(x).square().sum().backward()
    weight = prepared.get_parameter("fc.weight")
    value = prepared.get_parameter("fc_input_range.value")
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert value.grad is not None and value.grad != 0
    # straight through: the weight gets the gradient of the noisy forward, d(W + n)/dW = 1
    noise = prepared.get_submodule("fc_weight_noise")
    torch.manual_seed(3)
    seen = []
    hook = noise.register_forward_hook(lambda m, a, out: seen.append(out.retain_grad() or out))
    weight.grad = None
    prepared(x).square().sum().backward()
    hook.remove()
    assert torch.allclose(weight.grad, seen[0].grad)


def output_draws(prepared, x: torch.Tensor) -> torch.Tensor:
    """The output perturbation, ``x`` repeated SAMPLES times in one training batch: [SAMPLES, ...]."""
    prepared.eval()
    clean = prepared(x)
    prepared.train()
    return prepared(x.expand(SAMPLES, *x.shape[1:]).contiguous()) - clean


@pytest.mark.parametrize("columnwise", [False, True])
def test_out_noise_has_out_noise_times_amax_std(columnwise):
    _, prepared = prepared_linear(NO_RANGE | {"forward.out_noise": 0.04,
                                              "mapping.weight_scaling_columnwise": columnwise})
    weight = prepared.get_parameter("fc.weight").detach()
    amax = weight.abs().amax(dim=1) if columnwise else weight.abs().max().expand(6)
    assert within_5_se(output_draws(prepared, torch.randn(1, 8)).std(dim=0), 0.04 * amax, SAMPLES)


def test_pcm_read_noise_scales_with_sqrt_of_abs_weight_times_input_squared():
    _, prepared = prepared_linear(NO_RANGE | {"forward.w_noise": 0.0175, "forward.w_noise_type": "PCM_READ",
                                              "forward.out_noise": 0.01})
    weight = prepared.get_parameter("fc.weight").detach()
    x = torch.randn(1, 8)
    amax = weight.abs().max()
    normalised = weight.abs() / amax
    expected = amax * torch.sqrt(0.01 ** 2 + 0.0175 ** 2 * (normalised * x * x).sum(dim=1))
    assert within_5_se(output_draws(prepared, x).std(dim=0), expected, SAMPLES)


def test_pcm_read_noise_of_a_convolution_uses_the_convolution():
    torch.manual_seed(0)
    conv = Wrapped(nn.Conv2d(2, 3, 3, padding=1))
    prepared = prepare(conv, (torch.randn(2, 2, 5, 5),), HardwareConfig().with_overrides(
        NO_RANGE | {"forward.w_noise": 0.05, "forward.w_noise_type": "PCM_READ"}), capture_method="symbolic_trace")
    weight = prepared.get_parameter("fc.weight").detach()
    x = torch.randn(1, 2, 5, 5)
    amax = weight.abs().max()
    expected = amax * 0.05 * torch.nn.functional.conv2d(x * x, weight.abs() / amax, padding=1)[0].sqrt()
    assert within_5_se(output_draws(prepared, x).std(dim=0), expected, SAMPLES)


ALL_NOISE = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10, "forward.out_noise": 0.04,
             "forward.w_noise": 0.0175, "forward.w_noise_type": "PCM_READ", "modifier.type": "ADD_NORMAL",
             "modifier.std_dev": 0.05, "mapping.max_input_size": 64, "mapping.max_output_size": 64}


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("name", DIGIT_CLASSIFIERS)
def test_a_training_step_with_all_noise_runs_on_every_zoo_model(name, method):
    x = load_digits_split().train_x[:8]
    prepared = prepare(load_pretrained(name), (x[:2],), HardwareConfig().with_overrides(ALL_NOISE),
                       capture_method=method)
    assert any(isinstance(m, WeightNoise) for m in prepared.modules())
    assert any(isinstance(m, OutputNoise) for m in prepared.modules())
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3)
    prepared.train()
    loss = torch.nn.functional.cross_entropy(prepared(x), torch.arange(8))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not any(isinstance(m, TrainingNoise) for m in convert(prepared).modules())


def test_fine_tune_with_the_same_seed_gives_the_same_model_and_leaves_the_callers_random_state():
    digits = load_digits_split()
    x, y = digits.train_x[:128], digits.train_y[:128]
    config = HardwareConfig().with_overrides({"modifier.type": "ADD_NORMAL", "modifier.std_dev": 0.05})
    weights = []
    for _ in range(2):
        prepared = prepare(load_pretrained("mlp"), (x[:1],), config)
        torch.manual_seed(123)
        state = torch.random.get_rng_state()
        fine_tune(prepared, x, y, FineTuning(epochs=1, seed=7))
        assert torch.equal(torch.random.get_rng_state(), state)
        weights.append(torch.cat([p.detach().flatten() for p in prepared.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_layer_rules_set_training_noise_per_layer():
    config = HardwareConfig(layers=[LayerRule(name="fc2", overrides={"modifier.type": "ADD_NORMAL",
                                                                     "modifier.std_dev": 0.1,
                                                                     "forward.out_noise": 0.02})])
    prepared = prepare(load_pretrained("mlp"), (load_digits_split().train_x[:2],), config)
    noise = sorted(name for name, m in prepared.named_children() if isinstance(m, TrainingNoise))
    assert noise == ["fc2_output_noise", "fc2_weight_noise"]


def test_the_onnx_file_records_the_training_noise_and_holds_no_randomness(tmp_path):
    x = load_digits_split().train_x[:2]
    config = HardwareConfig().with_overrides(ALL_NOISE)
    converted = convert(prepare(load_pretrained("mlp"), (x,), config))
    model = onnx.load(export_onnx(converted, (x,), tmp_path / "mlp.onnx"))
    recorded = json.loads({p.key: p.value for p in model.metadata_props}["xbar.hardware_config"])
    assert recorded["modifier"]["type"] == "ADD_NORMAL" and recorded["modifier"]["std_dev"] == 0.05
    assert recorded["forward"]["out_noise"] == 0.04 and recorded["forward"]["w_noise_type"] == "PCM_READ"
    assert HardwareConfig.from_dict(recorded).to_dict() == config.to_dict()
    ops = {n.op_type for n in model.graph.node} | {n.op_type for f in model.functions for n in f.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}


@pytest.mark.parametrize("overrides, message", [
    ({"modifier.std_dev": -0.1}, "modifier.std_dev must be >= 0"),
    ({"modifier.type": "MULT_NORMAL"}, "modifier.type must be one of"),
    ({"modifier.coeffs": []}, "modifier.coeffs must be a non-empty list"),
    ({"modifier.assumed_wmax": 0}, "modifier.assumed_wmax must be > 0"),
    ({"forward.out_noise": -1}, "forward.out_noise must be >= 0"),
    ({"forward.w_noise": 0.02}, "needs forward.w_noise_type = PCM_READ"),
])
def test_bad_training_noise_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HardwareConfig().with_overrides(overrides)


def test_the_command_line_fine_tunes_with_the_configs_training_noise(workspace, capsys):
    x = torch.from_numpy(np.load(workspace / "inputs.npz")["x"])
    np.savez(workspace / "labelled.npz", x=x.numpy(), y=(torch.arange(len(x)) % 3).numpy())
    status, out, err = run(capsys, "evaluate", *NET, "--calib", "labelled.npz", "--seeds", "1", "--times", "1s",
                           "--finetune", "1", "--set", "modifier.type=ADD_NORMAL_PER_CHANNEL",
                           "--set", "modifier.std_dev=0.1", "--set", "forward.out_noise=0.04")
    assert status == 0, err
    assert "modifier.type=ADD_NORMAL_PER_CHANNEL, modifier.std_dev=0.1" in out
    assert "hardware-aware fine-tuned (training noise on) on 40 labelled samples" in out
    assert f"other parameters lr {HWA_FINE_TUNING.weight_lr:g}" in out

"""The HERMES and CMO ReRAM device models against aihwkit 1.1.0's own (README "Device realism").

Each statistic (mean and std of the programmed conductances, of the drift exponents and of the conductances read
at several times, at several targets) of xbar's samples and of aihwkit's, drawn from independent seeds, agree
within five standard errors of their difference; drawn from the same seed they are the same samples, because
xbar draws its normals in aihwkit's order.
"""

import math

import pytest
import torch
from aihwkit.inference.noise.hermes import HermesNoiseModel as TheirHermes
from aihwkit.inference.noise.reram import ReRamCMONoiseModel as TheirCMO
from torch import nn

import xbar
from xbar import HardwareConfig, HermesNoiseModel, ReRamCMONoiseModel
from xbar.compiler.devices.registry import noise_model
from xbar.passes.numerics.crossbar import crossbar_modules

SAMPLES = 20000
"""Devices per target conductance."""
HERMES_TIMES = (0.0, 1.0, 3600.0, 86400.0, 3.15e7)
CMO_TIMES = (0.0, 0.5, 1.0, 3600.0, 86400.0, 3.15e7)


def std_error_of_std(x: torch.Tensor) -> float:
    """Standard error of the sample std (from the fourth central moment: right for clamped, skewed samples)."""
    centred = x.double() - x.double().mean()
    m2, m4 = centred.pow(2).mean().item(), centred.pow(4).mean().item()
    return math.sqrt(max(m4 - m2 * m2, 0.0) / (4 * x.numel() * max(m2, 1e-30)))


def assert_same_distribution(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Mean and std of two independent samples agree within five standard errors of their difference."""
    n = ours.numel()
    mean_se = math.sqrt((ours.var().item() + theirs.var().item()) / n)
    std_se = math.hypot(std_error_of_std(ours), std_error_of_std(theirs))
    assert abs(ours.mean().item() - theirs.mean().item()) <= 5 * mean_se + 1e-6, \
        f"{what}: mean {ours.mean().item():.6g} vs aihwkit {theirs.mean().item():.6g}"
    assert abs(ours.std().item() - theirs.std().item()) <= 5 * std_se + 1e-6, \
        f"{what}: std {ours.std().item():.6g} vs aihwkit {theirs.std().item():.6g}"


def hermes_pairs():
    return [(HermesNoiseModel(num_devices=n), TheirHermes(num_devices=n)) for n in (1, 2)] + [
        (HermesNoiseModel(num_devices=1, g_max=8.0, prog_noise_scale=0.5, read_noise_scale=2.0, drift_scale=0.7,
                          t_0=50.0), TheirHermes(num_devices=1, g_max=8.0, prog_noise_scale=0.5,
                                                 read_noise_scale=2.0, drift_scale=0.7, t_0=50.0))]


def targets(g_max: float, fractions) -> torch.Tensor:
    """SAMPLES devices at each fraction of ``g_max``: [len(fractions), SAMPLES]."""
    return (torch.tensor(fractions, dtype=torch.float32) * g_max)[:, None].expand(-1, SAMPLES).contiguous()


def hermes_samples(model, g: torch.Tensor, seed: int, ours: bool) -> list[torch.Tensor]:
    """Programmed conductances, drift exponents and the conductances at each of HERMES_TIMES."""
    if ours:
        generator = torch.Generator().manual_seed(seed)
        g_prog = model.apply_programming_noise_to_conductance(g, generator)
        nu = model.generate_drift_coefficients(g, generator)
        return [g_prog, nu] + [model.apply_drift_noise_to_conductance(g_prog, nu, t, generator)
                               for t in HERMES_TIMES]
    torch.manual_seed(seed)
    g_prog = model.apply_programming_noise_to_conductance(g)
    nu = model.generate_drift_coefficients(g)
    return [g_prog, nu] + [model.apply_drift_noise_to_conductance(g_prog, nu, t) for t in HERMES_TIMES]


HERMES_FRACTIONS = (0.0, 0.02, 0.0945, 0.12, 0.16, 0.25, 0.31, 0.5, 0.8, 1.0)
"""Target conductances (fractions of g_max) on both sides of every knee of the fits."""


@pytest.mark.parametrize("pair", range(3), ids=["one-device", "two-device", "scaled"])
def test_hermes_statistics_match_aihwkits(pair):
    ours_model, theirs_model = hermes_pairs()[pair]
    g = targets(ours_model.g_max, HERMES_FRACTIONS)
    ours, theirs = hermes_samples(ours_model, g, 1, True), hermes_samples(theirs_model, g, 2, False)
    names = ["programmed", "nu"] + [f"read at {t:g} s" for t in HERMES_TIMES]
    for name, a, b in zip(names, ours, theirs):
        for row, fraction in enumerate(HERMES_FRACTIONS):
            assert_same_distribution(a[row], b[row], f"{name}, g = {fraction:g} g_max")
    same_seed = hermes_samples(theirs_model, g, 1, False)
    for name, a, b in zip(names, ours, same_seed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def cmo_samples(model, g: torch.Tensor, seed: int, ours: bool) -> list[torch.Tensor]:
    """Programmed conductances and the conductances at each of CMO_TIMES."""
    if ours:
        generator = torch.Generator().manual_seed(seed)
        g_prog = model.apply_programming_noise_to_conductance(g, generator)
        nu = model.generate_drift_coefficients(g, generator)
        return [g_prog] + [model.apply_drift_noise_to_conductance(g_prog, nu, t, generator) for t in CMO_TIMES]
    torch.manual_seed(seed)
    g_prog = model.apply_programming_noise_to_conductance(g)
    nu = model.generate_drift_coefficients(g)
    return [g_prog] + [model.apply_drift_noise_to_conductance(g_prog, nu, t) for t in CMO_TIMES]


CMO_TARGETS = (9.0, 10.0, 20.0, 45.0, 70.0, 88.199997)


@pytest.mark.parametrize("settings", [{}, {"acceptance_range": 2.0},
                                      {"g_min": 12.0, "g_max": 60.0, "prog_noise_scale": 3.0,
                                       "read_noise_scale": 0.5, "drift_scale": 1.5}],
                         ids=["default", "2%", "scaled"])
def test_reram_cmo_statistics_match_aihwkits(settings):
    ours_model, theirs_model = ReRamCMONoiseModel(**settings), TheirCMO(**settings)
    assert theirs_model.acceptance_range == ours_model.acceptance_range  # aihwkit's default falls back to 0.2
    g = torch.tensor(CMO_TARGETS).clamp(ours_model.g_min, ours_model.g_max)[:, None].expand(-1, SAMPLES)
    g = g.contiguous()
    ours, theirs = cmo_samples(ours_model, g, 1, True), cmo_samples(theirs_model, g, 2, False)
    names = ["programmed"] + [f"read at {t:g} s" for t in CMO_TIMES]
    for name, a, b in zip(names, ours, theirs):
        for row in range(g.shape[0]):
            assert_same_distribution(a[row], b[row], f"{name}, g = {g[row, 0].item():g} uS")
    for name, a, b in zip(names, ours, cmo_samples(theirs_model, g, 1, False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_the_defaults_are_aihwkits():
    for devices in (1, 2):
        ours, theirs = HermesNoiseModel(num_devices=devices), TheirHermes(num_devices=devices)
        for name in ("g_max", "t_0", "t_read", "prog_coeff_g_max_reference", "prog_noise_scale",
                     "read_noise_scale", "drift_scale"):
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name)), name
        assert ours.prog_coeff == pytest.approx(theirs.prog_coeff)
    own = HermesNoiseModel(prog_coeff=(0.1, 0.2), g_max=15.0)
    assert own.prog_coeff_g_max_reference == 15.0 and own.to_dict()["parameters"]["prog_coeff"] == [0.1, 0.2]
    ours, theirs = ReRamCMONoiseModel(), TheirCMO()
    for name in ("g_max", "g_min", "prog_noise_scale", "read_noise_scale", "drift_scale", "acceptance_range"):
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name)), name
    assert ours.coeff_dict == {k: pytest.approx(v) for k, v in theirs.coeff_dict.items()}
    assert ours.decay_dict == {k: pytest.approx(v) for k, v in theirs.decay_dict.items()}
    assert ours.read_dict == pytest.approx(theirs.read_dict)
    assert ReRamCMONoiseModel().to_dict()["parameters"]["coeff_dict"] == {"0.2": [0.00081107, 0.00106879],
                                                                          "2.0": [0.0112185391, 0.01129027418]}


def test_a_cmo_device_relaxed_to_zero_reads_g_min_where_aihwkit_gives_nan():
    model = ReRamCMONoiseModel(g_min=0.0, g_max=25.0)
    g = torch.zeros(SAMPLES)
    read = model.apply_drift_noise_to_conductance(g, g, 86400.0, torch.Generator().manual_seed(0))
    assert not read.isnan().any() and (read >= 0).all() and (read == 0).float().mean() > 0.5
    torch.manual_seed(0)
    assert TheirCMO(g_min=0.0, g_max=25.0).apply_drift_noise_to_conductance(g, g, 86400.0).isnan().any()


def level_layer(g_max: float, g_min: float = 0.0):
    """A converted 64x64 linear layer with weights at many levels, on a converter of that range."""
    layer = nn.Linear(64, 64, bias=False)
    layer.weight.data = torch.linspace(-1, 1, 64 * 64).reshape(64, 64)
    config = HardwareConfig().with_overrides({"converter.g_max": g_max, "converter.g_min": g_min})
    return xbar.convert(xbar.prepare(layer.eval(), (torch.randn(2, 64),), config))


@pytest.mark.parametrize("model, g_range", [(HermesNoiseModel(), (20.7, 0.0)),
                                            (HermesNoiseModel(num_devices=1), (10.35, 0.0)),
                                            (ReRamCMONoiseModel(), (88.199997, 9.0))])
def test_same_seed_same_arrays_through_program_and_drift(model, g_range):
    converted = level_layer(*g_range)
    runs = [xbar.drift(xbar.program(converted, model, seed=5), 86400.0, seed=6) for _ in range(2)]
    other = xbar.drift(xbar.program(converted, model, seed=7), 86400.0, seed=6)
    (a, b, c) = (next(iter(crossbar_modules(r).values())) for r in (*runs, other))
    for name in ("g_plus", "g_minus", "g_plus_programmed", "nu_minus"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.g_plus, c.g_plus)
    assert a.settings.drift_gain == b.settings.drift_gain != 1.0


def test_the_registry_builds_them_with_the_converters_range():
    assert noise_model("hermes", None, 20.7, "--noise") == HermesNoiseModel()
    assert noise_model(None, {"model": "hermes", "num_devices": 1}, 10.35, "--config c.toml") == \
        HermesNoiseModel(num_devices=1)
    assert noise_model("reram-cmo", None, 88.199997, "--noise", 9.0) == ReRamCMONoiseModel()
    assert noise_model("reram-cmo", None, 50.0, "--noise", 5.0) == ReRamCMONoiseModel(g_max=50.0, g_min=5.0)
    assert noise_model("pcm", None, 25.0, "--noise", 0.0) == xbar.PCMLikeNoiseModel()  # PCM has no g_min


@pytest.mark.parametrize("call, match", [
    (lambda: noise_model("hermes", None, 25.0, "--noise"), r"beyond the 20.7 uS .* converter.g_max=20.7"),
    (lambda: HermesNoiseModel(num_devices=1, g_max=20.7), "beyond the 10.35 uS"),
    (lambda: HermesNoiseModel(num_devices=3), "num_devices must be 1 or 2"),
    (lambda: HermesNoiseModel(t_0=0.0), "t_0"),
    (lambda: ReRamCMONoiseModel(acceptance_range=0.02), r"no programming fit; choose one of 0.2, 2"),
    (lambda: ReRamCMONoiseModel(g_min=90.0), "g_min=90 must be below"),
    (lambda: ReRamCMONoiseModel(decay_dict={"mean": [0.1]}), "decay_dict needs"),
    (lambda: xbar.program(level_layer(88.199997), ReRamCMONoiseModel(), seed=0), "converter.g_min=9"),
])
def test_bad_parameters_are_one_user_error(call, match):
    with pytest.raises(xbar.UserError, match=match) as info:
        call()
    assert "\n" not in str(info.value)

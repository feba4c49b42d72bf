"""forward.out_noise at every read when ONNX Runtime evaluates an exported file, as the converted model reads it.

The file records each array's ``out_noise`` in ``xbar.layers``; ONNX Runtime evaluation feeds every call site's
noise as an input added before its ADC, drawn from a torch generator in the converted model's order of reads, so
one seed gives the logits the converted model gives once handed a generator of that seed: bit for bit with an
ADC here (the runtimes' matmuls agree on this small net), and the figures of a zoo model under the parity rules.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import xbar
from xbar import OutNoiseAtRead, PCMLikeNoiseModel, UserError, evaluate_onnx, onnx_accuracy_over_time, score
from xbar.compiler.cli.arguments import DEFAULT_BATCH_SIZE
from xbar.compiler.devices.evaluation import accuracy_over_time, read_out_noise_from
from xbar.compiler.onnx.evaluation import FileSession, NoiseDraws, file_out_noise, noise_sites, noisy_model
from xbar.models import load_digits_split, load_pretrained
from xbar.passes.numerics.crossbar import crossbar_modules, out_noise_in_codes

from conftest import run

OUT_NOISE = 0.1
ADC = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 3.0}


class SharedNet(nn.Module):
    """A convolution, a linear layer called twice and a head; both linear layers split into two tiles."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean(dim=(2, 3)).repeat(1, 4)
        return self.head(self.fc(torch.relu(self.fc(h))))


def exported(net: nn.Module, x: torch.Tensor, overrides: dict, path):
    prepared = xbar.prepare(net.eval(), (x[:2],), xbar.HardwareConfig().with_overrides(overrides))
    xbar.calibrate(prepared, [x])
    converted = xbar.convert(prepared)
    return converted, xbar.export_onnx(converted, (x[:2],), path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    torch.manual_seed(0)
    x = torch.randn(40, 1, 6, 6)
    overrides = ADC | {"forward.out_noise": OUT_NOISE, "mapping.max_input_size": 10}
    converted, path = exported(SharedNet(), x, overrides, tmp_path_factory.mktemp("shared") / "shared.onnx")
    return converted, path, x


@pytest.fixture(scope="module")
def hwa_lenet(tmp_path_factory):
    digits = load_digits_split()
    prepared = xbar.prepare(load_pretrained("lenet"), (digits.train_x[:2],), xbar.preset_config("hwa"))
    xbar.calibrate(prepared, [digits.train_x[:64]])
    converted = xbar.convert(prepared)
    path = xbar.export_onnx(converted, (digits.test_x[:2],), tmp_path_factory.mktemp("hwa") / "lenet.onnx")
    return converted, path, (digits.test_x[:600], digits.test_y[:600])


def onnx_logits(path, x: torch.Tensor, seed, batch_size: int = 16) -> torch.Tensor:
    """The file's outputs in ONNX Runtime, batch by batch, with noise of generator ``seed`` (None: none)."""
    model = onnx.load(path)
    sites = noise_sites(model)
    session = FileSession(noisy_model(model, sites, str(path)), str(path), sites=sites)
    draws = None if seed is None else NoiseDraws(sites, torch.Generator().manual_seed(seed))
    return torch.cat([session.run(session.fitted(batch), {}, draws) for batch in x.split(batch_size)])


def torch_logits(converted, x: torch.Tensor, seed, batch_size: int = 16) -> torch.Tensor:
    read_out_noise_from(converted, None if seed is None else torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = torch.cat([converted(batch) for batch in x.split(batch_size)])
    read_out_noise_from(converted, None)
    return logits


def test_every_call_site_of_every_tile_has_a_noise_input_in_the_order_the_converted_model_reads_them(shared):
    converted, path, _ = shared
    sites = noise_sites(onnx.load(path))
    fc, head = ("fc_tile0_0_crossbar", "fc_tile1_0_crossbar"), ("head_tile0_0_crossbar", "head_tile1_0_crossbar")
    assert [site.input for site in sites] == [
        "conv_crossbar.out_noise.0", *(f"{a}.out_noise.0" for a in fc), *(f"{a}.out_noise.1" for a in fc),
        *(f"{a}.out_noise.0" for a in head)]
    arrays = crossbar_modules(converted)
    assert [site.std for site in sites] == [out_noise_in_codes(OUT_NOISE, arrays[site.array].settings)
                                            for site in sites]
    assert sites[0].std == pytest.approx(OUT_NOISE * 127 / 3.0)


def test_the_files_noisy_logits_with_seed_s_are_the_converted_models_with_seed_s_bit_for_bit(shared):
    converted, path, x = shared
    clean = torch_logits(converted, x, None)
    assert torch.equal(onnx_logits(path, x, None), clean)
    for seed in (4, 5):
        noisy = torch_logits(converted, x, seed)
        assert torch.equal(onnx_logits(path, x, seed), noisy)
        assert (noisy - clean).abs().max() > 10 * float(torch.finfo(torch.float32).eps) * clean.abs().max()
    assert not torch.equal(onnx_logits(path, x, 4), onnx_logits(path, x, 5))


def test_the_noise_of_a_read_has_out_noise_in_adc_codes_as_its_std(tmp_path):
    """One linear array, 300 reads of 64 samples x 6 columns: the std of the output's deviation over one ADC
    step is out_noise * (adc_steps / 2) / out_bound (rounding adds 1/12 of a code's variance, 0.2% here)."""
    generator = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(64, 24, generator=generator)
    converted, path = exported(nn.Linear(24, 6), x, ADC | {"forward.out_noise": OUT_NOISE}, tmp_path / "fc.onnx")
    model = onnx.load(path)
    (site,) = noise_sites(model)
    session = FileSession(noisy_model(model, [site], str(path)), str(path), sites=[site])
    samples = session.fitted(x)
    clean = session.run(samples, {})
    draws = NoiseDraws([site], torch.Generator().manual_seed(0))
    deviations = torch.stack([session.run(samples, {}, draws) - clean for _ in range(300)])
    (array,) = crossbar_modules(converted).values()
    step = abs(array.settings.constants["out_scale"])
    std = deviations.std().item() / step
    assert std == pytest.approx(OUT_NOISE * 127 / 3.0, rel=0.02)  # 115,200 draws: standard error 0.2%
    assert abs(deviations.mean().item()) / step < 4 * std / deviations.numel() ** 0.5


def test_evaluate_onnx_scores_what_the_converted_model_scores_with_the_same_seeds_noise(hwa_lenet):
    converted, path, (x, y) = hwa_lenet
    accuracy = xbar.metric("accuracy")
    for seed in (0, 1):
        expected = score(read_out_noise_from(converted, torch.Generator().manual_seed(seed)), x, y, accuracy)
        assert abs(evaluate_onnx(path, (x, y), seed=seed) - expected) <= 1 / len(y)
    read_out_noise_from(converted, None)
    quiet = evaluate_onnx(path, (x, y), out_noise=OutNoiseAtRead.TRAINING_ONLY)
    assert abs(quiet - score(converted, x, y, accuracy)) <= 1 / len(y)
    assert len({evaluate_onnx(path, (x, y), seed=seed) for seed in range(4)} | {quiet}) > 1


def test_re_programming_reads_with_each_seed_and_times_output_noise_as_the_torch_path(hwa_lenet):
    converted, path, (x, y) = hwa_lenet
    times = {"1s": 1.0, "1d": 86400.0}
    expected = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 2, x, y)
    got = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), times, 2, (x, y))
    quiet = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), times, 2, (x, y),
                                    out_noise=OutNoiseAtRead.TRAINING_ONLY)
    assert got.out_noise is expected.out_noise is OutNoiseAtRead.EVERY_READ
    assert quiet.out_noise is OutNoiseAtRead.TRAINING_ONLY and quiet.ideal == got.ideal
    for ours, theirs in zip(got.points, expected.points):
        assert np.abs(np.subtract(ours.values, theirs.values)).max() <= 1 / len(y)
    assert [p.values for p in got.points] != [p.values for p in quiet.points]


def without_out_noise_metadata(path, into):
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    props["xbar.layers"] = json.dumps([{k: v for k, v in entry.items() if k != "out_noise"}
                                       for entry in json.loads(props["xbar.layers"])])
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, into)
    return into


def test_a_file_that_records_no_out_noise_reads_noise_free(hwa_lenet, tmp_path):
    _, path, data = hwa_lenet
    older = onnx.load(without_out_noise_metadata(path, tmp_path / "older.onnx"))
    assert noise_sites(older) == []
    assert file_out_noise(older, OutNoiseAtRead.EVERY_READ) is OutNoiseAtRead.TRAINING_ONLY
    assert evaluate_onnx(older, data, seed=3) == evaluate_onnx(path, data, out_noise=OutNoiseAtRead.TRAINING_ONLY)


MANAGEMENT = {"noise management ABS_MAX": {"pre_post.input_range.enable": False,
                                           "forward.noise_management": "ABS_MAX"},
              "bound management": {"forward.bound_management": "Iterative"}}


@pytest.mark.parametrize("management", sorted(MANAGEMENT))
def test_output_noise_with_noise_or_bound_management_is_refused_in_one_line(management, tmp_path, capsys):
    x = 1.5 * torch.randn(32, 24, generator=torch.Generator().manual_seed(3))
    overrides = ADC | {"forward.out_noise": OUT_NOISE} | MANAGEMENT[management]
    _, path = exported(nn.Linear(24, 6), x, overrides, tmp_path / "managed.onnx")
    data = (x, torch.zeros(32, dtype=torch.long))
    with pytest.raises(UserError, match="noise or bound management"):
        evaluate_onnx(path, data)
    assert 0 <= evaluate_onnx(path, data, out_noise=OutNoiseAtRead.TRAINING_ONLY) <= 1
    with pytest.raises(UserError, match="OutNoiseAtRead"):
        evaluate_onnx(path, data, out_noise="every-read")


def test_xbar_evaluate_of_the_file_reads_with_output_noise_unless_told_training_only(hwa_lenet, capsys):
    _, path, _ = hwa_lenet
    digits = load_digits_split()
    data = (digits.test_x, digits.test_y)
    batch = {"batch_size": DEFAULT_BATCH_SIZE}  # the noise of a read has its batch's shape
    status, out, _ = run(capsys, "evaluate", str(path), "--json")
    assert status == 0
    report = json.loads(out)
    assert report["out_noise_at_read"] == "every-read" and report["accuracy"] == evaluate_onnx(path, data, **batch)
    status, out, _ = run(capsys, "evaluate", str(path), "--json", "--out-noise", "training-only")
    report = json.loads(out)
    assert report["out_noise_at_read"] == "training-only"
    assert report["accuracy"] == evaluate_onnx(path, data, out_noise=OutNoiseAtRead.TRAINING_ONLY, **batch)
    status, out, _ = run(capsys, "evaluate", str(path))
    assert status == 0 and "output noise at every read, seed 0" in out
    status, out, _ = run(capsys, "evaluate", str(path), "--seeds", "1", "--times", "1s", "--noise", "pcm")
    assert status == 0 and "output noise at every read" in out

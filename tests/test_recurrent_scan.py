"""export_onnx(scan_recurrent=True): each recurrent layer's steps as an ONNX Scan, so ONNX Runtime runs any length."""

import json

import numpy as np
import onnx
import pytest
import torch
import torch.utils._pytree as pytree
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

from xbar import (
    PCMLikeNoiseModel,
    accuracy_over_time,
    calibrate,
    convert,
    export_onnx,
    onnx_accuracy_over_time,
    prepare,
)
from xbar.compiler.devices.evaluation import read_out_noise_from
from xbar.compiler.inspection.read import load_inspection
from xbar.compiler.onnx.evaluation import FileSession, NoiseDraws, noise_sites, noisy_model
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.compiler.program_files.arrays import source_of_onnx
from xbar.passes.errors import UserError
from xbar.passes.numerics.crossbar import crossbar_modules

from conftest import eight_bit, run

BATCH, STEPS, FEATURES, HIDDEN = 2, 3, 3, 4
LENGTHS = (1, STEPS, 7)


class Recurrent(nn.Module):
    """A recurrent layer on [batch, steps, features] inputs (a time-major layer is fed the transposed input),
    returning all its outputs batch first."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        output, state = self.rnn(x if self.rnn.batch_first else x.transpose(0, 1))
        return (output if self.rnn.batch_first else output.transpose(0, 1)), state


MATRIX = {
    "lstm": (nn.LSTM, dict(batch_first=True)),
    "lstm-2": (nn.LSTM, dict(num_layers=2, batch_first=True)),
    "lstm-bidir-time_major": (nn.LSTM, dict(bidirectional=True)),
    "lstm-2-bidir-projected": (nn.LSTM, dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=2)),
    "gru-2-bidir-no_bias": (nn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True, bias=False)),
    "rnn-tanh": (nn.RNN, dict(batch_first=True)),
    "rnn-relu-bidir": (nn.RNN, dict(nonlinearity="relu", bidirectional=True, batch_first=True)),
}


def recurrent(name: str) -> Recurrent:
    torch.manual_seed(0)
    cls, options = MATRIX[name]
    return Recurrent(cls(FEATURES, HIDDEN, **options)).eval()


def sequence(steps: int, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, steps, FEATURES, generator=torch.Generator().manual_seed(seed))


def converted_at(model: nn.Module, steps: int, state: dict):
    """The xbar model prepared (unrolled) at ``steps``, with the calibrated state of the one at STEPS."""
    prepared = prepare(model, (sequence(steps),), eight_bit())
    prepared.load_state_dict(state)
    return convert(prepared)


def assert_same(got: list, expected: list, step: float) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):  # c_n is digital float arithmetic: ORT's sigmoid and tanh round otherwise
        b = b.numpy()
        assert a.shape == b.shape
        rounded = np.where(np.isclose(a, b, rtol=0, atol=1e-6), b, a)
        assert_within_one_adc_step(rounded, b, step)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_onnx_runtime_runs_the_scan_export_at_every_length_as_xbar_prepared_at_it(name, tmp_path):
    model = recurrent(name)
    prepared = prepare(model, (sequence(STEPS),), eight_bit())
    calibrate(prepared, [sequence(STEPS, batch=8, seed=s) for s in range(2)])
    converted = convert(prepared)
    path = export_onnx(converted, (sequence(STEPS),), tmp_path / "scan.onnx", scan_recurrent=True)
    result = Exported(converted, path)
    graph = result.model.graph
    directions = 2 if "bidir" in name else 1
    layers = 2 if "-2" in name else 1
    assert sum(n.op_type == "Scan" for n in graph.node) == layers * directions
    assert not [n for n in graph.node if n.domain == "ai.xbar"]  # every array is called in a Scan body
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim[:2]] == ["batch", "seq"]
    state = prepared.state_dict()
    for steps in LENGTHS:
        x = sequence(steps, batch=5, seed=steps)
        reference = converted if steps == STEPS else converted_at(model, steps, state)
        with torch.no_grad():
            expected = pytree.tree_leaves(reference(x))
        assert_same(result.session.run(None, {result.input_name: x.numpy()}), expected, result.last_adc_step())


def test_at_the_example_length_the_scan_file_computes_what_the_unrolled_file_computes(tmp_path):
    model = recurrent("lstm-2-bidir-projected")
    x = sequence(STEPS)
    prepared = prepare(model, (x,), eight_bit())
    calibrate(prepared, [sequence(STEPS, batch=8, seed=s) for s in range(2)])
    converted = convert(prepared)
    scanned = Exported(converted, export_onnx(converted, (x,), tmp_path / "scan.onnx", scan_recurrent=True))
    unrolled = Exported(converted, export_onnx(converted, (x,), tmp_path / "unrolled.onnx"))
    other = sequence(STEPS, batch=6, seed=9)
    for a, b in zip(scanned.session.run(None, {"x": other.numpy()}), unrolled.session.run(None, {"x": other.numpy()})):
        np.testing.assert_array_equal(a, b)
    layers = json.loads({p.key: p.value for p in scanned.model.metadata_props}["xbar.layers"])
    assert len(layers) == 12 and all(entry["calls"] == 1 for entry in layers)  # one node per array, in a Scan body
    assert onnx.load(scanned.path).graph.input[0].type.tensor_type.shape.dim[1].dim_param == "seq"
    assert len(load_inspection(scanned.path).layers) == 12  # xbar inspect reads the Scan bodies
    assert len(source_of_onnx(onnx.load(scanned.path)).arrays) == 12  # and so do the programming files


def test_a_model_without_recurrent_layers_is_refused_in_one_line(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4)).eval()
    x = torch.randn(2, 3)
    converted = convert(prepare(model, (x,), eight_bit()))
    with pytest.raises(UserError, match=r"scan_recurrent=True\) needs a model with a recurrent layer") as info:
        export_onnx(converted, (x,), tmp_path / "m.onnx", scan_recurrent=True)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("overrides", [
    {"mapping.max_output_size": 10, "mapping.max_input_size": 3},  # weight_hh_l0 [16, 4]: 2 x 2 arrays
    {"converter.type": "DualPairConductanceConverter", "converter.f_lst": [1.0, 3.0]},  # four devices a weight
], ids=["tiled", "dual-pair"])
def test_a_tiled_or_multi_device_recurrent_weight_scans_as_its_unrolled_steps_compute(overrides, tmp_path):
    model = recurrent("lstm")
    prepared = prepare(model, (sequence(STEPS),), eight_bit().with_overrides(overrides))
    calibrate(prepared, [sequence(STEPS, batch=8, seed=s) for s in range(2)])
    converted = convert(prepared)
    result = Exported(converted, export_onnx(converted, (sequence(STEPS),), tmp_path / "scan.onnx",
                                             scan_recurrent=True))
    assert sum(n.op_type == "Scan" for n in result.model.graph.node) == 1
    layers = json.loads({p.key: p.value for p in result.model.metadata_props}["xbar.layers"])
    assert len(layers) == len(crossbar_modules(converted)) and all(entry["calls"] == 1 for entry in layers)
    state = prepared.state_dict()
    for steps in (STEPS, 6):
        x = sequence(steps, batch=5, seed=steps)
        reference = converted if steps == STEPS else convert(_prepared_at(model, steps, state, overrides))
        with torch.no_grad():
            expected = pytree.tree_leaves(reference(x))
        assert_same(result.session.run(None, {result.input_name: x.numpy()}), expected, result.last_adc_step())


def _prepared_at(model: nn.Module, steps: int, state: dict, overrides: dict):
    prepared = prepare(model, (sequence(steps),), eight_bit().with_overrides(overrides))
    prepared.load_state_dict(state)
    return prepared


GRU_PY = """
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.gru(x)[0])


def make_tagger():
    torch.manual_seed(0)
    return Tagger()
"""


def test_xbar_compile_scan_recurrent_writes_a_file_onnx_runtime_runs_at_any_length(workspace, capsys):
    (workspace / "gru.py").write_text(GRU_PY)
    status, out, err = run(capsys, "compile", "gru.py:make_tagger", "--input-shape", "1,5,3", "--scan-recurrent",
                           "-o", "gru.onnx")
    assert status == 0, err
    model = onnx.load(workspace / "gru.onnx")
    assert [n.op_type for n in model.graph.node].count("Scan") == 1
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "seq"]
    for steps in (2, 9):
        assert onnx_runner(workspace / "gru.onnx")(torch.randn(3, steps, 3)).shape == (3, steps, 2)
    status, _, err = run(capsys, "compile", "net.py:make_net", "--weights", "net.pt", "--calib", "inputs.npz",
                         "--scan-recurrent", "-o", "plain.onnx")
    errors = [line for line in err.splitlines() if line.startswith("xbar: error:")]
    assert status == 2 and len(errors) == 1 and "--scan-recurrent needs a model with a recurrent layer" in errors[0]
    assert "without --scan-recurrent" in errors[0] and "calibrat" not in err  # refused before calibrating
    assert not (workspace / "plain.onnx").exists()


class Classifier(nn.Module):
    """A GRU read at its last step by a linear head: logits per sequence."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru, self.head = nn.GRU(FEATURES, HIDDEN, batch_first=True), nn.Linear(HIDDEN, 3)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def test_the_scan_file_programmed_and_drifted_in_onnx_runtime_scores_what_the_converted_model_scores(tmp_path):
    x = sequence(STEPS, batch=64, seed=3)
    prepared = prepare(Classifier().eval(), (x[:2],), eight_bit())
    calibrate(prepared, [x])
    converted = convert(prepared)
    with torch.no_grad():
        y = converted(x).argmax(1)  # labels the noise-free model gets right, so noise and drift show
    path = export_onnx(converted, (x[:2],), tmp_path / "scan.onnx", scan_recurrent=True)
    times = {"1s": 1.0, "1y": 365 * 86400.0}
    expected = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 3, x, y)
    got = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), times, 3, (x, y))
    assert expected.ideal == 1.0 and got.ideal >= 1.0 - 1 / len(y)
    for ours, theirs in zip(got.points, expected.points):
        assert np.abs(np.subtract(ours.values, theirs.values)).max() <= 1 / len(y)
    assert got.points[1].mean < 1.0  # a year of drift shows


class Tagger(nn.Module):
    """A two-layer bidirectional projected LSTM read by a linear head at every step: logits per step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(FEATURES, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, proj_size=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def noisy_logits(path, x: torch.Tensor, seed) -> tuple[torch.Tensor, list]:
    """The file's outputs in ONNX Runtime with the output noise of generator ``seed`` (None: none), and its sites."""
    file = onnx.load(path)
    sites = noise_sites(file)
    session = FileSession(noisy_model(file, sites, str(path)), str(path), sites=sites)
    draws = None if seed is None else NoiseDraws(sites, torch.Generator().manual_seed(seed))
    return session.run(session.fitted(x), {}, draws), sites


def test_output_noise_in_scan_bodies_is_drawn_step_by_step_as_the_converted_model_draws_it(tmp_path):
    x = sequence(STEPS, batch=5, seed=4)
    prepared = prepare(Tagger().eval(), (x[:2],), eight_bit().with_overrides({"forward.out_noise": 0.5}))
    calibrate(prepared, [sequence(STEPS, batch=8, seed=s) for s in range(2)])
    converted = convert(prepared)
    path = export_onnx(converted, (x[:2],), tmp_path / "scan.onnx", scan_recurrent=True)
    scans = [node.name for node in onnx.load(path).graph.node if node.op_type == "Scan"]
    clean, sites = noisy_logits(path, x, None)
    assert [site.scan for site in sites] == [scan for scan in scans for _ in range(3)] + [None]  # ih, hh, hr; head
    step = Exported(converted, path).last_adc_step()
    logits = {}
    for seed in (3, 4):
        read_out_noise_from(converted, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = converted(x)
        logits[seed] = noisy_logits(path, x, seed)[0]
        # a draw out of order would move the logits by its std, 6 ADC codes; ORT's sigmoid and tanh round
        # otherwise in a Scan body than torch's, which moves an array's code by one and the logits by a few
        assert (logits[seed] - expected).abs().max() <= 3 * step * (1 + 1e-4)
        assert (logits[seed] - clean).abs().max() > 10 * step
    read_out_noise_from(converted, None)
    assert (logits[3] - logits[4]).abs().max() > 10 * step

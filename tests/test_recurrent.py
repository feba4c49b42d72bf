"""nn.LSTM, nn.GRU and nn.RNN as crossbar layers: unrolled per step, each weight its own array and range."""

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn

import xbar
from xbar import HardwareConfig, calibrate, convert, export_onnx, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.compiler.pipeline.stages import input_ranges
from xbar.passes.errors import ExportError, SequenceLengthError
from xbar.passes.plan import Role, tagged

from conftest import eight_bit

IDEAL = {"pre_post.input_range.enable": False}
BATCH, STEPS, FEATURES, HIDDEN = 2, 3, 3, 4


class Recurrent(nn.Module):
    """A recurrent layer on [batch, steps, features] inputs, returning all its outputs (time-major
    layers are fed the transposed input, so the model's dim 0 is always the batch)."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x if self.rnn.batch_first else x.transpose(0, 1))


MATRIX = {
    "lstm": (nn.LSTM, {}),
    "lstm-2-bidir-batch_first-projected-no_bias": (
        nn.LSTM, dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=2, bias=False)),
    "lstm-bidir-projected": (nn.LSTM, dict(bidirectional=True, proj_size=3)),
    "gru-2-bidir": (nn.GRU, dict(num_layers=2, bidirectional=True)),
    "gru-batch_first-no_bias": (nn.GRU, dict(batch_first=True, bias=False)),
    "rnn-tanh-bidir-batch_first": (nn.RNN, dict(bidirectional=True, batch_first=True)),
    "rnn-relu-2-no_bias": (nn.RNN, dict(nonlinearity="relu", num_layers=2, bias=False)),
}


def recurrent(name: str, seed: int = 0) -> Recurrent:
    torch.manual_seed(seed)
    cls, options = MATRIX[name]
    return Recurrent(cls(FEATURES, HIDDEN, **options)).eval()


def sequence(batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, STEPS, FEATURES, generator=torch.Generator().manual_seed(seed))


def weight_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.dim() == 2}


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_with_an_ideal_periphery_every_output_is_the_float_modules(name, method):
    model, x = recurrent(name), sequence()
    prepared = prepare(model, (x,), HardwareConfig().with_overrides(IDEAL), capture_method=method)
    converted = convert(prepared)
    other = sequence(batch=5, seed=2)
    with torch.no_grad():
        expected = pytree.tree_leaves(model(other))
        for got in (prepared(other), converted(other)):
            got = pytree.tree_leaves(got)
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    plans = record_of(prepared, "test", Stage.PREPARED).plans
    assert {plan.layer.name for plan in plans} == weight_names(model)
    assert len(tagged(prepared.graph, Role.MVM)) == len(plans)


def test_each_weight_is_one_linear_layer_with_a_call_site_per_step():
    model, x = recurrent("lstm-2-bidir-batch_first-projected-no_bias"), sequence()
    prepared = prepare(model, (x,), HardwareConfig().with_overrides(IDEAL))
    calls = {}
    for plan in record_of(prepared, "test", Stage.PREPARED).plans:
        assert (plan.layer.kind.name, plan.layer.weight, plan.layer.module_type) == (
            "linear", plan.layer.name, "torch.nn.modules.rnn.LSTM")
        calls[plan.layer.name] = calls.get(plan.layer.name, 0) + 1
    assert calls == {name: STEPS for name in weight_names(model)}
    assert record_of(prepared, "test", Stage.PREPARED).digital == ()


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_calibration_gives_each_weight_its_own_range_by_aihwkits_rule(method):
    """Each weight's range is the mean of init_std_alpha * std over its first calls, one call per step;
    the recurrent matmul's step 0 sees the zero state (std 0), which does not count."""
    model = recurrent("gru-2-bidir")
    config = HardwareConfig().with_overrides({"pre_post.input_range.enable": True,
                                              "pre_post.input_range.init_from_data": 4})
    prepared = prepare(model, (sequence(),), config, capture_method=method)
    batches = [sequence(batch=4, seed=s) for s in range(3)]
    calibrate(prepared, batches)
    ranges = {name: module.value.item() for name, module in input_ranges(prepared).items()}
    assert set(ranges) == {f"rnn_{w.split('.')[1]}_input_range" for w in weight_names(model)}
    assert len(set(ranges.values())) == len(ranges)
    steps = [b.transpose(0, 1)[t] for b in batches for t in range(STEPS)]  # as the forward direction reads them
    expected = 3.0 * torch.stack([s.std() for s in steps[:4]]).mean()
    assert ranges["rnn_weight_ih_l0_input_range"] == pytest.approx(float(expected), rel=1e-6)
    calibration = record_of(prepared, "test", Stage.PREPARED).calibration
    assert calibration["rnn_weight_ih_l0_input_range"] == "InitFromData(batches=4)"


@pytest.mark.parametrize("name, method", [("lstm-2-bidir-batch_first-projected-no_bias", "export"),
                                          ("gru-2-bidir", "symbolic_trace")])
def test_onnx_runtime_runs_the_export_at_another_batch_size(name, method, tmp_path):
    model, x = recurrent(name), sequence()
    prepared = prepare(model, (x,), eight_bit(), capture_method=method)
    calibrate(prepared, [sequence(batch=8, seed=s) for s in range(2)])
    converted = convert(prepared)
    result = Exported(converted, export_onnx(converted, (x,), tmp_path / "recurrent.onnx"))
    nodes = [n for n in result.model.graph.node if n.domain == "ai.xbar"]
    assert len(nodes) == STEPS * len(weight_names(model))
    assert {n.input[1] for n in nodes} == {f"rnn_{w.split('.')[1]}_crossbar.g_plus" for w in weight_names(model)}
    other = sequence(batch=5, seed=3)
    got = result.session.run(None, {result.input_name: other.numpy()})
    with torch.no_grad():
        expected = pytree.tree_leaves(converted(other))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):  # c_n is digital float arithmetic: ORT's sigmoid and tanh round otherwise
        rounded = np.where(np.isclose(a, b.numpy(), rtol=0, atol=1e-6), b.numpy(), a)
        assert_within_one_adc_step(rounded, b.numpy(), result.last_adc_step())


def test_a_given_initial_state_is_used():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True, num_layers=2)

        def forward(self, x, h0, c0):  # states batch-first too: the capture's dynamic dim 0 is the batch
            return self.lstm(x, (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1).contiguous()))[0]

    torch.manual_seed(0)
    model, x = WithState().eval(), sequence()
    h0, c0 = torch.randn(BATCH, 2, HIDDEN), torch.randn(BATCH, 2, HIDDEN)
    for method in ("export", "symbolic_trace"):
        prepared = prepare(model, (x, h0, c0), HardwareConfig().with_overrides(IDEAL), capture_method=method)
        with torch.no_grad():
            torch.testing.assert_close(prepared(x, h0, c0), model(x, h0, c0), atol=1e-5, rtol=1e-5)


def test_an_excluded_recurrent_layer_is_listed_digital_by_name():
    model, x = recurrent("gru-2-bidir"), sequence()
    prepared = prepare(model, (x,), HardwareConfig().with_overrides(IDEAL), exclude=["rnn.weight_hh_*"])
    record = record_of(prepared, "test", Stage.PREPARED)
    assert {plan.layer.name for plan in record.plans} == {w for w in weight_names(model) if "_ih_" in w}
    (digital,) = record.digital
    assert digital.name == "rnn" and set(digital.weights) == {w for w in weight_names(model) if "_hh_" in w}
    assert digital.reason == "excluded by pattern 'rnn.weight_hh_*'"


@pytest.mark.parametrize("name", ["lstm-2-bidir-batch_first-projected-no_bias", "gru-2-bidir"])
def test_an_unbatched_input_is_unrolled_on_vectors(name):
    model = recurrent(name).rnn
    x, states = torch.randn(STEPS, FEATURES), torch.randn(4, HIDDEN)
    initial = (states[:, :2], states) if isinstance(model, nn.LSTM) else states
    for wrapper, given in ((nn.Sequential(model), ()), (WithInitial(model), (initial,))):
        prepared = prepare(wrapper, (x, *given), HardwareConfig().with_overrides(IDEAL),
                           capture_method="symbolic_trace")
        assert record_of(prepared, "test", Stage.PREPARED).digital == ()
        with torch.no_grad():
            for a, b in zip(pytree.tree_leaves(prepared(x, *given)), pytree.tree_leaves(model(x, *given))):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class WithInitial(nn.Module):
    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, state):
        return self.rnn(x, state)


def test_prepared_graph_names_read_like_the_unrolled_cell():
    prepared = prepare(recurrent("rnn-tanh-bidir-batch_first"), (sequence(),), xbar.preset_config("8bit"),
                       capture_method="symbolic_trace")
    names = {n.name for n in prepared.graph.nodes}
    assert {"rnn_weight_ih_l0_mvm", "rnn_weight_ih_l0_mvm_1", "rnn_weight_hh_l0_reverse_input_range",
            "rnn_l0_t0_cell", "rnn_l0_reverse_t2_cell", "rnn_output", "rnn_h_n"} <= names


def test_a_sequence_of_another_length_is_refused_in_one_line():
    """(A torch.export capture guards the example's length before the unrolled graph runs.)"""
    prepared = prepare(recurrent("lstm"), (sequence(),), HardwareConfig().with_overrides(IDEAL),
                       capture_method="symbolic_trace")
    for steps in (STEPS - 1, STEPS + 1):
        with pytest.raises(SequenceLengthError, match=f"rnn was unrolled for sequences of {STEPS} steps, got {steps}"):
            prepared(torch.randn(BATCH, steps, FEATURES))


def test_an_export_that_would_make_the_sequence_dim_dynamic_says_so_in_one_line(tmp_path):
    """A time-major model input has its steps in dim 0, which the export makes the dynamic batch."""
    class TimeMajor(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(FEATURES, HIDDEN)

        def forward(self, x):
            return self.rnn(x)[0]

    x = torch.randn(STEPS, BATCH, FEATURES)
    converted = convert(prepare(TimeMajor().eval(), (x,), HardwareConfig().with_overrides(IDEAL),
                                capture_method="symbolic_trace"))
    with pytest.raises(ExportError, match=f"rnn is unrolled for sequences of {STEPS} steps: dim 0 of its input "
                                          "cannot be dynamic; give the model batch-first inputs") as info:
        export_onnx(converted, (x,), tmp_path / "time_major.onnx")
    assert "\n" not in str(info.value) and not (tmp_path / "time_major.onnx").exists()


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_each_weight_is_tiled_like_any_linear_layer(method):
    model, x = recurrent("lstm-bidir-projected"), sequence()
    config = HardwareConfig().with_overrides({**IDEAL, "mapping.max_input_size": 2, "mapping.max_output_size": 8})
    converted = convert(prepare(model, (x,), config, capture_method=method))
    tiles = {name for name, _ in converted.named_children() if name.endswith("_crossbar")}
    assert "rnn_weight_ih_l0_tile1_1_crossbar" in tiles and "rnn_weight_hh_l0_reverse_tile0_1_crossbar" in tiles
    with torch.no_grad():
        for a, b in zip(pytree.tree_leaves(converted(x)), pytree.tree_leaves(model(x))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_recurrent_layer_called_twice_is_still_one_array_per_weight():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(FEATURES, HIDDEN, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0] + self.rnn(x.flip(1))[0]

    torch.manual_seed(0)
    model, x = Twice().eval(), sequence()
    prepared = prepare(model, (x,), HardwareConfig().with_overrides({"pre_post.input_range.enable": True}))
    plans = record_of(prepared, "test", Stage.PREPARED).plans
    calls = [plan.layer.name for plan in plans]
    assert (calls.count("rnn.weight_ih_l0"), calls.count("rnn.weight_hh_l0"), len(calls)) == (2 * STEPS,) * 2 + (
        4 * STEPS,)
    assert set(input_ranges(prepared)) == {"rnn_weight_ih_l0_input_range", "rnn_weight_hh_l0_input_range"}
    crossbars = {name for name, _ in convert(prepared).named_children() if name.endswith("_crossbar")}
    assert crossbars == {"rnn_weight_ih_l0_crossbar", "rnn_weight_hh_l0_crossbar"}

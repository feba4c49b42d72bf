"""Models of several inputs, given in order or by name, through prepare, calibrate, fine_tune and export;
inputs that do not fit forward are one line each."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.export import Dim

from xbar import FineTuning, calibrate, convert, export_onnx, fine_tune, prepare
from xbar.passes.capture import copy_graph_module
from xbar.passes.errors import DynamicShapeError, InputsError, UserError

from conftest import TinyEncoder, eight_bit


class TwoInputs(nn.Module):
    """An image-like input and a side input, gated together; the gate's scale has a default."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.side = nn.Linear(3, 4)

    def forward(self, x, z, scale: float = 1.0):
        return self.fc(x) * torch.sigmoid(scale * self.side(z))


def pair(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randn(n, 3, generator=g)


def prepared_pair():
    torch.manual_seed(0)
    return prepare(TwoInputs().eval(), pair(2, 0), eight_bit())


def test_batches_as_tuples_or_dicts_by_name_calibrate_alike():
    by_position, by_name = prepared_pair(), prepared_pair()
    batches = [pair(8, s) for s in range(1, 4)]
    assert calibrate(by_position, batches) == 3
    assert calibrate(by_name, [{"z": z, "x": x} for x, z in batches]) == 3  # keys in any order
    assert torch.equal(by_position(*pair(5, 9)), by_name(*pair(5, 9)))
    assert by_position.fc_input_range.value.item() == by_name.fc_input_range.value.item()


def test_fine_tune_takes_a_tuple_or_a_dict_of_inputs_with_separate_targets():
    x, z = pair(64, 1)
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(2))
    tuned = {}
    for name, inputs in (("tuple", (x, z)), ("dict", {"x": x, "z": z})):
        prepared = prepared_pair()
        calibrate(prepared, [pair(16, 3)])
        losses = []
        tuned[name] = fine_tune(prepared, inputs, y, FineTuning(epochs=2, batch_size=16), on_step=losses.append)
        assert len(losses) == 2 * 4 and losses[-1] < losses[0]
    for a, b in zip(tuned["tuple"].parameters(), tuned["dict"].parameters()):
        assert torch.equal(a, b)


def test_prepare_takes_a_dict_by_name_and_export_runs_both_inputs_in_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    x, z = pair(2, 0)
    prepared = prepare(TwoInputs().eval(), {"x": x, "z": z})
    calibrate(prepared, [pair(8, 1)])
    converted = convert(prepared)
    path = export_onnx(converted, {"z": z, "x": x}, tmp_path / "two.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "z"]
    x, z = pair(5, 2)
    got = session.run(None, {"x": x.numpy(), "z": z.numpy()})[0]
    with torch.no_grad():
        expected = converted(x, z).numpy()
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_a_float_sequence_into_linear_layers_gets_a_dynamic_seq_by_default(tmp_path):
    torch.manual_seed(0)
    prepared = prepare(TinyEncoder().eval(), (torch.randn(2, 8, 8),))
    converted = convert(prepared)
    path = export_onnx(converted, (torch.randn(2, 8, 8),), tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", "seq", 8]
    x = torch.randn(3, 11, 8)
    with torch.no_grad():
        expected = converted(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("call, message", [
    (lambda: prepare(TwoInputs().eval(), pair(2, 0)[:1]),
     r"prepare\(\) example_inputs: forward\(x, z, scale\) takes 2 to 3 inputs, got 1"),
    (lambda: prepare(TwoInputs().eval(), {"x": pair(2, 0)[0], "w": pair(2, 0)[1]}),
     r"'w' names no parameter of forward\(x, z, scale\)"),
    (lambda: prepare(TwoInputs().eval(), {"x": pair(2, 0)[0]}), r"no input 'z'"),
    (lambda: calibrate(prepared_pair(), [pair(4, 1)[0]]),
     r"calibration batch 0: forward\(x, z\) takes 2 inputs, got 1"),
    (lambda: calibrate(prepared_pair(), [{"x": pair(4, 1)[0], "y": pair(4, 1)[1]}]), r"'y' names no parameter"),
    (lambda: fine_tune(prepared_pair(), pair(8, 1), torch.zeros(7, dtype=torch.long)), "8 inputs but 7 targets"),
    (lambda: fine_tune(prepared_pair(), (pair(8, 1)[0], pair(6, 1)[1]), torch.zeros(8, dtype=torch.long)),
     "the input tensors hold 6 and 8 samples"),
    (lambda: prepare(TwoInputs().eval(), pair(2, 0), dynamic_shapes={"q": {0: Dim("batch")}}),
     r"dynamic_shapes names 'q'"),
    (lambda: prepare(TwoInputs().eval(), pair(2, 0), dynamic_shapes=({0: Dim("batch"), 2: Dim("d")}, None)),
     "names dimension 2 of input"),
    (lambda: prepare(TwoInputs().eval(), pair(2, 0), dynamic_shapes=({0: Dim("batch"), 1: Dim("f")}, None)),
     "cannot take every size of the dynamic dimension.* f"),
])
def test_inputs_that_do_not_fit_forward_are_one_line(call, message):
    with pytest.raises(UserError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, (InputsError, DynamicShapeError))


def test_a_dict_a_one_input_model_reads_stays_its_one_input():
    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, batch):
            return self.fc(batch["x"]) + batch["z"].sum(dim=1, keepdim=True)

    x, z = pair(4, 1)
    prepared = prepare(Reads().eval(), ({"x": x, "z": z},))
    assert calibrate(copy_graph_module(prepared), [{"x": x, "z": z}]) == 1
    tuned = fine_tune(prepared, {"x": x, "z": z}, torch.zeros(4, dtype=torch.long), FineTuning(epochs=1))
    assert tuned({"x": x, "z": z}).shape == (4, 2)

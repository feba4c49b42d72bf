"""The command line's model inputs: token ids of a dynamic length, several inputs from named .npz arrays,
one --input-shape per input; and the mistakes, one line, exit 2, nothing written."""

import json
import re
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import run

MODELS_PY = textwrap.dedent("""
    import torch
    from torch import nn


    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 8)
            self.fc = nn.Linear(8, 5)

        def forward(self, ids):
            return self.fc(torch.relu(self.embed(ids)))


    class FixedLength(Tokens):  # a position table added whole: only length 4 fits
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(4, 8))

        def forward(self, ids):
            return self.fc(self.embed(ids) + self.table)


    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.side = nn.Linear(2, 3)

        def forward(self, x, z):
            return self.fc(x) + self.side(z)


    def tokens():
        torch.manual_seed(0)
        return Tokens()


    def fixed():
        torch.manual_seed(0)
        return FixedLength()


    def pair():
        torch.manual_seed(0)
        return Pair()
""")


@pytest.fixture
def models(workspace):
    (workspace / "models_py.py").write_text(MODELS_PY)
    rng = np.random.default_rng(0)
    np.savez(workspace / "pair.npz", z=rng.normal(size=(32, 2)).astype(np.float32),
             x=rng.normal(size=(32, 6)).astype(np.float32), y=rng.integers(0, 3, 32))
    np.savez(workspace / "ids.npz", ids=rng.integers(0, 5, (24, 7)))
    np.savez(workspace / "stray.npz", x=np.zeros((4, 6), np.float32), w=np.zeros((4, 2), np.float32))
    return workspace


def dims(path):
    return [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(path).graph.input]


def test_token_ids_compile_with_a_dynamic_sequence_and_run_at_any_length(models, capsys):
    status, _, err = run(capsys, "compile", "models_py.py:tokens", "--input-shape", "1,6", "--input-dtype", "int64",
                         "-o", "tokens.onnx")
    assert status == 0, err
    assert dims("tokens.onnx") == [["batch", "seq"]]
    session = ort.InferenceSession("tokens.onnx", providers=["CPUExecutionProvider"])
    for length in (3, 11):
        assert session.run(None, {"ids": np.ones((2, length), np.int64)})[0].shape == (2, length, 5)
    status, _, err = run(capsys, "compile", "models_py.py:tokens", "--calib", "ids.npz", "--dynamic", "batch=0",
                         "-o", "fixed.onnx")
    assert status == 0, err
    assert dims("fixed.onnx") == [["batch", 7]]  # integer samples stay token ids; --dynamic leaves seq static


def test_named_arrays_feed_several_inputs_by_name_through_calibration_and_fine_tuning(models, capsys):
    status, out, err = run(capsys, "compile", "models_py.py:pair", "--calib", "pair.npz", "--finetune", "1",
                           "-o", "pair.onnx")
    assert status == 0, err
    assert "input ranges calibrated on 1 batch" in out and "fine-tuned on 32 labelled samples" in out
    assert dims("pair.onnx") == [["batch", 6], ["batch", 2]]
    status, _, err = run(capsys, "compile", "models_py.py:pair", "--input-shape", "1,6", "--input-shape", "2,2",
                         "-o", "shapes.onnx")
    assert status == 0, err
    assert dims("shapes.onnx") == [["batch", 6], ["batch", 2]]


@pytest.mark.parametrize("argv, message", [
    (["models_py.py:fixed", "--input-shape", "1,4", "--input-dtype", "int64", "--dynamic", "batch=0,seq=1"],
     "cannot take every size of the dynamic dimension(s) seq: torch.export suggests seq = 4"),
    (["models_py.py:pair", "--calib", "stray.npz"], "the array 'w' names no parameter of forward(x, z)"),
    (["models_py.py:pair", "--input-shape", "1,6"], "forward(x, z) takes 2 inputs, got 1"),
    (["models_py.py:pair", "--input-shape", "1,6", "--input-shape", "1,2", "--input-dtype", "float32",
      "--input-dtype", "int64", "--input-dtype", "int64"], "3 --input-dtype for 2 --input-shape"),
    (["models_py.py:pair", "--calib", "pair.npz", "--dynamic", "batch=0,seq=2"], "no input has a dimension 2"),
    (["models_py.py:tokens", "--calib", "ids.npz", "--input-dtype", "int64"], "drop --input-dtype"),
    (["models_py.py:pair", "--calib", "pair.npz", "--dynamic", "seq"], "give NAME=DIM pairs"),
    (["models_py.py:pair", "--calib", "pair.npz", "--dynamic", "a=0,b=0"], "the dimension 0 is given twice"),
])
def test_input_mistakes_are_one_line_exit_2_and_write_nothing(models, capsys, argv, message):
    status, out, err = run(capsys, "compile", *argv, "-o", "bad.onnx")
    assert status == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], err
    assert not (models / "bad.onnx").exists()


def test_a_program_of_two_inputs_compiles_from_named_arrays(models, capsys):
    namespace = {}
    exec(compile(MODELS_PY, "models_py.py", "exec"), namespace)
    pair = namespace["pair"]().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(pair, (torch.randn(2, 6), torch.randn(2, 2)), dynamic_shapes=({0: batch},) * 2)
    torch.export.save(program, models / "pair.pt2")
    status, out, err = run(capsys, "compile", "pair.pt2", "--calib", "pair.npz", "-o", "program.onnx")
    assert status == 0, err
    assert dims("program.onnx") == [["batch", 6], ["batch", 2]]


def test_a_model_of_two_inputs_is_scored_by_compile_and_evaluate(models, capsys):
    namespace = {}
    exec(compile(MODELS_PY, "models_py.py", "exec"), namespace)
    pair = namespace["pair"]().eval()
    data = np.load(models / "pair.npz")
    x, z, y = (torch.from_numpy(data[k]) for k in ("x", "z", "y"))
    expected = 100 * float((pair(x, z).argmax(1) == y).float().mean())
    status, out, err = run(capsys, "compile", "models_py.py:pair", "--calib", "pair.npz", "--preset", "ideal",
                           "-o", "pair.onnx")
    assert status == 0, err
    figures = [float(v) for v in re.findall(r"(\d+\.\d+)%", out.split("accuracy on")[1])[:3]]
    assert figures == [round(expected, 2)] * 3  # the ideal preset is lossless, ONNX Runtime included
    status, out, err = run(capsys, "evaluate", "models_py.py:pair", "--calib", "pair.npz", "--seeds", "2",
                           "--times", "1s,1d", "--json")
    assert status == 0, err
    evaluation = json.loads(out)
    assert [len(point["accuracies"]) for point in evaluation["times"]] == [2, 2]

"""The ``xbar`` command line, run in-process through ``main`` and as the installed script.

Every run is real: torch.export captures, ONNX files are written and run in ONNX Runtime.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import types
import typing
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from xbar import ConfigError, accuracy
from xbar.compiler.cli import arguments as cli_arguments
from xbar.compiler.cli import main as cli
from xbar.compiler.cli.data import BUILTIN
from xbar.compiler.cli.main import describe_error, main
from xbar.compiler.metrics import METRICS
from xbar.models import load_digits_split, load_pretrained
from xbar.models.zoo import ZOO
from xbar.passes.capture import CaptureMethod
from xbar.passes.errors import CaptureError
from xbar.passes.numerics.calibration import CalibrationMethod

from conftest import NET, WEIGHTS, load_net_class, run

IDEAL_NO_RANGE = ["--preset", "ideal"]  # lossless: no DAC, ADC or input-range clip


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def accuracies(out: str) -> list[float]:
    """original, compiled (PyTorch), compiled (ONNX Runtime) from the accuracy table, in percent."""
    return [float(v) for v in re.findall(r"(\d+\.\d+)%", out.split("test accuracy")[1])[:3]]


def inspect_json(capsys, path) -> dict:
    status, out, err = run(capsys, "inspect", str(path), "--json")
    assert status == 0, err
    return json.loads(out)


# -- compiling -----------------------------------------------------------------------------------

def test_factory_with_weights_compiles_to_onnx_that_reproduces_the_model(workspace, capsys):
    status, out, err = run(capsys, "compile", "net.py:make_net", "--weights", "net.pt", "--calib", "inputs.npz",
                           *IDEAL_NO_RANGE, "-o", "net.onnx")
    assert status == 0, err
    net = load_net_class(workspace / "net.py")()
    net.load_state_dict(torch.load(workspace / "net.pt"))
    x = np.random.default_rng(5).normal(size=(7, 6)).astype(np.float32)  # a batch size never seen
    expected = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(onnx_outputs(workspace / "net.onnx", x), expected, rtol=1e-5, atol=1e-5)
    assert "fc1" in out and "fc2" in out and "wrote net.onnx" in out


def test_the_readme_command_compiles_lenet_at_8_bit_with_accuracies(workspace, capsys):
    status, out, err = run(capsys, "compile", "--finetune", "5", "--save-graph", "lenet.graph.pt")
    assert status == 0, err
    assert "calibrating input ranges on digits" in err and "fine-tuning on digits" in err
    assert "input ranges calibrated on 22 batches" in out  # all of digits' training split
    assert "fine-tuned on 1347 labelled samples from digits: Adam" in out and "over 5 epochs, batch 64" in out
    original, compiled, onnx_runtime = accuracies(out)
    data = load_digits_split()
    assert original == round(100 * accuracy(load_pretrained("lenet"), data.test_x, data.test_y), 2)
    assert compiled >= original - 1.0  # calibration alone loses about 2.5 points; fine-tuning recovers most
    assert abs(compiled - onnx_runtime) <= 0.23  # at most one test image apart
    from_onnx, from_graph = inspect_json(capsys, "lenet.onnx"), inspect_json(capsys, "lenet.graph.pt")
    assert [layer["layer"] for layer in from_onnx["layers"]] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    for a, b in zip(from_onnx["layers"], from_graph["layers"]):
        assert (a["dac_steps"], a["adc_steps"], a["out_bound"]) == (254, 254, 10)
        assert a["input_range"] == b["input_range"] and a["conductance_mean"] == b["conductance_mean"]
    assert "conv1_crossbar" in torch.load("lenet.graph.pt", weights_only=True)["graph"]


def test_finetune_reads_labels_from_a_data_file(workspace, capsys):
    x = np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)
    np.savez(workspace / "labelled.npz", x=x, y=np.arange(24) % 3)
    status, out, err = run(capsys, "compile", "net.py:make_net", *WEIGHTS, "--calib", "labelled.npz",
                           "--finetune", "1", "--batch-size", "8")
    assert status == 0, err
    assert "fine-tuned on 24 labelled samples from labelled.npz" in out and "1 epoch, batch 8" in out
    assert (workspace / "net.onnx").exists()


def table_row(out: str, title: str) -> list[str]:
    """The figures of the compile report's one-row table under ``title``: original, compiled (PyTorch),
    compiled (ONNX Runtime)."""
    row = next(line for line in out.split(title)[1].splitlines() if line.startswith("│"))
    return [cell.strip() for cell in row.strip("│").split("│")]


def trained_net(workspace):
    net = load_net_class(workspace / "net.py")()
    net.load_state_dict(torch.load(workspace / "net.pt"))
    return net.eval()


def test_compile_scores_labelled_calibration_samples_and_says_they_are_the_calibration_set(workspace, capsys):
    x = np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)
    np.savez(workspace / "labelled.npz", x=x, y=np.arange(24) % 3)
    status, out, err = run(capsys, "compile", *NET, "--calib", "labelled.npz")
    assert status == 0, err
    assert ("accuracy on the 24 labelled calibration samples of labelled.npz (the calibration set: an optimistic "
            "figure)") in " ".join(out.split())
    original = accuracy(trained_net(workspace), torch.from_numpy(x), torch.arange(24) % 3)
    assert table_row(out, "optimistic")[0] == f"{original:.2%}"


def test_compile_scores_test_data_with_the_chosen_metric(workspace, capsys):
    x = np.random.default_rng(1).normal(size=(12, 6)).astype(np.float32)
    y = np.random.default_rng(2).normal(size=(12, 3)).astype(np.float32)
    np.savez(workspace / "targets.npz", x=x, y=y)
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--test", "targets.npz",
                           "--metric", "mse")
    assert status == 0, err
    assert "test mse on targets.npz (12 samples)" in out
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(trained_net(workspace)(torch.from_numpy(x)).double(),
                                                torch.from_numpy(y).double()).item()
    original, compiled, onnx_runtime = table_row(out, "test mse")
    assert original == f"{expected:#.4g}" and compiled == onnx_runtime


@pytest.mark.parametrize("options, layers", [
    (["--calib", "inputs.pt", "--exclude", "fc2"], ["fc1", "fc3"]),
    (["--input-shape", "1,6", "--include", "fc[12]", "--keep-first-last-digital"], ["fc2"]),
    (["--calib", "inputs.pt", "--include", "nn.Linear", "--exclude", "fc1"], ["fc2", "fc3"]),
    (["--calib", "inputs.pt", "--include", "torch.nn.Linear", "--include", "nn.Conv2d"], ["fc1", "fc2", "fc3"]),
])
def test_layer_selection_options_reach_the_onnx_file(workspace, capsys, options, layers):
    status, _, err = run(capsys, "compile", "net.py:make_net", *WEIGHTS, *options, "-o", "sel.onnx")
    assert status == 0, err
    assert [layer["layer"] for layer in inspect_json(capsys, "sel.onnx")["layers"]] == layers



def test_compile_and_inspect_list_the_layers_that_stay_digital(workspace, capsys):
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.pt", "--exclude", "fc2", "-o", "sel.onnx")
    assert status == 0, err
    for text in (out, run(capsys, "inspect", "sel.onnx")[1]):
        assert "2 crossbar layers" in text and "1 layer stays digital" in text
        assert re.search(r"fc2 .*aten\.linear.* excluded by pattern 'fc2'", text)
    assert inspect_json(capsys, "sel.onnx")["digital_layers"][0]["reason"] == "excluded by pattern 'fc2'"


def test_a_selection_of_no_layer_at_all_is_a_usage_error(workspace, capsys):
    status, _, err = run(capsys, "compile", "net.py:make_net", *WEIGHTS, "--calib", "inputs.pt",
                         "--include", "Linear", "--exclude", "torch.nn.Linear", "-o", "sel.onnx")
    assert status == 2 and "leave all 3 crossbar layers (fc1, fc2, fc3) digital" in err
    assert not (workspace / "sel.onnx").exists()


def test_calibration_method_and_layer_rules_from_the_config_file(workspace, capsys):
    (workspace / "rules.json").write_text(json.dumps({"layers": [
        {"name": "fc2", "digital": True},
        {"pattern": "fc*", "overrides": {"forward.out_bound": 4.0}}]}))
    status, _, err = run(capsys, "compile", "net.py:make_net", "--calib", "inputs.npz", "--config", "rules.json",
                         "--calib-method", "Max", "-o", "rules.onnx")
    assert status == 0, err
    layers = inspect_json(capsys, "rules.onnx")["layers"]
    assert [(layer["layer"], layer["out_bound"], layer["rule"]) for layer in layers] == [("fc1", 4.0, "pattern=fc*"),
                                                                         ("fc3", 4.0, "pattern=fc*")]
    inputs = np.load(workspace / "inputs.npz")["x"]
    assert layers[0]["input_range"] == pytest.approx(float(np.abs(inputs).max()), rel=1e-6)


def test_config_file_then_set_overrides(workspace, capsys):
    (workspace / "hw.toml").write_text("[forward]\ninp_res = 62\nout_res = 62\nout_bound = 5\n"
                                       "[converter]\ng_max = 40.0\n")
    status, out, err = run(capsys, "compile", "net.py:make_net", "--calib", "inputs.npz", "--calib-batches", "0",
                           "--config", "hw.toml", "--set", "forward.out_bound=8", "-o", "hw.onnx")
    assert status == 0, err
    assert "not calibrated" in out
    report = inspect_json(capsys, "hw.onnx")
    assert report["metadata"]["xbar.hardware_config"]["forward"]["out_bound"] == 8
    for layer in report["layers"]:
        assert (layer["dac_steps"], layer["adc_steps"], layer["out_bound"], layer["g_max"]) == (62, 62, 8, 40)
        assert layer["input_range"] == 3.0  # --calib-batches 0: init_value


def test_exported_program_compiles_with_its_own_input_shape(workspace, capsys):
    net = load_net_class(workspace / "net.py")().eval()
    program = torch.export.export(net, (torch.randn(4, 6),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, workspace / "net.pt2")
    status, out, err = run(capsys, "compile", "net.pt2", *IDEAL_NO_RANGE)
    assert status == 0, err
    assert "not calibrated" in out
    x = np.random.default_rng(3).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(workspace / "net.onnx", x), net(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


# -- bad input: one line on stderr, the right status, no output file -----------------------------

def save_static_program(workspace):
    net = load_net_class(workspace / "net.py")().eval()
    torch.export.save(torch.export.export(net, (torch.randn(1, 6),)), workspace / "static.pt2")


def write_fixtures(workspace):
    (workspace / "notes.txt").write_text("not a model")
    (workspace / "fake.pt2").write_text("not an archive")
    (workspace / "garbage.pt").write_text("these bytes were never written by torch.save")
    (workspace / "blocker").write_text("a file where a directory should be")
    (workspace / "bad.json").write_text(json.dumps({"forward": {"inp_res": 254, "colour": "red"}}))
    (workspace / "nan.json").write_text(json.dumps({"forward": {"out_bound": float("nan")}}))  # JSON's NaN
    (workspace / "inf.toml").write_text("[converter]\ng_max = inf\n")
    (workspace / "bad.toml").write_text("[forward\n")
    torch.save(nn.Linear(6, 8).state_dict(), workspace / "other.pt")
    torch.save(nn.Linear(6, 8), workspace / "pickled_module.pt")
    resized = load_net_class(workspace / "net.py")().state_dict() | {"fc1.weight": torch.zeros(8, 5)}
    torch.save(resized, workspace / "resized.pt")
    (workspace / "subdir").mkdir()
    np.savez(workspace / "two.npz", a=np.zeros((4, 6)), b=np.zeros(4))
    np.save(workspace / "narrow.npy", np.zeros((10, 5)))  # not a format --calib reads
    np.savez(workspace / "narrow.npz", np.zeros((10, 5), dtype=np.float32))
    np.savez(workspace / "badlabels.npz", x=np.zeros((10, 6), dtype=np.float32), y=np.full(10, 7))
    np.savez(workspace / "fewlabels.npz", x=np.zeros((10, 6), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    with_nan = np.ones((10, 6), dtype=np.float32)
    with_nan[3, 2] = np.nan
    np.savez(workspace / "nan.npz", x=with_nan)
    torch.save({"x": torch.tensor([[1.0, float("inf")]] * 3)}, workspace / "inf.pt")
    save_static_program(workspace)


BAD_INPUTS = {
    "missing model file": (["compile", "nothere.py:make_net"], 2, "neither a file nor a zoo model"),
    "unknown zoo name": (["compile", "lenett"], 2, "neither a file nor a zoo model"),
    "not a model": (["compile", "notes.txt"], 2, "is not a model"),
    "checkpoint given as model": (["compile", "net.pt"], 2, "--weights net.pt"),
    "not an export archive": (["compile", "fake.pt2"], 2, "not a torch.export archive"),
    "factory missing": (["compile", "net.py:make_nett"], 2, "it defines: Branchy, Net, broken, interrupted"),
    "factory without name": (["compile", "net.py"], 2, "name the factory"),
    "factory raises": (["compile", "net.py:broken"], 2, "net.py:broken() raised RuntimeError: factory exploded"),
    "missing weights": (["compile", "net.py:make_net", "--weights", "nothere.pt"], 2, "not found"),
    "checkpoint mismatch": (["compile", "net.py:make_net", "--weights", "other.pt"], 2,
                            "missing fc1.weight, fc1.bias, fc2.weight and 3 more; unexpected weight, bias"),
    "checkpoint of other shapes": (["compile", "net.py:make_net", "--weights", "resized.pt"], 2,
                                   "fc1.weight is [8, 5] in the file, [8, 6] in the model"),
    "pickled module as weights": (["compile", "net.py:make_net", "--weights", "pickled_module.pt"], 2,
                                  "pickled_module.pt needs arbitrary Python code"),
    "text file as weights": (["compile", "net.py:make_net", "--weights", "garbage.pt"], 2,
                             "garbage.pt is not a PyTorch file (write it with torch.save)"),
    "text file as data": (["compile", *NET, "--calib", "garbage.pt"], 2, "garbage.pt is not a PyTorch file"),
    "input shape does not fit": (["compile", *NET, "--input-shape", "1,5"], 2,
                                 "does not accept an input of shape [1, 5]"),
    "input shape is not a shape": (["compile", *NET, "--input-shape", "1,a"], 2, "positive integers"),
    "input shape against data": (["compile", "mlp", "--input-shape", "1,3,8,8"], 2,
                                 "does not match the samples of digits"),
    "no input shape": (["compile", *NET], 2, "give --input-shape"),
    "fixed-batch program": (["compile", "static.pt2"], 2, "fixed batch size of 1; re-export it with an example "
                            "batch of 2 or more and a dynamic batch dimension"),
    "unknown calibration data": (["compile", "mlp", "--calib", "mnist"], 2, "built-in: digits"),
    "calibration file of another format": (["compile", "mlp", "--calib", "narrow.npy"], 2, "unknown data format"),
    "ambiguous calibration file": (["compile", "mlp", "--calib", "two.npz"], 2,
                                   "'a', 'b' name no parameter of forward(x)"),
    "calibration data of another shape": (["compile", *NET, "--calib", "narrow.npz"], 2,
                                          "does not accept an input of shape [1, 5]"),
    "calibration data with NaN": (["compile", *NET, "--calib", "nan.npz"], 2,
                                  "nan.npz: 1 of the 60 sample values are NaN or infinite"),
    "calibration data with inf": (["compile", *NET, "--calib", "inf.pt"], 2,
                                  "inf.pt: 3 of the 6 sample values are NaN or infinite"),
    "unknown config key": (["compile", "mlp", "--set", "forward.nope=1"], 2, "unknown config key 'forward.nope'"),
    "config value out of range": (["compile", "mlp", "--set", "pre_post.input_range.init_value=-1"], 2,
                                  "init_value must be > 0"),
    "config type": (["compile", "mlp", "--set", "forward.inp_res=many"], 2, "forward.inp_res must be a float"),
    "config NaN": (["compile", "mlp", "--set", "forward.out_bound=NaN"], 2,
                   "forward.out_bound must be a finite number, got nan"),
    "config infinity": (["compile", "mlp", "--set", "forward.inp_res=Infinity"], 2,
                        "forward.inp_res must be a finite number, got inf"),
    "config file NaN": (["compile", "mlp", "--config", "nan.json"], 2,
                        "--config nan.json: forward.out_bound must be a finite number"),
    "config file infinity": (["compile", "mlp", "--config", "inf.toml"], 2,
                             "--config inf.toml: converter.g_max must be a finite number"),
    "negative batch count": (["compile", "mlp", "--calib-batches", "-1"], 2, "expected an integer >= 0"),
    "finetune without labels": (["compile", *NET, "--calib", "inputs.npz", "--finetune", "1"], 2,
                                "--finetune needs labelled data"),
    "finetune with labels that are not classes": (["compile", *NET, "--calib", "badlabels.npz", "--finetune", "1"],
                                                  2, "labels of badlabels.npz run from 7 to 7, but net has 3 classes"),
    "a metric that does not fit the outputs": (["compile", *NET, "--calib", "badlabels.npz", "--metric", "mean-iou"],
                                               2, "net on badlabels.npz: the metric 'mean-iou' takes outputs "
                                               "[batch, classes, H, W]"),
    "a classifier scored as a language model": (["compile", "mlp", "--metric", "perplexity"], 2,
                                                "mlp on digits: the metric 'perplexity' takes outputs [batch, "
                                                "sequence, vocabulary]"),
    "labels that do not match the samples": (["compile", *NET, "--calib", "fewlabels.npz"], 2,
                                             "3 labels for 10 samples"),
    "set without value": (["compile", "mlp", "--set", "forward.inp_res"], 2, "expected KEY=VALUE"),
    "unknown key in config file": (["compile", "mlp", "--config", "bad.json"], 2, "colour"),
    "config file not TOML": (["compile", "mlp", "--config", "bad.toml"], 2, "not valid TOML"),
    "unknown preset": (["compile", "mlp", "--preset", "9bit"], 2, "invalid choice: '9bit'"),
    "unknown capture method": (["compile", "mlp", "--capture", "trace"], 2, "invalid choice: 'trace'"),
    "preset and a bad config": (["compile", "--preset", "ideal", "--config", "bad.json"], 2, "colour"),
    "output under a file": (["compile", "mlp", "-o", "blocker/out.onnx"], 2, "is not a directory"),
    "output is a directory": (["compile", "mlp", "-o", "subdir"], 2, "is a directory"),
    "output where no file can be created": (["compile", "mlp", "-o", "/proc/xbar-test.onnx"], 2,
                                            "files cannot be created in /proc"),
    "graph archive under a file": (["compile", "mlp", "--save-graph", "blocker/g.pt"], 2, "is not a directory"),
    "plot under a file": (["inspect", "other.pt", "--plot", "blocker/p.png"], 2, "is not a directory"),
    "unknown option": (["compile", "--colour"], 2, "unrecognized arguments: --colour"),
    "no command": ([], 2, "required: COMMAND"),
    "inspect a missing file": (["inspect", "nothere.onnx"], 2, "no such file"),
    "inspect a text file": (["inspect", "notes.txt"], 2, "neither an ONNX model nor an xbar graph archive"),
    "inspect a state_dict": (["inspect", "other.pt"], 2, "not an xbar graph archive"),
    "capture fails": (["compile", "net.py:make_branchy", "--input-shape", "1,6"], 1,
                      "could not capture Branchy with export"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_with_its_exit_status(workspace, capsys, case):
    argv, status, message = BAD_INPUTS[case]
    write_fixtures(workspace)
    before = sorted(p.name for p in workspace.rglob("*"))
    code, out, err = run(capsys, *argv)
    assert code == status
    errors = [line for line in err.splitlines() if not line.startswith("xbar: warning: no --weights")]
    assert len(errors) == 1 and errors[0].startswith("xbar: error: ") and message in err, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in workspace.rglob("*")) == before  # nothing written, not even a temp file


def test_an_unwritable_output_is_found_before_anything_else(workspace, capsys):
    status, _, err = run(capsys, "compile", "nothere.py:make_net", "--set", "forward.nope=1",
                         "-o", "/proc/xbar-test.onnx")
    assert status == 2 and "cannot write /proc/xbar-test.onnx" in err  # not the model's or the config's error


def test_a_capture_failure_names_the_other_capture_option(workspace, capsys):
    status, _, err = run(capsys, "compile", "net.py:make_branchy", "--input-shape", "1,6")
    assert status == 1 and "--capture symbolic_trace" in err and "capture='symbolic_trace'" not in err
    status, _, err = run(capsys, "compile", "net.py:make_branchy", "--input-shape", "1,6",
                         "--capture", "symbolic_trace")
    assert status == 1
    assert "could not capture Branchy with symbolic_trace" in err and "--capture export" in err


def test_capture_symbolic_trace_reaches_prepare(workspace, capsys):
    status, _, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--capture", "symbolic_trace",
                         "--save-graph", "traced.graph.pt", "-o", "traced.onnx")
    assert status == 0, err
    code = torch.load(workspace / "traced.graph.pt", weights_only=True)["code"]
    assert "torch.ops.aten" not in code  # a torch.export capture is written in ATen ops
    status, _, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--save-graph", "exported.graph.pt")
    assert status == 0, err
    assert "torch.ops.aten" in torch.load(workspace / "exported.graph.pt", weights_only=True)["code"]


def test_the_fixed_batch_advice_works_when_followed(workspace, capsys):
    save_static_program(workspace)
    status, _, err = run(capsys, "compile", "static.pt2")
    assert status == 2
    advice = re.search(r"(torch\.export\.export\(model, .*\))$", err.strip()).group(1)
    model = load_net_class(workspace / "net.py")().eval()
    torch.export.save(eval(advice, {"torch": torch, "model": model}), workspace / "fixed.pt2")
    status, _, err = run(capsys, "compile", "fixed.pt2", *IDEAL_NO_RANGE)
    assert status == 0, err
    session_input = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(workspace / "fixed.onnx", session_input),
                               model(torch.from_numpy(session_input)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_a_factory_without_weights_warns_in_one_line(workspace, capsys):
    status, _, err = run(capsys, "compile", "net.py:make_net", "--calib", "inputs.npz")
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("xbar: warning:")]
    assert warnings == ["xbar: warning: no --weights: compiling the weights net.py:make_net() starts with "
                        "(random unless it loads trained ones); give --weights CHECKPOINT for trained weights"]
    status, _, err = run(capsys, "compile", *NET, "--calib", "inputs.npz")
    assert status == 0 and "warning" not in err


def test_interrupting_is_one_line_and_status_130(workspace, capsys):
    status, out, err = run(capsys, "compile", "net.py:interrupted")
    assert status == 130 and out == ""
    assert err == "xbar: error: interrupted; no output was written unless reported above\n"


def test_interrupting_while_a_command_loads_is_one_line(monkeypatch, capsys):
    class Interrupting:  # Ctrl-C while the command's module (and torch) is being imported
        def find_spec(self, name, path=None, target=None):
            if name == "xbar.compiler.cli.slow_to_import":
                raise KeyboardInterrupt
            return None

    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    monkeypatch.setitem(cli.RUNNERS, "presets", "slow_to_import")
    assert run(capsys, "presets") == (130, "", "xbar: error: interrupted; no output was written unless reported "
                                               "above\n")


def test_errors_map_to_exit_status_by_their_class():
    assert describe_error(ConfigError("forward.inp_res must be a float")) == (2, "forward.inp_res must be a float")
    assert describe_error(CaptureError("could not capture\nmore")) == (1, "could not capture")
    status, message = describe_error(KeyError("boom"))
    assert status == 1 and message == "unexpected KeyError: 'boom'; rerun with --debug for the traceback and report it"


def test_the_names_the_help_lists_are_the_libraries_names():
    assert cli_arguments.ZOO_NAMES == tuple(ZOO)
    assert cli_arguments.BUILTIN_DATA == tuple(BUILTIN)
    assert cli_arguments.CALIBRATION_METHODS == tuple(m.value for m in CalibrationMethod)
    assert cli_arguments.CAPTURE_METHODS == typing.get_args(CaptureMethod)
    assert cli_arguments.METRIC_NAMES == tuple(METRICS)


def test_debug_shows_the_traceback(workspace, capsys):
    status, _, err = run(capsys, "compile", "net.py:make_net", "--weights", "nothere.pt", "--debug")
    assert status == 2
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("xbar: error: weights file")


# -- inspect, presets, help ----------------------------------------------------------------------

def test_inspect_graph_and_plot(workspace, capsys):
    assert run(capsys, "compile", "net.py:make_net", "--calib", "inputs.npz", "--save-graph", "net.graph.pt")[0] == 0
    status, out, _ = run(capsys, "inspect", "net.onnx", "--graph", "--plot", "net.png")
    assert status == 0
    assert "fc1_crossbar: ai.xbar::CrossbarLinear(x, fc1_crossbar.g_plus, fc1_crossbar.g_minus" in out
    assert (workspace / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out, _ = run(capsys, "inspect", "net.graph.pt", "--graph")
    assert status == 0 and "call_module[target=fc2_crossbar]" in out and "3 crossbar layers" in out


def test_presets_lists_every_preset_with_its_settings(capsys):
    from xbar.compiler.config.presets import PRESETS

    status, out, _ = run(capsys, "presets")
    assert status == 0
    assert all(name in out for name in PRESETS)
    assert "forward.inp_res=62 " in out and "mapping.max_input_size=512 " in out
    assert not re.search(r"=\d+\.0\b", out)  # 254, not 254.0
    assert "without --preset, xbar compile uses 8bit; a --config file applies on top of the preset" in out


def test_the_hardware_summary_prints_whole_numbers_as_integers(workspace, capsys):
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--preset", "6bit-256x256")
    assert status == 0, err
    assert ("hardware: 6bit-256x256 preset: forward.inp_res=62, forward.out_res=62, forward.out_bound=10, "
            "mapping.max_input_size=256, mapping.max_output_size=256") in out


@pytest.mark.parametrize("command", [[], ["compile"], ["inspect"], ["presets"]])
def test_help_on_every_command_has_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "example" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert re.match(r"xbar 0\.1\.0 \(torch 2\.\d+\.\d+\S*, onnx 1\.\d+\S*, onnxruntime 1\.\d+\S*\)$",
                    capsys.readouterr().out.strip())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["compile", "--help"], ["presets"]])
def test_light_commands_do_not_import_torch(argv):
    script = textwrap.dedent(f"""
        import sys
        from xbar.compiler.cli.main import main
        try:
            status = main({argv!r})
        except SystemExit as exit_:
            status = exit_.code
        heavy = sorted(name for name in ("torch", "onnx", "onnxruntime", "numpy", "matplotlib") if name in sys.modules)
        assert status == 0 and not heavy, (status, heavy)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- the installed console script ----------------------------------------------------------------

def xbar_script() -> str:
    script = Path(sys.executable).with_name("xbar")
    assert script.exists(), "install the package (pip install -e .) to get the xbar console script"
    return str(script)


def test_console_script_reports_an_error_in_one_line(tmp_path):
    result = subprocess.run([xbar_script(), "compile", "nothere.py:Net"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("xbar: error: model 'nothere.py:Net'")
    assert list(tmp_path.iterdir()) == []


def test_module_entry_point_runs_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xbar.compiler.cli", "presets"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "8bit-512x512" in result.stdout


# -- a user's project with packages named like xbar's -------------------------------------------

PROJECT_MODEL = textwrap.dedent("""
    from torch import nn


    def build():
        return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
""")
PROJECT_ENTRY = "from models.mynet import build\n\n\ndef factory():\n    return build()\n"


@pytest.fixture
def project(tmp_path):
    """A user's project whose own packages are called models, passes and compiler."""
    for package in ("models", "passes", "compiler"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "models" / "mynet.py").write_text(PROJECT_MODEL)
    (tmp_path / "their.py").write_text(PROJECT_ENTRY)
    return tmp_path


def test_a_project_with_its_own_models_package_compiles_with_the_installed_script(project):
    result = subprocess.run([xbar_script(), "compile", "their.py:factory", "--input-shape", "1,4", "-o", "t.onnx"],
                            cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 crossbar layers" in result.stdout and (project / "t.onnx").is_file()


def test_a_project_with_its_own_models_package_compiles_from_another_directory(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = subprocess.run([sys.executable, "-m", "xbar.compiler.cli", "compile", f"{project}/their.py:factory",
                             "--input-shape", "1,4", "-o", "t.onnx"], cwd=elsewhere, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "t.onnx").is_file()


def test_a_cached_module_of_the_same_name_does_not_hide_the_users(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    stale = types.ModuleType("models")  # as if another project's models package had been imported
    stale.__path__ = [str(project.parent / "somewhere-else")]
    monkeypatch.setitem(sys.modules, "models", stale)
    status, out, err = run(capsys, "compile", "their.py:factory", "--input-shape", "1,4", "-o", "t.onnx")
    assert status == 0, err
    assert "2 crossbar layers" in out
    assert sys.modules["models"] is stale  # put back once the user's code ran


def test_non_finite_weights_exit_2_naming_the_parameter(workspace, capsys):
    state = torch.load("net.pt")
    name = next(key for key, value in state.items() if value.dim() == 2)
    state[name][0, 0] = float("nan")
    torch.save(state, "nan.pt")
    status, out, err = run(capsys, "compile", "net.py:make_net", "--weights", "nan.pt", "--calib", "inputs.npz",
                           "-o", "net.onnx")
    assert status == 2 and f"parameter '{name}' holds 1 NaN or infinite value" in err + out
    assert "Traceback" not in err and not os.path.exists("net.onnx")


LANGUAGE_MODEL = '''
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16)

    def forward(self, ids):
        return self.head(torch.relu(self.embed(ids)))


def make():
    torch.manual_seed(0)
    return TinyLM()
'''


def test_finetune_trains_a_language_model_on_its_next_tokens(workspace, capsys):
    (workspace / "lm.py").write_text(LANGUAGE_MODEL)
    tokens = np.random.default_rng(0).integers(0, 16, size=(40, 6))
    np.savez(workspace / "tokens.npz", x=tokens, y=(tokens + 1) % 16)  # next token: a rule it can learn
    common = ["compile", "lm.py:make", "--calib", "tokens.npz", "--metric", "perplexity", "--batch-size", "8"]
    status, out, err = run(capsys, *common, "-o", "plain.onnx")
    assert status == 0, err
    before = [float(v) for v in table_row(out, "perplexity on")]
    status, out, err = run(capsys, *common, "--finetune", "3", "-o", "tuned.onnx")
    assert status == 0, err
    assert "fine-tuned on 40 labelled samples from tokens.npz" in out
    after = [float(v) for v in table_row(out, "perplexity on")]
    assert after[1] < before[1] and after[2] < before[2]  # per-token training lowered the compiled perplexity


def test_finetune_refuses_token_labels_of_another_length(workspace, capsys):
    (workspace / "lm.py").write_text(LANGUAGE_MODEL)
    tokens = np.random.default_rng(0).integers(0, 16, size=(40, 6))
    np.savez(workspace / "tokens.npz", x=tokens, y=tokens[:, :5])
    status, out, err = run(capsys, "compile", "lm.py:make", "--calib", "tokens.npz", "--finetune", "1")
    assert status == 2 and "needs a classifier or a language model" in err.strip().splitlines()[-1]
    assert not (workspace / "lm.onnx").exists()

"""The ``xbar`` command line, run in-process through ``main`` and once as the installed script.

Every run is real: torch.export captures, ONNX files are written and run in ONNX Runtime.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from xbar.compiler.cli import main

NET_PY = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 8)
            self.fc2 = nn.Linear(8, 8)
            self.fc3 = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


    def make_net():
        return Net()


    def broken():
        raise RuntimeError("factory exploded")
""")
IDEAL_NO_RANGE = ["--preset", "ideal", "--set", "pre_post.input_range.enable=false"]


def load_net_class(path: Path) -> type:
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["Net"]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with a model file, its trained-looking weights and calibration inputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(NET_PY)
    torch.manual_seed(1)
    net = load_net_class(tmp_path / "net.py")()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    inputs = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=inputs)
    torch.save({"x": torch.from_numpy(inputs)}, tmp_path / "inputs.pt")
    return tmp_path


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


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
    assert original == 98.22  # the shipped checkpoint
    assert compiled >= 97.5  # calibration alone gives 95.78; fine-tuning recovers most of the loss
    assert abs(compiled - onnx_runtime) <= 0.23  # at most one test image apart
    from_onnx, from_graph = inspect_json(capsys, "lenet.onnx"), inspect_json(capsys, "lenet.graph.pt")
    assert [l["layer"] for l in from_onnx["layers"]] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    for a, b in zip(from_onnx["layers"], from_graph["layers"]):
        assert (a["dac_steps"], a["adc_steps"], a["out_bound"]) == (254, 254, 10)
        assert a["input_range"] == b["input_range"] and a["conductance_mean"] == b["conductance_mean"]
    assert "conv1_crossbar" in torch.load("lenet.graph.pt", weights_only=True)["graph"]


def test_finetune_reads_labels_from_a_data_file(workspace, capsys):
    x = np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)
    np.savez(workspace / "labelled.npz", x=x, y=np.arange(24) % 3)
    status, out, err = run(capsys, "compile", "net.py:make_net", "--weights", "net.pt", "--calib", "labelled.npz",
                           "--finetune", "1", "--batch-size", "8")
    assert status == 0, err
    assert "fine-tuned on 24 labelled samples from labelled.npz" in out and "1 epoch, batch 8" in out
    assert (workspace / "net.onnx").exists()


@pytest.mark.parametrize("options, layers", [
    (["--calib", "inputs.pt", "--exclude", "fc2"], ["fc1", "fc3"]),
    (["--input-shape", "1,6", "--include", "fc[12]", "--keep-first-last-digital"], ["fc2"]),
])
def test_layer_selection_options_reach_the_onnx_file(workspace, capsys, options, layers):
    status, _, err = run(capsys, "compile", "net.py:make_net", *options, "-o", "sel.onnx")
    assert status == 0, err
    assert [l["layer"] for l in inspect_json(capsys, "sel.onnx")["layers"]] == layers


def test_calibration_method_and_layer_rules_from_the_config_file(workspace, capsys):
    (workspace / "rules.json").write_text(json.dumps({"layers": [
        {"name": "fc2", "digital": True},
        {"pattern": "fc*", "overrides": {"forward.out_bound": 4.0}}]}))
    status, _, err = run(capsys, "compile", "net.py:make_net", "--calib", "inputs.npz", "--config", "rules.json",
                         "--calib-method", "Max", "-o", "rules.onnx")
    assert status == 0, err
    layers = inspect_json(capsys, "rules.onnx")["layers"]
    assert [(l["layer"], l["out_bound"], l["rule"]) for l in layers] == [("fc1", 4.0, "pattern=fc*"),
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
    (workspace / "blocker").write_text("a file where a directory should be")
    (workspace / "bad.json").write_text(json.dumps({"forward": {"inp_res": 254, "colour": "red"}}))
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
    save_static_program(workspace)


BAD_INPUTS = {
    "missing model file": (["compile", "nothere.py:make_net"], 2, "neither a file nor a zoo model"),
    "unknown zoo name": (["compile", "lenett"], 2, "neither a file nor a zoo model"),
    "not a model": (["compile", "notes.txt"], 2, "is not a model"),
    "checkpoint given as model": (["compile", "net.pt"], 2, "--weights net.pt"),
    "not an export archive": (["compile", "fake.pt2"], 2, "not a torch.export archive"),
    "factory missing": (["compile", "net.py:make_nett"], 2, "it defines: Net, broken, make_net"),
    "factory without name": (["compile", "net.py"], 2, "name the factory"),
    "factory raises": (["compile", "net.py:broken"], 1, "factory exploded"),
    "missing weights": (["compile", "net.py:make_net", "--weights", "nothere.pt"], 2, "not found"),
    "checkpoint mismatch": (["compile", "net.py:make_net", "--weights", "other.pt"], 1,
                            "missing fc1.weight, fc1.bias, fc2.weight and 3 more; unexpected weight, bias"),
    "checkpoint of other shapes": (["compile", "net.py:make_net", "--weights", "resized.pt"], 1,
                                   "fc1.weight is [8, 5] in the file, [8, 6] in the model"),
    "pickled module as weights": (["compile", "net.py:make_net", "--weights", "pickled_module.pt"], 2,
                                  "needs arbitrary Python code"),
    "input shape does not fit": (["compile", "net.py:make_net", "--input-shape", "1,5"], 1,
                                 "does not accept an input of shape [1, 5]"),
    "input shape is not a shape": (["compile", "net.py:make_net", "--input-shape", "1,a"], 2,
                                   "positive integers"),
    "input shape against data": (["compile", "mlp", "--input-shape", "1,3,8,8"], 2,
                                 "does not match the samples of digits"),
    "no input shape": (["compile", "net.py:make_net"], 2, "give --input-shape"),
    "fixed-batch program": (["compile", "static.pt2"], 1, "fixed batch size of 1"),
    "unknown calibration data": (["compile", "mlp", "--calib", "mnist"], 2, "built-in: digits"),
    "calibration file of another format": (["compile", "mlp", "--calib", "narrow.npy"], 2, "unknown data format"),
    "ambiguous calibration file": (["compile", "mlp", "--calib", "two.npz"], 2, "name the input samples 'x'"),
    "calibration data of another shape": (["compile", "net.py:make_net", "--calib", "narrow.npz"], 1,
                                          "does not accept an input of shape [1, 5]"),
    "unknown config key": (["compile", "mlp", "--set", "forward.nope=1"], 2, "unknown config key 'forward.nope'"),
    "config value out of range": (["compile", "mlp", "--set", "pre_post.input_range.init_value=-1"], 2,
                                  "init_value must be > 0"),
    "config type": (["compile", "mlp", "--set", "forward.inp_res=many"], 2, "forward.inp_res must be a float"),
    "negative batch count": (["compile", "mlp", "--calib-batches", "-1"], 2, "expected an integer >= 0"),
    "finetune without labels": (["compile", "net.py:make_net", "--calib", "inputs.npz", "--finetune", "1"], 2,
                                "--finetune needs labelled data"),
    "finetune with labels that are not classes": (["compile", "net.py:make_net", "--calib", "badlabels.npz",
                                                   "--finetune", "1"], 1,
                                                  "labels of badlabels.npz run from 7 to 7, but net has 3 classes"),
    "labels that do not match the samples": (["compile", "net.py:make_net", "--calib", "fewlabels.npz"], 2,
                                             "3 labels for 10 samples"),
    "set without value": (["compile", "mlp", "--set", "forward.inp_res"], 2, "expected KEY=VALUE"),
    "unknown key in config file": (["compile", "mlp", "--config", "bad.json"], 2, "colour"),
    "config file not TOML": (["compile", "mlp", "--config", "bad.toml"], 2, "not valid TOML"),
    "unknown preset": (["compile", "mlp", "--preset", "9bit"], 2, "invalid choice: '9bit'"),
    "preset and config": (["compile", "--preset", "ideal", "--config", "bad.json"], 2, "not allowed with"),
    "output under a file": (["compile", "mlp", "-o", "blocker/out.onnx"], 1, "is not a directory"),
    "output is a directory": (["compile", "mlp", "-o", "subdir"], 1, "is a directory"),
    "unknown option": (["compile", "--colour"], 2, "unrecognized arguments: --colour"),
    "no command": ([], 2, "required: COMMAND"),
    "inspect a missing file": (["inspect", "nothere.onnx"], 2, "no such file"),
    "inspect a text file": (["inspect", "notes.txt"], 2, "neither an ONNX model nor an xbar graph archive"),
    "inspect a state_dict": (["inspect", "other.pt"], 2, "not an xbar graph archive"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_with_its_exit_status(workspace, capsys, case):
    argv, status, message = BAD_INPUTS[case]
    write_fixtures(workspace)
    before = sorted(p.name for p in workspace.rglob("*"))
    code, out, err = run(capsys, *argv)
    assert code == status
    assert err.count("\n") == 1 and err.startswith("xbar: error: ") and message in err, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in workspace.rglob("*")) == before  # nothing written, not even a temp file


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


def test_presets_lists_every_preset(capsys):
    from xbar.compiler.presets import PRESETS

    status, out, _ = run(capsys, "presets")
    assert status == 0
    assert all(name in out for name in PRESETS)
    assert "forward.inp_res=254" in out  # the compile default is stated


@pytest.mark.parametrize("command", [[], ["compile"], ["inspect"], ["presets"]])
def test_help_on_every_command_has_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "example" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("xbar 0.1.0 (torch ")


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

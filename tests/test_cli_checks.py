"""The command line's checks and defaults: arguments checked before torch loads, one file per output
option, the hardware a --config file starts from, the lossless ideal preset, input shapes and dtypes."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xbar import convert, export_onnx, prepare, preset_config
from xbar.compiler.cli.steps import hardware_config
from xbar.models.zoo import DIGIT_CLASSIFIERS, ZOO

from conftest import NET, run


def inspect_json(capsys, path) -> dict:
    status, out, err = run(capsys, "inspect", str(path), "--json")
    assert status == 0, err
    return json.loads(out)


# -- nothing heavy before the arguments are checked ------------------------------------------------

HEAVY = ("torch", "onnx", "onnxruntime", "sklearn")


@pytest.mark.parametrize("argv", [
    ["compile", "nosuchmodel"], ["compile", "mlp", "--weights", "nothere.pt"], ["compile", "mlp", "--calib", "x.csv"],
    ["compile", "mlp", "--config", "nothere.toml"], ["compile", "mlp", "-o", "missing/dir/a.onnx"],
    ["compile", "mlp", "-o", "a.onnx", "--save-graph", "a.onnx"], ["evaluate", "nosuchmodel"],
    ["inspect", "nothere.onnx"], ["compile", "--preset", "9bit"]])
def test_a_wrong_argument_is_reported_before_any_heavy_import(argv, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from xbar.compiler.cli.main import main
        status = main({argv!r})
        heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
        assert status == 2 and not heavy, (status, heavy)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("xbar: error: ") and result.stderr.count("\n") == 1


def test_inspecting_an_onnx_file_loads_neither_torch_nor_the_exporter(tmp_path, capsys):
    x = torch.randn(2, 8)
    path = export_onnx(convert(prepare(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), (x,))), (x,),
                       tmp_path / "net.onnx")
    script = textwrap.dedent(f"""
        import sys
        from xbar.compiler.cli.main import main
        status = main(["inspect", {str(path)!r}, "--json"])
        loaded = sorted(name for name in ("torch", "onnxscript", "onnx_ir", "onnxruntime", "sklearn")
                        if name in sys.modules)
        assert status == 0 and not loaded, (status, loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == inspect_json(capsys, path)  # the same answer as with torch loaded


# -- output paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["-o", "x.onnx", "--save-graph", "x.onnx"], "-o and --save-graph both name x.onnx"),
    (["-o", "x.onnx", "--save-graph", "./x.onnx"], "-o and --save-graph both name"),
    (["-o", "x.onnx", "--save-graph", "x.onnx.data", "--external-data"], "both name x.onnx.data"),
    (["-o", ""], "expected a file name, got an empty one"),
    (["--save-graph", " "], "expected a file name"),
    (["-o", "missing/dir/a.onnx"], "the directory missing/dir does not exist; create it"),
    (["--save-graph", "missing/g.pt"], "the directory missing does not exist"),
])
def test_outputs_that_cannot_be_written_as_asked_are_refused_up_front(workspace, capsys, argv, message):
    before = sorted(p.name for p in workspace.rglob("*"))
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", *argv)
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in workspace.rglob("*")) == before


def test_inspect_plot_into_a_missing_directory_is_refused(workspace, capsys):
    status, _, err = run(capsys, "inspect", "net.pt", "--plot", "figs/p.png")
    assert status == 2 and "the directory figs does not exist" in err


# -- the hardware: preset, then the config file, then --set ----------------------------------------

def hardware(*argv):
    from xbar.compiler.cli.arguments import build_parser

    return hardware_config(build_parser().parse_args(["compile", *argv]))


def test_a_config_file_starts_from_the_default_preset(workspace):
    (workspace / "noise.toml").write_text("[forward]\nout_noise = 0.04\n")
    config = hardware("--config", "noise.toml")
    assert (config.forward.inp_res, config.forward.out_res, config.forward.out_bound) == (254, 254, 10)
    assert config.forward.out_noise == 0.04
    assert config.to_dict() == preset_config("8bit").with_overrides({"forward.out_noise": 0.04}).to_dict()


def test_a_config_file_applies_on_top_of_the_preset_given(workspace):
    (workspace / "hw.json").write_text(json.dumps({"forward": {"out_bound": 5}}))
    config = hardware("--preset", "6bit-256x256", "--config", "hw.json", "--set", "converter.g_max=40")
    expected = preset_config("6bit-256x256").with_overrides({"forward.out_bound": 5, "converter.g_max": 40})
    assert config.to_dict() == expected.to_dict()


def test_the_summary_says_where_the_hardware_came_from(workspace, capsys):
    (workspace / "rules.json").write_text(json.dumps({"layers": [
        {"name": "fc2", "digital": True}, {"pattern": "fc*", "overrides": {"forward.out_bound": 4.0}}]}))
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--config", "rules.json")
    assert status == 0, err
    line = " ".join(out[out.index("hardware:"):].split("\n")[:3])
    assert line.startswith("hardware: 8bit preset, then rules.json: forward.inp_res=254")
    assert "layers=[name=fc2: digital; pattern=fc*: forward.out_bound=4]" in " ".join(line.split())
    assert "{" not in line


# -- the ideal preset is lossless ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DIGIT_CLASSIFIERS))
def test_the_ideal_preset_computes_the_float_model(name):
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.factory().eval()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, *entry.input_shape[1:], generator=generator) for _ in range(3)]
    prepared = prepare(model, (batches[0],), preset_config("ideal"))
    from xbar import calibrate

    calibrate(prepared, batches[:2])
    converted = convert(prepared)
    x = batches[2] * 3  # beyond what calibration saw: a clip would cut it
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-4)


# -- input shapes and dtypes -----------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_input_shape_takes_any_batch_size(workspace, capsys, batch):
    status, out, err = run(capsys, "compile", *NET, "--input-shape", f"{batch},6", "-o", "b.onnx")
    assert status == 0, err
    assert [layer["layer"] for layer in inspect_json(capsys, "b.onnx")["layers"]] == ["fc1", "fc2", "fc3"]


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64])
def test_integer_and_bool_samples_are_cast_to_the_models_dtype(workspace, capsys, dtype):
    samples = (np.arange(40 * 6) % 3).reshape(40, 6).astype(dtype)
    np.savez(workspace / "images.npz", x=samples)
    status, out, err = run(capsys, "compile", *NET, "--calib", "images.npz", "-o", "i.onnx")
    assert status == 0, err
    name = np.dtype(dtype).name if dtype is not np.bool_ else "bool"
    assert f"xbar: warning: the samples of images.npz are {name}: cast to float32, the model's dtype" in err
    assert "input ranges calibrated on 1 batch" in out


def test_a_dtype_mistake_is_named_as_such(workspace, capsys):
    (workspace / "double.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(6, 3).double()

            def forward(self, x):
                return self.fc(x.float())  # insists on float32 inputs, then hits float64 weights
        def make():
            return Net()
    """))
    status, _, err = run(capsys, "compile", "double.py:make", "--input-shape", "1,6")
    assert status == 2 and "does not accept inputs of dtype float64" in err, err
    assert "pass samples of the dtype of its weights (float64)" in err and "of shape" not in err


def test_torch_warnings_about_its_internals_stay_out_of_the_output(workspace, capsys):
    (workspace / "lstm.py").write_text(textwrap.dedent("""
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(6, 8, batch_first=True)
                self.fc = nn.Linear(8, 3)

            def forward(self, x):
                return self.fc(self.lstm(x)[0][:, -1])
        def make():
            return Net()
    """))
    status, _, err = run(capsys, "compile", "lstm.py:make", "--input-shape", "3,5,6", "-o", "l.onnx")
    assert status == 0, err
    assert [line for line in err.splitlines() if "warning" in line and "--weights" not in line] == []

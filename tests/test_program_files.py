"""Programming files and measured conductances: the format as documented (read with numpy alone), a simulated
round trip (programmed conductances written as if measured, loaded back: the programmed model exactly, its
export byte-identical), the ONNX path torch-free, and every bad read-back refused in one line."""

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import xbar
from xbar.compiler.chip.shipped import HERMES
from xbar.compiler.cli.main import main
from xbar.compiler.config.presets import preset_config
from xbar.compiler.devices.programming import programming_of
from xbar.compiler.pipeline.stages import compile_model
from xbar.passes.errors import MeasuredConductancesError
from xbar.passes.numerics.crossbar import crossbar_modules

from conftest import ConvNet

CHIPS = {layout: dataclasses.replace(HERMES, name=f"small-{layout}", cores=16, arrays_per_core=2, rows=16,
                                     columns=8, pair_layout=layout, columns_per_adc=2)
         for layout in ("cell", "columns", "arrays")}
"""Small chips (16x8 arrays) for each way of placing G+ and G-: the model's layers take several tiles."""
TARGETS = [None, "cell", "columns", "arrays"]


def compiled(layout, seed=0):
    torch.manual_seed(seed)
    inputs = (torch.randn(3, 2, 6, 6),)
    result = compile_model(ConvNet().eval(), inputs, preset_config("8bit"),
                           chip=None if layout is None else CHIPS[layout])
    return result.converted, inputs


def noise_model(converted):
    g_max = next(iter(crossbar_modules(converted).values())).settings.g_max
    return xbar.PCMLikeNoiseModel(g_max=g_max)


def block(array: np.ndarray, region: dict, side: str) -> np.ndarray:
    """A region's [out_size, in_size] block of one stored array, by the format's documented rule."""
    if "row_offset" not in region:
        return array.reshape(region["out_size"], region["in_size"])
    first, step = region[f"g_{side}_columns"]
    rows = slice(region["row_offset"], region["row_offset"] + region["in_size"])
    return array[rows, first:first + step * region["out_size"]:step].T


def write_as_measured(directory, measured_from, into):
    """What a chip's tools do: copy the programming files and put each device's read-back in place."""
    shutil.copytree(directory, into)
    manifest = json.loads((into / "manifest.json").read_text())
    stored = {name: dict(np.load(into / name)) for name in manifest["files"]}
    modules = crossbar_modules(measured_from)
    for region in manifest["regions"]:
        for side in ("plus", "minus"):
            conductance = getattr(modules[region["name"]], f"g_{side}").detach().numpy()
            block(stored[region["file"]][region[f"g_{side}"]], region, side)[...] = \
                conductance.reshape(region["out_size"], region["in_size"])
    for name, arrays in stored.items():
        np.savez(into / name, **arrays)
    return into


@pytest.mark.parametrize("layout", TARGETS)
def test_the_manifest_says_where_each_block_of_each_layer_sits(tmp_path, layout):
    converted, _ = compiled(layout)
    directory = xbar.write_programming_files(converted, tmp_path / "prog")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert (manifest["format"], manifest["format_version"], manifest["units"]) == ("xbar-programming-files", 1, "uS")
    assert manifest["xbar_version"] == xbar.__version__ and "SinglePairConductanceConverter" in manifest["converter"]
    stored = {name: dict(np.load(directory / name)) for name in manifest["files"]}
    for entry in manifest["arrays"]:
        array = stored[entry["file"]][entry["key"]]
        assert list(array.shape) == entry["shape"] and array.dtype == np.float32
        assert hashlib.sha256(array.astype("<f4").tobytes()).hexdigest() == entry["sha256"]
    modules = crossbar_modules(converted)
    weights = {}  # each layer's [out, in x kernel] G+ - G-, assembled from the regions
    for region in manifest["regions"]:
        module = modules[region["name"]]
        for side in ("plus", "minus"):
            got = block(stored[region["file"]][region[f"g_{side}"]], region, side)
            np.testing.assert_array_equal(got, getattr(module, f"g_{side}").numpy().reshape(got.shape))
        whole = weights.setdefault(region["layer"], np.full((region["out_total"], region["in_total"]), np.nan))
        whole[region["out_offset"]:region["out_offset"] + region["out_size"],
              region["in_offset"]:region["in_offset"] + region["in_size"]] = 1.0
    assert set(weights) == {"conv", "fc"} and all(not np.isnan(w).any() for w in weights.values())  # all covered
    if layout is None:
        assert manifest["chip"] is None and manifest["files"] == ["arrays.npz"] and manifest["array_shape"] is None
        assert len(manifest["regions"]) == len(modules)
        return
    assert manifest["chip"]["name"] == f"small-{layout}" and manifest["array_shape"] == [16, 8]
    assert manifest["device_model"] == "hermes" and manifest["files"] == ["chip0.npz"]
    devices = sum(2 * r["in_size"] * r["out_size"] for r in manifest["regions"])
    assert sum(int((a != 0).sum()) for a in stored["chip0.npz"].values()) <= devices  # zeros where unused
    assert {r["replica"] for r in manifest["regions"]} >= {0}


@pytest.mark.parametrize("layout", TARGETS)
def test_measured_programmed_conductances_give_the_programmed_model_back(tmp_path, layout):
    converted, inputs = compiled(layout)
    devices = noise_model(converted)
    programmed = xbar.program(converted, devices, seed=3)
    directory = xbar.write_programming_files(converted, tmp_path / "prog")
    measured = write_as_measured(directory, programmed, tmp_path / "measured")
    loaded = xbar.load_conductances(converted, measured, devices, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(*inputs), programmed(*inputs))
        assert not torch.equal(loaded(*inputs), converted(*inputs))
    a = xbar.export_onnx(programmed, inputs, tmp_path / "programmed.onnx")
    b = xbar.export_onnx(loaded, inputs, tmp_path / "loaded.onnx")
    assert a.read_bytes() == b.read_bytes()
    drifted = xbar.drift(loaded, 86400.0, seed=1)  # from the measured state, with the device model
    assert programming_of(drifted).t_inference == 86400.0
    for name, crossbar in crossbar_modules(drifted).items():
        torch.testing.assert_close(crossbar.g_plus_programmed, crossbar_modules(programmed)[name].g_plus,
                                   rtol=0, atol=0)
    with torch.no_grad():
        assert not torch.equal(drifted(*inputs), loaded(*inputs))
    plain = xbar.load_conductances(converted, measured)  # no device model: the measured arrays as they are
    with torch.no_grad():
        assert torch.equal(plain(*inputs), programmed(*inputs)) and programming_of(plain) is None


def torch_free(tmp_path, argv):
    script = textwrap.dedent(f"""
        import sys
        from xbar.compiler.cli.main import main
        status = main({argv!r})
        loaded = sorted(name for name in ("torch", "onnxscript", "onnx_ir", "onnxruntime", "sklearn")
                        if name in sys.modules)
        assert status == 0 and not loaded, (status, loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("layout", [None, "columns"])
def test_an_onnx_file_writes_the_same_files_and_takes_measured_ones_back_without_torch(tmp_path, layout):
    converted, inputs = compiled(layout)
    programmed = xbar.program(converted, noise_model(converted), seed=5)
    path = xbar.export_onnx(converted, inputs, tmp_path / "m.onnx")
    torch_free(tmp_path, ["program-file", "m.onnx", "-o", "prog"])
    from_model = xbar.write_programming_files(converted, tmp_path / "from-model")
    assert (tmp_path / "prog" / "manifest.json").read_text() == (from_model / "manifest.json").read_text()
    write_as_measured(tmp_path / "prog", programmed, tmp_path / "measured")
    torch_free(tmp_path, ["import-measured", "m.onnx", "measured", "-o", "measured.onnx"])
    expected = onnx.load(str(xbar.export_onnx(programmed, inputs, tmp_path / "programmed.onnx")))
    got = onnx.load(str(tmp_path / "measured.onnx"))
    tensors = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}
    for tensor in expected.graph.initializer:
        np.testing.assert_array_equal(tensors[tensor.name], numpy_helper.to_array(tensor))
    assert json.loads({p.key: p.value for p in got.metadata_props}["xbar.measured"])["format_version"] == 1
    assert path.is_file()


def _drop_array(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    first = manifest["arrays"][0]
    arrays = dict(np.load(directory / first["file"]))
    del arrays[first["key"]]
    np.savez(directory / first["file"], **arrays)


def _edit_array(change):
    def edit(directory):
        manifest = json.loads((directory / "manifest.json").read_text())
        first = manifest["arrays"][0]
        arrays = dict(np.load(directory / first["file"]))
        arrays[first["key"]] = change(arrays[first["key"]])
        np.savez(directory / first["file"], **arrays)
    return edit


def _edit_manifest(change):
    def edit(directory):
        manifest = json.loads((directory / "manifest.json").read_text())
        change(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _other_models_manifest(directory):
    other, _ = compiled(None, seed=9)
    xbar.write_programming_files(other, directory.parent / "other")
    shutil.copy(directory.parent / "other" / "manifest.json", directory / "manifest.json")


BAD = {
    "another model's manifest": (_other_models_manifest, "another checksum"),
    "a missing array": (_drop_array, "is missing from"),
    "a missing file": (lambda d: (d / "arrays.npz").unlink(), "is missing; the manifest lists it"),
    "no manifest": (lambda d: (d / "manifest.json").unlink(), "has no manifest.json"),
    "another shape": (_edit_array(lambda a: a[:-1]), "is shaped"),
    "NaN": (_edit_array(lambda a: np.where(a == a.max(), np.nan, a)), "NaN"),
    "a negative conductance": (_edit_array(lambda a: a - 1.0), "negative conductances"),
    "other units": (_edit_manifest(lambda m: m.update(units="nS")), "'nS'"),
    "a target checksum": (_edit_manifest(lambda m: m["arrays"][1].update(sha256="0" * 64)), "another checksum"),
    "fewer arrays listed": (_edit_manifest(lambda m: m["arrays"].pop()), "another model"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_read_back_that_does_not_match_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, case):
    converted, inputs = compiled(None)
    path = xbar.export_onnx(converted, inputs, tmp_path / "m.onnx")
    directory = xbar.write_programming_files(converted, tmp_path / "prog")
    spoil, message = BAD[case]
    spoil(directory)
    with pytest.raises(MeasuredConductancesError, match=message):
        xbar.load_conductances(converted, directory)
    capsys.readouterr()
    status = main(["import-measured", str(path), str(directory), "-o", str(tmp_path / "measured.onnx")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("xbar: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "measured.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", "prog"] + (
        ["other"] if case == "another model's manifest" else []))


def test_bad_command_lines_fail_in_one_line_before_torch_loads(tmp_path):
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    (tmp_path / "file").write_text("")
    cases = {"no such file": ["program-file", "nope.onnx", "-o", "prog"],
             "no xbar metadata": ["program-file", "plain.onnx", "-o", "prog"],
             "is a file": ["program-file", "plain.onnx", "-o", "file"],
             "does not exist; create it first": ["program-file", "plain.onnx", "-o", "missing/prog"],
             "is not a directory": ["import-measured", "plain.onnx", "nowhere", "-o", "out.onnx"]}
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from xbar.compiler.cli.main import main
        for message, argv in {cases!r}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                status = main(argv)
            lines = err.getvalue().splitlines()
            assert status == 2 and len(lines) == 1 and message in lines[0], (argv, status, lines)
        assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "plain.onnx"]

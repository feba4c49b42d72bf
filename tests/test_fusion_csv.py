"""aihwkit's Fusion CSV, with aihwkit 1.1.0 as the oracle: xbar's FusionConductanceConverter gives aihwkit's
conductances, parameters and read-back fit; the file is what aihwkit's fusion_export writes for the same weights
(its own header and CSV writers, on an aihwkit model holding the weights xbar's arrays hold: its fusion_export
itself insists on the C++ InferenceTile); reading a file back gives aihwkit's fit; export then import restores
the model; the imported ONNX file runs in ONNX Runtime as the loaded model does; bad files are refused in one
line, nothing written."""

import csv
import dataclasses
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from aihwkit.exceptions import ArgumentError
from aihwkit.inference.converter.fusion import FusionConductanceConverter as AihwkitFusion
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.utils.export import _fusion_get_csv_header, _fusion_load_csv, _fusion_save_csv
from onnx import numpy_helper
from onnx_parity import Exported

import xbar
from xbar.compiler.cli import arguments as cli_arguments
from xbar.compiler.cli.main import main
from xbar.compiler.config.presets import preset_config
from xbar.compiler.pipeline.stages import compile_model
from xbar.compiler.program_files.formats import FORMATS
from xbar.passes.errors import ConverterError, MeasuredConductancesError
from xbar.passes.numerics.crossbar import crossbar_modules
from xbar.passes.numerics.fusion_converter import FusionConductanceConverter

from conftest import ConvNet


def compiled(tiles=None, seed=0):
    """ConvNet compiled with the 8bit preset; ``tiles=(rows, columns)`` splits its layers into arrays."""
    torch.manual_seed(seed)
    config = preset_config("8bit")
    if tiles is not None:
        config = dataclasses.replace(config, mapping=dataclasses.replace(
            config.mapping, max_input_size=tiles[0], max_output_size=tiles[1]))
    model = ConvNet().eval()
    inputs = (torch.randn(4, 2, 6, 6),)
    return model, compile_model(model, inputs, config).converted, inputs


def held_weights(crossbar) -> torch.Tensor:
    """The [out_size, in_size] weights an array holds: (G+ - G-) over its scale ratio."""
    difference = (crossbar.g_plus - crossbar.g_minus).flatten(1)
    ratios = crossbar.settings.column_scale_ratios or (crossbar.settings.scale_ratio,) * difference.shape[0]
    return difference / torch.tensor(ratios, dtype=torch.float32)[:, None]


def arrays_by_layer(converted) -> dict[str, list]:
    """Each layer's (array name, array) pairs in the file's order (by tile: input slice, then output slice)."""
    layers: dict[str, list] = {}
    for name, crossbar in crossbar_modules(converted).items():
        layers.setdefault(crossbar.settings.layer, []).append((name, crossbar))
    return {layer: sorted(arrays, key=lambda pair: (pair[1].settings.tile_row, pair[1].settings.tile_col))
            for layer, arrays in layers.items()}


def aihwkit_model(model, converted):
    """The aihwkit model of ``model`` (pure-torch tiles, one per layer) whose tiles hold the weights xbar's
    arrays hold."""
    analog = convert_to_analog(model, TorchInferenceRPUConfig())
    for name, layer in analog.named_analog_layers():
        ((_, crossbar),) = arrays_by_layer(converted)[name]
        (tile,) = layer.analog_tiles()
        tile.set_weights(held_weights(crossbar), None, apply_weight_scaling=False)
    return analog


def aihwkit_fusion_export(analog, path):
    """aihwkit's fusion_export writing ``path``, its steps on the pure-torch tiles (its InferenceTile check
    aside): each tile's unscaled weights through its FusionConductanceConverter, flattened, per layer, and its
    own header and CSV writers."""
    converter = AihwkitFusion()
    data = {}
    for name, layer in analog.named_analog_layers():
        data[name] = [value for tile in layer.analog_tiles() for conductance in converter.convert_to_conductances(
            tile.get_weights(apply_weight_scaling=False, realistic=False)[0])[0]
            for value in conductance.flatten().numpy().tolist()]
    _fusion_save_csv(str(path), data, _fusion_get_csv_header(analog))
    return path


def rewrite_rows(path, change):
    """A chip's tools writing a read-back: the same file with ``change(layer index, values)`` as each row."""
    text = path.read_text()
    lines = text.split("\n")
    head = "\n".join(lines[:5]) + "\n"
    rows = list(csv.reader(text[len(head):].splitlines()))
    out = [rows[0]] + [change(k, np.array(row, dtype=np.float64)) for k, row in enumerate(rows[1:])]
    with open(path, "w", newline="") as handle:
        handle.write(head)
        csv.writer(handle).writerows(out)


def noisy(seed):
    generator = np.random.default_rng(seed)
    return lambda k, values: (values * (1 + 0.05 * generator.standard_normal(values.shape))).clip(0).tolist()


def test_the_converter_gives_aihwkits_conductances_parameters_and_fit():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(9, 17, generator=generator)
    weights[2] = 0.0  # an all-zero row
    weights[5, :8] = 0.0
    for g_max in (40, 10, 27.5):
        (theirs,), their_params = AihwkitFusion(g_max).convert_to_conductances(weights)
        (ours,), our_params = FusionConductanceConverter(g_max).convert_to_conductances(weights.numpy())
        np.testing.assert_array_equal(ours, theirs.numpy())
        np.testing.assert_array_equal(our_params["original_weights"], their_params["original_weights"].numpy())
        measured = theirs * (1 + 0.05 * torch.randn(theirs.shape, generator=generator))
        fitted = AihwkitFusion(g_max).convert_back_to_weights([measured.clone()], their_params)
        ours_fitted = FusionConductanceConverter(g_max).convert_back_to_weights([measured.numpy()], our_params)
        np.testing.assert_allclose(ours_fitted, fitted.numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(ours_fitted, weights.numpy(), atol=1e-3)  # the noise moved them
    assert str(FusionConductanceConverter()) == str(AihwkitFusion())
    for g_max in (9, 41):
        with pytest.raises(ArgumentError):
            AihwkitFusion(g_max)
        with pytest.raises(ConverterError, match="between 10 and 40"):
            FusionConductanceConverter(g_max)


def test_the_file_is_what_aihwkits_fusion_export_writes_for_the_same_weights(tmp_path):
    model, converted, inputs = compiled()
    ours = xbar.write_programming_files(converted, tmp_path / "xbar.csv", format="fusion")
    theirs = aihwkit_fusion_export(aihwkit_model(model, converted), tmp_path / "aihwkit.csv")
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_text().splitlines()[:6] == ["1,2", "AnalogConv2d,AnalogLinear", "108,480", "6,5", "18,96",
                                                 "conv,fc"]
    onnx_path = xbar.export_onnx(converted, inputs, tmp_path / "m.onnx")  # the ONNX file writes the same file
    assert main(["program-file", str(onnx_path), "--format", "fusion", "-o", str(tmp_path / "onnx.csv")]) == 0
    assert (tmp_path / "onnx.csv").read_bytes() == ours.read_bytes()


def test_a_tiled_layer_lists_its_arrays_by_tile_as_fusion_export_lists_its_tiles(tmp_path):
    model, converted, _ = compiled(tiles=(40, 4))
    layers = arrays_by_layer(converted)
    assert [len(arrays) for arrays in layers.values()] == [2, 6]
    path = xbar.write_programming_files(converted, tmp_path / "tiled.csv", format="fusion")
    expected = {name: [value for _, crossbar in arrays
                       for value in AihwkitFusion().convert_to_conductances(held_weights(crossbar))[0][0]
                       .flatten().numpy().tolist()] for name, arrays in layers.items()}
    theirs = tmp_path / "aihwkit.csv"  # aihwkit's writer and header, the tiles being xbar's arrays
    _fusion_save_csv(str(theirs), expected, _fusion_get_csv_header(convert_to_analog(model, TorchInferenceRPUConfig())))
    assert path.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("tiles", [None, (40, 4)])
def test_reading_back_gives_the_weights_of_aihwkits_fusion_import_fit(tmp_path, tiles):
    model, converted, inputs = compiled(tiles)
    path = xbar.write_programming_files(converted, tmp_path / "m.csv", format="fusion")
    rewrite_rows(path, noisy(1))
    header = _fusion_get_csv_header(convert_to_analog(model, TorchInferenceRPUConfig()))
    read_by_aihwkit = _fusion_load_csv(str(path), header)  # aihwkit's reader takes the file
    loaded = xbar.load_conductances(converted, path, format="fusion")
    loaded_arrays = crossbar_modules(loaded)
    for name, arrays in arrays_by_layer(converted).items():
        values, offset = torch.tensor(read_by_aihwkit[name]), 0
        for array_name, crossbar in arrays:
            original = held_weights(crossbar)
            measured = values[offset:offset + original.numel()].reshape(original.shape)
            offset += original.numel()
            fitted = AihwkitFusion().convert_back_to_weights([measured], {"original_weights": original})
            mine = loaded_arrays[array_name]
            torch.testing.assert_close(held_weights(mine), fitted, rtol=1e-5, atol=1e-6)
            assert torch.all((mine.g_plus == 0) | (mine.g_minus == 0))  # one device at g_min (0 here)
    with torch.no_grad():
        assert not torch.allclose(loaded(*inputs), converted(*inputs), atol=1e-3)


@pytest.mark.parametrize("tiles", [None, (40, 4)])
def test_export_then_import_restores_the_model(tmp_path, tiles):
    _, converted, inputs = compiled(tiles)
    path = xbar.write_programming_files(converted, tmp_path / "m.csv", format="fusion")
    loaded = xbar.load_conductances(converted, path, format="fusion")
    for name, crossbar in crossbar_modules(converted).items():
        for side in ("g_plus", "g_minus"):
            torch.testing.assert_close(getattr(crossbar_modules(loaded)[name], side), getattr(crossbar, side),
                                       rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs), converted(*inputs), rtol=1e-4, atol=1e-4)


def torch_free(tmp_path, argv):
    script = textwrap.dedent(f"""
        import sys
        from xbar.compiler.cli.main import main
        status = main({argv!r})
        loaded = sorted(name for name in ("torch", "onnxruntime", "sklearn") if name in sys.modules)
        assert status == 0 and not loaded, (status, loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_imported_onnx_file_runs_in_onnx_runtime_as_the_loaded_model(tmp_path):
    _, converted, inputs = compiled()
    xbar.export_onnx(converted, inputs, tmp_path / "m.onnx")
    torch_free(tmp_path, ["program-file", "m.onnx", "--format", "fusion", "-o", "m.csv"])
    rewrite_rows(tmp_path / "m.csv", noisy(2))
    torch_free(tmp_path, ["import-measured", "m.onnx", "m.csv", "--format", "fusion", "-o", "measured.onnx"])
    loaded = xbar.load_conductances(converted, tmp_path / "m.csv", format="fusion")
    imported = onnx.load(str(tmp_path / "measured.onnx"))
    tensors = {t.name: numpy_helper.to_array(t) for t in imported.graph.initializer}
    for name, crossbar in crossbar_modules(loaded).items():  # the torch-free import holds the same conductances
        for side in ("g_plus", "g_minus"):
            np.testing.assert_allclose(tensors[f"{name}.{side}"], getattr(crossbar, side).numpy(), rtol=1e-6,
                                       atol=1e-5)
    metadata = {p.key: p.value for p in imported.metadata_props}
    assert json.loads(metadata["xbar.measured"])["format"] == "aihwkit-fusion-csv"
    exported = Exported(loaded, tmp_path / "measured.onnx")
    x = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    got, expected = exported.run(x), exported.expected(x)
    step = exported.last_adc_step()
    assert np.abs(got - expected).max() <= step + 1e-5 and np.mean(got != expected) <= 0.05
    with torch.no_grad():
        assert not np.allclose(expected, converted(x).numpy(), atol=1e-3)


def _header_edit(change):
    def edit(path):
        lines = path.read_text().split("\n")
        path.write_text("\n".join(change(lines)))
    return edit


def _row_edit(change):
    return lambda path: rewrite_rows(path, change)


def _set_first(value):
    def change(k, values):
        row = [repr(float(v)) for v in values]
        if k == 0:
            row[0] = value
        return row
    return change


BAD = {
    "a layer too few": (_header_edit(lambda lines: [",".join(line.split(",")[:1]) if i < 6 else line
                                                    for i, line in enumerate(lines)]), "holds 1 layers"),
    "another model's header": (_header_edit(lambda lines: lines[:3] + ["6,10"] + lines[4:]), "row 4 (height)"),
    "a short row": (_row_edit(lambda k, values: values[:-1].tolist()), "has 107 conductances"),
    "a missing row": (lambda path: path.write_bytes(b"\r\n".join(path.read_bytes().split(b"\r\n")[:-2]) + b"\r\n"),
                      "1 conductance rows"),
    "text": (_row_edit(_set_first("abc")), "'abc', not a number"),
    "NaN": (_row_edit(_set_first("nan")), "NaN"),
    "a negative conductance": (_row_edit(_set_first("-1.5")), "negative conductances"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_fusion_csv_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, case):
    _, converted, inputs = compiled()
    onnx_path = xbar.export_onnx(converted, inputs, tmp_path / "m.onnx")
    path = xbar.write_programming_files(converted, tmp_path / "m.csv", format="fusion")
    spoil, message = BAD[case]
    spoil(path)
    with pytest.raises(MeasuredConductancesError, match=re.escape(message)):
        xbar.load_conductances(converted, path, format="fusion")
    capsys.readouterr()
    status = main(["import-measured", str(onnx_path), str(path), "--format", "fusion",
                   "-o", str(tmp_path / "measured.onnx")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("xbar: error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.onnx"]


def test_a_csv_for_a_directory_and_a_directory_for_a_csv_are_refused_in_one_line(tmp_path, capsys):
    _, converted, inputs = compiled()
    onnx_path = str(xbar.export_onnx(converted, inputs, tmp_path / "m.onnx"))
    csv_path = str(xbar.write_programming_files(converted, tmp_path / "m.csv", format="fusion"))
    directory = str(xbar.write_programming_files(converted, tmp_path / "prog"))
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [(["import-measured", onnx_path, csv_path, "-o", str(tmp_path / "x.onnx")], "is a file"),
             (["import-measured", onnx_path, directory, "--format", "fusion", "-o", str(tmp_path / "x.onnx")],
              "is a directory"),
             (["program-file", onnx_path, "--format", "fusion", "-o", directory], "is a directory"),
             (["program-file", onnx_path, "-o", csv_path], "is a file")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("xbar: error: ") and err.count("\n") == 1 and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(MeasuredConductancesError, match="is a file"):
        xbar.load_conductances(converted, csv_path)
    with pytest.raises(MeasuredConductancesError, match="is a directory"):
        xbar.load_conductances(converted, directory, format="fusion")


def test_the_command_line_lists_the_formats_the_api_takes():
    assert cli_arguments.PROGRAM_FILE_FORMATS == FORMATS and FORMATS[0] == "xbar"

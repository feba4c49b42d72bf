"""The exported file evaluated in ONNX Runtime agrees with the PyTorch evaluation of the model it came from
under the README's parity rules: each zoo model's figure within one test sample noise-free, and, re-programmed
with seed s, what xbar.program / xbar.drift give with seed s."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_program_files import write_as_measured

import xbar
from xbar import (
    PCMLikeNoiseModel,
    accuracy_over_time,
    calibrate,
    convert,
    drift,
    evaluate_onnx,
    export_onnx,
    load_conductances,
    metric,
    onnx_accuracy_over_time,
    prepare,
    preset_config,
    program,
    score,
    write_programming_files,
)
from xbar.compiler.devices.arrays import array_copy, drift_arrays, program_arrays
from xbar.compiler.devices.evaluation import read_seed
from xbar.compiler.onnx.evaluation import _feeds, _file_feeds, file_arrays, reading_model, target_crossbars
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.compiler.program_files.onnx_file import import_measured
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained, load_text_split
from xbar.passes.errors import UserError
from xbar.passes.numerics.crossbar import crossbar_modules

from conftest import run


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def exported(name: str, digits, directory):
    """``name`` at the default preset, calibrated on 64 training images, converted and exported."""
    prepared = prepare(load_pretrained(name), (digits.train_x[:16],))
    calibrate(prepared, [digits.train_x[:64]])
    converted = convert(prepared)
    return converted, export_onnx(converted, (digits.test_x[:16],), directory / f"{name}.onnx")


@pytest.fixture(scope="module")
def lenet(digits, tmp_path_factory):
    return exported("lenet", digits, tmp_path_factory.mktemp("lenet"))


@pytest.mark.parametrize("name", sorted(DIGIT_CLASSIFIERS))
def test_each_digit_classifiers_file_scores_what_its_converted_model_scores(name, digits, tmp_path):
    converted, path = exported(name, digits, tmp_path)
    data = (digits.test_x, digits.test_y)
    expected = score(converted, *data, metric("accuracy"))
    assert abs(evaluate_onnx(path, data) - expected) <= 1 / len(digits.test_y)
    assert expected > 0.9


def test_the_language_models_file_scores_the_perplexity_of_its_converted_model(tmp_path):
    text = load_text_split()
    prepared = prepare(load_pretrained("charlm"), (text.test_x[:1],), preset_config("8bit"))
    calibrate(prepared, text.train_x[:256].split(64))
    converted = convert(prepared)
    path = export_onnx(converted, (text.test_x[:1],), tmp_path / "charlm.onnx")
    x, y = text.test_x[:16], text.test_y[:16]
    perplexity = metric("perplexity")
    got = evaluate_onnx(path, (x, y), perplexity)
    assert got == score(onnx_runner(path), x, y, perplexity)
    # 8-bit ADCs in a deep sequence model: the codes that flip between the runtimes' matmul orders travel on
    assert got == pytest.approx(score(converted, x, y, perplexity), rel=5e-3)


def test_the_reading_model_fed_the_files_own_values_computes_what_the_file_does(lenet, digits):
    _, path = lenet
    model = onnx.load(path)
    arrays = file_arrays(model)
    x = digits.test_x[:64].numpy()
    options = ort.SessionOptions()  # without the extended fusions, which fold the file's constant scales
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reading = ort.InferenceSession(reading_model(model, arrays).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = plain.get_inputs()[0].name
    np.testing.assert_array_equal(reading.run(None, {name: x} | _file_feeds(arrays))[0],
                                  plain.run(None, {name: x})[0])


@pytest.mark.parametrize("compensation", ["global", "per_column"])
def test_the_files_arrays_programmed_and_drifted_hold_what_program_and_drift_give(lenet, compensation):
    converted, path = lenet
    noise = PCMLikeNoiseModel()
    arrays = file_arrays(onnx.load(path))
    programmed = array_copy(target_crossbars(arrays))
    program_arrays(programmed, noise, torch.Generator().manual_seed(3))
    drift_arrays(programmed, noise, 86400.0, torch.Generator().manual_seed(read_seed(3, 86400.0)),
                 xbar.compiler.devices.arrays.DriftCompensation(compensation))
    feeds = _feeds(programmed, arrays)
    torch_drifted = drift(program(converted, noise, seed=3), 86400.0, seed=read_seed(3, 86400.0),
                          compensation=compensation)
    for name, crossbar in crossbar_modules(torch_drifted).items():
        np.testing.assert_array_equal(feeds[f"{name}.g_plus"], crossbar.g_plus.numpy())
        np.testing.assert_array_equal(feeds[f"{name}.g_minus"], crossbar.g_minus.numpy())
        constants = crossbar.settings.constants
        expected = constants["column_out_scale"] or (constants["out_scale"],)
        np.testing.assert_allclose(feeds[f"{name}.out_scale"], expected, rtol=1e-6)
    assert not np.array_equal(feeds[f"{name}.g_plus"], crossbar_modules(converted)[name].g_plus.numpy())


@pytest.mark.parametrize("compensation", ["global", None])
def test_re_programming_the_file_with_seed_s_scores_what_the_torch_path_scores_with_seed_s(lenet, digits,
                                                                                            compensation):
    converted, path = lenet
    times = {"1s": 1.0, "1y": 365 * 86400.0}
    x, y = digits.test_x, digits.test_y
    expected = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 3, x, y, compensation=compensation)
    got = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), times, 3, (x, y), compensation=compensation)
    assert got.seeds == expected.seeds and got.noise_model == expected.noise_model
    assert abs(got.ideal - expected.ideal) <= 1 / len(y)
    for ours, theirs in zip(got.points, expected.points):
        assert ours.read_seeds == theirs.read_seeds
        assert np.abs(np.subtract(ours.values, theirs.values)).max() <= 1 / len(y)
    assert len(set(got.points[0].values)) > 1  # the seeds program different devices
    assert got.points[1].mean != got.points[0].mean  # a year of drift shows


def test_a_measured_file_from_load_conductances_scores_what_the_measured_model_scores(lenet, digits, tmp_path):
    converted, path = lenet
    targets = write_programming_files(path, tmp_path / "prog")
    programmed = program(converted, PCMLikeNoiseModel(), seed=0)
    measured_dir = write_as_measured(targets, programmed, tmp_path / "measured")
    measured = load_conductances(path, measured_dir)
    assert isinstance(measured, onnx.ModelProto)
    data = (digits.test_x, digits.test_y)
    expected = score(load_conductances(converted, measured_dir), *data, metric("accuracy"))
    assert abs(evaluate_onnx(measured, data) - expected) <= 1 / len(digits.test_y)
    written = import_measured(path, measured_dir, tmp_path / "measured.onnx")
    assert onnx.load(written).SerializeToString() == measured.SerializeToString()  # import-measured writes it
    with pytest.raises(UserError, match="drop noise_model"):
        load_conductances(path, measured_dir, PCMLikeNoiseModel())
    with pytest.raises(UserError, match="holds measured conductances"):
        onnx_accuracy_over_time(measured, PCMLikeNoiseModel(), {"1s": 1.0}, 1, data)


def test_xbar_evaluate_of_the_file_reports_what_evaluate_onnx_gives(lenet, digits, capsys):
    _, path = lenet
    status, out, _ = run(capsys, "evaluate", str(path), "--json")
    assert status == 0
    report = json.loads(out)
    assert report["accuracy"] == evaluate_onnx(path, (digits.test_x, digits.test_y))
    assert report["data"] == {"name": "digits", "split": "test", "samples": len(digits.test_y)}
    status, out, _ = run(capsys, "evaluate", str(path), "--seeds", "2", "--times", "1s,1d", "--noise", "pcm",
                         "--json")
    assert status == 0
    report = json.loads(out)
    expected = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), {"1s": 1.0, "1d": 86400.0}, 2,
                                       (digits.test_x, digits.test_y))
    assert report["times"] == expected.as_dict()["times"]


def _plain_onnx(path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])])
    onnx.save(onnx.helper.make_model(graph), path)
    return path


def _newer(path, into):
    model = onnx.load(path)
    for entry in model.opset_import:
        if entry.domain == "ai.xbar":
            entry.version += 1
    onnx.save(model, into)
    return into


def _programmed(converted, digits, into):
    return export_onnx(program(converted, PCMLikeNoiseModel(), seed=0), (digits.test_x[:16],), into)


def _wrong_shape(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((4, 1, 6, 6), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    return path


CASES = {
    "no xbar metadata": (lambda lenet, digits, tmp: [str(_plain_onnx(tmp / "plain.onnx"))], "no xbar metadata"),
    "newer ai.xbar": (lambda lenet, digits, tmp: [str(_newer(lenet[1], tmp / "newer.onnx"))],
                      "upgrade xbar"),
    "data of another shape": (lambda lenet, digits, tmp: [str(lenet[1]), "--test", str(_wrong_shape(tmp))],
                              "takes samples shaped"),
    "no device model": (lambda lenet, digits, tmp: [str(lenet[1]), "--seeds", "2", "--plot", str(tmp / "p.png")],
                        "names no device model"),
    "programmed file to re-program": (lambda lenet, digits, tmp: [
        str(_programmed(lenet[0], digits, tmp / "programmed.onnx")), "--seeds", "2", "--noise", "pcm"],
        "holds programmed conductances"),
    "a compile option": (lambda lenet, digits, tmp: [str(lenet[1]), "--finetune", "2"], "--finetune does not apply"),
    "plot without times": (lambda lenet, digits, tmp: [str(lenet[1]), "--plot", str(tmp / "p.png")],
                           "--plot draws the metric over time"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_in_one_line_with_status_2_and_nothing_written(case, lenet, digits, tmp_path, capsys):
    make, message = CASES[case]
    argv = make(lenet, digits, tmp_path)
    before = set(tmp_path.iterdir())
    status, out, err = run(capsys, "evaluate", *argv)
    assert status == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""
    assert set(tmp_path.iterdir()) == before

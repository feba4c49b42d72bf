"""ONNX files with their initializers in a data file next to them (forced on a small model)."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx_parity import Exported

from xbar import calibrate, convert, export_onnx, prepare
from xbar.compiler.inspection.read import load_inspection
from xbar.compiler.onnx import files as onnx_files
from xbar.models import load_pretrained
from xbar.passes.errors import ExportError, InspectError

from conftest import NET, make_input, make_model, run


@pytest.fixture(scope="module")
def converted():
    x = make_input("mlp", 8)
    prepared = prepare(make_model("mlp"), (x,))
    calibrate(prepared, [x])
    return convert(prepared), x


def test_forced_external_data_runs_in_onnx_runtime_and_re_exports_byte_identically(converted, tmp_path):
    model, x = converted
    path = export_onnx(model, (x,), tmp_path / "mlp.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "mlp.onnx.data"]
    assert all(onnx.external_data_helper.uses_external_data(t) == (t.name.endswith((".g_plus", ".g_minus")))
               for t in onnx.load(str(path), load_external_data=False).graph.initializer)  # small biases inline
    session = ort.InferenceSession(str(path))
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(outputs, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    first = [(tmp_path / name).read_bytes() for name in ("mlp.onnx", "mlp.onnx.data")]
    export_onnx(model, (x,), tmp_path / "mlp.onnx", external_data=True)
    assert [(tmp_path / name).read_bytes() for name in ("mlp.onnx", "mlp.onnx.data")] == first
    assert [layer.node for layer in load_inspection(path).layers] == ["fc1_crossbar", "fc2_crossbar", "fc3_crossbar"]


def test_a_failed_export_leaves_neither_file(converted, tmp_path, monkeypatch):
    model, x = converted

    def refuse(*args, **kwargs):
        raise onnx.checker.ValidationError("refused")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(ExportError, match="refused"):
        export_onnx(model, (x,), tmp_path / "mlp.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_initializers_past_the_limit_go_to_a_data_file_unless_refused(converted, tmp_path, monkeypatch):
    model, x = converted
    monkeypatch.setattr(onnx_files, "LARGE_MODEL_BYTES", 1000)
    export_onnx(model, (x,), tmp_path / "auto.onnx")
    export_onnx(model, (x,), tmp_path / "one.onnx", external_data=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.onnx", "auto.onnx.data", "one.onnx"]


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_a_single_file_is_streamed_byte_identical_to_a_whole_proto_save(name, converted, tmp_path, monkeypatch):
    if name == "mlp":
        model, x = converted
    else:
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        prepared = prepare(load_pretrained(name), (x,))
        calibrate(prepared, [x])
        model = convert(prepared)
    whole = tmp_path / "whole.onnx"
    save_checked = onnx_files.save_checked

    def also_saved_whole(onnx_model, *args):
        ir.save(onnx_model, whole)  # the same in-memory model, serialised as one proto
        return save_checked(onnx_model, *args)

    monkeypatch.setattr(onnx_files, "save_checked", also_saved_whole)
    path = export_onnx(model, (x,), tmp_path / f"{name}.onnx", external_data=False)
    streamed = path.read_bytes()
    assert streamed == whole.read_bytes() == onnx.load(str(path)).SerializeToString()
    assert len(onnx.load(str(path)).graph.initializer) > 2
    exported = Exported(model, path)
    np.testing.assert_allclose(exported.run(x), exported.expected(x), rtol=1e-4, atol=1e-4)
    skeleton = onnx_files._save_streamed(ir.load(path), tmp_path / "again.onnx")  # what the checker reads
    assert (tmp_path / "again.onnx").read_bytes() == streamed
    external = {t.name for t in skeleton.graph.initializer if onnx.external_data_helper.uses_external_data(t)}
    assert all((t.name in external) == (len(t.raw_data) == 0) for t in skeleton.graph.initializer)
    large = {t.name for t in onnx.load(str(path)).graph.initializer if len(t.raw_data) > onnx_files.EXTERNAL_MIN_BYTES}
    assert large and external == large
    onnx.save(skeleton, tmp_path / "again.onnx.skeleton")
    session = ort.InferenceSession(str(tmp_path / "again.onnx.skeleton"))  # its tensors are the file's own bytes
    np.testing.assert_array_equal(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], exported.run(x))


def test_inspect_names_a_missing_data_file(converted, tmp_path):
    model, x = converted
    path = export_onnx(model, (x,), tmp_path / "mlp.onnx", external_data=True)
    (tmp_path / "mlp.onnx.data").unlink()
    with pytest.raises(InspectError, match="mlp.onnx.data, which is not next to it"):
        load_inspection(path)


def test_compile_external_data_names_both_files(workspace, capsys):
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--external-data", "-o", "net.onnx")
    assert status == 0, err
    assert "wrote net.onnx and net.onnx.data" in out
    status, out, err = run(capsys, "inspect", "net.onnx")
    assert status == 0, err
    assert "crossbar layer" in out


@pytest.mark.parametrize("name", ["lenet", "transformer"])
def test_external_data_on_a_zoo_model_with_reshapes_keeps_small_constants_inline(name, tmp_path):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    prepared = prepare(load_pretrained(name), (x,))
    calibrate(prepared, [x])
    model = convert(prepared)
    path = export_onnx(model, (x,), tmp_path / f"{name}.onnx", external_data=True)
    stored = onnx.load(str(path), load_external_data=False).graph.initializer
    external = {t.name for t in stored if onnx.external_data_helper.uses_external_data(t)}
    inline = [t for t in stored if t.name not in external]
    assert external and any(t.data_type == onnx.TensorProto.INT64 for t in inline)  # the shape constants
    assert all(len(t.SerializeToString()) < 2 * onnx_files.EXTERNAL_MIN_BYTES for t in inline)
    exported = Exported(model, path)
    np.testing.assert_allclose(exported.run(x), exported.expected(x), rtol=1e-4, atol=1e-4)

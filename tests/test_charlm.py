"""The zoo's language model end to end: its data, checkpoint, compilation, ONNX Runtime and perplexity over
time on PCM-like devices, scored with the shipped metrics."""

import dataclasses
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnxruntime.capi.onnxruntime_pybind11_state import Fail
from torch.export import Dim

from xbar import (
    HWA_FINE_TUNING,
    PCMLikeNoiseModel,
    calibrate,
    convert,
    drift,
    export_onnx,
    fine_tune,
    prepare,
    preset_config,
    program,
)
from xbar.compiler.devices.evaluation import accuracy_over_time, read_seed
from xbar.compiler.metrics import metric, score
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.compiler.pipeline import compiled as compiled_path
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.models import ZOO, load_pretrained, load_text_split
from xbar.models.text import SEQUENCE_LENGTH, TEST_MODULE, TRAIN_MODULES, module_bytes, windows

from conftest import run


@pytest.fixture(scope="module")
def text():
    return load_text_split()


@pytest.fixture(scope="module")
def prepared(text):
    """charlm at 8 bits, calibrated on 4 batches of training windows."""
    prepared = prepare(load_pretrained("charlm"), (text.test_x[:1],), preset_config("8bit"))
    calibrate(prepared, text.train_x[:256].split(64))
    return prepared


@pytest.fixture(scope="module")
def compiled(prepared, text):
    """The converted model and 16 held-out windows."""
    return convert(prepared), text.test_x[:16], text.test_y[:16]


def test_the_text_is_the_standard_librarys_source_with_a_held_out_module(text):
    assert TEST_MODULE not in TRAIN_MODULES
    assert torch.equal(text.train, torch.cat([module_bytes(m) for m in TRAIN_MODULES]))
    assert text.test_x.shape[1] == SEQUENCE_LENGTH and text.test_x.dtype == torch.int64
    held_out = module_bytes(TEST_MODULE)
    assert bytes(text.test_x[0].tolist()) == bytes(held_out[:SEQUENCE_LENGTH].tolist())
    assert torch.equal(text.test_y[:, :-1], text.test_x[:, 1:])  # the targets are the next bytes
    x, y = windows(torch.arange(11), 5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and y.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]


def test_the_checkpoint_is_small_and_has_learnt_the_held_out_text(text):
    assert ZOO["charlm"].checkpoint.stat().st_size < 1_000_000
    model = load_pretrained("charlm")
    with torch.no_grad():
        logits = model(text.test_x)
    assert logits.shape == (*text.test_x.shape, 256)
    nll = F.cross_entropy(logits.flatten(0, 1), text.test_y.flatten()).item()
    assert score(model, text.test_x, text.test_y, metric("perplexity")) == pytest.approx(math.exp(nll), rel=1e-5)
    assert math.exp(nll) < 9  # a uniform guess over the bytes has 256
    assert score(model, text.test_x, text.test_y, metric("next-token-accuracy")) > 0.4


@pytest.fixture(scope="module")
def exported(compiled, tmp_path_factory):
    """The converted model's ONNX file."""
    converted, x, _ = compiled
    return export_onnx(converted, (x[:1],), tmp_path_factory.mktemp("charlm") / "charlm.onnx")


def assert_same_predictions(ort: torch.Tensor, eager: torch.Tensor) -> None:
    """The README's parity rule at 8 bits: an ADC code one runtime rounds to its neighbour travels through the
    blocks, so logits may differ by some steps, but the next-token predictions agree."""
    assert ort.shape == eager.shape
    assert (ort.argmax(-1) == eager.argmax(-1)).float().mean() >= 0.99


def test_the_compiled_model_maps_every_projection_and_onnx_runtime_agrees(compiled, exported):
    converted, x, y = compiled
    with torch.no_grad():
        eager = converted(x)
    assert_same_predictions(onnx_runner(exported)(x), eager)
    perplexity = metric("perplexity")  # flipped codes move it on these 1024 tokens by a fraction of a percent
    assert score(onnx_runner(exported), x, y, perplexity) == pytest.approx(score(converted, x, y, perplexity), rel=5e-3)


LENGTHS = (SEQUENCE_LENGTH, 1, 23, 40)


def test_one_compiled_charlm_runs_every_length_up_to_its_position_table(prepared, compiled, exported, text,
                                                                         monkeypatch):
    """Eager, compiled and ONNX Runtime at each length as the model prepared at that length alone."""
    seq = record_of(prepared, "test", Stage.PREPARED).dynamic_shapes[0][1]
    assert (seq.__name__, seq.min, seq.max) == ("seq", 1, SEQUENCE_LENGTH)
    assert [d.dim_param for d in onnx.load(exported).graph.input[0].type.tensor_type.shape.dim] == ["batch", "seq"]
    converted = compiled[0]
    monkeypatch.setattr(compiled_path, "BACKEND", "aot_eager")
    run, ort = compiled_path.compiled(converted), onnx_runner(exported)
    for length in LENGTHS:
        x = text.test_x[:4, :length].contiguous()  # a strided slice would add a stride guard and compile again
        static = prepare(load_pretrained("charlm"), (x,), preset_config("8bit"), dynamic_shapes=({0: Dim("batch")},))
        static.load_state_dict(prepared.state_dict())
        with torch.no_grad():
            assert torch.equal(prepared(x), static(x))
            expected = convert(static)(x)
            assert torch.equal(converted(x), expected) and torch.equal(run(x), expected)
        assert_same_predictions(ort(x), expected)
    with pytest.raises(Fail, match=f"{SEQUENCE_LENGTH} by {SEQUENCE_LENGTH + 1}"):  # past the position table
        ort(module_bytes(TEST_MODULE)[: SEQUENCE_LENGTH + 1].unsqueeze(0))


def test_perplexity_over_time_is_what_program_and_drift_give(compiled):
    converted, x, y = compiled
    times = {"1s": 1.0, "1y": 365 * 86400.0}
    evaluation = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 2, x, y, metric=metric("perplexity"))
    assert evaluation.metric.name == "perplexity"
    for point in evaluation.points:
        expected = []
        for seed in (0, 1):
            drifted = drift(program(converted, PCMLikeNoiseModel(), seed=seed), point.seconds,
                            seed=read_seed(seed, point.seconds))
            with torch.no_grad():
                expected.append(math.exp(F.cross_entropy(drifted(x).flatten(0, 1).double(), y.flatten()).item()))
        assert point.values == pytest.approx(expected, rel=1e-9)
    report = evaluation.as_dict()
    assert report["metric"] == "perplexity" and "ideal_perplexity" in report
    assert report["times"][0]["perplexities"] == list(evaluation.points[0].values)


def next_token_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.flatten(0, 1), targets.flatten())


def test_hardware_aware_fine_tuning_takes_the_language_models_loss(text):
    prepared = prepare(load_pretrained("charlm"), (text.test_x[:1],), preset_config("hwa"))
    before = {name: p.detach().clone() for name, p in prepared.named_parameters()}
    losses = []
    recipe = dataclasses.replace(HWA_FINE_TUNING, epochs=1, batch_size=8)
    fine_tune(prepared, text.train_x[:16], text.train_y[:16], recipe, loss=next_token_loss, on_step=losses.append)
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(before[name], p) for name, p in prepared.named_parameters())


def test_xbar_evaluate_scores_charlm_by_perplexity_on_test_data(workspace, capsys, text):
    np.savez(workspace / "held_out.npz", x=text.test_x[:8].numpy(), y=text.test_y[:8].numpy())
    status, out, err = run(capsys, "evaluate", "charlm", "--test", "held_out.npz", "--seeds", "1", "--times", "1s",
                           "--calib-batches", "1")
    assert status == 0, err
    assert "charlm: perplexity on the 8 labelled test samples of held_out.npz, 1 programming seed" in out
    ideal = next(line for line in out.splitlines() if line.startswith("│ ideal"))
    assert float(ideal.split("│")[3]) > 1

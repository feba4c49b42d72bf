"""The compiled path: converted and prepared models under torch.compile(fullgraph=True).

Most properties (whole graphs, recompiles, the public switches) do not depend on
code generation and use the ``eager`` / ``aot_eager`` backends, which need no
C++ compiler and are fast; one test runs inductor, where rounding can flip.
"""

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from xbar import FineTuning, PCMLikeNoiseModel, accuracy_over_time, calibrate, convert, fine_tune, prepare, program
from xbar.compiler.onnx.runtime import onnx_runner
from xbar.compiler.pipeline import compiled as compiled_path
from xbar.models.zoo import DIGIT_CLASSIFIERS, load_pretrained
from xbar.passes.numerics.crossbar import Crossbar, crossbar_modules
from xbar.passes.numerics.input_range import InputRange

from conftest import WEIGHTS, eight_bit, make_input, make_model, run


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager(monkeypatch):
    """The public switches compile with aot_eager (forward and backward graphs, no code generation)."""
    monkeypatch.setattr(compiled_path, "BACKEND", "aot_eager")


def built(name: str, batch: int = 8):
    """A prepared model (ranges still initialising from data) and the conversion of a calibrated copy."""
    x = make_input(name, batch)
    prepared = prepare(make_model(name), (x[:2],), eight_bit())
    calibrated = copy.deepcopy(prepared)
    calibrate(calibrated, [make_input(name, 8, seed=s) for s in range(3)])
    return prepared, convert(calibrated), x


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("name", sorted(DIGIT_CLASSIFIERS))
def test_every_zoo_model_traces_whole_converted_and_prepared(name):
    model, x = load_pretrained(name), torch.rand(4, 1, 8, 8)
    prepared = prepare(model, (x[:2],), eight_bit())
    converted = convert(prepared)
    with torch.no_grad():
        assert torch.equal(torch.compile(converted, fullgraph=True, backend="eager")(x), converted(x))
    prepared.train()
    torch.compile(prepared, fullgraph=True, backend="eager")(x).sum().backward()  # a graph break would raise


def test_an_array_derives_its_adc_weight_on_first_read_and_a_graph_of_an_unread_one_derives_it_too():
    _, converted, x = built("cnn")
    arrays = crossbar_modules(converted)
    assert all(a.compiled_weight is None for a in arrays.values())  # conductances alone until read
    with torch.no_grad():
        in_graph = torch.compile(converted, fullgraph=True, backend="eager")(x)
        assert all(a.compiled_weight is None for a in arrays.values())
        eager = converted(x)
    assert all(a.compiled_weight is not None for a in arrays.values())
    assert torch.equal(in_graph, eager)


def test_converted_model_is_exact_under_aot_eager():
    _, converted, x = built("cnn")
    with torch.no_grad():
        assert torch.equal(torch.compile(converted, fullgraph=True, backend="aot_eager")(x), converted(x))


def test_training_step_matches_eager_including_range_gradients_and_init_from_data():
    prepared, _, x = built("cnn")
    eager, fast = prepared.train(), copy.deepcopy(prepared).train()
    run = torch.compile(fast, fullgraph=True, backend="aot_eager")
    y = torch.randint(0, 10, (len(x),))
    for step in range(3):  # the ranges initialise from data at every step
        batch = x + 0.1 * step
        F.cross_entropy(eager(batch), y).backward()
        F.cross_entropy(run(batch), y).backward()
    for (name, a), (_, b) in zip(eager.named_parameters(), fast.named_parameters()):
        assert torch.equal(a, b), name
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6), name
    ranges = [(a, b) for a, b in zip(eager.modules(), fast.modules()) if isinstance(a, InputRange)]
    assert ranges and all(int(a.init_batches) == int(b.init_batches) == 3 for a, b in ranges)
    assert any(a.value.grad != 0 for a, _ in ranges)


def test_output_clipping_feedback_traces_whole_and_matches_eager():
    """The ADC reads its range's batch statistics (a module attribute): one graph, eager's gradients."""
    config = eight_bit().with_overrides({"forward.out_bound": 0.5, "pre_post.input_range.manage_output_clipping": True,
                                         "pre_post.input_range.output_min_percentage": 0.99})
    x = make_input("mlp", 8)
    eager = prepare(make_model("mlp"), (x[:2],), config).train()
    fast = copy.deepcopy(eager)
    F.cross_entropy(eager(x), torch.arange(8)).backward()
    F.cross_entropy(torch.compile(fast, fullgraph=True, backend="aot_eager")(x), torch.arange(8)).backward()
    ranges = [(a, b) for a, b in zip(eager.modules(), fast.modules()) if isinstance(a, InputRange)]
    assert ranges and any(float(a.value.grad) < 0 for a, _ in ranges)  # the ADC clipped: the range grows
    for a, b in ranges:
        assert torch.allclose(a.value.grad, b.value.grad, rtol=1e-5, atol=1e-6)


def test_same_shape_never_recompiles_and_a_new_batch_size_compiles_at_most_once(aot_eager):
    prepared, converted, _ = built("mlp")
    run = compiled_path.compiled(converted)
    with torch.no_grad():
        run(make_input("mlp", 4))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for batch in (4, 7, 4, 3, 7):  # the batch dimension is dynamic from the first call
                run(make_input("mlp", batch))
    assert graphs() == 1
    counters.clear()
    plain = torch.compile(converted, fullgraph=True, backend="aot_eager")  # torch's own automatic dynamic
    with torch.no_grad():
        for batch in (4, 4, 6, 5, 6, 4):
            plain(make_input("mlp", batch))
    assert graphs() <= 2


def test_compiled_model_follows_programming_and_loading(aot_eager):
    _, converted, x = built("mlp")
    programmed = program(converted, PCMLikeNoiseModel(), seed=0)
    run = compiled_path.compiled(programmed)
    with torch.no_grad():
        assert torch.equal(run(x), programmed(x))
        programmed.load_state_dict(converted.state_dict(), strict=False)  # back to the targets, in place
        assert torch.equal(run(x), converted(x))
        for crossbar in crossbar_modules(programmed).values():  # edited in place, new gains
            crossbar.g_plus.mul_(0.5)
            crossbar.settings = dataclasses.replace(crossbar.settings, drift_gain=2.0)
        assert torch.equal(run(x), programmed(x)) and not torch.equal(run(x), converted(x))
    assert graphs() == 1


def test_inductor_matches_eager_up_to_rare_single_step_flips():
    if compiled_path.inductor_unavailable():
        pytest.skip("no C++ compiler for inductor")
    _, converted, x = built("mlp", batch=64)
    step = [m for m in converted.modules() if isinstance(m, Crossbar)][-1].settings.constants["out_scale"]
    with torch.no_grad():
        difference = (torch.compile(converted, fullgraph=True)(x) - converted(x)).abs() / step
    assert (difference > 0.5).float().mean() <= 0.01
    assert difference.max() <= 1.5


def test_public_switches_give_the_eager_results(aot_eager):
    data = make_input("mlp", 96)
    labels = torch.randint(0, 10, (96,))
    eager = prepare(make_model("mlp"), (data[:2],), eight_bit())
    fast = copy.deepcopy(eager)
    assert calibrate(eager, data.split(32)) == calibrate(fast, data.split(32), compile=True)
    recipe = FineTuning(epochs=1, batch_size=40)  # a smaller last batch
    fine_tune(eager, data, labels, recipe)
    fine_tune(fast, data, labels, recipe, compile=True)
    for (name, a), (_, b) in zip(eager.named_parameters(), fast.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    counters.clear()
    converted = convert(eager)
    times = {"1h": 3600.0, "1d": 86400.0}
    expected = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 2, data, labels, compensation="per_column")
    got = accuracy_over_time(converted, PCMLikeNoiseModel(), times, 2, data, labels, compensation="per_column",
                             compile=True)
    assert got == expected
    assert graphs() == 1  # four drifted models and the ideal one through one graph


def test_compile_on_the_command_line_writes_the_eager_model(aot_eager, workspace, capsys):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32))
    np.savez(workspace / "labelled.npz", x=x.numpy(), y=np.arange(24) % 3)
    common = ["compile", "net.py:make_net", *WEIGHTS, "--calib", "labelled.npz", "--finetune", "1", "--batch-size", "8"]
    for extra, output in (([], "eager.onnx"), (["--compile"], "compiled.onnx")):
        status, out, err = run(capsys, *common, *extra, "-o", output)
        assert status == 0, err
    assert graphs() >= 2  # calibration (eval) and fine-tuning (training) went through the compiler
    eager, compiled = onnx_runner(workspace / "eager.onnx")(x), onnx_runner(workspace / "compiled.onnx")(x)
    assert torch.allclose(eager, compiled, rtol=1e-4, atol=1e-4)


def test_without_a_cxx_compiler_the_switch_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/xbar-test-c++",))
    assert "no working C++ compiler" in compiled_path.inductor_unavailable()
    prepared, _, x = built("mlp", batch=16)
    expected = copy.deepcopy(prepared)
    labels = torch.randint(0, 10, (16,))
    recipe = FineTuning(epochs=2, batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fine_tune(prepared, x, labels, recipe, compile=True)
    assert [w.category for w in caught] == [compiled_path.CompileUnavailableWarning]
    fine_tune(expected, x, labels, recipe)
    assert all(torch.equal(a, b) for a, b in zip(prepared.parameters(), expected.parameters()))
    assert graphs() == 0


def test_an_initialised_range_compiles_without_its_initialisation(aot_eager):
    prepared, _, x = built("mlp")
    ranges = [m for m in prepared.modules() if isinstance(m, InputRange)]
    for module in ranges:
        module.init_batches.fill_(module.params.init_from_data)  # as a finished calibration leaves it
    values = [module.value.detach().clone() for module in ranges]
    run = compiled_path.compiled(prepared.train())
    run(100 * x).sum().backward()  # reads the counters before the call, so before compiling
    assert all(module.initialised for module in ranges)
    assert all(torch.equal(module.value, value) for module, value in zip(ranges, values))

"""The library refuses misuse with one UserError that says what to pass, and stays quiet otherwise."""

import warnings

import pytest
import torch
from torch import nn

from xbar import (
    FineTuning,
    HardwareConfig,
    LayerRule,
    UnmatchedSelectorWarning,
    UserError,
    calibrate,
    compile_model,
    convert,
    fine_tune,
    prepare,
)
from xbar.passes.errors import CaptureError, DataError, ModelError

from conftest import make_input, make_model


class DataDependent(nn.Module):
    """torch.export cannot trace a branch on the data."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


def test_example_inputs_must_be_a_tuple():
    with pytest.raises(UserError, match=r"as a tuple, e.g. prepare\(model, \(x,\), config\); got a Tensor"):
        prepare(make_model("mlp"), make_input("mlp", 2))


def test_one_tensor_is_not_an_iterable_of_batches():
    x = make_input("mlp", 8)
    with pytest.raises(UserError, match=r"compile_model\(calibration_data=...\) takes an iterable of batches"):
        compile_model(make_model("mlp"), (x,), calibration_data=x)
    prepared = prepare(make_model("mlp"), (x,))
    with pytest.raises(UserError, match=r"calibrate\(\) takes an iterable of batches.*x.split\(64\)"):
        calibrate(prepared, x)


def test_convert_and_calibrate_need_what_prepare_returned():
    model = make_model("mlp")
    with pytest.raises(UserError, match=r"convert\(\) expects the GraphModule returned by xbar.prepare\(\)"):
        convert(model)
    with pytest.raises(UserError, match=r"calibrate\(\) expects the GraphModule returned by xbar.prepare\(\)"):
        calibrate(torch.fx.symbolic_trace(model), [make_input("mlp", 4)])
    converted = convert(prepare(model, (make_input("mlp", 2),)))
    with pytest.raises(UserError, match="already converted"):
        calibrate(converted, [make_input("mlp", 4)])


@pytest.mark.parametrize("method", ["InitFromData", "Max", "MovingQuantile"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_data_is_refused_naming_the_batch(method, bad):
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),))
    before = prepared.fc1_input_range.value.item()
    batches = [make_input("mlp", 4, seed=s) for s in range(3)]
    batches[2][1, 3] = bad
    with pytest.raises(UserError, match="calibration batch 2 holds NaN or infinite values"):
        calibrate(prepared, batches, method)
    assert not prepared.training
    if method != "InitFromData":  # post-training methods set ranges only after the last batch
        assert prepared.fc1_input_range.value.item() == before


def test_module_types_may_be_spelled_as_in_pytorch():
    x = make_input("cnn", 2)
    for spelling in (nn.Linear, "Linear", "nn.Linear", "torch.nn.Linear", "torch.nn.modules.linear.Linear"):
        prepared = prepare(make_model("cnn"), (x,), include=[spelling])
        assert [n for n in dict(prepared.named_children()) if n.endswith("_input_range")] == ["fc_input_range"]


def test_selectors_that_match_nothing_are_warned_about():
    x = make_input("mlp", 2)
    config = HardwareConfig(layers=[LayerRule(name="fc9", overrides={"forward.out_bound": 5.0})])
    with pytest.warns(UnmatchedSelectorWarning) as caught:
        prepare(make_model("mlp"), (x,), config, exclude=["decoder.*"])
    messages = sorted(str(w.message) for w in caught)
    assert messages[0].startswith("exclude pattern 'decoder.*' matches no crossbar layer of the model (fc1, fc2, fc3)")
    assert messages[1].startswith("layer rule name=fc9 matches no crossbar layer")


def test_a_selection_that_leaves_every_layer_digital_is_refused():
    with pytest.raises(UserError, match=r"leave all 3 crossbar layers \(fc1, fc2, fc3\) digital"), \
            pytest.warns(UnmatchedSelectorWarning, match="include pattern 'Conv2d'"):
        prepare(make_model("mlp"), (make_input("mlp", 2),), include=["Conv2d"])


def test_the_pipeline_warns_about_nothing_on_a_plain_model():
    x = make_input("cnn", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = prepare(make_model("cnn"), (x,))
        calibrate(prepared, [x])
        convert(prepared)


def test_a_capture_failure_is_one_error_and_no_torch_output(capfd):
    with pytest.raises(CaptureError, match="with export: .* Try capture_method='symbolic_trace'") as caught:
        prepare(DataDependent(), (torch.randn(2, 4),))
    assert len(str(caught.value).splitlines()) == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("capture_method", ["export", "symbolic_trace"])
def test_non_finite_weights_are_refused_at_prepare_naming_the_parameter(bad, capture_method):
    model = make_model("mlp")
    with torch.no_grad():
        model.fc2.weight[0, 1] = bad
    with pytest.raises(ModelError, match=r"parameter 'fc2.weight' holds 1 NaN or infinite value; fix"):
        prepare(model, (make_input("mlp", 2),), capture_method=capture_method)


@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_fine_tune_refuses_non_finite_data_naming_the_sample_and_leaves_the_model_as_it_was(where):
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),))
    before = {name: tensor.clone() for name, tensor in prepared.state_dict().items()}
    inputs, targets = make_input("mlp", 16), torch.randn(16, 10)
    (inputs if where == "inputs" else targets)[5, 2] = float("nan")
    with pytest.raises(DataError, match=f"fine_tune {where}: sample 5 holds NaN or infinite values"):
        fine_tune(prepared, inputs, targets, FineTuning(epochs=1, batch_size=8), loss=torch.nn.functional.mse_loss)
    assert all(torch.equal(before[name], tensor) for name, tensor in prepared.state_dict().items())

"""prepare -> calibrate -> convert on real captures of the shared test models."""


import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from xbar import (
    FineTuning,
    HardwareConfig,
    NoCrossbarLayersWarning,
    UserError,
    calibrate,
    convert,
    export_onnx,
    fine_tune,
    prepare,
)
from xbar.passes.errors import PassError
from xbar.passes.numerics.crossbar import Crossbar
from xbar.passes.numerics.input_range import InputRange

from conftest import SharedLayer, eight_bit, make_input, make_model

NO_CLIP = {"pre_post.input_range.init_value": 1e6, "pre_post.input_range.init_from_data": 0}


def calibrated(name, config, batches=4, **options):
    model = make_model(name)
    prepared = prepare(model, (make_input(name, 4),), config, **options)
    calibrate(prepared, [make_input(name, 32, seed=s) for s in range(batches)])
    return model, prepared, convert(prepared)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_ideal_periphery_reproduces_the_original(model_name, method):
    model = make_model(model_name)
    config = HardwareConfig().with_overrides(NO_CLIP)
    prepared = prepare(model, (make_input(model_name, 4),), config, capture_method=method)
    converted = convert(prepared)
    x = make_input(model_name, 9)
    expected = model(x).detach()
    scale = float(expected.abs().max())
    assert torch.allclose(prepared(x), expected, atol=1e-5 * scale)
    assert torch.allclose(converted(x), expected, atol=1e-5 * scale)


def test_dac_adc_prepared_and_converted_agree(model_name):
    _, prepared, converted = calibrated(model_name, eight_bit())
    x = make_input(model_name, 64, seed=7)
    a, b = prepared(x).detach(), converted(x).detach()
    scale = float(a.abs().max())
    differs = (a - b).abs() > 1e-5 * scale
    # float reordering can move a value across a rounding boundary: rare, and small
    assert differs.float().mean() < 0.02
    assert float((a - b).abs().max()) < 0.05 * scale


def test_a_training_step_reaches_every_range_and_weight(model_name):
    # 8-bit periphery with some inputs clipped and the decay and output-clipping terms on
    config = eight_bit().with_overrides({"pre_post.input_range.manage_output_clipping": True})
    _, prepared, _ = calibrated(model_name, config)
    for module in prepared.modules():
        if isinstance(module, InputRange):
            module.value.data.mul_(0.5)
    prepared.train()
    prepared(make_input(model_name, 16, seed=5)).square().mean().backward()
    grads = {n: p.grad for n, p in prepared.named_parameters()}
    ranges = [g for n, g in grads.items() if n.endswith("_input_range.value")]
    assert ranges and all(g is not None and torch.isfinite(g).all() and g.abs() > 0 for g in ranges)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_clipping_changes_outputs_only_through_the_range(model_name):
    model, prepared, converted = calibrated(model_name, HardwareConfig())
    x = make_input(model_name, 16)
    ranges = {n: m.value.item() for n, m in prepared.named_children() if n.endswith("_input_range")}
    assert ranges and all(r > 0 for r in ranges.values())
    assert torch.allclose(prepared(x), converted(x), atol=1e-5 * model(x).abs().max().item())


def test_conductances_convert_back_to_the_weights(model_name):
    model, _, converted = calibrated(model_name, eight_bit())
    weights = dict(model.named_parameters())
    crossbars = [m for m in converted.modules() if isinstance(m, Crossbar)]
    assert crossbars
    converter = eight_bit().converter
    for crossbar in crossbars:
        recovered = converter.convert_back_to_weights([crossbar.g_plus, crossbar.g_minus],
                                                      {"scale_ratio": crossbar.settings.scale_ratio})
        original = weights[crossbar.source_weight].detach()
        assert torch.allclose(recovered, original, atol=1e-6 * float(original.abs().max()))
        assert float(crossbar.g_plus.min()) >= 0 and float(crossbar.g_plus.max()) <= 25.0 + 1e-5


def test_prepared_graph_reads_like_the_hardware():
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),), eight_bit())
    names = [n.name for n in prepared.graph.nodes if n.name.startswith("fc1_")]
    assert names == ["fc1_weight", "fc1_bias", "fc1_input_range", "fc1_input_range_value", "fc1_normalize",
                     "fc1_dac", "fc1_mvm", "fc1_adc", "fc1_rescale", "fc1_add_bias"]
    converted = convert(prepared)
    assert [n.name for n in converted.graph.nodes if n.op == "call_module" and n.name != "_guards_fn"] == \
        ["fc1_crossbar", "fc2_crossbar", "fc3_crossbar"]
    assert not any(name.endswith("weight") for name, _ in converted.named_parameters())


class ItemAssignment(nn.Module):
    """symbolic_trace fails on item assignment ('Proxy' object does not support it)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc1(x)
        h[:, :2] = 0.0
        return self.fc2(h)


def test_pipeline_runs_on_models_only_torch_export_traces():
    model = ItemAssignment().eval()
    x = torch.randn(5, 6)
    with pytest.raises(Exception, match="symbolic_trace.*Try capture_method='export'"):
        prepare(model, (x,), capture_method="symbolic_trace")
    prepared = prepare(model, (x,), HardwareConfig().with_overrides(NO_CLIP))
    assert torch.allclose(convert(prepared)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_a_shared_weight_is_one_crossbar(method):
    model = SharedLayer().eval()
    x = torch.randn(3, 4)
    converted = convert(prepare(model, (x,), HardwareConfig().with_overrides(NO_CLIP), capture_method=method))
    assert [n for n, m in converted.named_modules() if isinstance(m, Crossbar)] == ["fc_crossbar"]
    assert sum(n.op == "call_module" and n.target == "fc_crossbar" for n in converted.graph.nodes) == 2
    assert torch.allclose(converted(x), model(x), atol=1e-5)


def test_a_name_clash_is_reported_by_the_pass():
    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.fc_mvm = nn.ReLU()

        def forward(self, x):
            return self.fc_mvm(self.fc(x))

    with pytest.raises(PassError, match="IsolateCrossbarLayersPass.*renamed"):
        prepare(Clash(), (torch.randn(2, 4),), capture_method="symbolic_trace")


def test_no_crossbar_layer_warns_and_keeps_the_model():
    model = nn.Sequential(nn.ReLU(), nn.Tanh())
    with pytest.warns(NoCrossbarLayersWarning, match="stays digital"):
        prepared = prepare(model, (torch.randn(2, 3),))
    x = torch.randn(4, 3)
    assert torch.equal(convert(prepared)(x), model(x))


def test_calibration_sets_ranges_from_data():
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),))
    batches = [make_input("mlp", 64, seed=s) for s in range(3)]
    assert calibrate(prepared, batches) == 3
    expected = 3.0 * sum(float(b.std()) for b in batches) / 3
    assert prepared.fc1_input_range.value.item() == pytest.approx(expected, rel=1e-5)
    assert int(prepared.fc1_input_range.init_batches) == 3
    assert not prepared.training


def test_output_clipping_feeds_back_into_the_range():
    def range_grad(manage):
        config = HardwareConfig().with_overrides({
            "forward.out_bound": 0.05, "pre_post.input_range.decay": 0.0,
            "pre_post.input_range.init_from_data": 0,
            "pre_post.input_range.manage_output_clipping": manage})
        prepared = prepare(make_model("mlp"), (make_input("mlp", 2),), config).train()
        prepared(make_input("mlp", 32)).sum().backward()
        return prepared.fc1_input_range.value.grad.item()

    # nearly every ADC output clips at this bound: the range is pushed up by about (1 - 0) * r = 3
    assert range_grad(True) - range_grad(False) == pytest.approx(-3.0, rel=0.1)


def test_fine_tuning_moves_ranges_and_lowers_the_loss():
    from xbar.models import load_digits_split, load_pretrained

    data = load_digits_split()
    prepared = prepare(load_pretrained("mlp"), (data.train_x[:2],), eight_bit())
    calibrate(prepared, data.train_x[:640].split(64))
    before = {n: m.value.item() for n, m in prepared.named_children() if n.endswith("_input_range")}
    x, y = data.train_x[:256], data.train_y[:256]
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        initial = float(loss_fn(prepared.eval()(x), y))
    losses = []
    tuned = fine_tune(prepared, x, y, FineTuning(epochs=3, batch_size=32), on_step=losses.append)
    with torch.no_grad():
        final = float(loss_fn(tuned(x), y))
    after = {n: m.value.item() for n, m in prepared.named_children() if n.endswith("_input_range")}
    assert tuned is prepared and not prepared.training
    assert len(losses) == 3 * 8
    assert all(abs(after[n] - before[n]) > 1e-3 for n in before)
    assert final < initial


def test_fine_tuning_refuses_mismatched_data():
    prepared = prepare(make_model("mlp"), (make_input("mlp", 2),))
    with pytest.raises(ValueError, match="5 inputs but 4 targets"):
        fine_tune(prepared, make_input("mlp", 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs >= 1"):
        FineTuning(epochs=0)


class DictInput(torch.nn.Module):
    """A forward that takes a dict of tensors, one of them nested in a tuple."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.gate = torch.nn.Linear(6, 4)

    def forward(self, inputs):
        image, (mask,) = inputs["image"], inputs["extra"]
        return self.fc(image) * torch.sigmoid(self.gate(mask))


def dict_batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 6, generator=g), "extra": (torch.randn(n, 6, generator=g),)}


def test_a_model_taking_a_dict_prepares_with_export_and_calibrates_on_dict_batches():
    batch = dict_batch
    model = DictInput().eval()
    prepared = prepare(model, (batch(1, 0),), capture_method="export")
    assert calibrate(prepared, [batch(5, 1), batch(3, 2)]) == 2  # batch sizes other than the example's
    x = batch(7, 3)
    assert prepared(x).shape == (7, 4)
    bad = batch(4, 4)
    bad["extra"][0][0, 0] = float("nan")
    with pytest.raises(UserError, match="calibration batch 0 holds NaN"):
        calibrate(prepared, [bad])


def test_a_model_taking_a_dict_exports_and_onnx_runtime_runs_its_flattened_inputs(tmp_path):
    prepared = prepare(DictInput().eval(), (dict_batch(2, 0),), HardwareConfig(), capture_method="export")
    calibrate(prepared, [dict_batch(8, 1)])
    converted = convert(prepared)
    export_onnx(converted, (dict_batch(2, 0),), tmp_path / "dict.onnx")
    session = ort.InferenceSession(str(tmp_path / "dict.onnx"), providers=["CPUExecutionProvider"])
    x = dict_batch(5, 2)  # another batch size: the dimension stays dynamic
    feeds = dict(zip([i.name for i in session.get_inputs()], [x["image"].numpy(), x["extra"][0].numpy()]))
    assert list(feeds) == ["inputs_image", "inputs_extra_0"]
    with torch.no_grad():
        expected = converted(x).numpy()
    got = session.run(None, feeds)[0]
    assert got.shape == (5, 4)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()  # no DAC / ADC: float tolerance


def test_share_weights_prepares_on_the_models_own_tensors_and_converts_alike(model_name):
    model, x = make_model(model_name).train(), make_input(model_name, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied, shared = (prepare(model, (x[:4],), eight_bit(), share_weights=s) for s in (False, True))
    own = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert own <= {t.data_ptr() for t in [*shared.parameters(), *shared.buffers()]}
    assert not own & {t.data_ptr() for t in [*copied.parameters(), *copied.buffers()]}
    for prepared in (copied, shared):
        calibrate(prepared, [make_input(model_name, 32, seed=1)])
    with torch.no_grad():
        assert torch.equal(convert(shared)(x), convert(copied)(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # read, never written
    assert model.training  # the model's modules are copies: its mode is its own


def test_training_a_model_prepared_with_share_weights_trains_the_models_tensors():
    model, x = make_model("mlp"), make_input("mlp", 16)
    weight = next(model.parameters())
    start = weight.detach().clone()
    prepared = prepare(model, (x[:4],), eight_bit(), share_weights=True).train()
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    prepared(x).square().sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), start)

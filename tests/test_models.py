"""Tests for the model zoo: checkpoints, accuracy, traceability (fx + export) and data split."""

import dataclasses

import pytest
import torch
from torch import nn

from xbar import accuracy, models
from xbar.models import DIGIT_CLASSIFIERS, ZOO, load_digits_split, load_pretrained
from xbar.models.train import save_atomic, train_model

THRESHOLDS = {"mlp": 0.96, "lenet": 0.96, "resnet": 0.96, "transformer": 0.93}
NAMES = list(DIGIT_CLASSIFIERS)


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


def test_registry():
    assert NAMES == ["mlp", "lenet", "resnet", "transformer"]
    assert list(ZOO) == [*NAMES, "charlm"]
    for name, entry in ZOO.items():
        assert entry.name == name
        assert entry.checkpoint == models.zoo.CHECKPOINT_DIR / f"{name}.pt"
        assert entry.input_shape == ((1, 1, 8, 8) if name in NAMES else (1, 64))
        task = ("digits", "accuracy") if name in NAMES else ("pysource", "perplexity")
        assert (entry.dataset, entry.metric) == task
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.name = "other"


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_and_is_accurate(name, data):
    entry = ZOO[name]
    assert entry.checkpoint.stat().st_size < 1_000_000
    model = entry.factory()
    model.load_state_dict(torch.load(entry.checkpoint, weights_only=True))  # strict
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(entry.input_shape)).shape == (1, 10)
        assert model(data.test_x[:7]).shape == (7, 10)
    assert accuracy(model, data.test_x, data.test_y) > THRESHOLDS[name]


@pytest.mark.parametrize("name", NAMES)
def test_load_pretrained(name):
    model = load_pretrained(name)
    assert isinstance(model, ZOO[name].factory)
    assert not model.training


def test_load_pretrained_unknown_name():
    with pytest.raises(ValueError) as err:
        load_pretrained("vgg")
    assert all(name in str(err.value) for name in NAMES)


def test_load_pretrained_missing_checkpoint(monkeypatch, tmp_path):
    entry = dataclasses.replace(ZOO["mlp"], checkpoint=tmp_path / "mlp.pt")
    monkeypatch.setitem(ZOO, "mlp", entry)
    with pytest.raises(FileNotFoundError, match="python -m xbar.models.train"):
        load_pretrained("mlp")


@pytest.mark.parametrize("name", NAMES)
def test_fx_symbolic_trace_matches_eager(name, data):
    model = load_pretrained(name)
    traced = torch.fx.symbolic_trace(model)
    x = data.test_x[:16]
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_export_dynamic_batch_matches_eager(name, data):
    model = load_pretrained(name)
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(model, (data.test_x[:4],), dynamic_shapes=({0: batch},)).module()
    with torch.no_grad():
        for n in (1, 5, 64):  # batch sizes other than the example's: no specialisation
            x = data.test_x[:n]
            torch.testing.assert_close(exported(x), model(x), rtol=0, atol=0)


def test_resnet_structure_and_export_graph():
    """ResNet has grouped + depthwise convs and BN; in eval mode export keeps conv2d with weights as get_attr."""
    model = load_pretrained("resnet")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(1 < c.groups < c.in_channels for c in convs)
    assert any(c.groups == c.in_channels > 1 for c in convs)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) < 50_000

    graph = torch.export.export(model, (torch.rand(2, 1, 8, 8),)).module().graph
    conv_nodes = [n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert len(conv_nodes) == len(convs)
    assert all(n.args[1].op == "get_attr" for n in conv_nodes)
    bn_nodes = [n for n in graph.nodes if n.target == torch.ops.aten.batch_norm.default]
    assert bn_nodes and all(n.args[5] is False for n in bn_nodes)  # training=False: uses running stats


def test_transformer_uses_explicit_attention():
    model = load_pretrained("transformer")
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "out_proj", "head"} <= names
    assert isinstance(model.pos_embed, nn.Parameter)


def test_data_split_deterministic_and_disjoint():
    a, b = load_digits_split(), load_digits_split()
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.train_x.shape == (1347, 1, 8, 8) and a.test_x.shape == (450, 1, 8, 8)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert 0 <= a.train_x.min() and a.train_x.max() <= 1
    # The digits dataset has no duplicate images, so disjoint rows means disjoint samples.
    rows = lambda x: {bytes(r.numpy()) for r in x.flatten(1)}  # noqa: E731
    train_rows, test_rows = rows(a.train_x), rows(a.test_x)
    assert not train_rows & test_rows
    assert len(train_rows | test_rows) == 1797
    test_counts = torch.bincount(a.test_y, minlength=10)
    totals = test_counts + torch.bincount(a.train_y, minlength=10)
    assert ((test_counts - totals * 0.25).abs() <= 1).all()  # stratified 25% per class


def test_train_and_save_atomic(data, tmp_path):
    model = train_model("mlp", data, epochs=1)
    path = tmp_path / "mlp.pt"
    save_atomic(model.state_dict(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.pt"]  # no temp file left behind
    restored = models.MLP()
    restored.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(restored(data.test_x), model(data.test_x))

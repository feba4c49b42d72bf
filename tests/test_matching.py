"""Matching: every crossbar layer is found, nothing else is, and selection works."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbar.passes.capture import capture
from xbar.passes.errors import MatchError
from xbar.passes.kinds import CONV, LINEAR
from xbar.passes.matching import LayerSelection, find_crossbar_layers, match_layers

from conftest import make_input, make_model

EXPECTED = {
    "mlp": ["fc1", "fc2", "fc3"],
    "cnn": ["conv1", "conv2", "depthwise", "pointwise", "conv1d", "fc"],
    "encoder": ["embed", "attn.in_proj", "attn.out_proj", "ff1", "ff2", "head"],
}


def layers_of(name, method="export", selection=LayerSelection()):
    gm = capture(make_model(name), (make_input(name, 2),), method)
    return find_crossbar_layers(gm, selection)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_finds_every_crossbar_layer_and_nothing_else(model_name, method):
    expected = EXPECTED[model_name]
    if model_name == "encoder" and method == "symbolic_trace":
        # symbolic_trace keeps F.multi_head_attention_forward opaque: its projections are invisible
        expected = [n for n in expected if not n.startswith("attn.")]
    assert [layer.name for layer in layers_of(model_name, method)] == expected


def test_conv_geometry_and_kinds():
    layers = {layer.name: layer for layer in layers_of("cnn")}
    assert layers["conv2"].geometry.stride == (2, 2) and layers["conv2"].geometry.groups == 4
    assert layers["depthwise"].geometry.dilation == (2, 2) and layers["depthwise"].geometry.groups == 8
    assert layers["depthwise"].bias is None and layers["conv1"].bias == "conv1.bias"
    assert layers["conv1d"].kind is CONV and layers["fc"].kind is LINEAR


class Functional(nn.Module):
    """Crossbar layers written as functions, GPT-2's Conv1D (addmm), a constant weight,
    and an activation-activation matmul that must stay digital."""

    def __init__(self):
        super().__init__()
        self.w_linear = nn.Parameter(torch.randn(6, 4))
        self.w_matmul = nn.Parameter(torch.randn(6, 5))    # stored [in, out]
        self.conv1d_weight = nn.Parameter(torch.randn(5, 3))  # GPT-2 Conv1D: [in, out]
        self.conv1d_bias = nn.Parameter(torch.randn(3))
        self.w_t = nn.Parameter(torch.randn(2, 3))          # used as x @ w.t()
        self.register_buffer("const_weight", torch.randn(2, 2))

    def forward(self, x):
        h = F.linear(x, self.w_linear)
        h = torch.matmul(h, self.w_matmul)
        h = torch.addmm(self.conv1d_bias, h, self.conv1d_weight)
        h = h @ self.w_t.t()
        scores = h.unsqueeze(2) @ h.unsqueeze(1)   # activation x activation: digital
        return F.linear(scores.sum(-1), self.const_weight)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_functional_forms(method):
    gm = capture(Functional(), (torch.randn(3, 4),), method)
    layers = {layer.name: layer for layer in find_crossbar_layers(gm)}
    assert sorted(layers) == ["const", "conv1d", "w_linear", "w_matmul", "w_t"]
    assert layers["w_matmul"].weight_transposed and not layers["w_t"].weight_transposed
    assert layers["conv1d"].bias == "conv1d_bias" and layers["conv1d"].weight_transposed
    assert not layers["w_linear"].weight_transposed


@pytest.mark.parametrize("selection, expected", [
    (LayerSelection(exclude=["fc*"]), ["conv1", "conv2", "depthwise", "pointwise", "conv1d"]),
    (LayerSelection(include=["conv?"]), ["conv1", "conv2"]),
    (LayerSelection(include=[nn.Conv2d]), ["conv1", "conv2", "depthwise", "pointwise"]),
    (LayerSelection(exclude=["Conv2d"]), ["conv1d", "fc"]),
    (LayerSelection(include=["Conv1d", "Linear"]), ["conv1d", "fc"]),
    (LayerSelection(keep_first_last_digital=True), ["conv2", "depthwise", "pointwise", "conv1d"]),
])
def test_include_and_exclude(selection, expected):
    assert [layer.name for layer in layers_of("cnn", selection=selection)] == expected


def test_decomposed_graphs_are_refused():
    model = make_model("cnn")
    program = torch.export.export(model, (make_input("cnn", 2),)).run_decompositions()
    with pytest.raises(MatchError, match="decomposed graph"):
        find_crossbar_layers(capture(program, ()))


class DigitalConvolutions(nn.Module):
    """Convolutions that must stay digital, beside one that maps (and, captured by
    torch.export, the circular one, which it captures as a pad then a plain convolution)."""

    def __init__(self):
        super().__init__()
        self.circular = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
        self.same_even = nn.Conv2d(2, 2, 2, padding="same")  # asymmetric 'same' padding
        self.same_odd = nn.Conv2d(2, 2, 3, padding="same")
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        x = self.same_odd(self.same_even(self.circular(x)))
        return F.conv2d(x, self.same_odd.weight, self.scale * 2)  # an activation as the bias


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_padding_modes_asymmetric_same_and_activation_biases_stay_digital(method):
    layers = find_crossbar_layers(capture(DigitalConvolutions(), (torch.randn(2, 2, 6, 6),), method))
    padded = [("circular", (0, 0))] if method == "export" else []
    assert [(layer.name, layer.geometry.padding) for layer in layers] == [*padded, ("same_odd", (1, 1))]


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_matching_says_why_it_refused_each_call_a_kind_recognised(method):
    gm = capture(DigitalConvolutions(), (torch.randn(2, 2, 6, 6),), method)
    matching = match_layers(gm)
    assert [layer.name for layer in matching.layers] == [layer.name for layer in find_crossbar_layers(gm)]
    reasons = sorted(matching.refused.values())
    circular = [] if method == "export" else ["padding mode 'circular' (only zero padding maps)"]
    assert reasons == sorted(["'same' padding that is uneven (an even kernel)", "its bias is computed, not a constant",
                              *circular])


def test_the_selection_says_why_it_leaves_a_layer_digital():
    layers = layers_of("mlp")
    assert [LayerSelection(keep_first_last_digital=True).refusal(layer, layers) for layer in layers] == [
        "first layer (keep_first_last_digital)", None, "last layer (keep_first_last_digital)"]
    assert LayerSelection(exclude=["fc2"]).refusal(layers[1], layers) == "excluded by pattern 'fc2'"
    assert LayerSelection(include=[nn.Conv2d]).refusal(layers[0], layers) == "matches no include pattern"


class SharedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.fc(x))


def test_each_call_of_a_shared_weight_is_a_layer_of_one_name():
    layers = find_crossbar_layers(capture(SharedWeight(), (torch.randn(2, 3),), "export"))
    assert [layer.name for layer in layers] == ["fc", "fc"] and layers[0].node is not layers[1].node

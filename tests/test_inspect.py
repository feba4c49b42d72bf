"""Inspection: the same layers read back from memory, an ONNX file and a graph archive, and shown."""

import json
import re

import numpy as np
import onnx
import pytest
import torch
from rich.console import Console
from torch import nn

from xbar import HardwareConfig, calibrate, convert, export_onnx, prepare
from xbar.compiler.cli.inspection_view import (
    array_labels,
    count_text,
    describe_config,
    layer_tables,
    plot_layers,
    print_inspection,
)
from xbar.compiler.config.hardware import LayerRule
from xbar.compiler.inspection.archive import save_graph
from xbar.compiler.inspection.converted import summarize, summarize_converted
from xbar.compiler.inspection.read import load_inspection
from xbar.passes.errors import InspectError

from conftest import eight_bit, make_input, make_model

G_MAX = 25.0


def converted_of(model, example, config):
    prepared = prepare(model, (example,), config)
    calibrate(prepared, [example])
    return convert(prepared)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The shared CNN at 8 bits, in memory, as ONNX and as a graph archive."""
    directory = tmp_path_factory.mktemp("inspect")
    config = eight_bit()
    converted = converted_of(make_model("cnn"), make_input("cnn", 16), config)
    onnx_path = export_onnx(converted, (make_input("cnn", 2),), directory / "cnn.onnx")
    graph_path = save_graph(converted, directory / "cnn.graph.pt")
    return converted, onnx_path, graph_path


def test_conductance_statistics_of_a_known_weight():
    layer = nn.Linear(2, 2, bias=False)
    layer.weight.data = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    converted = converted_of(nn.Sequential(layer), torch.randn(4, 2), HardwareConfig())
    (summary,) = summarize_converted(converted)
    # scale ratio 25 uS per unit: G+ = [25, 0, 12.5, 0], G- = [0, 25, 0, 0]
    assert summary.settings.scale_ratio == pytest.approx(G_MAX)
    np.testing.assert_allclose(summary.g_plus, [[G_MAX, 0.0], [12.5, 0.0]])
    assert summary.fraction_at_g_max == 0.25
    data = summary.as_dict()
    assert (data["conductance_min"], data["conductance_mean"], data["conductance_max"]) == (0.0, 62.5 / 8, G_MAX)
    assert data["weight_shape"] == [2, 2] and data["kind"] == "linear" and data["rule"] == "global"


def test_onnx_file_and_graph_archive_read_back_what_memory_holds(written):
    converted, onnx_path, graph_path = written
    in_memory = summarize_converted(converted)
    assert len(in_memory) == 6
    for path, kind in ((onnx_path, "onnx"), (graph_path, "xbar-graph")):
        inspection = load_inspection(path)
        assert inspection.format == kind
        assert [s.settings for s in inspection.layers] == [s.settings for s in in_memory]
        for read, held in zip(inspection.layers, in_memory):
            np.testing.assert_array_equal(read.g_plus, held.g_plus)
            np.testing.assert_array_equal(read.g_minus, held.g_minus)
            assert (read.kind, read.weight_shape) == (held.kind, held.weight_shape)
    kinds = [s.kind for s in in_memory]
    assert kinds == ["conv2d", "conv2d", "conv2d", "conv2d", "conv1d", "linear"]


def test_graph_lines_name_the_inserted_nodes(written):
    _, onnx_path, graph_path = written
    onnx_lines = load_inspection(onnx_path).graph_lines
    assert any(line.startswith("conv1_crossbar: ai.xbar::CrossbarConv(") for line in onnx_lines)
    assert any(line.startswith("fc_crossbar: ai.xbar::CrossbarLinear(") for line in onnx_lines)
    graph_lines = load_inspection(graph_path).graph_lines
    assert sum("call_module[target=" in line and "_crossbar]" in line for line in graph_lines) == 6


def test_graph_archive_loads_with_weights_only(written):
    _, _, graph_path = written
    archive = torch.load(graph_path, weights_only=True)
    assert archive["format"] == "xbar-graph" and archive["hardware_config"]["forward"]["inp_res"] == 254
    assert set(archive["state_dict"]) >= {"conv1_crossbar.g_plus", "conv1_crossbar.g_minus"}


def test_json_is_plain_and_complete(written):
    _, onnx_path, _ = written
    data = json.loads(json.dumps(load_inspection(onnx_path).as_dict(with_graph=True), allow_nan=False))
    assert data["metadata"]["xbar.hardware_config"]["forward"]["out_bound"] == 10
    assert {"layer", "input_range", "scale_ratio", "dac_steps", "fraction_at_g_max"} <= set(data["layers"][0])
    assert data["graph"] and data["format"] == "onnx"


def rendered(layers, title, width) -> str:
    console = Console(width=width, record=True)
    for table in layer_tables(layers, title, width):
        console.print(table)
    return console.export_text()


def test_table_has_one_row_per_array(written):
    converted, _, _ = written
    text = rendered(summarize_converted(converted), "cnn", 200)
    assert text.count("┏") == 1  # one table when it fits
    assert all(f"│ {name} " in text for name in ("conv1", "conv2", "depthwise", "pointwise", "conv1d", "fc"))
    assert text.count("   254 │   254 ±10 │") == 6


def cells(layer) -> list[str]:
    """Every number a row of the table shows for ``layer``."""
    s, g = layer.settings, layer.conductances
    return ["x".join(map(str, layer.weight_shape)), f"{s.input_range:.4g}", f"{s.scale_ratio:.4g}",
            f"{g.min():.3g}", f"{g.mean():.3g}", f"{g.max():.3g}", f"{layer.fraction_at_g_max:.2%}",
            f"{s.dac_steps:g}", f"{s.adc_steps:g} ±{s.out_bound:g}"]


@pytest.mark.parametrize("width", [80, 100])
def test_table_is_readable_in_a_narrow_terminal(tmp_path, width):
    config = eight_bit().with_overrides({"mapping.max_input_size": 16, "mapping.max_output_size": 16})
    config.layers.append(LayerRule(pattern="fc*", overrides={"forward.out_bound": 5}))
    converted = converted_of(make_model("mlp"), make_input("mlp", 8), config)
    layers = load_inspection(save_graph(converted, tmp_path / "tiled.graph.pt")).layers
    text = rendered(layers, "a model with a long name: 8 crossbar arrays in 3 layers", width)
    lines = text.splitlines()
    assert "…" not in text and max(map(len, lines)) <= width
    for layer, label in zip(layers, array_labels(layers)):
        rows = [line for line in lines if re.match(rf"│ {re.escape(label)} +│", line)]
        assert len(rows) == 2  # the settings and the conductances, side by side in neither
        assert all(f" {cell} " in " ".join(rows) for cell in cells(layer)), (label, rows)
        assert "pattern=fc*" in rows[1]


def test_plot_writes_an_image(written, tmp_path):
    converted, _, _ = written
    path = plot_layers(summarize_converted(converted), tmp_path / "cnn.png", "cnn")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_plot_refuses_an_unknown_image_type(written, tmp_path):
    converted, _, _ = written
    with pytest.raises(InspectError, match="unknown image type 'txt'"):
        plot_layers(summarize_converted(converted), tmp_path / "cnn.txt", "cnn")
    assert list(tmp_path.iterdir()) == []


def test_a_plain_onnx_file_has_no_crossbar_layers(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Linear(3, 2).eval(), (torch.randn(1, 3),), str(path), dynamo=True)
    inspection = load_inspection(path)
    assert inspection.layers == [] and inspection.graph_lines


def test_files_that_are_not_ours_are_refused(tmp_path):
    (tmp_path / "text.onnx").write_text("hello")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(InspectError, match="neither an ONNX model nor an xbar graph archive"):
        load_inspection(tmp_path / "text.onnx")
    with pytest.raises(InspectError, match="not an xbar graph archive"):
        load_inspection(tmp_path / "other.pt")
    with pytest.raises(InspectError, match="no such file"):
        load_inspection(tmp_path / "missing.onnx")


def test_describe_config_lists_only_changes_with_whole_numbers_as_integers():
    assert describe_config(HardwareConfig().to_dict()).startswith("xbar defaults")
    expected = "forward.inp_res=254, forward.out_res=254, forward.out_bound=10"
    assert describe_config(eight_bit().to_dict()) == expected
    assert describe_config(eight_bit().with_overrides({"converter.g_max": 37.5}).to_dict()).endswith("g_max=37.5")


def test_the_rule_that_chose_each_layer_is_kept(tmp_path):
    config = HardwareConfig(layers=[LayerRule(name="fc2", overrides={"forward.out_bound": 5})])
    converted = converted_of(make_model("mlp"), make_input("mlp", 8), config)
    rules = {s.settings.layer: s.rule for s in summarize_converted(converted)}
    assert rules == {"fc1": "global", "fc2": "name=fc2", "fc3": "global"}
    archived = load_inspection(save_graph(converted, tmp_path / "mlp.graph.pt"))
    assert [s.rule for s in archived.layers] == ["global", "name=fc2", "global"]
    assert "name=fc2" in rendered(archived.layers, "mlp", 200)


def test_tiled_layers_show_one_row_per_array(tmp_path):
    config = HardwareConfig().with_overrides({"mapping.max_input_size": 16, "mapping.max_output_size": 16})
    converted = converted_of(make_model("mlp"), make_input("mlp", 8), config)
    layers = load_inspection(save_graph(converted, tmp_path / "tiled.graph.pt")).layers
    positions = [(s.settings.layer, s.settings.tile_row, s.settings.tile_col) for s in layers]
    assert sorted(positions) == [("fc1", 0, 0), ("fc1", 0, 1), ("fc2", 0, 0), ("fc2", 0, 1), ("fc2", 1, 0),
                                 ("fc2", 1, 1), ("fc3", 0, 0), ("fc3", 1, 0)]
    assert all(s.weight_shape == (16, 16) for s in layers if s.settings.layer == "fc2")
    assert "│ fc2 [1,1] │" in rendered(layers, "tiled", 200)
    assert "fc2 [1,0]" in array_labels(layers)
    assert count_text(layers) == "8 crossbar arrays in 3 layers"


# -- a layer called more than once ---------------------------------------------------------------

class LinearTwice(nn.Module):
    """One nn.Linear applied twice: one array, programmed once, two call sites."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_a_layer_called_twice_is_one_array_with_two_call_sites(tmp_path, method):
    x = torch.randn(4, 4)
    converted = convert(prepare(LinearTwice(), (x,), capture_method=method))
    from_onnx = load_inspection(export_onnx(converted, (x,), tmp_path / "twice.onnx")).layers
    from_archive = load_inspection(save_graph(converted, tmp_path / "twice.graph.pt")).layers
    for layers in (summarize_converted(converted), from_onnx, from_archive):
        assert [(s.settings.layer, s.calls, s.rule) for s in layers] == [("fc", 2, "global"), ("out", 1, "global")]
        assert count_text(layers) == "2 crossbar layers; fc called 2 times"
        assert "calls" in rendered(layers, "twice", 300)
    assert from_onnx[0].call_sites == ("fc_crossbar", "fc_crossbar_1")
    assert from_archive[0].call_sites == from_onnx[0].call_sites



def test_an_older_onnx_file_without_call_sites_reads_them_from_its_graph(tmp_path):
    x = torch.randn(4, 4)
    path = export_onnx(convert(prepare(LinearTwice(), (x,))), (x,), tmp_path / "twice.onnx")
    model = onnx.load(str(path))
    layers = json.loads(next(p.value for p in model.metadata_props if p.key == "xbar.layers"))
    older = [{key: entry[key] for key in ("node", "op", "rule", "g_plus", "g_minus")} for entry in layers]
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in ("xbar.layers", "xbar.digital_layers")]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(kept) | {"xbar.layers": json.dumps(older)})
    onnx.save(model, str(path))
    inspection = load_inspection(path)
    assert [(s.settings.layer, s.calls, s.rule) for s in inspection.layers] == [("fc", 2, "global"),
                                                                                  ("out", 1, "global")]
    assert inspection.digital == ()


# -- layers that stay digital --------------------------------------------------------------------

class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.lstm(x.unsqueeze(1))[0][:, 0])


class Einsum(nn.Module):
    """An ``einsum`` that is no matmul (an outer product, then a sum) stays digital while ``x @ W`` maps."""

    def __init__(self):
        super().__init__()
        self.W, self.V = nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(4, 2))

    def forward(self, x):
        return torch.einsum("bi,ij->bij", x, self.W).sum(1) @ self.V


MLP_DIGITAL_RULE = HardwareConfig(layers=[LayerRule(name="fc2", digital=True)])
DIGITAL_CAUSES = {
    "lstm": (Recurrent, {"exclude": ["LSTM"]}, {"lstm": "excluded by pattern 'LSTM'"}),
    "einsum": (Einsum, {}, {"W": "no crossbar layer kind matches this op"}),
    "exclude": ("mlp", {"exclude": ["fc1"]}, {"fc1": "excluded by pattern 'fc1'"}),
    "include": ("mlp", {"include": ["fc[23]"]}, {"fc1": "matches no include pattern"}),
    "rule": ("mlp", {"config": MLP_DIGITAL_RULE}, {"fc2": "digital by layer rule name=fc2"}),
    "first and last": ("mlp", {"keep_first_last_digital": True}, {"fc1": "first layer (keep_first_last_digital)",
                                                                   "fc3": "last layer (keep_first_last_digital)"}),
}


def digital_case(cause: str, method: str):
    model, options, expected = DIGITAL_CAUSES[cause]
    model, x = (make_model(model), make_input(model, 4)) if isinstance(model, str) else (model(), torch.randn(4, 4))
    selection = {key: value for key, value in options.items() if key != "config"}
    return convert(prepare(model, (x,), options.get("config"), capture_method=method, **selection)), x, expected


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
@pytest.mark.parametrize("cause", sorted(DIGITAL_CAUSES))
def test_every_layer_that_stays_digital_is_listed_with_why(cause, method):
    converted, _, expected = digital_case(cause, method)
    summary = summarize(converted)
    assert {layer.name: layer.reason for layer in summary.digital} == expected
    assert not {layer.name for layer in summary.digital} & {s.settings.layer for s in summary.arrays}


def test_einsum_stays_digital_while_the_same_product_as_a_matmul_maps():
    converted, _, _ = digital_case("einsum", "export")
    assert [s.settings.layer for s in summarize(converted).arrays] == ["V"]


def test_digital_layers_are_read_back_from_onnx_and_the_archive_and_shown(tmp_path):
    converted, x, expected = digital_case("lstm", "export")
    in_memory = summarize(converted).digital
    assert in_memory[0].weights == ("lstm.weight_ih_l0", "lstm.weight_hh_l0")
    assert in_memory[0].shapes == ((16, 4), (16, 4))
    for path in (export_onnx(converted, (x,), tmp_path / "lstm.onnx"), save_graph(converted, tmp_path / "lstm.pt")):
        inspection = load_inspection(path)
        assert inspection.digital == in_memory
        assert inspection.as_dict()["digital_layers"] == [layer.as_dict() for layer in in_memory]
        console = Console(width=200, record=True)
        print_inspection(console, inspection, with_graph=False)
        text = console.export_text()
        assert "1 layer stays digital" in text and "excluded by pattern 'LSTM'" in text
        assert "16x4, 16x4" in text


def test_a_module_symbolic_trace_keeps_whole_is_one_digital_layer_named_after_it():
    converted = convert(prepare(make_model("encoder"), (make_input("encoder", 2),), capture_method="symbolic_trace"))
    (attention,) = summarize(converted).digital
    assert (attention.name, attention.ops) == ("attn", ("nn.MultiheadAttention",))
    assert attention.weights == ("attn.in_proj_weight", "attn.out_proj.weight")

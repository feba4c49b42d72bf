"""The annotated file of a chip target: each node's region of its layer's weight and its place on the chip.

Each layer's weight is rebuilt from its nodes' G+ / G- and offsets alone and compared with the model's;
every element is held by exactly one node."""

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from xbar.compiler.chip.shipped import HERMES
from xbar.compiler.cli.main import main
from xbar.compiler.config.presets import preset_config
from xbar.compiler.inspection.region import block_view
from xbar.compiler.onnx.ops import DOMAIN, PLACEMENT_ATTRIBUTES, REGION_ATTRIBUTES, VERSION
from xbar.compiler.pipeline.stages import compile_model

CHIP = dataclasses.replace(HERMES, name="small", cores=32, arrays_per_core=2, rows=16, columns=16,
                           pair_layout="columns", columns_per_adc=2)
"""16x16 arrays of two-column pairs: 16 rows x 8 weight columns per array."""


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3)                     # 27 rows x 12 columns: 2 x 2 tiles
        self.grouped = nn.Conv2d(12, 12, 1, groups=4)        # 4 groups of 3x3: packed on one array
        self.up = nn.ConvTranspose2d(12, 4, 2, stride=2)     # weight [12, 4, 2, 2]: [out 4, in 12 x 4 taps]
        self.fc = nn.Linear(4 * 8 * 8, 10)                   # 256 rows: 16 row tiles, 2 column tiles

    def forward(self, x):
        return self.fc(torch.relu(self.up(torch.relu(self.grouped(torch.relu(self.conv(x)))))).flatten(1))


def weight_matrix(module: nn.Module) -> np.ndarray:
    """The layer's [out, in x kernel] weight, as the contract defines it."""
    weight = module.weight.detach()
    if isinstance(module, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    return weight.reshape(weight.shape[0], -1).numpy()


def attributes(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    torch.manual_seed(0)
    model = Mixed().eval()
    path = tmp_path_factory.mktemp("chip") / "mixed.onnx"
    result = compile_model(model, (torch.randn(2, 3, 6, 6),), preset_config("8bit"), chip=CHIP, output=path)
    return model, result, onnx.load(str(path)), path


def test_every_weight_element_is_held_by_exactly_one_node_and_the_weights_rebuild(compiled):
    model, _, onnx_model, _ = compiled
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    rebuilt, held = {}, {}
    for node in (n for n in onnx_model.graph.node if n.domain == DOMAIN):
        a = attributes(node)
        layer = a["layer"].decode() if isinstance(a["layer"], bytes) else a["layer"]
        difference = initializers[node.input[1]] - initializers[node.input[2]]
        first = node.op_type != "CrossbarConvTranspose"
        block = block_view(difference / a["scale_ratio"], a["out_size"], a["in_size"], first)
        shape = (a["out_total"], a["in_total"])
        rebuilt.setdefault(layer, np.zeros(shape, np.float32))
        held.setdefault(layer, np.zeros(shape, np.int64))
        rows = slice(a["out_offset"], a["out_offset"] + a["out_size"])
        cols = slice(a["in_offset"], a["in_offset"] + a["in_size"])
        rebuilt[layer][rows, cols] += block
        held[layer][rows, cols] += 1
    assert set(rebuilt) == {"conv", "grouped", "up", "fc"}
    for layer, matrix in rebuilt.items():
        expected = weight_matrix(model.get_submodule(layer))
        assert matrix.shape == expected.shape
        assert (held[layer] == 1).all(), f"{layer}: elements held {np.unique(held[layer])} times"
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-7)


def test_each_node_says_where_each_replica_sits_and_the_file_records_the_mapping(compiled):
    _, result, onnx_model, path = compiled
    metadata = {p.key: p.value for p in onnx_model.metadata_props}
    assert json.loads(metadata["xbar.chip"])["name"] == "small"
    assert {o.domain: o.version for o in onnx_model.opset_import}[DOMAIN] == VERSION
    record = json.loads(metadata["xbar.mapping"])
    placed = {}
    for entry in record["arrays"]:
        for region in entry["regions"]:
            placed[(region["node"], region["replica"])] = (entry["core"], entry["array"], region["row_offset"],
                                                           region["col_offset"])
    for node in (n for n in onnx_model.graph.node if n.domain == DOMAIN):
        a = attributes(node)
        assert set(REGION_ATTRIBUTES) | set(PLACEMENT_ATTRIBUTES) <= set(a)
        assert all(len(a[name]) == a["replicas"] for name in ("chip", "core", "array", "row_offset", "col_offset"))
        for replica in range(a["replicas"]):
            assert placed[(node.name, replica)] == (a["core"][replica], a["array"][replica],
                                                    a["row_offset"][replica], a["col_offset"][replica])
    assert len(placed) == len(result.mapping.regions)
    layers = {entry["layer"]: entry for entry in record["layers"]}
    assert layers["fc"]["mvms"] == 1 and layers["conv"]["mvms"] == 16
    assert sum(entry["energy_share"] for entry in record["layers"]) == pytest.approx(1.0)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((5, 3, 6, 6), np.float32)})[0].shape == (5, 10)


def test_without_a_chip_nodes_state_their_region_but_no_placement(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "plain.onnx"
    compile_model(nn.Sequential(nn.Linear(6, 4)).eval(), (torch.randn(2, 6),), preset_config("8bit"), output=path)
    onnx_model = onnx.load(str(path))
    (node,) = [n for n in onnx_model.graph.node if n.domain == DOMAIN]
    a = attributes(node)
    assert {name: a[name] for name in REGION_ATTRIBUTES} == {"in_offset": 0, "in_size": 6, "out_offset": 0,
                                                             "out_size": 4, "in_total": 6, "out_total": 4}
    assert not set(PLACEMENT_ATTRIBUTES) & set(a)
    assert "xbar.mapping" not in {p.key for p in onnx_model.metadata_props}


def test_xbar_inspect_mapping_prints_the_per_layer_table_and_json(compiled, capsys, tmp_path):
    _, result, _, path = compiled
    assert main(["inspect", str(path), "--mapping"]) == 0
    out = capsys.readouterr().out
    assert "small" in out and "replicas" in out and all(layer in out for layer in ("conv", "grouped", "up", "fc"))
    assert main(["inspect", str(path), "--mapping", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [entry["layer"] for entry in record["layers"]] == [cost.name for cost in result.mapping.cost.layers]
    assert record["totals"]["interval_ns"] == pytest.approx(result.mapping.cost.interval_ns)
    image = tmp_path / "chip.png"
    assert main(["inspect", str(path), "--mapping", "--plot", str(image)]) == 0
    assert image.read_bytes().startswith(b"\x89PNG") and f"wrote {image}" in capsys.readouterr().err
    plain = tmp_path / "plain.onnx"
    compile_model(nn.Sequential(nn.Linear(6, 4)).eval(), (torch.randn(2, 6),), preset_config("8bit"), output=plain)
    assert main(["inspect", str(plain), "--mapping"]) == 2
    assert "compiled without a chip target" in capsys.readouterr().err


def test_the_same_model_and_chip_give_the_same_file(compiled, tmp_path):
    model, _, _, path = compiled
    again = tmp_path / "again.onnx"
    torch.manual_seed(0)
    compile_model(model, (torch.randn(2, 3, 6, 6),), preset_config("8bit"), chip=CHIP, output=again)
    assert again.read_bytes() == path.read_bytes()

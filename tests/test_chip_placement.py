"""Placement on a chip: every tile placed once per replica, in bounds, without overlaps, within the chip;
capacity errors with the numbers; replication; determinism; compile_model(chip=...) and xbar compile --chip."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from xbar.compiler.chip.placement import place
from xbar.compiler.chip.shipped import CHIPS, HERMES
from xbar.compiler.chip.target import chip_config
from xbar.compiler.chip.toml_text import chip_toml
from xbar.compiler.chip.work import LayerWork, TileWork
from xbar.compiler.config.hardware import HardwareConfig
from xbar.compiler.config.presets import preset_config
from xbar.compiler.pipeline.stages import compile_model
from xbar.passes.errors import CapacityError, ConfigError

from conftest import NET, ConvNet, run

SMALL = dataclasses.replace(HERMES, name="small", cores=4, arrays_per_core=2, rows=8, columns=8,
                            pair_layout="columns", columns_per_adc=2)
"""4 cores of 2 arrays of 8x8 devices, G+ and G- on two columns (4 weight columns per array)."""


def random_layers(seed: int, count: int, chip) -> list[LayerWork]:
    rng = random.Random(seed)
    layers = []
    for index in range(count):
        rows, cols = rng.randint(1, 3 * chip.rows), rng.randint(1, 2 * chip.weight_columns)
        step_in, step_out = chip.rows, chip.weight_columns
        tiles = tuple(TileWork(f"l{index}_t{i}_{j}", (i, min(rows, i + step_in)), (j, min(cols, j + step_out)))
                      for i in range(0, rows, step_in) for j in range(0, cols, step_out))
        layers.append(LayerWork(f"l{index}", tiles, mvms=rng.randint(1, 50)))
    return layers


def check_mapping(mapping, layers) -> None:
    chip = mapping.chip
    placed = [(r.node, r.replica) for r in mapping.regions]
    expected = [(t.node, k) for layer in layers for k in range(mapping.replicas[layer.name]) for t in layer.tiles]
    assert sorted(placed) == sorted(expected)  # every tile once per replica
    cells: dict = {}
    for region in mapping.regions:
        assert 0 <= region.chip < mapping.chips and 0 <= region.core < chip.cores
        assert 0 <= region.array < chip.arrays_per_core
        assert region.row_offset + region.rows <= chip.rows and region.col_offset + region.columns <= chip.columns
        where = (region.chip, region.core, region.array)
        for row in range(region.row_offset, region.row_offset + region.rows):
            for col in range(region.col_offset, region.col_offset + region.columns):
                assert (where, row, col) not in cells, f"{region} overlaps {cells[(where, row, col)]}"
                cells[(where, row, col)] = region
    assert mapping.slots_used <= mapping.chips * chip.arrays // chip.arrays_per_tile
    slots = {}
    for region in mapping.regions:  # no two copies of a layer share an array
        assert slots.setdefault((region.layer, region.slot), region.replica) == region.replica


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share", [True, False])
def test_random_layers_are_placed_once_in_bounds_without_overlap(seed, share):
    chip = dataclasses.replace(SMALL, share_arrays=share, cores=64)
    layers = random_layers(seed, 8, chip)
    mapping = place(chip, layers, chips=2)
    check_mapping(mapping, layers)
    assert place(chip, layers, chips=2) == mapping  # deterministic


def test_small_tiles_share_an_array_along_its_diagonal_unless_the_chip_forbids_it():
    layers = [LayerWork("a", (TileWork("a", (0, 3), (0, 2)),), 1), LayerWork("b", (TileWork("b", (0, 4), (0, 2)),), 1)]
    shared = place(SMALL, layers, replicate=False)
    assert [(r.core, r.array, r.row_offset, r.col_offset) for r in shared.regions] == [(0, 0, 0, 0), (0, 0, 3, 4)]
    apart = place(dataclasses.replace(SMALL, share_arrays=False), layers, replicate=False)
    assert [(r.core, r.array) for r in apart.regions] == [(0, 0), (0, 1)]


def test_two_array_pairs_take_adjacent_arrays():
    chip = dataclasses.replace(SMALL, pair_layout="arrays")
    mapping = place(chip, [LayerWork("a", (TileWork("a", (0, 8), (0, 8)), TileWork("a2", (0, 8), (8, 16))), 1)],
                    replicate=False)
    assert [(r.core, r.array) for r in mapping.regions] == [(0, 0), (1, 0)] and mapping.arrays_used == 4


def test_the_slowest_layer_is_replicated_into_spare_arrays_and_never_past_the_chip():
    slow = LayerWork("slow", (TileWork("slow", (0, 8), (0, 4)),), mvms=100)
    fast = LayerWork("fast", (TileWork("fast", (0, 8), (0, 4)),), mvms=10)
    mapping = place(SMALL, [slow, fast])
    assert mapping.replicas == {"slow": 7, "fast": 1} and mapping.slots_used == 8
    check_mapping(mapping, [slow, fast])
    assert mapping.cost.interval_ns < place(SMALL, [slow, fast], replicate=False).cost.interval_ns
    assert place(SMALL, [slow, fast], replicate=False).replicas == {"slow": 1, "fast": 1}


def test_a_model_that_does_not_fit_gets_the_numbers_and_the_chips_that_would_do():
    layers = random_layers(0, 12, SMALL)
    with pytest.raises(CapacityError, match=r"needs \d+ arrays of 8x8; small has 8: use --chips \d+") as caught:
        place(SMALL, layers)
    chips = int(str(caught.value).split("--chips ")[1].split(",")[0])
    check_mapping(place(SMALL, layers, chips=chips), layers)
    with pytest.raises(CapacityError, match=f"{chips - 1} small chips have"):
        place(SMALL, layers, chips=chips - 1)


def test_chip_config_sets_the_tiling_and_refuses_what_the_chip_cannot_do():
    config = chip_config(preset_config("8bit"), HERMES)
    assert (config.mapping.max_input_size, config.mapping.max_output_size) == (256, 256)
    assert chip_config(preset_config("6bit-256x256").with_overrides({"mapping.max_input_size": 128}),
                       HERMES).mapping.max_input_size == 128
    with pytest.raises(ConfigError, match="larger than hermes's arrays"):
        chip_config(preset_config("8bit-512x512"), HERMES)
    with pytest.raises(ConfigError, match="an ideal ADC but hermes's ADC has 8 bits"):
        chip_config(HardwareConfig(), HERMES)
    with pytest.raises(ConfigError, match="1022 ADC steps but hermes's ADC has 8 bits"):
        chip_config(preset_config("8bit").with_overrides({"forward.out_res": 1022}), HERMES)
    rram = CHIPS["neurosim-rram"]  # bit-serial: its 4-bit ADC converts bit slices, which xbar does not simulate
    assert chip_config(preset_config("8bit"), rram).mapping.max_output_size == 64
    with pytest.raises(ConfigError, match="converter.g_max=40 uS differs from hermes's devices"):
        chip_config(preset_config("8bit").with_overrides({"converter.g_max": 40.0}), HERMES)
    assert chip_config(preset_config("8bit"), HERMES).converter.g_max == HERMES.g_max == 20.7  # the default follows


def test_compile_model_for_a_chip_tiles_to_its_arrays_and_counts_mvms():
    torch.manual_seed(0)
    chip = dataclasses.replace(SMALL, cores=16, rows=16)
    result = compile_model(ConvNet().eval(), (torch.randn(3, 2, 6, 6),), preset_config("8bit"), chip=chip)
    mapping = result.mapping
    layers = {cost.name: cost for cost in mapping.cost.layers}
    assert layers["conv"].mvms == 16 and layers["fc"].mvms == 1  # output positions; one token
    regions = {r.node for r in mapping.regions}
    assert regions == {name for name, m in result.converted.named_modules() if type(m).__name__ == "Crossbar"}
    assert all(r.rows <= 16 and r.columns <= 8 for r in mapping.regions)
    assert len([r for r in mapping.regions if r.layer == "fc" and r.replica == 0]) == 6 * 2  # 96 rows, 5 outputs


def test_xbar_compile_refuses_a_model_too_big_for_the_chip_and_writes_nothing(workspace, capsys):
    chip = dataclasses.replace(SMALL, name="one", cores=1, arrays_per_core=1)
    (workspace / "one.toml").write_text(chip_toml(chip))
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--chip", "one.toml", "-o", "m.onnx")
    assert status == 2 and "needs 5 arrays of 8x8; one has 1: use --chips 5" in err
    assert not (workspace / "m.onnx").exists()
    status, out, err = run(capsys, "compile", *NET, "--calib", "inputs.npz", "--chip", "one.toml", "--chips", "5",
                           "-o", "m.onnx")
    assert status == 0, err
    assert "chip: 5 one chips: 5 of 5 arrays" in out and (workspace / "m.onnx").exists()
    assert run(capsys, "compile", *NET, "--chip", "nope")[0] == 2


def test_xbar_evaluate_on_a_chip_uses_its_device_model_and_reports_the_cost(workspace, capsys):
    x = np.load(workspace / "inputs.npz")["x"]
    np.savez(workspace / "labelled.npz", x=x, y=np.arange(len(x)) % 3)
    chip = dataclasses.replace(SMALL, name="rram", device_model="reram")
    (workspace / "rram.toml").write_text(chip_toml(chip))
    status, out, err = run(capsys, "evaluate", *NET, "--calib", "labelled.npz", "--chip", "rram.toml", "--seeds", "1",
                           "--times", "1s", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["noise_model"]["model"] == "ReRamWan2022NoiseModel" and report["chip"]["name"] == "rram"
    assert [layer["layer"] for layer in report["mapping"]["layers"]] == ["fc1", "fc2", "fc3"]
    assert report["hardware"]["mapping"]["max_input_size"] == 8
    status, out, err = run(capsys, "evaluate", *NET, "--calib", "labelled.npz", "--chip", "rram.toml", "--seeds", "1",
                           "--times", "1s", "--noise", "pcm")
    assert status == 0, err
    assert "PCMLikeNoiseModel" in out and "chip: rram:" in out

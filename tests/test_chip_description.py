"""Chip descriptions: the shipped chips, their TOML form, validation of bad descriptions, ``xbar chips``."""

import dataclasses
import subprocess
import sys

import pytest

from xbar.compiler.chip.description import FIELDS, Chip, load_chip_file
from xbar.compiler.chip.shipped import CHIPS, HERMES, chip_named
from xbar.compiler.chip.toml_text import chip_toml
from xbar.compiler.cli.main import main
from xbar.passes.errors import ConfigError


def test_every_field_has_a_meaning_and_every_shipped_chip_a_source():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(Chip)}
    assert len(CHIPS) >= 2 and len({(c.rows, c.columns, c.pair_layout) for c in CHIPS.values()}) == len(CHIPS)
    for chip in CHIPS.values():
        assert chip.source and chip.summary and "http" not in chip.source


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11's")
@pytest.mark.parametrize("name", sorted(CHIPS))
def test_toml_form_loads_back_to_the_same_chip(tmp_path, name):
    path = tmp_path / f"{name}.toml"
    path.write_text(chip_toml(CHIPS[name]))
    assert load_chip_file(path) == CHIPS[name]
    assert chip_named(str(path)) == CHIPS[name]


def test_derived_shape():
    assert HERMES.weight_columns == 256 and HERMES.input_phases == 1 and HERMES.arrays == 64
    rram = CHIPS["neurosim-rram"]
    assert rram.weight_columns == 64 and rram.input_phases == 8 and rram.adcs_per_array == 16
    assert HERMES.with_mode(4).input_phases == 4


@pytest.mark.parametrize("change, message", [
    ({"cores": 0}, "cores must be > 0"),
    ({"pass_pj": -1.0}, "pass_pj must be >= 0"),
    ({"adc_pj": float("nan")}, "adc_pj must be >= 0"),
    ({"pair_layout": "columns", "columns": 1, "columns_per_adc": 1}, "need arrays of at least 2 columns"),
    ({"pair_layout": "diagonal"}, "pair_layout must be one of"),
    ({"input_mode": "analog"}, "input_mode must be one of"),
    ({"columns_per_adc": 512}, "exceeds the array's 256 columns"),
    ({"device_model": "magic"}, "device_model must be one of"),
])
def test_nonsensical_fields_are_refused_in_one_line(change, message):
    with pytest.raises(ConfigError, match=message) as caught:
        dataclasses.replace(HERMES, **change)
    assert "\n" not in str(caught.value) and "'hermes'" in str(caught.value)


def test_missing_unknown_and_mistyped_fields_are_refused():
    data = HERMES.to_dict()
    with pytest.raises(ConfigError, match="missing field 'rows'"):
        Chip.from_dict({k: v for k, v in data.items() if k != "rows"})
    with pytest.raises(ConfigError, match="unknown field 'speed'"):
        Chip.from_dict(data | {"speed": 3})
    with pytest.raises(ConfigError, match="cores must be an integer"):
        Chip.from_dict(data | {"cores": "many"})
    assert Chip.from_dict(data | {"pass_ns": 100}).pass_ns == 100.0  # an int stands for a float


def test_unknown_chip_name_and_missing_file():
    with pytest.raises(ConfigError, match="unknown chip 'hermez'; choose one of hermes"):
        chip_named("hermez")
    with pytest.raises(ConfigError, match="no such file"):
        chip_named("absent.toml")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11's")
def test_bad_toml_file_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("cores = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_chip_file(path)


def test_xbar_chips_lists_every_chip_and_prints_toml(capsys):
    assert main(["chips"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in CHIPS) and "Le Gallo" in listing
    assert main(["chips", "--toml", "hermes"]) == 0
    assert 'name = "hermes"' in capsys.readouterr().out
    assert main(["chips", "--toml", "nope"]) == 2
    assert "unknown chip 'nope'" in capsys.readouterr().err


def test_xbar_chips_help_has_examples_and_listing_loads_no_torch(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["chips", "--help"])
    assert exit_.value.code == 0 and "example" in capsys.readouterr().out
    script = ("import sys; from xbar.compiler.cli.main import main; main(['chips']); "
              "print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stderr.strip().endswith("False")

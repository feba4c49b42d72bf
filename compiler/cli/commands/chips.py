"""``xbar chips``: the shipped chip targets, their shape, periphery and cost terms, and their sources."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from ...chip.description import Chip
from ...chip.shipped import CHIPS, chip_named
from ...chip.toml_text import chip_toml
from ..console import say, stdout_console


def run(args: argparse.Namespace) -> int:
    if args.toml:
        print(chip_toml(chip_named(args.toml)), end="")
        return 0
    table = Table(title="chips (xbar compile --chip NAME)", title_justify="left", show_lines=True)
    for column in ("name", "shape", "periphery and cost", "description and source"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for chip in CHIPS.values():
        table.add_row(escape(chip.name), escape(shape_text(chip)), escape(cost_text(chip)),
                      escape(f"{chip.summary}\nsource: {chip.source}"))
    out = stdout_console()
    say(out, table)
    say(out, "a chip of one's own: xbar chips --toml hermes > mine.toml, edit, then xbar compile --chip mine.toml")
    return 0


def shape_text(chip: Chip) -> str:
    return (f"{chip.cores} cores x {chip.arrays_per_core} arrays of {chip.rows}x{chip.columns}\n"
            f"pair: {chip.pair_layout}\ndevices: {chip.device_model}, g_max {chip.g_max:g} uS")


def cost_text(chip: Chip) -> str:
    inputs = (f"{chip.phases}-phase PWM" if chip.input_mode == "pwm" else
              f"bit-serial, {chip.input_phases} phases")
    return (f"{chip.dac_bits}-bit inputs per phase ({inputs}), {chip.adc_bits}-bit ADC per "
            f"{chip.columns_per_adc} column{'s' * (chip.columns_per_adc > 1)}\n"
            f"pass {chip.pass_ns:g} ns, {chip.pass_pj:g} pJ; ADC {chip.adc_pj:g} pJ; DAC {chip.dac_pj:g} pJ/row\n"
            f"digital {chip.digital_ops_per_ns:g} op/ns, {chip.digital_pj_per_op:g} pJ/op; "
            f"network {chip.noc_bytes_per_ns:g} B/ns, {chip.noc_pj_per_byte:g} pJ/B")

"""The shipped chips (``--chip NAME``), each value with its source.

Kept as Python tables of the TOML form (:meth:`Chip.to_dict`), so they load on
every Python xbar supports; ``xbar chips --toml NAME`` prints one as a file to
start a description of one's own from.
"""

from __future__ import annotations

from pathlib import Path

from ...passes.errors import ConfigError
from .description import Chip, load_chip_file

HERMES_PEAK = {1: (63.1, 9.76), 4: (16.1, 2.48)}
"""Input phases -> published peak (TOPS, TOPS/W) of HERMES (Le Gallo et al., Nature Electronics 2023)."""

HERMES = Chip(
    name="hermes",
    summary="IBM HERMES: 64 cores of 256x256 PCM unit cells in 14 nm CMOS, 8-bit input and output, one-phase mode",
    source="Le Gallo et al., Nature Electronics 2023 (arXiv 2212.02872): 64 cores, one 256x256 array per core "
           "with a unit cell of four PCM devices holding the pair, 256 CCO-based ADCs per core (one per column), "
           "8-bit PWM inputs and 8-bit outputs, one-phase and four-phase input modes, published peak 63.1 TOPS at "
           "9.76 TOPS/W (one-phase) and 16.1 TOPS at 2.48 TOPS/W (four-phase). Derived: one MVM "
           "(2 x 256 x 256 operations per core) takes 132.9 ns and 13.43 nJ one-phase, 521.0 ns and 52.85 nJ "
           "four-phase; the time and energy per phase (pass_ns, pass_pj) and per MVM (mvm_fixed_ns, output_pj) "
           "solve those two pairs of equations (the paper gives totals, so DAC, array and ADC energy are one term, "
           "pass_pj). Assumed (not published as such): the digital unit's and the network's throughput and energy. "
           "Devices: aihwkit's HermesNoiseModel, its fit of this chip's PCM devices (two per conductance, 20.7 uS).",
    cores=64, arrays_per_core=1, rows=256, columns=256, pair_layout="cell", share_arrays=True,
    columns_per_adc=1, dac_bits=8, adc_bits=8, input_bits=8, input_mode="pwm", phases=1,
    pass_ns=129.36, mvm_fixed_ns=3.58, pass_pj=13141.0, dac_pj=0.0, adc_pj=0.0, output_pj=1.128,
    digital_ops_per_ns=256.0, digital_pj_per_op=0.5, noc_bytes_per_ns=64.0, noc_pj_per_byte=1.0,
    device_model="hermes", g_max=20.7,
)

NEUROSIM_RRAM = Chip(
    name="neurosim-rram",
    summary="A NeuroSim-style RRAM design: 128x128 arrays, G+ and G- on two columns, 8 columns per 4-bit ADC, "
            "8-bit inputs applied bit-serially",
    source="The shape of DNN+NeuroSim's default design (Peng, Huang, Luo and Yu, IEDM 2019; DNN+NeuroSim V1.4 "
           "defaults): 128x128 subarrays, 8 columns multiplexed onto each ADC, 16-level (4-bit) sense amplifiers, "
           "1-bit inputs per cycle at 1 GHz. Assumed for illustration (not a published chip): 64 tiles of 16 "
           "arrays, the differential pair on two columns, the per-pass, per-conversion and per-row energies, "
           "and the digital unit's and network's figures; the device model is xbar's RRAM fit.",
    cores=64, arrays_per_core=16, rows=128, columns=128, pair_layout="columns", share_arrays=True,
    columns_per_adc=8, dac_bits=1, adc_bits=4, input_bits=8, input_mode="bit-serial", phases=1,
    pass_ns=5.0, mvm_fixed_ns=2.0, pass_pj=2.0, dac_pj=0.05, adc_pj=0.5, output_pj=0.2,
    digital_ops_per_ns=512.0, digital_pj_per_op=0.3, noc_bytes_per_ns=128.0, noc_pj_per_byte=0.5,
    device_model="reram", g_max=25.0,
)

CHIPS: dict[str, Chip] = {chip.name: chip for chip in (HERMES, NEUROSIM_RRAM)}
"""Name -> shipped chip."""


def chip_named(spec: str) -> Chip:
    """A shipped chip by name, or a chip from a TOML file (a path ending in .toml); one line otherwise."""
    if spec in CHIPS:
        return CHIPS[spec]
    path = Path(spec)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"--chip {spec}: no such file")
        return load_chip_file(path)
    raise ConfigError(f"unknown chip {spec!r}; choose one of {', '.join(CHIPS)} (see `xbar chips`) "
                      "or give a .toml chip file")

"""The cost model: latency, throughput, energy and utilisation of a model's layers on a chip.

Notation: a chip of arrays ``R x C`` devices, ``P`` input phases per MVM
(:attr:`Chip.input_phases`), ``m`` columns per ADC, ``a`` physical arrays per tile
(2 when G+ and G- sit on two arrays, else 1), ``d`` device columns per weight
column (2 when the pair takes two columns, else 1). A layer runs ``M`` MVMs per
inference on ``T`` tiles, tile ``t`` using ``h_t`` rows and ``w_t`` weight columns;
``K`` input and ``N`` output elements per MVM, ``S`` partial-sum adds per MVM,
``r`` replicas; ``b = ceil(input_bits / 8)`` bytes per activation.

* time of one MVM on an array:   ``t_MVM = P m t_pass + t_fixed``
* energy of one MVM on tile t:   ``E_t = a P (m E_pass + h_t E_dac + d w_t E_adc) + w_t E_out``
* digital operations per MVM:    ``D = 2 K + 2 N + S``  (clip and scale each input; rescale and
  bias each output; the adds that sum row tiles)
* bytes moved per MVM:           ``B = (K + N) b``  (every MVM's inputs and outputs cross the network)
* layer latency:                 ``L = M t_MVM / r + M D / digital_ops_per_ns + M B / noc_bytes_per_ns``
  (replicas share the MVMs; the array, digital and network steps are added, not overlapped)
* layer energy:                  ``E = M (sum_t E_t + D E_op + B E_byte)`` (replicas do not change it)
* pipelined interval:            ``max(max L, max over physical arrays of their busy time)``; throughput
  is its inverse; layer-by-layer latency is ``sum L``
* operations per inference:      ``2 M sum_t weights_t``; TOPS = operations / interval; TOPS/W =
  operations / energy
* utilisation:                   devices holding weights / devices of the arrays used (per layer:
  ``sum_t h_t w_t d a r / (R C x arrays it occupies)``; per chip: over every array of the chips).

:func:`peak` applies the same formulas to every array of one chip holding a full tile: the anchor the
hermes description must meet (its published peak in both modes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .description import Chip
from .work import LayerWork, TileWork


def mvm_ns(chip: Chip) -> float:
    """``t_MVM``: one MVM on one array, ns."""
    return chip.input_phases * chip.columns_per_adc * chip.pass_ns + chip.mvm_fixed_ns


def device_columns(chip: Chip) -> int:
    """``d``: device columns per weight column."""
    return 2 if chip.pair_layout == "columns" else 1


def tile_mvm_pj(chip: Chip, rows: int, cols: int) -> float:
    """``E_t``: energy of one MVM on a tile of ``rows`` x ``cols`` weights, pJ."""
    phases, arrays = chip.input_phases, chip.arrays_per_tile
    analog = phases * (chip.columns_per_adc * chip.pass_pj + rows * chip.dac_pj
                       + device_columns(chip) * cols * chip.adc_pj)
    return arrays * analog + cols * chip.output_pj


def activation_bytes(chip: Chip) -> int:
    return math.ceil(chip.input_bits / 8)


@dataclass(frozen=True)
class LayerCost:
    """One layer's figures per inference: ns, pJ, operations; ``energy_*`` split the total."""

    name: str
    mvms: int
    replicas: int
    latency_ns: float
    energy_array_pj: float
    energy_digital_pj: float
    energy_movement_pj: float
    operations: int

    @property
    def energy_pj(self) -> float:
        return self.energy_array_pj + self.energy_digital_pj + self.energy_movement_pj

    def as_dict(self) -> dict:
        return {"layer": self.name, "mvms": self.mvms, "replicas": self.replicas, "latency_ns": self.latency_ns,
                "energy_pj": self.energy_pj, "energy_array_pj": self.energy_array_pj,
                "energy_digital_pj": self.energy_digital_pj, "energy_movement_pj": self.energy_movement_pj,
                "operations": self.operations}


def layer_cost(chip: Chip, layer: LayerWork, replicas: int = 1) -> LayerCost:
    """:class:`LayerCost` of ``layer`` with ``replicas`` copies, by the module docstring's formulas."""
    mvms = layer.mvms
    digital_ops = 2 * layer.input_rows + 2 * layer.outputs + layer.partial_sums
    moved = (layer.input_rows + layer.outputs) * activation_bytes(chip)
    latency = mvms * (mvm_ns(chip) / replicas + digital_ops / chip.digital_ops_per_ns
                      + moved / chip.noc_bytes_per_ns)
    array_pj = mvms * sum(tile_mvm_pj(chip, t.rows, t.cols) for t in layer.tiles)
    return LayerCost(layer.name, mvms, replicas, latency, array_pj, mvms * digital_ops * chip.digital_pj_per_op,
                     mvms * moved * chip.noc_pj_per_byte, 2 * mvms * layer.weights)


def stage_ns(chip: Chip, layer: LayerWork, replicas: int) -> float:
    """The layer's pipeline stage time with ``replicas`` copies (its latency); what replication balances."""
    return layer_cost(chip, layer, replicas).latency_ns


@dataclass(frozen=True)
class ModelCost:
    """The per-layer figures and the totals of one inference."""

    layers: tuple[LayerCost, ...]
    interval_ns: float
    """The pipeline's interval: its slowest stage (a layer, or a physical array shared by several)."""

    @property
    def latency_ns(self) -> float:
        """Layer-by-layer latency of one inference."""
        return sum(layer.latency_ns for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        return sum(layer.energy_pj for layer in self.layers)

    @property
    def operations(self) -> int:
        return sum(layer.operations for layer in self.layers)

    @property
    def inferences_per_s(self) -> float:
        return 1e9 / self.interval_ns if self.interval_ns else 0.0

    @property
    def tops(self) -> float:
        """Operations per second of the pipelined model, 1e12."""
        return self.operations / self.interval_ns / 1e3 if self.interval_ns else 0.0

    @property
    def tops_per_watt(self) -> float:
        """Operations per joule, 1e12 (= operations per pJ)."""
        return self.operations / self.energy_pj if self.energy_pj else 0.0

    def as_dict(self) -> dict:
        energy, latency = self.energy_pj, self.latency_ns
        return {"latency_ns": latency, "interval_ns": self.interval_ns, "energy_pj": energy,
                "inferences_per_s": self.inferences_per_s, "operations": self.operations, "tops": self.tops,
                "tops_per_watt": self.tops_per_watt,
                "layers": [layer.as_dict() | {"energy_share": layer.energy_pj / energy if energy else 0.0,
                                              "latency_share": layer.latency_ns / latency if latency else 0.0}
                           for layer in self.layers]}


def model_cost(chip: Chip, layers: list[LayerWork], replicas: dict[str, int], array_busy_ns: float = 0.0) -> ModelCost:
    """Every layer's cost with its replica count; ``array_busy_ns`` is the busiest physical array's time
    per inference (several layers' tiles sharing it), which bounds the interval too."""
    costs = tuple(layer_cost(chip, layer, replicas.get(layer.name, 1)) for layer in layers)
    interval = max([array_busy_ns, *(cost.latency_ns for cost in costs)])
    return ModelCost(costs, interval)


def peak(chip: Chip) -> tuple[float, float]:
    """(TOPS, TOPS/W) of one chip with every array holding a full tile and running MVMs back to back:
    the formulas above without the model's digital periphery or data movement."""
    full = TileWork("peak", (0, chip.rows), (0, chip.weight_columns))
    tiles = chip.arrays // chip.arrays_per_tile
    operations = 2 * full.weight_count
    tops = tiles * operations / mvm_ns(chip) / 1e3
    return tops, operations / tile_mvm_pj(chip, full.rows, full.cols)

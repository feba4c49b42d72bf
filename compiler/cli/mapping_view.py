"""``xbar inspect --mapping``: a chip target's per-layer table (arrays, cores, replicas, utilisation, latency,
energy, share of the total) and its totals, read from the file's ``xbar.mapping`` record."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ...passes.errors import InspectError
from ..inspection.read import Inspection
from .console import say

COLUMNS = ("layer", "MVMs", "arrays", "cores", "replicas", "utilisation", "latency", "energy", "share")


def mapping_record_of(inspection: Inspection) -> dict:
    """The file's mapping record; :class:`InspectError` when it was compiled without a chip target."""
    record = inspection.metadata.get("xbar.mapping")
    if not isinstance(record, dict):
        raise InspectError(f"{inspection.path} was compiled without a chip target: compile it with "
                           "`xbar compile --chip NAME` (see `xbar chips`) to see its mapping")
    return record


def print_mapping(console: Console, inspection: Inspection) -> None:
    record = mapping_record_of(inspection)
    chips = f"{record['chips']} {record['chip']} chips" if record["chips"] > 1 else record["chip"]
    table = Table(title=f"{inspection.path}: {chips}, {record['arrays_used']} of {record['arrays_available']} "
                  f"arrays, {record['utilisation']:.1%} of the devices hold weights", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in record["layers"]:
        table.add_row(escape(layer["layer"]), str(layer["mvms"]), str(layer["arrays"]), str(layer["cores"]),
                      str(layer["replicas"]), f"{layer['utilisation']:.1%}", _ns(layer["latency_ns"]),
                      _pj(layer["energy_pj"]), f"{layer['energy_share']:.1%}")
    say(console, table)
    totals = record["totals"]
    say(console, f"per inference: {_ns(totals['latency_ns'])} layer by layer, {_pj(totals['energy_pj'])}; "
                 f"pipelined: one inference every {_ns(totals['interval_ns'])} "
                 f"({totals['inferences_per_s']:.3g}/s), {totals['tops']:.3g} TOPS, "
                 f"{totals['tops_per_watt']:.3g} TOPS/W")


def _ns(value: float) -> str:
    for unit, scale in (("ms", 1e6), ("us", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} ns"


def _pj(value: float) -> str:
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} pJ"

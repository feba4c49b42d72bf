"""The pipeline: prepare -> calibrate -> convert (PyTorch's PT2E shape).

``prepare`` copies the user's model once, captures it, decides what to do with
each crossbar layer, then runs the passes in a straight line, linting the graph
and checking each pass's postconditions; a failure names the pass.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import fx, nn

from ..passes.calibration import CalibrationMethod, RangeObserver
from ..passes.capture import CaptureMethod, capture
from ..passes.input_range import InputRange
from ..passes.insert_converters import InsertConvertersPass
from ..passes.insert_input_range import InsertInputRangePass
from ..passes.isolate_layers import IsolateCrossbarLayersPass
from ..passes.lower_conductances import LowerToConductancesPass
from ..passes.matching import LayerSelection, Pattern, find_crossbar_layers
from ..passes.plan import LayerPlan, PassError
from ..passes.tiling import TileLayersPass
from .config import HardwareConfig

META = "xbar"
ZERO_RANGE = 1e-6
"""Smallest range a calibration sets, so an all-zero input never gives r = 0."""


class NoCrossbarLayersWarning(UserWarning):
    """The model has no layer that maps to a crossbar; it stays fully digital."""


def run_passes(graph_module: fx.GraphModule, passes: Sequence) -> fx.GraphModule:
    """Run passes in order; after each, lint the graph and recompile."""
    for graph_pass in passes:
        name = type(graph_pass).__name__
        try:
            result = graph_pass(graph_module)
            graph_module = result.graph_module
            graph_module.graph.lint()
        except PassError:
            raise
        except Exception as exc:
            raise PassError(f"{name} failed: {exc}") from exc
        graph_module.recompile()
    return graph_module


def plan_layers(graph_module: fx.GraphModule, config: HardwareConfig,
                selection: LayerSelection) -> list[LayerPlan]:
    """Find the crossbar layers and attach to each the settings its rules give it
    (layers a rule keeps digital are left out)."""
    plans = []
    for layer in find_crossbar_layers(graph_module, selection):
        resolved, rule = config.resolve(layer.name, layer.module_type)
        if resolved is not None:
            plans.append(LayerPlan(layer, resolved.forward, resolved.pre_post.input_range,
                                   resolved.converter, resolved.mapping, rule))
    return plans


def prepare(
    model: nn.Module,
    example_inputs: Sequence,
    config: Optional[HardwareConfig] = None,
    *,
    include: Sequence[Pattern] = (),
    exclude: Sequence[Pattern] = (),
    keep_first_last_digital: bool = False,
    capture_method: CaptureMethod = "export",
) -> fx.GraphModule:
    """Capture ``model`` and insert the simulated crossbar periphery.

    Returns a trainable GraphModule in the model's train/eval mode: each selected linear / convolution layer
    reads its input through a learned input range, DAC and ADC (as configured),
    so fine-tuning moves the ranges. The user's model is not modified.
    ``include`` / ``exclude`` take layer-name globs or module types.
    """
    config = (config or HardwareConfig()).validate()
    training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model = copy.deepcopy(model)
    graph_module = capture(model, tuple(example_inputs), capture_method)
    plans = plan_layers(graph_module, config, LayerSelection(include, exclude, keep_first_last_digital))
    if not plans:
        warnings.warn("no linear or convolution layer with a constant weight was found (or all were "
                      "excluded): the model stays digital", NoCrossbarLayersWarning, stacklevel=2)
    graph_module = run_passes(graph_module, [IsolateCrossbarLayersPass(plans), TileLayersPass(),
                                             InsertInputRangePass(), InsertConvertersPass()])
    graph_module.meta[META] = {"config": config, "plans": plans}
    return graph_module.train(training)


def input_ranges(prepared: fx.GraphModule) -> dict[str, InputRange]:
    """Module name -> InputRange module of a prepared model."""
    return {name: m for name, m in prepared.named_children() if isinstance(m, InputRange)}


@torch.no_grad()
def calibrate(
    prepared: fx.GraphModule,
    batches: Iterable,
    method: CalibrationMethod | str = CalibrationMethod.INIT_FROM_DATA,
    *,
    quantile: float = 0.9999,
    max_samples: int = 100_000,
    progress: bool = False,
) -> int:
    """Set the input ranges from data; returns the number of batches run.

    Runs ``batches`` (tensors, or tuples of model inputs) through the prepared
    model in eval mode. The default is the reference rule (aihwkit's init from
    data: ``init_std_alpha * std`` averaged over the first ``init_from_data``
    batches); ``"MovingStd"``, ``"MovingQuantile"``, ``"CacheQuantile"`` and
    ``"Max"`` are post-training methods named as aihwkit names them. The method
    is recorded in each range's ``calibration_info``.
    """
    method = CalibrationMethod(method) if isinstance(method, str) else method
    ranges = input_ranges(prepared)
    reference = method == CalibrationMethod.INIT_FROM_DATA
    observers = {} if reference else {
        name: RangeObserver(method, std_alpha=module.params.init_std_alpha, quantile=quantile,
                            max_samples=max_samples) for name, module in ranges.items()}
    hooks = [ranges[name].register_forward_pre_hook(lambda _, args, o=observer: o.observe(args[0]))
             for name, observer in observers.items()]
    was_training = prepared.training
    prepared.eval()
    for module in ranges.values():
        module.calibrating = reference
    count = 0
    try:
        if progress:
            from rich.progress import track
            batches = track(batches, description=f"calibrating input ranges ({method.value})")
        for batch in batches:
            prepared(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
            count += 1
    finally:
        for hook in hooks:
            hook.remove()
        for module in ranges.values():
            module.calibrating = False
        prepared.train(was_training)
    for name, module in ranges.items():
        if reference:
            info = f"InitFromData(batches={int(module.init_batches)})"
        else:
            module.value.data.fill_(max(observers[name].result(), ZERO_RANGE))
            module.init_batches.fill_(module.params.init_from_data)  # training must not re-initialise it
            info = observers[name].describe()
        module.params = dataclasses.replace(module.params, calibration_info=info)
    return count


def convert(prepared: fx.GraphModule) -> fx.GraphModule:
    """Lower a prepared model to conductances; returns a new GraphModule in eval mode."""
    if META not in prepared.meta:
        raise ValueError("convert() expects the GraphModule returned by prepare()")
    converted = copy.deepcopy(prepared)
    converted.meta[META] = prepared.meta[META]
    converted = run_passes(converted, [LowerToConductancesPass()])
    return converted.eval()


@dataclass
class CompileResult:
    """What :func:`compile_model` produced."""

    prepared: fx.GraphModule
    converted: fx.GraphModule
    output: Optional[Path]
    calibration_batches: int


def compile_model(
    model: nn.Module,
    example_inputs: Sequence,
    config: Optional[HardwareConfig] = None,
    *,
    calibration_data: Optional[Iterable] = None,
    calibration_method: CalibrationMethod | str = CalibrationMethod.INIT_FROM_DATA,
    output: Optional[str | Path] = None,
    progress: bool = False,
    **prepare_options,
) -> CompileResult:
    """prepare -> calibrate (if data is given) -> convert -> export ONNX (if ``output``).

    ``prepare_options`` are those of :func:`prepare` (include, exclude, ...).
    """
    prepared = prepare(model, example_inputs, config, **prepare_options)
    batches = 0
    if calibration_data is not None:
        batches = calibrate(prepared, calibration_data, calibration_method, progress=progress)
    converted = convert(prepared)
    path = None
    if output is not None:
        from .export import export_onnx  # export imports this module: import it on first use

        path = Path(output)
        export_onnx(converted, example_inputs, path)
    return CompileResult(prepared, converted, path, batches)

"""The pipeline: prepare -> calibrate -> convert (PyTorch's PT2E shape).

``prepare`` copies the user's model once, captures it, decides what to do with
each crossbar layer (a :class:`~xbar.compiler.pipeline.record.CompileRecord`), then runs
the passes in a straight line, linting the graph and checking each pass's
postconditions; a failure names the pass.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
import torch.utils._pytree as pytree
from rich.progress import track
from torch import fx, nn

from ...passes.capture import CaptureMethod, capture_with_shapes, copy_graph_module
from ...passes.digital import digital_layers
from ...passes.digital_layer import DigitalLayer
from ...passes.errors import ModelError, NoCrossbarLayersWarning, UnmatchedSelectorWarning, UserError
from ...passes.infra import run_passes
from ...passes.inputs import positional_inputs
from ...passes.matching import CrossbarLayer, LayerSelection, Pattern, match_layers
from ...passes.numerics.calibration import CalibrationMethod, ObserverOptions, observer_for
from ...passes.numerics.converter import abs_max_of
from ...passes.numerics.global_batch import BatchStatistics, shared_by
from ...passes.numerics.input_range import InputRange
from ...passes.numerics.training_noise import TrainingNoise
from ...passes.operands import resolve_attribute
from ...passes.plan import LayerPlan
from ...passes.rewrites.bilinear_linear import BilinearAsLinearPass
from ...passes.rewrites.einsum_linear import EinsumAsLinearPass
from ...passes.rewrites.insert_converters import InsertConvertersPass
from ...passes.rewrites.insert_input_range import InsertInputRangePass
from ...passes.rewrites.insert_managed_reads import InsertManagedReadsPass
from ...passes.rewrites.insert_out_scaling import InsertOutScalingPass
from ...passes.rewrites.insert_patch_range_gradient import InsertPatchRangeGradientPass
from ...passes.rewrites.insert_training_noise import InsertTrainingNoisePass
from ...passes.rewrites.isolate_layers import IsolateCrossbarLayersPass
from ...passes.rewrites.lower_conductances import LowerToConductancesPass
from ...passes.rewrites.remove_training_noise import RemoveTrainingNoisePass
from ...passes.rewrites.same_padding import UnevenSamePaddingPass
from ...passes.rewrites.tiling import TileLayersPass
from ...passes.rewrites.unroll_recurrent import UnrollRecurrentPass
from ..chip.description import Chip
from ..chip.placement import Mapping
from ..chip.shipped import chip_named
from ..chip.target import check_capacity, chip_config, map_converted
from ..config.hardware import HardwareConfig
from ..onnx.export import export_onnx
from .compiled import maybe_compiled
from .distributed import group_in_use, in_lockstep
from .record import CompileRecord, Stage, attach_record, record_of

ZERO_RANGE = 1e-6
"""Smallest range a calibration sets, so an all-zero input never gives r = 0."""


def plan_layers(graph_module: fx.GraphModule, config: HardwareConfig,
                selection: LayerSelection) -> tuple[tuple[LayerPlan, ...], tuple[DigitalLayer, ...]]:
    """Find the crossbar layers and attach to each the settings its rules give it; list the
    layers with a weight that stay digital, and why.

    Layers the selection or a rule keeps digital get no plan. A pattern or rule
    that matches no layer is warned about; a selection that leaves every layer
    digital is refused.
    """
    matching = match_layers(graph_module)
    layers, reasons = matching.layers, dict(matching.refused)
    if not layers:
        warnings.warn("no linear or convolution layer with a constant weight was found: the model stays digital",
                      NoCrossbarLayersWarning, stacklevel=3)
        return (), digital_layers(graph_module, set(), reasons)
    for selector in _unmatched_selectors(layers, config, selection):
        warnings.warn(f"{selector} matches no crossbar layer of the model ({_few(layer.name for layer in layers)}); "
                      "check its spelling", UnmatchedSelectorWarning, stacklevel=3)
    plans = []
    for layer in layers:
        refusal = selection.refusal(layer, layers)
        resolved, rule = (None, None) if refusal else config.resolve(layer.name, layer.module_type)
        if resolved is not None:
            plans.append(LayerPlan(layer, resolved.forward, resolved.pre_post.input_range,
                                   resolved.converter, resolved.mapping, rule, resolved.modifier,
                                   resolved.remap, resolved.clip))
        else:
            reasons[layer.node.name] = refusal or f"digital by layer rule {rule}"
    if not plans:
        raise UserError(f"the include / exclude patterns, keep_first_last_digital or digital rules leave all "
                        f"{len(layers)} crossbar layers ({_few(layer.name for layer in layers)}) digital; loosen them")
    return tuple(plans), digital_layers(graph_module, {plan.layer.weight for plan in plans}, reasons)


def refuse_non_finite_parameters(graph_module: fx.GraphModule, plans: Sequence[LayerPlan]) -> None:
    """:class:`ModelError` naming the first crossbar weight or bias that holds NaN or infinity
    (no conductance can program it)."""
    names = dict.fromkeys(name for plan in plans for name in (plan.layer.weight, plan.layer.bias) if name)
    for name in names:
        tensor = resolve_attribute(graph_module, name)
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or not tensor.numel():
            continue
        if not abs_max_of(tensor).isfinite():  # from aminmax: no copy of a large weight
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"parameter {name!r} holds {bad} NaN or infinite value{'s' * (bad != 1)}; "
                             "fix the model's weights (a diverged training, a bad checkpoint) before compiling")


def _unmatched_selectors(layers: list[CrossbarLayer], config: HardwareConfig,
                         selection: LayerSelection) -> list[str]:
    """Descriptions of the include / exclude patterns and layer rules that match none of ``layers``."""
    unmatched = [f"{option} pattern {getattr(pattern, '__name__', pattern)!r}"
                 for option, patterns in (("include", selection.include), ("exclude", selection.exclude))
                 for pattern in patterns if not any(selection.matches(layer, [pattern]) for layer in layers)]
    return unmatched + [f"layer rule {rule}" for rule in config.layers
                        if not any(rule.matches(layer.name, layer.module_type) for layer in layers)]


def _few(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def prepare(
    model: nn.Module,
    example_inputs: Sequence,
    config: Optional[HardwareConfig] = None,
    *,
    include: Sequence[Pattern] = (),
    exclude: Sequence[Pattern] = (),
    keep_first_last_digital: bool = False,
    capture_method: CaptureMethod = "export",
    dynamic_shapes=None,
    share_weights: bool = False,
) -> fx.GraphModule:
    """Capture ``model`` and insert the simulated crossbar periphery.

    Before matching, recurrent layers are unrolled over the example's sequence length
    into per-step linear layers, and matmul-shaped einsums, bilinear layers and
    even-kernel ``'same'`` convolutions are given the forms the layer kinds match
    (:mod:`xbar.passes.rewrites`). Returns a trainable GraphModule in the model's
    train/eval mode: each selected
    linear / convolution layer reads its input through a learned input range, DAC
    and ADC (as configured), so fine-tuning moves the ranges; the config's training
    noise (``modifier``, ``forward.out_noise``, ``forward.w_noise``) acts in
    training mode. The user's model is not modified. ``example_inputs`` is a tuple of the model's positional
    inputs (tensors, or dicts / tuples of them), or a dict keyed by ``forward``'s parameter names;
    ``include`` / ``exclude`` take layer-name globs or module types.

    ``dynamic_shapes`` (torch.export's form, e.g. ``({0: Dim("batch"), 1: Dim("seq")},)``) says which
    input dimensions stay free in the capture, the compiled path and the ONNX file; None is xbar's
    default: the batch dimension, and the sequence dimension of token ids [batch, seq] or of
    [batch, seq, features] into a model of linear layers (:mod:`xbar.passes.shapes`).

    ``share_weights=True`` is for a model too large to hold twice: the prepared model holds the model's own
    parameter and buffer tensors instead of copies (its modules are still copies, so the model is not
    modified), and :func:`convert` gives the converted model's digital ops the same tensors (a language
    model's tied embedding); only the conductances are new. Training the prepared model then trains your
    model's tensors too, and the converted model's digital layers with them. The default copies them.
    """
    if not isinstance(example_inputs, (tuple, list, dict)):
        raise UserError(f"prepare() takes the example inputs as a tuple, e.g. prepare(model, (x,), config); "
                        f"got a {type(example_inputs).__name__}")
    example_inputs = positional_inputs(model, example_inputs, "prepare() example_inputs")
    config = (config or HardwareConfig()).validate()
    training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        shared = [*model.parameters(), *model.buffers()] if share_weights else []
        model = copy.deepcopy(model, {id(tensor): tensor for tensor in shared})
    graph_module, shapes = capture_with_shapes(model, example_inputs, capture_method, dynamic_shapes)
    graph_module = run_passes(graph_module, [UnrollRecurrentPass(example_inputs), EinsumAsLinearPass(),
                                             BilinearAsLinearPass(), UnevenSamePaddingPass()])
    plans, digital = plan_layers(graph_module, config, LayerSelection(include, exclude, keep_first_last_digital))
    refuse_non_finite_parameters(graph_module, plans)
    graph_module = run_passes(graph_module, [IsolateCrossbarLayersPass(plans), TileLayersPass(),
                                             InsertInputRangePass(), InsertConvertersPass(),
                                             InsertOutScalingPass(), InsertTrainingNoisePass(),
                                             InsertPatchRangeGradientPass(), InsertManagedReadsPass()])
    attach_record(graph_module, CompileRecord(config, plans, digital, dynamic_shapes=shapes,
                                              shares_weights=share_weights))
    return graph_module.train(training)


def input_ranges(prepared: fx.GraphModule) -> dict[str, InputRange]:
    """Module name -> InputRange module of a prepared model."""
    return {name: m for name, m in prepared.named_children() if isinstance(m, InputRange)}


def require_batches(data, caller: str) -> None:
    """Refuse one tensor where an iterable of batches is expected (iterating it would give single samples)."""
    if isinstance(data, torch.Tensor):
        raise UserError(f"{caller} takes an iterable of batches, not one tensor: pass e.g. x.split(64), "
                        "or [x] for a single batch")


def _model_inputs(prepared: fx.GraphModule, batch, index: int) -> tuple:
    """A batch as the model's positional inputs (:func:`xbar.passes.inputs.positional_inputs`: a tuple of
    them, a dict keyed by forward's parameter names, else the one input); :class:`UserError` if a tensor
    in it is not finite."""
    inputs = positional_inputs(prepared, batch, f"calibration batch {index}")
    for x in pytree.tree_leaves(inputs):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not torch.isfinite(x).all():
            raise UserError(f"calibration batch {index} holds NaN or infinite values; remove them from the data")
    return inputs


@torch.no_grad()
def calibrate(
    prepared: fx.GraphModule,
    batches: Iterable,
    method: CalibrationMethod | str = CalibrationMethod.INIT_FROM_DATA,
    *,
    quantile: float = 0.9999,
    max_samples: int = 100_000,
    progress: bool = False,
    compile: bool = False,
    process_group: Optional[torch.distributed.ProcessGroup] = None,
) -> int:
    """Set the input ranges from data; returns the number of batches run.

    Runs ``batches`` (tensors, tuples of model inputs, or dicts keyed by forward's parameter
    names) through the prepared model in eval mode. The default is the reference rule (aihwkit's init from
    data: ``init_std_alpha * std`` averaged over the first ``init_from_data``
    batches), without training noise; ``"MovingStd"``, ``"MovingQuantile"``, ``"CacheQuantile"`` and
    ``"Max"`` are post-training methods named as aihwkit names them. The method
    is recorded in the compile record (:attr:`CompileRecord.calibration`, one entry
    per range). A batch with NaN or infinite values is refused. ``compile=True`` runs the batches through
    ``torch.compile`` (:mod:`xbar.compiler.pipeline.compiled`; the observers of the other
    methods run eagerly between its graphs).

    In a torch.distributed process group (``process_group``, else the default
    group when one is initialised) each rank passes its share of every batch,
    the same number of batches on every rank, and every rank gets the ranges one
    process would get on the global batches (the shares concatenated in rank
    order): each method's statistics are taken over the global batch, as
    :mod:`xbar.passes.numerics.calibration` describes.
    """
    record = record_of(prepared, "calibrate()", Stage.PREPARED)
    require_batches(batches, "calibrate()")
    method = CalibrationMethod(method) if isinstance(method, str) else method
    ranges = input_ranges(prepared)
    reference = method == CalibrationMethod.INIT_FROM_DATA
    statistics = BatchStatistics(group_in_use(process_group))
    observers = {} if reference else {
        name: observer_for(method, ObserverOptions(module.params.init_std_alpha, quantile, max_samples), statistics)
        for name, module in ranges.items()}
    hooks = [ranges[name].register_forward_pre_hook(lambda m, args, o=observer: o.observe(args[0], m.patches))
             for name, observer in observers.items()]
    was_training = prepared.training
    prepared.eval()
    noise = [module for module in prepared.modules() if isinstance(module, TrainingNoise)]
    for module in noise:  # the ranges are set for the noise-free activations the chip sees
        module.calibrating = True
    for module in ranges.values():
        module.calibrating = reference
    run = maybe_compiled(prepared, compile, statistics.group, fullgraph=reference)
    count = 0
    try:
        steps = in_lockstep((_model_inputs(prepared, b, i) for i, b in enumerate(batches)), statistics.group, "batches",
                            at_once=isinstance(batches, Sequence))  # a list is in memory: agree once
        if progress:
            steps = track(steps, total=len(batches) if isinstance(batches, Sequence) else None,
                          description=f"calibrating input ranges ({method.value})")
        with shared_by(ranges.values(), statistics):
            for inputs in steps:
                run(*inputs)
                count += 1
            results = {name: max(observer.result(), ZERO_RANGE) for name, observer in observers.items()}
    finally:
        for hook in hooks:
            hook.remove()
        for module in [*ranges.values(), *noise]:
            module.calibrating = False
        prepared.train(was_training)
    for name, observer in observers.items():
        ranges[name].value.data.fill_(results[name])
        ranges[name].init_batches.fill_(ranges[name].params.init_from_data)  # training must not re-initialise it
    found = {name: observers[name].describe() if name in observers else
             f"InitFromData(batches={int(module.init_batches)})" for name, module in ranges.items()}
    attach_record(prepared, replace(record, calibration={**record.calibration, **found}))
    return count


def convert(prepared: fx.GraphModule) -> fx.GraphModule:
    """Lower a prepared model to conductances; returns a new GraphModule in eval mode. Its digital ops read
    copies of the prepared model's crossbar weights they share (a tied embedding), unless it was prepared
    with ``share_weights``."""
    record = record_of(prepared, "convert()", Stage.PREPARED)
    weights = [w for w in (resolve_attribute(prepared, plan.layer.weight) for plan in record.plans) if w is not None]
    converted = attach_record(copy_graph_module(prepared, share=weights), record.converted())  # lowered, not copied
    converted = run_passes(converted, [RemoveTrainingNoisePass(), LowerToConductancesPass()])
    if not record.shares_weights:
        _own_copies(converted, weights)
    return converted.eval()


def _own_copies(module: nn.Module, shared: list[torch.Tensor]) -> None:
    """Give ``module`` its own copy of any ``shared`` tensor it still holds (a weight a digital op reads too),
    one copy per tensor: names that alias one tensor (a language model's tied embedding and head) still do."""
    copies = {id(tensor): None for tensor in shared}
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        if id(tensor) in copies:
            if copies[id(tensor)] is None:
                copied = tensor.detach().clone()
                copies[id(tensor)] = nn.Parameter(copied, tensor.requires_grad) if isinstance(
                    tensor, nn.Parameter) else copied
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner), attr, copies[id(tensor)])


@dataclass
class CompileResult:
    """What :func:`compile_model` produced."""

    prepared: fx.GraphModule
    converted: fx.GraphModule
    output: Optional[Path]
    calibration_batches: int
    mapping: Optional[Mapping] = None
    """Where the arrays sit on the chip and what one inference costs (with ``chip=``)."""


def compile_model(
    model: nn.Module,
    example_inputs: Sequence,
    config: Optional[HardwareConfig] = None,
    *,
    calibration_data: Optional[Iterable] = None,
    calibration_method: CalibrationMethod | str = CalibrationMethod.INIT_FROM_DATA,
    output: Optional[str | Path] = None,
    progress: bool = False,
    chip: Optional[Chip | str] = None,
    chips: int = 1,
    scan_recurrent: bool = False,
    **prepare_options,
) -> CompileResult:
    """prepare -> calibrate (if data is given) -> convert -> [place on a chip] -> export ONNX (if ``output``).

    ``calibration_data`` is an iterable of batches; ``prepare_options`` are those
    of :func:`prepare` (include, exclude, dynamic_shapes, ...). ``chip`` (a
    :class:`~xbar.compiler.chip.description.Chip`, a shipped chip's name or a .toml file) sets the
    tiling from its arrays, places every array on
    ``chips`` such chips and costs one inference (:mod:`xbar.compiler.chip.target`); a model that does
    not fit raises :class:`~xbar.passes.errors.CapacityError` before anything is written.
    ``scan_recurrent`` is :func:`export_onnx`'s: recurrent layers as ONNX ``Scan`` loops.
    """
    require_batches(calibration_data, "compile_model(calibration_data=...)")
    if chip is not None:
        chip = chip_named(chip) if isinstance(chip, str) else chip
        config = chip_config(config or HardwareConfig(), chip)
    prepared = prepare(model, example_inputs, config, **prepare_options)
    if chip is not None:
        check_capacity(convert(prepared), chip, chips)  # before the minutes calibration may take
    batches = 0
    if calibration_data is not None:
        batches = calibrate(prepared, calibration_data, calibration_method, progress=progress)
    converted = convert(prepared)
    mapping = None if chip is None else map_converted(converted, example_inputs, chip, chips)
    path = None if output is None else export_onnx(converted, example_inputs, output, scan_recurrent=scan_recurrent)
    return CompileResult(prepared, converted, path, batches, mapping)

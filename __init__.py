"""xbar: compile trained PyTorch models for analog in-memory-computing crossbar arrays.

The public API::

    from xbar import HardwareConfig, prepare, calibrate, fine_tune, convert, export_onnx, compile_model
    from xbar import program, drift, recalibrate, PCMLikeNoiseModel   # device realism
    from xbar import Chip, CHIPS, chip_named, peak            # chip targets
    from xbar import METRICS, metric, score                   # any task's metric

Subpackages: ``xbar.compiler`` (the driver: config, pipeline, export, inspection,
command line), ``xbar.passes`` (the FX passes and the numerics they insert) and
``xbar.models`` (the example models and their trained checkpoints).

Names are imported on first use, so ``xbar --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib

# Absolute, not relative: pytest imports this file by itself when it collects the checkout,
# whose folder name need not be a valid package name.
from xbar.compiler.devices.registry import NOISE_MODELS
from xbar.compiler.version import __version__

_PUBLIC = {
    "xbar.compiler.config.hardware": ("HardwareConfig", "LayerRule"),
    "xbar.compiler.devices.evaluation": ("OutNoiseAtRead", "accuracy_over_time"),
    "xbar.compiler.metrics": ("METRICS", "accuracy", "metric"),
    "xbar.compiler.metrics.base": ("Metric", "score"),
    "xbar.compiler.chip.description": ("Chip",),
    "xbar.compiler.chip.shipped": ("CHIPS", "chip_named"),
    "xbar.compiler.chip.target": ("map_converted",),
    "xbar.compiler.chip.cost": ("peak",),
    "xbar.compiler.onnx.export": ("export_onnx",),
    "xbar.compiler.onnx.evaluation": ("evaluate_onnx", "onnx_accuracy_over_time"),
    "xbar.compiler.pipeline.finetune": ("FineTuning", "HWA_FINE_TUNING", "fine_tune"),
    "xbar.compiler.pipeline.stages": ("CompileResult", "calibrate", "compile_model", "convert", "prepare"),
    "xbar.compiler.config.presets": ("HWA_TRAINING_NOISE", "preset_config"),
    "xbar.compiler.devices.programming": ("ProgrammingRecord", "drift", "program"),
    "xbar.compiler.devices.recalibration": ("RecalibrationMethod", "recalibrate"),
    "xbar.compiler.onnx.layers": ("ExportError",),
    "xbar.compiler.program_files.api": ("load_conductances", "write_programming_files"),
    "xbar.passes.numerics.calibration": ("CalibrationMethod",),
    "xbar.passes.numerics.converter": ("SinglePairConductanceConverter",),
    "xbar.passes.numerics.fusion_converter": ("FusionConductanceConverter",),
    "xbar.passes.numerics.weight_constraints": ("constrain_weights",),
    "xbar.passes.constraint_parameters": ("WeightClipParameter", "WeightClipType", "WeightRemapParameter",
                                          "WeightRemapType"),
    "xbar.compiler.devices.base": ("BaseNoiseModel",),
    "xbar.passes.errors": ("NoCrossbarLayersWarning", "UnmatchedSelectorWarning", "UserError", "XbarError"),
    "xbar.passes.parameters": ("BoundManagementType", "ConfigError", "ConvRangeElements", "InputRangeParameter",
                               "IOParameters", "MappingParameter", "NoiseManagementType", "PrePostProcessingParameter",
                               "WeightModifierParameter", "WeightModifierType", "WeightNoiseType"),
}
# Every registered device model is public (PCMLikeNoiseModel, HermesNoiseModel, ReRamCMONoiseModel, ...).
_PUBLIC |= {f"xbar.compiler.devices.{entry.module}": (entry.class_name,) for entry in NOISE_MODELS.values()}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_HOME) + ["__version__"]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'xbar' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__

"""xbar: compile trained PyTorch models for analog crossbar arrays."""

from importlib.metadata import version

from passes.converter import SinglePairConductanceConverter
from passes.parameters import (
    BoundManagementType,
    ConfigError,
    InputRangeParameter,
    IOParameters,
    MappingParameter,
    NoiseManagementType,
    PrePostProcessingParameter,
)

from .config import HardwareConfig, LayerRule
from .export import ExportError, export_onnx
from .finetune import FineTuning, fine_tune
from .pipeline import CompileResult, NoCrossbarLayersWarning, calibrate, compile_model, convert, prepare

__version__ = version("xbar-compiler")

__all__ = [
    "BoundManagementType", "CompileResult", "ConfigError", "ExportError", "FineTuning", "HardwareConfig",
    "InputRangeParameter", "IOParameters", "LayerRule", "MappingParameter", "NoCrossbarLayersWarning",
    "NoiseManagementType", "PrePostProcessingParameter", "SinglePairConductanceConverter", "calibrate",
    "compile_model", "convert", "export_onnx", "fine_tune", "prepare", "__version__",
]

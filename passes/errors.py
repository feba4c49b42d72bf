"""Every error and warning class of xbar, in one place.

Every error xbar raises on purpose is an :class:`XbarError`. A :class:`UserError`
is the user's to fix (a configuration, data, a model file, an API call, a layer
that cannot be tiled to the array size): its message says what to do, and the
command line exits with status 2. Any other ``XbarError`` means the work failed
(a model that cannot be captured or exported): status 1. Every ``UserError`` is
also a ``ValueError``, so code written against aihwkit's checks still catches them.
"""


# The bases

class XbarError(Exception):
    """Base of every error xbar raises on purpose."""


class UserError(XbarError, ValueError):
    """Input the user can fix; the message says how."""


# The user's to fix (exit status 2)

class ConfigError(UserError):
    """A hardware configuration that cannot be simulated or mapped."""


class ConverterError(UserError):
    """A conductance converter given values it cannot use (a ``ValueError``, as aihwkit raises)."""


class UsageError(UserError):
    """The command line asks for something that cannot be done as written."""


class ModelError(UserError):
    """A model, factory or weights file that cannot be used as given; the message says what to do."""


class DataError(UserError):
    """Data that cannot be used; the message says why and what to do."""


class SequenceLengthError(DataError):
    """An input sequence of another length than the one a recurrent layer was unrolled for."""


class MetricError(UserError):
    """A metric that does not fit the model's outputs or the targets (their shapes or class indices)."""


class MatchError(UserError):
    """The graph cannot be matched as it is (e.g. it was decomposed)."""


class TilingError(UserError):
    """A layer cannot be cut to the configured array size."""


class OutputPathError(UserError):
    """An output path that cannot be written; the message asks for another."""


class CapacityError(UserError):
    """A model's arrays do not fit the chips it is compiled for; the message gives the numbers."""


class InspectError(UserError):
    """A file or model that cannot be inspected; the message says why and what to do."""


class MeasuredConductancesError(UserError):
    """A read-back of measured conductances that does not match its manifest or this model; says what differs."""


class DynamicShapeError(UserError):
    """Dynamic shapes that do not fit the inputs, or a dynamic dimension the model cannot take."""


class InputsError(UserError):
    """Inputs that do not fit the model's forward: their count, a dict key it does not name, sample counts."""


# The work failed (exit status 1)

class CaptureError(XbarError, RuntimeError):
    """The model could not be captured as a graph."""


class PassError(XbarError, RuntimeError):
    """A pass failed; the message names the pass."""


class PostconditionError(PassError):
    """A pass broke its own postcondition."""


class ExportError(XbarError, RuntimeError):
    """The model could not be exported, or the exported graph broke the ONNX contract."""


class WriteError(XbarError):
    """Writing an output file failed although its path was checked (a full disk, a vanished directory)."""


class DeviceModelError(XbarError, RuntimeError):
    """A device model returned something that cannot be a tensor of conductances."""


# Warnings

class NoCrossbarLayersWarning(UserWarning):
    """The model has no layer that maps to a crossbar; it stays fully digital."""


class UnmatchedSelectorWarning(UserWarning):
    """A layer rule, include / exclude pattern or layer name matched no layer of the model."""


class CompileUnavailableWarning(UserWarning):
    """``compile=True`` was asked for, but torch.compile's inductor cannot build here: the model runs eagerly."""

"""``HardwareConfig``: aihwkit's configuration shape plus the mapping and converter.

``forward`` (DAC/ADC), ``pre_post.input_range`` and ``mapping`` keep aihwkit's
field names; ``converter`` is the conductance-pair converter. xbar's default is
the ideal periphery with the learned input range enabled (aihwkit's
``InputRangeParameter`` default is disabled; xbar's job is to insert it).
Configs round-trip through plain dicts (JSON / TOML files, ONNX metadata).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

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

ENUMS = {"noise_management": NoiseManagementType, "bound_management": BoundManagementType}


def _default_pre_post() -> PrePostProcessingParameter:
    return PrePostProcessingParameter(input_range=InputRangeParameter(enable=True))


@dataclass
class HardwareConfig:
    """The hardware a model is compiled for.

    Attributes:
        forward: DAC, ADC and output bound (aihwkit's ``IOParameters`` fields).
        pre_post: digital pre/post processing; ``pre_post.input_range`` is the
            learned input range (enabled by default in xbar).
        mapping: array sizes for tiling and the weight-scaling option.
        converter: the conductance-pair converter (aihwkit's
            ``SinglePairConductanceConverter``, g_max=25 uS, g_min=0 by default).
    """

    forward: IOParameters = field(default_factory=IOParameters)
    pre_post: PrePostProcessingParameter = field(default_factory=_default_pre_post)
    mapping: MappingParameter = field(default_factory=MappingParameter)
    converter: SinglePairConductanceConverter = field(default_factory=SinglePairConductanceConverter)

    def validate(self) -> "HardwareConfig":
        """Raise :class:`ConfigError` for a configuration that cannot mean anything."""
        self.forward.validate()
        input_range = self.pre_post.input_range
        input_range.validate()
        self.mapping.validate()
        if not isinstance(self.converter, SinglePairConductanceConverter):
            raise ConfigError(f"converter must be a SinglePairConductanceConverter, got {type(self.converter).__name__}")
        if self.converter.g_max == self.converter.g_min:
            raise ConfigError("converter.g_max must differ from converter.g_min (the scale ratio would be 0)")
        if self.forward.dac_steps and not input_range.enable:
            raise ConfigError("forward.inp_res sets a DAC, but there is no range to scale its input by: "
                              "enable pre_post.input_range or set forward.inp_res <= 0")
        if input_range.enable and input_range.manage_output_clipping:
            if not input_range.supports_manage_output_clipping(self):
                raise ConfigError("pre_post.input_range.manage_output_clipping needs a non-perfect forward "
                                  "with noise_management and bound_management NONE")
            if self.forward.bound <= 0:
                raise ConfigError("pre_post.input_range.manage_output_clipping needs forward.out_bound > 0")
        return self

    def to_dict(self) -> dict:
        """A JSON-ready dict (enums by name)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareConfig":
        """Build from a (possibly partial) dict; unknown keys raise :class:`ConfigError`."""
        return _from_plain(cls, data, "").validate()

    def with_overrides(self, overrides: dict[str, Any]) -> "HardwareConfig":
        """A copy with dotted keys set (``{"forward.inp_res": 254}``), validated."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section = data
            *path, leaf = dotted.split(".")
            for part in path:
                if not isinstance(section.get(part), dict):
                    raise ConfigError(f"unknown config key {dotted!r}")
                section = section[part]
            if leaf not in section:
                raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {sorted(section)}")
            section[leaf] = value
        return HardwareConfig.from_dict(data)


def _to_plain(value):
    if isinstance(value, SinglePairConductanceConverter):
        return {"g_max": float(value.g_max), "g_min": float(value.g_min)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.name
    return value


def _from_plain(cls, data, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {where + unknown[0]!r}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, SinglePairConductanceConverter):
            kwargs[name] = _converter(value, f"{where}{name}")
        elif dataclasses.is_dataclass(default):
            kwargs[name] = _from_plain(type(default), value, f"{where}{name}.")
        elif name in ENUMS:
            kwargs[name] = _enum(ENUMS[name], value, where + name)
        else:
            kwargs[name] = _coerce(value, default, where + name)
    return cls(**kwargs)


def _converter(data, key: str) -> SinglePairConductanceConverter:
    if isinstance(data, SinglePairConductanceConverter):
        return data
    if not isinstance(data, dict) or set(data) - {"g_max", "g_min"}:
        raise ConfigError(f"{key} takes the keys g_max and g_min, got {data!r}")
    try:
        return SinglePairConductanceConverter(**{k: _coerce(v, 0.0, f"{key}.{k}") for k, v in data.items()})
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _enum(enum_type, value, key: str):
    if isinstance(value, enum_type):
        return value
    names = {m.name.lower(): m for m in enum_type} | {m.value.lower(): m for m in enum_type}
    try:
        return names[str(value).lower()]
    except KeyError:
        raise ConfigError(f"{key} must be one of {[m.name for m in enum_type]}, got {value!r}") from None


def _coerce(value, default, key: str):
    """Check a leaf value against the type of its default (ints may stand for floats)."""
    if default is None or value is None:
        return value
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(value, str) and expected in (int, float):
        try:
            return expected(value)
        except ValueError:
            pass
    elif isinstance(value, expected):
        return value
    raise ConfigError(f"{key} must be a {expected.__name__}, got {value!r}")

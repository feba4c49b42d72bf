"""``HardwareConfig``: aihwkit's configuration shape plus the mapping and converter.

``forward`` (DAC/ADC, forward training noise), ``pre_post.input_range``,
``mapping`` (tiling, weight scaling, learned output scales), ``modifier`` (training
weight noise), ``remap`` and ``clip`` keep aihwkit's field names; ``converter`` is
the conductance converter. xbar's default is the
ideal, noise-free periphery with the learned input range enabled (aihwkit's
``InputRangeParameter`` default is disabled; xbar's job is to insert it).
Configs round-trip through plain dicts (JSON / TOML files, ONNX metadata).
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ...passes.constraint_parameters import WeightClipParameter, WeightRemapParameter
from ...passes.errors import ConfigError
from ...passes.module_names import names_module_type
from ...passes.numerics.converter import SinglePairConductanceConverter
from ...passes.numerics.multi_device_converters import MULTI_DEVICE_CONVERTERS
from ...passes.parameters import (
    InputRangeParameter,
    IOParameters,
    MappingParameter,
    PrePostProcessingParameter,
    WeightModifierParameter,
)


def _default_pre_post() -> PrePostProcessingParameter:
    return PrePostProcessingParameter(input_range=InputRangeParameter(enable=True))


@dataclass
class LayerRule:
    """Settings for the layers one rule matches, on top of the global config.

    Exactly one of ``module_type`` (class name, e.g. ``"Conv2d"``), ``name`` (the
    exact layer name) or ``pattern`` (an ``fnmatch`` glob on the layer name)
    selects the layers. ``overrides`` are dotted config keys
    (``{"forward.out_res": 62}``); ``digital=True`` keeps the layers off crossbars.

    Precedence follows PyTorch's QConfigMapping, lowest first: global, module
    type, name pattern, exact name; among rules of one kind, later ones win.
    """

    module_type: Optional[str] = None
    name: Optional[str] = None
    pattern: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    digital: bool = False

    def __post_init__(self):
        self.kind  # exactly one selector, checked when built

    @property
    def kind(self) -> str:
        selectors = [k for k in ("module_type", "pattern", "name") if getattr(self, k) is not None]
        if len(selectors) != 1:
            raise ConfigError(f"a layer rule needs exactly one of module_type, name or pattern, got {self!r}")
        return selectors[0]

    def matches(self, layer_name: str, module_type: str) -> bool:
        kind = self.kind
        if kind == "name":
            return layer_name == self.name
        if kind == "pattern":
            return fnmatch.fnmatchcase(layer_name, self.pattern)
        return names_module_type(self.module_type, module_type)

    def __str__(self) -> str:
        return f"{self.kind}={getattr(self, self.kind)}"


RULE_PRECEDENCE = {"module_type": 0, "pattern": 1, "name": 2}


@dataclass
class HardwareConfig:
    """The hardware a model is compiled for.

    Attributes:
        forward: DAC, ADC and output bound (aihwkit's ``IOParameters`` fields).
        pre_post: digital pre/post processing; ``pre_post.input_range`` is the
            learned input range (enabled by default in xbar).
        mapping: array sizes for tiling and the weight-scaling option.
        modifier: noise on the weights in training forward passes (aihwkit's
            ``WeightModifierParameter``; off by default).
        remap, clip: aihwkit's ``WeightRemapParameter`` and ``WeightClipParameter``, applied to
            the analog weights after each fine-tuning step and at conversion (off by default).
        converter: the conductance converter (aihwkit's
            ``SinglePairConductanceConverter``, g_max=25 uS, g_min=0 by default; or one of
            aihwkit's multi-device converters, named by ``converter.type``: see :data:`CONVERTER_TYPES`).
        layers: per-layer :class:`LayerRule` s on top of the settings above.
    """

    forward: IOParameters = field(default_factory=IOParameters)
    pre_post: PrePostProcessingParameter = field(default_factory=_default_pre_post)
    mapping: MappingParameter = field(default_factory=MappingParameter)
    converter: Any = field(default_factory=SinglePairConductanceConverter)
    modifier: WeightModifierParameter = field(default_factory=WeightModifierParameter)
    remap: WeightRemapParameter = field(default_factory=WeightRemapParameter)
    clip: WeightClipParameter = field(default_factory=WeightClipParameter)
    layers: list[LayerRule] = field(default_factory=list)

    def __post_init__(self):
        self.check_values()  # refused when built; prepare() validates again (fields may have been assigned)

    def check_values(self) -> "HardwareConfig":
        """Raise :class:`ConfigError` for a configuration that cannot mean anything."""
        self.forward.check_values()
        input_range = self.pre_post.input_range
        input_range.validate()
        self.mapping.validate()
        self.modifier.validate()
        self.remap.validate()
        self.clip.validate()
        if (self.remap.active or self.clip.active) and self.mapping.weight_scaling_dynamic:
            raise ConfigError("remap.type and clip.type act on aihwkit's stored mapping scales: "
                              "set mapping.weight_scaling_dynamic = false")
        if not isinstance(self.converter, tuple(CONVERTER_TYPES.values())):
            raise ConfigError(f"converter must be one of {sorted(CONVERTER_TYPES)}, "
                              f"got {type(self.converter).__name__}")
        if self.converter.g_max == self.converter.g_min:
            raise ConfigError("converter.g_max must differ from converter.g_min (the scale ratio would be 0)")
        self._check_multi_device()
        if self.forward.dac_steps and not input_range.enable and not self.forward.scales_input:
            raise ConfigError("forward.inp_res sets a DAC, but there is no range to scale its input by: "
                              "enable pre_post.input_range, set forward.noise_management (ABS_MAX, MAX, or "
                              "CONSTANT with nm_thres > 0) or set forward.inp_res <= 0")
        return self

    def _check_multi_device(self) -> None:
        """What a converter of several devices per weight (or one) cannot be combined with."""
        if isinstance(self.converter, SinglePairConductanceConverter):
            return
        name = type(self.converter).__name__
        if self.forward.ir_drop > 0:
            raise ConfigError(f"forward.ir_drop simulates a single device pair per weight, not {name}: "
                              "set forward.ir_drop = 0 or use the SinglePairConductanceConverter")
        mapping = self.mapping
        if mapping.weight_scaling_columnwise and mapping.weight_scaling_dynamic and mapping.weight_scaling_omega > 0:
            raise ConfigError(f"{name} maps one scale ratio per array: with mapping.weight_scaling_columnwise set "
                              "mapping.weight_scaling_dynamic = false (aihwkit's stored column scales)")

    def validate(self) -> "HardwareConfig":
        """:meth:`check_values`, then refuse what xbar cannot simulate (dynamic noise or bound
        management, in the config or in a layer rule's)."""
        self.check_values()
        self.forward.validate()
        input_range = self.pre_post.input_range
        if input_range.enable and input_range.manage_output_clipping:
            if not input_range.supports_manage_output_clipping(self):
                raise ConfigError("pre_post.input_range.manage_output_clipping needs a non-perfect forward "
                                  "with noise_management and bound_management NONE")
            if self.forward.bound <= 0:
                raise ConfigError("pre_post.input_range.manage_output_clipping needs forward.out_bound > 0")
        for rule in self.layers:
            if rule.kind and not rule.digital:
                self.for_rule(rule)
        return self

    def for_rule(self, rule: LayerRule) -> "HardwareConfig":
        """This config with one rule's overrides applied (and no layer rules)."""
        base = dataclasses.replace(self, layers=[])
        try:
            return base.with_overrides(rule.overrides)
        except ConfigError as exc:
            raise ConfigError(f"layer rule {rule}: {exc}") from None

    def resolve(self, layer_name: str, module_type: str) -> tuple[Optional["HardwareConfig"], str]:
        """The config for one layer (None: keep it digital) and the rule that decided it."""
        matching = sorted((r for r in self.layers if r.matches(layer_name, module_type)),
                          key=lambda r: RULE_PRECEDENCE[r.kind])
        if not matching:
            return dataclasses.replace(self, layers=[]), "global"
        if matching[-1].digital:
            return None, str(matching[-1])
        config = dataclasses.replace(self, layers=[])
        for rule in matching:
            if not rule.digital:
                config = config.with_overrides(rule.overrides)
        return config, str(matching[-1])

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
            if leaf not in section and not (path == ["converter"] and leaf in CONVERTER_KEYS):
                raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {sorted(section)}")
            section[leaf] = value
        return HardwareConfig.from_dict(data)


CONVERTER_TYPES = {SinglePairConductanceConverter.__name__: SinglePairConductanceConverter} | MULTI_DEVICE_CONVERTERS
"""``converter.type`` -> converter class (the single pair when ``type`` is absent)."""
CONVERTER_KEYS = ("type", "f_lst", "g_lst", "g_max", "g_min", "invertibility_test")
"""Every key a ``converter`` table may hold (each converter takes those of its constructor, and ``type``)."""


def _to_plain(value):
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, SinglePairConductanceConverter):
        return {"g_max": float(value.g_max), "g_min": float(value.g_min)}
    if isinstance(value, tuple(MULTI_DEVICE_CONVERTERS.values())):
        return {"type": type(value).__name__, **value.settings_dict()}
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
        default = _default(fields[name])
        if isinstance(default, SinglePairConductanceConverter):
            kwargs[name] = _converter(value, f"{where}{name}")
        elif name == "layers" and cls is HardwareConfig:
            if not isinstance(value, list):
                raise ConfigError(f"layers must be a list of rules, got {value!r}")
            kwargs[name] = [_from_plain(LayerRule, rule, f"layers[{i}].") for i, rule in enumerate(value)]
        elif dataclasses.is_dataclass(default):
            kwargs[name] = _from_plain(type(default), value, f"{where}{name}.")
        elif isinstance(default, enum.Enum):
            kwargs[name] = _enum(type(default), value, where + name)
        else:
            kwargs[name] = _coerce(value, default, where + name)
    return cls(**kwargs)


def _default(spec: dataclasses.Field):
    """A field's default value (without building its class, which may need other fields first)."""
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


def _converter(data, key: str):
    """A converter from its table: ``type`` (a :data:`CONVERTER_TYPES` name, the single pair when absent) and
    its constructor's keyword arguments."""
    if isinstance(data, tuple(CONVERTER_TYPES.values())):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a table of keys, got {data!r}")
    data = dict(data)
    type_name = data.pop("type", SinglePairConductanceConverter.__name__)
    cls = CONVERTER_TYPES.get(type_name)
    if cls is None:
        raise ConfigError(f"{key}.type must be one of {sorted(CONVERTER_TYPES)}, got {type_name!r}")
    accepted = [p for p in inspect.signature(cls).parameters]
    unknown = sorted(set(data) - set(accepted))
    if unknown:
        raise ConfigError(f"{key}: {type_name} takes the keys {accepted}, got {unknown[0]!r}")
    values = {k: _converter_value(v, f"{key}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ConfigError(f"{key}: {type_name}: {exc}") from exc


def _converter_value(value, key: str):
    """A converter argument: a number, a flag, or a (nested) list of numbers, each finite."""
    if isinstance(value, (list, tuple)):
        return [_converter_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bool):
        return value
    return _coerce(value, 0.0, key)


def _enum(enum_type, value, key: str):
    if isinstance(value, enum_type):
        return value
    names = {m.name.lower(): m for m in enum_type} | {m.value.lower(): m for m in enum_type}
    try:
        return names[str(value).lower()]
    except KeyError:
        raise ConfigError(f"{key} must be one of {[m.name for m in enum_type]}, got {value!r}") from None


def _coerce(value, default, key: str):
    """A leaf value checked against its default: of the default's type, and finite
    (NaN and infinity describe no hardware)."""
    value = _typed(value, default, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return value


def _typed(value, default, key: str):
    """The value as the type of its default (ints may stand for floats), or :class:`ConfigError`."""
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
    elif expected is dict and isinstance(value, dict):
        return dict(value)
    elif expected is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    elif isinstance(value, str) and expected in (int, float):
        try:
            return expected(value)
        except ValueError:
            pass
    elif isinstance(value, expected):
        return value
    raise ConfigError(f"{key} must be a {expected.__name__}, got {value!r}")

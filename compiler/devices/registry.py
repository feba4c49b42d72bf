"""The device models by name: the one table ``xbar evaluate --noise``, its help and a config file's
``[noise]`` section read.

Imports no torch: each entry names the module of this package that holds the model and its class,
imported when a model is built, so the command line's parser lists the names at no cost. A new device
model is one module here and one entry in :data:`NOISE_MODELS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, NamedTuple, Optional

from ...passes.errors import UserError

if TYPE_CHECKING:
    from .base import BaseNoiseModel


class DeviceModelEntry(NamedTuple):
    """Where a device model lives: ``module`` of this package, ``class_name`` in it, and a ``note`` the help
    shows beside its name (empty: none)."""

    module: str
    class_name: str
    note: str = ""


NOISE_MODELS: dict[str, DeviceModelEntry] = {
    "pcm": DeviceModelEntry("pcm", "PCMLikeNoiseModel"),
    "state-independent": DeviceModelEntry("state_independent", "StateIndependentNoiseModel"),
    "reram": DeviceModelEntry("reram", "ReRamWan2022NoiseModel", "fitted at 1s, 1d and 2d only"),
    "hermes": DeviceModelEntry("hermes", "HermesNoiseModel", "needs converter.g_max <= 20.7 (num_devices=2)"),
    "reram-cmo": DeviceModelEntry("reram_cmo", "ReRamCMONoiseModel",
                                  "fitted on 9 to 88.2 uS devices: set converter.g_min and g_max"),
}
"""Name -> device model, the default first."""
MODEL_KEY = "model"


def noise_model_class(name: str) -> type[BaseNoiseModel]:
    """The class registered as ``name`` (one of :data:`NOISE_MODELS`), imported now."""
    entry = NOISE_MODELS[name]
    return getattr(importlib.import_module(f"{__package__}.{entry.module}"), entry.class_name)


def noise_model(name: Optional[str], section: Optional[dict], g_max: float, where: str,
                g_min: Optional[float] = None) -> BaseNoiseModel:
    """The model ``--noise name`` or a ``[noise]`` section asks for (neither: the default, PCM-like).

    The section names the model under ``model`` and may set any of its fields;
    ``g_max`` (the converter's) is the model's unless the section sets it, and so is
    ``g_min`` (the converter's, if given) for a model with a ``g_min`` field.
    """
    if name is not None and section is not None:
        raise UserError(f"--noise {name} and the [noise] section of {where} both choose a device model; "
                        "drop one of them")
    fields = dict(section or {})
    if section is not None:
        if MODEL_KEY not in fields:
            raise UserError(f"the [noise] section of {where} needs model = one of {', '.join(NOISE_MODELS)}")
        name = fields.pop(MODEL_KEY)
    name = next(iter(NOISE_MODELS)) if name is None else name
    if name not in NOISE_MODELS:
        raise UserError(f"unknown noise model {name!r} in {where}; choose one of {', '.join(NOISE_MODELS)}")
    model_class = noise_model_class(name)
    known = [f.name for f in dataclasses.fields(model_class)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise UserError(f"the [noise] section of {where}: {name} has no field {unknown[0]!r}; its fields are "
                        f"{', '.join(known)}")
    converter = {"g_max": g_max} | ({"g_min": g_min} if g_min is not None and "g_min" in known else {})
    return _built(model_class, converter | fields, name, where)


def _built(model_class: type[BaseNoiseModel], fields: dict, name: str, where: str) -> BaseNoiseModel:
    """``model_class(**fields)``, its refusal of a value as one line that names the config file."""
    from ...passes.capture import first_line  # imports torch, which building the model has imported already

    try:
        return model_class(**fields)
    except UserError as exc:
        raise UserError(f"the [noise] section of {where}: {first_line(exc)}") from exc
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type reaches the model's checks
        raise UserError(f"the [noise] section of {where}: {name} cannot take these values ({first_line(exc)}); "
                        "give numbers, and lists of numbers for coefficients") from exc

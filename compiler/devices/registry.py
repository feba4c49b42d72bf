"""The device models by the names ``xbar evaluate --noise`` and a config file's ``[noise]`` section use."""

from __future__ import annotations

import dataclasses
from typing import Optional

from ...passes.capture import first_line
from ...passes.errors import UserError
from .models import BaseNoiseModel, PCMLikeNoiseModel, ReRamWan2022NoiseModel, StateIndependentNoiseModel

NOISE_MODELS: dict[str, type[BaseNoiseModel]] = {
    "pcm": PCMLikeNoiseModel,
    "state-independent": StateIndependentNoiseModel,
    "reram": ReRamWan2022NoiseModel,
}
"""Name -> device model class, the default first."""
MODEL_KEY = "model"


def noise_model(name: Optional[str], section: Optional[dict], g_max: float, where: str) -> BaseNoiseModel:
    """The model ``--noise name`` or a ``[noise]`` section asks for (neither: the default, PCM-like).

    The section names the model under ``model`` and may set any of its fields;
    ``g_max`` (the converter's) is the model's unless the section sets it.
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
    model_class = NOISE_MODELS[name]
    known = [f.name for f in dataclasses.fields(model_class)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise UserError(f"the [noise] section of {where}: {name} has no field {unknown[0]!r}; its fields are "
                        f"{', '.join(known)}")
    try:
        return model_class(**({"g_max": g_max} | fields))
    except UserError as exc:
        raise UserError(f"the [noise] section of {where}: {first_line(exc)}") from exc
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type reaches the model's checks
        raise UserError(f"the [noise] section of {where}: {name} cannot take these values ({first_line(exc)}); "
                        "give numbers, and lists of numbers for coefficients") from exc

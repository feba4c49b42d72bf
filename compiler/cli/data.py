"""Calibration and evaluation data for the command line.

``load_dataset(spec)`` accepts the name of a built-in data set (``digits``: the
labelled training split calibrates and fine-tunes, the labelled test split
evaluates; ``pysource``: windows of Python's own source bytes with their next
bytes, for the language model) or a tensor file: ``.npz`` (its only array, or the arrays named ``x``
and, optionally, ``y``, or one array per input named after ``forward``'s
parameters, and optionally ``y``) or ``.pt`` (a tensor, or a dict with tensors under
``"x"`` and, optionally, ``"y"``, loaded with ``weights_only=True``). The first
dimension indexes samples; labels ``y`` are one per sample: a class index, or any
shape of class indices (per token, per pixel) or of floats (regression targets).
Samples must be finite: a NaN or infinite value would set every input range it
reaches to NaN, so such a file is refused.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ...passes.errors import DataError
from ...passes.inputs import sample_count, samples_at
from .preflight import check_data_spec

SAMPLES_KEY = "x"
LABELS_KEY = "y"


@dataclass(frozen=True)
class Dataset:
    """Calibration samples (with their labels, if known), and a labelled test split when the data set has one.

    ``samples`` is one tensor for a model of one input, a tuple of the positional inputs for several (the
    command line puts named arrays in ``forward``'s order), or, as read, a dict of named arrays;
    ``token_ids`` marks integer samples that are token ids, never cast to the model's float dtype."""

    name: str
    samples: Union[Tensor, tuple, dict]
    labels: Optional[Tensor] = None
    test: Optional[tuple[Tensor, Tensor]] = None
    token_ids: bool = False

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[1:])

    def __len__(self) -> int:
        return sample_count(self.samples, self.name)

    def batches(self, batch_size: int, limit: Optional[int] = None) -> list:
        """The samples in order, ``batch_size`` at a time (a tuple of inputs each, for several), at most
        ``limit`` batches."""
        starts = range(0, len(self), batch_size)
        batches = [samples_at(self.samples, slice(start, start + batch_size)) for start in starts]
        return batches if limit is None else batches[:limit]


def _digits() -> Dataset:
    from ...models.data import load_digits_split  # lazy: scikit-learn is slow to import; only digits needs it

    split = load_digits_split()
    return Dataset("digits", split.train_x, split.train_y, (split.test_x, split.test_y))


def _pysource() -> Dataset:
    from ...models.text import load_text_split

    split = load_text_split()
    return Dataset("pysource", split.train_x, split.train_y, (split.test_x, split.test_y), token_ids=True)


BUILTIN: dict[str, Callable[[], Dataset]] = {"digits": _digits, "pysource": _pysource}
"""Built-in data sets by name: scikit-learn's 8x8 digits, [N, 1, 8, 8] in [0, 1], the digit classifiers' data;
the standard library's source as byte windows [N, 64] with next-byte targets [N, 64], the language model's."""


def load_dataset(spec: str) -> Dataset:
    """A built-in data set by name, or the samples of a ``.npz`` / ``.pt`` file."""
    if spec in BUILTIN:
        return BUILTIN[spec]()
    check_data_spec(spec)
    path = Path(spec)
    samples, labels = READERS[path.suffix](path)
    if isinstance(samples, dict):
        samples = {name: _finite(_as_samples(array, path, f" {name!r}"), path) for name, array in samples.items()}
    else:
        samples = _finite(_as_samples(samples, path), path)
    data = Dataset(path.name, samples)
    count = len(data)  # the inputs agree on it
    return dataclasses.replace(data, labels=None if labels is None else _as_labels(labels, count, path))


def _finite(samples: Tensor, path: Path) -> Tensor:
    if samples.is_floating_point() and not bool(torch.isfinite(samples).all()):
        bad = int((~torch.isfinite(samples)).sum())
        raise DataError(f"{path}: {bad} of the {samples.numel()} sample values are NaN or infinite; "
                        "clean or drop those samples")
    return samples


def _read_npz(path: Path) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if len(names) == 1:
                return archive[names[0]], None
            labels = archive[LABELS_KEY] if LABELS_KEY in names else None
            inputs = [name for name in names if name != LABELS_KEY]
            if inputs == [SAMPLES_KEY]:
                return archive[SAMPLES_KEY], labels
            return {name: archive[name] for name in inputs}, labels  # one array per input, by name
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); save it with numpy.savez") from exc


def _read_pt(path: Path) -> tuple:
    data = load_plain_torch_file(path)
    if not isinstance(data, dict):
        return data, None
    if SAMPLES_KEY not in data:
        raise DataError(f"{path} holds a dict with keys {sorted(map(str, data))}; "
                        f"put the input samples under {SAMPLES_KEY!r}")
    return data[SAMPLES_KEY], data.get(LABELS_KEY)


def load_plain_torch_file(path: Path):
    """``torch.load(path, weights_only=True)``; :class:`DataError` says why a file is refused."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if not _written_by_torch_save(path):
            raise DataError(f"{path} is not a PyTorch file (write it with torch.save)") from exc
        raise DataError(f"{path} needs arbitrary Python code to load, which xbar refuses "
                        "(torch.load(weights_only=True)); re-save it as plain tensors, "
                        "e.g. torch.save(model.state_dict(), path)") from exc
    except Exception as exc:  # torch reports a corrupt or foreign file with many types (KeyError, RuntimeError, ...)
        raise DataError(f"{path} is not a PyTorch file (write it with torch.save)") from exc


def _written_by_torch_save(path: Path) -> bool:
    """Whether the file has torch.save's shape: a zip archive holding a ``data.pkl``, or the legacy
    format, a pickle (its first byte is pickle's PROTO opcode)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    with open(path, "rb") as file:
        return file.read(1) == pickle.PROTO


READERS: dict[str, Callable[[Path], tuple]] = {".npz": _read_npz, ".pt": _read_pt}
"""Data file readers by suffix (the suffixes :data:`.preflight.DATA_SUFFIXES` accepts)."""


def _as_samples(data, path: Path, name: str = "") -> Tensor:
    if isinstance(data, np.ndarray):
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
            raise DataError(f"{path}: samples{name} have dtype {data.dtype}; save numbers")
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor):
        raise DataError(f"{path} holds a {type(data).__name__}, not a tensor of input samples")
    if data.dim() < 1 or len(data) == 0:
        raise DataError(f"{path}: need a tensor of samples{name} [N, ...] with N > 0, got shape "
                        f"{tuple(data.shape)}")
    return data.float() if data.is_floating_point() else data


def _as_labels(data, count: int, path: Path) -> Tensor:
    labels = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
    if not isinstance(labels, Tensor) or labels.is_complex() or labels.dtype == torch.bool or labels.dim() < 1:
        raise DataError(f"{path}: labels {LABELS_KEY!r} must be numbers, one label (class indices or targets) per "
                        "sample, shape [N, ...]")
    if len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels for {count} samples; give one label per sample")
    return labels.float() if labels.is_floating_point() else labels.long()

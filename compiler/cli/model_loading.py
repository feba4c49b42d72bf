"""The model named on the command line: a zoo name, ``FILE.py:FACTORY`` (with optional
weights) or a ``.pt2`` program saved by ``torch.export.save``.

A user's file is imported the way ``python FILE.py`` would see its neighbours:
its directory comes first on ``sys.path``, and a module of the same name cached
from elsewhere (say, another project's ``models`` package) does not hide the
user's own while the factory runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import sysconfig
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Optional, Union

import torch
from torch import nn

from ...models.zoo import ZOO, load_pretrained
from ...passes.capture import first_line
from ...passes.errors import DataError, ModelError
from ..inspection.archive import GRAPH_FORMAT
from .console import quiet_loggers
from .data import load_plain_torch_file
from .preflight import check_weights_file, model_kind

INSTALLED = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")}
"""Where installed libraries live: a cached module from here is never set aside for a user's file."""


@dataclass(frozen=True)
class LoadedModel:
    """The model named on the command line, and what it tells about its inputs (and, for a zoo model,
    the data set and the metric it is scored with)."""

    model: Union[nn.Module, torch.export.ExportedProgram]
    name: str
    run: Callable
    input_shape: Optional[tuple[int, ...]] = None
    dataset: Optional[str] = None
    metric: Optional[str] = None


def load_model(spec: str, weights: Optional[str]) -> LoadedModel:
    """A zoo name, ``FILE.py:FACTORY`` (with optional weights) or a ``.pt2`` file."""
    kind = model_kind(spec, weights)
    if kind == "zoo":
        return _zoo_model(spec, weights)
    file_text, _, factory = spec.partition(":")
    if kind == "torch_file":
        raise ModelError(_not_a_model(spec, Path(file_text)))
    return _factory_model(Path(file_text), factory, weights) if kind == "factory" else _exported_model(Path(file_text))


def _not_a_model(spec: str, path: Path) -> str:
    """Why ``spec`` is not a model, with what to do: a torch.save file may be something xbar takes elsewhere."""
    content = None
    with contextlib.suppress(DataError):
        content = load_plain_torch_file(path)
    if isinstance(content, dict) and content.get("format") == GRAPH_FORMAT:
        return (f"{spec} is a graph archive (--save-graph): the record of a compiled model, for `xbar inspect "
                f"{spec}`, which does not run; give the model it was compiled from (a zoo name, FILE.py:FACTORY "
                "or FILE.pt2)")
    hint = f"; to use it as weights: FILE.py:FACTORY --weights {spec}" if _is_state_dict(content) else ""
    return f"{spec} is not a model: give FILE.py:FACTORY, a torch.export .pt2 file or a zoo name{hint}"


def _is_state_dict(content) -> bool:
    return isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values())


def _zoo_model(name: str, weights: Optional[str]) -> LoadedModel:
    entry = ZOO[name]
    if weights:
        model = load_weights(entry.factory(), Path(weights), name)
    else:
        try:
            model = load_pretrained(name)
        except FileNotFoundError as exc:
            raise ModelError(str(exc)) from exc
    return LoadedModel(model.eval(), name, model, entry.input_shape, entry.dataset, entry.metric)


def _factory_model(path: Path, factory_name: str, weights: Optional[str]) -> LoadedModel:
    with user_directory(path.resolve().parent):
        module = _import_file(path)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            defined = sorted(n for n, v in vars(module).items()
                             if callable(v) and getattr(v, "__module__", None) == module.__name__)
            raise ModelError(f"{path} has no factory {factory_name!r}; "
                             f"it defines: {', '.join(defined) or 'nothing callable'}")
        try:
            model = factory()
        except Exception as exc:  # user code: report whatever it raised
            raise ModelError(f"{path}:{factory_name}() raised {type(exc).__name__}: {first_line(exc)}; "
                             f"fix the factory (run it in Python to see where)") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path}:{factory_name}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights:
        model = load_weights(model, Path(weights), factory_name)
    else:
        warnings.warn(f"no --weights: compiling the weights {path}:{factory_name}() starts with "
                      "(random unless it loads trained ones); give --weights CHECKPOINT for trained weights",
                      UserWarning, stacklevel=2)
    return LoadedModel(model.eval(), path.stem, model)


def _import_file(path: Path) -> ModuleType:
    """Import a Python file as a module (its directory importable: see :func:`user_directory`)."""
    name = "xbar_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report whatever it raised
        del sys.modules[name]
        raise ModelError(f"importing {path} failed with {type(exc).__name__}: {first_line(exc)}; "
                         f"run `python {path}` to see where") from exc
    return module


@contextlib.contextmanager
def user_directory(directory: Path) -> Iterator[None]:
    """While user code runs: ``directory`` first on ``sys.path``, and the modules it provides
    (``models/``, ``helpers.py``, ...) found there, not in modules of those names imported
    earlier from elsewhere; those are set aside and put back afterwards."""
    provided = _top_level_names(directory)
    set_aside = {name: module for name, module in sys.modules.items()
                 if name.partition(".")[0] in provided and not _comes_from(module, {directory} | INSTALLED)}
    for name in set_aside:
        del sys.modules[name]
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))
        sys.modules.update(set_aside)


def _top_level_names(directory: Path) -> set[str]:
    """The top-level modules a directory on sys.path provides, less the standard library and xbar."""
    names = {entry.stem if entry.suffix == ".py" else entry.name for entry in directory.iterdir()
             if entry.suffix == ".py" or (entry.is_dir() and entry.name.isidentifier())}
    return names - set(sys.stdlib_module_names) - set(sys.builtin_module_names) - {__package__.partition(".")[0]}


def _comes_from(module: ModuleType, roots: set[Path]) -> bool:
    """Whether a module's file (or a package's directory) lies under one of ``roots``."""
    spec = getattr(module, "__spec__", None)
    locations = [getattr(module, "__file__", None), *((spec and spec.submodule_search_locations) or [])]
    paths = [Path(location).resolve() for location in locations if location]
    return any(root in path.parents or path == root for path in paths for root in roots)


def load_weights(model: nn.Module, path: Path, name: str) -> nn.Module:
    """Load a state_dict (``weights_only``) into ``model``; a mismatch is one line naming the difference."""
    check_weights_file(path)
    state = load_plain_torch_file(path)
    if not _is_state_dict(state):
        raise ModelError(f"{path} is not a state_dict (a dict of tensors); save one with "
                         "torch.save(model.state_dict(), path)")
    mismatch = _state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelError(f"{path} does not match {name}: {mismatch}; check that the weights belong to this model")
    model.load_state_dict(state)
    return model


def _state_dict_mismatch(expected: dict, found: dict) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} is {list(found[k].shape)} in the file, {list(v.shape)} in the model"
               for k, v in expected.items() if k in found and found[k].shape != v.shape]
    parts = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(unexpected)}" if unexpected else "",
             _few(resized) if resized else ""]
    return "; ".join(p for p in parts if p)


def _few(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _exported_model(path: Path) -> LoadedModel:
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a torch.export archive; save one with torch.export.save(program, path)")
    try:
        with quiet_loggers("torch.export"):
            program = torch.export.load(path)
    except Exception as exc:  # torch reports a foreign or corrupt archive with many types
        raise ModelError(f"{path} is not a torch.export archive ({first_line(exc)}); "
                         "save one with torch.export.save(program, path)") from exc
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]
    shapes = [node.meta["val"].shape for node in inputs if isinstance(node.meta.get("val"), torch.Tensor)]
    fixed = next((shape for shape in shapes if isinstance(shape[0], int)), None)
    if fixed is not None:
        example = ", ".join(map(str, (2, *fixed[1:])))
        raise ModelError(f"{path} was exported with a fixed batch size of {fixed[0]}; re-export it with an example "
                         f"batch of 2 or more and a dynamic batch dimension: torch.export.export(model, "
                         f"(torch.randn({example}),), dynamic_shapes=({{0: torch.export.Dim('batch')}},))")
    known = len(shapes) == 1 and all(isinstance(d, int) for d in shapes[0][1:])  # else: --input-shape
    static_shape = (1, *shapes[0][1:]) if known else None
    module = program.module()  # runs as it was exported, with no train/eval mode: scored as a plain function
    return LoadedModel(program, path.stem, lambda *inputs: module(*inputs), static_shape)

"""Evaluate the exported file itself in ONNX Runtime: as it is, or re-programmed and read over time.

:func:`evaluate_onnx` scores the file as written (plain, programmed, drifted or measured) on labelled data.
:func:`onnx_accuracy_over_time` re-programs the file's target conductances with a device model, seed by seed,
reads them at each time and compensates the drift, with the torch path's own code
(:func:`~xbar.compiler.devices.arrays.program_arrays`, :func:`~xbar.compiler.devices.arrays.drift_arrays`) run on
crossbar arrays rebuilt from the file, in the order the converted model lists them (``xbar.layers``), so seed
``s`` draws what :func:`~xbar.compiler.devices.evaluation.accuracy_over_time` draws for seed ``s``. The
conductances and each array's output scale (which carries the drift gain) reach one ONNX Runtime session as
inputs: the file is rewritten in memory once (:func:`reading_model`) and never re-exported.

Output noise at read: the arrays' ``forward.out_noise`` (``xbar.layers``) is added before each ADC at every read
as the converted model adds it (:mod:`xbar.passes.numerics.crossbar`). Each call site's noise is a graph input of
the file rewritten once more (:func:`noisy_model`), drawn by :class:`NoiseDraws` from a torch generator in the
converted model's order of reads, so one seed draws here what it draws there; an array in a recurrent layer's
Scan body gets its noise stacked over the steps, drawn step by step as the converted model's unrolled steps read.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from ...passes.errors import DataError, UserError
from ...passes.numerics.crossbar import out_noise_in_codes
from ...passes.numerics.settings import DYNAMIC_MODES
from ..devices.base import BaseNoiseModel
from ..devices.evaluation import OutNoiseAtRead, out_noise_seed
from ..metrics import MetricLike, as_metric, score
from ..metrics.tasks import TOP1_ACCURACY
from ..program_files.onnx_file import load_onnx
from .names import DOMAIN, PERIPHERY_DOMAIN, graph_nodes

FileLike = Union[str, os.PathLike, onnx.ModelProto]
"""An ONNX file xbar exported, or its model in memory (:func:`xbar.load_conductances` of a file)."""
Data = tuple[Union[Tensor, Sequence[Tensor]], Tensor]
"""Labelled samples: the inputs (one tensor, or one per graph input in order) and the targets."""
SCALE_SUFFIX = ".out_scale"
"""Graph input of :func:`reading_model`: an array's output scale, one value or one per output column."""
STEP_ZERO = "xbar.step_zero"
"""Initializer of :func:`noisy_model`: the int64 0 a Scan's step count starts from."""
NOISY_SUFFIX = "OutNoise"
"""The op type of an ``ai.xbar`` node of :func:`noisy_model`: its op's body with a noise input before the ADC."""


@dataclass(frozen=True)
class FileArray:
    """One crossbar array of an exported file: its name, op, G+ / G- (the initializers, in their shape) and the
    attributes of its (first) node."""

    name: str
    op_type: str
    g_plus: np.ndarray
    g_minus: np.ndarray
    attributes: dict

    @property
    def spatial_dims(self) -> int:
        """Spatial dims of the op's output (0 for a linear layer, whose channels are last)."""
        return len(self.attributes.get("strides", ()))


def file_arrays(model: onnx.ModelProto) -> list[FileArray]:
    """The file's arrays in the converted model's module order (``xbar.layers``)."""
    initializers = {t.name: t for t in model.graph.initializer}
    nodes: dict[str, onnx.NodeProto] = {}
    for node in graph_nodes(model.graph):  # a recurrent layer's Scan body holds its nodes
        if node.domain == DOMAIN:
            nodes.setdefault(_array_name(node), node)
    arrays = []
    for entry in json.loads(_metadata(model)["xbar.layers"]):
        node = nodes[entry["g_plus"].removesuffix(".g_plus")]
        attributes = _attributes(node)
        g_plus, g_minus = (numpy_helper.to_array(initializers[n]) for n in node.input[1:3])
        arrays.append(FileArray(_array_name(node), node.op_type, g_plus, g_minus, attributes))
    return arrays


def _array_name(node: onnx.NodeProto) -> str:
    return node.input[1].removesuffix(".g_plus")


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def reading_model(model: onnx.ModelProto, arrays: Sequence[FileArray]) -> onnx.ModelProto:
    """A copy of ``model`` whose arrays' G+ and G- and output scales are graph inputs (``<name>.g_plus``,
    ``<name>.g_minus``, ``<name>.out_scale``): each node computes its ADC codes (``out_scale`` 1, no
    per-column scale, a zero bias), then the steps of its body's ``Rescale`` follow outside it, reading the
    scale input. Fed the file's own values it computes what the file does, bit for bit up to ONNX Runtime's
    extended fusions (which fold the file's constant scale of an unrounded ADC output into its matmul)."""
    reading = copy.deepcopy(model)
    graph = reading.graph
    conductances = {name for array in arrays for name in (f"{array.name}.g_plus", f"{array.name}.g_minus")}
    kept = [t for t in graph.initializer if t.name not in conductances]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for array in arrays:
        for side, value in (("g_plus", array.g_plus), ("g_minus", array.g_minus)):
            graph.input.append(helper.make_tensor_value_info(f"{array.name}.{side}", onnx.TensorProto.FLOAT,
                                                             list(value.shape)))
        graph.input.append(helper.make_tensor_value_info(f"{array.name}{SCALE_SUFFIX}", onnx.TensorProto.FLOAT,
                                                         [f"{array.name}_scales"]))
    _rescale_outside_nodes(graph, {array.name: array for array in arrays})
    return reading


def _rescale_outside_nodes(graph: onnx.GraphProto, by_name: dict[str, FileArray]) -> None:
    """:func:`_rescaled_outside` for each ai.xbar node of ``graph`` and of the ``Scan`` bodies in it (a body reads
    the scale inputs from the outer scope)."""
    nodes = []
    for index, node in enumerate(graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rescale_outside_nodes(attribute.g, by_name)
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        before, after = _rescaled_outside(node, by_name[_array_name(node)], f"{node.name}/rescale{index}")
        nodes += [*before, node, *after]
    del graph.node[:]
    graph.node.extend(nodes)


def _rescaled_outside(node: onnx.NodeProto, array: FileArray,
                      prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """Make ``node`` return its ADC codes; the nodes to put before it (its zero bias) and after it (the
    rescaling its body did: times the scale input, plus the bias, per channel on dim 1 for a convolution)."""
    for attribute in node.attribute:
        if attribute.name == "out_scale":
            attribute.f = 1.0
        elif attribute.name == "column_out_scale":
            del attribute.floats[:]
    bias, output = node.input[3], node.output[0]
    node.input[3], node.output[0] = f"{prefix}/zero_bias", f"{prefix}/codes"
    before = [helper.make_node("Sub", [bias, bias], [node.input[3]])]
    scale, after = f"{array.name}{SCALE_SUFFIX}", []
    if array.spatial_dims:
        shape = numpy_helper.from_array(np.array([-1] + [1] * array.spatial_dims, dtype=np.int64))
        after += [helper.make_node("Constant", [], [f"{prefix}/per_channel"], value=shape),
                  helper.make_node("Reshape", [scale, f"{prefix}/per_channel"], [f"{prefix}/scale"]),
                  helper.make_node("Reshape", [bias, f"{prefix}/per_channel"], [f"{prefix}/bias"])]
        scale, bias = f"{prefix}/scale", f"{prefix}/bias"
    after += [helper.make_node("Mul", [node.output[0], scale], [f"{prefix}/scaled"]),
              helper.make_node("Add", [f"{prefix}/scaled", bias], [output])]
    return before, after


@dataclass(frozen=True)
class NoiseSite:
    """One call site of an array with output noise: its ``ai.xbar`` node, the graph input of :func:`noisy_model`
    that carries its noise (``<array>.out_noise.<call>``, the call's index in ``call_sites``), the noise's std
    in ADC codes, and for a node in a recurrent layer's Scan body (``scan``, the Scan node's name) whose noise
    is one draw per step, stacked along the first dim."""

    array: str
    node: str
    input: str
    std: float
    scan: Optional[str] = None

    @property
    def codes(self) -> str:
        """The output of :func:`noisy_model` shaped like the noise: the node's codes, stacked over the steps in
        a Scan body."""
        return f"{self.input}.codes"


def _xbar_reads(graph: onnx.GraphProto):
    """``(node, scan)`` for each ``ai.xbar`` node in the order the graph reads it: a top-level node (scan None),
    or one in a Scan body at the Scan's place (scan its name)."""
    for node in graph.node:
        if node.domain == DOMAIN:
            yield node, None
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from ((inner, node.name) for inner in attribute.g.node if inner.domain == DOMAIN)


def noise_sites(model: onnx.ModelProto) -> list[NoiseSite]:
    """The call sites whose array has ``out_noise`` > 0 (a file that records none reads noise-free), in the
    order the converted model reads them, and so draws their noise: graph order, a Scan body's step by step
    (a recurrent layer's steps, unrolled in the converted model, in the Scan's order)."""
    calls = {}
    for entry in json.loads(_metadata(model).get("xbar.layers", "[]")):
        for call, node in enumerate(entry.get("call_sites", ())):
            calls[node] = (entry["node"], call, float(entry.get("out_noise", 0.0)))
    sites = []
    for node, scan in _xbar_reads(model.graph):
        if calls.get(node.name, (None, 0, 0.0))[2] <= 0:
            continue
        array, call, out_noise = calls[node.name]
        std = out_noise_in_codes(out_noise, node_settings(_attributes(node)))
        sites.append(NoiseSite(array, node.name, f"{array}.out_noise.{call}", std, scan))
    return sites


def noisy_model(model: onnx.ModelProto, sites: Sequence[NoiseSite], where: str) -> onnx.ModelProto:
    """A copy of ``model`` where each site's node adds its graph input ``site.input`` (any shape that broadcasts
    to its ADC codes') to the codes just before its ADC rounds and clips them, and its codes are a graph output
    (``site.codes``, which :class:`FileSession` reads the noise's shape from). A node in a Scan body reads its
    input one step at a time (an added scan input of the Scan) and its codes leave stacked (an added scan
    output). Noise or bound management, whose rescaled reads the draws cannot follow, is refused."""
    noisy = copy.deepcopy(model)
    graph, by_node = noisy.graph, {site.node: site for site in sites}
    scans = {node.name: node for node in graph.node}
    for node, scan in list(_xbar_reads(graph)):
        site = by_node.get(node.name)
        if site is None:
            continue
        attributes = _attributes(node)
        if attributes["nm_mode"] in DYNAMIC_MODES or attributes["bm_rounds"] > 1:
            raise UserError(f"{where}: array {site.array} reads with noise or bound management, which ONNX Runtime "
                            "evaluation cannot add output noise to: evaluate with --out-noise training-only "
                            "(OutNoiseAtRead.TRAINING_ONLY)")
        node.op_type = _noisy_function(noisy, node.op_type)
        if scan is None:
            node.input.append(site.input)
            graph.node.append(helper.make_node("Identity", [node.output[0]], [site.codes]))
        else:
            _scanned(graph, scans[scan], node, site.input, site.codes)
        graph.input.append(helper.make_tensor_value_info(site.input, onnx.TensorProto.FLOAT, None))
        graph.output.append(helper.make_tensor_value_info(site.codes, onnx.TensorProto.FLOAT, None))
    return noisy


def _scanned(graph: onnx.GraphProto, scan: onnx.NodeProto, reader: onnx.NodeProto, stacked: str,
             stacked_output: str) -> None:
    """Feed ``reader`` (a node of ``scan``'s body) the step's slice of the outer value ``stacked`` (its first
    dim is the step; of a single element, that element at every step, as the zeros of a noise-free read are),
    picked by the Scan's step count (:func:`_step_count`); ``reader``'s output at each step leaves stacked as
    the scan output ``stacked_output``."""
    attributes = {attribute.name: attribute for attribute in scan.attribute}
    body, count, step = attributes["body"].g, _step_count(graph, scan), f"{stacked}.step"
    steps, last, index, taken = (f"{step}/{name}" for name in ("steps", "last", "index", "taken"))
    at = list(body.node).index(reader)
    for offset, node in enumerate([helper.make_node("Shape", [stacked], [steps], start=0, end=1),
                                   helper.make_node("Sub", [steps, f"{count}/one"], [last]),
                                   helper.make_node("Min", [f"{count}/vector", last], [index]),
                                   helper.make_node("Gather", [stacked, index], [taken], axis=0),
                                   helper.make_node("Squeeze", [taken, f"{count}/axis"], [step])]):
        body.node.insert(at + offset, node)
    reader.input.append(step)
    known = {value.name: value for value in body.value_info}  # ONNX Runtime wants a body output's shape
    output = reader.output[0]
    body.output.append(copy.deepcopy(known[output]) if output in known else
                       helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    scan.output.append(stacked_output)
    for name in ("scan_output_axes", "scan_output_directions"):
        if name in attributes:
            attributes[name].ints.append(0)


def _step_count(graph: onnx.GraphProto, scan: onnx.NodeProto) -> str:
    """The name, in ``scan``'s body, of the step's index (int64 [1]), added once: a state the Scan carries
    from 0, one more at each step."""
    count = f"{scan.name}.step"
    attributes = {attribute.name: attribute for attribute in scan.attribute}
    body = attributes["body"].g
    if any(value.name == count for value in body.input):
        return count
    states = len(scan.input) - attributes["num_scan_inputs"].i
    if not any(tensor.name == STEP_ZERO for tensor in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int64), STEP_ZERO))
    scan.input.insert(states, STEP_ZERO)
    scan.output.insert(states, f"{count}.final")
    body.input.insert(states, helper.make_tensor_value_info(count, onnx.TensorProto.INT64, []))
    body.output.insert(states, helper.make_tensor_value_info(f"{count}/next", onnx.TensorProto.INT64, []))
    for index, node in enumerate([
            helper.make_node("Constant", [], [f"{count}/one"], value=numpy_helper.from_array(np.ones(1, np.int64))),
            helper.make_node("Constant", [], [f"{count}/axis"], value=numpy_helper.from_array(np.zeros(1, np.int64))),
            helper.make_node("Unsqueeze", [count, f"{count}/axis"], [f"{count}/vector"])]):
        body.node.insert(index, node)
    body.node.append(helper.make_node("Add", [count, f"{count}/one"], [f"{count}/sum"]))
    body.node.append(helper.make_node("Squeeze", [f"{count}/sum", f"{count}/axis"], [f"{count}/next"]))
    return count


def _noisy_function(model: onnx.ModelProto, op_type: str) -> str:
    """Add (once) the body of ``op_type`` with a last input ``Noise`` added to the ADC's input; its op type."""
    name = f"{op_type}{NOISY_SUFFIX}"
    if any(f.domain == DOMAIN and f.name == name for f in model.functions):
        return name
    function = copy.deepcopy(next(f for f in model.functions if f.domain == DOMAIN and f.name == op_type))
    function.name = name
    function.input.append("Noise")
    _add_noise_before_adc(function.node)
    model.functions.append(function)
    return name


def _add_noise_before_adc(nodes) -> None:
    """In a body's nodes and their branches: feed each ``Adc`` call its input plus ``Noise``."""
    index = 0
    while index < len(nodes):
        node = nodes[index]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _add_noise_before_adc(attribute.g.node)
        if node.domain == PERIPHERY_DOMAIN and node.op_type == "Adc":
            noisy = f"{node.input[0]}_out_noise"
            nodes.insert(index, helper.make_node("Add", [node.input[0], "Noise"], [noisy]))
            node.input[0] = noisy
            index += 1
        index += 1


class NoiseDraws:
    """The output noise of :func:`noisy_model`'s sites for each batch, drawn as the converted model draws it
    (``torch.randn`` of the codes' shape times the std, site after site; the sites of one Scan body step by
    step, as the unrolled steps read them) from ``generator``."""

    def __init__(self, sites: Sequence[NoiseSite], generator: torch.Generator):
        self.sites = tuple(sites)
        self.generator = generator

    def draw(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
        """Each site's noise for one batch, given its codes' shape (by input name; a Scan body's stacked)."""
        noise = {}
        for scan, group in itertools.groupby(self.sites, key=lambda site: site.scan):
            group = list(group)
            if scan is None:
                noise |= {site.input: self._drawn(shapes[site.input], site.std) for site in group}
                continue
            steps = [[self._drawn(shapes[site.input][1:], site.std) for site in group]
                     for _ in range(shapes[group[0].input][0])]
            noise |= {site.input: np.stack([step[k] for step in steps]) for k, site in enumerate(group)}
        return noise

    def _drawn(self, shape: Sequence[int], std: float) -> np.ndarray:
        return torch.randn(tuple(shape), generator=self.generator).mul_(std).numpy()


def _noise_draws(sites: Sequence[NoiseSite], out_noise: OutNoiseAtRead, seed: int) -> Optional[NoiseDraws]:
    """Draws from a generator seeded with ``seed`` at every read, or None (reading noise-free)."""
    if out_noise is OutNoiseAtRead.EVERY_READ and sites:
        return NoiseDraws(sites, torch.Generator().manual_seed(seed))
    return None


def _check_out_noise(out_noise: OutNoiseAtRead) -> None:
    if not isinstance(out_noise, OutNoiseAtRead):
        raise UserError(f"out_noise= takes an xbar.OutNoiseAtRead, got {out_noise!r}")


class FileSession:
    """One ONNX Runtime session on an exported (or :func:`reading_model`) model, fed batches of labelled data:
    the data go to the file's own inputs, in order; ``extra`` names the inputs fed beside them; ``sites`` are
    :func:`noisy_model`'s, whose noise :meth:`run` draws or (without draws) feeds as zeros."""

    def __init__(self, model: onnx.ModelProto, where: str, extra: Sequence[str] = (),
                 sites: Sequence[NoiseSite] = ()):
        import onnxruntime

        self.where = where
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        skipped = set(extra) | {site.input for site in sites}
        self.inputs = [i for i in self.session.get_inputs() if i.name not in skipped]
        self.output = self.session.get_outputs()[0].name
        self.site_outputs = {site.input: site.codes for site in sites}
        self._shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}

    def fitted(self, x: Union[Tensor, Sequence[Tensor]]) -> list[np.ndarray]:
        """The samples as the file's inputs take them (float32, or int64 token ids); :class:`DataError` for
        samples whose count, shape or dtype do not fit."""
        samples = [x] if isinstance(x, Tensor) else list(x)
        if len(samples) != len(self.inputs):
            raise DataError(f"{self.where} takes {len(self.inputs)} input(s) "
                            f"({', '.join(i.name for i in self.inputs)}), the data give {len(samples)}")
        return [self._fitted(sample, spec) for sample, spec in zip(samples, self.inputs)]

    def _fitted(self, sample: Tensor, spec) -> np.ndarray:
        dims = ["N" if i == 0 else d if isinstance(d, int) else "?" for i, d in enumerate(spec.shape)]
        wanted = f"[{', '.join(map(str, dims))}]"
        fits = sample.dim() == len(spec.shape) and all(
            not isinstance(d, int) or d == n for d, n in zip(spec.shape[1:], sample.shape[1:]))
        if not fits:
            raise DataError(f"{self.where}: input {spec.name!r} takes samples shaped {wanted}, the data are "
                            f"{list(sample.shape)}; give data of the shape the model was compiled for")
        if spec.type == "tensor(int64)":
            if sample.is_floating_point():
                raise DataError(f"{self.where}: input {spec.name!r} takes integer token ids, the data are "
                                f"{sample.dtype}")
            return sample.long().numpy()
        return sample.float().numpy()

    def run(self, samples: Sequence[np.ndarray], feeds: Mapping[str, np.ndarray],
            draws: Optional[NoiseDraws] = None) -> Tensor:
        """The first output on ``samples`` (one array per input), with ``feeds`` beside them and the sites' noise
        from ``draws`` (None: zeros, reading noise-free)."""
        inputs = {spec.name: sample for spec, sample in zip(self.inputs, samples)} | dict(feeds)
        inputs |= {name: np.zeros(1, dtype=np.float32) for name in self.site_outputs}
        if draws is not None:
            inputs |= draws.draw(self._codes_shapes(samples, inputs))
        return torch.from_numpy(self.session.run([self.output], inputs)[0])

    def _codes_shapes(self, samples: Sequence[np.ndarray], inputs: Mapping[str, np.ndarray]) -> dict:
        """Each site's ADC codes' shape for samples of these shapes: read once per shape, from a run without
        noise."""
        key = tuple(sample.shape for sample in samples)
        if key not in self._shapes:
            names = list(self.site_outputs)
            codes = self.session.run([self.site_outputs[name] for name in names], dict(inputs))
            self._shapes[key] = {name: value.shape for name, value in zip(names, codes)}
        return self._shapes[key]


def _scored(session: FileSession, data: Data, metric, batch_size: int,
            feeds: Optional[Mapping[str, np.ndarray]] = None, draws: Optional[NoiseDraws] = None) -> float:
    """``metric`` of the session's output on ``data``, ``batch_size`` samples at a time (scored over sample
    indices, so a model of several inputs batches as one of one), with output noise from ``draws``."""
    x, y = data
    samples = session.fitted(x)

    def run(rows: Tensor) -> Tensor:
        return session.run([sample[rows.numpy()] for sample in samples], feeds or {}, draws)

    return score(run, torch.arange(len(y)), y, metric, batch_size)


def read_file(file: FileLike) -> tuple[onnx.ModelProto, str]:
    """The model of an exported file (checked to be xbar's, of a version this xbar reads) and how to name it."""
    if isinstance(file, onnx.ModelProto):
        if not any(p.key == "xbar.version" for p in file.metadata_props):
            raise UserError("this ONNX model carries no xbar metadata; give a file written by `xbar compile -o`")
        return file, "the ONNX model"
    return load_onnx(file), str(file)


def evaluate_onnx(file: FileLike, data: Data, metric: MetricLike = TOP1_ACCURACY, *, batch_size: int = 256,
                  out_noise: OutNoiseAtRead = OutNoiseAtRead.EVERY_READ, seed: int = 0) -> float:
    """``metric`` (default: top-1 accuracy) of the ONNX file ``file`` as written by ``xbar compile -o`` (plain,
    programmed, drifted, or with measured conductances from ``xbar import-measured`` or
    :func:`xbar.load_conductances`), run in ONNX Runtime on ``data`` = ``(inputs, targets)``. Every read adds
    the arrays' ``out_noise`` (``TRAINING_ONLY``: none), drawn from a generator seeded with ``seed``: what the
    converted model scores once given that generator (:func:`~xbar.compiler.devices.evaluation.read_out_noise_from`)."""
    _check_out_noise(out_noise)
    model, where = read_file(file)
    sites = _read_sites(model, out_noise)
    session = FileSession(noisy_model(model, sites, where), where, sites=sites)
    return _scored(session, data, as_metric(metric), batch_size, draws=_noise_draws(sites, out_noise, seed))


def _read_sites(model: onnx.ModelProto, out_noise: OutNoiseAtRead) -> list[NoiseSite]:
    """The sites whose output noise a read with ``out_noise`` adds (none for ``TRAINING_ONLY``)."""
    return noise_sites(model) if out_noise is OutNoiseAtRead.EVERY_READ else []


def _read_mode(sites: Sequence[NoiseSite]) -> OutNoiseAtRead:
    return OutNoiseAtRead.EVERY_READ if sites else OutNoiseAtRead.TRAINING_ONLY


def file_out_noise(model: onnx.ModelProto, out_noise: OutNoiseAtRead) -> OutNoiseAtRead:
    """How ``model`` is read with ``out_noise``: ``TRAINING_ONLY`` too when no array has output noise."""
    return _read_mode(_read_sites(model, out_noise))


def file_settings(array: FileArray):
    """The :class:`~xbar.passes.numerics.settings.CrossbarSettings` an array's node attributes record."""
    return node_settings(array.attributes)


def node_settings(attributes: Mapping):
    """The :class:`~xbar.passes.numerics.settings.CrossbarSettings` an ``ai.xbar`` node's attributes record."""
    from ...passes.numerics.settings import CrossbarSettings

    values = {}
    for name, kind in CrossbarSettings.hardware_fields().items():
        value = attributes[name]
        values[name] = (value.decode() if kind is str else tuple(float(v) for v in value)
                        if kind == tuple[float, ...] else kind(value))
    return CrossbarSettings(**values)


def target_crossbars(arrays: Sequence[FileArray]) -> nn.Module:
    """The file's arrays as :class:`~xbar.passes.numerics.crossbar.Crossbar` modules holding its conductances,
    in module order: what the torch path's programming and drift functions work on."""
    from ...passes.kinds import KINDS
    from ...passes.numerics.crossbar import Crossbar

    kinds = {kind.onnx_op: kind for kind in KINDS}
    holder = nn.Module()
    for index, array in enumerate(arrays):
        g_plus, g_minus = (torch.from_numpy(np.array(g, dtype=np.float32)) for g in (array.g_plus, array.g_minus))
        holder.add_module(f"array{index}", Crossbar(g_plus, g_minus, None, file_settings(array),
                                                    kinds[array.op_type], None, array.name))
    return holder


def _feeds(crossbars: nn.Module, arrays: Sequence[FileArray]) -> dict[str, np.ndarray]:
    """The :func:`reading_model` inputs for the arrays' current state: G+, G- and output scale."""
    feeds = {}
    for crossbar, array in zip(crossbars.children(), arrays):
        constants = crossbar.settings.constants
        scale = constants["column_out_scale"] or (constants["out_scale"],)
        feeds |= {f"{array.name}.g_plus": crossbar.g_plus.numpy(), f"{array.name}.g_minus": crossbar.g_minus.numpy(),
                  f"{array.name}{SCALE_SUFFIX}": np.array(scale, dtype=np.float32)}
    return feeds


def _file_feeds(arrays: Sequence[FileArray]) -> dict[str, np.ndarray]:
    """The :func:`reading_model` inputs that compute what the file does: its own conductances and scales."""
    feeds = {}
    for array in arrays:
        scale = array.attributes["column_out_scale"] or [array.attributes["out_scale"]]
        feeds |= {f"{array.name}.g_plus": array.g_plus, f"{array.name}.g_minus": array.g_minus,
                  f"{array.name}{SCALE_SUFFIX}": np.array(scale, dtype=np.float32)}
    return feeds


def check_targets(model: onnx.ModelProto, where: str) -> None:
    """Re-programming starts from target conductances: refuse a file that holds programmed, drifted or
    measured ones."""
    from ..devices.programming import PROGRAMMING_KEY
    from ..program_files.onnx_file import MEASURED_KEY

    metadata = _metadata(model)
    for key, what in ((PROGRAMMING_KEY, "programmed"), (MEASURED_KEY, "measured")):
        if key in metadata:
            raise UserError(f"{where} holds {what} conductances ({key}), not targets to program: evaluate it as it "
                            "is (no --seeds / --times), or re-program the file exported from the converted model")


def onnx_accuracy_over_time(file: FileLike, noise_model: BaseNoiseModel, times: Mapping[str, float],
                            seeds: int, data: Data, *, compensation: Optional[str] = "global",
                            batch_size: int = 256, metric: MetricLike = TOP1_ACCURACY,
                            on_step: Optional[Callable[[], None]] = None,
                            out_noise: OutNoiseAtRead = OutNoiseAtRead.EVERY_READ):
    """:func:`~xbar.compiler.devices.evaluation.accuracy_over_time` of the ONNX file ``file`` in ONNX Runtime:
    its target conductances programmed with ``noise_model`` and seeds ``0 .. seeds - 1``, read at each of
    ``times`` (label -> seconds) with ``compensation`` and ``out_noise``, drawing what the torch path draws for
    the same seeds. ``ideal`` is the file as it is, noise-free. One session runs every (seed, time); ``on_step``
    is called after each."""
    from ..devices.arrays import array_copy, drift_arrays, program_arrays
    from ..devices.evaluation import Evaluation, TimePoint, read_seed
    from ..devices.programming import check_device_range, compensation_mode

    _check_out_noise(out_noise)
    model, where = read_file(file)
    check_targets(model, where)
    if not isinstance(noise_model, BaseNoiseModel):
        raise UserError(f"onnx_accuracy_over_time() takes a device model such as xbar.PCMLikeNoiseModel(), got a "
                        f"{type(noise_model).__name__}")
    metric, mode = as_metric(metric), compensation_mode(compensation)
    arrays = file_arrays(model)
    targets = target_crossbars(arrays)
    check_device_range(noise_model, targets)
    extra = list(_file_feeds(arrays))
    sites = _read_sites(model, out_noise)
    out_noise = _read_mode(sites)
    session = FileSession(noisy_model(reading_model(model, arrays), sites, where), where, extra, sites)
    values: dict[tuple[int, str], float] = {}
    for seed in range(seeds):
        device = copy.deepcopy(noise_model)  # as xbar.program() keeps its own copy for drift()
        programmed = array_copy(targets)
        program_arrays(programmed, device, torch.Generator().manual_seed(seed))
        for label, seconds in times.items():
            drifted = array_copy(programmed)
            drift_arrays(drifted, device, float(seconds), torch.Generator().manual_seed(read_seed(seed, seconds)),
                         mode)
            draws = _noise_draws(sites, out_noise, out_noise_seed(seed, seconds))
            values[seed, label] = _scored(session, data, metric, batch_size, _feeds(drifted, arrays), draws)
            if on_step is not None:
                on_step()
    points = tuple(TimePoint(label, float(seconds), tuple(values[seed, label] for seed in range(seeds)),
                             tuple(read_seed(seed, seconds) for seed in range(seeds)))
                   for label, seconds in times.items())
    ideal = _scored(session, data, metric, batch_size, _file_feeds(arrays))
    return Evaluation(ideal, points, tuple(range(seeds)), noise_model.to_dict(), compensation, metric, out_noise)

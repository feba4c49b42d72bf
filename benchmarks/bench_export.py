"""Cold compile + export time of resnet18 and mobilenet_v2 against the plain ONNX export, and ORT parity.

    python -m benchmarks.bench_export [--repeats 5] [--models resnet18 mobilenet_v2] [--size 224]

Every measurement is one fresh Python process, as the command line runs: the
plain side times ``torch.onnx.export(model, (x,), dynamo=True)`` with a
dynamic batch (as xbar's file has) and ``.save``; the xbar side times ``from
xbar import compile_model`` and ``compile_model(model, (x,), config,
calibration_data=..., output=...)`` with the 8-bit config (``inp_res = out_res
= 254``, ``out_bound = 10``) and 4 random calibration batches of 2. Both time
only their call (torch imported and the model built before the clock starts),
so each pays its own lazy imports. The two sides alternate; the table shows the
median wall and CPU seconds of ``--repeats`` pairs and the ratios of the medians
(target 1.5x, on wall time; the CPU ratio is the steadier one on a busy machine).

One more process per model times prepare / calibrate / convert / export_onnx
separately and compares ONNX Runtime with the converted PyTorch model on 16
random images, in ADC steps (a difference over half a step counts as differing):
each array's output against its PyTorch module run on the input ONNX Runtime gave
that array (what one array adds), and the logits against the whole PyTorch model
in steps of the last array's ADC (what the network accumulates), with how many
top-1 predictions agree.

The models are torchvision's when it is importable, otherwise the copies in
:mod:`benchmarks.vision` (same layers), on 3 x ``--size`` x ``--size`` inputs,
with random weights and batch-norm statistics from 4 random batches of 8 (with
the default statistics mobilenet_v2's activations shrink to nothing). Every
process runs one intra-op thread (steadier on a shared machine; only the
calibration computes anything).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import EIGHT_BIT, command_console
from benchmarks.vision import vision_models

TARGET = 1.5
CALIBRATION = (4, 2)
"""Calibration batches, and images per batch."""
PARITY_BATCH = 16
BN_BATCHES = 4


def _model_and_input(name: str, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model with batch-norm statistics from random images (so activations keep their scale), in eval mode."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = vision_models()[0][name]()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the batches
    with torch.no_grad():
        for _ in range(BN_BATCHES):
            model(torch.randn(8, 3, size, size))
    return model.eval(), torch.randn(1, 3, size, size)


def _calibration(size: int) -> list[torch.Tensor]:
    count, batch = CALIBRATION
    return [torch.randn(batch, 3, size, size) for _ in range(count)]


def plain(name: str, size: int, output: Path) -> dict:
    model, x = _model_and_input(name, size)
    start, cpu = time.perf_counter(), time.process_time()
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False).save(output)
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def annotated(name: str, size: int, output: Path) -> dict:
    model, x = _model_and_input(name, size)
    calibration = _calibration(size)
    start, cpu = time.perf_counter(), time.process_time()
    from xbar import HardwareConfig, compile_model

    compile_model(model, (x,), HardwareConfig().with_overrides(EIGHT_BIT), calibration_data=calibration,
                  output=output)
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def split(name: str, size: int, output: Path) -> dict:
    """Seconds of each pipeline step, then ONNX Runtime against PyTorch on the converted model."""
    model, x = _model_and_input(name, size)
    calibration = _calibration(size)
    times = {}
    start = time.perf_counter()
    from xbar import HardwareConfig, calibrate, convert, export_onnx, prepare

    times["import"] = time.perf_counter() - start
    steps = (("prepare", lambda: prepare(model, (x,), HardwareConfig().with_overrides(EIGHT_BIT))),
             ("calibrate", lambda: calibrate(prepared, calibration)),
             ("convert", lambda: convert(prepared)),
             ("export_onnx", lambda: export_onnx(converted, (x,), output)))
    for step, run in steps:
        start = time.perf_counter()
        result = run()
        times[step] = time.perf_counter() - start
        if step == "prepare":
            prepared = result
        elif step == "convert":
            converted = result

    return times | parity(converted, output, size)


def parity(converted, path: Path, size: int) -> dict:
    """ONNX Runtime against PyTorch on PARITY_BATCH random images: the logits, and each array on ORT's input."""
    import onnx
    import onnxruntime

    model = onnx.load(path)
    nodes = [n for n in model.graph.node if n.domain == "ai.xbar"]
    logits = model.graph.output[0].name
    for name in dict.fromkeys(v for n in nodes for v in (n.input[0], n.output[0])):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = torch.randn(PARITY_BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))
    feed = {session.get_inputs()[0].name: images.numpy()}
    values = dict(zip((o.name for o in session.get_outputs()), session.run(None, feed)))
    with torch.no_grad():
        expected = converted(images).numpy()

    def steps(got: np.ndarray, want: np.ndarray, module) -> np.ndarray:
        return abs(got - want) / module.settings.constants["out_scale"]

    last = converted.get_submodule(nodes[-1].name)
    result = {"logits": steps(values[logits], expected, last), "arrays": []}
    for node in nodes:  # each array on the input ORT gave it
        module = converted.get_submodule(node.name)
        with torch.no_grad():
            want = module(torch.from_numpy(values[node.input[0]])).numpy()
        result["arrays"].append(steps(values[node.output[0]], want, module).ravel())
    result["arrays"] = np.concatenate(result["arrays"])
    return {f"{key}_differ": float((value > 0.5).mean()) for key, value in result.items()} | \
        {f"{key}_max_steps": float(value.max()) for key, value in result.items()} | \
        {"top1": int((values[logits].argmax(1) == expected.argmax(1)).sum())}


CHILDREN = {"plain": plain, "xbar": annotated, "split": split}


def run_child(kind: str, name: str, size: int, directory: Path) -> dict:
    """One measurement in a fresh process; its result is the last line it prints."""
    command = [sys.executable, "-m", "benchmarks.bench_export", "--child", kind, "--models", name,
               "--size", str(size), "--output", str(directory / f"{name}_{kind}.onnx")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    models, source = vision_models()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(models), default=list(models))
    parser.add_argument("--repeats", type=int, default=5, help="alternating plain / xbar pairs per model")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.models[0], args.size, args.output)))
        return

    from rich.table import Table

    console = command_console("bench_export", argv)
    console.print(f"torch {torch.__version__}; models from {source}; 3x{args.size}x{args.size} inputs; "
                  f"{args.repeats} alternating cold runs per side", highlight=False)
    samples = {(name, kind): [] for name in args.models for kind in ("plain", "xbar")}
    splits = {}
    with tempfile.TemporaryDirectory() as tmp, console.status("measuring") as status:
        for repeat in range(args.repeats):
            for name in args.models:
                for kind in ("plain", "xbar"):
                    status.update(f"repeat {repeat + 1}/{args.repeats}: {name}, {kind}")
                    samples[name, kind].append(run_child(kind, name, args.size, Path(tmp)))
        for name in args.models:
            status.update(f"{name}: split and parity")
            splits[name] = run_child("split", name, args.size, Path(tmp))

    table = Table(title="cold compile_model + export vs plain torch.onnx.export, median of the runs",
                  title_justify="left")
    for header in ("model", "plain s", "xbar s", "ratio", "target", "plain CPU s", "xbar CPU s", "CPU ratio",
                   "xbar runs s"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for name in args.models:
        median = {(kind, key): statistics.median(run[key] for run in samples[name, kind])
                  for kind in ("plain", "xbar") for key in ("seconds", "cpu")}
        ratio = median["xbar", "seconds"] / median["plain", "seconds"]
        verdict = "[green]ok[/green]" if ratio <= TARGET else "[red]missed[/red]"
        table.add_row(name, f"{median['plain', 'seconds']:.2f}", f"{median['xbar', 'seconds']:.2f}", f"{ratio:.2f}x",
                      f"{TARGET}x {verdict}", f"{median['plain', 'cpu']:.2f}", f"{median['xbar', 'cpu']:.2f}",
                      f"{median['xbar', 'cpu'] / median['plain', 'cpu']:.2f}x",
                      " ".join(f"{run['seconds']:.1f}" for run in samples[name, "xbar"]))
    console.print(table)

    table = Table(title="one cold run: xbar's steps (s) and ONNX Runtime vs PyTorch, 8-bit", title_justify="left")
    for header in ("model", "import", "prepare", "calibrate", "convert", "export_onnx", "array outputs differing",
                   "array max diff, ADC steps", "logits differing", "logits max diff, last ADC steps",
                   "top-1 agree"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for name, row in splits.items():
        table.add_row(name, *(f"{row[k]:.2f}" for k in ("import", "prepare", "calibrate", "convert", "export_onnx")),
                      f"{100 * row['arrays_differ']:.3f}%", f"{row['arrays_max_steps']:.2f}",
                      f"{100 * row['logits_differ']:.1f}%", f"{row['logits_max_steps']:.2f}",
                      f"{row['top1']}/{PARITY_BATCH}")
    console.print(table)


if __name__ == "__main__":
    main()

"""Compile + export of GPT-2-architecture decoders at 125 M, 350 M and 1 B parameters: memory, time, ONNX Runtime.

    pip install 'xbar-compiler[bench]'      # HF transformers, for the model's architecture only
    python -m benchmarks.bench_decoders [--sizes 125M 350M 350M/12 1B]

Each size is HF transformers' ``GPT2LMHeadModel`` built from its config with random
weights (no download; ``attn_implementation="sdpa"``, no KV cache): ``125M`` and
``350M`` are GPT-2 small and medium, ``1B`` a GPT-2 of width 2048 and 18 layers;
``NAME/L`` is size NAME with L layers, to show the time's growth with depth at one
width. In a fresh process per size the model is built, then ``prepare`` (token ids
[1, 32]; the batch and sequence dimensions stay dynamic; ``share_weights=True``: the
prepared model holds the model's own tensors), ``calibrate`` (one batch
of [2, 32]), ``convert`` and ``export_onnx`` run one after the other, each timed;
a sampler thread records the process's resident memory, so the table shows the
peak of each stage above the process that holds the model (torch imported, the
model built) as a multiple of the model's FP32 bytes, and the peak of the whole
process (``ru_maxrss``). Another fresh process loads the file in ONNX Runtime and
runs it at two sequence lengths (batch 1); the file is deleted after. The last
columns count the activation-by-activation matmuls of attention (SDPA, or matmul /
bmm of two activations) in the converted graph, which stay digital, and the
crossbar layers.

Run by hand (minutes; ``1B`` needs about 13 GB of memory):
``nice -n 10 OMP_NUM_THREADS=2 python -m benchmarks.bench_decoders``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import fx, nn

from .common import command_console

SIZES = {  # name: (width, layers, heads), GPT-2's vocabulary and context
    "tiny": (64, 2, 4),
    "125M": (768, 12, 12),
    "350M": (1024, 24, 16),
    "1B": (2048, 18, 16),
}
VOCAB, CONTEXT = 50257, 1024
EXAMPLE_LENGTH = 32
ORT_LENGTHS = (16, 48)
PAGE = os.sysconf("SC_PAGE_SIZE")


def decoder(width: int, layers: int, heads: int, vocab: int = VOCAB, context: int = CONTEXT) -> nn.Module:
    """A GPT-2-architecture language model with random weights (seeded), returning the logits alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, vocab_size=vocab, n_positions=context,
                        use_cache=False, attn_implementation="sdpa", bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return Logits(GPT2LMHeadModel(config)).eval()


class Logits(nn.Module):
    """A causal language model called on token ids alone, returning its logits [batch, seq, vocab]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def size_spec(name: str) -> tuple[int, int, int]:
    """``350M`` -> its (width, layers, heads); ``350M/12`` -> the same with 12 layers."""
    base, _, layers = name.partition("/")
    width, depth, heads = SIZES[base]
    return width, int(layers) if layers else depth, heads


def attention_matmuls(graph_module: fx.GraphModule) -> int:
    """Calls in the graph that multiply two activations (SDPA, or matmul / bmm without a weight operand)."""
    sdpa = {torch.nn.functional.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention.default}
    products = {torch.matmul, torch.bmm, torch.ops.aten.matmul.default, torch.ops.aten.bmm.default}
    count = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        count += node.target in sdpa or (node.target in products and all(a.op != "get_attr" for a in operands))
    return count


class ResidentPeak:
    """The process's peak resident memory since the last :meth:`reset`, sampled every few milliseconds."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._running = interval, 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = self.now()

    def stop(self) -> None:
        self._running = False
        self._thread.join()


def compile_child(name: str, output: Path) -> dict:
    from xbar import calibrate, convert, prepare
    from xbar.compiler.onnx.export import export_onnx_files
    from xbar.compiler.pipeline.record import Stage, record_of

    model = decoder(*size_spec(name))
    fp32 = sum(p.numel() for p in model.parameters()) * 4
    generator = torch.Generator().manual_seed(1)
    example = torch.randint(0, VOCAB, (1, EXAMPLE_LENGTH), generator=generator)
    batch = torch.randint(0, VOCAB, (2, EXAMPLE_LENGTH), generator=generator)
    sampler = ResidentPeak()
    holding_model = sampler.now()
    row = {"params": fp32 // 4, "fp32_bytes": fp32, "holding_model": holding_model, "seconds": {}, "peaks": {}}

    def stage(label, run):
        sampler.reset()
        start = time.perf_counter()
        value = run()
        row["seconds"][label] = time.perf_counter() - start
        row["peaks"][label] = max(sampler.peak, sampler.now()) - holding_model
        return value

    prepared = stage("prepare", lambda: prepare(model, (example,), share_weights=True))
    stage("calibrate", lambda: calibrate(prepared, [batch]))
    converted = stage("convert", lambda: convert(prepared))
    files = stage("export", lambda: export_onnx_files(converted, (example,), output))
    sampler.stop()
    record = record_of(converted, "bench", Stage.CONVERTED)
    row |= {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "files": {p.name: p.stat().st_size for p in files}, "crossbar_layers": len(record.plans),
            "attention_matmuls": attention_matmuls(converted),
            "digital_layers": [layer.name for layer in record.digital]}
    return row


def ort_child(output: Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    start = time.perf_counter()
    session = ort.InferenceSession(str(output))
    seconds = {"load": time.perf_counter() - start}
    finite = True
    for length in ORT_LENGTHS:
        ids = np.random.default_rng(length).integers(0, VOCAB, (1, length), dtype=np.int64)
        start = time.perf_counter()
        logits = session.run(None, {session.get_inputs()[0].name: ids})[0]
        seconds[f"run {length}"] = time.perf_counter() - start
        finite &= logits.shape == (1, length, VOCAB) and bool(np.isfinite(logits).all())
    return {"ort_seconds": seconds, "ort_ok": finite}


def _child(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_decoders", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_row(console, name: str, row: dict) -> None:
    gb = 1e9
    fp32 = row["fp32_bytes"]
    peaks = " / ".join(f"{row['peaks'][s] / fp32:.2f}x" for s in ("prepare", "calibrate", "convert", "export"))
    times = " / ".join(f"{row['seconds'][s]:.1f}" for s in ("prepare", "calibrate", "convert", "export"))
    files = ", ".join(f"{file} {size / gb:.2f} GB" for file, size in row["files"].items())
    ort = " / ".join(f"{value:.1f}" for value in row["ort_seconds"].values())
    console.print(f"| {name} | {row['params'] / 1e6:.0f} M | {fp32 / gb:.2f} GB | {row['peak_bytes'] / gb:.2f} GB "
                  f"({row['peak_bytes'] / fp32:.2f}x) | {max(row['peaks'].values()) / fp32:.2f}x ({peaks}) | "
                  f"{times} | {files} | {ort}{'' if row['ort_ok'] else ' (wrong shape or non-finite!)'} | "
                  f"{row['crossbar_layers']} / {row['attention_matmuls']} |", highlight=False, markup=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["125M", "350M", "350M/12", "1B"])
    parser.add_argument("--child", choices=["compile", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "compile":
        print(json.dumps(compile_child(args.sizes[0], args.output)))
        return
    if args.child == "ort":
        print(json.dumps(ort_child(args.output)))
        return
    console = command_console("bench_decoders", argv)
    console.print("| size | parameters | FP32 | peak RSS (/ FP32) | compile + export above the model, peak "
                  "(prepare / calibrate / convert / export) | seconds: prepare / calibrate / convert / export | "
                  f"files | ORT seconds: load / run {' / run '.join(map(str, ORT_LENGTHS))} | "
                  "crossbar layers / digital attention matmuls |")
    console.print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "decoder.onnx"
            row = _child("--child", "compile", "--sizes", name, "--output", str(output))
            row |= _child("--child", "ort", "--output", str(output))
        print_row(console, name, row)


if __name__ == "__main__":
    main()

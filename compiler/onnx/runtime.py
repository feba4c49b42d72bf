"""Run an exported ONNX file in ONNX Runtime as a function of PyTorch tensors."""

from __future__ import annotations

import os
from typing import Callable

import onnxruntime
import torch


def onnx_runner(path: os.PathLike) -> Callable[..., torch.Tensor]:
    """A function from the model's inputs (in the file's order) to its first output, on ONNX Runtime's CPU
    provider."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *xs: torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0])

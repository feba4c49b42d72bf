"""Run an exported ONNX file in ONNX Runtime as a function of PyTorch tensors."""

from __future__ import annotations

import os
from typing import Callable

import onnxruntime
import torch


def onnx_runner(path: os.PathLike) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from the model's one input to its first output, on ONNX Runtime's CPU provider."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])

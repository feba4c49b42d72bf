"""How well a model does on labelled samples: what the evaluations and the command line report.

Needs torch alone, so the library measures accuracy without the example models' data
dependencies (scikit-learn).
"""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def accuracy(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 256) -> float:
    """Fraction of samples whose largest logit is their label.

    ``run`` maps a batch to logits: a model (put in eval mode first) or any callable,
    such as an ONNX Runtime session wrapped by ``xbar.compiler.onnx.runtime.onnx_runner``.
    """
    if isinstance(run, torch.nn.Module):
        run.eval()
    correct = sum(
        (run(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(y), batch_size)
    )
    return correct / len(y)

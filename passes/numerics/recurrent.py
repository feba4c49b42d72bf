"""The digital part of one step of a recurrent cell: gates from the two matmuls' outputs.

Plain functions on tensors, called by the unrolled graph of
:class:`~xbar.passes.rewrites.unroll_recurrent.UnrollRecurrentPass`. Each takes
``ih = W_ih x_t + b_ih`` and ``hh = W_hh h_{t-1} + b_hh`` (the two crossbar
layers' outputs, gates along the last dim in PyTorch's order) and computes what
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` compute from them, in the same order of
operations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import SequenceLengthError


def unbind_steps(x: Tensor, time_dim: int, steps: int, layer: str) -> tuple[Tensor, ...]:
    """The ``steps`` step inputs of ``x``; :class:`SequenceLengthError` for any other length (the graph
    was unrolled for this one: more steps would be dropped, fewer would fail deep inside), and when a
    tracer makes the length symbolic (an export with that dim dynamic)."""
    if isinstance(x.shape[time_dim], torch.SymInt):  # traced with this dim dynamic (an export marking it so)
        raise SequenceLengthError(f"{layer} is unrolled for sequences of {steps} steps: dim {time_dim} of its input "
                                  "cannot be dynamic; give the model batch-first inputs (the export makes dim 0 of "
                                  "each input the dynamic batch)")
    if x.shape[time_dim] != steps:
        raise SequenceLengthError(f"{layer} was unrolled for sequences of {steps} steps, got {x.shape[time_dim]}; "
                                  f"prepare the model with an example of the length it will run at")
    return x.unbind(time_dim)


def lstm_cell(ih: Tensor, hh: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """``(h_t, c_t)`` of an LSTM step (gates i, f, g, o); ``h_t`` before any projection."""
    i, f, g, o = (ih + hh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(ih: Tensor, hh: Tensor, h: Tensor) -> Tensor:
    """``h_t`` of a GRU step (gates r, z, n); ``b_hn`` is inside ``hh``, so the reset gate scales it."""
    ih_r, ih_z, ih_n = ih.chunk(3, -1)
    hh_r, hh_z, hh_n = hh.chunk(3, -1)
    r = torch.sigmoid(ih_r + hh_r)
    z = torch.sigmoid(ih_z + hh_z)
    n = torch.tanh(ih_n + r * hh_n)
    return (1 - z) * n + z * h


def rnn_tanh_cell(ih: Tensor, hh: Tensor) -> Tensor:
    """``h_t`` of an Elman RNN step with ``nonlinearity='tanh'``."""
    return torch.tanh(ih + hh)


def rnn_relu_cell(ih: Tensor, hh: Tensor) -> Tensor:
    """``h_t`` of an Elman RNN step with ``nonlinearity='relu'``."""
    return torch.relu(ih + hh)


def zero_state(x: Tensor, size: int) -> Tensor:
    """The zero initial state ``[batch, size]`` for a step input ``x`` ``[batch, features]`` (``[size]`` for
    an unbatched ``[features]``)."""
    return x.new_zeros(*x.shape[:-1], size)


def packed(value):
    """The module's nested outputs as one value, for a graph that uses the tuple itself."""
    return value

"""A small byte-level decoder-only language model: the zoo's model of a task other than classification.

Token ids [N, T] (bytes, T up to the training length) -> next-token logits [N, T, 256]. Causal
self-attention is written with matmul/softmax and a causal mask, like the zoo's transformer, so the
traced graph exposes every projection as an nn.Linear that xbar maps to crossbars (the attention's
activation-by-activation matmuls stay digital).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .text import SEQUENCE_LENGTH, VOCABULARY


def future_positions(length: int, device: torch.device) -> torch.Tensor:
    """[length, length], True where the key's position comes after the query's: what causal attention hides.

    Computed from the length rather than sliced from a fixed table, so torch.export keeps the length free."""
    positions = torch.arange(length, device=device)
    return positions.unsqueeze(1) < positions


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees itself and the positions before it."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(future_positions(length, x.device), float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, num_heads: int, d_hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    """Byte embedding + learned positions, a few decoder blocks, a final norm and a linear head."""

    def __init__(self, d_model: int = 64, num_heads: int = 4, d_hidden: int = 256, depth: int = 3,
                 max_length: int = SEQUENCE_LENGTH) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, d_model)
        self.pos_embed = nn.Parameter(torch.randn(1, max_length, d_model) * 0.02)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, num_heads, d_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCABULARY)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

"""Four small digit classifiers (input [N, 1, 8, 8], logits [N, 10]), a byte-level language model
(:mod:`.charlm`) and their registry.

The models deliberately cover different op families (linear, conv, grouped/depthwise
conv + batch norm, attention built from matmul/softmax) so compiler passes have
varied graphs to work on. All are traceable by torch.fx.symbolic_trace and torch.export.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..passes.errors import UserError
from .charlm import CharLM
from .text import SEQUENCE_LENGTH

CHECKPOINT_DIR = Path(__file__).resolve().parent


class MLP(nn.Module):
    """Three-layer perceptron on the flattened 64 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet(nn.Module):
    """LeNet-style CNN: three 3x3 convs with two 2x2 max-pools (8x8 -> 2x2), then two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class ResidualBlock(nn.Module):
    """Grouped 3x3 conv -> depthwise 3x3 -> pointwise 1x1, with BN and a residual add.

    When the shape changes (stride or channel count), the shortcut is a 1x1 conv + BN.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.dwconv = nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch, bias=False)
        self.pwconv = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.pwconv(self.dwconv(out)))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Small ResNet: conv stem, two residual blocks (8x8 -> 4x4), global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.layer1 = ResidualBlock(32, 32)
        self.layer2 = ResidualBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention from explicit projections and matmul/softmax.

    Written by hand (not nn.MultiheadAttention / SDPA) so the traced graph exposes the
    individual linears and matmuls.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, D/H]."""
        return x.reshape(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q_proj(x))
        k = self._split_heads(self.k_proj(x))
        v = self._split_heads(self.v_proj(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        out = out.transpose(1, 2).reshape(x.shape[0], -1, self.num_heads * self.head_dim)
        return self.out_proj(out)


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, num_heads: int, d_hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TransformerClassifier(nn.Module):
    """Transformer encoder treating the 8 image rows as 8 tokens of 8 pixel features."""

    def __init__(self, d_model: int = 32, num_heads: int = 4, d_hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.pos_embed = nn.Parameter(torch.randn(1, 8, d_model) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, num_heads, d_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(torch.flatten(x, 1, 2)) + self.pos_embed  # [N, 1, 8, 8] -> [N, 8, D]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: its constructor, checkpoint path, example input shape, the built-in data set
    it was trained on (``xbar.compiler.cli.data.BUILTIN``'s name) and the metric it is scored with
    (``xbar.compiler.metrics.METRICS``'s name)."""

    name: str
    factory: type[nn.Module]
    checkpoint: Path
    input_shape: tuple[int, ...] = (1, 1, 8, 8)
    dataset: str = "digits"
    metric: str = "accuracy"


ZOO: dict[str, ZooEntry] = {
    name: ZooEntry(name, factory, CHECKPOINT_DIR / f"{name}.pt")
    for name, factory in [
        ("mlp", MLP),
        ("lenet", LeNet),
        ("resnet", ResNet),
        ("transformer", TransformerClassifier),
    ]
} | {"charlm": ZooEntry("charlm", CharLM, CHECKPOINT_DIR / "charlm.pt", (1, SEQUENCE_LENGTH), "pysource",
                        "perplexity")}

DIGIT_CLASSIFIERS = tuple(name for name, entry in ZOO.items() if entry.dataset == "digits")
"""The zoo's digit classifiers: input [N, 1, 8, 8], logits [N, 10]."""


def load_pretrained(name: str) -> nn.Module:
    """Build zoo model `name`, load its trained weights and return it in eval mode."""
    if name not in ZOO:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(ZOO)}")
    entry = ZOO[name]
    if not entry.checkpoint.exists():
        raise FileNotFoundError(
            f"checkpoint {entry.checkpoint} not found; run `python -m xbar.models.train` to create it"
        )
    model = entry.factory()
    model.load_state_dict(torch.load(entry.checkpoint, weights_only=True))
    return model.eval()

"""What the tests share: small models (an MLP, a CNN with grouped and depthwise
convolutions, a transformer encoder whose attention must stay digital), and the
command line's workspace (a user's model file, its weights and calibration inputs)."""

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xbar import HardwareConfig, preset_config
from xbar.compiler.cli.main import main


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32, bias=False)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SharedLayer(nn.Module):
    """One linear layer called twice: its weight is one crossbar layer with two call sites."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


class GroupedCNN(nn.Module):
    """Standard, strided, grouped, depthwise (dilated) and bias-free convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.conv1d = nn.Conv1d(16, 8, 2)
        self.fc = nn.Linear(8 * 15, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        x = x.flatten(2)  # [N, 16, 16]
        x = torch.relu(self.conv1d(x))
        return self.fc(x.flatten(1))


class ConvNet(nn.Module):
    """A conv and a linear layer on [N, 2, 6, 6]: small arrays for placement and programming-file tests."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TinyEncoder(nn.Module):
    """A transformer encoder classifier built on nn.MultiheadAttention."""

    def __init__(self, d_model=16, heads=2):
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, 32)
        self.ff2 = nn.Linear(32, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x):  # x: [N, 8 tokens, 8 features]
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm1(h + a)
        h = self.norm2(h + self.ff2(torch.relu(self.ff1(h))))
        return self.head(h.mean(dim=1))


MODELS = {
    "mlp": (MLP, (16,)),
    "cnn": (GroupedCNN, (3, 8, 8)),
    "encoder": (TinyEncoder, (8, 8)),
}


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name][0]().eval()


def make_input(name: str, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *MODELS[name][1], generator=generator)


def eight_bit() -> HardwareConfig:
    """The 8-bit preset: 8-bit DAC and ADC, out_bound 10, learned input ranges."""
    return preset_config("8bit")


@pytest.fixture(autouse=True)
def report_width(monkeypatch):
    """The command line's report as a pipe gets it (160 columns): pytest-xdist's workers set COLUMNS=80."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


# -- the command line's workspace: a user's model file, its weights and calibration inputs --------

NET_PY = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 8)
            self.fc2 = nn.Linear(8, 8)
            self.fc3 = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


    def make_net():
        return Net()


    def broken():
        raise RuntimeError("factory exploded")


    def interrupted():
        raise KeyboardInterrupt


    class Branchy(nn.Module):  # control flow on the data: neither export nor symbolic_trace captures it

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)


    def make_branchy():
        return Branchy()
""")
WEIGHTS = ["--weights", "net.pt"]


def load_net_class(path: Path) -> type:
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["Net"]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with a model file, its trained-looking weights and calibration inputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(NET_PY)
    torch.manual_seed(1)
    net = load_net_class(tmp_path / "net.py")()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    inputs = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=inputs)
    torch.save({"x": torch.from_numpy(inputs)}, tmp_path / "inputs.pt")
    return tmp_path


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


NET = ["net.py:make_net", *WEIGHTS]
"""The test model with its weights (without them a warning line precedes any error)."""

"""Dynamic shapes: one model prepared once runs every allowed sequence length / image size, eager, compiled
and in ONNX Runtime, exactly as the model prepared at that shape."""

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx_parity import Exported, assert_within_one_adc_step
from torch import nn
from torch._dynamo.utils import counters
from torch.export import Dim

from xbar import calibrate, convert, export_onnx, prepare
from xbar.compiler.pipeline import compiled as compiled_path
from xbar.compiler.pipeline.record import Stage, record_of

from conftest import eight_bit

VOCAB, CONTEXT = 13, 32
LENGTHS = (16, 5, 29, 1)
SIZES = (8, 16, 24)


def heads(x):
    """[batch, seq, 16] -> [batch, 2 heads, seq, 8]."""
    return x.unflatten(-1, (2, 8)).transpose(1, 2)


class TinyGPT(nn.Module):
    """Token and position embeddings, one causal attention block (SDPA) and a language-model head."""

    def __init__(self, d=16):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, d), nn.Embedding(CONTEXT, d)
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, VOCAB)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        x = x + self.proj(attended)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(self.norm(x))


class TinyUNet(nn.Module):
    """Down by a strided convolution, up by a transposed one, a skip connection concatenated."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.middle = nn.Conv2d(6, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.out = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        h = self.up(F.relu(self.middle(F.relu(self.down(x)))))
        return self.out(torch.cat([x, h], dim=1))


def tokens(batch, length, seed):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def images(batch, size, seed):
    return torch.randn(batch, 2, size, size, generator=torch.Generator().manual_seed(seed))


def gpt(capture_method="export"):
    torch.manual_seed(0)
    prepared = prepare(TinyGPT().eval(), (tokens(2, 16, 0),), eight_bit(), capture_method=capture_method)
    calibrate(prepared, [tokens(4, 16, s) for s in range(1, 4)])
    return prepared


def unet_spec():
    return ({0: Dim("batch"), 2: 8 * Dim("h", min=1), 3: 8 * Dim("w", min=1)},)


def unet():
    torch.manual_seed(0)
    prepared = prepare(TinyUNet().eval(), (images(2, 16, 0),), eight_bit(), dynamic_shapes=unet_spec())
    calibrate(prepared, [images(4, 16, s) for s in range(1, 4)])
    return prepared


def at_shape(model, prepared, example, dynamic_shapes):
    """The model prepared at ``example``'s shape alone, holding ``prepared``'s calibrated ranges."""
    static = prepare(model, (example,), eight_bit(), dynamic_shapes=dynamic_shapes)
    static.load_state_dict(prepared.state_dict())
    return static


def symbolic_dims(path):
    value = onnx.load(path).graph.input[0]
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def check_every_shape(model, prepared, converted, path, examples, static_spec, monkeypatch):
    """Eager, compiled and ONNX Runtime at each example's shape against the model prepared at that shape."""
    monkeypatch.setattr(compiled_path, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    run = compiled_path.compiled(converted)
    exported = Exported(converted, path)
    torch.manual_seed(0)
    original = model().eval()
    for x in examples:
        static = at_shape(original, prepared, x, static_spec)
        with torch.no_grad():
            assert torch.equal(prepared.eval()(x), static.eval()(x))
            expected = convert(static)(x)
            assert torch.equal(converted(x), expected)
            assert torch.equal(run(x), expected)
        assert_within_one_adc_step(exported.run(x), expected.numpy(), exported.last_adc_step())
    sizes_of_one = sum(1 in x.shape[1:] for x in examples)  # torch.compile specialises a dimension of size 1
    assert counters["stats"]["unique_graphs"] == 1 + sizes_of_one  # one compiled graph for every other shape


def test_a_gpt_prepared_once_runs_every_sequence_length(tmp_path, monkeypatch):
    prepared = gpt()
    assert record_of(prepared, "test", Stage.PREPARED).dynamic_shapes[0][1].__name__ == "seq"
    converted = convert(prepared)
    path = export_onnx(converted, (tokens(2, 16, 0),), tmp_path / "gpt.onnx")
    assert symbolic_dims(path) == ["batch", "seq"]
    examples = [tokens(3, length, 10 + length) for length in LENGTHS]
    check_every_shape(TinyGPT, prepared, converted, path, examples, ({0: Dim("batch")},), monkeypatch)


def test_a_unet_prepared_once_runs_every_image_size(tmp_path, monkeypatch):
    prepared = unet()
    converted = convert(prepared)
    path = export_onnx(converted, (images(2, 16, 0),), tmp_path / "unet.onnx")
    assert symbolic_dims(path) == ["batch", 2, "8*h", "8*w"]
    examples = [images(2, size, size) for size in SIZES]
    check_every_shape(TinyUNet, prepared, converted, path, examples, ({0: Dim("batch")},), monkeypatch)


def test_symbolic_trace_capture_exports_a_dynamic_sequence(tmp_path):
    prepared = gpt("symbolic_trace")
    converted = convert(prepared)
    exported = Exported(converted, export_onnx(converted, (tokens(2, 16, 0),), tmp_path / "gpt.onnx"))
    assert symbolic_dims(exported.path) == ["batch", "seq"]
    for length in LENGTHS:
        x = tokens(2, length, length)
        assert_within_one_adc_step(exported.run(x), exported.expected(x), exported.last_adc_step())


class FixedLength(nn.Module):
    """A position table added whole: only length 8 fits."""

    def __init__(self):
        super().__init__()
        self.embed, self.table = nn.Embedding(VOCAB, 4), nn.Parameter(torch.randn(8, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, ids):
        return self.head(self.embed(ids) + self.table)


class SlicedTable(FixedLength):
    """The position table sliced to the input's length: every length up to 8 fits."""

    def forward(self, ids):
        return self.head(self.embed(ids) + self.table[: ids.shape[1]])


@pytest.mark.parametrize("capture_method", ["export", "symbolic_trace"])
def test_the_default_bounds_seq_by_a_sliced_position_table(capture_method):
    sliced = prepare(SlicedTable().eval(), (tokens(2, 5, 0),), capture_method=capture_method)
    seq = record_of(sliced, "test", Stage.PREPARED).dynamic_shapes[0][1]
    assert (seq.__name__, seq.min, seq.max) == ("seq", 1, 8)


@pytest.mark.parametrize("capture_method", ["export", "symbolic_trace"])
def test_the_default_keeps_a_fixed_length_model_at_its_length(capture_method):
    fixed = prepare(FixedLength().eval(), (tokens(2, 8, 0),), capture_method=capture_method)
    assert list(record_of(fixed, "test", Stage.PREPARED).dynamic_shapes[0]) == [0]  # batch only


def test_the_default_keeps_images_static(tmp_path):
    image = prepare(TinyUNet().eval(), (images(2, 16, 0),))
    assert list(record_of(image, "test", Stage.PREPARED).dynamic_shapes[0]) == [0]
    converted = convert(image)
    assert symbolic_dims(export_onnx(converted, (images(2, 16, 0),), tmp_path / "u.onnx")) == ["batch", 2, 16, 16]

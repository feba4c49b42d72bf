"""The decoder benchmark's route on a tiny GPT-2: its model builder, prepare, calibrate, convert, export, and
ONNX Runtime at two sequence lengths, so benchmarks/bench_decoders.py cannot rot between its hand runs."""

import numpy as np
import torch
from onnx_parity import Exported

from xbar import calibrate, convert, export_onnx, prepare
from xbar.compiler.pipeline.record import Stage, record_of
from xbar.passes.numerics.crossbar import crossbar_modules

from benchmarks.bench_decoders import ORT_LENGTHS, attention_matmuls, decoder

VOCAB, LAYERS = 50, 2


def tokens(batch, length, seed):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_a_tiny_gpt2_compiles_exports_and_runs_two_lengths_in_onnx_runtime(tmp_path):
    model = decoder(width=32, layers=LAYERS, heads=2, vocab=VOCAB, context=64)
    prepared = prepare(model, (tokens(1, 8, 0),), share_weights=True)  # as the benchmark runs it
    calibrate(prepared, [tokens(2, 8, 1)])
    converted = convert(prepared)
    record = record_of(converted, "test", Stage.CONVERTED)
    assert len(record.plans) == 4 * LAYERS + 1  # c_attn, c_proj, c_fc, mlp c_proj per block, and lm_head
    assert converted.model.lm_head.weight is converted.model.transformer.wte.weight  # still tied: one copy
    assert converted.model.transformer.wte.weight is model.model.transformer.wte.weight  # shared, not copied
    assert all(a.compiled_weight is None for a in crossbar_modules(converted).values())  # conductances alone
    assert attention_matmuls(converted) == LAYERS  # one SDPA per block, between activations: digital
    exported = Exported(converted, export_onnx(converted, (tokens(1, 8, 0),), tmp_path / "decoder.onnx"))
    for length in ORT_LENGTHS:
        ids = tokens(1, length, length)
        got = exported.run(ids)
        assert got.shape == (1, length, VOCAB)
        np.testing.assert_allclose(got, exported.expected(ids), rtol=1e-4, atol=1e-5)  # the float default config

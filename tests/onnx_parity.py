"""Run an exported file in ONNX Runtime beside the converted model it came from."""

import numpy as np
import onnx
import onnxruntime as ort
import torch

from xbar.passes.numerics.crossbar import Crossbar


class Exported:
    """A converted test model, its file, and an ONNX Runtime session on it."""

    def __init__(self, converted, path):
        self.converted, self.path = converted, path
        self.model = onnx.load(path)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.numpy()})[0]

    def expected(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.converted(x).numpy()

    def crossbars(self) -> dict[str, Crossbar]:
        return {n: m for n, m in self.converted.named_modules() if isinstance(m, Crossbar)}

    def last_adc_step(self) -> float:
        last = next(n for n in reversed(self.converted.graph.nodes) if n.op == "call_module"
                    and isinstance(self.converted.get_submodule(n.target), Crossbar))
        return self.converted.get_submodule(last.target).settings.constants["out_scale"]


def assert_within_one_adc_step(got: np.ndarray, expected: np.ndarray, step: float) -> None:
    """Quantised outputs may differ by one ADC step where a matmul's order moves a value
    across a rounding boundary (the two runtimes accumulate in different orders): rarely,
    and by one step at most."""
    differs = got != expected
    assert differs.mean() < 0.01
    assert np.abs(got - expected).max(initial=0.0) <= step * (1 + 1e-4)

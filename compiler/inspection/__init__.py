"""Reading back what xbar wrote: the per-array layer summary, the graph archive, and ONNX files."""

"""The ONNX export target: the ``ai.xbar`` ops and their function bodies, the exporter, files, ONNX Runtime."""

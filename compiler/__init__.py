"""The driver: configuration, presets, the pipeline, ONNX export, inspection and the command line.

The public API is re-exported by the top-level ``xbar`` package.
"""

"""Decoder bundles (ONNX graphs + manifest), the onnxruntime runtime, text events and the
shipped bundles' paths.
"""

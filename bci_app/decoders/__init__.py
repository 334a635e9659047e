"""Decoder bundles (ONNX graphs + typed manifest), the onnxruntime runtime, text events and the
shipped bundles' paths.
"""

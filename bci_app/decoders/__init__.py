"""Decoder bundles (ONNX graphs + typed manifest), the onnxruntime runtime.

Text events and the shipped bundles' paths.
"""

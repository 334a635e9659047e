"""PyTorch decoders, training and ONNX export.

Needs the ``train`` extra; never imported on the live path.
"""
